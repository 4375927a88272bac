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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from accelerator_prefect.errors import AcceleratorError, AccessDenied

if TYPE_CHECKING:
    from accelerator_prefect import Accelerator, Principal

T = TypeVar("T")
KEY = "acc_session"
CACHE_SECONDS = 10.0
# One-shot instructions for the next page draw (see app.py): have the browser keep a new
# session ticket, or drop its cookie; and "this browser session signed out": a cookie the
# page was opened with is not resumed again.
STORE_TICKET = "acc-store-ticket"
FORGET_COOKIE = "acc-forget-cookie"
SIGNED_OUT = "acc-signed-out"


@dataclass
class Session:
    """One signed-in browser session."""

    acc: Accelerator
    how: str  # "token", "cookie" (a token sign-in resumed), "oidc" or "link"
    model: str | None = None  # the one model a guest may open
    link: str | None = None
    token_id: str | None = None  # the token signed in with (its id, never its secret)
    cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        return self.acc.principal

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

    def forget(self) -> None:
        """Drop cached reads, after a change (a launch, a new status, a new link)."""
        self.cache.clear()


def _state() -> Any:
    import streamlit as st

    return st.session_state


def current() -> Session | None:
    session = _state().get(KEY)
    return session if isinstance(session, Session) else None


def _keep(session: Session) -> Session:
    session.principal  # noqa: B018 - checks the token or link now, not on the first page
    _state()[KEY] = session
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
            _state()[STORE_TICKET] = cookies.issue(user, session.token_id, remember=remember)
    _state().pop(SIGNED_OUT, None)
    return session


def resume(value: str) -> Session | None:
    """The session a browser's cookie ``value`` holds, if it still holds: signed by this
    platform, not too old, its token active, and not signed out everywhere since."""
    from accelerator_prefect import Accelerator
    from catalog_ui import cookies

    try:
        ticket = cookies.read(value)
    except RuntimeError:
        return None
    if ticket is None:
        return None
    acc = Accelerator.connect(trusted_user=ticket.user)
    try:
        acc.check_session(ticket.token_id, ticket.issued)
    except AccessDenied:
        acc.close()
        return None
    return _keep(Session(acc, "cookie", token_id=ticket.token_id))


def sign_in_with_link(model: str, link: str) -> Session:
    """Open ``model`` as a guest holding a shared ``link``."""
    from accelerator_prefect import Accelerator

    acc = Accelerator.connect(link=link)
    grant = acc.principal.links[0]
    if grant.model != model:
        acc.close()
        raise AccessDenied("this link opens another model; use the link exactly as you got it")
    return _keep(Session(acc, "link", model=model, link=link))


def oidc_configured() -> bool:
    """Whether the catalog's secrets configure OpenID Connect (an ``[auth]`` section)."""
    import streamlit as st

    try:
        return "auth" in st.secrets
    except (FileNotFoundError, KeyError, OSError):
        return False


def oidc_user(claims: dict[str, Any]) -> str:
    """The directory name of the user an identity provider signed in: their preferred
    user name, else the part of their e-mail address before the @."""
    name = claims.get("preferred_username") or str(claims.get("email") or "").split("@")[0]
    if not name:
        raise AccessDenied("your identity provider did not say who you are; ask the operator")
    return str(name).lower()


def sign_in_with_oidc(claims: dict[str, Any]) -> Session:
    """Act for the user the catalog's identity provider vouched for (the catalog is trusted)."""
    from accelerator_prefect import Accelerator

    return _keep(Session(Accelerator.connect(trusted_user=oidc_user(claims)), "oidc"))


def sign_out(*, everywhere: bool = False) -> None:
    """Sign this browser out (its cookie is dropped on the next draw); ``everywhere``: every
    browser this user signed in to, too."""
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


def plain_error(exc: BaseException) -> str:
    """What to tell a catalog user about ``exc``: our own messages as they are (they say
    what to do), anything else without a traceback."""
    import httpx

    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
        return (
            "The platform is not answering right now. Try again in a moment; if it keeps "
            "happening, tell the operator."
        )
    if isinstance(exc, AcceleratorError):
        # The service layer's messages point CLI users to commands; here, to pages.
        return str(exc).replace(
            " (see `acc list` for the hosted models)",
            ". The catalog lists the models open to you.",
        )
    return (
        f"Something went wrong on our side ({type(exc).__name__}). Try again in a moment; "
        "if it keeps happening, tell the operator."
    )


LINK_ENDED = (
    "This link does not open anything any more: it was revoked, it has expired, or it is "
    "not complete. Ask whoever shared it with you for a new one."
)


def stop_with_a_page(exc: BaseException, *, guest: bool) -> None:
    """End the page with a plain page about ``exc``: a link that no longer opens anything
    (for a guest), or the platform not answering; never a crash."""
    import streamlit as st

    st.title(":material/science: Model catalog")
    if guest and isinstance(exc, AccessDenied):
        st.error(LINK_ENDED, icon=":material/link_off:")
    else:
        st.error(plain_error(exc), icon=":material/cloud_off:")
    st.stop()


@contextmanager
def reported(what: str) -> Iterator[None]:
    """Show a failure of ``what`` as a plain message on the page and stop the page there."""
    import streamlit as st

    try:
        yield
    except Exception as exc:
        if type(exc).__name__ in {"StopException", "RerunException"}:
            raise  # Streamlit's own control flow
        st.error(f"Could not {what}: {plain_error(exc)}")
        st.stop()
