"""The run-scoped proxy's door, knocked on over raw HTTP and its events socket: without a
credential, with a forged or ended token, and with one run's token asking for another's."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
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


def test_the_proxys_storage_door_opens_a_runs_own_files_only(
    platform: PlatformInfo, tmp_path: Path
) -> None:
    """Storage through the proxy (as runs reach an object store), over raw HTTP: nothing
    without a live run's token; one run's token reads its inputs and its output folder,
    writes only the latter, and never another run's upload or folder."""
    from prefect.client.schemas.objects import FlowRun

    from accelerator_prefect.storage import AccFileSystem

    storage = AccFileSystem(root=(tmp_path / "store").as_uri())
    storage.pipe_file("demo/in/a.csv", b"x\n1\n")
    storage.pipe_file("demo/ledger/books.csv", b"account,balance\n")

    def run(inputs: list[str], folders: tuple[str, ...] = ()) -> Any:
        parameters = {
            "inputs": {"selected_files": inputs, "selected_folders": list(folders)},
            "output": {"location": "acc://demo/results/m/1.0.0/{run_id}/"},
        }
        return FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), parameters=parameters)

    mine = run(["acc://demo/in/a.csv"], folders=("acc://demo/results/m/",))
    other = run([])
    storage.pipe_file(f"demo/results/m/1.0.0/{other.id}/theirs.csv", b"theirs\n")
    proxy = RunProxy(platform.api_url, ensure_auth_string(platform.home), storage)
    proxy.start()
    try:
        earlier = proxy.admit(mine)  # a process of an earlier attempt of the same run
        token, theirs = proxy.admit(mine), proxy.admit(other)
        out = f"demo/results/m/1.0.0/{mine.id}"
        with httpx.Client(base_url=proxy.url.removesuffix("/api") + "/storage", timeout=30) as http:
            read = {"path": "demo/in/a.csv", "start": 0, "end": 4}
            assert http.get("/read", params=read).status_code == 401
            assert http.get("/read", params=read, headers=_basic(theirs)).status_code == 403
            assert http.get("/read", params=read, headers=_basic(token)).content == b"x\n1\n"
            assert http.get("/read", params=read, headers=_basic(earlier)).status_code == 401

            def status(method: str, route: str, **params: str) -> int:
                answer = http.request(method, route, params=params, headers=_basic(token))
                return answer.status_code

            assert status("GET", "/info", path="demo/ledger/books.csv") == 403
            assert status("GET", "/link", path="demo/ledger/books.csv") == 403
            assert status("GET", "/link", path="demo/in/a.csv") == 404  # a folder signs none
            assert status("GET", "/ls", path="demo") == 403
            listed = http.get("/ls", params={"path": "demo/results/m/1.0.0"}, headers=_basic(token))
            assert str(other.id) not in listed.text  # another run's folder is not even named
            assert status("GET", "/info", path="demo/in/../ledger/books.csv") == 400
            assert status("POST", "/uploads", path="demo/in/b.csv") == 403
            assert status("DELETE", "/file", path="demo/in/a.csv") == 403
            assert status("POST", "/copy", source="demo/ledger/books.csv", target=f"{out}/b") == 403
            assert status("POST", "/copy", source="demo/in/a.csv", target="demo/ledger/a") == 403
            assert status("PUT", "/read") == 403  # not a call a run may make
            assert status("GET", "/read", path="demo/in/a.csv", start="x", end="4") == 400
            # Its input folder holds another run's folder: that one stays closed.
            assert status("GET", "/ls", path="demo/results/m") == 200
            theirs_path = f"demo/results/m/1.0.0/{other.id}/theirs.csv"
            assert status("GET", "/info", path=theirs_path) == 403
            assert status("POST", "/uploads", path=f"{out}/{other.id}/x.csv") == 403
            assert status("POST", "/uploads", path=out) == 403  # the folder itself is no file

            # An upload appears whole on commit; another run cannot touch it meanwhile.
            upload = http.post("/uploads", params={"path": f"{out}/r.csv"}, headers=_basic(token))
            part = f"/uploads/{upload.json()['id']}"
            assert http.put(part, content=b"half", headers=_basic(theirs)).status_code == 403
            assert http.put(part, content=b"half", headers=_basic(token)).status_code == 204
            assert not storage.exists(f"{out}/r.csv")
            assert http.post(part + "/commit", headers=_basic(theirs)).status_code == 403
            assert http.post(part + "/commit", headers=_basic(token)).status_code == 204
            assert storage.cat_file(f"{out}/r.csv") == b"half"

            # Through the run's own filesystem: an error mid-write publishes nothing.
            from accelerator_prefect.storage import RUNSTORE

            options = {"url": str(http.base_url).rstrip("/"), "token": token}
            runs_own = AccFileSystem(root=f"{RUNSTORE}://", storage_options=options)
            with pytest.raises(RuntimeError), runs_own.fs.open(f"{out}/half.csv", "wb") as f:
                f.write(b"x" * (9 << 20))  # one part sent already
                raise RuntimeError("the routine failed")
            assert not storage.exists(f"{out}/half.csv")
            with runs_own.open(f"{out}/whole.csv", "wb") as f:
                f.write(b"whole\n")
            assert storage.cat_file(f"{out}/whole.csv") == b"whole\n"
            storage.rm_file(f"{out}/whole.csv")

            # An upload left open when the run ends never appears; its token opens nothing.
            left = http.post("/uploads", params={"path": f"{out}/s.csv"}, headers=_basic(token))
            http.put(f"/uploads/{left.json()['id']}", content=b"part", headers=_basic(token))
            proxy.release(mine.id)
            assert http.get("/read", params=read, headers=_basic(token)).status_code == 401
        deadline = time.monotonic() + 10  # dropped by a thread of the proxy's
        while storage.ls(out, detail=False) != [f"{out}/r.csv"]:
            assert time.monotonic() < deadline, storage.ls(out, detail=False)
            time.sleep(0.05)
    finally:
        proxy.stop()


def test_a_run_inherits_no_credential_of_the_worker_or_of_acc_up(
    proxied: tuple[RunProxy, list[Any]], platform: PlatformInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``acc up``'s shell holds (the database's password, the CLI's token) reaches no
    service it starts; what a worker holds besides reaches no run, but what the pool's job
    variables set on purpose and where TLS finds its certificates."""
    from accelerator_prefect.platform import _base_env

    password = "pw-" + uuid.uuid4().hex
    shell = {
        "ACC_DATABASE_URL": f"postgresql+asyncpg://acc:{password}@127.0.0.1:5432/prefect",
        "PREFECT_API_DATABASE_PASSWORD": password,
        "ACC_TOKEN": "acc_123456789abc_" + password,
        "ACC_URL": "http://127.0.0.1:9",
    }
    for name, value in shell.items():
        monkeypatch.setenv(name, value)
    service = _base_env(platform.home, platform.api_url)
    assert not set(shell) & set(service)
    assert password not in json.dumps(service)

    proxy, (mine, _) = proxied
    worker = {
        **service,
        "ACC_WEBHOOK_KEY": password,
        "GITHUB_TOKEN": password,
        "HTTPS_PROXY": f"http://someone:{password}@127.0.0.1:3128",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "LANG": "C.UTF-8",
        "MODEL_SERVICE_TOKEN": "set-by-the-pool",
    }
    run = proxy.environment_for(mine, worker, keep={"MODEL_SERVICE_TOKEN"})
    assert password not in json.dumps(run)
    assert ensure_auth_string(platform.home) not in json.dumps(run)
    assert run["PREFECT_API_AUTH_STRING"].startswith("accr_")  # its own run's token
    assert run["MODEL_SERVICE_TOKEN"] == "set-by-the-pool"
    assert run["SSL_CERT_FILE"] == worker["SSL_CERT_FILE"] and run["LANG"] == "C.UTF-8"
    proxy.release(mine.id)


def test_a_run_cannot_send_the_flow_run_events_the_audit_log_is_read_from(
    proxied: tuple[RunProxy, list[Any]], platform: PlatformInfo
) -> None:
    """A run that sends "its own run was cancelled by alice" (or "launched by") as an event
    about itself, relating a model's tag, writes nothing into that model's audit log: the
    server makes flow runs' state events; the run's heartbeat still passes."""
    from websockets.sync.client import connect

    proxy, (mine, _) = proxied
    token = proxy.admit(mine)
    model = f"victim-{uuid.uuid4().hex[:6]}"
    me = {"prefect.resource.id": f"prefect.flow-run.{mine.id}", "prefect.resource.name": "x"}
    tag = {"prefect.resource.id": f"prefect.tag.acc:model:{model}", "prefect.resource.role": "tag"}

    def event(name: str, message: str = "") -> str:
        return json.dumps(
            {
                "id": str(uuid.uuid4()),
                "occurred": datetime.now(UTC).isoformat(),
                "event": name,
                "resource": me,
                "related": [tag],
                "payload": {"validated_state": {"type": "CANCELLING", "message": message}},
            }
        )

    url = proxy.url.replace("http", "ws", 1) + "/events/in"
    with connect(url, subprotocols=["prefect"]) as socket:  # type: ignore[list-item]
        socket.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(socket.recv(timeout=30))["type"] == "auth_success"
        socket.send(event("prefect.flow-run.Cancelling", "cancelled by alice"))
        socket.send(event("prefect.flow-run.Scheduled"))
        socket.send(event("prefect.flow-run.heartbeat"))

    async def names() -> list[str]:
        async with prefect_client(platform.api_url) as client:
            wanted = {"filter": {"any_resource": {"id": [f"prefect.tag.acc:model:{model}"]}}}
            response = await client.request("POST", "/events/filter", json=wanted)  # type: ignore[arg-type]
            return [e["event"] for e in response.json()["events"]]

    deadline = time.monotonic() + 60
    while "prefect.flow-run.heartbeat" not in (seen := asyncio.run(names())):
        assert time.monotonic() < deadline, "the run's heartbeat never reached the server"
        time.sleep(0.5)
    assert seen == ["prefect.flow-run.heartbeat"], seen

    from accelerator_prefect import audit

    async def entries() -> list[Any]:
        async with prefect_client(platform.api_url) as client:
            return await audit.read(client, model)

    assert asyncio.run(entries()) == []
