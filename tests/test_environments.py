"""Each version's environment (its libraries, locked like its code) on the session's real
Prefect server: models whose repositories declare a requirements.txt or a pyproject.toml,
locked and built with uv at publish, run by a warm worker of their own pool that keeps
one warm parent per environment.

The library the versions pin is ``termcolor`` (small, pure Python, not among the
platform's own packages), fetched from the package index like any model's would be."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from accelerator_prefect import Accelerator, PublishError
from accelerator_prefect import environments as envs
from accelerator_prefect.catalog import HostingRecord
from accelerator_prefect.platform import PlatformInfo, start_warm_worker, stop_process, worker_log
from tests.conftest import ModelRepo
from tests.test_worker import WarmPool, _has_zygote, _until, _worker_online, create_warm_pool

COLOURS_FLOW = """
import importlib.metadata
import sys

import termcolor

from accelerator_prefect import Conf, jobflow


class ColoursConf(Conf):
    pass


@jobflow(name="colours")
def colours(conf: ColoursConf) -> dict:
    return {
        "termcolor": importlib.metadata.version("termcolor"),
        "runtime": importlib.metadata.version("accelerator-prefect"),
        "prefix": sys.prefix,
        "coloured": termcolor.colored("ok", "green"),
    }
"""

MANIFEST = """
name: {name}
title: Colours
version: {version}
jobflow: flows/colours.py:colours
owner: alice
project: demo
work_pool: {pool}
access:
  scope: project
"""

CAP = 2  # warm parents the module's worker keeps


@pytest.fixture(scope="module")
def env_pool(platform: PlatformInfo) -> Iterator[WarmPool]:
    """A warm pool whose worker keeps at most two warm parents."""
    name = f"envs-{uuid.uuid4().hex[:6]}"
    create_warm_pool(platform.api_url, name)
    pid = start_warm_worker(
        platform.home, platform.api_url, name, {"ACC_WARM_ENVIRONMENTS": str(CAP)}
    )
    _until(lambda: _worker_online(platform.api_url, name), 120, "the warm worker came online")
    _until(lambda: _has_zygote(pid), 120, "the zygote started")
    yield WarmPool(name, pid, "")
    stop_process(pid)


def publish_colours(
    acc: Accelerator, repo: ModelRepo, pool: str, version: str, requirements: str
) -> HostingRecord:
    repo.write("flows/colours.py", COLOURS_FLOW)
    repo.write("requirements.txt", requirements)
    repo.write(
        f"deployments/{repo.name}.yaml", MANIFEST.format(name=repo.name, version=version, pool=pool)
    )
    repo.commit(version)
    repo.repo.create_tag(f"v{version}")
    acc.publish(repo.manifest)
    return record_of(acc, repo.name, version)


def record_of(acc: Accelerator, model: str, version: str) -> HostingRecord:
    (hosted,) = [v for v in acc.get(model).versions if v.version == version]
    return hosted.record


@pytest.fixture(scope="module")
def colours(
    acc: Accelerator, env_pool: WarmPool, tmp_path_factory: pytest.TempPathFactory
) -> ModelRepo:
    """1.0.0 pins termcolor 2.3.0, 2.0.0 pins termcolor 2.4.0."""
    repo = ModelRepo(
        tmp_path_factory.mktemp("colours") / "model", f"colours-{uuid.uuid4().hex[:8]}"
    )
    publish_colours(acc, repo, env_pool.name, "1.0.0", "termcolor==2.3.0\n")
    publish_colours(acc, repo, env_pool.name, "2.0.0", "termcolor==2.4.0  # newer\n")
    return repo


def test_two_versions_pin_their_own_library_and_each_run_reports_its_own(
    acc: Accelerator, colours: ModelRepo, platform: PlatformInfo
) -> None:
    first_record = record_of(acc, colours.name, "1.0.0")
    second_record = record_of(acc, colours.name, "2.0.0")
    assert first_record.environment and second_record.environment
    assert first_record.environment.source == "requirements.txt"
    assert first_record.environment.requirements == ["termcolor==2.3.0"]
    assert first_record.environment.packages["termcolor"] == "2.3.0"
    assert second_record.environment.packages["termcolor"] == "2.4.0"
    assert first_record.environment.hash != second_record.environment.hash
    # The lock pins the product's own runtime too, to its exact code.
    runtime = first_record.environment.runtime
    assert first_record.environment.packages["accelerator-prefect"] == runtime
    assert "+" in runtime  # the package's version, with a digest of its code

    first = acc.launch(colours.name, version="1.0.0")
    second = acc.launch(colours.name, version="2.0.0")
    assert first.wait(timeout=120) == "Completed", first.logs()
    assert second.wait(timeout=120) == "Completed", second.logs()
    a, b = first.result(), second.result()
    assert (a["termcolor"], b["termcolor"]) == ("2.3.0", "2.4.0")
    assert a["runtime"] == b["runtime"] == runtime
    environments = envs.environments_root(platform.home)
    assert Path(a["prefix"]).parent == environments and Path(b["prefix"]).parent == environments
    assert a["prefix"] != b["prefix"]

    # Provenance names each run's environment, and the diff tells them apart.
    provenance = first.provenance()
    assert provenance.environment is not None
    assert provenance.environment.hash == first_record.environment.hash
    assert provenance.packages.get("termcolor") == "2.3.0"
    found = acc.diff(first.id, second.id)
    assert {c.what for c in found.environment} >= {"lock"}
    assert any(c.what == "termcolor" and (c.a, c.b) == ("2.3.0", "2.4.0") for c in found.packages)


def test_a_lock_that_cannot_install_is_refused_at_publish_with_uvs_message(
    acc: Accelerator, env_pool: WarmPool, tmp_path: Path
) -> None:
    repo = ModelRepo(tmp_path / "model", f"unlockable-{uuid.uuid4().hex[:8]}")
    with pytest.raises(PublishError) as refused:
        publish_colours(acc, repo, env_pool.name, "1.0.0", "termcolor==999.0.0\n")
    message = str(refused.value)
    assert "requirements.txt: its requirements do not resolve" in message
    assert "termcolor" in message and "999.0.0" in message  # uv's own words
    assert "acc-lock-" not in message  # nothing of the platform's scratch folders
    assert repo.name not in {m.name for m in acc.catalog()}  # nothing was published


def _ready(home: Path, record: HostingRecord) -> dict[str, object]:
    assert record.environment is not None
    return json.loads((envs.folder(home, record.environment) / envs.READY_FILE).read_text())


def test_a_worker_without_the_environment_builds_it_before_the_run_then_reuses_it(
    acc: Accelerator, colours: ModelRepo, env_pool: WarmPool, platform: PlatformInfo
) -> None:
    record = publish_colours(acc, colours, env_pool.name, "3.0.0", "termcolor==2.2.0\n")
    assert record.environment is not None
    shutil.rmtree(envs.folder(platform.home, record.environment))  # an empty cache

    first = acc.launch(colours.name, version="3.0.0")
    assert first.wait(timeout=180) == "Completed", first.logs()
    assert first.result()["termcolor"] == "2.2.0"
    assert any("Preparing the model's environment" in line for line in first.logs())
    built = _ready(platform.home, record)

    second = acc.launch(colours.name, version="3.0.0")
    assert second.wait(timeout=120) == "Completed", second.logs()
    assert not any("Preparing the model's environment" in line for line in second.logs())
    assert _ready(platform.home, record) == built  # the same build, not a second one


def _zygote_pythons(worker_pid: int) -> list[str]:
    """The interpreters of the worker's live zygotes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == worker_pid and b"accelerator_prefect.zygote" in cmdline:
            found.append(cmdline[0].decode())
    return found


def test_the_worker_keeps_one_warm_parent_per_environment_and_stops_the_least_recent(
    acc: Accelerator, colours: ModelRepo, env_pool: WarmPool, platform: PlatformInfo
) -> None:
    versions = ["1.0.0", "2.0.0", "3.0.0"]
    records = {v: record_of(acc, colours.name, v) for v in versions}
    if "3.0.0" not in {v.version for v in acc.get(colours.name).versions}:
        pytest.fail("needs 3.0.0, published by the test before")
    log = worker_log(platform.home, env_pool.name)
    for version in versions:  # one after the other: the first is the least recent at the third
        run = acc.launch(colours.name, version=version)
        assert run.wait(timeout=180) == "Completed", run.logs()
    first = records["1.0.0"].environment
    assert first is not None
    _until(
        lambda: f"Stopped the warm zygote of environment {first.hash[:12]}" in log.read_text(),
        30,
        "the worker stopped the least recently used warm parent",
    )
    pythons = _zygote_pythons(env_pool.worker_pid)
    assert len(pythons) == CAP
    expected = {
        str(envs.interpreter(envs.folder(platform.home, records[v].environment)))  # type: ignore[arg-type]
        for v in versions[1:]
    }
    assert set(pythons) == expected


def test_a_version_whose_runtime_this_machine_lacks_never_runs_on_another(
    tmp_path: Path, colours: ModelRepo, acc: Accelerator
) -> None:
    record = record_of(acc, colours.name, "1.0.0").environment
    assert record is not None
    older = record.model_copy(
        update={
            "runtime": "0.0.1+000000000000",
            "lock": record.lock.replace(
                f"accelerator-prefect=={record.runtime}", "accelerator-prefect==0.0.1+000000000000"
            ),
            "hash": "0" * 64,
        }
    )
    with pytest.raises(envs.EnvironmentFailed) as refused:
        envs.ensure(tmp_path / "home", older)
    assert "locks the runtime accelerator-prefect 0.0.1+000000000000" in str(refused.value)
    assert "publish the version again" in str(refused.value)
    assert not envs.ready(tmp_path / "home", older)


def test_prefects_process_worker_runs_a_version_in_its_own_environment(
    acc: Accelerator, colours: ModelRepo, platform: PlatformInfo
) -> None:
    """Prefect's process worker starts every run on the platform's own interpreter: the
    version's first pull step builds the environment on that machine, then starts the
    engine again on the environment's interpreter, in the process the worker watches."""
    from accelerator_prefect.platform import _prepare, start_worker

    pool = f"process-{uuid.uuid4().hex[:6]}"
    acc._call(lambda c: _prepare(c, platform.home, pool, "process"))
    worker = start_worker(platform.home, platform.api_url, pool)
    try:
        record = publish_colours(acc, colours, pool, "9.0.0", "termcolor==2.1.0\n")
        assert record.environment is not None
        shutil.rmtree(envs.folder(platform.home, record.environment))  # not on this machine
        run = acc.launch(colours.name, version="9.0.0")
        assert run.wait(timeout=240) == "Completed", run.logs()
        result = run.result()
        assert result["termcolor"] == "2.1.0"
        assert result["runtime"] == record.environment.runtime
        assert Path(result["prefix"]).name == record.environment.hash[:24]
        assert any("Preparing the model's environment" in line for line in run.logs())
        assert envs.ready(platform.home, record.environment)
    finally:
        stop_process(worker)


def test_a_container_pool_starts_each_version_in_its_environments_image(
    acc: Accelerator, colours: ModelRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a pool whose jobs run in an image (Docker, Kubernetes; no such worker runs here,
    the pool is only published to), the operator's image of each lock is the version's
    `image` job variable: one image per lock hash, named in the version's deployment."""
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"containers-{uuid.uuid4().hex[:6]}"
    template = {
        "job_configuration": {"image": "{{ image }}", "env": "{{ env }}"},
        "variables": {
            "type": "object",
            "properties": {"image": {"type": "string"}, "env": {"type": "object"}},
        },
    }
    acc._call(
        lambda c: c.create_work_pool(
            WorkPoolCreate(name=pool, type="docker", base_job_template=template)
        )
    )
    monkeypatch.setenv("ACC_ENVIRONMENT_IMAGE", "registry.example.org/acc-env:{hash}")
    record = publish_colours(acc, colours, pool, "9.1.0", "termcolor==2.3.0\n")
    assert record.environment is not None
    (hosted,) = [v for v in acc.get(colours.name).versions if v.version == "9.1.0"]
    deployment = acc._call(lambda c: c.read_deployment(hosted.deployment_id))
    assert deployment.job_variables == {
        "image": f"registry.example.org/acc-env:{record.environment.hash[:24]}"
    }
    # Inside such an image the first pull step finds itself in the environment.
    monkeypatch.setenv("ACC_ENVIRONMENT", record.environment.hash)
    assert envs.running_in(record.environment.hash)
    assert not envs.running_in("0" * 64)


def test_acc_show_lists_the_libraries_and_prints_the_lock(
    colours: ModelRepo, platform: PlatformInfo, acc: Accelerator
) -> None:
    from tests.test_cli import acc_cli

    code, output = acc_cli(platform, "show", colours.name, "--version", "1.0.0")
    assert code == 0, output
    assert "declared in requirements.txt" in output, output
    assert "termcolor==2.3.0" in output and "2.3.0" in output
    environment = record_of(acc, colours.name, "1.0.0").environment
    assert environment is not None
    assert f"lock hash: {environment.hash}" in output  # what an image names (operations.md)
    code, output = acc_cli(platform, "show", colours.name, "--version", "1.0.0", "--lock")
    assert code == 0, output
    assert output == environment.lock
    assert "termcolor==2.3.0" in output.splitlines()


def test_the_run_page_says_when_a_run_waits_for_its_environment() -> None:
    from accelerator_prefect.runs import RoutineProgress
    from catalog_ui.parts import ENVIRONMENT_LOG, phase

    progress = RoutineProgress(done=0, running=0, failed=0, started=0, total=1)
    assert phase("Pending", progress, building=True).startswith(ENVIRONMENT_LOG)
    assert phase("Pending", progress).startswith("Preparing the model…")


PYPROJECT = """
[project]
name = "colours-model"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["termcolor>=2.3,<2.5"]
"""


def test_a_pyproject_with_its_uv_lock_keeps_the_authors_exact_pins(
    acc: Accelerator, env_pool: WarmPool, tmp_path: Path
) -> None:
    """The range allows 2.4.0; the author's lock chose 2.3.0, and 2.3.0 is what runs."""
    repo = ModelRepo(tmp_path / "model", f"locked-{uuid.uuid4().hex[:8]}")
    repo.write("pyproject.toml", PYPROJECT)
    locked = subprocess.run(
        [*envs.uv_command(), "lock", "--resolution", "lowest-direct", "--quiet"],
        cwd=repo.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert locked.returncode == 0, locked.stderr
    repo.write("flows/colours.py", COLOURS_FLOW)
    repo.write(
        f"deployments/{repo.name}.yaml",
        MANIFEST.format(name=repo.name, version="1.0.0", pool=env_pool.name),
    )
    repo.commit("1.0.0")
    acc.publish(repo.manifest)
    environment = record_of(acc, repo.name, "1.0.0").environment
    assert environment is not None and environment.source == "pyproject.toml"
    assert environment.requirements == ["termcolor>=2.3,<2.5"]
    assert environment.packages["termcolor"] == "2.3.0"
    run = acc.launch(repo.name)
    assert run.wait(timeout=180) == "Completed", run.logs()
    assert run.result()["termcolor"] == "2.3.0"


def test_a_version_locking_a_prefect_the_server_cannot_talk_to_is_refused_at_launch(
    acc: Accelerator, colours: ModelRepo, env_pool: WarmPool, platform: PlatformInfo
) -> None:
    """As if the platform's server had moved to a new major Prefect since 8.0.0 was
    published: its record says so, and its launch is refused, creating no run."""
    from prefect.client.schemas.actions import DeploymentUpdate

    from accelerator_prefect import RuntimeMismatch
    from accelerator_prefect.validation import EXTENSION_KEY
    from tests.test_launch import count_runs

    publish_colours(acc, colours, env_pool.name, "8.0.0", "termcolor==2.3.0\n")
    (hosted,) = [v for v in acc.get(colours.name).versions if v.version == "8.0.0"]
    environment = hosted.record.environment
    assert environment is not None
    locked = environment.packages["prefect"]
    older = environment.model_copy(
        update={"lock": environment.lock.replace(f"prefect=={locked}", "prefect==2.20.0")}
    )
    record = hosted.record.model_copy(update={"environment": older})
    schema = {**hosted.parameter_schema, EXTENSION_KEY: record.model_dump(mode="json")}
    acc._call(
        lambda c: c.update_deployment(
            hosted.deployment_id, DeploymentUpdate(parameter_openapi_schema=schema)
        )
    )
    with pytest.raises(RuntimeMismatch) as refused:
        acc.launch(colours.name, version="8.0.0")
    assert "runs with Prefect 2.20.0" in str(refused.value)
    assert count_runs(platform.api_url, f"{colours.name}@8.0.0") == 0


def test_after_a_runtime_upgrade_old_versions_keep_the_runtime_they_locked(
    acc: Accelerator,
    colours: ModelRepo,
    env_pool: WarmPool,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The platform's runtime moves to a new version (simulated by bumping its version
    label): new versions lock the new one, old versions keep theirs, republished or not."""
    old = record_of(acc, colours.name, "1.0.0").environment
    assert old is not None
    upgraded = "0.1.0+feedfacecafe"
    monkeypatch.setattr(envs, "runtime_version", lambda: upgraded)

    new = publish_colours(acc, colours, env_pool.name, "10.0.0", "termcolor==2.3.0\n")
    assert new.environment is not None and new.environment.runtime == upgraded
    assert new.environment.hash != old.hash  # same library, another runtime
    # Republishing 1.0.0's manifest at its own commit keeps its lock.
    colours.repo.git.checkout(colours.repo.tags["v1.0.0"].commit.hexsha)
    try:
        acc.publish(colours.manifest)
    finally:
        colours.repo.git.checkout("-")
    assert record_of(acc, colours.name, "1.0.0").environment == old

    first = acc.launch(colours.name, version="1.0.0")
    second = acc.launch(colours.name, version="10.0.0")
    assert first.wait(timeout=180) == "Completed", first.logs()
    assert second.wait(timeout=180) == "Completed", second.logs()
    assert first.result()["runtime"] == old.runtime
    assert second.result()["runtime"] == upgraded

    # A worker on another machine (a home of its own) has neither the environment nor the
    # runtime wheel: it fetches the wheel the platform kept in storage at publish.
    monkeypatch.undo()  # this process runs its own runtime again
    elsewhere = tmp_path / "elsewhere"
    python = envs.ensure(elsewhere, new.environment)
    reported = subprocess.run(
        [
            str(python),
            "-P",
            "-c",
            "import importlib.metadata as m; "
            "print(m.version('termcolor'), m.version('accelerator-prefect'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert reported.stdout.split() == ["2.3.0", upgraded]


@pytest.mark.parametrize(
    ("declared", "said"),
    [
        ("-r /etc/passwd\n", "requirements.txt, line 1: '-r': options are not accepted"),
        ("termcolor==2.3.0\n--index-url http://10.0.0.1/simple\n", "line 2: '--index-url'"),
        ("termcolor @ file:///etc\n", "termcolor comes from file: a URL or path"),
        ("not a requirement!\n", "line 1: 'not a requirement!' is not a requirement"),
    ],
)
def test_a_requirements_file_may_only_name_packages_of_the_index(
    tmp_path: Path, declared: str, said: str
) -> None:
    """Publishing through the portal runs uv on the platform: a requirements file must
    not make it read the platform's files or fetch from elsewhere."""
    (tmp_path / "requirements.txt").write_text(declared)
    with pytest.raises(envs.EnvironmentFailed) as refused:
        envs.lock(tmp_path, tmp_path / "requirements.txt", tmp_path / "home")
    assert said in str(refused.value)
    assert "root:" not in str(refused.value)
