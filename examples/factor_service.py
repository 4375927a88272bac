"""A small stand-in for an emission-factor service, for the ``emissions-impact`` example.

Real emission-factor services (national inventories, commercial databases) hand out
their tables only to a caller with an API key. This one does the same, on loopback
only, with the standard library alone:

- ``GET /health`` answers ``200 ok`` without a key, so a starter can wait for it;
- ``GET /tables`` lists the tables, ``GET /tables/<id>`` gives one (JSON: per sector, the
  unit its activity is counted in and, per pollutant, the factor with its unit), both only
  to a request whose ``X-API-Key`` header holds the key: without one the answer is
  ``401``, with another ``403``.

The tables below are realistic-looking, rounded tier-1 style factors, not an official
release of either source.

Run it as ``python examples/factor_service.py --port 8610 --key-file PATH``: the key is
read from the file so that it never shows in a process list. From Python::

    server = serve(8610, key)                     # bound on 127.0.0.1, not yet answering
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ...
    server.shutdown(); server.server_close()
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
KEY_HEADER = "X-API-Key"


def _factors(unit: str, co2: float, nox: float, so2: float, pm25: float) -> dict[str, Any]:
    return {
        pollutant: {"value": value, "unit": unit}
        for pollutant, value in (("CO2", co2), ("NOx", nox), ("SO2", so2), ("PM2.5", pm25))
    }


# Per table, per sector: the unit of the sector's activity and the factor of each
# pollutant, as mass per activity unit.
TABLES: dict[str, dict[str, Any]] = {
    "eea-2023": {
        "title": "EEA/EMEP air pollutant emission inventory guidebook 2023, tier 1 (sample)",
        "sectors": {
            "power": {
                "activity": "fuel burned in public power and heat plants (coal and gas mix)",
                "activity_unit": "TJ",
                "factors": _factors("kg/TJ", 74_300.0, 162.0, 412.0, 6.1),
            },
            "industry": {
                "activity": "fuel burned in manufacturing industries",
                "activity_unit": "TJ",
                "factors": _factors("kg/TJ", 67_800.0, 118.0, 186.0, 11.9),
            },
            "transport": {
                "activity": "road vehicle-kilometres, fleet average",
                "activity_unit": "vkm",
                "factors": _factors("g/vkm", 182.0, 0.452, 0.0011, 0.0213),
            },
            "residential": {
                "activity": "fuel burned for heating homes (gas, oil and wood mix)",
                "activity_unit": "TJ",
                "factors": _factors("kg/TJ", 44_900.0, 51.3, 10.8, 118.0),
            },
            "agriculture": {
                "activity": "cultivated land (machinery, soils and tillage)",
                "activity_unit": "ha",
                "factors": _factors("kg/ha", 231.0, 1.94, 0.041, 0.62),
            },
        },
    },
    "epa-ap42": {
        "title": "US EPA AP-42 compilation of air emission factors, fifth edition (sample)",
        "sectors": {
            "power": {
                "activity": "heat input to utility boilers (bituminous coal and gas mix)",
                "activity_unit": "MMBtu",
                "factors": _factors("lb/MMBtu", 171.0, 0.38, 0.96, 0.0143),
            },
            "industry": {
                "activity": "heat input to industrial boilers and furnaces",
                "activity_unit": "MMBtu",
                "factors": _factors("lb/MMBtu", 158.0, 0.29, 0.44, 0.0281),
            },
            "transport": {
                "activity": "on-road vehicle-miles travelled, fleet average",
                "activity_unit": "vmi",
                "factors": _factors("g/vmi", 400.0, 0.68, 0.0028, 0.0311),
            },
            "residential": {
                "activity": "heat input to residential furnaces and stoves",
                "activity_unit": "MMBtu",
                "factors": _factors("lb/MMBtu", 108.0, 0.094, 0.021, 0.262),
            },
            "agriculture": {
                "activity": "harvested cropland (equipment, soils and tillage)",
                "activity_unit": "acre",
                "factors": _factors("lb/acre", 207.0, 1.71, 0.037, 0.58),
            },
        },
    },
}


class FactorService(ThreadingHTTPServer):
    """The HTTP server, holding the key the requests must carry."""

    daemon_threads = True

    def __init__(self, port: int, key: str) -> None:
        if not key:
            raise ValueError("the key is empty: give the service a key to expect")
        self.key = key.encode()
        super().__init__((HOST, port), FactorRequest)


class FactorRequest(BaseHTTPRequestHandler):
    server: FactorService
    server_version = "factor-service/1.0"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
            return
        refusal = self._refusal()
        if refusal is not None:
            self._json(refusal[0], {"error": refusal[1]})
            return
        if path == "/tables":
            listed = [{"id": name, "title": table["title"]} for name, table in TABLES.items()]
            self._json(HTTPStatus.OK, {"tables": listed})
            return
        name = path.removeprefix("/tables/")
        if path.startswith("/tables/") and name in TABLES:
            self._json(HTTPStatus.OK, {"id": name, **TABLES[name]})
            return
        known = ", ".join(TABLES)
        self._json(HTTPStatus.NOT_FOUND, {"error": f"no such table or path (tables: {known})"})

    def _refusal(self) -> tuple[HTTPStatus, str] | None:
        """Why the request is refused (no key, or another key), or None."""
        given = self.headers.get(KEY_HEADER)
        if not given:
            return HTTPStatus.UNAUTHORIZED, f"missing {KEY_HEADER} header"
        if not hmac.compare_digest(given.encode(), self.server.key):
            return HTTPStatus.FORBIDDEN, "the API key is not valid"
        return None

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body, indent=1).encode()
        self._send(status, data, "application/json")

    def _send(self, status: HTTPStatus, data: bytes, media_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.path != "/health":  # a starter polls it: not worth a line each time
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: headers, and so the key, are never logged.
        sys.stderr.write(f"factor-service: {format % args}\n")


def serve(port: int, key: str) -> ThreadingHTTPServer:
    """The service bound on ``127.0.0.1:port``, expecting ``key``; call its
    ``serve_forever()`` (in a thread) to answer, ``shutdown()`` to stop."""
    return FactorService(port, key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve sample emission-factor tables.")
    parser.add_argument("--port", type=int, default=8610, help="port on 127.0.0.1 (8610)")
    parser.add_argument(
        "--key-file", type=Path, required=True, help="file holding the API key to expect"
    )
    args = parser.parse_args(argv)
    try:
        key = args.key_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        parser.error(f"--key-file: cannot read {args.key_file}: {exc.strerror}")
    if not key:
        parser.error(f"--key-file: {args.key_file} is empty; write the API key into it")
    server = serve(args.port, key)
    print(f"factor-service: answering on http://{HOST}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
