"""``/models``: the catalog, one model, its versions and their lifecycle, usage, launch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from accelerator_prefect.audit import AuditEntry
from accelerator_prefect.catalog import HostedModel
from accelerator_prefect.manifest import Status
from accelerator_prefect.portal.deps import Acc
from accelerator_prefect.portal.problems import responses
from accelerator_prefect.portal.runs import run_as_out, run_out, wait_seconds
from accelerator_prefect.portal.schemas import (
    AccessRequest,
    Caller,
    Forgotten,
    LaunchRequest,
    RunOut,
    StatusRequest,
    VersionAction,
    WebhookSecret,
)
from accelerator_prefect.usage import UsageRow
from accelerator_prefect.versions import VersionInfo

router = APIRouter(tags=["models"])


def _public(model: HostedModel) -> HostedModel:
    """The model without where it lives on the back end (Prefect URLs are not for users)."""
    versions = [v.model_copy(update={"workspace": None}) for v in model.versions]
    return model.model_copy(update={"versions": versions})


@router.get(
    "/me",
    response_model=Caller,
    summary="Who this request acts for",
    responses=responses(401, 429, 503),
)
async def me(acc: Acc) -> Caller:
    principal = await acc.principal()
    return Caller(
        name=principal.name,
        operator=principal.operator,
        guest=principal.guest,
        projects={k: str(v) for k, v in principal.projects.items()},
        area=f"acc://{principal.own_area}/",
    )


@router.get(
    "/me/webhook-secret",
    response_model=WebhookSecret,
    summary="The secret your launches' webhooks are signed with",
    responses=responses(401, 429, 503),
)
async def webhook_secret(acc: Acc) -> WebhookSecret:
    import asyncio

    from accelerator_prefect.webhooks import caller_secret

    principal = await acc.principal()
    return WebhookSecret(
        secret=await asyncio.to_thread(caller_secret, acc.settings, principal.name)
    )


@router.get(
    "/models",
    response_model=list[HostedModel],
    summary="The models you may see",
    responses=responses(401, 429, 503),
)
async def list_models(acc: Acc) -> list[HostedModel]:
    return [_public(m) for m in await acc.catalog()]


@router.get(
    "/models/{model}",
    response_model=HostedModel,
    summary="One model, every version",
    responses=responses(401, 404, 422, 429, 503),
)
async def get_model(model: str, acc: Acc) -> HostedModel:
    return _public(await acc.get(model))


@router.get(
    "/models/{model}/versions",
    response_model=list[VersionInfo],
    summary="Every version of a model, with its status and run counts",
    responses=responses(401, 404, 422, 429, 503),
)
async def versions(model: str, acc: Acc) -> list[VersionInfo]:
    return await acc.versions(model)


@router.post(
    "/models/{model}/versions/{version}/{action}",
    response_model=HostedModel,
    summary="Deprecate, archive or restore a version (owners, operators)",
    responses=responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def set_status(
    model: str,
    version: str,
    action: VersionAction,
    acc: Acc,
    body: StatusRequest | None = None,
) -> HostedModel:
    status = {"deprecate": Status.deprecated, "archive": Status.archived, "restore": Status.active}
    replaced_by = body.replaced_by if body else None
    await acc.set_status(model, version, status[action], replaced_by)
    return _public(await acc.get(model))


@router.put(
    "/models/{model}/access",
    response_model=HostedModel,
    summary="Set who may see and run a model, every version at once (owners, operators)",
    responses=responses(400, 401, 403, 404, 413, 422, 429, 503),
)
async def set_access(model: str, body: AccessRequest, acc: Acc) -> HostedModel:
    return _public(await acc.set_access(model, body.scope))


@router.delete(
    "/models/{model}/secrets",
    response_model=Forgotten,
    summary="Forget the secrets you asked to be remembered for this model",
    responses=responses(401, 404, 429, 503),
)
async def forget_secrets(model: str, acc: Acc) -> Forgotten:
    return Forgotten(forgotten=await acc.forget_secrets(model))


@router.get(
    "/models/{model}/usage",
    response_model=list[UsageRow],
    summary="Runs, users, success rate and durations per version and day (owners, operators)",
    responses=responses(401, 403, 404, 422, 429, 503),
)
async def usage(
    model: str,
    acc: Acc,
    days: Annotated[float, Query(gt=0, le=3660, description="How far back, in days.")] = 30,
    since: Annotated[
        datetime | None, Query(description="From this moment (instead of `days`).")
    ] = None,
    until: Annotated[datetime | None, Query(description="Up to this moment.")] = None,
) -> list[UsageRow]:
    return await acc.usage(model, since or datetime.now(UTC) - timedelta(days=days), until)


@router.get(
    "/models/{model}/audit",
    response_model=list[AuditEntry],
    summary="Who published, shared, changed, launched and cancelled what (owners, operators)",
    responses=responses(401, 403, 404, 422, 429, 503),
)
async def audit(
    model: str,
    acc: Acc,
    limit: Annotated[int, Query(ge=1, le=2000, description="At most this many entries.")] = 500,
) -> list[AuditEntry]:
    return await acc.audit(model, limit)


@router.post(
    "/models/{model}/launch",
    response_model=RunOut,
    status_code=201,
    summary="Launch a run: conf, inputs, output and secrets are checked first",
    description="A refused launch creates no run and lists every problem with its field path. "
    "`Idempotency-Key: K` makes at most one run per (caller, K); `Prefer: wait=N` holds the "
    "answer until the run ends or N seconds pass.",
    responses=responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def launch(
    model: str,
    body: LaunchRequest,
    acc: Acc,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> RunOut:
    from accelerator_prefect import webhooks
    from accelerator_prefect.errors import ValidationFailed

    if body.webhook is not None:
        principal = await acc.principal()
        problems = webhooks.webhook_problems(body.webhook, acc.settings)
        if principal.guest:  # every holder of a link is one name, so one signing secret
            problems = ["webhook: a shared link's guests cannot ask for webhooks"]
        if problems:
            raise ValidationFailed(problems)
    created, notice = await acc.launch_info(
        model,
        body.conf,
        version=body.version,
        inputs=body.inputs,
        output=body.output,
        secrets=body.secrets,
        remember=body.remember,
        via="portal",
        idempotency_key=idempotency_key,
    )
    run_id, workspace = created.id, created.workspace
    if body.webhook is not None:
        caller = (await acc.principal()).name
        await webhooks.register(
            await acc.client(), run_id, body.webhook, caller, workspace=workspace
        )
    response.headers["Location"] = f"../runs/{run_id}"
    wait = wait_seconds(prefer)
    # Without a wait, the run as created is the answer: no read back.
    out = (
        run_as_out(created)
        if wait is None
        else await run_out(acc, run_id, workspace, wait, response)
    )
    return out.model_copy(update={"notice": notice})
