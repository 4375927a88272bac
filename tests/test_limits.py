"""Per-run limits on the warm worker: a run over its time, memory, CPU-time or output-size
limit ends Failed with a message naming the limit, its secrets deleted and its partial
outputs marked incomplete; a run within its limits completes. The limits come from the
model's manifest, else from the platform's defaults (``ACC_RUN_*`` in the worker's
environment: here ``ACC_RUN_OUTPUT_SIZE``)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.outputs import is_incomplete, list_outputs
from accelerator_prefect.platform import (
    PlatformInfo,
    start_pool_worker,
    start_warm_worker,
    stop_process,
)
from accelerator_prefect.runs import Run
from tests.conftest import ModelRepo
from tests.test_worker import (
    _has_zygote,
    _prefect,
    _run_blocks,
    _until,
    _worker_online,
    create_warm_pool,
    wait_running_pid,
)

HUNGRY_FLOW = """
import resource
import signal
import subprocess
import time

from pydantic import Field

from accelerator_prefect import Conf, Output, Secrets, jobflow, routine


class HungryConf(Conf):
    what: str = Field(default="nothing", description="What to overdo.")


@routine
def work(conf: HungryConf, output: Output) -> int:
    with output.open("partial.txt", "w") as f:
        f.write("begun")
    if conf.what == "sleep":
        time.sleep(120)
    if conf.what == "stubborn":  # deaf to the worker's word, and with a process of its own
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        helper = subprocess.Popen(["sleep", "300"])
        with output.open("helper.pid", "w") as f:
            f.write(str(helper.pid))
        time.sleep(120)
    if conf.what == "memory":
        hoard = bytearray(600 * 1000 * 1000)
        return len(hoard)
    if conf.what == "cpu":
        end, spins = time.monotonic() + 60, 0
        while time.monotonic() < end:
            spins += 1
    if conf.what == "write":
        with output.open("big.bin", "wb") as f:
            for _ in range(3):
                f.write(b"x" * 1_000_000)
    return 0


@jobflow(name="hungry")
def hungry(conf: HungryConf, secrets: Secrets, output: Output) -> dict:
    limits = {
        name: resource.getrlimit(getattr(resource, "RLIMIT_" + name.upper()))
        for name in ("data", "cpu", "fsize")
    }
    return {"done": work(conf, output), "limits": limits}
"""

HUNGRY_MANIFEST = """
name: {name}
title: Hungry
version: {version}
jobflow: flows/hungry.py:hungry
owner: alice
project: demo
work_pool: {pool}
access:
  scope: project
secrets:
  API_KEY:
    description: Key of the data service
    required: true
limits:
{limits}
"""

VERSIONS = {
    # The time limit alone; the output size is the platform's default (1 MB, below).
    "1.0.0": "  timeout: 2 s",
    "2.0.0": "  timeout: 2 min\n  memory: 200 MB\n  cpu_time: 1 s",
    # Generous: the run writes 3 MB, over the platform's default, within its own limit.
    "3.0.0": "  timeout: 10 min\n  memory: 4 GB\n  cpu_time: 1 h\n  output_size: 100 MB",
}


@pytest.fixture(scope="module")
def hungry(
    acc: Accelerator, platform: PlatformInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelRepo]:
    """The hungry model, one version per set of limits, in a warm pool of its own whose
    worker sets the platform's default output size to 1 MB (started while the versions
    are published)."""
    pool = f"limits-{uuid.uuid4().hex[:6]}"
    create_warm_pool(platform.api_url, pool)
    env = {"ACC_RUN_OUTPUT_SIZE": "1 MB", "ACC_WARM_CANCEL_GRACE": "3"}
    worker = start_warm_worker(platform.home, platform.api_url, pool, env)
    try:
        repo = ModelRepo(tmp_path_factory.mktemp("hungry") / "models", f"hungry-{pool[7:]}")
        repo.write("flows/hungry.py", HUNGRY_FLOW)
        for version, limits in VERSIONS.items():
            manifest = HUNGRY_MANIFEST.format(
                name=repo.name, version=version, pool=pool, limits=limits
            )
            repo.write(f"deployments/{repo.name}.yaml", manifest)
            repo.commit(version)
            acc.publish(repo.manifest)
        _until(lambda: _worker_online(platform.api_url, pool), 120, "the warm worker came online")
        _until(lambda: _has_zygote(worker), 120, "the zygote started")
        yield repo
    finally:
        stop_process(worker)


def _launch(acc: Accelerator, repo: ModelRepo, version: str, what: str) -> Run:
    return acc.launch(
        repo.name,
        version=version,
        conf={"what": what},
        secrets={"API_KEY": "sk-" + uuid.uuid4().hex},
    )


def _assert_failed_naming(run: Run, said: str) -> None:
    """The run ended Failed (not Crashed), and both its state message and the failure its
    users are shown say ``said``, in plain words: no traceback, no path of the server."""
    assert run.wait(timeout=120) == "Failed", run.info().message
    message = run.info().message or ""
    assert said in message
    failure = run.failure()
    assert failure is not None and said in failure.message
    for shown in (message, failure.message):
        assert "Traceback" not in shown and "/" not in shown and "Errno" not in shown


def _partial_only(run: Run) -> None:
    """What the run wrote before its limit stopped it is kept, marked incomplete."""
    folder = run.output_location
    assert folder is not None
    assert [Path(f.path).name for f in list_outputs(folder)] == ["partial.txt"]
    assert is_incomplete(folder)


@pytest.mark.scale
def test_a_run_over_its_time_limit_is_stopped_and_ends_failed_with_its_secrets_swept(
    acc: Accelerator, platform: PlatformInfo, hungry: ModelRepo
) -> None:
    run = _launch(acc, hungry, "1.0.0", "sleep")
    block = run.parameters["secrets"]["blocks"]["API_KEY"]
    pid = wait_running_pid(platform.api_url, run.id)
    started = time.monotonic()
    _assert_failed_naming(run, "the run went over its time limit of 2 s (limits.timeout)")
    assert time.monotonic() - started < 20  # stopped at its deadline, not after its sleep
    _until(lambda: not Path(f"/proc/{pid}").exists(), 10, "the run's process ended")
    assert block not in _run_blocks(platform.api_url)
    _partial_only(run)


@pytest.mark.scale
def test_a_run_deaf_to_its_time_limit_is_stopped_with_what_it_started(
    acc: Accelerator, platform: PlatformInfo, hungry: ModelRepo
) -> None:
    """A run that does not end when told (native code, or a blocked signal) is ended
    Failed by the worker, and its process group, a process it started too, is stopped."""
    from accelerator_prefect.storage import Storage

    run = _launch(acc, hungry, "1.0.0", "stubborn")
    block = run.parameters["secrets"]["blocks"]["API_KEY"]
    _assert_failed_naming(run, "the run went over its time limit of 2 s (limits.timeout)")
    assert block not in _run_blocks(platform.api_url)
    folder = run.output_location
    assert folder is not None and is_incomplete(folder)
    with Storage().open(folder + "helper.pid", "r") as f:
        helper = int(f.read())
    _until(lambda: not Path(f"/proc/{helper}").exists(), 15, "the run's helper process ended")


def test_a_run_over_its_memory_limit_ends_failed_naming_it(
    acc: Accelerator, hungry: ModelRepo
) -> None:
    run = _launch(acc, hungry, "2.0.0", "memory")
    _assert_failed_naming(run, "the run went over its memory limit of 200 MB (limits.memory)")
    _partial_only(run)


def test_a_run_over_its_cpu_time_limit_ends_failed_naming_it(
    acc: Accelerator, hungry: ModelRepo
) -> None:
    run = _launch(acc, hungry, "2.0.0", "cpu")
    _assert_failed_naming(run, "the run went over its CPU-time limit of 1 s (limits.cpu_time)")
    _partial_only(run)


def test_a_write_over_the_output_size_leaves_no_file_that_looks_complete(
    acc: Accelerator, hungry: ModelRepo
) -> None:
    """The platform's default (1 MB) applies to a manifest that sets no output size; a
    write that fails as on a full disk (EFBIG) leaves neither the file nor its temporary
    copy in the output folder."""
    from accelerator_prefect.settings import get_settings
    from accelerator_prefect.storage import check_path

    run = _launch(acc, hungry, "2.0.0", "write")
    _assert_failed_naming(
        run, "the run went over its output-size limit of 1 MB (limits.output_size)"
    )
    _partial_only(run)
    folder = run.output_location
    assert folder is not None
    root = Path(get_settings().storage_root.removeprefix("file://"))
    on_disk = sorted(p.name for p in (root / check_path(folder)).iterdir())
    assert "big.bin" not in on_disk and not [n for n in on_disk if "big.bin" in n]
    assert on_disk == ["_INCOMPLETE.json", "partial.txt", "provenance.json"]


def test_a_run_within_generous_limits_completes(acc: Accelerator, hungry: ModelRepo) -> None:
    """Its own output size (100 MB) overrides the platform's default (1 MB)."""
    run = _launch(acc, hungry, "3.0.0", "write")
    assert run.wait(timeout=120) == "Completed", run.info().message
    assert sorted(f.path for f in run.outputs()) == ["big.bin", "partial.txt"]
    assert run.outputs_complete
    limits = run.result()["limits"]
    assert limits["fsize"] == [100_000_000, 100_000_000]  # bytes, the hard limit too
    assert limits["data"][0] == limits["data"][1] > 4_000_000_000  # on top of what it held
    assert 3600 < limits["cpu"][0] < limits["cpu"][1]


ENGINE_COMMAND = f"{sys.executable} -m accelerator_prefect.zygote --engine"
"""What a process pool's runs start with to have their limits applied: Prefect's engine
after the limits (``python -m prefect.engine`` knows nothing of them)."""


@pytest.fixture(scope="module")
def on_process_pool(
    acc: Accelerator, platform: PlatformInfo, hungry: ModelRepo
) -> Iterator[ModelRepo]:
    """Versions 4.0.0 (memory 200 MB) and 5.0.0 (timeout 5 s) of the hungry model on a
    pool of Prefect's own process worker, whose command applies the limits."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    pool = f"limits-process-{uuid.uuid4().hex[:6]}"
    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = ENGINE_COMMAND
    _prefect(
        platform.api_url,
        lambda c: c.create_work_pool(
            WorkPoolCreate(name=pool, type="process", base_job_template=template)
        ),
    )
    worker = start_pool_worker(platform.home, platform.api_url, pool, "process")
    try:
        for version, limits in (("4.0.0", "  memory: 200 MB"), ("5.0.0", "  timeout: 5 s")):
            manifest = HUNGRY_MANIFEST.format(
                name=hungry.name, version=version, pool=pool, limits=limits
            )
            hungry.write(f"deployments/{hungry.name}.yaml", manifest)
            hungry.commit(version)
            acc.publish(hungry.manifest)
        _until(
            lambda: _worker_online(platform.api_url, pool), 120, "the process worker came online"
        )
        yield hungry
    finally:
        stop_process(worker)


def test_a_process_worker_run_started_by_the_limited_engine_keeps_its_limits(
    acc: Accelerator, on_process_pool: ModelRepo
) -> None:
    """Prefect's process worker knows nothing of limits; a pool whose command is the
    limited engine has them applied all the same."""
    run = _launch(acc, on_process_pool, "4.0.0", "memory")
    _assert_failed_naming(run, "the run went over its memory limit of 200 MB (limits.memory)")
    _partial_only(run)
    run = _launch(acc, on_process_pool, "5.0.0", "sleep")
    _assert_failed_naming(run, "the run went over its time limit of 5 s (limits.timeout)")
    _partial_only(run)
