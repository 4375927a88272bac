"""Faults survived, each one caused for real on a platform of this module's own (its Prefect
server, warm worker and portal are stopped and started again here, so they are not the
session's): the Prefect server restarted mid-run, the S3 endpoint gone during a run's writes,
a launching client killed mid-launch, the portal restarted under a client following a log
stream."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import (
    PlatformInfo,
    _write_platform,
    down,
    free_port,
    start_portal,
    start_server,
    stop_process,
    up,
)
from accelerator_prefect.remote import PortalService
from accelerator_prefect.transport import prefect_client
from tests.conftest import ModelRepo, S3Server, acc_home, pool_on_s3

pytestmark = pytest.mark.scale

TICKER_FLOW = """
import time

from pydantic import Field

from accelerator_prefect import Conf, Output, jobflow, routine


class TickerConf(Conf):
    ticks: int = Field(default=10, ge=1, le=500, description="How many lines and files.")
    every: float = Field(default=0.2, ge=0, le=5, description="Seconds between ticks.")
    size: int = Field(default=10, ge=1, le=64_000_000, description="Bytes in each file.")
    label: str = Field(default="", description="Tells launches apart.")


@routine
def tick(conf: TickerConf, output: Output) -> int:
    for n in range(conf.ticks):
        print(f"tick {{n:04d}} of {{conf.ticks}}")
        with output.open(f"tick-{{n:04d}}.bin", "wb") as f:
            block = bytes([n % 256]) * min(conf.size, 1 << 20)
            left = conf.size
            while left > 0:
                f.write(block[:left])
                left -= len(block)
        time.sleep(conf.every)
    return conf.ticks


@jobflow(name="ticker")
def ticker(conf: TickerConf, output: Output) -> dict:
    return {{"ticks": tick(conf, output), "label": conf.label}}
"""

TICKER_MANIFEST = """
name: {name}
title: Ticker
version: 1.0.0
jobflow: flows/ticker.py:ticker
owner: alice
project: demo
work_pool: {pool}
access:
  scope: project
"""


def until(condition: Callable[[], object], deadline: float, what: str) -> Any:
    """``condition()``'s first true value, asked until ``deadline`` s pass."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not {what} within {deadline:g} s")


def ticks(lines: list[str]) -> list[str]:
    return [line.split("tick ", 1)[1].split()[0] for line in lines if "tick " in line]


def expected(count: int) -> list[str]:
    return [f"{n:04d}" for n in range(count)]


@dataclass
class Faulty:
    """This module's platform (``info``), its operator's in-process client, an author's
    token, and the ticker model published on its warm pool."""

    info: PlatformInfo
    acc: Accelerator
    author: str
    token: str
    model: str
    repo: ModelRepo
    database: str | None  # None: SQLite in the platform's home


def publish_ticker(acc: Accelerator, root: Path, pool: str) -> ModelRepo:
    repo = ModelRepo(root / "ticker", f"ticker-{uuid.uuid4().hex[:8]}")
    repo.write("flows/ticker.py", TICKER_FLOW.format())
    repo.write(f"deployments/{repo.name}.yaml", TICKER_MANIFEST.format(name=repo.name, pool=pool))
    repo.commit("ticker")
    acc.publish(repo.manifest)
    return repo


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory, databases: Callable[[str], str | None]
) -> Iterator[Faulty]:
    home = tmp_path_factory.mktemp("faults-home")
    database = databases("faults")  # PostgreSQL when the session runs on it
    with acc_home(home):
        info, _ = up(
            home,
            port=free_port(),
            examples=[],
            catalog_port=None,
            portal_port=free_port(),
            factor_port=None,
            database=database,
            deadline=300,  # a machine busy with other suites starts a server slowly
        )
        acc = Accelerator.connect(info.api_url, home=home)
        try:
            name = f"alice-{uuid.uuid4().hex[:6]}"
            _, token = acc.add_user(name, {"demo": "author"})
            repo = publish_ticker(acc, tmp_path_factory.mktemp("faults-models"), info.work_pool)
            yield Faulty(info, acc, name, token, repo.name, repo, database)
        finally:
            acc.close()
            down(home)


def restart_server(faulty: Faulty, while_down: Callable[[], None]) -> float:
    """Stop the Prefect server, call ``while_down``, start it again on its port; the seconds
    it was away."""
    info = faulty.info
    stop_process(info.server_pid)
    gone = time.monotonic()
    while_down()
    info.server_pid = start_server(info.home, info.port, deadline=300, database=faulty.database)
    _write_platform(info)
    return time.monotonic() - gone


def restart_portal(faulty: Faulty, while_down: Callable[[], None] = lambda: None) -> None:
    info = faulty.info
    assert info.portal_url is not None
    port = int(info.portal_url.rsplit(":", 1)[1])
    stop_process(info.portal_pid)
    while_down()
    info.portal_pid, info.portal_url = start_portal(info.home, info.api_url, port)
    _write_platform(info)


def output_files(faulty: Faulty, run_id: str) -> list[str]:
    """The files in the run's output folder on the local storage, read from the disk."""
    storage = faulty.info.home / "storage"
    found = [p for p in storage.rglob("tick-*.bin") if run_id[:8] in str(p)]
    return sorted(p.name for p in found)


def cli(faulty: Faulty, *args: str) -> subprocess.CompletedProcess[str]:
    """``acc ARGS`` as a user on another machine runs it: the portal's address and a token."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "acc"), *args],
        env=_cli_env(faulty),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the Prefect server restarted mid-run ------------------------------------------------------


def test_a_run_survives_a_prefect_server_restart_and_every_client_recovers_by_itself(
    faulty: Faulty,
) -> None:
    """The server stops while a run writes files and logs lines; it keeps writing meanwhile,
    and once the server is back it completes with every line, file and provenance record.
    The clients made before the restart (in-process, the portal, the CLI through it) answer
    again without being started anew."""
    assert faulty.info.portal_url is not None
    user = Accelerator.connect(url=faulty.info.portal_url, token=faulty.token)
    count = 40
    run = user.launch(faulty.model, conf={"ticks": count, "every": 0.25})
    run_id = str(run.id)
    until(lambda: len(output_files(faulty, run_id)) >= 3, 90, "the run ticking")

    def the_run_writes_on() -> None:
        before = len(output_files(faulty, run_id))
        until(
            lambda: len(output_files(faulty, run_id)) >= before + 8,
            30,
            "the run writing files while the server is away",
        )

    away = restart_server(faulty, the_run_writes_on)
    print(f"the server was away for {away:.1f} s")
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    seen = faulty.acc.run(run_id)  # the operator's in-process client, made before too
    assert seen.state == "Completed"
    assert ticks(seen.logs()) == expected(count)
    assert ticks(run.logs()) == expected(count)
    files = {o.path: o.size for o in run.outputs()}
    assert sorted(files) == [f"tick-{n}.bin" for n in expected(count)]
    assert run.outputs_complete
    record = run.provenance()
    assert sorted(o.uri.rsplit("/", 1)[-1] for o in record.outputs) == sorted(files)
    assert run.result() == {"ticks": count, "label": ""}
    # The clients made before the restart answer again.
    assert user.run(run_id).state == "Completed"
    assert ticks(user.run(run_id).logs()) == expected(count)
    shown = cli(faulty, "logs", run_id)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert ticks(shown.stdout.splitlines()) == expected(count)
    listed = cli(faulty, "runs")
    assert listed.returncode == 0 and run_id[:8] in listed.stdout, listed.stdout + listed.stderr
    again = user.launch(faulty.model, conf={"ticks": 1, "every": 0})
    assert again.wait(timeout=120) == "Completed"
    user.close()


# -- the portal restarted under a client following a log stream --------------------------------


def test_a_log_stream_resumes_after_a_portal_restart_with_no_line_missed_or_repeated(
    faulty: Faulty,
) -> None:
    """A user's client follows a run's log lines through the portal; the portal is stopped
    and started again mid-stream. The client reconnects by itself with Last-Event-ID and
    has every line once, in order; the CLI's ``acc logs -f`` following the same run too."""
    assert faulty.info.portal_url is not None
    count = 100
    service = PortalService(faulty.info.portal_url, token=faulty.token)
    run_id, _, _ = asyncio.run(
        _launch_and_close(service, faulty.model, {"ticks": count, "every": 0.2})
    )
    follower = subprocess.Popen(
        [str(Path(sys.executable).parent / "acc"), "logs", "-f", run_id],
        env=_cli_env(faulty),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed: list[str] = []

    def read() -> None:
        for line in follower.stdout or []:
            printed.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    restarted = threading.Event()
    when_stopped: list[int] = []

    def restart_when_ticking() -> None:
        # Both clients following: the CLI has printed a line, this client has ten.
        until(lambda: len(seen) >= 10 and ticks(printed), 120, "both clients following")
        restart_portal(faulty, lambda: when_stopped.append(len(seen)))
        restarted.set()

    restarter = threading.Thread(target=restart_when_ticking, daemon=True)
    restarter.start()

    async def follow() -> str | None:
        service = PortalService(faulty.info.portal_url or "", token=faulty.token)
        try:
            async for line in service.follow_logs(run_id):
                seen.append(line)
        finally:
            await service.aclose()
        return service.followed_state

    state = asyncio.run(follow())
    restarter.join(timeout=120)
    assert restarted.is_set(), "the portal was not restarted"
    # Lines came from the portal started again, after the ones before it stopped.
    assert len(ticks(seen[: when_stopped[0]])) < count, when_stopped
    assert state == "Completed"
    numbers = ticks(seen)
    assert numbers == expected(count), f"lines missed or repeated: {numbers}"
    assert len(seen) == len(set(seen))
    assert follower.wait(timeout=120) == 0, "".join(printed)
    reader.join(timeout=30)
    assert ticks(printed) == expected(count), "".join(printed)
    # The portal honours Last-Event-ID on its own: from line 5 on, the lines after it.
    with (
        httpx.Client(headers={"Authorization": f"Bearer {faulty.token}"}) as http,
        http.stream(
            "GET",
            f"{faulty.info.portal_url}/api/v1/runs/{run_id}/logs/stream",
            headers={"Last-Event-ID": "5"},
            timeout=60,
        ) as stream,
    ):
        ids = [int(line[4:]) for line in stream.iter_lines() if line.startswith("id: ")]
    assert ids == list(range(6, len(seen) + 1))


async def _launch_and_close(
    service: PortalService, model: str, conf: dict[str, Any], key: str | None = None
) -> tuple[str, str, str | None]:
    try:
        return await service.launch(model, conf, idempotency_key=key)
    finally:
        await service.aclose()


def _cli_env(faulty: Faulty) -> dict[str, str]:
    assert faulty.info.portal_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACC_", "PREFECT_", "AWS_"))}
    env.update({"ACC_URL": faulty.info.portal_url, "ACC_TOKEN": faulty.token, "COLUMNS": "200"})
    env["ACC_HOME"] = str(faulty.info.home.parent / "elsewhere")  # not the platform's
    return env


# -- a launching client killed mid-launch ------------------------------------------------------

LAUNCHER = """
import asyncio
import sys

from accelerator_prefect.client import AsyncAccelerator


async def main(api_url, home, token, model, keys):
    acc = AsyncAccelerator.connect(api_url, home=home, token=token)
    await acc.principal()
    print("ready", flush=True)
    for key in keys:
        print("launching", key, flush=True)
        await acc.launch(model, {"ticks": 1, "every": 0, "label": key}, idempotency_key=key)
        print("launched", key, flush=True)


asyncio.run(main(*sys.argv[1:5], sys.argv[5:]))
"""


def flow_runs_by_label(faulty: Faulty) -> dict[str, list[str]]:
    """The ticker's flow runs in Prefect, by the label their launch gave them."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from accelerator_prefect.catalog import tag

    async def read() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        async with prefect_client(faulty.info.api_url) as client:
            offset = 0
            while True:
                page = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        tags=FlowRunFilterTags(all_=[tag("model", faulty.model)])
                    ),
                    limit=200,
                    offset=offset,
                )
                for run in page:
                    label = (run.parameters.get("conf") or {}).get("label", "")
                    found.setdefault(label, []).append(str(run.id))
                if len(page) < 200:
                    return found
                offset += 200

    return asyncio.run(read())


def test_a_launch_killed_mid_way_and_retried_with_its_key_makes_exactly_one_run(
    faulty: Faulty, tmp_path: Path
) -> None:
    """Clients launching with idempotency keys are killed (SIGKILL) at varying moments
    within their launches, some before their flow run was created and some after; each key
    launched again makes or finds exactly one run. Through the portal too: a client that
    drops its connection mid-request (its body half sent, or whole and unanswered), then
    sends it again."""
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    prefix = uuid.uuid4().hex[:6]
    keys = [f"{prefix}-{n:02d}" for n in range(12)]
    env = dict(os.environ)
    env.pop("ACC_TOKEN", None)
    killed_in_launch: list[str] = []
    rng = random.Random(24)
    for batch in (keys[0:4], keys[4:8], keys[8:12]):
        launcher = subprocess.Popen(
            [
                sys.executable,
                str(script),
                faulty.info.api_url,
                str(faulty.info.home),
                faulty.token,
                faulty.model,
                *batch,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert launcher.stdout is not None
        launching, began, took = None, 0.0, []
        for line in launcher.stdout:
            if line.startswith("launched"):
                took.append(time.monotonic() - began)  # how long this client's launches take
            if line.startswith("launching"):
                launching, began = line.split()[1], time.monotonic()
                if launching == batch[-1]:
                    break
        # Within the last launch, at a moment of its own: from its start (validating) to
        # its end (the flow run created, the answer not yet printed).
        deadline = began + rng.uniform(0.05, 0.7) * (sorted(took)[len(took) // 2] if took else 0.5)
        while time.monotonic() < deadline and launcher.poll() is None:
            time.sleep(0.005)
        launcher.send_signal(signal.SIGKILL)
        rest, _ = launcher.communicate(timeout=30)
        if f"launched {launching}" not in rest:
            killed_in_launch.append(str(launching))
    before = flow_runs_by_label(faulty)
    assert all(len(before.get(key, [])) <= 1 for key in keys), before
    # Each key again, as a client retrying: the run it made, or the one it had not.
    with Accelerator.connect(faulty.info.api_url, token=faulty.token) as acc:
        ids = {
            key: acc._run(
                acc._core.launch(
                    faulty.model, {"ticks": 1, "every": 0, "label": key}, idempotency_key=key
                )
            )[0]
            for key in keys
        }
    after = flow_runs_by_label(faulty)
    assert {key: after[key] for key in keys} == {key: [ids[key]] for key in keys}
    for key in keys:
        if before.get(key):
            assert before[key] == [ids[key]]  # found, not made again
    print(
        f"killed mid-launch: {len(killed_in_launch)} of 3; "
        f"{sum(1 for k in killed_in_launch if not before.get(k))} before their run existed"
    )
    # Through the portal: the connection dropped with the body half sent, then whole.
    assert faulty.info.portal_url is not None
    portal_keys = [f"{prefix}-portal-half", f"{prefix}-portal-whole"]
    for key, cut in zip(portal_keys, (0.5, 1.0), strict=True):
        body = json.dumps({"conf": {"ticks": 1, "every": 0, "label": key}}).encode()
        _send_and_hang_up(faulty, f"/api/v1/models/{faulty.model}/launch", key, body, cut)
    for key in portal_keys:
        made = {_launch_over_http(faulty, key) for _ in range(2)}
        assert len(made) == 1, made
        until(
            lambda key=key: len(flow_runs_by_label(faulty).get(key, [])) == 1,
            10,
            f"one run for {key}",
        )
        assert flow_runs_by_label(faulty)[key] == list(made)


def _send_and_hang_up(faulty: Faulty, path: str, key: str, body: bytes, cut: float) -> None:
    """POST ``body`` (its first ``cut`` share) and close the connection unanswered."""
    assert faulty.info.portal_url is not None
    host, port = faulty.info.portal_url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {faulty.token}\r\nIdempotency-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + body[: int(len(body) * cut)])
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # SO_LINGER 0: closed with a reset, as a killed client's kernel does.


def _launch_over_http(faulty: Faulty, key: str) -> str:
    answer = httpx.post(
        f"{faulty.info.portal_url}/api/v1/models/{faulty.model}/launch",
        json={"conf": {"ticks": 1, "every": 0, "label": key}},
        headers={"Authorization": f"Bearer {faulty.token}", "Idempotency-Key": key},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


# -- the S3 endpoint gone during a run's writes ------------------------------------------------


class Endpoint:
    """A TCP endpoint in front of a moto server: up, it passes connections through; down,
    it answers every connection with a reset (and counts them), and cuts those open, as an
    S3 endpoint that went away does. moto keeps its objects meanwhile (a moto restarted
    would forget them, and the test could not tell lost files from never-written ones)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.up = True
        self.refused = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                with self._lock:
                    self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(1 << 16):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with self._lock:
                    self._open.discard(s)
                _reset(s)

    def go_down(self) -> None:
        self.up = False
        with self._lock:
            cut, self._open = list(self._open), set()
        for s in cut:
            _reset(s)

    def come_back(self) -> None:
        self.up = True

    def close(self) -> None:
        self._listener.close()
        self.go_down()


def _reset(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    except OSError:
        pass


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3Server, Endpoint]]:
    """A moto server of this module's own, reached through an :class:`Endpoint`."""
    port = free_port()
    log = tmp_path_factory.mktemp("faults-moto") / "moto.log"
    with log.open("wb") as out:
        moto = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = Endpoint(port)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)

    def answers() -> bool:
        try:
            return httpx.get(endpoint.url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    until(answers, 30, "moto answering")
    server = S3Server(endpoint.url, "acc-faults")
    server.filesystem().mkdir(server.bucket)
    yield server, endpoint
    endpoint.close()
    moto.terminate()
    moto.wait(timeout=10)


def test_an_s3_endpoint_gone_during_writes_leaves_no_partial_file(
    faulty: Faulty, s3_endpoint: tuple[S3Server, Endpoint], tmp_path: Path
) -> None:
    """The S3 endpoint goes away for a few seconds while a run writes multi-part files (9 MB,
    two parts each). The writes are tried again and the run completes with every file
    whole; or it fails saying storage did not answer. Either way no object is partial, and
    no multi-part upload is left open."""
    s3, endpoint = s3_endpoint
    count, size = 6, 9_000_000
    with pool_on_s3(faulty.info, s3, "warm") as (on_s3, pool, prefix):
        repo = publish_ticker(on_s3, tmp_path, pool)
        run = on_s3.launch(repo.name, conf={"ticks": count, "every": 0.5, "size": size})
        fs = s3.filesystem()
        folder = f"{prefix}/demo/results/{repo.name}/1.0.0/{run.id}".removeprefix("s3://")

        def written() -> list[str]:
            fs.invalidate_cache()
            try:
                return sorted(p for p in fs.ls(folder) if "tick-" in p)
            except FileNotFoundError:
                return []

        until(lambda: len(written()) >= 2, 120, "the run writing its files")
        endpoint.go_down()
        until(lambda: endpoint.refused >= 3, 60, "the run's storage trying again")
        down_for = endpoint.refused
        endpoint.come_back()
        state = run.wait(timeout=240)
        logs = "\n".join(run.logs())
        files = written()
        for path in files:  # every object is whole: its size and its bytes
            n = int(path.rsplit("tick-", 1)[1][:4])
            assert fs.size(path) == size, path
            assert fs.cat_file(path, start=size - 10) == bytes([n % 256]) * 10, path
        uploads = fs.call_s3("list_multipart_uploads", Bucket=s3.bucket)
        assert not uploads.get("Uploads"), uploads
        leftovers = [p for p in fs.find(folder) if ".part" in p]  # no file half-made
        assert not leftovers, leftovers
        if state == "Completed":
            assert len(files) == count, files
        else:
            assert state == "Failed", logs
            assert "storage" in logs.lower(), logs
        print(f"S3 away for {down_for} refused connections: the run ended {state}")
