"""A browser that signed in stays signed in: a signed, expiring session cookie.

A Streamlit script cannot set a cookie (``st.context.cookies`` is read-only), so the
catalog is served as an ``st.App`` with two routes of its own (see ``serve.py``):

- ``POST /_acc/session`` takes a *ticket* the sign-in page has just issued and stores it
  as an ``HttpOnly``, ``SameSite=Lax`` cookie: for the browser's session, or for
  :data:`REMEMBER_DAYS` days when the person asked to be remembered on this device;
- ``POST /_acc/sign-out`` removes it;
- a guest of a shared link is kept the same way, in a cookie of that link
  (:data:`GUEST_COOKIE_PREFIX` and its id), so a reload is the same guest, not a new one;
- ``GET /_acc/runs/{run_id}/outputs.zip`` ("Download all") reads it to know for whom to
  open the run.

A ticket names the user and the id of the token they signed in with (never the token's
secret), and when it was issued; it is signed with a key derived from the platform's
API auth string, which only the platform's services hold. On a new page load the catalog
reads the cookie, checks the signature and age here, then asks the directory whether the
token is still active and the user has not signed out everywhere since
(:meth:`~accelerator_prefect.Accelerator.check_session`).

Example:
    >>> ticket = issue("alice", "k3j4", remember=False, secret="s")
    >>> read(ticket, secret="s").user
    'alice'
    >>> read(ticket + "x", secret="s") is None
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

COOKIE = "acc_session"
STORE_ROUTE = "/_acc/session"
SIGN_OUT_ROUTE = "/_acc/sign-out"
OUTPUTS_ROUTE = "/_acc/runs/{run_id}/outputs.zip"
FRESH_SECONDS = 120  # a ticket is stored as a cookie within this long of its sign-in
SESSION_HOURS = 12  # a browser session's sign-in lasts at most this long
REMEMBER_DAYS = 30  # "remember me on this device"
GUEST_DAYS = 3660  # a guest's ticket: its guest token's own retention decides
GUEST_COOKIE_PREFIX = "acc_guest_"  # then a link's id: which guest of it this browser is
_SALT = "acc-catalog-session"


@dataclass(frozen=True)
class Ticket:
    """Who signed in (``user``, with the token ``token_id``), when, and for how long."""

    user: str
    token_id: str
    issued: datetime
    remember: bool
    guest: str | None = None  # a guest session's token: the guest this browser is, on a link

    @property
    def lifetime(self) -> int:
        """Seconds the sign-in holds (a guest's: as long as the guest token itself)."""
        if self.guest is not None:
            return GUEST_DAYS * 86400
        return REMEMBER_DAYS * 86400 if self.remember else SESSION_HOURS * 3600


def _serializer(secret: str | None) -> Any:
    from itsdangerous import URLSafeTimedSerializer

    if secret is None:
        from accelerator_prefect.settings import get_settings

        secret = get_settings().service_auth_string()
    if not secret:
        raise RuntimeError("the catalog holds no API auth string to sign sessions with")
    # The auth string itself never signs anything a browser holds: a key derived from it.
    key = hashlib.sha256(b"acc catalog sessions\0" + secret.encode()).hexdigest()
    return URLSafeTimedSerializer(key, salt=_SALT)


def issue(
    user: str,
    token_id: str,
    *,
    remember: bool,
    secret: str | None = None,
    at: datetime | None = None,
) -> str:
    """A signed ticket for ``user``, who has just (or ``at``) signed in with token
    ``token_id``."""
    # The signature's own time counts whole seconds; "signed out everywhere" needs finer.
    issued = (at or datetime.now(UTC)).timestamp()
    return str(_serializer(secret).dumps({"u": user, "t": token_id, "r": remember, "i": issued}))


def issue_guest(guest_token: str, *, secret: str | None = None) -> str:
    """A signed ticket keeping the guest session ``guest_token`` in this browser, so a
    reload (or a new tab) on the same link is the same guest."""
    issued = datetime.now(UTC).timestamp()
    data = {"u": "", "t": "", "r": False, "i": issued, "g": guest_token}
    return str(_serializer(secret).dumps(data))


def guest_cookie(link_token: str) -> str | None:
    """The name of the cookie keeping this browser's guest of the link ``link_token``."""
    parts = link_token.split("_")
    if len(parts) < 3 or parts[0] != "accl" or not parts[1].isalnum():
        return None
    return GUEST_COOKIE_PREFIX + parts[1]


def read(value: str, max_age: int | None = None, *, secret: str | None = None) -> Ticket | None:
    """The ticket ``value`` holds, if its signature is right and it is younger than
    ``max_age`` seconds (else the ticket's own lifetime); ``None`` otherwise."""
    from itsdangerous import BadSignature

    serializer = _serializer(secret)
    try:
        data = serializer.loads(value)
        issued = datetime.fromtimestamp(float(data["i"]), UTC)
        guest = str(data["g"]) if data.get("g") else None
        ticket = Ticket(str(data["u"]), str(data["t"]), issued, bool(data["r"]), guest)
    except (BadSignature, KeyError, TypeError, ValueError, OverflowError):
        return None
    age = (datetime.now(UTC) - ticket.issued).total_seconds()
    return ticket if age <= (ticket.lifetime if max_age is None else max_age) else None


def store_script(ticket: str) -> str:
    """The script a page runs to have the browser keep ``ticket`` (it posts it to the
    catalog's own route, which answers with the cookie)."""
    import json

    return (
        f"<script>fetch({json.dumps(STORE_ROUTE)}, {{method: 'POST', body: "
        f"{json.dumps(ticket)}, credentials: 'same-origin', headers: "
        "{'Content-Type': 'text/plain'}});</script>"
    )


def forget_script() -> str:
    """The script a page runs to have the browser drop its session cookie."""
    import json

    return (
        f"<script>fetch({json.dumps(SIGN_OUT_ROUTE)}, {{method: 'POST', "
        "credentials: 'same-origin'});</script>"
    )
