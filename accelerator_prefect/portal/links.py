"""``/links``: share a model through a link, list and revoke links (owners, operators)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from accelerator_prefect.client import SharedLink
from accelerator_prefect.portal.deps import Acc
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
    return await acc.share_link(model, version=body.version, expires_in=expires)


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
