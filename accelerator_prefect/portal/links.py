"""``/links``: share a model through a link, list and revoke links (owners, operators)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from accelerator_prefect.client import GuestSession, SharedLink
from accelerator_prefect.portal.deps import Acc, admitted, bearer
from accelerator_prefect.portal.problems import responses
from accelerator_prefect.portal.schemas import LinkRequest

router = APIRouter(tags=["links"])


@router.post(
    "/models/{model}/links",
    response_model=SharedLink,
    status_code=201,
    summary="Share a model through a link (owners, operators)",
    responses=responses(400, 401, 403, 404, 413, 422, 429, 503),
)
async def share(model: str, acc: Acc, body: LinkRequest | None = None) -> SharedLink:
    """A new link to ``model``; its token and URL are shown this once."""
    body = body or LinkRequest()
    expires = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    return await acc.share_link(
        model, version=body.version, expires_in=expires, guest_days=body.guest_days
    )


@router.get(
    "/links",
    response_model=list[SharedLink],
    summary="Links to the models you manage",
    responses=responses(401, 422, 429, 503),
)
async def list_links(acc: Acc, model: str | None = None) -> list[SharedLink]:
    return await acc.links(model)


@router.delete(
    "/links/{link_id}",
    response_model=SharedLink,
    summary="Revoke a link (its model's owner, operators)",
    responses=responses(401, 403, 404, 422, 429, 503),
)
async def revoke(link_id: str, acc: Acc) -> SharedLink:
    return await acc.revoke_link(link_id)


@router.post(
    "/guest-sessions",
    response_model=GuestSession,
    status_code=201,
    summary="Open a guest session with a shared link's token",
    responses=responses(401, 422, 429, 503),
)
async def open_guest_session(
    request: Request,
    found: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> GuestSession:
    """Exchange the link token (``accl_…``, as ``Authorization: Bearer``) for a guest token
    (``accg_…``): one guest, with an area of their own under the link, who sees only their
    own runs and files. Every exchange is another guest; keep the token to stay the same one.
    It lasts the link's retention (``guest_days``), or until the link is revoked."""
    acc, session = await admitted(request, found, exchange=True)
    await acc.aclose()
    assert session is not None
    return session
