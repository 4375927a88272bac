"""The warm worker (``acc-warm``) on the session's real Prefect server: its own pool and
worker process, models published into that pool, runs launched as users launch them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import (
    PlatformInfo,
    ensure_auth_string,
    start_warm_worker,
    stop_process,
    worker_log,
)
from accelerator_prefect.transport import prefect_client
from accelerator_prefect.worker import HOST_LABEL, WORKER_TYPE, WarmWorker
from tests.conftest import ModelRepo, S3Server, pool_on_s3

NAP_FLOW = """
import os
import time

from pydantic import Field

from accelerator_prefect import Conf, jobflow, routine

CODE_VERSION = "{code_version}"


class NapConf(Conf):
    seconds: float = Field(default=0.0, ge=0, le=600, description="How long to sleep.")


@routine
def sleep(conf: NapConf) -> int:
    time.sleep(conf.seconds)
    return os.getpid()


@jobflow(name="nap")
def nap(conf: NapConf) -> dict:
    return {{"code": CODE_VERSION, "pid": sleep(conf), "cwd": os.getcwd()}}
"""

NAP_MANIFEST = """
name: {name}
title: Nap
version: {version}
jobflow: flows/nap.py:nap
owner: alice
project: demo
work_pool: {pool}
access:
  scope: project
"""


@dataclass(frozen=True)
class WarmPool:
    name: str
    worker_pid: int
    auth_string: str


def _until(condition: Callable[[], object], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {deadline:g} s")


def _prefect(api_url: str, call: Callable[..., object]) -> object:
    async def go() -> object:
        async with prefect_client(api_url) as client:
            return await call(client)

    return asyncio.run(go())


def create_warm_pool(api_url: str, name: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate

    _prefect(
        api_url,
        lambda c: c.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=WORKER_TYPE,
                base_job_template=WarmWorker.get_default_base_job_template(),
            )
        ),
    )


def _worker_online(api_url: str, pool: str) -> bool:
    async def online(client: object) -> bool:
        workers = await client.read_workers_for_work_pool(pool)  # type: ignore[attr-defined]
        return any(str(w.status).upper().endswith("ONLINE") for w in workers)

    return bool(_prefect(api_url, online))


def zygote_of(worker_pid: int) -> int:
    """The worker's zygote: its child running ``accelerator_prefect.zygote``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == worker_pid and b"accelerator_prefect.zygote" in cmdline:
            return int(entry.name)
    raise AssertionError(f"worker {worker_pid} has no zygote")


@pytest.fixture(scope="module")
def warm(platform: PlatformInfo) -> Iterator[WarmPool]:
    """A work pool of type acc-warm and one warm worker process serving it."""
    name = f"warm-{uuid.uuid4().hex[:6]}"
    create_warm_pool(platform.api_url, name)
    # As in a home that built an environment and holds DVC data: the runs' confinement,
    # made when the worker starts, finds the folders (runs read them, never write them).
    for folder in ("environments", "dvc-remote"):
        (platform.home / folder).mkdir(exist_ok=True)
    pid = start_warm_worker(platform.home, platform.api_url, name, {"ACC_WARM_LIMIT": "10"})
    _until(lambda: _worker_online(platform.api_url, name), 120, "the warm worker came online")
    _until(lambda: _has_zygote(pid), 120, "the zygote started")
    yield WarmPool(name, pid, ensure_auth_string(platform.home))
    stop_process(pid)


def _has_zygote(worker_pid: int) -> bool:
    try:
        zygote_of(worker_pid)
    except AssertionError:
        return False
    return True


def publish_nap(acc: Accelerator, repo: ModelRepo, pool: str, version: str, code: str) -> None:
    repo.write("flows/nap.py", NAP_FLOW.format(code_version=code))
    repo.write(
        f"deployments/{repo.name}.yaml",
        NAP_MANIFEST.format(name=repo.name, version=version, pool=pool),
    )
    repo.commit(f"{version}")
    acc.publish(repo.manifest)


@pytest.fixture(scope="module")
def nap(acc: Accelerator, warm: WarmPool, tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    """A nap model in the warm pool: 1.0.0 (code v1) and 2.0.0 (code v2)."""
    repo = ModelRepo(tmp_path_factory.mktemp("nap") / "models", f"nap-{uuid.uuid4().hex[:8]}")
    publish_nap(acc, repo, warm.name, "1.0.0", "v1")
    repo.repo.create_tag("v1")
    publish_nap(acc, repo, warm.name, "2.0.0", "v2")
    return repo


def test_the_warm_worker_type_is_known_to_prefects_cli(platform: PlatformInfo) -> None:
    from accelerator_prefect.platform import _base_env, _prefect_bin

    name = f"cli-{uuid.uuid4().hex[:6]}"
    env = _base_env(platform.home, platform.api_url)
    created = subprocess.run(
        [_prefect_bin(), "work-pool", "create", "--type", WORKER_TYPE, name],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    pool = _prefect(platform.api_url, lambda c: c.read_work_pool(name))
    assert pool.type == WORKER_TYPE  # type: ignore[attr-defined]


def test_a_trivial_run_completes_in_a_process_of_its_own(
    acc: Accelerator, nap: ModelRepo, warm: WarmPool, platform: PlatformInfo
) -> None:
    run = acc.launch(nap.name, version="1.0.0")
    assert run.wait(timeout=60) == "Completed"
    result = run.result()
    assert result["code"] == "v1"
    zygote = zygote_of(warm.worker_pid)
    assert result["pid"] not in (warm.worker_pid, zygote)
    assert Path(result["cwd"]).name == nap.repo.tags["v1"].commit.hexsha  # its pinned code
    # Operators still see each pull step in the event feed (sent by the events worker).
    _until(
        lambda: (
            _pull_step_events(platform.api_url, run.id) == ["checkout", "set_working_directory"]
        ),
        30,
        "both pull steps' events were recorded",
    )


def _pull_step_events(api_url: str, run_id: object) -> list[str]:
    async def read(client: object) -> list[str]:
        response = await client._client.post(  # type: ignore[attr-defined]
            "/events/filter",
            json={
                "filter": {
                    "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
                    "event": {"name": ["prefect.flow-run.pull-step.executed"]},
                    "order": "ASC",
                },
                "limit": 50,
            },
        )
        response.raise_for_status()
        return [e["payload"]["step_name"] for e in response.json()["events"]]

    return list(_prefect(api_url, read))  # type: ignore[call-overload]


def test_two_versions_side_by_side_each_run_their_own_code(
    acc: Accelerator, nap: ModelRepo
) -> None:
    first = acc.launch(nap.name, version="1.0.0", conf={"seconds": 1})
    second = acc.launch(nap.name, version="2.0.0", conf={"seconds": 1})
    assert first.wait(timeout=60) == "Completed" and second.wait(timeout=60) == "Completed"
    assert first.result()["code"] == "v1"
    assert second.result()["code"] == "v2"


def _running_pid(api_url: str, run_id: object) -> int | None:
    flow_run = _prefect(api_url, lambda c: c.read_flow_run(run_id))
    state = flow_run.state  # type: ignore[attr-defined]
    pid = flow_run.infrastructure_pid  # type: ignore[attr-defined]
    return int(pid) if pid and state is not None and state.is_running() else None


def _labels(api_url: str, run_id: object) -> dict[str, object]:
    flow_run = _prefect(api_url, lambda c: c.read_flow_run(run_id))
    return dict(flow_run.labels or {})  # type: ignore[attr-defined]


def wait_running_pid(api_url: str, run_id: object, deadline: float = 60) -> int:
    """The pid of the run's process, once the run is Running."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        pid = _running_pid(api_url, run_id)
        if pid is not None:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} was not running within {deadline:g} s")


def test_a_child_killed_by_sigkill_is_marked_crashed_within_five_seconds(
    acc: Accelerator, platform: PlatformInfo, nap: ModelRepo
) -> None:
    run = acc.launch(nap.name, version="1.0.0", conf={"seconds": 120})
    pid = wait_running_pid(platform.api_url, run.id)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _until(lambda: run.state == "Crashed", 5, "the run was Crashed")
    assert time.monotonic() - killed < 5


def test_a_cancelled_run_stops_its_process_and_ends_cancelled(
    acc: Accelerator, platform: PlatformInfo, nap: ModelRepo
) -> None:
    run = acc.launch(nap.name, version="1.0.0", conf={"seconds": 120})
    pid = wait_running_pid(platform.api_url, run.id)
    run.cancel()
    assert run.wait(timeout=30) == "Cancelled"
    _until(lambda: not Path(f"/proc/{pid}").exists(), 10, "the run's process ended")


def test_a_run_cancelled_while_its_worker_starts_it_ends_cancelled_and_never_runs_on(
    acc: Accelerator, platform: PlatformInfo, nap: ModelRepo
) -> None:
    """Cancelled while Pending (the worker took it, its process is starting): the run
    must not be taken Running again by its engine and run to the end."""

    def state_type(run_id: object) -> str:
        flow_run = _prefect(platform.api_url, lambda c: c.read_flow_run(run_id))
        return str(flow_run.state.type.value)  # type: ignore[attr-defined]

    for _ in range(20):
        run = acc.launch(nap.name, version="1.0.0", conf={"seconds": 30})
        end = time.monotonic() + 30
        while (seen := state_type(run.id)) == "SCHEDULED" and time.monotonic() < end:
            time.sleep(0.005)
        run.cancel()
        assert run.wait(timeout=30) == "Cancelled"
        if seen == "PENDING":
            return
    raise AssertionError("no launch was seen Pending in 20 tries")


def test_the_zygote_holds_no_credentials(warm: WarmPool) -> None:
    zygote = zygote_of(warm.worker_pid)
    environ = Path(f"/proc/{zygote}/environ").read_bytes()
    secret = warm.auth_string.encode()
    assert b"PREFECT_API_AUTH_STRING" not in environ
    assert secret not in environ
    # The worker does hold it (a platform service), and the zygote is its child.
    assert secret in Path(f"/proc/{warm.worker_pid}/environ").read_bytes()
    assert secret not in _memory(zygote)


ATTEMPTS = """
def attempt(action) -> str:
    try:
        action()
    except FileNotFoundError:
        return "missing"
    except PermissionError:
        return "refused"
    except Exception as exc:
        return "refused" if "ermission denied" in str(exc) else f"failed: {exc!r}"
    return "done"


def write(uri: str) -> None:
    with fsspec.open(uri, "w") as f:
        f.write("pwned")
"""
"""What the hostile jobflows try things with: ``attempt`` says whether a thing was done,
refused or missing."""


HOSTILE_FLOW = """
import os
from pathlib import Path

import fsspec

from accelerator_prefect import Conf, Inputs, Output, jobflow
from accelerator_prefect.settings import get_settings


class Victims(Conf):
    checkout: str
    site_packages: str
    result: str
    old_result: str


{attempts}

def overwrite(path: str) -> None:
    with open(path, "w") as f:
        f.write("pwned")


@jobflow(name="hostile")
def hostile(conf: Victims, inputs: Inputs, output: Output) -> dict:
    home = get_settings().home
    checkout, site_packages = Path(conf.checkout), Path(conf.site_packages)
    tried = {
        "operator token": attempt(lambda: (home / "operator.token").read_bytes()),
        "auth string": attempt(lambda: (home / "api-auth-string").read_bytes()),
        "server database": attempt(lambda: os.listdir(home / "prefect")),
        "logs": attempt(lambda: os.listdir(home / "logs")),
        "home": attempt(lambda: os.listdir(home)),
        "planted": attempt(lambda: (home / "planted.py").write_text("import os")),
        "code cache": attempt(lambda: os.listdir(home / "code")),
        "other checkout": attempt(lambda: overwrite(checkout / "flows" / "nap.py")),
        "plant in other checkout": attempt(lambda: overwrite(checkout / "flows" / "evil.py")),
        "read other checkout": attempt(lambda: (checkout / "flows" / "nap.py").read_text()),
        "own checkout": attempt(lambda: overwrite("evil.py")),
        "read own checkout": attempt(lambda: open("flows/nap.py").read()),
        "environment": attempt(lambda: overwrite(site_packages / "victim_lib.py")),
        "plant in environment": attempt(lambda: overwrite(site_packages / "evil.py")),
        "read environment": attempt(lambda: (site_packages / "victim_lib.py").read_text()),
        "other result": attempt(lambda: overwrite(conf.result)),
        "read other result": attempt(lambda: open(conf.result).read()),
        "older result": attempt(lambda: overwrite(conf.old_result)),
        "results": attempt(lambda: os.listdir(home / "results")),
        "dvc remote": attempt(lambda: overwrite(home / "dvc-remote" / "evil")),
        "its input": attempt(lambda: inputs.files()[0].read_text()),
        "other storage": attempt(lambda: fsspec.open("acc://demo/ledger/books.csv").open().read()),
        "write elsewhere": attempt(lambda: write("acc://demo/PWNED.txt")),
        "link planted": attempt(lambda: os.symlink("/", str(home / "storage" / "demo" / "up"))),
    }
    with output.open("tried.txt", "w") as f:  # its own outputs, as ever
        f.write(repr(tried))
    return tried
""".replace("{attempts}", ATTEMPTS)


def _publish_jobflow(
    acc: Accelerator, tmp_path: Path, warm: WarmPool, code: str, entry: str, extra: str
) -> ModelRepo:
    """A model in the warm pool whose jobflow is ``entry`` in ``code``, its manifest the
    nap's with ``extra`` lines, published at 1.0.0 from a new repository."""
    repo = ModelRepo(tmp_path / entry, f"{entry}-{uuid.uuid4().hex[:8]}")
    repo.write("flows/nap.py", code)
    manifest = NAP_MANIFEST.format(name=repo.name, version="1.0.0", pool=warm.name)
    repo.write(
        f"deployments/{repo.name}.yaml",
        manifest.replace("flows/nap.py:nap", f"flows/nap.py:{entry}") + extra,
    )
    repo.commit(entry)
    acc.publish(repo.manifest)
    return repo


def _result_file(api_url: str, run_id: object) -> Path:
    """The file holding a run's result (its state names the key, its block the folder)."""

    async def read(client: Any) -> Path:
        state = (await client.read_flow_run(run_id)).state
        block = await client.read_block_document(state.data.storage_block_id)
        return (Path(block.data["basepath"]) / str(state.data.storage_key)).resolve()

    found = _prefect(api_url, read)
    assert isinstance(found, Path)
    return found


def test_a_hostile_jobflow_cannot_reach_the_platforms_home(
    acc: Accelerator, warm: WarmPool, platform: PlatformInfo, nap: ModelRepo, tmp_path: Path
) -> None:
    """An author's code runs as the worker's user, yet the operator's token, the API's
    auth string, the server's database and the logs in the platform's home are out of
    its reach (Landlock, set by each child before the author's code is imported): only
    the folders a run needs are, and in the local storage only its inputs (to read) and
    its output folder. It cannot change what other runs execute or report either: other
    models' checkouts, environments and the DVC remote are read-only, of the code cache
    it reads only its own checkout, and of the results only its own result folder."""
    from accelerator_prefect import confine

    if confine.abi() < 1:
        pytest.skip(
            "this kernel offers no Landlock (the docs say the platform then trusts its authors)"
        )
    # What a colleague's next run would execute or read back: the nap's cached checkout
    # and its result; an environment's libraries; a result stored before results went
    # into a folder per run; the DVC remote.
    victim = acc.launch(nap.name, version="1.0.0")
    assert victim.wait(timeout=120) == "Completed", victim.logs()
    victims_result = victim.result()
    checkout = Path(victims_result["cwd"])
    victim_result = _result_file(platform.api_url, victim.id)
    results = (platform.home / "results").resolve()
    assert victim_result.parent == results / str(victim.id)  # a folder per run
    site_packages = (
        platform.home / "environments" / f"hostile-{uuid.uuid4().hex[:8]}" / "lib" / "site-packages"
    )
    site_packages.mkdir(parents=True)
    (site_packages / "victim_lib.py").write_text("VALUE = 1\n")
    old_result = platform.home / "results" / uuid.uuid4().hex
    old_result.write_text('{"answer": 42}')
    kept = {
        path: path.read_bytes()
        for path in (
            checkout / "flows" / "nap.py",
            site_packages / "victim_lib.py",
            victim_result,
            old_result,
        )
    }
    repo = _publish_jobflow(
        acc,
        tmp_path,
        warm,
        HOSTILE_FLOW,
        "hostile",
        "inputs:\n  max_files: 5\n  accepted_types: ['.csv']\n  sources: [storage]\n",
    )
    assert (platform.home / "operator.token").exists()
    with acc.storage.open("acc://demo/ledger/books.csv", "wb") as f:
        f.write(b"account,balance\n")
    with acc.storage.open("acc://demo/hostile-in/in.csv", "wb") as f:
        f.write(b"x\n1\n")
    victims = {
        "checkout": str(checkout),
        "site_packages": str(site_packages),
        "result": str(victim_result),
        "old_result": str(old_result),
    }
    run = acc.launch(repo.name, inputs=["acc://demo/hostile-in/in.csv"], conf=victims)
    assert run.wait(timeout=120) == "Completed", run.logs()
    assert run.result() == {
        "operator token": "refused",
        "auth string": "refused",
        "server database": "refused",
        "logs": "refused",
        "home": "refused",
        "planted": "refused",
        "code cache": "refused",
        "other checkout": "refused",
        "plant in other checkout": "refused",
        "read other checkout": "refused",
        "own checkout": "refused",
        "read own checkout": "done",
        "environment": "refused",
        "plant in environment": "refused",
        "read environment": "done",
        "other result": "refused",
        "read other result": "refused",
        "older result": "refused",
        "results": "refused",
        "dvc remote": "refused",
        "its input": "done",
        "other storage": "refused",
        "write elsewhere": "refused",
        "link planted": "refused",
    }
    assert not (platform.home / "planted.py").exists()
    assert not acc.storage.exists("acc://demo/PWNED.txt")
    assert [o.path for o in run.outputs()] == ["tried.txt"]
    # Nothing another run executes or reads back was changed or added to.
    assert {path: path.read_bytes() for path in kept} == kept
    for planted in (
        checkout / "flows" / "evil.py",
        site_packages / "evil.py",
        platform.home / "dvc-remote" / "evil",
    ):
        assert not planted.exists(), planted
    assert victim.result() == victims_result
    # Its own result went into a folder of its own, and reads back (above) as ever.
    assert _result_file(platform.api_url, run.id).parent == results / str(run.id)
    shutil.rmtree(site_packages.parent.parent)


OBJECT_STORE_FLOW = """
import hashlib
import os

import fsspec

from accelerator_prefect import Conf, Inputs, Output, jobflow


class Nothing(Conf):
    pass


{attempts}

@jobflow(name="on-the-store")
def store(conf: Nothing, inputs: Inputs, output: Output) -> dict:
    acc = fsspec.filesystem("acc")
    tried = {
        "its input": attempt(lambda: inputs.files()[0].read_text()),
        "other storage": attempt(lambda: fsspec.open("acc://demo/s3-ledger/books.csv").open().read()),
        "list elsewhere": attempt(lambda: acc.ls("acc://demo/")),
        "write elsewhere": attempt(lambda: write("acc://demo/PWNED.txt")),
        "write beside its output": attempt(lambda: write(output.uri.rstrip("/") + "-x/f.txt")),
        "copy out": attempt(lambda: acc.cp_file(inputs.paths[0], "acc://demo/copied.csv")),
        "copy in": attempt(lambda: acc.cp_file(inputs.paths[0], output.path("copied.csv"))),
        "remove its input": attempt(lambda: acc.rm_file(inputs.paths[0])),
    }
    big = os.urandom(66 << 20)  # over what one request to the proxy may carry
    with output.open("big.bin", "wb") as f:
        f.write(big)
    with fsspec.open(output.path("big.bin"), "rb") as f:
        tried["big read back"] = "same" if f.read() == big else "different"
    with output.open("tried.txt", "w") as f:
        f.write(repr(tried))
    tried["names"] = sorted(n for n in os.environ if n.startswith("AWS_") or "STORAGE" in n)
    tried["values"] = sorted(hashlib.sha256(v.encode()).hexdigest() for v in os.environ.values())
    return tried
""".replace("{attempts}", ATTEMPTS)


def test_a_run_on_an_object_store_holds_no_keys_and_reaches_its_own_files_only(
    acc: Accelerator, platform: PlatformInfo, s3_server: S3Server, tmp_path: Path
) -> None:
    """On S3 the worker keeps the storage's keys: a run gets none, reaches storage through
    the run-scoped proxy, reads its inputs and writes its output folder, and nothing else.
    (moto checks no keys, so the test checks the run holds none, not what S3 would refuse.)"""
    import hashlib

    with pool_on_s3(platform, s3_server, "warm") as (on_s3, pool, _):
        repo = _publish_jobflow(
            on_s3,
            tmp_path,
            WarmPool(pool, 0, ""),
            OBJECT_STORE_FLOW,
            "store",
            "inputs:\n  max_files: 5\n  accepted_types: ['.csv']\n  sources: [storage]\n",
        )
        on_s3.storage.fs.pipe_file("demo/s3-ledger/books.csv", b"account,balance\n")
        on_s3.storage.fs.pipe_file("demo/s3-in/in.csv", b"x\n1\n")
        run = on_s3.launch(repo.name, inputs=["acc://demo/s3-in/in.csv"])
        assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
        tried = run.result()
        names = set(tried.pop("names"))  # an endpoint and a region, no key
        assert {"AWS_ENDPOINT_URL", "ACC_STORAGE_URL"} <= names, names
        assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, names
        secret = hashlib.sha256(os.environ["AWS_SECRET_ACCESS_KEY"].encode()).hexdigest()
        assert secret not in tried.pop("values")
        assert tried == {
            "its input": "done",
            "other storage": "refused",
            "list elsewhere": "refused",
            "write elsewhere": "refused",
            "write beside its output": "refused",
            "copy out": "refused",
            "copy in": "done",
            "remove its input": "refused",
            "big read back": "same",
        }
        outputs = {o.path: o for o in run.outputs()}
        assert sorted(outputs) == ["big.bin", "copied.csv", "tried.txt"]
        assert outputs["big.bin"].size == 66 << 20
        assert not on_s3.storage.exists("acc://demo/PWNED.txt")
        assert on_s3.storage.exists("acc://demo/s3-in/in.csv")
        [read] = run.provenance().inputs  # recorded through the proxy too
        assert read.uri == "acc://demo/s3-in/in.csv"


PRYING_FLOW = """
import asyncio
import base64
import hashlib
import os
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.states import Cancelled

from accelerator_prefect import Conf, Secrets, jobflow


class Targets(Conf):
    other_run: str
    other_deployment: str
    other_block: str
    server: str


async def pry(conf: Targets, own: UUID) -> dict:
    tried = {}

    async def attempt(name, call):
        try:
            await call
            tried[name] = "done"
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            tried[name] = f"refused {status}" if status in (401, 403) else f"failed: {exc!r}"

    other = UUID(conf.other_run)
    async with get_client() as client:
        await attempt("other run", client.read_flow_run(other))
        await attempt("every run", client.read_flow_runs())
        secret = client.read_block_document_by_name(conf.other_block, "secret")
        await attempt("other secret", secret)
        await attempt("directory", client.read_variables())
        await attempt("launch another", client.create_flow_run_from_deployment(
            UUID(conf.other_deployment)))
        await attempt("cancel another", client.set_flow_run_state(other, Cancelled(), force=True))
        await attempt("rename itself", client.update_flow_run(own, tags=["acc:user:alice"]))
        await attempt("own run", client.read_flow_run(own))
    # Straight to the server, with what the run was given: the server knows no such string.
    given = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
    answer = httpx.get(
        f"{conf.server}/flow_runs/{other}", headers={"Authorization": f"Basic {given}"}
    )
    refused = answer.status_code in (401, 403)
    tried["server directly"] = f"refused {answer.status_code}" if refused else "done"
    for about in (other, own):  # the one flow-run event a run sends itself
        resource = {"prefect.resource.id": f"prefect.flow-run.{about}"}
        emit_event("prefect.flow-run.heartbeat", resource=resource)
    values = os.environ.values()
    tried["environment"] = sorted(hashlib.sha256(v.encode()).hexdigest() for v in values)
    return tried


@jobflow(name="prying")
def prying(conf: Targets, secrets: Secrets) -> dict:
    tried = asyncio.run(pry(conf, get_run_context().flow_run.id))
    tried["own secret"] = secrets.get("API_KEY") == "its-own-key"
    return tried
"""


def test_a_jobflow_reaches_only_its_own_run_through_the_run_scoped_proxy(
    acc: Accelerator, warm: WarmPool, platform: PlatformInfo, nap: ModelRepo, tmp_path: Path
) -> None:
    """A run never holds the API's auth string: its requests go through the worker's
    proxy with a token good for its own run, which refuses every other run, block,
    Variable and deployment, and drops events about another run."""
    import hashlib

    from prefect.client.schemas.actions import BlockDocumentCreate
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    other = acc.launch(nap.name, version="2.0.0", conf={"seconds": 0.1})
    assert other.wait(timeout=120) == "Completed"
    other_block = f"acc-run-{uuid.uuid4().hex[:16]}-api-key"

    async def plant(client: Any) -> str:
        kind = await client.read_block_type_by_slug("secret")
        schema = await client.get_most_recent_block_schema_for_block_type(kind.id)
        await client.create_block_document(
            BlockDocumentCreate(
                name=other_block,
                data={"value": "someone-elses-key"},
                block_type_id=kind.id,
                block_schema_id=schema.id,
            )
        )
        flow_run = await client.read_flow_run(other.id)
        return str(flow_run.deployment_id)

    deployment = _prefect(platform.api_url, plant)
    repo = _publish_jobflow(
        acc,
        tmp_path,
        warm,
        PRYING_FLOW,
        "prying",
        "secrets:\n  API_KEY:\n    description: its key\n    required: true\n",
    )
    conf = {
        "other_run": str(other.id),
        "other_deployment": deployment,
        "other_block": other_block,
        "server": platform.api_url,
    }
    runs_before = len(acc.runs(model=nap.name))
    run = acc.launch(repo.name, conf=conf, secrets={"API_KEY": "its-own-key"})
    assert run.wait(timeout=120) == "Completed", run.logs()
    tried = run.result()
    environment = tried.pop("environment")
    assert tried == {
        "other run": "refused 403",
        "every run": "refused 403",
        "other secret": "refused 403",
        "directory": "refused 403",
        "launch another": "refused 403",
        "cancel another": "refused 403",
        "rename itself": "refused 403",
        "own run": "done",
        "server directly": "refused 401",
        "own secret": True,
    }
    assert hashlib.sha256(warm.auth_string.encode()).hexdigest() not in environment
    assert other.state == "Completed" and len(acc.runs(model=nap.name)) == runs_before
    assert "acc:user:alice" not in run.info().tags.values()

    def heartbeats(run_id: object) -> Any:
        wanted = EventFilter(
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
        )

        async def read(client: Any) -> Any:
            found = await client.request(
                "POST", "/events/filter", json={"filter": wanted.model_dump(mode="json")}
            )
            return found.json()["events"]

        return _prefect(platform.api_url, read)

    # Its event about itself arrives; the one about another run never does.
    _until(lambda: heartbeats(run.id), 30, "the run's own event arrived")
    assert heartbeats(other.id) == []


def _memory(pid: int) -> bytes:
    """Everything the process has mapped readable and private: its heap, its stacks."""
    chunks: list[bytes] = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            span, perms = fields[0], fields[1]
            if not perms.startswith("r") or (len(fields) > 5 and fields[5].startswith("/")):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                continue
    return b"".join(chunks)


def test_ten_runs_at_once_all_complete_each_in_its_own_process(
    acc: Accelerator, nap: ModelRepo
) -> None:
    runs = [acc.launch(nap.name, version="2.0.0", conf={"seconds": 0.5}) for _ in range(10)]
    assert [run.wait(timeout=120) for run in runs] == ["Completed"] * 10
    results = [run.result() for run in runs]
    assert {r["code"] for r in results} == {"v2"}
    assert len({r["pid"] for r in results}) == 10


def _rss_kib(pid: int) -> int:
    """The process's resident memory (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"process {pid} has no VmRSS")


def test_the_parents_memory_stays_flat_over_forty_runs_once_warm(
    acc: Accelerator, nap: ModelRepo, warm: WarmPool
) -> None:
    """The zygote and the worker hold nothing of a run once it ended: the zygote's resident
    memory does not grow over 80 runs, and the worker's, once 50 runs filled the caches a
    first run fills, does not grow over 40 more.

    The bounds are per run what they were over 200 runs (2 MiB for the zygote, 16 MiB for
    the worker, whose caches took about 5 MiB of it): a leak of about 10 KiB a run in the
    zygote, or 60 KiB in the worker, fails either way. Measured (batches of 10): the zygote
    did not change at all; the worker grew 0.7-1.2 MiB a batch over its first 50 runs, then
    10-30 KiB a run."""

    def batch(n: int) -> None:
        runs = [acc.launch(nap.name, version="2.0.0") for _ in range(n)]
        states = [run.wait(timeout=120) for run in runs]
        failed = [(r.id, s, r.info().message) for r, s in zip(runs, states, strict=True)]
        assert [f for f in failed if f[1] != "Completed"] == []

    def rss() -> dict[str, int]:
        return {"zygote": _rss_kib(zygote), "worker": _rss_kib(warm.worker_pid)}

    zygote = zygote_of(warm.worker_pid)
    batch(10)
    first = rss()
    for _ in range(4):
        batch(10)
    warmed = rss()
    for _ in range(4):
        batch(10)
    last = rss()
    print(f"RSS (KiB) after 10 runs {first}, 50 runs {warmed}, 90 runs {last}")
    assert zygote_of(warm.worker_pid) == zygote  # the same parent served them all
    assert last["zygote"] - first["zygote"] <= 768, (first, last)  # 80 runs
    assert last["worker"] - warmed["worker"] <= 3072, (warmed, last)  # 40 runs


def test_runs_of_a_killed_worker_die_with_it_and_the_next_worker_marks_them_crashed(
    acc: Accelerator, platform: PlatformInfo, tmp_path: Path
) -> None:
    pool = f"warm-{uuid.uuid4().hex[:6]}"
    create_warm_pool(platform.api_url, pool)
    worker = start_warm_worker(platform.home, platform.api_url, pool)
    try:
        _until(lambda: _worker_online(platform.api_url, pool), 120, "the worker came online")
        repo = ModelRepo(tmp_path / "models", f"nap-{uuid.uuid4().hex[:8]}")
        publish_nap(acc, repo, pool, "1.0.0", "v1")
        run = acc.launch(repo.name, conf={"seconds": 120})
        child = wait_running_pid(platform.api_url, run.id)
        zygote = zygote_of(worker)
        # The worker says it holds the run with labels it sets beside the run's start (in
        # the background): what a successor looks for. A worker killed before would leave
        # nothing to find (see docs/operations.md).
        _until(lambda: HOST_LABEL in _labels(platform.api_url, run.id), 60, "the run was labelled")

        os.kill(worker, signal.SIGKILL)  # no clean-up of its own: the kernel's signal only

        for pid in (zygote, child):
            _until(lambda pid=pid: not _alive(pid), 10, f"process {pid} ended with its worker")
        assert run.state == "Running"  # Prefect's server leaves it so

        # The next warm worker of the pool finds the run nobody holds and ends it.
        worker = start_warm_worker(platform.home, platform.api_url, pool)
        _until(lambda: run.state == "Crashed", 120, "the orphaned run was marked Crashed")
    finally:
        stop_process(worker)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


KEYED_FLOW = """
import os
import signal

from accelerator_prefect import Conf, Output, Secrets, jobflow, routine


class KeyConf(Conf):
    pass


@routine
def write_then_die(secrets: Secrets, output: Output) -> None:
    with output.open("partial.txt", "w") as f:
        f.write(str(len(secrets.get("API_KEY"))))
    os.kill(os.getpid(), signal.SIGKILL)


@jobflow(name="keyed-warm")
def keyed(conf: KeyConf, secrets: Secrets, output: Output) -> None:
    write_then_die(secrets, output)
"""

KEYED_MANIFEST = """
name: {name}
title: Keyed
version: 1.0.0
jobflow: flows/keyed.py:keyed
owner: alice
project: demo
work_pool: {pool}
access:
  scope: project
secrets:
  API_KEY:
    description: Key of the data service
    required: true
"""


def _run_blocks(api_url: str) -> list[str]:
    from accelerator_prefect import secrets

    async def names(client: object) -> list[str]:
        found = await secrets._blocks_named(client, secrets.RUN_PREFIX)  # type: ignore[arg-type]
        return [str(b["name"]) for b in found]

    found = _prefect(api_url, names)
    assert isinstance(found, list)
    return [str(name) for name in found]


def test_a_killed_childs_secrets_are_deleted_and_its_outputs_marked_incomplete(
    acc: Accelerator, platform: PlatformInfo, warm: WarmPool, tmp_path: Path
) -> None:
    from accelerator_prefect.outputs import is_incomplete, list_outputs

    repo = ModelRepo(tmp_path / "models", f"keyed-{uuid.uuid4().hex[:8]}")
    repo.write("flows/keyed.py", KEYED_FLOW)
    repo.write(
        f"deployments/{repo.name}.yaml", KEYED_MANIFEST.format(name=repo.name, pool=warm.name)
    )
    repo.commit("keyed")
    acc.publish(repo.manifest)
    run = acc.launch(repo.name, secrets={"API_KEY": "sk-" + uuid.uuid4().hex})
    block = run.parameters["secrets"]["blocks"]["API_KEY"]

    _until(lambda: run.state in ("Crashed", "Completed", "Failed"), 120, "the run ended")
    assert run.state == "Crashed"
    assert block not in _run_blocks(platform.api_url)
    folder = run.output_location
    assert folder is not None
    assert [Path(f.path).name for f in list_outputs(folder)] == ["partial.txt"]
    assert is_incomplete(folder)


class RefusingProxy:
    """A loopback proxy in front of the Prefect API that passes every request through
    but refuses the event stream's websocket (``/events/out``) with 403, as a proxy or
    load balancer that does not allow websockets does."""

    def __init__(self, api_url: str) -> None:
        host_port = api_url.split("://", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.path = "/" + api_url.split("://", 1)[1].split("/", 1)[1]
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}{self.path}"
        self.refused = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                client.close()
                return
            head += chunk
        if b"/events/out" in head.split(b"\r\n", 1)[0]:
            self.refused += 1
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        upstream = socket.create_connection(self.upstream)
        upstream.sendall(head)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(source, target), daemon=True).start()

    def close(self) -> None:
        self.server.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def test_runs_are_picked_up_by_polling_when_the_event_stream_is_refused(
    acc: Accelerator, platform: PlatformInfo, tmp_path: Path
) -> None:
    proxy = RefusingProxy(platform.api_url)
    pool = f"warm-{uuid.uuid4().hex[:6]}"
    create_warm_pool(platform.api_url, pool)
    worker = start_warm_worker(
        platform.home, proxy.url, pool, {"PREFECT_WORKER_QUERY_SECONDS": "2"}
    )
    try:
        _until(lambda: _worker_online(platform.api_url, pool), 120, "the worker came online")
        _until(lambda: proxy.refused > 0, 60, "the worker tried the event stream")
        repo = ModelRepo(tmp_path / "models", f"nap-{uuid.uuid4().hex[:8]}")
        publish_nap(acc, repo, pool, "1.0.0", "v1")

        run = acc.launch(repo.name)

        assert run.wait(timeout=60) == "Completed"
        assert run.result()["code"] == "v1"
        log = worker_log(platform.home, pool)
        assert "The event stream is unavailable" in log.read_text(errors="replace")
    finally:
        stop_process(worker)
        proxy.close()


def test_a_queue_limit_holds_for_runs_picked_up_from_events(
    acc: Accelerator, platform: PlatformInfo, tmp_path: Path
) -> None:
    """Prefect enforces a work queue's concurrency limit only in its polling query: the
    worker checks it itself before taking a run from an event, and starts the waiting
    run when a slot comes free."""
    pool = f"warm-{uuid.uuid4().hex[:6]}"
    create_warm_pool(platform.api_url, pool)

    async def limit_default_queue(client: object) -> None:
        queues = await client.read_work_queues(work_pool_name=pool)  # type: ignore[attr-defined]
        await client.update_work_queue(id=queues[0].id, concurrency_limit=1)  # type: ignore[attr-defined]

    _prefect(platform.api_url, limit_default_queue)
    # Polling once a minute: within this test, runs start from events only.
    worker = start_warm_worker(
        platform.home, platform.api_url, pool, {"PREFECT_WORKER_QUERY_SECONDS": "60"}
    )
    try:
        _until(lambda: _worker_online(platform.api_url, pool), 120, "the worker came online")
        repo = ModelRepo(tmp_path / "models", f"nap-{uuid.uuid4().hex[:8]}")
        publish_nap(acc, repo, pool, "1.0.0", "v1")

        first = acc.launch(repo.name, conf={"seconds": 3})
        wait_running_pid(platform.api_url, first.id)
        second = acc.launch(repo.name)
        held_until = time.monotonic() + 1.5  # a window to watch it wait, not a sync
        while time.monotonic() < held_until and first.state == "Running":
            assert second.state == "Scheduled"
            time.sleep(0.05)

        assert first.wait(timeout=60) == "Completed"
        assert second.wait(timeout=30) == "Completed"  # started as the slot came free
    finally:
        stop_process(worker)


def test_acc_up_says_what_runs_are_kept_from(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerator_prefect import confine
    from accelerator_prefect.platform import trust_notice

    monkeypatch.setenv("ACC_WARM_CONFINE", "false")
    monkeypatch.setenv("ACC_WARM_PROXY", "false")
    said = trust_notice()
    assert "its home within reach (ACC_WARM_CONFINE=false)" in said
    assert "the worker's access to the platform (ACC_WARM_PROXY=false)" in said
    monkeypatch.delenv("ACC_WARM_CONFINE")
    monkeypatch.delenv("ACC_WARM_PROXY")
    said = trust_notice()
    expected = "kept out of its home" if confine.abi() >= 1 else "offers no Landlock"
    assert expected in said and "host only code you trust" in said
    assert "only its own run's access to Prefect and to storage (a run-scoped proxy)" in said
