"""The catalog's pages, each run by Streamlit's AppTest against the real server and
worker: what a signed-in user, a guest and an author see and can do."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from accelerator_prefect import Accelerator
from accelerator_prefect.bundled import seed_example_data
from accelerator_prefect.platform import PlatformInfo
from catalog_ui.session import KEY, LINK_ENDED, Session
from tests.conftest import ModelRepo
from tests.test_launch import bundled_example

APP = str(Path(__file__).parents[1] / "catalog_ui" / "app.py")
TIMEOUT = 60
CLIMATE_FORM = "conf:climate-downscaling:1.0.0:"  # the widget keys' prefix of its settings


@pytest.fixture(scope="module")
def people(acc: Accelerator, platform: PlatformInfo) -> dict[str, str]:
    """Tokens of alice (in the climate project) and bob (in no project)."""
    _, alice = acc.add_user("alice", {"climate": "member"})
    _, bob = acc.add_user("bob", {})
    return {"alice": alice, "bob": bob, "operator": (platform.home / "operator.token").read_text()}


@pytest.fixture(scope="module")
def climate(
    acc: Accelerator, tmp_path_factory: pytest.TempPathFactory, people: dict[str, str]
) -> ModelRepo:
    repo = bundled_example(tmp_path_factory.mktemp("climate-ui"), "climate-downscaling")
    seed_example_data(acc.storage)
    acc.publish(repo.manifest)
    return repo


def app(token: str | None = None, **params: str) -> AppTest:
    """The catalog as a browser would open it, signed in with ``token`` if given."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    if token is not None:
        acc = Accelerator.connect(token=token)
        at.session_state[KEY] = Session(acc, "token")
    return at


def on_page(token: str | None, page: str, **params: str) -> AppTest:
    """The catalog opened at ``views/<page>.py`` (a first run registers the pages)."""
    return app(token, **params).run().switch_page(f"views/{page}.py").run()


def texts(at: AppTest) -> str:
    """Everything the page says, in one string to search."""
    parts: list[Any] = [
        *at.title,
        *at.subheader,
        *at.markdown,
        *at.caption,
        *at.info,
        *at.warning,
        *at.error,
        *at.success,
    ]
    return "\n".join(str(p.value) for p in parts)


def test_sign_in_with_a_token_opens_the_catalog(people: dict[str, str], climate: ModelRepo) -> None:
    at = app().run()
    assert "Sign in" in texts(at) or at.text_input(key="sign-in-user")
    at.text_input(key="sign-in-user").input("alice")
    at.text_input(key="sign-in-token").input(people["alice"])
    at.button[0].click().run()
    assert not at.exception
    assert "Model catalog" in texts(at)
    assert "Climate downscaling" in texts(at)


def test_a_wrong_token_is_refused_in_plain_words(people: dict[str, str]) -> None:
    at = app().run()
    at.text_input(key="sign-in-user").input("alice")
    at.text_input(key="sign-in-token").input(people["bob"])
    at.button[0].click().run()
    assert not at.exception
    assert "does not belong to 'alice'" in texts(at)
    at.text_input(key="sign-in-token").input("acc_nope_nope")
    at.button[0].click().run()
    assert "Not signed in" in texts(at)
    assert KEY not in at.session_state


def test_catalog_tells_project_models_from_the_public_catalog(
    people: dict[str, str], climate: ModelRepo
) -> None:
    at = app(people["alice"]).run()
    assert not at.exception
    said = texts(at)
    assert "Your projects (" in said  # alice is in the climate project
    assert "Public" in said and "v1.0.0" in said
    at = app(people["bob"]).run()
    said = texts(at)
    assert "Public catalog (" in said and "Climate downscaling" in said
    assert "Your projects" not in said  # bob is in no project and owns nothing


def test_catalog_search_and_filters_narrow_the_models(
    people: dict[str, str], climate: ModelRepo
) -> None:
    at = app(people["alice"]).run()
    at.text_input(key="catalog-search").input("downscaling").run()
    assert "Climate downscaling" in texts(at)
    at.text_input(key="catalog-search").input("no such words").run()
    assert "No model matches your search" in texts(at)
    at.text_input(key="catalog-search").input("").run()
    at.multiselect(key="catalog-scopes").select("public").run()
    assert "Climate downscaling" in texts(at)


def wait_until(check: Any, deadline: float = 120.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def finished_run(acc: Accelerator, climate: ModelRepo, people: dict[str, str]) -> Iterator[str]:
    alice = Accelerator.connect(token=people["alice"])
    run = alice.launch(
        "climate-downscaling",
        conf={"scenario": "ssp245", "target_region": "alps"},
        inputs=["acc://climate/examples/coarse-cmip6/"],
    )
    assert run.wait(timeout=180) == "Completed"
    yield str(run.id)
    alice.close()


def test_run_page_shows_state_outputs_previews_and_provenance(
    people: dict[str, str], finished_run: str, climate: ModelRepo
) -> None:
    at = on_page(people["alice"], "run", run=finished_run)
    assert not at.exception, at.exception
    said = texts(at)
    # The provenance names the code's repository without showing where the platform keeps it
    # (whichever module of the session published the example, its repository is in here).
    assert " (on the platform) @ " in said
    assert str(climate.path.parents[1]) not in said
    assert "Completed" in said
    assert "Outputs" in said
    labels = [e.label for e in at.expander]
    assert any(label.startswith("summary.csv") for label in labels), labels
    assert at.dataframe, "the CSV summary is previewed as a table"
    # Headed as the manifest declares its columns; the file keeps its own headers.
    headers = [list(frame.value.columns) for frame in at.dataframe]
    assert any("Warming (K)" in h and "Sub-region" in h for h in headers), headers
    zipped = [b for b in at.get("link_button") if "Download all" in str(b.proto.label)]
    assert zipped and zipped[0].proto.url.endswith(f"_acc/runs/{finished_run}/outputs.zip")
    # Images and tables first; the NetCDF is previewed only when asked for.
    outputs = [label.split(" · ")[0] for label in labels if " · " in label]
    kinds = [label.rsplit(".", 1)[-1] for label in outputs]
    assert kinds.index("nc") > max(kinds.index("png"), kinds.index("csv")), outputs
    netcdf = next(t for t in at.toggle if t.key.startswith("preview:") and t.key.endswith(".nc"))
    assert not netcdf.value
    said_before = texts(at)
    netcdf.set_value(True).run()
    assert not at.exception, at.exception
    assert texts(at) != said_before  # its preview appears once asked for
    assert "Provenance" in " ".join(labels)
    assert any(b.label == "Run again with these settings" for b in at.button)
    done = [e.value for e in at.success]
    assert any(re.fullmatch(r"Done: .+ of computing, .+ in all\.", d) for d in done), done
    # Operators also get the Prefect UI; alice is not one.
    assert not any("Prefect UI" in str(b.proto.label) for b in at.get("link_button"))


def test_someone_else_cannot_open_a_run(people: dict[str, str], finished_run: str) -> None:
    at = on_page(people["bob"], "run", run=finished_run)
    assert not at.exception
    assert "not found" in texts(at)
    assert "Outputs" not in texts(at)


def test_my_runs_lists_and_filters_the_users_runs(
    people: dict[str, str], finished_run: str
) -> None:
    at = on_page(people["alice"], "my_runs")
    assert not at.exception, at.exception
    assert at.dataframe, texts(at)
    frame = at.dataframe[0].value
    assert list(frame["state"]) == ["Completed"] and list(frame["by"]) == ["alice"]
    at.multiselect(key="mr-states").select("Failed").run()
    assert "No runs yet." in texts(at)
    # alice's run is hers. (Other modules share the session's "bob" and may have run things.)
    at = on_page(people["bob"], "my_runs")
    assert not at.exception, at.exception
    seen = at.dataframe[0].value if at.dataframe else None
    assert seen is None or set(seen["by"]) == {"bob"}, seen
    at.toggle(key="mr-mine").set_value(False).run()
    seen = at.dataframe[0].value if at.dataframe else None
    assert seen is None or "alice" not in set(seen["by"]), seen


def test_my_models_moves_versions_shares_links_and_charts_usage(
    acc: Accelerator, people: dict[str, str], finished_run: str
) -> None:
    operator = people["operator"].strip()  # owner of the bundled examples
    at = on_page(operator, "my_models")
    assert not at.exception, at.exception
    at.selectbox(key="mm-model").select("climate-downscaling").run()
    versions = at.dataframe[0].value
    # Its runs so far in this session (other modules run the example too), alice's among them.
    runs = acc.runs("climate-downscaling", limit=200)
    assert finished_run in [str(r.id) for r in runs]
    assert list(versions["version"]) == ["1.0.0"] and list(versions["runs"]) == [len(runs)]

    at.selectbox(key="mm-status").select("deprecated").run()
    at.button(key="mm-apply").click().run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["status"]) == ["deprecated"]
    # Its page and the catalog now say so, and it still takes runs.
    page = on_page(people["alice"], "model", model="climate-downscaling")
    assert any("Version 1.0.0 is deprecated" in w.value for w in page.warning)
    assert any(b.label == "Launch" for b in page.button)
    assert "Deprecated" in texts(on_page(people["alice"], "catalog"))
    at.selectbox(key="mm-status").select("active").run()
    at.button(key="mm-apply").click().run()
    assert list(at.dataframe[0].value["status"]) == ["active"]

    # A share link: shown once, with its embed snippet; then revoked.
    at.button[[b.label for b in at.button].index("Create a link")].click().run()
    codes = [c.value for c in at.code]
    link = next(c for c in codes if "link=" in c and "iframe" not in c)
    assert "model=climate-downscaling" in link
    assert any("<iframe" in c and "embed=true" in c for c in codes)
    # Its own Revoke (other modules of the session share the example too).
    link_id = link.split("link=")[1].split("_")[1]
    at.button(key=f"revoke:{link_id}").click().run()
    assert "revoked or expired" in texts(at)
    guest = app(None, model="climate-downscaling", link=link.split("link=")[1]).run()
    assert "This link does not open anything" in texts(guest)

    # Usage: alice's one completed run, charted per day and version.
    assert at.get("bar_chart") or at.get("vega_lite_chart") or at.get("arrow_vega_lite_chart")
    assert "Runs" in [m.label for m in at.metric]


def test_my_models_is_refused_to_whoever_owns_nothing(people: dict[str, str]) -> None:
    at = on_page(people["bob"], "my_models")
    assert not at.exception
    assert "You own no hosted model yet" in texts(at)


def test_a_link_makes_its_holder_a_guest_of_that_model_only(
    acc: Accelerator, people: dict[str, str], climate: ModelRepo
) -> None:
    link = acc.share_link("climate-downscaling")
    assert link.token is not None
    at = app(None, model="climate-downscaling", link=link.token).run()
    assert not at.exception, at.exception
    said = texts(at)
    assert "Climate downscaling" in said and "Your inputs" in said
    assert "Guest of **climate-downscaling**" in said
    # The results go to the guest's own scratch folder; they cannot choose another.
    output = at.text_input(key="output:climate-downscaling:1.0.0:")
    assert output.disabled and "/runs/{run_id}/" in (output.value or "")
    # Only the model and run pages exist for a guest.
    with pytest.raises(ValueError):
        at.switch_page("views/my_runs.py")
    acc.revoke_link(link.id)
    # In use when revoked: the next click shows a plain page, not a crash.
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error] == [LINK_ENDED]
    # Opened afresh: the same page, said once.
    at = app(None, model="climate-downscaling", link=link.token).run()
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error] == [LINK_ENDED]


def test_a_launch_without_inputs_is_refused_next_to_the_explorer_and_runs_nothing(
    acc: Accelerator, people: dict[str, str], climate: ModelRepo
) -> None:
    from tests.test_launch import count_runs

    before = count_runs(acc.api_url, "climate-downscaling@1.0.0")
    at = on_page(people["alice"], "model", model="climate-downscaling")
    assert not at.exception, at.exception
    at.selectbox(key=f"{CLIMATE_FORM}.scenario").set_value("ssp245")
    at.selectbox(key=f"{CLIMATE_FORM}.target_region").set_value("alps").run()
    launch = next(b for b in at.button if b.label == "Launch")
    assert not launch.disabled
    launch.click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("at least 2 required" in e for e in errors), errors
    assert any("The run was not started" in e for e in errors), errors
    assert count_runs(acc.api_url, "climate-downscaling@1.0.0") == before


def test_run_again_opens_the_form_filled_with_that_runs_settings(
    people: dict[str, str], finished_run: str
) -> None:
    at = on_page(people["alice"], "run", run=finished_run)
    next(b for b in at.button if b.label == "Run again with these settings").click().run()
    assert not at.exception, at.exception
    said = texts(at)
    assert "Your inputs" in said
    assert "Selected:** 1 folder(s)" in said  # the run's input folder, ticked again
    assert "acc://climate/examples/coarse-cmip6/" in [c.value for c in at.code]
    chosen = {s.label: s.value for s in at.selectbox}
    assert chosen.get("Scenario *") == "ssp245" and chosen.get("Target region") == "alps"


def test_single_sign_on_maps_a_stable_subject_or_a_verified_email_of_an_allowed_domain(
    acc: Accelerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who an identity provider signed in: never a name the person picked, never an
    unverified or foreign address, never an operator by e-mail."""
    from accelerator_prefect.errors import AccessDenied
    from catalog_ui.session import oidc_user

    linked = f"carol-{uuid.uuid4().hex[:6]}"
    subject = f"idp|{uuid.uuid4().hex}"
    acc.add_user(linked, {"demo": "member"}, oidc_subject=subject)
    monkeypatch.setenv("ACC_OIDC_EMAIL_DOMAINS", '["uni.example"]')

    # The recorded subject decides, whatever else the token says.
    assert oidc_user({"sub": subject, "preferred_username": "operator"}) == linked
    # A verified address of an allowed domain names the user before the @.
    assert oidc_user({"sub": "s-2", "email": "Dana@uni.example", "email_verified": True}) == "dana"
    refused = [
        {"sub": "s-3", "preferred_username": "operator"},  # a name the person picked
        {"sub": "s-4", "email": "dana@uni.example", "email_verified": False},
        {"sub": "s-5", "email": "dana@uni.example"},  # not said to be verified
        {"sub": "s-6", "email": "operator@evil.example", "email_verified": True},
        {"sub": "s-7", "email": "operator@uni.example", "email_verified": True},  # an operator
        {"sub": "s-8", "email": f"{linked}@uni.example", "email_verified": True},  # linked to s
    ]
    for claims in refused:
        with pytest.raises(AccessDenied, match="not linked to a user here"):
            oidc_user(claims)


def test_a_single_sign_on_users_rights_are_read_on_every_request(acc: Accelerator) -> None:
    """The catalog acts for a signed-in person as a trusted user: taking them out of a
    project counts at their next click, not at their next sign-in."""
    name = f"erin-{uuid.uuid4().hex[:6]}"
    acc.add_user(name, {"demo": "member"})
    with Accelerator.connect(trusted_user=name) as session:
        assert session.principal.projects == {"demo": "member"}
        acc.add_user(name, {})
        assert session.principal.projects == {}


def test_errors_reach_catalog_users_in_plain_words_without_internals() -> None:
    from accelerator_prefect.errors import NotFound
    from catalog_ui.session import plain_error

    said = plain_error(NotFound("model 'x' not found (see `acc list` for the hosted models)"))
    assert said == "model 'x' not found. The catalog lists the models open to you."
    said = plain_error(KeyError("/srv/secret/path"))
    assert "KeyError" in said and "/srv/secret/path" not in said and "tell the operator" in said


def test_the_input_rule_is_said_in_one_sentence() -> None:
    from accelerator_prefect.manifest import InputMapping
    from catalog_ui.explorer import rule

    climate = InputMapping(
        min_files=2, max_files=10, accepted_types=[".nc"], max_total_size="100 MB"
    )
    assert rule(climate) == (
        "Select 2 to 10 file(s) of .nc, or folders holding them; 100 MB at most in all."
    )
    assert rule(InputMapping(min_files=1, max_files=1)).startswith(
        "Select exactly 1 file(s) of any"
    )
    assert rule(InputMapping()).startswith("Select any number of file(s)")


def test_secrets_are_password_fields_and_reach_the_run_only_as_block_names(
    acc: Accelerator, people: dict[str, str], tmp_path: Path
) -> None:
    import json
    import uuid

    from tests.test_secrets import KEYED_FLOW, KEYED_MANIFEST

    name = f"keyed-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path / "keyed", name)
    repo.write("flows/keyed.py", KEYED_FLOW.format())
    repo.write(f"deployments/{name}.yaml", KEYED_MANIFEST.format(name=name))
    repo.commit("keyed 1.0.0")
    acc.publish(repo.manifest)  # owned by alice

    at = on_page(people["alice"], "model", model=name)
    assert not at.exception, at.exception
    field = at.text_input(key=f"secret:{name}:1.0.0::API_KEY")
    assert field.label == "API_KEY *" and "Key of the data service" in (field.help or "")
    assert field.proto.type == field.proto.PASSWORD
    key = "sk-" + uuid.uuid4().hex
    field.input(key)
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception, at.exception
    assert key not in texts(at)
    run_id = at.query_params["run"]
    run_id = run_id[0] if isinstance(run_id, list) else run_id
    with Accelerator.connect(token=people["alice"]) as alice:
        run = alice.run(run_id)
        assert run.wait(timeout=180) == "Completed"
        assert key not in json.dumps(run.parameters)
        assert run.parameters["secrets"]["blocks"]["API_KEY"].startswith("acc-run-")
        assert key not in "\n".join(run.logs())


SLEEPY_FLOW = """
import time

from pydantic import Field

from accelerator_prefect import Conf, jobflow, routine


class SleepyConf(Conf):
    seconds: float = Field(default=300, ge=0, le=600, description="How long to sleep.")


@routine
def sleep(conf: SleepyConf) -> float:
    print(f"sleeping {conf.seconds} s")
    time.sleep(conf.seconds)
    return conf.seconds


@jobflow(name="sleepy")
def sleepy(conf: SleepyConf) -> dict:
    return {"slept": sleep(conf)}
"""

SLEEPY_MANIFEST = """
name: {name}
title: Sleepy
version: 1.0.0
jobflow: flows/sleepy.py:sleepy
owner: alice
project: climate
access:
  scope: project
"""


@pytest.fixture(scope="module")
def sleepy(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model of alice's whose runs sleep as long as they are told (5 minutes by default)."""
    import uuid

    name = f"sleepy-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path_factory.mktemp("sleepy"), name)
    repo.write("flows/sleepy.py", SLEEPY_FLOW)
    repo.write(f"deployments/{name}.yaml", SLEEPY_MANIFEST.format(name=name))
    repo.commit("sleepy 1.0.0")
    acc.publish(repo.manifest)
    return name


def state_shown(at: AppTest) -> str:
    """The state badge of the run page's status box."""
    for line in texts(at).splitlines():
        if "-badge[" in line and not line.startswith(":violet"):
            return line.split("[", 1)[1].rstrip("]")
    raise AssertionError(f"no state badge on the page: {texts(at)}")


def test_cancel_run_stops_a_running_run_and_the_page_follows_it_to_cancelled(
    people: dict[str, str], sleepy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accelerator_prefect import AccessDenied
    from accelerator_prefect.runs import Run

    with Accelerator.connect(token=people["alice"]) as alice:
        run = alice.launch(sleepy, conf={"seconds": 300})
        wait_until(lambda: run.state == "Running")
        at = on_page(people["alice"], "run", run=str(run.id))
        assert not at.exception, at.exception
        assert state_shown(at) == "Running"
        assert not any(b.label == "Run again with these settings" for b in at.button)

        # A refusal by the service is said in plain words, and the run goes on.
        def refuse(self: Run) -> str:
            raise AccessDenied(f"run {self.id}: only its launcher, its model's owner or operators")

        with monkeypatch.context() as patched:
            patched.setattr(Run, "cancel", refuse)
            at.button(key="cancel-run").click().run()
        assert not at.exception, at.exception
        said = texts(at)
        assert f"Not cancelled: run {run.id}: only its launcher" in said, said
        assert run.state == "Running"

        # The launcher presses it: Cancelling at once, then Cancelled, as the page reruns
        # (a browser reruns the live part every REFRESH_SECONDS).
        at.button(key="cancel-run").click().run()
        assert not at.exception, at.exception
        assert "Not cancelled" not in texts(at)
        assert state_shown(at) in {"Cancelling", "Cancelled"}
        assert not any(b.label == "Cancel run" for b in at.button)
        wait_until(lambda: state_shown(at.run()) == "Cancelled")
        assert not at.exception, at.exception
        assert run.state == "Cancelled"
        said = texts(at)
        assert "Cancelled: its routines were stopped" in said and "failed" not in said, said
        assert any(b.label == "Run again with these settings" for b in at.button)
        assert not any(b.label == "Cancel run" for b in at.button)


def test_an_ended_run_has_no_cancel_button(people: dict[str, str], finished_run: str) -> None:
    at = on_page(people["alice"], "run", run=finished_run)
    assert not at.exception, at.exception
    assert not any(b.label == "Cancel run" for b in at.button)


def test_the_form_never_launches_a_value_other_than_the_one_shown(
    acc: Accelerator, people: dict[str, str], climate: ModelRepo
) -> None:
    """Typed out of range, a value stays as typed, its problem stands under it, and Launch
    waits: pressing it starts nothing. Required choices start empty, never preselected."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hs

    from tests.test_launch import count_runs

    at = on_page(people["alice"], "model", model="climate-downscaling")
    assert not at.exception, at.exception
    scenario = at.selectbox(key=f"{CLIMATE_FORM}.scenario")
    assert scenario.value is None and scenario.placeholder == "Choose…"
    assert at.selectbox(key=f"{CLIMATE_FORM}.target_region").value == "alps"  # a default
    assert next(b for b in at.button if b.label == "Launch").disabled
    scenario.set_value("ssp245")
    at.selectbox(key=f"{CLIMATE_FORM}.target_region").set_value("alps").run()
    before = count_runs(acc.api_url, "climate-downscaling@1.0.0")

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
    @given(year=hs.integers(-10_000, 1949) | hs.integers(2101, 10_000))
    def out_of_range(year: int) -> None:
        at.number_input(key=f"{CLIMATE_FORM}.base_year").set_value(1995).run()
        base_year = at.number_input(key=f"{CLIMATE_FORM}.base_year")
        assert base_year.label == "Base year · 1950–2100"
        launch = next(b for b in at.button if b.label == "Launch")
        assert not launch.disabled  # the form is right again
        base_year.set_value(year)
        launch.click().run()  # typed and pressed at once, as a browser sends them
        assert not at.exception, at.exception
        assert at.number_input(key=f"{CLIMATE_FORM}.base_year").value == year
        bound = "greater than the maximum of 2100" if year > 2100 else "less than the minimum"
        assert any(f"{year} is {bound}" in e.value for e in at.error), [e.value for e in at.error]
        assert next(b for b in at.button if b.label == "Launch").disabled
        assert "run" not in at.query_params

    out_of_range()
    assert count_runs(acc.api_url, "climate-downscaling@1.0.0") == before


def test_a_failed_run_leads_with_the_models_own_words(
    climate: ModelRepo, people: dict[str, str]
) -> None:
    """The issue's case, past the model's pre-launch check: scenario ssp126 with the ssp245
    model run under the ssp126 file name, which only the model itself can tell."""
    with Accelerator.connect(token=people["alice"]) as alice:
        mine = "acc://users/alice/misnamed/"
        with alice.storage.open("acc://climate/examples/coarse-cmip6/model_ssp245.nc") as f:
            data = f.read()
        with alice.storage.open(f"{mine}model_ssp126.nc", "wb") as f:
            f.write(data)
        run = alice.launch(
            "climate-downscaling",
            conf={"scenario": "ssp126", "target_region": "alps"},
            inputs=[
                "acc://climate/examples/coarse-cmip6/observations.nc",
                f"{mine}model_ssp126.nc",
            ],
        )
        assert run.wait(timeout=180) == "Failed"
    at = on_page(people["alice"], "run", run=str(run.id))
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    said = next(e for e in errors if e.startswith("The run failed: "))
    assert "no model run for scenario ssp126" in said and "select model_ssp126.nc" in said
    assert not any("Traceback" in e or 'File "/' in e or "Error:" in e for e in errors), errors


def test_a_token_revoked_while_signed_in_ends_the_sign_in_in_plain_words(
    acc: Accelerator,
) -> None:
    from accelerator_prefect.directory import token_id

    _, token = acc.add_user("dora", {})
    at = app(token).run()
    assert not at.exception, at.exception
    acc.revoke_token(str(token_id(token)))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Your sign-in has ended" in w.value for w in at.warning), texts(at)
    assert at.text_input(key="sign-in-token")  # the sign-in form, to sign in again


def test_a_ticked_folder_says_what_it_gives_the_run_without_earlier_results(
    acc: Accelerator, people: dict[str, str], climate: ModelRepo, finished_run: str
) -> None:
    """The issue's case: ticking ``climate/`` once swept in an earlier run's output."""
    at = on_page(people["alice"], "model", model="climate-downscaling")
    assert not at.exception, at.exception
    earlier = acc.run(finished_run).output_location
    assert earlier and earlier.startswith("acc://climate/results/")
    assert acc.storage.exists(f"{earlier}downscaled.nc")  # an earlier run's output
    at.button(key="inputs:climate-downscaling:1.0.0::tick:acc://climate/").click().run()
    assert not at.exception, at.exception
    said = [c.value for c in at.caption if re.match(r"\d+ file\(s\), ", c.value)]
    assert len(said) == 1, texts(at)
    expected = [e.uri for e in acc.storage.files("acc://climate/examples/", [".nc"])]
    assert said[0].startswith(f"{len(expected)} file(s)"), said
    assert "examples/coarse-cmip6/observations.nc" in said[0], said
    assert "results/" not in said[0], said


# -- a hostile author's words ---------------------------------------------------------------

TRACKED_FLOW = """
from pydantic import Field

from accelerator_prefect import Conf, Output, Secrets, jobflow, routine

SAYS = HOSTILE_WORDS


class TrackedConf(Conf):
    station: str = Field(default="alps", title="Station " + SAYS, description="Where " + SAYS)


@routine(name="measure " + SAYS)
def measure(conf: TrackedConf, output: Output) -> None:
    # A file the catalog names in a label: "http:/host/…" is a remote address to a browser.
    with output.open("![x](http:/127.0.0.1:9/pixel.png) <img src=x>.txt", "w") as f:
        f.write("measured")
    raise ValueError("the station refused " + SAYS)


@jobflow(name="tracked")
def tracked(conf: TrackedConf, secrets: Secrets, output: Output) -> None:
    measure(conf, output)
"""

TRACKED_MANIFEST = """
name: {name}
title: {title}
description: {description}
version: 1.0.0
jobflow: flows/tracked.py:tracked
owner: alice
project: climate
access:
  scope: project
secrets:
  TRACKER_KEY:
    description: {secret}
    required: false
"""


@pytest.fixture(scope="module")
def tracked(
    acc: Accelerator, tmp_path_factory: pytest.TempPathFactory, people: dict[str, str]
) -> str:
    """A model of alice's whose every word would load a tracking pixel, were it rendered as
    the author wrote it: its title, description, a setting's title and description, its
    secret's description, its routine's name and error, and the name of the file it writes."""
    import json

    from tests.test_form import HOSTILE

    name = f"tracked-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path_factory.mktemp("tracked"), name)
    repo.write("flows/tracked.py", TRACKED_FLOW.replace("HOSTILE_WORDS", repr(HOSTILE)))
    manifest = TRACKED_MANIFEST.format(
        name=name,
        title=json.dumps(f"Tracked {HOSTILE}"),  # JSON strings are YAML strings
        description=json.dumps(f"Counts visitors {HOSTILE}\n\nReally {HOSTILE}"),
        secret=json.dumps(f"Key of the tracker {HOSTILE}"),
    )
    repo.write(f"deployments/{name}.yaml", manifest)
    repo.commit("tracked 1.0.0")
    acc.publish(repo.manifest)
    return name


def test_an_authors_words_load_nothing_from_elsewhere_on_any_page(
    people: dict[str, str], tracked: str
) -> None:
    """The catalog, the model's page (full and as a widget in another site) and its run's
    page show the author's title and words, and nothing in them (Markdown, titles, labels,
    tooltips, captions) holds an image or an HTML tag a browser would fetch."""
    from tests.test_form import PIXEL, loads_nothing, markdown_shown

    def seen(at: AppTest) -> list[str]:
        assert not at.exception, at.exception
        shown = markdown_shown(at)
        loads_nothing(shown)
        return shown

    # The catalog's card: the title and the description's first line, shown as text.
    shown = seen(on_page(people["alice"], "catalog"))
    assert any(s.startswith("#### Tracked ") and PIXEL in s for s in shown), shown
    # (A card's line is plain text: links and images give their words only.)
    assert any(s.startswith("Counts visitors !x &lt;img") for s in shown), shown

    # The model's page: its title, description, the setting and the secret.
    at = on_page(people["alice"], "model", model=tracked)
    shown = seen(at)
    assert at.title[0].value.startswith("Tracked ") and PIXEL in at.title[0].value
    assert any(f"Really [image: x]({PIXEL})" in s for s in shown), shown  # About
    station = at.text_input(key=f"conf:{tracked}:1.0.0:.station")
    assert station.label.startswith("Station ") and PIXEL in station.label
    assert f"Where [image: x]({PIXEL})" in (station.help or "")
    secret = at.text_input(key=f"secret:{tracked}:1.0.0::TRACKER_KEY")
    assert (secret.help or "").startswith(f"Key of the tracker [image: x]({PIXEL}) &lt;img")

    # The same page as a widget in another site: one line of title, "About" behind it.
    widget = app(people["alice"], model=tracked)
    widget.context["is_embedded"] = True
    shown = seen(widget.run().switch_page("views/model.py").run())
    assert any(s.startswith("#### Tracked ") and PIXEL in s for s in shown), shown

    # Its run: the title, the model's error and routine, and the file it wrote.
    with Accelerator.connect(token=people["alice"]) as alice:
        run = alice.launch(tracked, conf={"station": "alps"})
        assert run.wait(timeout=180) == "Failed"
    at = on_page(people["alice"], "run", run=str(run.id))
    shown = seen(at)
    assert at.title[0].value.startswith("Tracked ") and PIXEL in at.title[0].value
    failed = next(e.value for e in at.error if e.value.startswith("The run failed: "))
    assert failed.startswith("The run failed: the station refused [image: x]"), failed
    assert any(s.startswith("Said by the model's routine **measure ") for s in shown), shown
    assert any("127.0.0.1:9/pixel.png" in e.label and ".txt" in e.label for e in at.expander)
