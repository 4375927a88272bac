"""Hosted models as the catalog sees them, read from Prefect deployments.

Each hosted version is one deployment ``<model>@<version>`` tagged
``acc:model:…``; its hosting record (title, owner, code pin …) travels in the
deployment's parameter schema under ``x-accelerator``. Listing filters on tags
in the server, so it never reads deployments that are not hosted models.

The catalog lists models, not versions: each model's *heads* (per scope, the
version a launch without one would run) carry ``acc:head``, so listing reads
one deployment a model however many versions it has. Publishing and every
status change mark the heads again (:func:`mark_heads`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import semver
from pydantic import BaseModel, Field

from accelerator_prefect.access import Principal, may_run, may_see, visible_tags
from accelerator_prefect.data import DataRemote
from accelerator_prefect.environments import EnvironmentRecord
from accelerator_prefect.errors import NotFound
from accelerator_prefect.manifest import InputMapping, OutputMapping, Scope, SecretSpec, Status
from accelerator_prefect.provenance import DataRecord
from accelerator_prefect.validation import EXTENSION_KEY

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.responses import DeploymentResponse

HOSTED_TAG = "acc:hosted"
HEAD_TAG = "acc:head"  # per model and scope, the version the catalog lists


def tag(kind: str, value: str) -> str:
    """A hosting tag, e.g. ``tag("model", "climate-downscaling")``."""
    return f"acc:{kind}:{value}"


class HostingRecord(BaseModel):
    """What publishing records about a version beyond Prefect's own fields."""

    title: str
    owner: str
    project: str
    scope: Scope
    status: Status
    tags: list[str] = Field(default_factory=list)
    manifest: dict[str, Any] = Field(default_factory=dict)
    repository: str
    commit: str | None = None
    dirty: bool = False
    code_fingerprint: str
    schema_fingerprint: str
    published_at: datetime
    published_by: str
    data: list[DataRecord] = Field(default_factory=list)  # DVC hashes this version pins
    data_remote: DataRemote | None = None
    replaced_by: str | None = None  # the version to use instead, once deprecated
    status_changed_at: datetime | None = None
    status_changed_by: str | None = None
    # Who may see and run it is the model's: set for every version at once (``acc access``).
    scope_changed_at: datetime | None = None
    scope_changed_by: str | None = None
    # The routine calls its jobflow declares (a run's page counts "k of n" from the start);
    # None for versions published before it was counted.
    routines: int | None = None
    # The libraries this version runs with, locked at publish (None: the platform's own).
    environment: EnvironmentRecord | None = None


def hosting_tags(
    name: str, version: str, record: HostingRecord, *, head: bool = False
) -> list[str]:
    """The deployment tags of a hosted version: what the server filters on."""
    tags = [
        HOSTED_TAG,
        tag("model", name),
        tag("version", version),
        tag("owner", record.owner),
        tag("project", record.project),
        tag("scope", record.scope.value),
        tag("status", record.status.value),
        *record.tags,
    ]
    if record.scope == Scope.project:  # whom the scope opens it to: the server filters on it
        tags.append(members_tag(record.project))
    if record.dirty:
        tags.append("acc:dirty")
    return [*tags, HEAD_TAG] if head else tags


def members_tag(project: str) -> str:
    """The tag of the versions ``project``'s members may see for being members (those of
    scope ``project``): a member's lookup of a private model of their project reads no
    version of it, as for a model that does not exist."""
    return tag("members", project)


async def tag_members(client: PrefectClient) -> int:
    """Give :func:`members_tag` to the versions of scope ``project`` published before it
    was made (``acc up`` does at start); how many were changed."""
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    changed, offset, page = 0, 0, 200
    wanted = [HOSTED_TAG, tag("scope", Scope.project.value)]
    while True:
        batch = await client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=wanted)),
            limit=page,
            offset=offset,
        )
        for deployment in batch:
            version = hosted_version(deployment, "")
            if version is None or version.record.scope != Scope.project:
                continue
            members = members_tag(version.record.project)
            if members not in deployment.tags:
                tags = [*deployment.tags, members]
                await client.update_deployment(deployment.id, DeploymentUpdate(tags=tags))
                changed += 1
        if len(batch) < page:
            return changed
        offset += page


class HostedVersion(BaseModel):
    """One published version of a hosted model (one Prefect deployment)."""

    name: str
    version: str
    description: str
    record: HostingRecord
    deployment_id: UUID
    deployment_name: str
    flow_name: str
    work_pool: str | None
    parameter_schema: dict[str, Any]
    default_parameters: dict[str, Any]
    workspace: str | None = None  # the Prefect API it lives on, when read across workspaces
    head: bool = False  # listed by the catalog (see :func:`mark_heads`)

    @property
    def title(self) -> str:
        return self.record.title

    @property
    def status(self) -> Status:
        return self.record.status

    @property
    def input_mapping(self) -> InputMapping:
        """What a launcher may select, as the manifest said when it was published."""
        return InputMapping.model_validate(self.record.manifest.get("inputs") or {})

    @property
    def input_samples(self) -> list[str]:
        """The sample inputs the manifest names (``acc://`` files; a folder ends with ``/``),
        those in the version's own project area only: readable by whoever may run it."""
        area = f"acc://{self.record.project}/"
        return [s for s in self.input_mapping.samples if s.startswith(area) and s != area]

    @property
    def output_mapping(self) -> OutputMapping:
        """Where runs write and what their tables' columns mean, as published."""
        return OutputMapping.model_validate(self.record.manifest.get("output") or {})

    @property
    def secrets(self) -> dict[str, SecretSpec]:
        """The credentials a launcher supplies, by name (values never live here)."""
        raw = self.record.manifest.get("secrets") or {}
        return {name: SecretSpec.model_validate(spec) for name, spec in raw.items()}

    @property
    def rank(self) -> tuple[bool, bool, semver.Version]:
        """Orders versions as :func:`pick_version` chooses: active releases first, then
        active pre-releases, then the rest; newer before older within each."""
        active = self.status == Status.active
        return (active and not self.semver.prerelease, active, self.semver)

    @property
    def semver(self) -> semver.Version:
        return semver.Version.parse(self.version)

    def _access(self) -> dict[str, Any]:
        record = self.record
        return {
            "model": self.name,
            "version": self.version,
            "owner": record.owner,
            "project": record.project,
            "scope": record.scope,
        }

    def visible_to(self, principal: Principal) -> bool:
        """Whether ``principal`` may see this version (the access layer decides)."""
        return may_see(principal, **self._access())

    def runnable_by(self, principal: Principal) -> bool:
        """Whether ``principal`` may launch this version (the access layer decides)."""
        return may_run(principal, **self._access())


class HostedModel(BaseModel):
    """A model with all its versions, newest first."""

    name: str
    versions: list[HostedVersion]

    @property
    def latest(self) -> HostedVersion:
        """The version a launch without one runs: the newest active release, else the
        newest version."""
        try:
            return pick_version(self, None)
        except NotFound:
            return self.versions[0]

    def listed(self) -> HostedModel | None:
        """The versions a launcher may choose from: archived ones hidden (``None`` if all are)."""
        shown = [v for v in self.versions if v.status != Status.archived]
        return self.model_copy(update={"versions": shown}) if shown else None


def hosted_version(deployment: DeploymentResponse, flow_name: str) -> HostedVersion | None:
    """The hosted version behind a deployment, or ``None`` if it is not one."""
    schema = dict(deployment.parameter_openapi_schema or {})
    raw = schema.pop(EXTENSION_KEY, None)
    if raw is None or "@" not in deployment.name:
        return None
    name, version = deployment.name.rsplit("@", 1)
    return HostedVersion(
        name=name,
        version=version,
        description=deployment.description or "",
        record=HostingRecord.model_validate(raw),
        deployment_id=deployment.id,
        deployment_name=deployment.name,
        flow_name=flow_name,
        work_pool=deployment.work_pool_name,
        parameter_schema=schema,
        default_parameters=dict(deployment.parameters or {}),
        head=HEAD_TAG in deployment.tags,
    )


async def read_versions(
    client: PrefectClient,
    *,
    model: str | None = None,
    extra_tags: list[str] | None = None,
    principal: Principal | None = None,
    any_tags: list[str] | None = None,
) -> list[HostedVersion]:
    """Hosted versions, filtered in the server by tags (all of one model if named;
    with ``any_tags``, those carrying at least one of them).

    With a ``principal``, only the versions they may see: the server narrows
    by tags, then :func:`~accelerator_prefect.access.may_see` decides.
    """
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    tags = [HOSTED_TAG, *(extra_tags or [])]
    if model:
        tags.append(tag("model", model))
    if principal is not None:
        visible = visible_tags(principal)
        if visible is not None:
            any_tags = [t for t in visible if any_tags is None or t in any_tags]
    if any_tags == []:
        return []
    deployments: list[DeploymentResponse] = []
    offset, page = 0, 200
    while True:
        batch = await client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=tags, any_=any_tags)),
            limit=page,
            offset=offset,
        )
        deployments += batch
        if len(batch) < page:
            break
        offset += page
    flow_names = await _flow_names(client, {d.flow_id for d in deployments})
    versions = [hosted_version(d, flow_names.get(d.flow_id, "")) for d in deployments]
    found = [
        v for v in versions if v is not None and (principal is None or v.visible_to(principal))
    ]
    return sorted(found, key=lambda v: (v.name, v.semver), reverse=True)


# A flow's name never changes (Prefect has no rename, and a new flow gets a new id),
# so each is read from the server once per process, not on every listing or launch.
_FLOW_NAMES: dict[UUID, str] = {}


async def _flow_names(client: PrefectClient, ids: set[UUID]) -> dict[UUID, str]:
    missing = ids - _FLOW_NAMES.keys()
    if missing:
        from prefect.client.schemas.filters import FlowFilter, FlowFilterId

        flows = await client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=list(missing))))
        _FLOW_NAMES.update({f.id: f.name for f in flows})
    return {i: _FLOW_NAMES[i] for i in ids if i in _FLOW_NAMES}


async def read_listing(client: PrefectClient, principal: Principal) -> list[HostedVersion]:
    """The newest listed version of each model ``principal`` may see (archived ones never).

    Reads the heads only: which versions a principal may see depends on a version's
    scope alone (owner and project are the model's), so the newest visible version
    is the newest of the visible heads. A shared link may open one version, not the
    rest of its scope, so the models a principal holds links to are read in full.
    """
    linked = sorted({tag("model", g.model) for g in principal.links})
    heads, opened = await asyncio.gather(
        read_versions(client, extra_tags=[HEAD_TAG], principal=principal),
        read_versions(client, principal=principal, any_tags=linked) if linked else _nothing(),
    )
    through_links = {v.name for v in opened}
    candidates = [v for v in heads if v.name not in through_links]
    candidates += [v for v in opened if v.status != Status.archived]
    return [model.latest for model in group_models(candidates)]


async def _nothing() -> list[HostedVersion]:
    return []


def heads(versions: list[HostedVersion]) -> set[UUID]:
    """The deployments the catalog lists among one model's ``versions``: for each scope,
    the version a launch without one would run (none of an archived-only scope)."""
    best: dict[Scope, HostedVersion] = {}
    for v in versions:
        held = best.get(v.record.scope)
        if v.status != Status.archived and (held is None or v.rank > held.rank):
            best[v.record.scope] = v
    return {v.deployment_id for v in best.values()}


async def mark_heads(client: PrefectClient, model: str) -> None:
    """Tag the heads of ``model`` with ``acc:head`` and untag its other versions.

    Runs after every publish and status change; it reads the model's versions
    afresh, so the last change to land leaves the heads right.
    """
    from prefect.client.schemas.actions import DeploymentUpdate

    versions = await read_versions(client, model=model)
    wanted = heads(versions)
    for v in versions:
        head = v.deployment_id in wanted
        if head != v.head:
            tags = hosting_tags(v.name, v.version, v.record, head=head)
            await client.update_deployment(v.deployment_id, DeploymentUpdate(tags=tags))


def group_models(versions: list[HostedVersion]) -> list[HostedModel]:
    """Versions grouped into models, models by name, versions newest first."""
    by_name: dict[str, list[HostedVersion]] = {}
    for v in versions:
        by_name.setdefault(v.name, []).append(v)
    return [
        HostedModel(name=name, versions=sorted(vs, key=lambda v: v.semver, reverse=True))
        for name, vs in sorted(by_name.items())
    ]


async def read_model(
    client: PrefectClient, model: str, principal: Principal | None = None
) -> HostedModel:
    """One hosted model with every version (``principal`` may see), or :class:`NotFound`."""
    versions = await read_versions(client, model=model, principal=principal)
    if not versions:
        raise NotFound(f"model {model!r} not found (see `acc list` for the hosted models)")
    return group_models(versions)[0]


def pick_version(model: HostedModel, version: str | None) -> HostedVersion:
    """The version asked for, or the newest active release (a pre-release such as
    ``2.0.0-rc.1`` only when nothing else is active)."""
    if version is None:
        active = [v for v in model.versions if v.status == Status.active]
        if not active:
            raise NotFound(f"model {model.name!r} has no active version; name one with --version")
        releases = [v for v in active if not v.semver.prerelease]
        return (releases or active)[0]
    for v in model.versions:
        if v.version == version:
            return v
    known = ", ".join(v.version for v in model.versions)
    raise NotFound(f"{model.name}: version {version!r} not found (published: {known})")
