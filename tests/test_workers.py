"""Several warm workers on one pool, as `acc up --workers 2` runs them: each run is picked
up once, a run is cancelled whichever worker holds it, and a killed worker is started
again in its place (what `acc up` does while it runs), which ends the run it held."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import (
    PlatformInfo,
    down,
    free_port,
    read_platform,
    supervise,
    up,
    worker_log,
    worker_name,
)
from accelerator_prefect.worker import HOST_LABEL
from tests.conftest import ModelRepo, acc_home
from tests.test_worker import _alive, _labels, _prefect, _until, publish_nap, wait_running_pid

pytestmark = pytest.mark.scale

WORKERS = 2


@pytest.fixture(scope="module")
def two(
    tmp_path_factory: pytest.TempPathFactory, databases: Callable[[str], str | None]
) -> Iterator[PlatformInfo]:
    """A platform of its own, started as `acc up --workers 2` starts one (no portal, no
    catalog): its workers are killed here."""
    home = tmp_path_factory.mktemp("two-workers")
    with acc_home(home):
        try:
            info, _ = up(
                home,
                port=free_port(),
                examples=[],
                catalog_port=None,
                portal_port=None,
                database=databases("workers"),
                workers=WORKERS,
                deadline=300,  # a busy machine starts Prefect's server slowly
            )
            yield info
        finally:
            down(home)


@pytest.fixture(scope="module")
def operator(two: PlatformInfo) -> Iterator[Accelerator]:
    with Accelerator.connect(two.api_url) as client:
        yield client


@pytest.fixture(scope="module")
def nap(
    operator: Accelerator, two: PlatformInfo, tmp_path_factory: pytest.TempPathFactory
) -> ModelRepo:
    operator.add_user("alice", {"demo": "author"})
    repo = ModelRepo(tmp_path_factory.mktemp("nap") / "models", f"nap-{uuid.uuid4().hex[:8]}")
    publish_nap(operator, repo, two.work_pool, "1.0.0", "v1")
    return repo


def _names(info: PlatformInfo) -> list[str]:
    return [worker_name(info.home, info.work_pool, "warm", n) for n in range(1, WORKERS + 1)]


def _running_states(api_url: str, run_id: object) -> int:
    states = _prefect(api_url, lambda c: c.read_flow_run_states(run_id))
    return sum(1 for s in states if s.type.value == "RUNNING")  # type: ignore[attr-defined]


def test_acc_up_runs_the_workers_it_is_asked_for_each_under_its_own_name(
    two: PlatformInfo,
) -> None:
    recorded = read_platform(two.home)
    assert recorded is not None
    pids = recorded.workers()
    assert len(pids) == WORKERS and all(pid is not None and _alive(pid) for pid in pids)
    online = _prefect(two.api_url, lambda c: c.read_workers_for_work_pool(two.work_pool))
    names = {w.name for w in online if str(w.status).upper().endswith("ONLINE")}  # type: ignore[attr-defined]
    assert set(_names(two)) <= names


def test_each_run_of_a_burst_is_picked_up_by_exactly_one_of_the_workers(
    operator: Accelerator, nap: ModelRepo, two: PlatformInfo
) -> None:
    runs = [operator.launch(nap.name, conf={"seconds": 0.5}) for _ in range(16)]
    for run in runs:
        assert run.wait(timeout=180) == "Completed"
    # Each worker's log says which runs it started.
    logs = [worker_log(two.home, two.work_pool, n).read_text() for n in range(1, WORKERS + 1)]
    holders: Counter[int] = Counter()
    for run in runs:
        started = f"Flow run '{run.info().name}' submitted to infrastructure"
        by = [n for n, log in enumerate(logs, start=1) if started in log]
        assert len(by) == 1, (run.id, by)  # started by one worker
        holders[by[0]] += 1
        assert _running_states(two.api_url, run.id) == 1  # and once
    assert set(holders) == set(range(1, WORKERS + 1)), holders  # both took their share
    pids = [run.result()["pid"] for run in runs]
    assert len(set(pids)) == len(runs)  # each in a process of its own, once


def test_a_run_is_cancelled_whichever_worker_holds_it(
    operator: Accelerator, nap: ModelRepo, two: PlatformInfo
) -> None:
    runs = [operator.launch(nap.name, conf={"seconds": 300}) for _ in range(4)]
    children = {run.id: wait_running_pid(two.api_url, run.id, 120) for run in runs}
    for run in runs:
        run.cancel()
    for run in runs:
        _until(lambda run=run: run.state == "Cancelled", 60, f"run {run.id} was cancelled")
        _until(lambda run=run: not _alive(children[run.id]), 30, "its process ended")


def test_a_killed_worker_is_started_again_and_the_run_it_held_ends_crashed(
    operator: Accelerator, nap: ModelRepo, two: PlatformInfo
) -> None:
    run = operator.launch(nap.name, conf={"seconds": 300})
    child = wait_running_pid(two.api_url, run.id, 120)
    _until(lambda: HOST_LABEL in _labels(two.api_url, run.id), 60, "the run was labelled")
    holder = str(_labels(two.api_url, run.id)["prefect.worker.name"])
    number = _names(two).index(holder) + 1
    recorded = read_platform(two.home)
    assert recorded is not None
    pid = recorded.workers()[number - 1]
    assert pid is not None

    os.kill(pid, signal.SIGKILL)  # no clean-up of its own: the kernel's signal only
    _until(lambda: not _alive(child), 15, "the run's process ended with its worker")

    said: list[str] = []
    # What `acc up` does every second while it runs: a dead worker is started again.
    _until(lambda: supervise(two.home, report=said.append) == [number], 30, "it was restarted")
    assert said and f"worker #{number}" in said[0]
    restarted = read_platform(two.home)
    assert restarted is not None and _alive(restarted.workers()[number - 1] or 0)
    # Started again under its own name, it finds the run it held and ends it.
    _until(lambda: run.state == "Crashed", 120, "the run it held was marked Crashed")
    assert "stopped" in (run.info().message or "")

    again = operator.rerun(run.id)
    assert again.id != run.id
    _until(lambda: again.state == "Running", 120, "the rerun started")
    again.cancel()
    _until(lambda: again.state == "Cancelled", 60, "the rerun was cancelled")


def test_workers_started_again_keep_serving_the_pool(
    operator: Accelerator, nap: ModelRepo, two: PlatformInfo, tmp_path: Path
) -> None:
    assert supervise(two.home) == []  # nothing to do when every worker is alive
    runs = [operator.launch(nap.name) for _ in range(4)]
    for run in runs:
        assert run.wait(timeout=120) == "Completed"
