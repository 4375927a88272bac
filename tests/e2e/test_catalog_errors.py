"""Every error the catalog can meet is a page made for people, in a real browser.

`acc up` serves the platform; Debian's Chromium visits each way a page can fail: a
link revoked (while in use and afresh) or expired, a model that never existed or was
archived after it was opened, a run that does not exist or is someone else's, a session
cookie that expired or was signed out everywhere, and the platform not answering. Each
shows a sentence saying what happened and what to do, and never Streamlit's exception
box, a traceback or a server path. Each page's screen is kept in
``test-artifacts/catalog/errors-*.png``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import free_port
from catalog_ui.session import LINK_ENDED, PLATFORM_DOWN, SESSION_ENDED
from tests.conftest import ModelRepo
from tests.e2e.test_catalog_browser import (
    ARTIFACTS,
    CHROMIUM,
    STEP,
    acc_cli,
    launch_chromium,
    session_cookie,
    sign_in,
    wait_for_session_cookie,
)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)

# What must never reach a catalog user, whatever failed.
RAW = re.compile(r"Traceback|site-packages|Ask Google|Ask ChatGPT|File \"/|\.py\", line")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`acc up` on a fresh home (without the example models, which no test here opens),
    with alice (author in demo), bob (in no project), an echo model of demo, and a run of
    it by alice."""
    home = tmp_path_factory.mktemp("catalog-errors")
    port, catalog_port = free_port(), free_port()
    started = acc_cli(
        home,
        *("up", "--detach", "--no-examples", "--port", str(port)),
        *("--catalog-port", str(catalog_port), "--portal-port", str(free_port())),
    )
    assert started.returncode == 0, started.stdout + started.stderr
    api = f"http://127.0.0.1:{port}/api"
    try:
        with Accelerator.connect(api, home=home) as operator:
            _, alice = operator.add_user("alice", {"demo": "author", "climate": "member"})
            _, bob = operator.add_user("bob", {})
            echo = ModelRepo(tmp_path_factory.mktemp("echo"), "doomed-echo").echo()
            echo.commit("echo")
            operator.publish(echo.manifest)
        with Accelerator.connect(api, home=home, token=alice) as as_alice:
            run = as_alice.launch("doomed-echo", {"message": "hi"})
        yield {
            "url": f"http://127.0.0.1:{catalog_port}",
            "api": api,
            "home": home,
            "alice": alice,
            "bob": bob,
            "alices_run": str(run.id),
        }
    finally:
        acc_cli(home, "down")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("errors-*.png"):
        old.unlink()
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser (its own cookies); on failure its screen is kept as an artifact."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(STEP)
        return page

    yield make
    for i, context in enumerate(contexts):
        for page in context.pages:
            page.screenshot(path=str(ARTIFACTS / f"errors-last-{request.node.name}-{i}.png"))
        context.close()


def plain_page(page: Any, said: str | re.Pattern[str], name: str) -> None:
    """The page says ``said``, and nothing raw: no exception box, traceback or path; its
    screen is kept as ``errors-<name>.png``."""
    page.get_by_text(said).first.wait_for()
    settled(page)
    assert page.locator("[data-testid='stException']").count() == 0
    body = page.locator("body").inner_text()
    assert not RAW.search(body), body
    page.screenshot(path=str(ARTIFACTS / f"errors-{name}.png"))


def settled(page: Any) -> None:
    """Streamlit has finished redrawing: no element of the last draw left stale."""
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")


def test_a_revoked_link_is_a_plain_page_while_in_use_and_opened_afresh(
    served: dict[str, Any], new_page: Any
) -> None:
    with Accelerator.connect(served["api"], home=served["home"]) as operator:
        link = operator.share_link("doomed-echo")
        page = new_page()
        page.goto(link.url)
        page.get_by_role("heading", name="Echo").wait_for()
        operator.revoke_link(link.id)
    # In use: the next click finds the link revoked.
    message = page.locator("[data-testid='stTextInput']").filter(has_text="Message")
    message.locator("input").fill("still there?")
    message.locator("input").press("Enter")
    plain_page(page, LINK_ENDED, "link-revoked-in-use")
    # Opened afresh: the same sentence, said once.
    page.goto(link.url)
    plain_page(page, LINK_ENDED, "link-revoked-afresh")
    assert page.get_by_text(LINK_ENDED).count() == 1


def test_an_expired_link_is_a_plain_page(served: dict[str, Any], new_page: Any) -> None:
    with Accelerator.connect(served["api"], home=served["home"]) as operator:
        link = operator.share_link("doomed-echo", expires_in=timedelta(seconds=1))
    assert link.expires is not None
    page = new_page()
    while datetime.now(UTC) <= link.expires:  # the link's own clock, not a guess
        page.wait_for_timeout(100)
    page.goto(link.url)
    plain_page(page, LINK_ENDED, "link-expired")


def test_a_model_that_never_existed_is_a_plain_page_with_a_way_back(
    served: dict[str, Any], new_page: Any
) -> None:
    page = new_page()
    sign_in(page, served["url"], "bob", served["bob"])
    wait_for_session_cookie(page)
    page.goto(served["url"] + "/model?model=no-such-model")
    plain_page(page, re.compile("model 'no-such-model' not found"), "model-never-existed")
    page.get_by_role("link", name="The catalog").click()
    page.get_by_role("heading", name="Model catalog").wait_for()


def test_a_run_that_does_not_exist_or_is_not_yours_is_the_same_plain_page(
    served: dict[str, Any], new_page: Any
) -> None:
    page = new_page()
    sign_in(page, served["url"], "bob", served["bob"])
    wait_for_session_cookie(page)
    said: list[str] = []
    for name, run in [
        ("run-not-found", str(uuid.uuid4())),
        ("run-not-yours", served["alices_run"]),
        ("run-id-malformed", "not-a-run"),
    ]:
        page.goto(f"{served['url']}/run?run={run}")
        plain_page(page, re.compile("Could not open this run"), name)
        error = page.locator("[data-testid='stAlertContentError']").first.inner_text()
        said.append(error.replace(run, "<id>"))
        assert page.get_by_role("link", name="My runs").count() >= 1  # a way back
    # Someone else's run is told apart from no run by nothing at all.
    assert said[0] == said[1], said


def test_an_expired_session_cookie_asks_to_sign_in_again(
    served: dict[str, Any], new_page: Any
) -> None:
    from accelerator_prefect.directory import token_id
    from accelerator_prefect.settings import get_settings
    from catalog_ui import cookies

    secret = get_settings(home=served["home"]).service_auth_string()
    old = cookies.issue(
        "bob",
        str(token_id(served["bob"])),
        remember=False,
        secret=secret,
        at=datetime.now(UTC) - timedelta(hours=cookies.SESSION_HOURS + 1),
    )
    page = new_page()
    page.context.add_cookies([{"name": cookies.COOKIE, "value": old, "url": served["url"]}])
    page.goto(served["url"] + "/my-runs")
    plain_page(page, SESSION_ENDED, "session-expired")
    page.get_by_role("textbox", name="User name").wait_for()


def test_signed_out_everywhere_asks_the_other_browsers_to_sign_in_again(
    served: dict[str, Any], new_page: Any
) -> None:
    first, second = new_page(), new_page()
    for page in (first, second):
        sign_in(page, served["url"], "alice", served["alice"])
        wait_for_session_cookie(page)
    second.get_by_role("button", name="Everywhere").click()
    second.get_by_role("textbox", name="User name").wait_for()
    first.reload()
    plain_page(first, SESSION_ENDED, "signed-out-everywhere")
    # Signing in again goes on as before, without the notice.
    sign_in(first, served["url"], "alice", served["alice"])
    assert first.get_by_text(SESSION_ENDED).count() == 0


def test_a_model_archived_after_it_was_opened_is_a_plain_page(
    served: dict[str, Any], new_page: Any
) -> None:
    page = new_page()
    sign_in(page, served["url"], "alice", served["alice"])
    wait_for_session_cookie(page)
    page.goto(served["url"] + "/model?model=doomed-echo")
    page.get_by_role("button", name="Launch").wait_for()
    with Accelerator.connect(served["api"], home=served["home"]) as operator:
        operator.archive("doomed-echo", "1.0.0")
    page.get_by_role("button", name="Launch").click()
    plain_page(page, re.compile("The run was not started|takes no new runs"), "model-archived")
    page.reload()
    plain_page(page, re.compile("takes no new runs|not found"), "model-archived-reopened")


def test_the_platform_not_answering_is_a_plain_page(served: dict[str, Any], new_page: Any) -> None:
    """A catalog whose Prefect server does not answer: for a browser holding a session
    cookie, and for one signing in."""
    from accelerator_prefect.platform import start_catalog, stop_process

    page = new_page()
    sign_in(page, served["url"], "alice", served["alice"])
    cookie = wait_for_session_cookie(page)
    dead_api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    pid, url = start_catalog(served["home"], dead_api, free_port())
    try:
        # The cookie is the catalog host's (cookies do not tell ports apart).
        page.goto(url + "/my-runs")
        plain_page(page, PLATFORM_DOWN, "platform-down-signed-in")
        page.get_by_role("button", name="Try again").wait_for()
        assert session_cookie(page.context) == cookie  # not the cookie's fault: kept

        stranger = new_page()
        stranger.goto(url)
        stranger.get_by_role("textbox", name="User name").fill("alice")
        stranger.get_by_role("textbox", name="Token").fill(served["alice"])
        stranger.get_by_role("button", name="Sign in").click()
        plain_page(stranger, PLATFORM_DOWN, "platform-down-sign-in")
    finally:
        stop_process(pid)
