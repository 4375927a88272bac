"""The run-scoped proxy's door, knocked on over raw HTTP and its events socket: without a
credential, with a forged or ended token, and with one run's token asking for another's."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from accelerator_prefect.platform import PlatformInfo, ensure_auth_string
from accelerator_prefect.proxy import RunProxy
from accelerator_prefect.transport import prefect_client


def _basic(credential: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credential.encode()).decode()}


@pytest.fixture(scope="module")
def proxied(platform: PlatformInfo) -> Iterator[tuple[RunProxy, list[Any]]]:
    """A proxy in front of the session's server, and two flow runs (scheduled a year ahead,
    of no deployment: no worker takes them)."""
    from prefect import flow
    from prefect.states import Scheduled

    @flow(name="proxy-door")  # type: ignore[untyped-decorator]
    def nothing() -> None:
        return None

    async def make() -> list[Any]:
        async with prefect_client(platform.api_url) as client:
            later = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=365))
            return [await client.create_flow_run(flow=nothing, state=later) for _ in range(2)]

    runs = asyncio.run(make())
    proxy = RunProxy(platform.api_url, ensure_auth_string(platform.home))
    proxy.start()
    yield proxy, runs
    proxy.stop()


def test_the_proxy_opens_nothing_without_a_token_of_a_live_run(
    proxied: tuple[RunProxy, list[Any]],
) -> None:
    proxy, (mine, other) = proxied
    token = proxy.admit(mine)
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    ended = proxy.admit(other)
    proxy.release(other.id)
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        path = f"/flow_runs/{mine.id}"
        assert http.get(path).status_code == 401  # no credential
        for credential in (forged, ended, "accr_x", token.replace(str(mine.id), str(other.id))):
            assert http.get(path, headers=_basic(credential)).status_code == 401, credential
        assert http.get(path, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        # With its own token: its run, and nothing of another's.
        assert http.get(path, headers=_basic(token)).json()["id"] == str(mine.id)
        refused = http.get(f"/flow_runs/{other.id}", headers=_basic(token))
        assert refused.status_code == 403
        assert http.post("/flow_runs/filter", headers=_basic(token), json={}).status_code == 403
        assert http.post("/variables/filter", headers=_basic(token), json={}).status_code == 403
        # Only Prefect's harmless readings are open to all.
        assert http.get("/health").status_code == 200


def test_the_proxys_event_socket_refuses_a_forged_token(
    proxied: tuple[RunProxy, list[Any]],
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    proxy, (mine, _) = proxied
    token = proxy.admit(mine)
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    url = proxy.url.replace("http", "ws", 1) + "/events/in"
    with connect(url, subprotocols=["prefect"]) as socket:  # type: ignore[list-item]
        socket.send(json.dumps({"type": "auth", "token": forged}))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_the_proxy_refuses_a_body_over_its_limit_without_holding_it(
    proxied: tuple[RunProxy, list[Any]],
) -> None:
    """64 MiB and a byte, said in the length header or sent in chunks with none: a 413
    either way, and the proxy still answers the run afterwards; a body announced larger is
    refused before it is sent."""
    proxy, (mine, _) = proxied
    token = proxy.admit(mine)
    block = b"x" * (1 << 20)

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield block
        yield b"x"

    with httpx.Client(base_url=proxy.url, timeout=60, headers=_basic(token)) as http:
        declared = http.post("/logs", content=b"".join(chunks()))
        assert declared.status_code == 413
        streamed = http.post("/logs", content=chunks())  # chunked: no length header
        assert streamed.status_code == 413
        assert http.get(f"/flow_runs/{mine.id}").json()["id"] == str(mine.id)

    # A gigabyte announced: refused at once, before a byte of it is read.
    host, port = proxy.url.split("://")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /api/logs HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
            + f"Authorization: {_basic(token)['Authorization']}\r\n".encode()
            + b"Content-Length: 1073741824\r\n\r\n["
        )
        assert raw.recv(64).startswith(b"HTTP/1.1 413 ")
