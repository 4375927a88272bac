"""The catalog in a real browser: Debian's Chromium, headless, driven by Playwright.

`acc up` serves the platform and the catalog; alice signs in, finds
climate-downscaling, picks its inputs in the file explorer, changes a setting,
launches, watches the run complete, previews an output and downloads a file.
bob does not see alice's private model; a guest with a link sees only the
linked model. Each step leaves a screenshot in ``test-artifacts/catalog/``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import free_port
from tests.conftest import ROOT, ModelRepo

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "catalog"
ACC = str(Path(sys.executable).parent / "acc")
STEP = 30_000  # ms a page may take to show what a step waits for
RUN = 180_000  # ms a climate run may take to complete

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


def acc_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ACC_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [ACC, *args], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`acc up` on a fresh home, with alice, bob and alice's private model."""
    home = tmp_path_factory.mktemp("catalog-e2e")
    port, catalog_port = free_port(), free_port()
    # The example emission-factor service on its default port (8610, below the range
    # free_port draws from): emissions-impact's default settings reach it.
    started = acc_cli(
        home,
        *("up", "--detach", "--port", str(port), "--catalog-port", str(catalog_port)),
        *("--portal-port", str(free_port())),
    )
    assert started.returncode == 0, started.stdout + started.stderr
    catalog = f"http://127.0.0.1:{catalog_port}"
    assert catalog in started.stdout
    try:
        with Accelerator.connect(f"http://127.0.0.1:{port}/api", home=home) as operator:
            _, alice = operator.add_user("alice", {"climate": "member", "demo": "author"})
            _, bob = operator.add_user("bob", {})
            operator.set_user_quota("bob", "600 KB")  # two of the sample files, not three
            private = ModelRepo(tmp_path_factory.mktemp("private"), "secret-echo").echo()
            private.write(
                "deployments/secret-echo.yaml",
                private.manifest.read_text()
                .replace("scope: project", "scope: private")
                .replace("title: Echo", "title: Alice's private echo"),
            )
            private.commit("private echo")
            operator.publish(private.manifest)
            link = operator.share_link("climate-downscaling")
        yield {
            "url": catalog,
            "api": f"http://127.0.0.1:{port}/api",
            "alice": alice,
            "bob": bob,
            "link": link.url,
            "home": home,
        }
    finally:
        acc_cli(home, "down")


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # This machine has no network but loopback: keep Chromium from trying.
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.iterdir():  # this module's; the error pages' test keeps its own
        if not old.name.startswith("errors-"):
            old.unlink()
    with launch_chromium() as chromium:
        yield chromium


def shot(page: Any, name: str, at: Any = None) -> None:
    """Keep what the screen shows (scrolled to ``at``) as ``<name>.png``.

    Not a full-page screenshot: resizing the window under Streamlit leaves its next
    drop-down list closed.
    """
    if at is not None:
        at.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser tab (a new session); on failure its screen is kept as an artifact."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, accept_downloads=True
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(STEP)
        return page

    yield make
    for i, context in enumerate(contexts):
        for page in context.pages:
            page.screenshot(path=str(ARTIFACTS / f"last-{request.node.name}-{i}.png"))
        context.close()


def sign_in(page: Any, url: str, user: str, token: str) -> None:
    page.goto(url)
    page.get_by_role("textbox", name="User name").fill(user)
    page.get_by_role("textbox", name="Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Model catalog").wait_for()


def test_alice_finds_fills_launches_watches_previews_and_downloads(
    served: dict[str, Any], new_page: Any, tmp_path: Path
) -> None:
    page = new_page()
    sign_in(page, served["url"], "alice", served["alice"])
    page.get_by_text("Climate downscaling").first.wait_for()
    page.get_by_text("Alice's private echo").first.wait_for()  # her own model
    shot(page, "01-catalog-alice")

    page.locator(".st-key-open-climate-downscaling button").click()
    page.get_by_role("heading", name="Climate downscaling", level=1).wait_for()
    page.get_by_role("heading", name="Your inputs").wait_for()
    shot(page, "02-model-page")

    # The explorer: a folder's name opens it (climate → examples → coarse-cmip6), a file's
    # name selects it: the two files.
    steps = ["climate/", "examples/", "coarse-cmip6/", "observations.nc"]
    for folder, inside in itertools.pairwise(steps):
        entry(page, folder).click()
        entry(page, inside).first.wait_for()
        settled(page)
    entry(page, "observations.nc").click()
    page.get_by_text(re.compile(r"^Selected: 1 file")).wait_for()
    settled(page)
    entry(page, "model_ssp245.nc").click()
    page.get_by_text(re.compile(r"^Selected: 2 file\(s\), [0-9.]+ KB$")).wait_for()
    shot(page, "03-inputs-picked", page.get_by_text(re.compile("^Selected:")))

    # Settings: the scenario and region, and a base year other than the default.
    choose(page, "Scenario", "SSP2-4.5 (middle of the road)")
    choose(page, "Target region", "Alps")
    base_year = (
        page.locator("[data-testid='stNumberInput']").filter(has_text="Base year").locator("input")
    )
    base_year.fill("2000")
    base_year.press("Tab")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stNumberInput] input')]"
        ".some(e => e.value === '2000')"
    )
    shot(page, "04-settings", page.get_by_role("button", name="Launch"))

    page.get_by_role("button", name="Launch").click()
    page.get_by_text(re.compile("Queued|Preparing the model|Running|Completed")).first.wait_for()
    shot(page, "05-run-live")
    page.get_by_role("heading", name="Outputs").wait_for(timeout=RUN)
    assert page.get_by_text("Completed").first.is_visible()
    shot(page, "06-run-completed")

    # The CSV summary is previewed as a table; the PNG map as an image.
    summary = output_box(page, "summary.csv")
    summary.locator("[data-testid='stDataFrame']").wait_for()
    quicklook = output_box(page, "quicklook.png")
    quicklook.locator("img").first.wait_for()
    shot(page, "07-previews", summary)

    with page.expect_download() as download:
        summary.get_by_role("button", name="Download", exact=True).click()
    saved = tmp_path / "summary.csv"
    download.value.save_as(saved)
    header = saved.read_text().splitlines()[0]
    assert "region" in header.lower(), header

    # The run ran what the form said: the two files picked and the base year typed.
    run_id = re.search(r"[?&]run=([0-9a-f-]+)", page.url)
    assert run_id, page.url
    with Accelerator.connect(served["api"], home=served["home"], token=served["alice"]) as alice:
        ran = alice.run(run_id.group(1)).parameters
    assert ran["conf"]["base_year"] == 2000 and ran["conf"]["scenario"] == "ssp245"
    assert sorted(ran["inputs"]["selected_files"]) == [
        "acc://climate/examples/coarse-cmip6/model_ssp245.nc",
        "acc://climate/examples/coarse-cmip6/observations.nc",
    ]


def output_box(page: Any, name: str) -> Any:
    """The fold of the run page holding output ``name`` (by its heading, not the logs')."""
    return page.locator("[data-testid='stExpander']").filter(
        has=page.locator("summary", has_text=re.compile(rf"^\S*{re.escape(name)} ·"))
    )


def settled(page: Any) -> None:
    """Wait until Streamlit has finished redrawing: no element of the last run left stale."""
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")


def entry(page: Any, name: str) -> Any:
    """The explorer's name button of the file ``name`` (it selects it) or the folder
    ``name/`` (it opens it)."""
    return page.locator("[data-testid='stButton'] button").filter(
        has_text=re.compile(rf"(^|\s|folder|draft){re.escape(name)}$"), visible=True
    )


def check_box(page: Any, name: str) -> Any:
    """The explorer's check box selecting the file or folder ``name`` (the first button of
    its row)."""
    row = page.locator("[data-testid='stHorizontalBlock']").filter(has=entry(page, name))
    return row.last.locator("button").first


def choose(page: Any, label: str, option: str, click: Any = None) -> None:
    """Pick ``option`` in the select box labelled ``label`` (a required one ends with *),
    with ``click`` (one that counts them, say) or a plain click."""
    click = click or (lambda target: target.click())
    box = page.locator("[data-testid='stSelectbox']").filter(has_text=re.compile(f"^{label}"))
    settled(page)
    combo = box.get_by_role("combobox")
    click(combo)
    combo.press("ArrowDown")  # a click alone does not always open the list
    click(page.get_by_role("option", name=option, exact=True))
    settled(page)
    assert box.get_by_role("combobox").input_value() == option


def test_bob_does_not_see_alices_private_model(served: dict[str, Any], new_page: Any) -> None:
    page = new_page()
    sign_in(page, served["url"], "bob", served["bob"])
    page.get_by_text("Climate downscaling").first.wait_for()  # public: he sees it
    assert page.get_by_text("Alice's private echo").count() == 0
    shot(page, "08-catalog-bob")
    wait_for_session_cookie(page)
    # An address opened afresh finds him still signed in, on the page it names.
    page.goto(served["url"] + "/model?model=secret-echo")
    page.get_by_text("not found").first.wait_for()
    assert page.get_by_text("Alice's private echo").count() == 0
    shot(page, "09-private-model-not-found")

    # bob is in no project: he brings his own files, into his own folder.
    page.goto(served["url"] + "/model?model=climate-downscaling")
    page.get_by_role("heading", name="Your inputs").wait_for()
    page.get_by_text("Upload files from your computer").click()
    sample = ROOT / "examples" / "data" / "climate" / "coarse-cmip6"
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        [str(sample / "observations.nc"), str(sample / "model_ssp245.nc")]
    )
    page.get_by_role("button", name="Upload and select").click()
    page.get_by_text(re.compile(r"^Selected: 2 file\(s\)")).wait_for()
    page.get_by_text("acc://users/bob/uploads/observations.nc").first.wait_for()
    shot(page, "10-bob-uploaded", page.get_by_text(re.compile("^Selected:")))

    # His own area holds 600 KB at most: a third file is refused, saying why and what to do.
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        [str(sample / "model_ssp585.nc")]
    )
    page.get_by_role("button", name="Upload and select").click()
    refusal = page.get_by_text(re.compile(r"^model_ssp585\.nc was not uploaded: "))
    refusal.wait_for()
    said = refusal.inner_text()
    assert "bob's own area" in said and "quota of 600 KB" in said and "515.1 KB stored" in said
    assert "ask an operator" in said
    shot(page, "10b-bob-over-his-quota", refusal)


def test_a_guest_with_a_link_sees_only_that_model(served: dict[str, Any], new_page: Any) -> None:
    page = new_page()
    page.goto(served["link"])
    page.get_by_role("heading", name="Climate downscaling").wait_for()
    page.get_by_role("heading", name="Your inputs").wait_for()
    assert page.get_by_text("My runs").count() == 0
    assert page.get_by_text("Alice's private echo").count() == 0
    shot(page, "11-guest-link")
    page.goto(served["link"] + "&embed=true")
    page.get_by_role("heading", name="Climate downscaling").wait_for()
    assert page.get_by_role("button", name="Sign out").count() == 0  # no sidebar when embedded
    shot(page, "12-guest-embedded")


def signed_out(page: Any) -> bool:
    """Whether the page shows the sign-in form (once the page has settled on either)."""
    form = page.get_by_role("textbox", name="User name")
    form.or_(page.get_by_role("button", name="Sign out")).first.wait_for()
    return bool(form.count())


def session_cookie(context: Any) -> dict[str, Any] | None:
    return next((c for c in context.cookies() if c["name"] == "acc_session"), None)


def wait_for_session_cookie(page: Any, not_this: dict[str, Any] | None = None) -> dict[str, Any]:
    """The session cookie the page's sign-in gave the browser (a new one, not ``not_this``)."""
    import time

    deadline = time.monotonic() + 30
    while (cookie := session_cookie(page.context)) in (None, not_this):
        assert time.monotonic() < deadline, "the browser was not given a session cookie"
        page.wait_for_timeout(100)
    assert cookie is not None
    return cookie


def test_a_signed_in_browser_stays_signed_in_until_it_signs_out(
    served: dict[str, Any], browser: Any, new_page: Any
) -> None:
    import time

    import httpx

    from accelerator_prefect.directory import token_id

    with Accelerator.connect(served["api"], home=served["home"]) as operator:
        _, token = operator.add_user("carla", {"climate": "member"})

    page = new_page()
    sign_in(page, served["url"], "carla", token)
    kept = wait_for_session_cookie(page)
    assert kept["httpOnly"] and kept["sameSite"] == "Lax"
    assert kept["expires"] == -1  # not remembered: until the browser closes
    assert token not in kept["value"] and token_id(token) is not None

    # A reload, and a new tab opened on a page's address, find carla signed in.
    page.reload()
    assert not signed_out(page)
    tab = page.context.new_page()
    tab.goto(f"{served['url']}/my-runs")
    tab.get_by_role("heading", name="My runs").wait_for()
    assert not signed_out(tab)
    shot(tab, "10-new-tab-signed-in")

    # A browser holding a forged or altered cookie is not signed in by it.
    other = new_page()
    other.context.add_cookies(
        [{"name": "acc_session", "value": kept["value"][:-2] + "xx", "url": served["url"]}]
    )
    other.goto(served["url"])
    assert signed_out(other)

    # The routes keep sessions only for the catalog's own pages, and only fresh ones.
    route = f"{served['url']}/_acc/session"
    assert httpx.post(route, content=kept["value"], timeout=10).status_code == 403
    evil = {"Origin": "https://evil.example.com"}
    assert httpx.post(route, content=kept["value"], headers=evil, timeout=10).status_code == 403
    own = {"Origin": served["url"]}
    assert httpx.post(route, content="forged", headers=own, timeout=10).status_code == 400

    # "Remember me" keeps the session for weeks; "Everywhere" ends every session.
    remembered = new_page()
    remembered.goto(served["url"])
    remembered.get_by_role("textbox", name="User name").fill("carla")
    remembered.get_by_role("textbox", name="Token").fill(token)
    remembered.get_by_text("Remember me on this device").click()
    remembered.get_by_role("button", name="Sign in").click()
    remembered.get_by_role("heading", name="Model catalog").wait_for()
    weeks = wait_for_session_cookie(remembered)
    assert weeks["expires"] > time.time() + 29 * 86400
    remembered.get_by_role("button", name="Everywhere").click()
    remembered.get_by_role("textbox", name="User name").wait_for()
    page.reload()
    assert signed_out(page)  # the first browser too
    shot(page, "11-signed-out-everywhere")
    remembered.reload()
    assert signed_out(remembered)

    # Signing in again works, and revoking the token ends that session as well.
    ended = session_cookie(page.context)
    sign_in(page, served["url"], "carla", token)
    wait_for_session_cookie(page, not_this=ended)
    page.reload()
    assert not signed_out(page)
    with Accelerator.connect(served["api"], home=served["home"]) as operator:
        operator.revoke_token(str(token_id(token)))
    page.reload()
    assert signed_out(page)


class Clicks:
    """Clicks a person makes, counted."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, target: Any) -> None:
        target.click()
        self.count += 1


def test_a_first_time_member_reaches_a_completed_climate_run_and_downloads_it_all(
    served: dict[str, Any], new_page: Any
) -> None:
    """Issue 18's measure: the clicks from the catalog (after sign-in) to a Completed
    climate run with the sample inputs, and the seconds from Launch to the run page's
    first phase; reported in ``report.json``, not asserted. Then "Download all": the zip
    holds the run's outputs, for its launcher only."""
    import json
    import time

    with Accelerator.connect(served["api"], home=served["home"]) as operator:
        _, token = operator.add_user("erin", {"climate": "member"})
    page = new_page()
    sign_in(page, served["url"], "erin", token)
    opened = time.perf_counter()
    click = Clicks()

    click(page.locator(".st-key-open-climate-downscaling button"))
    page.get_by_role("heading", name="Your inputs").wait_for()
    settled(page)
    samples = page.get_by_role("button", name="Use the sample inputs")
    if samples.count():
        click(samples)
        how = "the 'Use the sample inputs' button"
    else:  # the explorer: climate → examples, then tick the samples' folder
        how = "the explorer: open climate/, open examples/, tick coarse-cmip6/"
        for folder, inside in itertools.pairwise(["climate/", "examples/", "coarse-cmip6/"]):
            click(entry(page, folder))
            entry(page, inside).first.wait_for()
            settled(page)
        click(check_box(page, "coarse-cmip6/"))
    page.get_by_text(re.compile(r"^Selected: ")).first.wait_for()
    settled(page)
    # The one choice without a default: the region's (Alps) is kept.
    choose(page, "Scenario", "SSP2-4.5 (middle of the road)", click)

    launched = time.perf_counter()
    click(page.get_by_role("button", name="Launch"))
    page.get_by_text(re.compile("Queued|Preparing the model|Running")).first.wait_for()
    first_phase = time.perf_counter() - launched
    page.get_by_role("heading", name="Outputs").wait_for(timeout=RUN)
    assert page.get_by_text("Completed").first.is_visible()
    completed = time.perf_counter() - opened
    shot(page, "13-first-time-member-completed")
    report = {
        "clicks_after_sign_in": click.count,
        "samples_chosen_with": how,
        "catalog_to_completed_seconds": round(completed, 1),
        "launch_to_first_phase_seconds": round(first_phase, 2),
    }
    (ARTIFACTS / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nfirst-time member, measured in Chromium: {json.dumps(report)}")

    run_id = re.search(r"[?&]run=([0-9a-f-]+)", page.url)
    assert run_id, page.url
    downloads_all(served, run_id.group(1), token, wait_for_session_cookie(page), new_page)


def run_with_samples(page: Any, model: str, click: Clicks) -> None:
    """Open ``model`` from the catalog, take its sample inputs and launch it with its
    default settings; wait for the run page's outputs and its Completed state."""
    click(page.locator(f".st-key-open-{model} button"))
    page.get_by_role("heading", name="Your inputs").wait_for()
    settled(page)
    click(page.get_by_role("button", name="Use the sample inputs"))
    page.get_by_text(re.compile(r"^Selected: ")).first.wait_for()
    settled(page)


def opened_preview(page: Any, box: Any) -> None:
    """Open an output's fold and turn on its preview (made only when asked for). A click
    that lands while the page redraws (the run page's last refresh) is lost: click again
    until the switch is on."""
    import time

    from playwright.sync_api import expect

    box.locator("summary").click()
    switch = box.locator("input[type='checkbox']")
    deadline = time.monotonic() + 60
    while not switch.is_checked():
        assert time.monotonic() < deadline, "the Preview switch does not turn on"
        settled(page)
        box.get_by_text("Preview", exact=True).click()
        with contextlib.suppress(AssertionError):
            expect(switch).to_be_checked(timeout=5000)
    settled(page)


def launched(page: Any, click: Clicks) -> None:
    click(page.get_by_role("button", name="Launch"))
    page.get_by_text(re.compile("Queued|Preparing the model|Running")).first.wait_for()
    page.get_by_role("heading", name="Outputs").wait_for(timeout=RUN)
    assert page.get_by_text("Completed").first.is_visible()


def test_emissions_impact_runs_from_the_catalog_with_its_samples_and_its_key(
    served: dict[str, Any], new_page: Any
) -> None:
    """The example with a secret: the key of the factor service `acc up` serves goes into
    the password field, and the run uses it (the service answers nobody else) without the
    key reaching the run's page."""
    key = (served["home"] / "factor-service.key").read_text().strip()
    page = new_page()
    sign_in(page, served["url"], "alice", served["alice"])
    click = Clicks()
    run_with_samples(page, "emissions-impact", click)
    page.get_by_text("Credentials").first.wait_for()
    box = page.get_by_role("textbox", name="FACTOR_API_KEY *", exact=True)
    box.fill(key)
    box.press("Enter")  # Streamlit takes a typed value on Enter
    page.get_by_text("Press Enter to apply").wait_for(state="detached")
    settled(page)
    launched(page, click)
    assert click.count <= 3
    shot(page, "20-emissions-impact-completed")

    emissions = output_box(page, "emissions.csv")
    emissions.locator("[data-testid='stDataFrame']").wait_for()
    output_box(page, "concentration_map.png").locator("img").first.wait_for()
    report = output_box(page, "report.md")
    opened_preview(page, report)
    report.get_by_text(re.compile("CO2|CO₂")).first.wait_for(timeout=90_000)
    shot(page, "21-emissions-impact-previews", emissions)
    assert key not in page.content()

    run_id = re.search(r"[?&]run=([0-9a-f-]+)", page.url)
    assert run_id, page.url
    with Accelerator.connect(served["api"], home=served["home"], token=served["alice"]) as alice:
        run = alice.run(run_id.group(1))
        assert key not in json.dumps(run.parameters)
        assert not any(key in line for line in run.logs())


def test_geotiff_to_cog_runs_from_the_catalog_and_previews_its_overviews(
    served: dict[str, Any], new_page: Any
) -> None:
    page = new_page()
    sign_in(page, served["url"], "alice", served["alice"])
    click = Clicks()
    run_with_samples(page, "geotiff-to-cog", click)
    launched(page, click)
    assert click.count <= 3
    shot(page, "22-geotiff-to-cog-completed")

    table = output_box(page, "cogs.csv")
    table.locator("[data-testid='stDataFrame']").wait_for()
    run_id = re.search(r"[?&]run=([0-9a-f-]+)", page.url)
    assert run_id, page.url
    with Accelerator.connect(served["api"], home=served["home"], token=served["alice"]) as alice:
        cogs = [f.path for f in alice.run(run_id.group(1)).outputs() if f.path.endswith(".tif")]
    assert cogs
    cog = output_box(page, cogs[0])
    opened_preview(page, cog)
    cog.locator("img").first.wait_for(timeout=90_000)
    cog.get_by_text(re.compile("overview", re.IGNORECASE)).first.wait_for()
    shot(page, "23-geotiff-to-cog-preview", cog)


def downloads_all(
    served: dict[str, Any], run_id: str, token: str, cookie: dict[str, Any], new_page: Any
) -> None:
    """The catalog's "Download all" route, over real HTTP with the browser's cookie."""
    import io
    import zipfile

    import httpx

    route = f"{served['url']}/_acc/runs/{run_id}/outputs.zip"
    with httpx.stream("GET", route, cookies={cookie["name"]: cookie["value"]}, timeout=60) as got:
        assert got.status_code == 200, got.read()
        assert got.headers["content-type"] == "application/zip"
        assert "content-length" not in got.headers  # made while it is sent
        body = b"".join(got.iter_bytes())
    archive = zipfile.ZipFile(io.BytesIO(body))
    with Accelerator.connect(served["api"], home=served["home"], token=token) as erin:
        run = erin.run(run_id)
        outputs = {f.path for f in run.outputs()}
        assert sorted(archive.namelist()) == sorted(outputs) and outputs
        for name in outputs:
            with run.open_output(name) as f:
                assert archive.read(name) == f.read(), name

    # No cookie: sign in first. Someone else's, or no such run: nothing to tell them apart.
    assert httpx.get(route, timeout=30).status_code == 401
    bob = new_page()
    sign_in(bob, served["url"], "bob", served["bob"])
    bobs = wait_for_session_cookie(bob)
    as_bob = httpx.get(route, cookies={bobs["name"]: bobs["value"]}, timeout=30)
    nowhere = httpx.get(
        route.replace(run_id, "00000000-0000-4000-8000-000000000000"),
        cookies={cookie["name"]: cookie["value"]},
        timeout=30,
    )
    assert as_bob.status_code == nowhere.status_code == 404
    assert as_bob.content == nowhere.content
