"""B15: what a warm run pays for reaching Prefect through the run-scoped proxy (issue 21:
a run holds a token good for its own run, never the API's auth string).

A real embedded platform (see :mod:`benchmarks.portal_fixture`), a flow run of its
model, and a :class:`~accelerator_prefect.proxy.RunProxy` started here as the warm
worker starts its own, with a token for that run. Over one keep-alive connection per
side, interleaved and the order reversed every round, the requests a run's engine
makes most:

- ``read``: ``GET /flow_runs/{its id}``, with the auth string straight to the server
  (raw Prefect), then through the proxy with the run's token;
- ``log``: ``POST /logs/`` of one record naming the run, the same two ways.

Target: through the proxy, at most 1.5 times the raw request's median (a run makes
some 20 of them; B11 measures the whole run).

    python -m benchmarks.run_proxy --rounds 300
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser
from benchmarks.portal_fixture import PortalBench, given_or_started

NAME = "run_proxy"
SIDES = ("read raw", "read proxied", "log raw", "log proxied")
HIGHEST = 1.5
COLUMNS = ["Request", "Calls", "Median ms", "p95 ms", "Ratio to raw", "Target", "Met?"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--rounds", type=int, default=300, help="timed calls per side")
    parser.add_argument("--warmup", type=int, default=20, help="untimed rounds first")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _basic(credential: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credential.encode()).decode()}


def calls(run_id: str, raw: Any, proxied: Any) -> dict[str, Callable[[], None]]:
    def read(http: Any) -> Callable[[], None]:
        def call() -> None:
            answer = http.get(f"/flow_runs/{run_id}")
            if answer.status_code != 200:
                raise RuntimeError(f"read: {answer.status_code} {answer.text}")

        return call

    def log(http: Any) -> Callable[[], None]:
        record = {
            "name": "prefect.flow_runs",
            "level": 20,
            "message": "benchmark",
            "timestamp": datetime.now(UTC).isoformat(),
            "flow_run_id": run_id,
        }

        def call() -> None:
            answer = http.post("/logs/", json=[record])
            if answer.status_code >= 300:
                raise RuntimeError(f"log: {answer.status_code} {answer.text}")

        return call

    return {
        "read raw": read(raw),
        "read proxied": read(proxied),
        "log raw": log(raw),
        "log proxied": log(proxied),
    }


def run(args: argparse.Namespace, console: Console, given: PortalBench | None = None) -> Report:
    import httpx

    from accelerator_prefect.proxy import RunProxy

    report = Report(NAME, "B15 — a run's requests through the run-scoped proxy vs raw", COLUMNS)
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    with given_or_started(given) as bench:
        platform = bench.bench
        from datetime import timedelta

        from prefect.states import Scheduled

        later = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=365))
        from prefect import flow

        @flow(name="bench-run-proxy")  # type: ignore[untyped-decorator]
        def nothing() -> None:
            return None

        flow_run = platform.acc._call(  # scheduled a year ahead, of no deployment: never run
            lambda client: client.create_flow_run(flow=nothing, state=later)
        )
        proxy = RunProxy(platform.info.api_url, platform.auth_string)
        proxy.start()
        try:
            token = proxy.admit(flow_run)
            load_before = load_average()
            with (
                httpx.Client(
                    base_url=platform.info.api_url, headers=_basic(platform.auth_string)
                ) as raw,
                httpx.Client(base_url=proxy.url, headers=_basic(token)) as proxied,
                console.status("measuring…"),
            ):
                side_calls = calls(str(flow_run.id), raw, proxied)
                for round_ in range(args.warmup + args.rounds):
                    for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                        start = time.perf_counter()
                        side_calls[side]()
                        if round_ >= args.warmup:
                            seconds[side].append(time.perf_counter() - start)
        finally:
            proxy.stop()
            platform.acc._call(lambda client: client.delete_flow_run(flow_run.id))
    results = []
    for side in SIDES:
        base = median(seconds[side.replace("proxied", "raw")])
        ratio = median(seconds[side]) / base
        targeted = side.endswith("proxied")
        results.append(
            {
                "side": side,
                "calls": len(seconds[side]),
                "median_ms": round(median(seconds[side]) * 1000, 2),
                "p95_ms": round(p95(seconds[side]) * 1000, 2),
                "ratio_to_raw": round(ratio, 3),
                "met": ratio <= HIGHEST if targeted else None,
            }
        )
        report.rows.append(
            [
                side,
                str(len(seconds[side])),
                f"{results[-1]['median_ms']:.2f}",
                f"{results[-1]['p95_ms']:.2f}",
                f"{ratio:.3f}",
                f"≤ {HIGHEST}" if targeted else "—",
                ("yes" if results[-1]["met"] else "NO") if targeted else "—",
            ]
        )
    report.met = all(r["met"] for r in results if r["met"] is not None)
    report.notes = [
        "raw: the auth string straight to the Prefect server (what a run held before); "
        "proxied: the run's own token, through the proxy, which checks the request is "
        "about that run and passes it on with the worker's credential.",
        "One keep-alive connection per side, calls interleaved, the order reversed every "
        "round, after untimed warm-up rounds.",
        "The proxy sets TCP_NODELAY on its connections: without it each response waited "
        "some 40 ms on the client's delayed ACK (52 ms a read).",
    ]
    report.data = {
        "config": {"rounds": args.rounds, "warmup": args.warmup},
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
    }
    return report


def main(argv: Sequence[str] | None = None, platform: PortalBench | None = None) -> int:
    """The benchmark's command line; ``platform``: a running one to measure on (the smoke
    tests share one), else one is started and stopped."""
    return command(argv, parse_args, lambda args, console: run(args, console, platform))


if __name__ == "__main__":
    raise SystemExit(main())
