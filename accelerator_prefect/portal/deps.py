"""Who is asking: the one dependency that turns a request's credential into a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from accelerator_prefect.client import AsyncAccelerator
from accelerator_prefect.errors import AccessDenied


def _credential(request: Request) -> tuple[str | None, str | None]:
    """The personal token or link token a request carries (``Authorization: Bearer …``)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AccessDenied("no credential: send Authorization: Bearer <your token or link token>")
    value = value.strip()
    if value.startswith("accl_"):
        return None, value
    return value, None


async def caller(request: Request) -> AsyncIterator[AsyncAccelerator]:
    """The service acting for the request's token or link; checked on every request."""
    platform: AsyncAccelerator = request.app.state.platform
    token, link = _credential(request)
    acc = platform.acting_for(token=token, link=link)
    await acc.principal()  # an unknown, revoked or expired credential fails here (401)
    try:
        yield acc
    finally:
        await acc.aclose()


Acc = Annotated[AsyncAccelerator, Depends(caller)]
