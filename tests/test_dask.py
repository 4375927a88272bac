"""``task_runner: dask``: a jobflow's routines fanned out on a local Dask cluster of the
run's own, on the session's platform (the warm worker: its confinement and its
run-scoped proxy), published from a real git repository as authors publish."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from accelerator_prefect import Accelerator, AcceleratorError, environments
from accelerator_prefect.jobflow import DASK_MISSING, chosen_task_runner
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.transport import prefect_client
from tests.conftest import ModelRepo

FANOUT_FLOW = """
import hashlib
import os

from prefect import unmapped

from accelerator_prefect import Conf, Inputs, Output, Secrets, jobflow, routine


class Nothing(Conf):
    pass


@routine
def count(file, output: Output, secrets: Secrets) -> dict:
    key = secrets.get("API_KEY")
    print(f"counting {file.name} with key {key}")
    with file.open("r") as stream:
        rows = sum(1 for _ in stream) - 1
    with output.open(file.name + ".rows.txt", "w") as f:
        f.write(str(rows))
    return {
        "name": file.name,
        "rows": rows,
        "pid": os.getpid(),
        "key": hashlib.sha256(key.encode()).hexdigest(),
    }


@routine
def leak(key: str) -> None:
    raise RuntimeError(f"the service refused {key}")


@jobflow(name="fanout")
def fanout(conf: Nothing, inputs: Inputs, output: Output, secrets: Secrets) -> dict:
    # First, in a worker that has read no secret yet: a value the jobflow read is masked.
    refused = leak.submit(secrets.get("API_KEY"))
    refused.wait()
    futures = count.map(inputs.files(), output=unmapped(output), secrets=unmapped(secrets))
    results = sorted((f.result() for f in futures), key=lambda r: r["name"])
    return {"flow_pid": os.getpid(), "results": results, "leak": refused.state.message}
"""

FANOUT_MANIFEST = """
name: {name}
title: Fan-out
version: 1.0.0
jobflow: flows/fanout.py:fanout
owner: alice
project: demo
access:
  scope: project
inputs:
  max_files: 10
  accepted_types: [".csv"]
  sources: [storage]
secrets:
  API_KEY:
    description: the key of the service it calls
    required: true
task_runner:
  kind: dask
  options: {{n_workers: 2}}
"""


def _task_runs(api_url: str, run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[Any]:
        async with prefect_client(api_url) as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )

    return asyncio.run(read())


@pytest.mark.scale
def test_a_jobflow_maps_a_routine_over_its_inputs_on_a_dask_cluster(
    acc: Accelerator, platform: PlatformInfo, tmp_path: Path
) -> None:
    """Each input file is counted by a routine in a Dask worker process (not the run's
    own), two of them; each writes its result into the run's output folder, reads the
    run's secret, and shows up as one of the run's task runs, Completed. A secret value
    stays out of the logs and errors of the worker processes too."""
    import hashlib

    repo = ModelRepo(tmp_path / "models", f"fanout-{uuid.uuid4().hex[:8]}")
    repo.write("flows/fanout.py", FANOUT_FLOW)
    repo.write(f"deployments/{repo.name}.yaml", FANOUT_MANIFEST.format(name=repo.name))
    repo.commit("fan-out 1.0.0")
    acc.publish(repo.manifest)
    folder = f"acc://demo/fanout-{uuid.uuid4().hex[:6]}"
    files = {f"part-{n}.csv": n + 1 for n in range(4)}  # name -> rows
    for name, rows in files.items():
        with acc.storage.open(f"{folder}/{name}", "wb") as f:
            f.write(b"x\n" + b"1\n" * rows)
    key = "sk-" + uuid.uuid4().hex

    run = acc.launch(repo.name, inputs=[f"{folder}/"], secrets={"API_KEY": key})
    assert run.wait(timeout=240) == "Completed", "\n".join(run.logs())

    result = run.result()
    counted = result["results"]
    assert [(r["name"], r["rows"]) for r in counted] == sorted(files.items())
    assert {r["key"] for r in counted} == {hashlib.sha256(key.encode()).hexdigest()}
    worker_pids = {r["pid"] for r in counted}
    assert result["flow_pid"] not in worker_pids
    assert 1 <= len(worker_pids) <= 2  # the cluster's two workers, nothing else
    assert sorted(o.path for o in run.outputs()) == sorted(f"{n}.rows.txt" for n in files)
    for name, rows in files.items():
        with run.open_output(f"{name}.rows.txt") as f:
            assert f.read() == str(rows).encode()

    task_runs = _task_runs(platform.api_url, run.id)
    counts = [t for t in task_runs if t.task_key.startswith("count")]
    assert len(counts) == len(files)
    assert {t.state_name for t in counts} == {"Completed"}
    assert [t.state_name for t in task_runs if t.task_key.startswith("leak")] == ["Failed"]

    # Prefect sets the run's final state before its task runner closes the cluster, whose
    # workers then send their last logs: those may arrive just after Completed.
    end = time.monotonic() + 60
    while (logs := "\n".join(run.logs())).count("counting part-") < len(files):
        assert time.monotonic() < end, logs
        time.sleep(0.5)
    assert logs.count("counting part-") == len(files)
    assert "with key ***" in logs and key not in logs
    assert "the service refused ***" in result["leak"] and key not in result["leak"]


WITHOUT_PREFECT_DASK = """
import sys

sys.modules["prefect_dask"] = None  # as in an environment without it: importing it fails

from accelerator_prefect import AcceleratorError, Conf, jobflow


class Nothing(Conf):
    pass


@jobflow
def fanout(conf: Nothing) -> int:
    return 1


try:
    fanout.fn(Nothing())
except AcceleratorError as exc:
    print(type(fanout.task_runner).__name__)
    print(exc)
"""


def test_a_dask_run_without_prefect_dask_fails_saying_what_to_add() -> None:
    """The jobflow still loads (so the run can fail with a message rather than crash),
    runs nothing of the author's, and says what its environment needs."""
    env = {**os.environ, "ACC_TASK_RUNNER": json.dumps({"kind": "dask", "options": {}})}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PREFECT_DASK],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.splitlines() == ["ThreadPoolTaskRunner", DASK_MISSING]


NO_RUNNER_CHOSEN = """
import sys

from accelerator_prefect import Conf, jobflow, routine


class Nothing(Conf):
    pass


@routine
def one() -> int:
    return 1


@jobflow
def plain(conf: Nothing) -> int:
    return one()


print(type(plain.task_runner).__name__)
print(sorted({m.split(".")[0] for m in sys.modules} & {"dask", "distributed", "prefect_dask"}))
"""


def test_a_jobflow_that_chose_no_task_runner_imports_no_dask() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ACC_TASK_RUNNER"}
    done = subprocess.run(
        [sys.executable, "-c", NO_RUNNER_CHOSEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.splitlines() == ["ThreadPoolTaskRunner", "[]"]


def test_the_manifests_options_go_over_the_clusters_defaults() -> None:
    chosen = {"kind": "dask", "options": {"n_workers": 3, "memory_limit": "1GB"}}
    runner = chosen_task_runner({"ACC_TASK_RUNNER": json.dumps(chosen)})
    assert runner.cluster_kwargs == {
        "processes": True,
        "n_workers": 3,
        "threads_per_worker": 1,
        "dashboard_address": None,
        "local_directory": runner.cluster_kwargs["local_directory"],
        "security": True,
        "memory_limit": "1GB",
    }
    assert chosen_task_runner({}) is None
    assert chosen_task_runner({"ACC_TASK_RUNNER": '{"kind": "threads"}'}) is None
    with pytest.raises(
        AcceleratorError, match=r"task_runner\.kind: 'ray' is not one of threads, dask"
    ):
        chosen_task_runner({"ACC_TASK_RUNNER": '{"kind": "ray"}'})


KNOCK = """
import json, socket, ssl, sys
from distributed import Client
from distributed.security import Security

address = sys.argv[1]
answers = {}
# TLS with no client certificate, as a raw socket speaks it (Dask's client will not try).
host, port = address.removeprefix("tls://").rsplit(":", 1)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
try:
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"\\x00" * 16)
            answers["no certificate"] = "open" if tls.recv(1) else "closed"
except (ssl.SSLError, OSError) as exc:
    answers["no certificate"] = type(exc).__name__
attempts = {
    "plain tcp": dict(address=address.replace("tls://", "tcp://")),
    "a certificate of its own": dict(address=address, security=Security.temporary()),
}
for what, kwargs in attempts.items():
    try:
        with Client(timeout=5, **kwargs) as client:
            answers[what] = "open: " + str(client.submit(sum, [1, 2]).result(timeout=5))
    except Exception as exc:
        answers[what] = type(exc).__name__
print(json.dumps(answers))
"""


def test_a_runs_dask_scheduler_admits_no_process_without_the_clusters_certificate(
    tmp_path: Path,
) -> None:
    """The cluster a run starts (with the platform's defaults) is knocked on from another
    process of the machine: without its TLS credentials, nobody submits work to it."""
    from distributed import Client, LocalCluster

    from accelerator_prefect.jobflow import dask_cluster_options

    options = dask_cluster_options({"n_workers": 1, "local_directory": str(tmp_path)})
    with LocalCluster(**options) as cluster, Client(cluster) as own:
        assert cluster.scheduler_address.startswith("tls://")
        assert own.submit(sum, [1, 2]).result(timeout=30) == 3  # its own credentials work
        knock = subprocess.run(
            [sys.executable, "-c", KNOCK, cluster.scheduler_address],
            capture_output=True,
            text=True,
            timeout=120,
        )
    answers = json.loads(knock.stdout.strip().splitlines()[-1])
    assert set(answers) == {"no certificate", "plain tcp", "a certificate of its own"}
    assert not any(str(a).startswith("open") for a in answers.values()), answers


def test_a_dask_models_environment_is_locked_with_prefect_dask(tmp_path: Path) -> None:
    """Publishing a dask model locks the runtime's dask extra: the author declares only
    their own libraries. A lock without prefect-dask is said at publishing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "requirements.txt").write_text("\n")
    locked = environments.lock(
        repo,
        repo / "requirements.txt",
        tmp_path / "home",
        extras=environments.runtime_extras("dask"),
    )
    assert {"prefect-dask", "distributed"} <= set(locked.packages)
    assert environments.task_runner_problem(locked, "dask") is None

    without = locked.model_copy(
        update={
            "lock": "".join(
                f"{n}=={v}\n" for n, v in locked.packages.items() if n != "prefect-dask"
            )
        }
    )
    problem = environments.task_runner_problem(without, "dask")
    assert problem is not None and "add prefect-dask to its requirements" in problem
    assert environments.task_runner_problem(without, "threads") is None


FORKED_FLOW = """
import os
import time
from pathlib import Path

from prefect import unmapped

from accelerator_prefect import Conf, Output, jobflow, routine
from accelerator_prefect.settings import get_settings


class Where(Conf):
    other_results: str
    seconds: float = 0


def attempt(action) -> str:
    try:
        action()
    except OSError:
        return "refused"
    return "done"


def write(path: Path) -> None:
    path.write_text("pwned")


@routine
def where(n: int, conf: Where, output: Output) -> dict:
    time.sleep(conf.seconds)
    home = get_settings().home
    forker = os.getppid()
    with open(f"/proc/{forker}/stat") as stat:
        run = int(stat.read().rsplit(")", 1)[1].split()[1])
    with output.open(f"{n}.txt", "w") as f:  # its own outputs, as ever
        f.write(str(n))
    return {
        "pid": os.getpid(),
        "forker": forker,
        "run": run,
        "operator token": attempt(lambda: (home / "operator.token").read_bytes()),
        "other run's results": attempt(lambda: write(Path(conf.other_results, "planted.json"))),
    }


@jobflow(name="forked")
def forked(conf: Where, output: Output) -> dict:
    futures = where.map(range(4), conf=unmapped(conf), output=unmapped(output))
    return {"flow_pid": os.getpid(), "routines": [f.result() for f in futures]}
"""

FORKED_MANIFEST = """
name: {name}
title: Forked
version: 1.0.0
jobflow: flows/forked.py:forked
owner: alice
project: demo
access:
  scope: project
task_runner:
  kind: dask
  options: {{n_workers: 2}}
"""


def _forked_model(acc: Accelerator, tmp_path: Path) -> ModelRepo:
    repo = ModelRepo(tmp_path / "models", f"forked-{uuid.uuid4().hex[:8]}")
    repo.write("flows/forked.py", FORKED_FLOW)
    repo.write(f"deployments/{repo.name}.yaml", FORKED_MANIFEST.format(name=repo.name))
    repo.commit("forked 1.0.0")
    acc.publish(repo.manifest)
    return repo


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _descendants(pid: int) -> set[int]:
    """The live processes below ``pid`` (its children, theirs…), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    below: set[int] = set()
    added = {pid}
    while added:
        added = {child for child, parent in parents.items() if parent in added} - below
        below |= added
    return {p for p in below if _alive(p)}


def _until(condition: Any, deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {deadline:g} s")


def _other_results(platform: PlatformInfo) -> Path:
    """Another run's result folder, as a victim."""
    folder = platform.home / "results" / str(uuid.uuid4())
    folder.mkdir(parents=True)
    return folder


def test_a_warm_runs_dask_workers_are_forked_confined_and_gone_after_the_run(
    acc: Accelerator, platform: PlatformInfo, tmp_path: Path
) -> None:
    """On the warm worker, a run's Dask workers are processes of their own, forked from
    one forker that the run's process made (not spawned by the run, not the run itself).
    They are confined as the run is: the operator's token and another run's result
    folder are out of their reach, their own output folder is not. Once the run ended,
    none of them is left."""
    repo = _forked_model(acc, tmp_path)
    other = _other_results(platform)

    run = acc.launch(repo.name, conf={"other_results": str(other)})
    assert run.wait(timeout=240) == "Completed", "\n".join(run.logs())

    result = run.result()
    routines = result["routines"]
    assert len(routines) == 4
    workers = {r["pid"] for r in routines}
    forkers = {r["forker"] for r in routines}
    assert result["flow_pid"] not in workers | forkers
    assert 1 <= len(workers) <= 2 and len(forkers) == 1
    assert {r["run"] for r in routines} == {result["flow_pid"]}  # the forker: the run's child
    assert {r["operator token"] for r in routines} == {"refused"}
    assert {r["other run's results"] for r in routines} == {"refused"}
    assert not any(other.iterdir())
    assert sorted(o.path for o in run.outputs()) == [f"{n}.txt" for n in range(4)]
    for pid in (*workers, *forkers, result["flow_pid"]):
        _until(lambda pid=pid: not _alive(pid), 10, f"process {pid} of the run ended")


def _running_pid(api_url: str, run_id: Any) -> int | None:
    async def read() -> Any:
        async with prefect_client(api_url) as client:
            return await client.read_flow_run(run_id)

    flow_run = asyncio.run(read())
    state, pid = flow_run.state, flow_run.infrastructure_pid
    return int(pid) if pid and state is not None and state.is_running() else None


@pytest.mark.parametrize("end", ["killed", "cancelled"])
def test_a_dask_runs_forker_and_workers_end_with_it_when_it_is_killed_or_cancelled(
    acc: Accelerator, platform: PlatformInfo, tmp_path: Path, end: str
) -> None:
    """The run's process killed alone (SIGKILL, no clean-up of its own), or the run
    cancelled: its forker and its Dask workers, busy with routines, end with it, and the
    run ends Crashed or Cancelled."""
    repo = _forked_model(acc, tmp_path)
    run = acc.launch(repo.name, conf={"other_results": str(tmp_path), "seconds": 300})
    found: dict[str, Any] = {}

    def running() -> bool:
        found["pid"] = _running_pid(platform.api_url, run.id)
        return found["pid"] is not None

    _until(running, 120, "the run was running")
    pid = int(found["pid"])
    # Its forker and two workers (and nothing the test would not know of).
    _until(lambda: len(_descendants(pid)) >= 3, 120, "the run's Dask workers started")
    below = _descendants(pid)

    if end == "killed":
        os.kill(pid, signal.SIGKILL)
    else:
        run.cancel()

    for process in (pid, *below):
        _until(lambda p=process: not _alive(p), 30, f"process {process} ended with the run")
    assert run.wait(timeout=60) == ("Crashed" if end == "killed" else "Cancelled")
