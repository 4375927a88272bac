"""Who is signed in to this browser session, and the client that acts for them.

The catalog is a trusted service in front of Prefect: every page calls the
service layer through the signed-in user's :class:`Accelerator`, so the access
layer decides what they see and run. Three ways in: a personal token (the
embedded default), OpenID Connect through ``st.login`` when the catalog has an
``[auth]`` section in its secrets, and a shared link (``?model=…&link=…``) that
makes the holder a guest of one model.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from accelerator_prefect.errors import AcceleratorError, AccessDenied, NotFound
from catalog_ui.markdown import safe_markdown

if TYPE_CHECKING:
    from accelerator_prefect import Accelerator, Principal

T = TypeVar("T")
KEY = "acc_session"
CACHE_SECONDS = 10.0
# One-shot instructions for the next page draws (see app.py): have the browser keep a new
# session ticket (``(ticket, draws left)``), or drop its cookie; "this browser session
# signed out": a cookie the page was opened with is not resumed again; and why a sign-in
# ended, said above the sign-in form until the person signs in again.
STORE_TICKET = "acc-store-ticket"
STORE_GUEST_TICKET = "acc-store-guest-ticket"  # the same, for which guest of a link it is
FORGET_COOKIE = "acc-forget-cookie"
SIGNED_OUT = "acc-signed-out"
ENDED = "acc-sign-in-ended"
SESSION_ENDED = (
    "Your sign-in on this device has ended: it expired, or you signed out everywhere. "
    "Sign in again to go on where you were."
)
TOKEN_ENDED = (
    "Your sign-in has ended: your token was revoked or has expired. Sign in again, "
    "with a new token if you have one."
)
_log = logging.getLogger(__name__)


@dataclass
class Session:
    """One signed-in browser session."""

    acc: Accelerator
    how: str  # "token", "cookie" (a token sign-in resumed), "oidc" or "link"
    model: str | None = None  # the one model a guest may open
    link: str | None = None
    token_id: str | None = None  # the token signed in with (its id, never its secret)
    cache: dict[str, tuple[float, Any]] = field(default_factory=dict)
    checked: Principal | None = None  # who this session stood for at the last check

    def check(self) -> Principal:
        """Who this session stands for, looked up now: a token or link revoked, or a
        membership changed, counts from here. The entry script checks once per page draw;
        the page then reads :attr:`principal` without asking the directory again."""
        self.checked = self.acc.principal
        return self.checked

    @property
    def principal(self) -> Principal:
        return self.checked if self.checked is not None else self.check()

    @property
    def user(self) -> str:
        return self.principal.name

    @property
    def guest(self) -> bool:
        return self.principal.guest

    def cached(self, key: str, read: Callable[[], T], seconds: float = CACHE_SECONDS) -> T:
        """``read()``, reused for a few seconds: a page reruns on every click."""
        hit = self.cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < seconds:
            return hit[1]  # type: ignore[no-any-return]
        value = read()
        self.cache[key] = (time.monotonic(), value)
        return value

    def forget(self, *, keep_models: bool = False) -> None:
        """Drop cached reads, after a change (a launch, a new status, a new link).
        ``keep_models``: the change was a run's (a launch), so models read just now stand."""
        if not keep_models:
            self.cache.clear()
            return
        for key in [k for k in self.cache if not k.startswith("model:")]:
            del self.cache[key]


def _state() -> Any:
    import streamlit as st

    return st.session_state


def current() -> Session | None:
    session = _state().get(KEY)
    return session if isinstance(session, Session) else None


def _keep(session: Session) -> Session:
    session.check()  # the token or link now, not on the first page
    _state()[KEY] = session
    _state().pop(ENDED, None)
    return session


def sign_in_with_token(user: str, token: str, *, remember: bool = False) -> Session:
    """Sign in as ``user`` with their personal token (``acc_<id>_<secret>``); the browser
    is then given a session cookie (for its session, or for weeks with ``remember``), so a
    reload, a new tab or a shared run link finds them signed in."""
    from accelerator_prefect import Accelerator
    from accelerator_prefect.directory import token_id
    from catalog_ui import cookies

    user, token = user.strip(), token.strip()
    if not user or not token:
        raise AccessDenied("enter your user name and your token (acc users token NAME makes one)")
    acc = Accelerator.connect(token=token)
    if acc.user != user:
        acc.close()
        raise AccessDenied(f"this token does not belong to {user!r}; check both and try again")
    session = _keep(Session(acc, "token", token_id=token_id(token)))
    # Without a key to sign with, the sign-in lasts as long as the page.
    with contextlib.suppress(RuntimeError):
        if session.token_id is not None:
            ticket = cookies.issue(user, session.token_id, remember=remember)
            _state()[STORE_TICKET] = (ticket, 2)
    _state().pop(SIGNED_OUT, None)
    return session


def client_for_cookie(value: str) -> tuple[Accelerator, str] | None:
    """A client acting for whoever a browser's session cookie ``value`` names, and the id
    of the token they signed in with, if the cookie still holds: signed by this platform,
    not too old, its token active, and not signed out everywhere since. ``None`` if not;
    the platform not answering raises (that is not the cookie's fault)."""
    from accelerator_prefect import Accelerator
    from catalog_ui import cookies

    try:
        ticket = cookies.read(value)
    except RuntimeError:  # no key to check it with: this catalog keeps no sessions
        return None
    if ticket is None:
        return None
    if ticket.guest is not None:  # a guest of a shared link, still within its retention
        guest = Accelerator.connect(link=ticket.guest)
        return (guest, "") if _holds(guest, lambda: guest.principal) else None
    try:
        acc = Accelerator.connect(trusted_user=ticket.user)
    except AccessDenied:
        return None
    held = _holds(acc, lambda: acc.check_session(ticket.token_id, ticket.issued))
    return (acc, ticket.token_id) if held else None


def _holds(acc: Accelerator, check: Callable[[], object]) -> bool:
    """Whether ``check()`` finds the session still holds; if not, ``acc`` is closed (and
    anything but a refusal, such as the platform not answering, raised)."""
    try:
        check()
    except AccessDenied:
        acc.close()
        return False
    except BaseException:
        acc.close()
        raise
    return True


def resume(value: str) -> Session | None:
    """The session a browser's cookie ``value`` holds, if it still holds (see
    :func:`client_for_cookie`)."""
    opened = client_for_cookie(value)
    if opened is None:
        return None
    acc, token = opened
    return _keep(Session(acc, "cookie", token_id=token))


def sign_in_with_link(model: str, link: str, saved: str | None = None) -> Session:
    """Open ``model`` as a guest of a shared ``link``: the guest this browser already is
    (its cookie of that link, ``saved``) while that guest session holds, else a new guest
    session, which the browser is then given to keep (see :mod:`catalog_ui.cookies`)."""
    from accelerator_prefect import Accelerator
    from catalog_ui import cookies

    opened = client_for_cookie(saved) if saved else None
    acc = opened[0] if opened is not None else Accelerator.connect(link=link)
    grant = acc.principal.links[0]  # a new guest session is opened here
    if grant.model != model or (
        opened is not None and not link.startswith(f"accl_{grant.link_id}_")
    ):
        acc.close()
        raise AccessDenied("this link opens another model; use the link exactly as you got it")
    if opened is None and acc.guest_session is not None:
        with contextlib.suppress(RuntimeError):  # no key to sign with: a guest of this tab
            _state()[STORE_GUEST_TICKET] = (cookies.issue_guest(acc.guest_session.token), 2)
    return _keep(Session(acc, "link", model=model, link=link))


def oidc_configured() -> bool:
    """Whether the catalog's secrets configure OpenID Connect (an ``[auth]`` section)."""
    import streamlit as st

    try:
        return "auth" in st.secrets
    except (FileNotFoundError, KeyError, OSError):
        return False


def oidc_user(claims: dict[str, Any]) -> str:
    """The directory name of the user an identity provider signed in: the user whose
    recorded subject is the provider's ``sub``, else one named by a verified e-mail address
    of an allowed domain (``ACC_OIDC_EMAIL_DOMAINS``); never an operator by e-mail."""
    import asyncio

    from accelerator_prefect.client import resolve_api_url
    from accelerator_prefect.directory import oidc_user_name
    from accelerator_prefect.settings import get_settings
    from accelerator_prefect.transport import prefect_client

    settings = get_settings()

    async def find() -> str:
        auth = settings.service_auth_string() or ""
        async with prefect_client(resolve_api_url(settings, None), auth_string=auth) as client:
            return await oidc_user_name(client, claims, settings.oidc_email_domains)

    return asyncio.run(find())


def sign_in_with_oidc(claims: dict[str, Any]) -> Session:
    """Act for the user the catalog's identity provider vouched for (the catalog is trusted)."""
    from accelerator_prefect import Accelerator

    return _keep(Session(Accelerator.connect(trusted_user=oidc_user(claims)), "oidc"))


def sign_out(*, everywhere: bool = False, why: str | None = None) -> None:
    """Sign this browser out (its cookie is dropped on the next draw); ``everywhere``: every
    browser this user signed in to, too. ``why``: what to tell the person above the
    sign-in form (nothing when they signed out themselves)."""
    session = _state().pop(KEY, None)
    if isinstance(session, Session):
        try:
            if everywhere:
                session.acc.end_sessions()
        finally:
            session.acc.close()
    _state().pop(STORE_TICKET, None)  # a ticket not yet said twice is not said again
    _state()[SIGNED_OUT] = True
    _state()[FORGET_COOKIE] = True
    if why:
        _state()[ENDED] = why
    else:
        _state().pop(ENDED, None)


def plain_error(exc: BaseException) -> str:
    """What to tell a catalog user about ``exc``: our own messages as they are (they say
    what to do), anything else without a traceback."""
    import httpx

    if _unreachable(exc):
        return PLATFORM_DOWN
    if isinstance(exc, AcceleratorError):
        # The service layer's messages point CLI users to commands; here, to pages. They
        # may quote a model's words (a check's message, a file's name): shown unloaded.
        said = safe_markdown(str(exc)).replace(
            " (see `acc list` for the hosted models)",
            ". The catalog lists the models open to you.",
        )
        if isinstance(exc, NotFound) and said.startswith("run ") and said.endswith("not found"):
            said += ". Check the address, or open the run from My runs, which lists yours."
        return said
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500:
        return PLATFORM_DOWN
    return (
        f"Something went wrong on our side ({type(exc).__name__}). Try again in a moment; "
        "if it keeps happening, tell the operator."
    )


PLATFORM_DOWN = (
    "The platform is not answering right now. Try again in a moment; if it keeps "
    "happening, tell the operator."
)
LINK_ENDED = (
    "This link does not open anything any more: it was revoked, it has expired, or it is "
    "not complete. Ask whoever shared it with you for a new one."
)


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the platform (its Prefect server) did not answer."""
    import httpx

    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


def halt() -> NoReturn:
    """End this page draw here, keeping what it drew.

    ``st.stop()`` only asks the script runner to stop, which it does at its next element;
    raising Streamlit's own stop makes sure nothing after this line is drawn or run,
    whatever the runner does with the request.
    """
    import streamlit as st
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    st.stop()
    raise StopException()


def stop_with_a_page(exc: BaseException, *, guest: bool) -> NoReturn:
    """End the page with a plain page about ``exc``: a sentence saying what happened and
    what to do, and a way on (try again); never a crash. For a guest whose link was
    refused: the link has ended."""
    import streamlit as st

    if not isinstance(exc, AcceleratorError) and not _unreachable(exc):
        _log.error("a catalog page failed", exc_info=exc)  # for the operator's log
    st.title(":material/science: Model catalog")
    if guest and isinstance(exc, AccessDenied):
        st.error(LINK_ENDED, icon=":material/link_off:")
        halt()
    st.error(plain_error(exc), icon=":material/cloud_off:")
    st.button("Try again", icon=":material/refresh:", key="try-again")
    halt()


def way_back() -> None:
    """Links out of a page that cannot show what it was asked for: to the catalog and
    the person's runs, or (a guest) to their model. Only on the pages themselves (the
    entry script knows them by then)."""
    import streamlit as st

    session = current()
    if session is None:
        return
    if session.guest:
        st.page_link("views/model.py", label="Back to the model", icon=":material/arrow_back:")
        return
    left, right, _ = st.columns([1, 1, 3])
    left.page_link("views/catalog.py", label="The catalog", icon=":material/apps:")
    right.page_link("views/my_runs.py", label="My runs", icon=":material/history:")


@contextmanager
def reported(what: str) -> Iterator[None]:
    """Show a failure of ``what`` as a plain message on the page, with a way back, and
    stop the page there."""
    import streamlit as st

    try:
        yield
    except Exception as exc:
        if type(exc).__name__ in {"StopException", "RerunException"}:
            raise  # Streamlit's own control flow
        if not isinstance(exc, AcceleratorError) and not _unreachable(exc):
            _log.error("could not %s", what, exc_info=exc)
        st.error(f"Could not {what}: {plain_error(exc)}")
        way_back()
        halt()
