"""The run page and the run handle as a model's launcher, its owner and an operator see
them: a failure in the model's own words, tracebacks and the platform's log lines only
for those who may see them (in-process and through the portal alike), how long runs of
the version usually take, and a routine count that holds from Launch to the end."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ModelRepo
from tests.test_catalog_ui import climate, on_page, people, texts, wait_until

__all__ = ["climate", "people"]  # module fixtures used here

STEPS_FLOW = """
import time

from pydantic import Field

from accelerator_prefect import Conf, jobflow, routine


class StepsConf(Conf):
    seconds: float = Field(default=0, ge=0, le=600, description="How long to compute.")
    fail: bool = Field(default=False, description="Fail as a model does without its input.")


@routine
def prepare(conf: StepsConf) -> float:
    print("preparing the steps")
    return conf.seconds


@routine
def compute(conf: StepsConf, seconds: float) -> float:
    if conf.fail:
        raise ValueError(
            "no model run for scenario ssp126 among the selected files; "
            "select model_ssp126.nc too"
        )
    time.sleep(seconds)
    print("computed the steps")
    return seconds


@jobflow(name="steps")
def steps(conf: StepsConf) -> dict:
    return {"computed": compute(conf, prepare(conf))}
"""

STEPS_MANIFEST = """
name: {name}
title: Steps
version: 1.0.0
jobflow: flows/steps.py:steps
owner: {owner}
project: {project}
access:
  scope: project
"""

MODEL_SAYS = "no model run for scenario ssp126 among the selected files; select model_ssp126.nc too"
# What the worker and the platform log about a run, never shown to its launcher.
PLATFORM_LINES = ("Worker '", "submitted to infrastructure", "deployment step", "_NoneStep")
# An absolute path of the server (a URL's path, as in acc://climate/…, is not one).
SERVER_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.-]+/){2,}")


@dataclass(frozen=True)
class Steps:
    """A model of ``owner``'s, run by ``launcher`` (a member of its project)."""

    name: str
    owner: str
    owner_token: str
    launcher: str
    launcher_token: str


def publish_steps(acc: Accelerator, folder: Any) -> Steps:
    tag = uuid.uuid4().hex[:6]
    project, owner, launcher = f"rp{tag}", f"rp-owner-{tag}", f"rp-launcher-{tag}"
    _, owner_token = acc.add_user(owner, {project: "author"})
    _, launcher_token = acc.add_user(launcher, {project: "member"})
    name = f"steps-{tag}"
    repo = ModelRepo(folder, name)
    repo.write("flows/steps.py", STEPS_FLOW)
    repo.write(
        f"deployments/{name}.yaml", STEPS_MANIFEST.format(name=name, owner=owner, project=project)
    )
    repo.commit("steps 1.0.0")
    acc.publish(repo.manifest)
    return Steps(name, owner, owner_token, launcher, launcher_token)


@pytest.fixture(scope="module")
def steps(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> Steps:
    return publish_steps(acc, tmp_path_factory.mktemp("steps"))


@pytest.fixture(scope="module")
def failed(acc: Accelerator, steps: Steps) -> Iterator[str]:
    """A run of ``steps`` its launcher started, failed in its second routine."""
    with Accelerator.connect(token=steps.launcher_token) as launcher:
        run = launcher.launch(steps.name, conf={"fail": True})
        assert run.wait(timeout=180) == "Failed", "\n".join(acc.run(str(run.id)).logs())
        yield str(run.id)


def everything(at: AppTest) -> str:
    """All the page says and shows, code blocks and labels too, but the provenance record
    (an audit record naming the repository the version was published from, as given)."""
    labels = [e.label for e in at.expander] + [s.label for s in at.status]
    parts: list[Any] = [
        *at.title,
        *(m for m in at.markdown if not str(m.value).startswith("**Provenance**")),
        *at.caption,
        *at.info,
        *at.warning,
        *at.error,
        *at.success,
        *at.code,
    ]
    return "\n".join([*(str(p.value) for p in parts), *labels])


def no_internals(said: str, platform: PlatformInfo) -> None:
    assert "Traceback" not in said and 'File "' not in said, said
    assert str(platform.home) not in said and "site-packages" not in said, said
    found = SERVER_PATH.search(said)
    assert not found, said[max(0, found.start() - 300) : found.end() + 100]
    assert not any(line in said for line in PLATFORM_LINES), said


def test_a_failed_runs_launcher_reads_the_models_words_without_traceback_or_worker_lines(
    steps: Steps, failed: str, platform: PlatformInfo
) -> None:
    at = on_page(steps.launcher_token, "run", run=failed)
    assert not at.exception, at.exception
    first = at.error[0].value
    assert first == f"The run failed: {MODEL_SAYS}", [e.value for e in at.error]
    assert "compute" in texts(at)  # the routine that said it
    assert not any(e.label == "Details" for e in at.expander)
    logs = "\n".join(c.value for c in at.code)
    assert "preparing the steps" in logs  # the model's own lines are there
    no_internals(everything(at), platform)


def test_the_owner_and_operators_see_the_traceback_behind_details(
    steps: Steps, failed: str, platform: PlatformInfo
) -> None:
    at = on_page(steps.owner_token, "run", run=failed)
    assert not at.exception, at.exception
    assert at.error[0].value == f"The run failed: {MODEL_SAYS}"
    details = next(e for e in at.expander if e.label == "Details")
    traceback = details.code[0].value
    assert "Traceback" in traceback and 'File "flows/steps.py"' in traceback, traceback
    # The owner is not an operator: file names, never the server's folders.
    assert str(platform.home) not in everything(at) and not SERVER_PATH.search(everything(at))
    assert not any(line in everything(at) for line in PLATFORM_LINES)

    at = on_page((platform.home / "operator.token").read_text(), "run", run=failed)
    assert not at.exception, at.exception
    assert at.error[0].value == f"The run failed: {MODEL_SAYS}"
    details = next(e for e in at.expander if e.label == "Details")
    assert "Traceback" in details.code[0].value
    logs = "\n".join(c.value for c in at.code)
    assert "submitted to infrastructure" in logs  # operators see the worker's lines


@pytest.mark.parametrize("via", ["python", "portal"])
def test_run_logs_and_failure_hold_the_same_rules_in_process_and_through_the_portal(
    via: str, steps: Steps, failed: str, platform: PlatformInfo, request: pytest.FixtureRequest
) -> None:
    def connect(token: str) -> Accelerator:
        if via == "portal":
            return Accelerator.connect(url=request.getfixturevalue("portal"), token=token)
        return Accelerator.connect(platform.api_url, token=token)

    with connect(steps.launcher_token) as launcher:
        run = launcher.run(failed)
        failure = run.failure()
        assert failure is not None
        assert failure.message == MODEL_SAYS and failure.routine == "compute"
        assert failure.details is None
        logs = "\n".join(run.logs())
        assert "preparing the steps" in logs and MODEL_SAYS in logs
        no_internals(logs, platform)
    with connect(steps.owner_token) as owner:
        failure = owner.run(failed).failure()
        assert failure is not None and failure.details is not None
        assert 'File "flows/steps.py"' in failure.details
        assert str(platform.home) not in failure.details
        assert "Traceback" in "\n".join(owner.run(failed).logs())


def phase_shown(at: AppTest) -> str:
    """The status box's label: the run's phase."""
    return str(at.status[0].label)


def test_the_phase_says_how_long_runs_usually_take_once_the_version_has_history(
    acc: Accelerator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    steps = publish_steps(acc, tmp_path_factory.mktemp("steps-history"))
    with Accelerator.connect(token=steps.launcher_token) as launcher:
        first = launcher.launch(steps.name, conf={"seconds": 300})
        wait_until(lambda: first.state == "Running")
        at = on_page(steps.launcher_token, "run", run=str(first.id))
        assert not at.exception, at.exception
        assert phase_shown(at).startswith(("Running", "Preparing")), phase_shown(at)
        assert "usually" not in everything(at)  # no history yet: nothing is said
        first.cancel()
        wait_until(lambda: first.state == "Cancelled")

        quick = [launcher.launch(steps.name, conf={"seconds": 0}) for _ in range(3)]
        assert [r.wait(timeout=180) for r in quick] == ["Completed"] * 3
        longer = launcher.launch(steps.name, conf={"seconds": 300})
        wait_until(lambda: longer.state == "Running")
        at = on_page(steps.launcher_token, "run", run=str(longer.id))
        said = wait_until(lambda: "usually about" in phase_shown(at.run()) and phase_shown(at))
        assert re.search(r"usually about \d+ s from launch to end", said), said
        longer.cancel()
        wait_until(lambda: longer.state == "Cancelled")


def test_the_routine_total_shown_from_launch_is_the_final_total(
    people: dict[str, str], climate: Any
) -> None:
    def routines_done(at: AppTest) -> str:
        return str(next(m for m in at.metric if m.label == "Routines done").value)

    with Accelerator.connect(token=people["alice"]) as alice:
        run = alice.launch(
            "climate-downscaling",
            conf={"scenario": "ssp245", "target_region": "alps"},
            inputs=["acc://climate/examples/coarse-cmip6/"],
        )
        at = on_page(people["alice"], "run", run=str(run.id))
        assert not at.exception, at.exception
        assert routines_done(at).endswith(" of 3"), routines_done(at)
        totals = set()

        def ended_noting_total() -> bool:
            totals.add(run.progress().total)
            return run.info().final

        wait_until(ended_noting_total, 180)
        assert run.wait(timeout=60) == "Completed"
    at = on_page(people["alice"], "run", run=str(run.id))
    assert routines_done(at) == "3 of 3"
    assert totals == {3}, totals


def test_server_paths_leave_file_urls_and_colon_lists_but_storage_urls_stay() -> None:
    from accelerator_prefect.runs import plain

    said = plain("cannot open file:///srv/acc/storage/other/secret.nc; PATH:/opt/acc/bin", "reader")
    assert "/srv/" not in said and "/opt/" not in said and "secret.nc" in said
    kept = "acc://climate/examples/x.nc and s3://bucket/a/b.nc and https://example.org/a/b"
    assert plain(kept, "reader") == kept
