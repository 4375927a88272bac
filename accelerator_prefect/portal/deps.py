"""Who is asking: the one dependency that turns a request's credential into a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from accelerator_prefect.client import AsyncAccelerator, GuestSession
from accelerator_prefect.errors import AccessDenied

# Declares the scheme in the OpenAPI document; refusals stay the portal's own (problem+json).
bearer = HTTPBearer(
    auto_error=False,
    description=(
        "A personal token (acc_…), or a guest token (accg_…) that a shared link's token "
        "(accl_…) was exchanged for at POST /guest-sessions."
    ),
)


def _credential(found: HTTPAuthorizationCredentials | None) -> tuple[str | None, str | None]:
    """The personal token, or the link or guest token, a request carries
    (``Authorization: Bearer …``)."""
    if found is None or found.scheme.lower() != "bearer" or not found.credentials.strip():
        raise AccessDenied("no credential: send Authorization: Bearer <your token or guest token>")
    value = found.credentials.strip()
    if value.startswith(("accl_", "accg_")):
        return None, value
    return value, None


async def admitted(
    request: Request, found: HTTPAuthorizationCredentials | None, *, exchange: bool = False
) -> tuple[AsyncAccelerator, GuestSession | None]:
    """The service acting for the request's token, guest token or (``exchange``: to open a
    guest session) link token, checked now, and within its rate limit (429 past it)."""
    from accelerator_prefect.directory import EXCHANGE_FIRST, NOT_A_LINK, is_guest_token
    from accelerator_prefect.portal.limits import limit_name, take

    platform: AsyncAccelerator = request.app.state.platform
    settings = platform.settings
    client = await platform.client()
    address = request.client.host if request.client else "unknown"
    token, link = _credential(found)
    if exchange != (link is not None and not is_guest_token(link)):
        raise AccessDenied(NOT_A_LINK if exchange else EXCHANGE_FIRST)
    session = None
    try:
        acc = platform.acting_for(token=token, link=link)
        if exchange:
            session = await acc.exchange_link()
        else:
            await acc.principal()  # an unknown, revoked or expired credential fails here (401)
    except AccessDenied:
        # Refused credentials cost the address a slot: guessing is slowed down, not free.
        per_second = settings.signin_failures_per_minute / 60
        burst = max(1, round(settings.signin_failures_per_minute))
        name = limit_name("signin", address)
        await take(client, name, per_second, burst, "with refused credentials")
        raise
    # The id, never the secret: a token's, a link's, or one guest's of a link.
    kind = "token" if token else "guest" if link and is_guest_token(link) else "link"
    credential = (token or link or "").split("_")[: 3 if kind == "guest" else 2]
    await take(
        client,
        limit_name(kind, "_".join(credential)),
        settings.portal_rate_per_second,
        settings.portal_rate_burst,
        "with this token",
    )
    return acc, session


async def caller(
    request: Request,
    found: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> AsyncIterator[AsyncAccelerator]:
    """The service acting for the request's token or guest token, checked on every request,
    and within its rate limit (429 past it)."""
    acc, _ = await admitted(request, found)
    try:
        yield acc
    finally:
        await acc.aclose()


Acc = Annotated[AsyncAccelerator, Depends(caller)]
