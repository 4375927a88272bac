"""The two pages docs/integrators.md shows, in Debian's Chromium (headless, Playwright):
``embed.html`` puts the catalog's launch form into another site with the ``<iframe>`` that
``acc share --embed`` prints; ``launch.html`` launches a run with ``fetch`` from another
origin, which the portal admits by ``ACC_PORTAL_CORS_ORIGINS`` and the browser refuses for
any other origin.

The pages are served as they are in ``docs/examples/`` (only their placeholders replaced)
by loopback HTTP servers on ports of their own: other origins than the catalog's and the
portal's. In the widget, a guest also cancels a running run with the run page's "Cancel
run" and watches it end Cancelled, and runs the climate example in a 600×700 frame: a
one-line header, the inputs first, Launch in view without scrolling once the sample inputs
are chosen, and "Starting…" at once after Launch. Screenshots go to
``test-artifacts/embedding/``.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from accelerator_prefect import Accelerator
from accelerator_prefect.bundled import seed_example_data
from accelerator_prefect.cli import app as acc_app
from accelerator_prefect.client import embed_snippet
from accelerator_prefect.platform import (
    PlatformInfo,
    free_port,
    start_catalog,
    start_portal,
    stop_process,
)
from tests.conftest import ROOT, ModelRepo
from tests.test_catalog_ui import SLEEPY_FLOW, SLEEPY_MANIFEST
from tests.test_launch import bundled_example, count_runs

CHROMIUM = "/usr/bin/chromium"
DOC = ROOT / "docs" / "integrators.md"
EXAMPLES = ROOT / "docs" / "examples"
ARTIFACTS = ROOT / "test-artifacts" / "embedding"
STEP = 30_000  # ms a page may take to show what a step waits for
RUN = 120_000  # ms an echo run may take to complete
CLIMATE_RUN = 180_000  # ms a climate run may take to complete
WIDGET = {"width": 600, "height": 700}  # the smallest widget the catalog is made to fit
# What the pages hold until an integrator (or this test) puts in their own.
PLACEHOLDER_LINK = "https://catalog.example.org/?model=climate-downscaling&link=accl_YOUR-LINK"


# -- the doc shows exactly the files tested ------------------------------------------------------


@pytest.mark.parametrize("name", ["embed.html", "launch.html"])
def test_the_doc_shows_each_example_page_in_full(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    assert f"```html\n{text}```\n" in DOC.read_text(), f"docs/integrators.md lacks {name} as is"


def test_the_embed_page_holds_the_iframe_acc_share_prints() -> None:
    snippet = embed_snippet(PLACEHOLDER_LINK, "Climate downscaling")
    assert snippet in (EXAMPLES / "embed.html").read_text()


# -- the platform, the pages' servers, the browser ------------------------------------------------


@dataclass
class PageServer:
    """A loopback HTTP server of a few pages: an origin of its own."""

    origin: str
    pages: dict[str, str]
    stop: Callable[[], None]


def serve(pages: dict[str, str]) -> PageServer:
    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            text = pages.get(self.path.lstrip("/").split("?")[0])
            if text is None:
                self.send_error(404)
                return
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return PageServer(f"http://127.0.0.1:{server.server_port}", pages, stop)


@pytest.fixture(scope="module")
def site() -> Iterator[PageServer]:
    """The integrator's site: the origin the portal admits."""
    server = serve({})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[PageServer]:
    """Another site, which the portal does not admit."""
    server = serve({})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo_model(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> str:
    repo = ModelRepo(tmp_path_factory.mktemp("embed-echo"), f"echo-{uuid.uuid4().hex[:8]}").echo()
    repo.commit("echo 1.0.0")
    acc.publish(repo.manifest)
    return repo.name


@pytest.fixture(scope="module")
def sleepy_model(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model whose runs sleep five minutes unless cancelled."""
    name = f"sleepy-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path_factory.mktemp("embed-sleepy"), name)
    repo.write("flows/sleepy.py", SLEEPY_FLOW)
    repo.write(f"deployments/{name}.yaml", SLEEPY_MANIFEST.format(name=name))
    repo.commit("sleepy 1.0.0")
    acc.publish(repo.manifest)
    return name


@pytest.fixture(scope="module")
def climate_model(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled climate example (sections, an "Advanced settings" fold, sample inputs)."""
    repo = bundled_example(tmp_path_factory.mktemp("embed-climate"), "climate-downscaling")
    seed_example_data(acc.storage)
    acc.publish(repo.manifest)
    return repo.name


@pytest.fixture(scope="module")
def portal(platform: PlatformInfo, site: PageServer) -> Iterator[str]:
    """The portal, admitting the integrator's site (and it alone) to call it from a browser."""
    env = {"ACC_PORTAL_CORS_ORIGINS": json.dumps([site.origin])}
    pid, url = start_portal(platform.home, platform.api_url, free_port(), env=env)
    yield url
    stop_process(pid)


@pytest.fixture(scope="module")
def catalog(platform: PlatformInfo) -> Iterator[str]:
    pid, url = start_catalog(platform.home, platform.api_url, free_port())
    yield url
    stop_process(pid)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
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
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """A fresh browser tab (1300×1100 unless ``viewport`` says); its last screen is kept as
    an artifact."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None) -> Any:
        context = browser.new_context(viewport=viewport or {"width": 1300, "height": 1100})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(STEP)
        return page

    yield make
    for i, context in enumerate(contexts):
        for page in context.pages:
            page.screenshot(path=str(ARTIFACTS / f"last-{request.node.name}-{i}.png"))
        context.close()


def shared_by_cli(platform: PlatformInfo, model: str, catalog: str) -> str:
    """The ``<iframe>`` that `acc share MODEL --embed` prints, its links at ``catalog``."""
    result = CliRunner().invoke(
        acc_app,
        ["--api-url", platform.api_url, "share", model, "--embed"],
        env={"COLUMNS": "200", "ACC_CATALOG_URL": catalog},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    return out[out.index("<iframe") : out.index("</iframe>") + len("</iframe>")]


def runs_of(platform: PlatformInfo, model: str) -> int:
    """How many runs ``model`` has, counted off this thread: Playwright's loop runs on it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(count_runs, platform.api_url, f"{model}@1.0.0").result()


def frame_src(snippet: str) -> str:
    found = re.search(r'<iframe src="([^"]+)"', snippet)
    assert found, snippet
    return found.group(1)


# -- embed.html ----------------------------------------------------------------------------------


def test_the_embed_page_shows_the_launch_form_and_runs_it_inside_the_frame(
    platform: PlatformInfo,
    catalog: str,
    echo_model: str,
    site: PageServer,
    new_page: Callable[[], Any],
) -> None:
    snippet = shared_by_cli(platform, echo_model, catalog)
    src = frame_src(snippet)
    assert src.startswith(catalog + "/?") and parse_qs(urlsplit(src).query)["embed"] == ["true"]
    # The page as the doc shows it, with the iframe the CLI printed for this catalog.
    placeholder = embed_snippet(PLACEHOLDER_LINK, "Climate downscaling")
    site.pages["embed.html"] = (EXAMPLES / "embed.html").read_text().replace(placeholder, snippet)

    page = new_page()
    page.goto(f"{site.origin}/embed.html")
    page.get_by_role("heading", name="Downscale your climate data").wait_for()
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="Echo").wait_for()
    frame.get_by_text("Says what you ask, louder.").first.wait_for()
    launch = frame.get_by_role("button", name="Launch")
    launch.wait_for()
    # Embedded: no sidebar, no sign-out, no Streamlit menu.
    assert frame.get_by_role("button", name="Sign out").count() == 0
    assert frame.get_by_text("Guest of").count() == 0
    page.screenshot(path=str(ARTIFACTS / "01-embed-form.png"))

    # The sandbox lets the widget do its work: launch, follow the run to its end.
    launch.click()
    frame.get_by_text("Completed").first.wait_for(timeout=RUN)
    frame.get_by_role("button", name="Run again with these settings").wait_for()
    assert page.url == f"{site.origin}/embed.html"  # the frame moved, the page did not
    page.screenshot(path=str(ARTIFACTS / "02-embed-run-completed.png"))


def test_a_guest_cancels_a_run_in_the_widget_and_watches_it_end_cancelled(
    platform: PlatformInfo,
    catalog: str,
    sleepy_model: str,
    site: PageServer,
    new_page: Callable[[], Any],
) -> None:
    snippet = shared_by_cli(platform, sleepy_model, catalog)
    site.pages["sleepy.html"] = f"<!doctype html><title>Sleepy</title>{snippet}"
    page = new_page()
    page.goto(f"{site.origin}/sleepy.html")
    frame = page.frame_locator("iframe")
    frame.get_by_role("button", name="Launch").click()
    running = re.compile(r"^Running( routine \d+( of \d+)?)?…")
    frame.get_by_text(running).first.wait_for(timeout=RUN)
    cancel = frame.get_by_role("button", name="Cancel run")
    cancel.click()
    # The live part of the page follows the run: Cancelling (for as long as its worker
    # takes to stop it: a warm worker often less than one look), then Cancelled, and
    # no button.
    frame.get_by_text(re.compile(r"^Cancell(ing…|ed)")).first.wait_for(timeout=STEP)
    cancel.wait_for(state="detached")  # once the live part has redrawn
    page.screenshot(path=str(ARTIFACTS / "03-widget-cancelling.png"))
    frame.get_by_role("heading", name="Outputs").wait_for(timeout=RUN)
    frame.get_by_text("Cancelled").first.wait_for()
    frame.get_by_text("Cancelled: its routines were stopped").wait_for()
    assert frame.get_by_text("Not cancelled").count() == 0
    assert frame.get_by_text("routine(s) failed").count() == 0  # stopped, not failed
    page.screenshot(path=str(ARTIFACTS / "04-widget-cancelled.png"))


def widget_frame(page: Any) -> Any:
    """The Frame of the page's one iframe (to measure and evaluate in, as well as to find)."""
    frame = page.locator("iframe").element_handle().content_frame()
    assert frame is not None
    return frame


def settled(frame: Any) -> None:
    """Wait until Streamlit has finished redrawing: no element of the last run left stale."""
    frame.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")


def choose(frame: Any, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label``."""
    box = frame.locator("[data-testid='stSelectbox']").filter(has_text=re.compile(f"^{label}"))
    settled(frame)
    combo = box.get_by_role("combobox")
    combo.click()
    combo.press("ArrowDown")  # a click alone does not always open the list
    frame.get_by_role("option", name=option, exact=True).click()
    settled(frame)
    assert box.get_by_role("combobox").input_value() == option


WATCH_FOR_STARTING = """() => {
    window.accStartingAfter = null;
    let pressed = null;
    document.addEventListener("pointerdown", () => { pressed ??= performance.now(); }, true);
    const shown = () => document.body.textContent.includes("Starting…");
    new MutationObserver((_, observer) => {
        if (pressed !== null && shown()) {
            window.accStartingAfter = performance.now() - pressed;
            observer.disconnect();
        }
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""
"""Installed in the widget before Launch is pressed: ``window.accStartingAfter`` becomes the
milliseconds from the press to the first time the page shows "Starting…"."""


def scrolled(frame: Any) -> int:
    """How far anything in the frame is scrolled down, in pixels."""
    return int(
        frame.evaluate(
            "() => Math.max(0, ...[...document.querySelectorAll('*')].map(e => e.scrollTop))"
        )
    )


def test_the_climate_widget_fits_600_by_700_and_says_starting_at_once(
    platform: PlatformInfo,
    catalog: str,
    climate_model: str,
    site: PageServer,
    new_page: Callable[..., Any],
) -> None:
    snippet = shared_by_cli(platform, climate_model, catalog)
    sized = snippet.replace('width="100%" height="900"', 'width="600" height="700"')
    assert sized != snippet
    site.pages["widget.html"] = (
        f'<!doctype html><title>Widget</title><body style="margin:0">{sized}</body>'
    )
    page = new_page(WIDGET)
    page.goto(f"{site.origin}/widget.html")
    frame = widget_frame(page)
    launch = frame.get_by_role("button", name="Launch")
    launch.wait_for()
    settled(frame)

    # A one-line header: the title and "About"; no version picker, no badges for a guest.
    title = frame.get_by_role("heading", name="Climate downscaling")
    heading = title.bounding_box()
    assert heading["y"] + heading["height"] < 100, heading
    assert frame.locator("[data-testid='stSelectbox']").filter(has_text="Version").count() == 0
    assert frame.get_by_text("Public", exact=True).count() == 0
    frame.get_by_role("button", name="About").click()
    frame.get_by_text("Statistical downscaling of a coarse").first.wait_for()
    frame.get_by_text("Version 1.0.0").first.wait_for()
    page.keyboard.press("Escape")
    frame.get_by_text("Statistical downscaling of a coarse").first.wait_for(state="hidden")

    # The inputs first, then the settings, then Launch.
    samples = frame.get_by_role("button", name="Use the sample inputs")
    scenario = frame.locator("[data-testid='stSelectbox']").filter(has_text="Scenario")
    tops = [samples.bounding_box()["y"], scenario.bounding_box()["y"], launch.bounding_box()["y"]]
    assert tops == sorted(tops) and tops[0] < 200, tops

    # With the sample inputs chosen, Launch is in view without scrolling.
    samples.click()
    frame.get_by_text("acc://climate/examples/coarse-cmip6/").first.wait_for()
    frame.get_by_text(re.compile(r"^5 file\(s\)")).first.wait_for()
    settled(frame)
    page.mouse.move(0, 0)  # no tooltip over the form in the screenshot
    assert scrolled(frame) == 0
    box = launch.bounding_box()
    assert box is not None and box["y"] >= 0, box
    assert box["y"] + box["height"] <= WIDGET["height"], box
    page.screenshot(path=str(ARTIFACTS / "07-widget-600x700-samples-chosen.png"))
    measured = {
        "launch_button_top_px": round(box["y"]),
        "launch_button_bottom_px": round(box["y"] + box["height"]),
    }

    choose(frame, "Scenario", "SSP2-4.5 (middle of the road)")
    choose(frame, "Target region", "Alps")
    frame.get_by_role("button", name="Launch", disabled=False).wait_for()
    assert scrolled(frame) == 0
    box = launch.bounding_box()
    assert box is not None and box["y"] + box["height"] <= WIDGET["height"], box
    page.screenshot(path=str(ARTIFACTS / "08-widget-600x700-ready.png"))

    # "Starting…" at once, before the launch's round trip ends; then the run's first phase.
    # The page itself notes when it first shows the words: they may be gone again before a
    # poll from here sees them, once the run page follows quickly.
    assert frame.get_by_text("Starting…").count() == 0
    frame.evaluate(WATCH_FOR_STARTING)
    clicked = time.monotonic()
    launch.click()
    try:
        frame.wait_for_function("() => window.accStartingAfter !== null")
    except Exception as exc:  # say what the widget showed instead
        page.screenshot(path=str(ARTIFACTS / "09-widget-600x700-no-starting.png"))
        shown = frame.locator("body").inner_text()[:800]
        raise AssertionError(f"no 'Starting…' after Launch; the widget shows:\n{shown}") from exc
    starting = frame.evaluate("() => window.accStartingAfter") / 1000
    frame.get_by_text(re.compile(r"^(Queued|Submitting|Preparing|Running)")).first.wait_for()
    first_phase = time.monotonic() - clicked
    page.screenshot(path=str(ARTIFACTS / "09-widget-600x700-run.png"))
    measured |= {
        "launch_to_starting_s": round(starting, 2),
        "launch_to_first_phase_s": round(first_phase, 2),
    }
    (ARTIFACTS / "widget-600x700.json").write_text(json.dumps(measured, indent=2) + "\n")
    assert starting <= 1.0, starting
    frame.get_by_role("button", name="Run again with these settings").wait_for(timeout=CLIMATE_RUN)
    frame.get_by_text("Completed").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "10-widget-600x700-completed.png"))


# -- launch.html ---------------------------------------------------------------------------------


def launch_page(
    server: PageServer,
    page: Any,
    portal: str,
    token: str,
    model: str,
    conf: str = '{"message": "hi", "repeat": 2}',
) -> tuple[str, str]:
    """Open launch.html as the doc shows it on ``server``, fill it in, press Launch; return
    the state and the result it ends showing."""
    server.pages["launch.html"] = (EXAMPLES / "launch.html").read_text()
    page.goto(f"{server.origin}/launch.html")
    page.get_by_label("Portal").fill(portal)
    page.get_by_label("Token").fill(token)
    page.get_by_label("Model").fill(model)
    page.get_by_label("Settings (JSON)").fill(conf)
    page.get_by_label("Inputs").fill("")  # echo takes none
    page.get_by_role("button", name="Launch").click()
    state = page.locator("#state")
    state.filter(has_text=re.compile("^(Completed|Failed|Crashed|Cancelled|failed)$")).wait_for(
        timeout=RUN
    )
    return state.inner_text(), page.locator("#result").inner_text()


def test_the_launch_page_runs_a_model_from_an_admitted_origin_and_shows_the_result(
    platform: PlatformInfo,
    acc: Accelerator,
    portal: str,
    echo_model: str,
    site: PageServer,
    new_page: Callable[[], Any],
) -> None:
    link = acc.share_link(echo_model)  # the page works with a link's token as with a personal one
    assert link.token is not None
    page = new_page()
    state, result = launch_page(site, page, portal, link.token, echo_model)
    assert state == "Completed", (state, result)
    assert json.loads(result) == {"code": "v1", "text": "HI HI"}
    page.screenshot(path=str(ARTIFACTS / "05-launch-completed.png"))


def test_the_launch_page_shows_every_refused_field_and_launches_nothing(
    platform: PlatformInfo,
    acc: Accelerator,
    portal: str,
    echo_model: str,
    site: PageServer,
    new_page: Callable[[], Any],
) -> None:
    _, token = acc.add_user(f"web-{uuid.uuid4().hex[:6]}", {"demo": "member"})
    before = runs_of(platform, echo_model)
    page = new_page()
    conf = '{"repeat": 3000, "message": 1}'
    state, result = launch_page(site, page, portal, token, echo_model, conf)
    assert state == "failed", (state, result)
    assert "conf.repeat: 3000 is greater than the maximum of 10" in result, result
    assert "conf.message" in result, result
    assert runs_of(platform, echo_model) == before


def test_the_launch_page_from_an_origin_not_admitted_is_refused_by_the_browser(
    platform: PlatformInfo,
    acc: Accelerator,
    portal: str,
    echo_model: str,
    elsewhere: PageServer,
    new_page: Callable[[], Any],
) -> None:
    _, token = acc.add_user(f"web-{uuid.uuid4().hex[:6]}", {"demo": "member"})
    before = runs_of(platform, echo_model)
    page = new_page()
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text))
    state, result = launch_page(elsewhere, page, portal, token, echo_model)
    assert state == "failed", (state, result)
    assert "did not answer this page" in result and elsewhere.origin in result, result
    assert any("CORS policy" in text for text in refusals), refusals
    page.screenshot(path=str(ARTIFACTS / "06-launch-refused.png"))
    # The browser stopped at the preflight: the launch never reached the portal.
    assert runs_of(platform, echo_model) == before


# -- guests of one link --------------------------------------------------------------------------


def guest_cookie(page: Any, deadline_s: float = 30.0) -> dict[str, Any]:
    """The cookie in which the catalog has the browser keep which guest it is."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = [c for c in page.context.cookies() if c["name"].startswith("acc_guest_")]
        if found:
            return dict(found[0])
        page.wait_for_timeout(200)  # the page's own fetch stores it: look again shortly
    raise AssertionError("the catalog never had the browser keep its guest session")


def test_two_guests_of_one_link_see_only_their_own_run_and_a_reload_keeps_the_guest(
    acc: Accelerator, catalog: str, echo_model: str, new_page: Callable[[], Any]
) -> None:
    """Two visitors of a public page holding the same link: each is a guest of their own."""
    from urllib.parse import urlencode

    link = acc.share_link(echo_model)
    assert link.token is not None
    url = f"{catalog}/?{urlencode({'model': echo_model, 'link': link.token})}"

    first = new_page()
    first.goto(url)
    first.get_by_role("button", name="Launch").click()
    first.wait_for_url(re.compile(r"[?&]run="), timeout=RUN)
    first.get_by_text("Completed").first.wait_for(timeout=RUN)
    run_page = first.url
    run_id = parse_qs(urlsplit(run_page).query)["run"][0]
    kept = guest_cookie(first)
    assert kept["httpOnly"] and kept["name"] == f"acc_guest_{link.id}"

    # A reload is a new page for Streamlit; the browser's cookie makes it the same guest.
    first.reload()
    first.get_by_text("Completed").first.wait_for(timeout=STEP)
    assert first.get_by_text("not found").count() == 0
    first.screenshot(path=str(ARTIFACTS / "06-guest-run-after-reload.png"))

    # Another visitor, with the same link and even that run's address, finds nothing there.
    second = new_page()
    second.goto(run_page)
    second.get_by_text(re.compile(r"run '.+' not found")).first.wait_for()
    assert second.get_by_text("Completed").count() == 0
    assert kept["value"] not in {c["value"] for c in second.context.cookies()}
    second.screenshot(path=str(ARTIFACTS / "07-other-guest-run-not-found.png"))

    # The link's owner sees the guest's run.
    assert run_id in {r.id for r in acc.runs(model=echo_model)}
