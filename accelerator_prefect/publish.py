"""Publish a manifest as the Prefect deployment ``<model>@<version>``.

A published version is immutable: its deployment pins the code to a git
commit through a pull step, and publishing the same version again with other
code or another parameter schema is refused unless forced. Re-publishing an
unchanged manifest is a no-op; changed metadata (description, scope, tags …)
updates the deployment and keeps the pinned code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from accelerator_prefect.access import Principal, may_publish
from accelerator_prefect.catalog import (
    HostedVersion,
    HostingRecord,
    hosting_tags,
    mark_heads,
    read_versions,
)
from accelerator_prefect.errors import AccessDenied, ManifestError, PublishError
from accelerator_prefect.manifest import InputMapping, Manifest, Status, load_manifest
from accelerator_prefect.mapping import constrain_schema
from accelerator_prefect.validation import EXTENSION_KEY

if TYPE_CHECKING:
    from git import Repo
    from prefect.client.orchestration import PrefectClient

    from accelerator_prefect.data import DataRemote
    from accelerator_prefect.provenance import DataRecord

PublishStatus = Literal["created", "updated", "unchanged", "replaced"]


@dataclass(frozen=True)
class PublishResult:
    """What publishing one manifest did."""

    model: str
    version: str
    status: PublishStatus
    deployment_id: str
    commit: str | None
    dirty: bool

    def __str__(self) -> str:
        pin = "working tree (dirty)" if self.dirty else f"commit {(self.commit or '')[:12]}"
        return f"{self.model}@{self.version}: {self.status} ({pin})"


@dataclass(frozen=True)
class CodeSource:
    """The jobflow's code as found in its git repository."""

    root: Path
    repository: str
    commit: str | None
    dirty: bool
    fingerprint: str


def _open_repo(manifest_path: Path) -> Repo:
    from git import InvalidGitRepositoryError, NoSuchPathError, Repo

    try:
        return Repo(manifest_path.resolve().parent, search_parent_directories=True)
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise PublishError(
            f"{manifest_path}: not inside a git repository; hosted code is pinned to a commit "
            "(run `git init` and commit the jobflow first)"
        ) from None


def _code_source(repo: Repo, manifest: Manifest, repository: str | None) -> CodeSource:
    root = Path(str(repo.working_tree_dir))
    folder = str(Path(manifest.entrypoint_path).parent)
    files = repo.git.ls_files("-co", "--exclude-standard", "--", folder).splitlines()
    digest = hashlib.sha256()
    for name in sorted(f for f in files if (root / f).is_file()):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    changed = [d.a_path for d in repo.index.diff(None)] if repo.head.is_valid() else []
    staged = [d.a_path for d in repo.index.diff("HEAD")] if repo.head.is_valid() else []
    untracked = repo.git.ls_files("-o", "--exclude-standard", "--", folder).splitlines()
    dirty_files = sorted({*changed, *staged, *untracked})
    return CodeSource(
        root=root,
        repository=repository or str(root),
        commit=repo.head.commit.hexsha if repo.head.is_valid() else None,
        dirty=bool(dirty_files) or not repo.head.is_valid(),
        fingerprint=digest.hexdigest(),
    )


def _dirty_message(repo: Repo, source: CodeSource) -> str:
    status = repo.git.status("--short").splitlines()[:8]
    listing = "\n".join(f"    {line}" for line in status)
    return (
        f"the git work tree at {source.root} has uncommitted changes; commit them so the "
        f"version pins exactly the code that runs, or pass --allow-dirty (recorded on the "
        f"deployment):\n{listing}"
    )


def _load_schema(manifest: Manifest, manifest_path: Path, root: Path) -> tuple[str, dict[str, Any]]:
    from prefect.flows import Flow, load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    entry = root / manifest.entrypoint_path
    if not entry.is_file():
        raise ManifestError(f"{manifest_path}: jobflow: {manifest.entrypoint_path} does not exist")
    try:
        flow = load_flow_from_entrypoint(
            f"{entry}:{manifest.function_name}", use_placeholder_flow=False
        )
    except Exception as exc:
        raise ManifestError(
            f"{manifest_path}: jobflow: cannot load {manifest.jobflow}: {exc}"
        ) from None
    if not isinstance(flow, Flow):
        raise ManifestError(f"{manifest_path}: jobflow: {manifest.jobflow} is not a @jobflow")
    return flow.name, parameter_schema(flow).model_dump_for_openapi()


def _fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _check_mappings(manifest: Manifest, schema: dict[str, Any], path: Path) -> None:
    """A manifest may only constrain parameters its jobflow takes."""
    properties = schema.get("properties", {})
    if "secrets" not in properties and manifest.secrets:
        raise ManifestError(
            f"{path}: secrets: the jobflow {manifest.jobflow} takes no `secrets` parameter; "
            "add `secrets: Secrets` to its signature or remove the secrets"
        )
    if "inputs" not in properties and manifest.inputs != InputMapping():
        raise ManifestError(
            f"{path}: inputs: the jobflow {manifest.jobflow} takes no `inputs` parameter; "
            "add `inputs: Inputs` to its signature or remove the input mapping"
        )


def _default_parameters(manifest: Manifest, schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties", {})
    defaults: dict[str, Any] = {}
    if "inputs" in properties:
        defaults["inputs"] = {
            "selected_files": [],
            "selected_folders": [],
            "accepted_types": list(manifest.inputs.accepted_types),
        }
    if "output" in properties:
        location = (
            manifest.output.location.replace("{project}", manifest.project)
            .replace("{model}", manifest.name)
            .replace("{version}", manifest.version)
        )
        defaults["output"] = {"location": location}
    return defaults


def _pull_steps(record: HostingRecord, root: Path) -> list[dict[str, Any]]:
    if record.dirty:
        return [{"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}]
    checkout: dict[str, Any] = {
        "id": "code",
        "repository": record.repository,
        "commit": record.commit,
    }
    if record.data and record.data_remote is not None:
        checkout["data"] = [d.model_dump(mode="json") for d in record.data]
        checkout["data_remote"] = record.data_remote.model_dump(mode="json")
    return [
        {"accelerator_prefect.steps.checkout": checkout},
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ code.directory }}"}},
    ]


async def publish(
    client: PrefectClient,
    manifest_path: str | Path,
    *,
    published_by: str,
    default_work_pool: str,
    allow_dirty: bool = False,
    force: bool = False,
    repository: str | None = None,
    principal: Principal | None = None,
    elsewhere: list[HostedVersion] | None = None,
    data_remote: str | None = None,
) -> PublishResult:
    """Create or update the deployment ``<model>@<version>`` for one manifest.

    ``elsewhere``: versions of the same model found in other workspaces;
    ``data_remote``: the DVC remote to use when the repository names none.
    """
    path = Path(manifest_path)
    manifest = load_manifest(path)
    if principal is not None and not may_publish(principal, manifest.owner, manifest.project):
        raise AccessDenied(
            f"{path}: {principal.name} may not publish {manifest.name} as owner "
            f"{manifest.owner!r} in project {manifest.project!r}; authors of a project publish "
            "their own models into it, operators any model"
        )
    repo = _open_repo(path)
    source = _code_source(repo, manifest, repository)
    if source.dirty and not allow_dirty:
        raise PublishError(f"{manifest.name}@{manifest.version}: {_dirty_message(repo, source)}")
    flow_name, schema = _load_schema(manifest, path, source.root)
    _check_mappings(manifest, schema, path)
    schema = constrain_schema(schema, manifest)
    work_pool = manifest.work_pool or default_work_pool
    await _check_work_pool(client, work_pool, path)

    data, remote = (
        await asyncio.to_thread(_pin_data, manifest, source, data_remote)
        if manifest.data
        else ([], None)
    )

    published = await read_versions(client, model=manifest.name)
    _check_ownership(manifest, [*published, *(elsewhere or [])], principal, path)
    existing = next((v for v in published if v.version == manifest.version), None)
    record = HostingRecord(
        title=manifest.title,
        owner=manifest.owner,
        project=manifest.project,
        scope=manifest.access.scope,
        status=manifest.status,
        tags=manifest.tags,
        manifest=manifest.model_dump(mode="json"),
        repository=source.repository,
        commit=source.commit,
        dirty=source.dirty,
        code_fingerprint=source.fingerprint,
        data=data,
        data_remote=remote,
        schema_fingerprint=_fingerprint(schema),
        published_at=datetime.now(UTC),
        published_by=published_by,
    )
    status: PublishStatus = "created"
    if existing is not None:
        status, record = _compare(existing, record, manifest, force)
        if status == "unchanged":
            if existing.work_pool == work_pool:
                await mark_heads(client, manifest.name)  # heads of an earlier release's making
                return _result(manifest, status, str(existing.deployment_id), existing.record)
            status = "updated"

    deployment_id = await client.create_deployment(
        flow_id=await client.create_flow_from_name(flow_name),
        name=f"{manifest.name}@{manifest.version}",
        version=manifest.version,
        description=manifest.description,
        tags=hosting_tags(
            manifest.name, manifest.version, record, head=existing is not None and existing.head
        ),
        parameter_openapi_schema={**schema, EXTENSION_KEY: record.model_dump(mode="json")},
        parameters=_default_parameters(manifest, schema),
        enforce_parameter_schema=True,
        work_pool_name=work_pool,
        entrypoint=manifest.jobflow,
        pull_steps=_pull_steps(record, source.root),
        paused=record.status == Status.archived,
    )
    await mark_heads(client, manifest.name)
    return _result(manifest, status, str(deployment_id), record)


def _pin_data(
    manifest: Manifest, source: CodeSource, fallback: str | None
) -> tuple[list[DataRecord], DataRemote]:
    """The DVC hashes of the manifest's data at the version's commit, once the remote is
    known to hold every object they need."""
    from accelerator_prefect import data

    remote = data.default_remote(source.root, fallback or "")
    if not remote.url:
        raise PublishError(f"{manifest.name}: data: no DVC remote to keep the data in")
    commit = None if source.dirty else source.commit
    records = data.tracked(source.root, commit, manifest.data)
    gaps = data.missing(source.root, commit, remote, manifest.data)
    if gaps:
        raise PublishError(
            f"{manifest.name}@{manifest.version}: data: {', '.join(gaps)} not in the DVC remote "
            f"{remote.url}; push it first (`dvc push {' '.join(gaps)}`), so that this version "
            "can always be run again"
        )
    return records, remote


def _check_ownership(
    manifest: Manifest, published: list[HostedVersion], principal: Principal | None, path: Path
) -> None:
    """A model name belongs to its owner and project: nobody else adds versions to it,
    and no version changes hands (operators may move a model deliberately)."""
    if principal is not None and principal.operator:
        return
    for version in published:
        if (version.record.owner, version.record.project) != (manifest.owner, manifest.project):
            raise AccessDenied(
                f"{path}: the model name {manifest.name!r} is already taken by another owner "
                "or project; choose another name (an operator can move a model)"
            )


def _result(
    manifest: Manifest, status: PublishStatus, deployment_id: str, record: HostingRecord
) -> PublishResult:
    return PublishResult(
        manifest.name, manifest.version, status, deployment_id, record.commit, record.dirty
    )


def _compare(
    existing: HostedVersion, new: HostingRecord, manifest: Manifest, force: bool
) -> tuple[PublishStatus, HostingRecord]:
    """What re-publishing an existing version may do, and the record to keep."""
    old = existing.record
    same_code = (
        old.code_fingerprint == new.code_fingerprint
        and old.schema_fingerprint == new.schema_fingerprint
        and old.dirty == new.dirty
        and old.data == new.data
    )
    if not same_code:
        if not force:
            what = "code" if old.code_fingerprint != new.code_fingerprint else "parameter schema"
            what = "data" if old.data != new.data else what
            raise PublishError(
                f"{manifest.name}@{manifest.version} is already published with other {what} "
                f"(commit {(old.commit or 'working tree')[:12]}); a published version never "
                f"changes: bump `version` in the manifest, or pass --force to replace it"
            )
        return "replaced", new
    # Same code: keep the original pin and publication time, and where the version is in
    # its lifecycle (`acc deprecate/archive/restore` move it, not the manifest); only
    # metadata may change.
    kept = new.model_copy(
        update={
            "repository": old.repository,
            "commit": old.commit,
            "dirty": old.dirty,
            "data_remote": old.data_remote,
            "published_at": old.published_at,
            "published_by": old.published_by,
            "status": old.status,
            "replaced_by": old.replaced_by,
            "status_changed_at": old.status_changed_at,
            "status_changed_by": old.status_changed_by,
        }
    )
    unchanged = (
        kept.model_dump(exclude={"manifest"}) == old.model_dump(exclude={"manifest"})
        and kept.manifest == old.manifest
        and existing.description == manifest.description
    )
    return ("unchanged" if unchanged else "updated"), kept


async def _check_work_pool(client: PrefectClient, name: str, path: Path) -> None:
    from prefect.exceptions import ObjectNotFound

    try:
        await client.read_work_pool(name)
    except ObjectNotFound:
        raise PublishError(
            f"{path}: work_pool: {name!r} does not exist on the Prefect server; start the "
            f"platform with `acc up`, or create it with `prefect work-pool create {name}`"
        ) from None
