"""The lifecycle of hosted versions: active → deprecated → archived, and back.

A deprecated version still runs, but every surface warns and names the
version that replaces it; an archived version is hidden from the catalog, its
deployment is paused and new launches are refused, while its runs and outputs
stay readable. The status lives where the server can filter on it (the
deployment's ``acc:status:…`` tag) and in the version's hosting record.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from accelerator_prefect.catalog import HostedModel, HostedVersion, hosting_tags, mark_heads
from accelerator_prefect.errors import (
    AcceleratorError,
    NotFound,
    RuntimeMismatch,
    VersionArchived,
)
from accelerator_prefect.manifest import Scope, Status
from accelerator_prefect.validation import EXTENSION_KEY

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from accelerator_prefect.catalog import HostingRecord


@dataclass(frozen=True)
class VersionInfo:
    """One version as ``acc versions`` lists it."""

    model: str
    version: str
    status: Status
    replaced_by: str | None
    published_at: datetime
    published_by: str
    commit: str | None
    dirty: bool
    runs: int


def deprecation_notice(hosted: HostedVersion) -> str | None:
    """What to warn a launcher of a deprecated version, or ``None``."""
    if hosted.status != Status.deprecated:
        return None
    instead = (
        f"use version {hosted.record.replaced_by} instead"
        if hosted.record.replaced_by
        else "its owner has not named a replacement yet"
    )
    return f"{hosted.name}@{hosted.version} is deprecated: {instead}"


def refuse_archived(model: HostedModel, hosted: HostedVersion) -> None:
    """Raise :class:`VersionArchived` if ``hosted`` takes no new runs."""
    if hosted.status != Status.archived:
        return
    active = [v for v in model.versions if v.status == Status.active]
    hint = (
        f"launch version {active[0].version}, the newest active one"
        if active
        else "no version of it takes new runs"
    )
    raise VersionArchived(
        f"{hosted.name}@{hosted.version} is archived: it takes no new runs (its runs and "
        f"outputs stay readable); {hint}"
    )


_server_versions: dict[str, tuple[float, str]] = {}
SERVER_VERSION_SECONDS = 60.0
"""How long a client trusts the Prefect server's version it read (a server upgrade is
seen within a minute)."""


async def refuse_mismatched_runtime(client: PrefectClient, hosted: HostedVersion) -> None:
    """Raise :class:`RuntimeMismatch` if ``hosted`` locks a Prefect whose major version
    differs from the server's: its runtime could not talk to the server, and the version
    never runs on another one."""
    environment = hosted.record.environment
    locked = environment.packages.get("prefect") if environment is not None else None
    if locked is None:
        return
    key = str(client.api_url)
    now = time.monotonic()
    cached = _server_versions.get(key)
    if cached is None or now - cached[0] > SERVER_VERSION_SECONDS:
        cached = (now, await client.api_version())
        _server_versions[key] = cached
    server = cached[1]
    if locked.split(".", 1)[0] != server.split(".", 1)[0]:
        raise RuntimeMismatch(
            f"{hosted.name}@{hosted.version} runs with Prefect {locked}, locked in its "
            f"environment, which cannot talk to this platform's Prefect server ({server}); "
            "its owner can publish a new version, locked with the platform's current runtime"
        )


def _replacement(model: HostedModel, hosted: HostedVersion, replaced_by: str | None) -> str | None:
    if replaced_by is None:
        newer = [
            v for v in model.versions if v.status == Status.active and v.semver > hosted.semver
        ]
        return newer[-1].version if newer else None  # the oldest newer one: the closest
    if replaced_by == hosted.version:
        raise AcceleratorError(f"{hosted.name}@{hosted.version} cannot replace itself")
    for v in model.versions:
        if v.version == replaced_by:
            if v.status == Status.archived:
                raise AcceleratorError(
                    f"{hosted.name}@{replaced_by} is archived and cannot replace "
                    f"{hosted.version}; restore it first, or name an active version"
                )
            return replaced_by
    known = ", ".join(v.version for v in model.versions)
    raise NotFound(f"{hosted.name}: version {replaced_by!r} not found (published: {known})")


async def set_status(
    client: PrefectClient,
    model: HostedModel,
    version: str,
    status: Status,
    *,
    by: str,
    replaced_by: str | None = None,
) -> HostedVersion:
    """Move ``model@version`` to ``status``; returns the version as it now is.

    Deprecating names the replacement (``replaced_by``, else the closest newer
    active version); archiving pauses the deployment; restoring makes it active.
    """
    hosted = next((v for v in model.versions if v.version == version), None)
    if hosted is None:
        known = ", ".join(v.version for v in model.versions)
        raise NotFound(f"{model.name}: version {version!r} not found (published: {known})")
    replacement = _replacement(model, hosted, replaced_by) if status == Status.deprecated else None
    record = hosted.record.model_copy(
        update={
            "status": status,
            "replaced_by": replacement,
            "status_changed_at": datetime.now(UTC),
            "status_changed_by": by,
        }
    )
    changed = await _save(client, hosted, record, paused=status == Status.archived)
    await mark_heads(client, model.name)
    return changed


async def _save(
    client: PrefectClient, hosted: HostedVersion, record: HostingRecord, **update: Any
) -> HostedVersion:
    """Write ``record`` to ``hosted``'s deployment: its tags (what the server filters on)
    and the copy in its parameter schema, with any other deployment ``update``."""
    from prefect.client.schemas.actions import DeploymentUpdate

    await client.update_deployment(
        hosted.deployment_id,
        DeploymentUpdate(
            tags=hosting_tags(hosted.name, hosted.version, record, head=hosted.head),
            parameter_openapi_schema={
                **hosted.parameter_schema,
                EXTENSION_KEY: record.model_dump(mode="json"),
            },
            **update,
        ),
    )
    return hosted.model_copy(update={"record": record})


async def set_scope(
    client: PrefectClient, model: HostedModel, scope: Scope, *, by: str
) -> HostedModel:
    """Give every version of ``model`` the scope ``scope`` (who may see and run it), with
    who changed it and when; no code changes and nothing is published again. The scope
    stays a tag of each version's deployment, where listing filters on it."""
    now = datetime.now(UTC)
    changed = {"scope": scope, "scope_changed_at": now, "scope_changed_by": by}
    versions = await asyncio.gather(
        *(_save(client, v, v.record.model_copy(update=changed)) for v in model.versions)
    )
    return model.model_copy(update={"versions": list(versions)})


async def version_infos(client: PrefectClient, model: HostedModel) -> list[VersionInfo]:
    """Every version of ``model``, newest first, with how many runs each has had.

    Counting happens in the server, one count per version.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    counts = await asyncio.gather(
        *(
            client.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[v.deployment_id])
                )
            )
            for v in model.versions
        )
    )
    return [
        VersionInfo(
            model=v.name,
            version=v.version,
            status=v.status,
            replaced_by=v.record.replaced_by,
            published_at=v.record.published_at,
            published_by=v.record.published_by,
            commit=v.record.commit,
            dirty=v.record.dirty,
            runs=count,
        )
        for v, count in zip(model.versions, counts, strict=True)
    ]
