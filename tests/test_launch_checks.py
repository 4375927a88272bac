"""A model's own checks across settings and inputs (the manifest's ``checks``): refused at
publish when they name a setting the jobflow lacks; at launch, a failing one refuses the
launch whole, with its message under its field, in-process, through the portal and in the
catalog's form."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from accelerator_prefect import Accelerator, InvalidConf, ManifestError, NotFound
from accelerator_prefect.bundled import data_folder as bundled_data
from tests.conftest import ModelRepo, User
from tests.test_catalog_ui import app
from tests.test_launch import climate_repo, count_runs

__all__ = ["climate_repo"]  # a fixture, used by name

CLIMATE = "climate-downscaling"
DEPLOYMENT = f"{CLIMATE}@1.0.0"
SAMPLES = "acc://climate/examples/coarse-cmip6/"
MISSING_SSP126 = (
    "conf.scenario: Select the model run of scenario ssp126 (model_ssp126.nc) among your "
    "inputs, or choose the scenario of the model run you selected."
)


@pytest.fixture(scope="module")
def climate(acc: Accelerator, climate_repo: ModelRepo) -> ModelRepo:
    """The climate example, published with its manifest's check."""
    acc.publish(climate_repo.manifest)
    return climate_repo


def upload_pair(user: User, folder: str) -> str:
    """The sample observations and the ssp245 model run, uploaded into ``user``'s own
    folder ``folder``; that folder's acc:// path."""
    target = f"acc://users/{user.name}/{folder}/"
    samples = bundled_data() / "climate" / "coarse-cmip6"
    for name in ("observations.nc", "model_ssp245.nc"):
        user.acc.storage.put(samples / name, target)
    return target


def test_a_launch_without_the_scenarios_model_run_is_refused_under_the_scenario_and_runs_nothing(
    acc: Accelerator, climate: ModelRepo, user: User
) -> None:
    pair = upload_pair(user, f"pair-{uuid.uuid4().hex[:6]}")
    before = count_runs(acc.api_url, DEPLOYMENT)
    with pytest.raises(InvalidConf) as refused:
        user.acc.launch(
            CLIMATE,
            conf={"scenario": "ssp126", "target_region": "alps"},
            inputs=[f"{pair}observations.nc", f"{pair}model_ssp245.nc"],
        )
    assert refused.value.problems == [MISSING_SSP126]
    assert count_runs(acc.api_url, DEPLOYMENT) == before


def test_a_ticked_folder_is_checked_as_the_files_it_gives_the_run(
    acc: Accelerator, climate: ModelRepo, user: User
) -> None:
    pair = upload_pair(user, f"folder-{uuid.uuid4().hex[:6]}")
    before = count_runs(acc.api_url, DEPLOYMENT)
    with pytest.raises(InvalidConf) as refused:
        user.acc.launch(
            CLIMATE, conf={"scenario": "ssp126", "target_region": "alps"}, inputs=[pair]
        )
    assert refused.value.problems == [MISSING_SSP126]
    # The folder holds model_ssp245.nc: for ssp245 the check holds, only the year is wrong.
    with pytest.raises(InvalidConf) as refused:
        user.acc.launch(
            CLIMATE,
            conf={"scenario": "ssp245", "target_region": "alps", "base_year": 3000},
            inputs=[pair],
        )
    assert refused.value.problems == ["conf.base_year: 3000 is greater than the maximum of 2100"]
    assert count_runs(acc.api_url, DEPLOYMENT) == before


def test_the_portal_answers_a_failed_check_as_problem_json_naming_the_setting(
    acc: Accelerator, climate: ModelRepo, portal: str
) -> None:
    name = f"checker-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(name, {"climate": "member"})
    before = count_runs(acc.api_url, DEPLOYMENT)
    answer = httpx.post(
        f"{portal}/api/v1/models/{CLIMATE}/launch",
        json={
            "conf": {"scenario": "ssp126", "target_region": "alps"},
            "inputs": [f"{SAMPLES}observations.nc", f"{SAMPLES}model_ssp245.nc"],
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    pointer, detail = MISSING_SSP126.split(": ", 1)
    assert answer.json()["errors"] == [{"pointer": pointer, "detail": detail}]
    assert count_runs(acc.api_url, DEPLOYMENT) == before


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (
            {"field": "conf.fail_after", "inputs_include": "{conf.fail_afer}.csv"},
            "checks[0].inputs_include: {conf.fail_afer} names no setting of the jobflow "
            "(its settings: conf.crash, conf.fail_after)",
        ),
        (
            {"field": "conf.retries", "inputs_include": "*.csv"},
            "checks[0].field: conf.retries is no setting of the jobflow "
            "(its settings: conf.crash, conf.fail_after)",
        ),
    ],
)
def test_a_check_naming_a_setting_the_jobflow_lacks_is_refused_at_publish(
    acc: Accelerator, tmp_path: Path, check: dict[str, str], expected: str
) -> None:
    import yaml

    name = f"tables-{uuid.uuid4().hex[:6]}"
    extra = yaml.safe_dump({"checks": [check]})
    repo = ModelRepo(tmp_path / "models", name).tables(extra=extra)
    repo.commit("tables 1.0.0")
    with pytest.raises(ManifestError) as refused:
        acc.publish(repo.manifest)
    assert expected in str(refused.value)
    with pytest.raises(NotFound):
        acc.get(name)  # nothing was published


# ---------------------------------------------------------------- in the catalog's form

FORM = f"conf:{CLIMATE}:1.0.0:"
EXPLORER = f"inputs:{CLIMATE}:1.0.0:"


def elements(at: AppTest) -> list[tuple[str, Any]]:
    """Every element of the page in order: (type, key) for widgets, (type, value) else."""
    found: list[tuple[str, Any]] = []

    def walk(node: Any) -> None:
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                walk(child)
            return
        key = getattr(node, "key", None)
        found.append((type(node).__name__, key if key is not None else getattr(node, "value", "")))

    walk(at.main)
    return found


def said_under(at: AppTest, key: str) -> str:
    """The text of the element right below the widget ``key``."""
    shown = elements(at)
    place = next(i for i, (_, said) in enumerate(shown) if said == key)
    return str(shown[place + 1][1])


@pytest.fixture
def member(acc: Accelerator) -> str:
    """A token of a new member of the climate project."""
    _, token = acc.add_user(f"former-{uuid.uuid4().hex[:6]}", {"climate": "member"})
    return token


def climate_form(token: str, folder: str = SAMPLES) -> AppTest:
    """The climate model's page, its explorer opened at ``folder``."""
    at = app(token, model=CLIMATE)
    at.session_state[f"{EXPLORER}:folder"] = folder
    at = at.run().switch_page("views/model.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def press_launch(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_the_form_shows_a_failed_check_under_its_setting_and_launches_nothing(
    acc: Accelerator, climate: ModelRepo, member: str
) -> None:
    at = climate_form(member)
    at.selectbox(key=f"{FORM}.scenario").set_value("ssp126")
    at.selectbox(key=f"{FORM}.target_region").set_value("alps")
    for name in ("observations.nc", "model_ssp245.nc"):
        at.button(key=f"{EXPLORER}:tick:{SAMPLES}{name}").click().run()
    before = count_runs(acc.api_url, DEPLOYMENT)
    press_launch(at)
    assert said_under(at, f"{FORM}.scenario") == MISSING_SSP126.split(": ", 1)[1]
    assert any("The run was not started: 1 thing(s) to fix" in e.value for e in at.error)
    assert "run" not in at.query_params
    assert count_runs(acc.api_url, DEPLOYMENT) == before
    # Choosing the scenario of the model run selected takes the word back.
    at.selectbox(key=f"{FORM}.scenario").set_value("ssp245").run()
    assert not any("model_ssp126.nc" in e.value for e in at.error), [e.value for e in at.error]


def test_a_value_set_in_the_advanced_fold_reaches_the_launch(
    acc: Accelerator, climate: ModelRepo, member: str
) -> None:
    at = climate_form(member, folder="acc://climate/examples/")
    (fold,) = [e for e in at.expander if e.label.startswith("Advanced settings")]
    assert [w.key for w in fold.number_input] == [f"{FORM}.resolution_km"]
    at.selectbox(key=f"{FORM}.scenario").set_value("ssp245")
    at.selectbox(key=f"{FORM}.target_region").set_value("pyrenees")
    at.number_input(key=f"{FORM}.resolution_km").set_value(12.5)
    at.button(key=f"{EXPLORER}:tick:{SAMPLES}").click().run()
    press_launch(at)
    run_id = at.query_params.get("run")
    assert run_id, [e.value for e in at.error]
    run = acc.run(run_id[0] if isinstance(run_id, list) else run_id)
    try:
        assert run.parameters["conf"] == {
            "scenario": "ssp245",
            "target_region": "pyrenees",
            "base_year": 1995,
            "resolution_km": 12.5,
        }
    finally:
        run.cancel()  # its computing proves nothing here
