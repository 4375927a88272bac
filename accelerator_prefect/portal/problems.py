"""Errors as RFC 9457 ``application/problem+json``: one handler for every front-end error."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from accelerator_prefect import errors

PROBLEM = "application/problem+json"
RETRY_AFTER_UNAVAILABLE = 2  # seconds a client is asked to wait while the platform is away


class FieldProblem(BaseModel):
    """One refused field of a request."""

    pointer: str = Field(
        description="The field's path, e.g. `conf.base_year` (empty: the request as a whole)."
    )
    detail: str = Field(description="What was wrong with it, and what was expected.")


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(
        description="What kind of problem: `urn:acc:problem:<kind>`.",
        examples=["urn:acc:problem:not-found"],
    )
    title: str = Field(description="The kind of problem, in words.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str = Field(description="This occurrence: what was refused and what to do.")
    errors: list[FieldProblem] = Field(
        default_factory=list, description="Every refused field (422), each with its path."
    )
    retry_after: int | None = Field(
        default=None, ge=1, description="Seconds to wait before trying again (429)."
    )


# What each status means on this API; a route declares the ones it can answer.
_MEANING = {
    400: "The request cannot be done as asked (the detail says why)",
    401: "No credential, or an unknown, revoked or expired token or link",
    403: "The caller may see this but not do this with it",
    404: "Not found, or not visible to the caller (the two are not told apart)",
    409: "The version is archived, the change conflicts with what is published, or the "
    "output file was changed after its run wrote it",
    413: "The request body is larger than the portal accepts",
    416: "The requested byte range is not within the file",
    422: "The request, or the configuration, inputs, output or secrets it carries, were "
    "refused: every problem is listed with its field path",
    429: "Too many requests, or too many runs at once: wait `Retry-After` seconds",
    503: "The platform behind the portal is unavailable; try again later",
    507: "The storage area written to holds its quota: delete files, or ask an operator",
}


def _components() -> dict[str, Any]:
    """The OpenAPI component schemas of :class:`Problem` and what it refers to."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {**defs, "Problem": schema}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route answering problem+json with ``statuses``.

    Example:
        >>> sorted(responses(401, 404))
        [401, 404]
    """
    return {
        status: {
            "description": _MEANING[status],
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


# The most specific class first: an InvalidConf is also a ValidationFailed.
_STATUS: list[tuple[type[errors.AcceleratorError], int, str]] = [
    (errors.NotFound, 404, "not-found"),
    (errors.AccessDenied, 403, "access-denied"),
    (errors.ValidationFailed, 422, "validation-failed"),
    (errors.VersionArchived, 409, "version-archived"),
    (errors.RuntimeMismatch, 409, "runtime-mismatch"),
    (errors.AlteredOutput, 409, "output-altered"),
    (errors.ManifestError, 422, "manifest-invalid"),
    (errors.PublishError, 409, "publish-refused"),
    (errors.IdempotencyConflict, 422, "idempotency-key-reused"),
    (errors.RunTimeout, 408, "run-timeout"),
    (errors.PlatformError, 503, "platform-unavailable"),
    (errors.StorageQuotaExceeded, 507, "storage-quota"),
]


def problem(status: int, title: str, detail: str, kind: str, **extra: Any) -> JSONResponse:
    body = {"type": f"urn:acc:problem:{kind}", "title": title, "status": status, "detail": detail}
    body.update(extra)
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _of_error(exc: errors.AcceleratorError) -> JSONResponse:
    status, kind = next(((s, k) for c, s, k in _STATUS if isinstance(exc, c)), (400, "refused"))
    if isinstance(exc, errors.AccessDenied) and _unauthenticated(str(exc)):
        status, kind = 401, "unauthenticated"
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.ValidationFailed):
        extra["errors"] = [_field_problem(p) for p in exc.problems]
    title = kind.replace("-", " ").capitalize()
    return problem(status, title, str(exc), kind, **extra)


def _unauthenticated(message: str) -> bool:
    from accelerator_prefect.directory import (
        EXCHANGE_FIRST,
        GUEST_ENDED,
        INVALID_LINK,
        INVALID_TOKEN,
        NOT_A_LINK,
    )

    known = {INVALID_TOKEN, INVALID_LINK, GUEST_ENDED, EXCHANGE_FIRST, NOT_A_LINK}
    return message in known or message.startswith("no credential")


def _field_problem(line: str) -> dict[str, str]:
    """``conf.base_year: 3000 is greater …`` -> its field path and what was wrong."""
    path, sep, message = line.partition(": ")
    if not sep or " " in path:
        return {"pointer": "", "detail": line}
    return {"pointer": path, "detail": message}


def install(app: FastAPI) -> None:
    """Every error the portal answers is problem+json, without a traceback or a server path;
    the OpenAPI document describes it once (``#/components/schemas/Problem``) for every
    route's :func:`responses`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI keeps it: the components go in once
        document.setdefault("components", {}).setdefault("schemas", {}).update(_components())
        return document

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(errors.AcceleratorError)
    async def _accelerator_error(_: Request, exc: errors.AcceleratorError) -> JSONResponse:
        return _of_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        found = [
            {
                "pointer": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "detail": str(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        lines = "; ".join(f"{f['pointer']}: {f['detail']}" for f in found)
        return problem(422, "Request invalid", lines, "request-invalid", errors=found)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        kind = {401: "unauthenticated", 404: "not-found", 405: "method-not-allowed"}
        title = str(exc.detail) if isinstance(exc.detail, str) else "Refused"
        return problem(exc.status_code, title, title, kind.get(exc.status_code, "refused"))

    @app.exception_handler(httpx.TransportError)
    async def _platform_away(_: Request, exc: httpx.TransportError) -> JSONResponse:
        # Prefect's client has already tried again with back-off: the server is being
        # restarted, or down. Users' clients wait and ask again (Retry-After).
        return problem(
            503,
            "Platform unavailable",
            "the platform behind the portal is not answering (restarting?); try again in a "
            "few seconds",
            "platform-unavailable",
            retry_after=RETRY_AFTER_UNAVAILABLE,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("accelerator_prefect.portal").exception("unexpected error")
        return problem(
            500,
            "Internal error",
            f"something went wrong on our side ({type(exc).__name__}); try again, and tell "
            "the operator if it keeps happening",
            "internal",
        )
