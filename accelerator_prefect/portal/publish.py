"""``/publish``: authors publish a version through the portal, sending the manifest and where
the code is: a git URL and commit the platform fetches, or a git bundle of that commit.

The route reads the multipart body within the platform's limit (the bundle's size, set by
``ACC_PUBLISH_MAX_BUNDLE_BYTES``, plus the manifest) and calls one service function,
:func:`~accelerator_prefect.publish.publish_source`: who may publish, fetching the code,
deriving its schema out of the portal's process and publishing are all decided there.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from accelerator_prefect.errors import ManifestError
from accelerator_prefect.portal.deps import Acc
from accelerator_prefect.portal.problems import problem, responses
from accelerator_prefect.publish import (
    BundleCode,
    PublishSettings,
    PublishStatus,
    RepositoryCode,
    parse_manifest_text,
    publish_source,
)

router = APIRouter(tags=["publish"])

MAX_MANIFEST_BYTES = 256 << 10
_FRAMING = 64 << 10  # multipart boundaries, part headers and the small fields
_COMMIT = "^[0-9a-f]{40}([0-9a-f]{24})?$"
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


class PublishOut(BaseModel):
    """What publishing did."""

    model: str = Field(description="The model's name.")
    version: str = Field(description="The version published.")
    status: PublishStatus = Field(
        description="created, updated (metadata only), unchanged, or replaced (forced)."
    )
    commit: str | None = Field(description="The commit the version runs.")
    warnings: list[str] = Field(
        default_factory=list,
        description="What the author should fix, though it did not stop publishing (a conf "
        "that accepts unknown fields).",
    )


_FORM: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["manifest"],
                "properties": {
                    "manifest": {
                        "type": "string",
                        "format": "binary",
                        "description": "The hosting manifest (deployments/<model>.yaml).",
                    },
                    "bundle": {
                        "type": "string",
                        "format": "binary",
                        "description": "A git bundle of the commit and its history "
                        "(`git bundle create code.bundle HEAD`); or give `repository`.",
                    },
                    "repository": {
                        "type": "string",
                        "description": "A git URL the platform fetches the commit from "
                        "(https, ssh or git; file:// only under the folders the operator "
                        "admits); or give `bundle`.",
                    },
                    "commit": {
                        "type": "string",
                        "pattern": _COMMIT,
                        "description": "The full commit id: required with `repository`; "
                        "the bundle's HEAD by default.",
                    },
                    "force": {
                        "type": "boolean",
                        "default": False,
                        "description": "Replace a published version that has other code.",
                    },
                },
            }
        }
    },
}


class _TooLarge(Exception):
    pass


def _capped(request: Request, limit: int) -> Request:
    """The request, read no further than ``limit`` bytes of body, whatever it declares."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
        return message

    return Request(request.scope, receive)


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def _text(form: FormData, field: str) -> str | None:
    value = form.get(field)
    if isinstance(value, UploadFile):
        raise _invalid(field, "expected text, not a file")
    return value.strip() if value is not None else None


async def _manifest(form: FormData) -> tuple[str, str]:
    """The manifest's text and the name errors call it by."""
    part = form.get("manifest")
    if part is None:
        raise _invalid("manifest", "required: the hosting manifest (deployments/<model>.yaml)")
    if isinstance(part, UploadFile):
        raw = await part.read(MAX_MANIFEST_BYTES + 1)
        name = re.sub(r"[^A-Za-z0-9._-]", "", (part.filename or "").rsplit("/", 1)[-1])
    else:
        raw, name = part.encode(), ""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _invalid("manifest", f"larger than {MAX_MANIFEST_BYTES:,} bytes")
    label = name or "manifest"
    try:
        return raw.decode("utf-8"), label
    except UnicodeDecodeError:
        raise ManifestError(f"{label}: not UTF-8 text") from None


def _code(form: FormData) -> RepositoryCode | BundleCode:
    repository, commit = _text(form, "repository"), _text(form, "commit")
    bundle = form.get("bundle")
    if commit and not re.fullmatch(_COMMIT, commit):
        raise _invalid("commit", "expected a full commit id (40 hex digits, lower case)")
    if isinstance(bundle, UploadFile):
        if repository:
            raise _invalid("repository", "give a repository or a bundle, not both")
        return BundleCode(bundle.file, commit or None)
    if bundle is not None:
        raise _invalid("bundle", "expected a file: a git bundle")
    if not repository:
        raise _invalid("bundle", "required: a git bundle of the commit, or a repository URL")
    if not commit:
        raise _invalid("commit", "required with a repository: the full commit id")
    return RepositoryCode(repository, commit)


def _force(form: FormData) -> bool:
    value = (_text(form, "force") or "").lower()
    if value not in _TRUE | _FALSE:
        raise _invalid("force", "expected true or false")
    return value in _TRUE


@router.post(
    "/publish",
    response_model=PublishOut,
    status_code=201,
    summary="Publish a model version (authors, operators)",
    description="Multipart: the `manifest` file and either a `bundle` file (`git bundle "
    "create code.bundle HEAD`) or a `repository` URL and `commit`. Authors publish their "
    "own models into their projects. The platform fetches the code at that commit, derives "
    "the parameter schema by importing it in a process holding no credentials, and "
    "publishes `<model>@<version>`: 201 when created or replaced, 200 when the version "
    "was published already (updated metadata, or unchanged). A published version never "
    "changes its code unless `force` replaces it.",
    responses={
        200: {"model": PublishOut, "description": "Published already: updated or unchanged"},
        **responses(400, 401, 403, 409, 413, 422, 429, 503),
    },
    openapi_extra={"requestBody": _FORM},
)
async def publish(request: Request, acc: Acc, response: Response) -> PublishOut | Response:
    limit = PublishSettings().max_bundle_bytes + MAX_MANIFEST_BYTES + _FRAMING
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _too_large(limit)
    try:
        async with _capped(request, limit).form(
            max_files=2, max_fields=4, max_part_size=MAX_MANIFEST_BYTES
        ) as form:
            text, label = await _manifest(form)
            code, force = _code(form), _force(form)
            result = await publish_source(acc, text, code, label=label, force=force)
    except _TooLarge:
        return _too_large(limit)
    await acc.audit_published(result, parse_manifest_text(text, label).access.scope.value)
    if result.status not in ("created", "replaced"):
        response.status_code = 200
    return PublishOut(
        model=result.model,
        version=result.version,
        status=result.status,
        commit=result.commit,
        warnings=list(result.warnings),
    )


def _too_large(limit: int) -> Response:
    return problem(
        413,
        "Request too large",
        f"a publish request is limited to {limit:,} bytes here (the bundle, the manifest and "
        "the form); ask the operator for more, or publish from a repository URL",
        "too-large",
    )
