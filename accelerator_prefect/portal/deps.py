"""Who is asking: the one dependency that turns a request's credential into a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from accelerator_prefect.client import AsyncAccelerator
from accelerator_prefect.errors import AccessDenied

# Declares the scheme in the OpenAPI document; refusals stay the portal's own (problem+json).
bearer = HTTPBearer(
    auto_error=False,
    description="A personal token (acc_…) or a shared link's token (accl_…).",
)


def _credential(found: HTTPAuthorizationCredentials | None) -> tuple[str | None, str | None]:
    """The personal token or link token a request carries (``Authorization: Bearer …``)."""
    if found is None or found.scheme.lower() != "bearer" or not found.credentials.strip():
        raise AccessDenied("no credential: send Authorization: Bearer <your token or link token>")
    value = found.credentials.strip()
    if value.startswith("accl_"):
        return None, value
    return value, None


async def caller(
    request: Request,
    found: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> AsyncIterator[AsyncAccelerator]:
    """The service acting for the request's token or link, checked on every request, and
    within its rate limit (429 past it)."""
    from accelerator_prefect.portal.limits import limit_name, take

    platform: AsyncAccelerator = request.app.state.platform
    settings = platform.settings
    client = await platform.client()
    address = request.client.host if request.client else "unknown"
    try:
        token, link = _credential(found)
        acc = platform.acting_for(token=token, link=link)
        await acc.principal()  # an unknown, revoked or expired credential fails here (401)
    except AccessDenied:
        # Refused credentials cost the address a slot: guessing is slowed down, not free.
        per_second = settings.signin_failures_per_minute / 60
        burst = max(1, round(settings.signin_failures_per_minute))
        name = limit_name("signin", address)
        await take(client, name, per_second, burst, "with refused credentials")
        raise
    credential = (token or link or "").split("_")[:2]  # the id, never the secret
    await take(
        client,
        limit_name("token" if token else "link", "_".join(credential)),
        settings.portal_rate_per_second,
        settings.portal_rate_burst,
        "with this token",
    )
    try:
        yield acc
    finally:
        await acc.aclose()


Acc = Annotated[AsyncAccelerator, Depends(caller)]
