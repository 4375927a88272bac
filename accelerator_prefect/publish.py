"""Publish a manifest as the Prefect deployment ``<model>@<version>``.

A published version is immutable: its deployment pins the code to a git
commit through a pull step, and publishing the same version again with other
code or another parameter schema is refused unless forced. Re-publishing an
unchanged manifest is a no-op; changed metadata (description, scope, tags …)
updates the deployment and keeps the pinned code.

Two ways in, one way out: :func:`publish` takes the manifest from a git repository
on this machine (the platform's operators and services); :func:`publish_source`
takes a manifest sent through the portal with code the platform fetches itself (a
repository URL and commit, or an uploaded git bundle), and derives its schema in a
process holding no credentials (:mod:`accelerator_prefect.derive`). Both publish
through the same checks. :func:`publish_over_http` is the author's side of the
second: it sends the manifest and a bundle of the repository's HEAD to the portal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from accelerator_prefect.access import Principal, may_publish, may_see
from accelerator_prefect.catalog import (
    HostedVersion,
    HostingRecord,
    hosting_tags,
    mark_heads,
    read_versions,
)
from accelerator_prefect.derive import SCHEMA_TIMEOUT, derive_schema
from accelerator_prefect.errors import AccessDenied, ManifestError, PublishError
from accelerator_prefect.manifest import (
    InputMapping,
    Manifest,
    Scope,
    Status,
    load_manifest,
    parse_manifest,
)
from accelerator_prefect.mapping import constrain_schema
from accelerator_prefect.validation import EXTENSION_KEY, check_declaration_problems

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from git import Repo
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import WorkPool

    from accelerator_prefect.client import AsyncAccelerator
    from accelerator_prefect.data import DataRemote
    from accelerator_prefect.environments import EnvironmentRecord
    from accelerator_prefect.provenance import DataRecord
    from accelerator_prefect.storage import AccFileSystem

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
    warnings: tuple[str, ...] = ()
    """What the author should fix though it did not stop the publication (see
    :func:`conf_warnings`)."""

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
    for name in sorted(files):
        path = root / name
        if path.is_symlink():  # its target's name: what git keeps, never what it points at
            content = os.readlink(path).encode()
        elif path.is_file():
            content = path.read_bytes()
        else:
            continue
        digest.update(name.encode() + b"\0" + content + b"\0")
    for path in _environment_files(root, manifest):  # the libraries are part of the version
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
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


def _environment_files(root: Path, manifest: Manifest) -> list[Path]:
    """The files declaring the version's environment (and a uv.lock beside a pyproject)."""
    from accelerator_prefect import environments

    try:
        declared = environments.declared(root, manifest.environment)
    except environments.EnvironmentFailed:
        return []  # reported when the environment is prepared
    if declared is None:
        return []
    lock = declared.parent / "uv.lock"
    return [declared, lock] if declared.name == "pyproject.toml" and lock.is_file() else [declared]


def _status_listing(repo: Repo) -> str:
    status = repo.git.status("--short").splitlines()[:8]
    return "\n".join(f"    {line}" for line in status)


def _dirty_message(repo: Repo, source: CodeSource) -> str:
    return (
        f"the git work tree at {source.root} has uncommitted changes; commit them so the "
        f"version pins exactly the code that runs, or pass --allow-dirty (recorded on the "
        f"deployment):\n{_status_listing(repo)}"
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


def _check_mappings(manifest: Manifest, schema: dict[str, Any], path: str) -> None:
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
    unknown = check_declaration_problems(manifest.checks, schema)
    if unknown:
        raise ManifestError(f"{path}: {'; '.join(unknown)}")


def conf_warnings(schema: dict[str, Any]) -> list[str]:
    """What to fix in a jobflow's conf though it publishes: every model in it (the conf,
    its groups, the items of its lists) that accepts unknown fields, so that a misspelt
    setting is dropped without a word and the run uses the default."""
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    loose: dict[str, str] = {}

    def visit(node: Any, path: str, seen: frozenset[str]) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item, path, seen)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                visit(definitions.get(name), path, seen | {name})
        if node.get("properties") and node.get("additionalProperties") is not False:
            loose.setdefault(str(node.get("title") or path), path)
        for key, inner in (node.get("properties") or {}).items():
            visit(inner, f"{path}.{key}", seen)
        for key in ("items", "anyOf", "oneOf", "allOf"):
            visit(node.get(key), f"{path}[*]" if key == "items" else path, seen)

    visit(schema.get("properties", {}).get("conf"), "conf", frozenset())
    return [
        f"{where}: {title} accepts unknown fields, so a misspelt setting is ignored and the "
        "run uses its default; derive it from accelerator_prefect.Conf or set "
        "model_config = ConfigDict(extra='forbid')"
        for title, where in loose.items()
    ]


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
    first = (
        [{"accelerator_prefect.steps.environment": {"hash": record.environment.hash}}]
        if record.environment is not None
        else []
    )
    return first + _code_steps(record, root)


def _code_steps(record: HostingRecord, root: Path) -> list[dict[str, Any]]:
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
    home: Path | None = None,
) -> PublishResult:
    """Create or update the deployment ``<model>@<version>`` for one manifest, from the
    git repository it lies in on this machine.

    ``elsewhere``: versions of the same model found in other workspaces;
    ``data_remote``: the DVC remote to use when the repository names none;
    ``home``: the platform home whose ``environments`` folder its environment is built in
    (the settings' when ``None``).

    The jobflow is imported in this process: the code is on the caller's own disk, and
    the caller holds the platform's credentials already. Code that comes from anyone
    else is published with :func:`publish_source`, which imports it in a process of its
    own holding none.
    """
    path = Path(manifest_path)
    manifest = load_manifest(path)
    _check_publisher(principal, manifest, str(path))
    repo = _open_repo(path)
    source = _code_source(repo, manifest, repository)
    if source.dirty and not allow_dirty:
        raise PublishError(f"{manifest.name}@{manifest.version}: {_dirty_message(repo, source)}")
    environment, python = await _environment(client, manifest, source, str(path), home)
    if python is None:
        flow_name, schema = _load_schema(manifest, path, source.root)
    else:  # the jobflow imports the environment's libraries: derive it there
        derived = await derive_schema(source.root, manifest.jobflow, label=str(path), python=python)
        flow_name, schema = derived.name, derived.schema
    return await _deploy(
        client,
        manifest,
        source,
        flow_name,
        schema,
        label=str(path),
        published_by=published_by,
        default_work_pool=default_work_pool,
        force=force,
        principal=principal,
        elsewhere=elsewhere,
        data_remote=data_remote,
        environment=environment,
    )


def _check_publisher(principal: Principal | None, manifest: Manifest, label: str) -> None:
    if principal is not None and not may_publish(principal, manifest.owner, manifest.project):
        fix = (
            f"write owner: {principal.name} in it"
            if principal.author_in(manifest.project)
            else f"{principal.name} is not an author of {manifest.project} (see acc whoami)"
        )
        raise AccessDenied(
            f"{label}: {principal.name} may not publish {manifest.name} as owner "
            f"{manifest.owner!r} in project {manifest.project!r}; authors of a project publish "
            f"their own models into it, operators any model: {fix}"
        )


async def _deploy(
    client: PrefectClient,
    manifest: Manifest,
    source: CodeSource,
    flow_name: str,
    schema: dict[str, Any],
    *,
    label: str,
    published_by: str,
    default_work_pool: str,
    force: bool,
    principal: Principal | None,
    elsewhere: list[HostedVersion] | None,
    data_remote: str | None,
    pinned_data: tuple[list[DataRecord], DataRemote | None] | None = None,
    keep_code: Callable[[], Awaitable[None]] | None = None,
    environment: EnvironmentRecord | None = None,
) -> PublishResult:
    """Check what the version may be and create or update its deployment.

    ``pinned_data``: the data pins, when the caller took them already;
    ``keep_code``: stores the code where workers fetch it, called once every check has
    passed and only when the version takes this code (not when it keeps its pin);
    ``environment``: the locked environment the repository declares.
    """
    _check_mappings(manifest, schema, label)
    from accelerator_prefect.environments import task_runner_problem

    runner = task_runner_problem(environment, manifest.task_runner.kind)
    warnings = (
        *conf_warnings(schema),
        *await asyncio.to_thread(_sample_warnings, manifest),
        *([runner] if runner else []),
    )
    schema = constrain_schema(schema, manifest)
    work_pool = manifest.work_pool or default_work_pool
    pool = await _check_work_pool(client, work_pool, label)

    if pinned_data is not None:
        data, remote = pinned_data
    elif manifest.data:
        data, remote = await asyncio.to_thread(_pin_data, manifest, source, data_remote)
    else:
        data, remote = [], None

    published = await read_versions(client, model=manifest.name)
    _check_ownership(manifest, [*published, *(elsewhere or [])], principal, label)
    existing = next((v for v in published if v.version == manifest.version), None)
    scope = _model_scope(manifest, published)
    record = HostingRecord(
        title=manifest.title,
        owner=manifest.owner,
        project=manifest.project,
        scope=scope,
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
        routines=_declared_routines(manifest, source.root),
        environment=environment,
    )
    status: PublishStatus = "created"
    if existing is not None:
        status, record = _compare(existing, record, manifest, force)
        if status == "unchanged":
            if existing.work_pool == work_pool:
                await mark_heads(client, manifest.name)  # heads of an earlier release's making
                deployment = str(existing.deployment_id)
                return _result(manifest, status, deployment, existing.record, warnings)
            status = "updated"

    if keep_code is not None and status in ("created", "replaced"):
        await keep_code()
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
        job_variables={**_image_of(environment, pool), **_run_variables(manifest)},
        entrypoint=manifest.jobflow,
        pull_steps=_pull_steps(record, source.root),
        paused=record.status == Status.archived,
    )
    await mark_heads(client, manifest.name)
    return _result(manifest, status, str(deployment_id), record, warnings)


def _sample_warnings(manifest: Manifest) -> list[str]:
    """The samples the manifest names that are not in storage yet: "Use the sample inputs"
    would find nothing."""
    if not manifest.inputs.samples:
        return []
    from accelerator_prefect.settings import get_settings
    from accelerator_prefect.storage import AccFileSystem

    try:
        fs = AccFileSystem.from_settings(get_settings())
        missing = [(i, s) for i, s in enumerate(manifest.inputs.samples) if not fs.exists(s)]
    except Exception:  # storage this process cannot reach: nothing to say about it
        return []
    return [
        f"inputs.samples[{i}]: {uri} is not in storage yet, so the form's sample inputs find "
        f"nothing; put them there (acc put FILE {uri})"
        for i, uri in missing
    ]


def _model_scope(manifest: Manifest, published: list[HostedVersion]) -> Scope:
    """The scope a version is published with. Who may see and run a model is set for every
    version at once with `acc access`; a manifest whose `access.scope` repeats what the last
    publication declared (the same version's, else the newest's) keeps what the model has
    now, so a release never undoes `acc access`. One that says something new applies to the
    version it publishes: a new version may be staged privately (its owner tries it while
    everyone else keeps the released one), then opened with `acc access`."""
    if not published:
        return manifest.access.scope
    newest = max(published, key=lambda v: v.record.published_at)
    before = next((v for v in published if v.version == manifest.version), newest)
    declared = (before.record.manifest.get("access") or {}).get("scope")
    if declared != manifest.access.scope.value:
        return manifest.access.scope
    changed = [v for v in published if v.record.scope_changed_at is not None]
    if not changed:
        return before.record.scope
    latest = max(changed, key=lambda v: v.record.scope_changed_at or v.record.published_at)
    return latest.record.scope


async def _environment(
    client: PrefectClient,
    manifest: Manifest,
    source: CodeSource,
    label: str,
    home: Path | None = None,
) -> tuple[EnvironmentRecord | None, Path | None]:
    """The environment the repository declares, locked and built, and its interpreter
    (``None``, ``None``: it declares none, and the version runs with the platform's
    libraries). A version already published from the same code keeps the lock it has: a
    published version never changes. A lock that does not resolve or install is refused
    with uv's message."""
    from accelerator_prefect import environments
    from accelerator_prefect.settings import get_settings

    home = home or get_settings().home
    try:
        declared = environments.declared(source.root, manifest.environment)
        if declared is None:
            return None, None
        published = await read_versions(client, model=manifest.name)
        runner = manifest.task_runner.kind
        kept = next(
            (
                v.record.environment
                for v in published
                if v.version == manifest.version
                and v.record.code_fingerprint == source.fingerprint
                and v.record.environment is not None
                and environments.task_runner_problem(v.record.environment, runner) is None
            ),
            None,
        )
        if kept is not None:
            return kept, await asyncio.to_thread(environments.ensure, home, kept)
        # A dask model's lock gets the runtime's `dask` extra: its authors need not declare
        # prefect-dask, and get the versions the platform runs.
        record = await asyncio.to_thread(
            environments.lock, source.root, declared, home, environments.runtime_extras(runner)
        )
        return record, await asyncio.to_thread(environments.ensure, home, record)
    except environments.EnvironmentFailed as exc:
        raise PublishError(f"{label}: {manifest.name}@{manifest.version}: {exc}") from exc


def _declared_routines(manifest: Manifest, root: Path) -> int | None:
    """The routine calls the jobflow's source declares (read, not imported: code from the
    portal is imported only in a process of its own)."""
    from accelerator_prefect.jobflow import declared_routines

    try:
        text = (root / manifest.entrypoint_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return declared_routines(text, manifest.function_name)


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
    manifest: Manifest, published: list[HostedVersion], principal: Principal | None, path: str
) -> None:
    """A model name belongs to its owner and project: nobody else adds versions to it,
    and no version changes hands (operators may move a model deliberately).

    Whoever may see the model holding the name is told who holds it. Anyone else is told
    only that the name cannot be used, in words that say nothing of a model: a private
    model stays invisible, even to someone guessing its name.
    """
    if principal is not None and principal.operator:
        return
    held = [
        v
        for v in published
        if (v.record.owner, v.record.project) != (manifest.owner, manifest.project)
    ]
    if not held:
        return
    seen = [v for v in held if principal is None or _may_see(principal, v)]
    if not seen:
        raise AccessDenied(f"{path}: the name {manifest.name!r} cannot be used: choose another")
    holder = seen[0].record
    raise AccessDenied(
        f"{path}: the model name {manifest.name!r} is already taken by another owner or "
        f"project ({holder.owner}, in project {holder.project}); choose another name (an "
        "operator can move a model)"
    )


def _may_see(principal: Principal, version: HostedVersion) -> bool:
    record = version.record
    return may_see(
        principal,
        model=version.name,
        version=version.version,
        owner=record.owner,
        project=record.project,
        scope=record.scope,
    )


def _result(
    manifest: Manifest,
    status: PublishStatus,
    deployment_id: str,
    record: HostingRecord,
    warnings: tuple[str, ...] = (),
) -> PublishResult:
    return PublishResult(
        manifest.name,
        manifest.version,
        status,
        deployment_id,
        record.commit,
        record.dirty,
        warnings,
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
            "environment": old.environment,  # locked once: an upgrade does not change it
            "published_at": old.published_at,
            "published_by": old.published_by,
            "status": old.status,
            "replaced_by": old.replaced_by,
            "status_changed_at": old.status_changed_at,
            "status_changed_by": old.status_changed_by,
            "scope_changed_at": old.scope_changed_at if new.scope == old.scope else None,
            "scope_changed_by": old.scope_changed_by if new.scope == old.scope else None,
        }
    )
    unchanged = (
        kept.model_dump(exclude={"manifest"}) == old.model_dump(exclude={"manifest"})
        and kept.manifest == old.manifest
        and existing.description == manifest.description
    )
    return ("unchanged" if unchanged else "updated"), kept


async def _check_work_pool(client: PrefectClient, name: str, path: str) -> WorkPool:
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_work_pool(name)
    except ObjectNotFound:
        raise PublishError(
            f"{path}: work_pool: {name!r} does not exist on the Prefect server; start the "
            f"platform with `acc up`, or create it with `prefect work-pool create {name}`"
        ) from None


def _image_of(environment: EnvironmentRecord | None, pool: WorkPool) -> dict[str, Any]:
    """The job variables that start a version in its environment's image, on a pool whose
    jobs run in one (Docker, Kubernetes) when the operator names the images."""
    from accelerator_prefect.settings import get_settings

    template = get_settings().environment_image
    variables = (pool.base_job_template.get("variables") or {}).get("properties") or {}
    if environment is None or not template or "image" not in variables:
        return {}
    return {"image": template.replace("{hash}", environment.hash[:24])}


RUN_LIMITS_VARIABLE = "ACC_RUN_LIMITS"
"""The run's limits (the manifest's ``limits``, JSON): the worker applies them to its process."""
TASK_RUNNER_VARIABLE = "ACC_TASK_RUNNER"
"""The jobflow's task runner (the manifest's ``task_runner``, JSON), when not Prefect's own."""


def _run_variables(manifest: Manifest) -> dict[str, Any]:
    """The job variables that carry the manifest's run limits and task runner into the run's
    environment, on every kind of pool (none when the manifest sets neither)."""
    env: dict[str, str] = {}
    limits = manifest.limits.model_dump(exclude_none=True)
    if limits:
        env[RUN_LIMITS_VARIABLE] = json.dumps(limits, sort_keys=True)
    if manifest.task_runner.kind != "threads":
        env[TASK_RUNNER_VARIABLE] = json.dumps(manifest.task_runner.model_dump(), sort_keys=True)
    return {"env": env} if env else {}


# -- code the platform fetches: publishing through the portal ------------------------------------

CODE_AREA = ".platform/code"  # acc://.platform/code/<model>/<commit>.bundle: no user's area
GIT_TIMEOUT = 300.0  # seconds one git command of the platform's may take
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SCHEMES = ("https", "ssh", "git")


class PublishSettings(BaseSettings):
    """How the platform takes code that authors publish through the portal (``ACC_PUBLISH_*``)."""

    model_config = SettingsConfigDict(env_prefix="ACC_PUBLISH_", extra="ignore")

    repository_roots: list[Path] = Field(
        default_factory=list,
        description="Folders on the platform's machine under which authors may name a git "
        'repository by a file:// URL or path, as JSON (e.g. ["/srv/git"]); none by default: '
        "a local URL would let anyone make the platform read any repository on its disk.",
    )
    repository_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (`host` or `host:port`) a repository URL may name even when they "
        "resolve to loopback, private or link-local addresses (refused otherwise), as JSON, "
        'e.g. ["gitlab.internal"].',
    )
    max_bundle_bytes: int = Field(
        default=256 << 20, ge=1, description="The largest git bundle an author may upload."
    )
    schema_timeout: float = Field(
        default=SCHEMA_TIMEOUT,
        gt=0,
        description="Seconds importing an author's jobflow may take to derive its schema.",
    )


@dataclass(frozen=True)
class RepositoryCode:
    """Code the platform fetches from a git URL (https, ssh, git; file:// only under the
    folders the operator admits), at one commit (its full id)."""

    url: str
    commit: str


@dataclass(frozen=True)
class BundleCode:
    """Code an author uploads as a git bundle of a commit and its history
    (``git bundle create code.bundle HEAD``); ``commit`` defaults to the bundle's HEAD."""

    file: BinaryIO
    commit: str | None = None


@dataclass(frozen=True)
class _Fetched:
    source: CodeSource
    bundle: Path | None  # the platform's own bundle of the commit, to keep for the workers


def parse_manifest_text(text: str, label: str = "manifest") -> Manifest:
    """Read and validate a manifest sent as text; errors name ``label`` and each field."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{label}: not valid YAML{where}: {problem}") from None
    return parse_manifest(data, label)


async def publish_source(
    acc: AsyncAccelerator,
    manifest_text: str,
    code: RepositoryCode | BundleCode,
    *,
    label: str = "manifest",
    force: bool = False,
) -> PublishResult:
    """Publish a manifest with code the platform fetches itself, for ``acc``'s principal.

    The caller must be allowed to publish the model (an author of its project, as its
    owner, or an operator) before anything is fetched. The code is checked out in a
    scratch folder; its schema is derived by importing it in a process of its own that
    holds no credentials (:mod:`accelerator_prefect.derive`); the version is then
    published as :func:`publish` does (immutable versions, data pins, ownership of the
    name). Its pull step fetches the commit from the URL, or, for a bundle, from the
    platform's own bundle of that commit, kept in ``acc://.platform/code/<model>/``,
    where no user may write.
    """
    manifest = parse_manifest_text(manifest_text, label)
    principal = await acc.principal()
    _check_publisher(principal, manifest, label)
    settings = PublishSettings()
    client, url, work_pool = await acc.project_workspace(manifest.project)
    everywhere = await _versions_everywhere(acc, manifest.name)
    _check_ownership(manifest, everywhere, principal, label)  # before any code is fetched
    with tempfile.TemporaryDirectory(prefix="acc-publish-") as folder, ExitStack() as stack:
        fetched = await asyncio.to_thread(_fetch_code, code, Path(folder), manifest, settings)
        source = fetched.source
        pinned = (
            await asyncio.to_thread(_pin_data, manifest, source, acc.settings.data_remote)
            if manifest.data
            else ([], None)
        )
        # Opened before the author's code runs: what is kept is what the platform made.
        bundle = stack.enter_context(fetched.bundle.open("rb")) if fetched.bundle else None
        environment, python = await _environment(client, manifest, source, label, acc.settings.home)
        derived = await derive_schema(
            source.root,
            manifest.jobflow,
            timeout=settings.schema_timeout,
            label=label,
            python=python,
        )

        async def keep_code() -> None:
            if bundle is not None:
                await asyncio.to_thread(_keep_bundle, acc.storage_fs(), bundle, source.repository)

        return await _deploy(
            client,
            manifest,
            source,
            derived.name,
            derived.schema,
            label=label,
            published_by=principal.name,
            default_work_pool=work_pool,
            force=force,
            principal=principal,
            elsewhere=[v for v in everywhere if v.workspace != url],
            data_remote=acc.settings.data_remote,
            pinned_data=pinned,
            keep_code=keep_code,
            environment=environment,
        )


async def _versions_everywhere(acc: AsyncAccelerator, model: str) -> list[HostedVersion]:
    """Every version of ``model`` in every workspace, whoever may see it (for checks)."""
    versions = []
    for url, client in (await acc.workspaces()).items():
        for version in await read_versions(client, model=model):
            version.workspace = url
            versions.append(version)
    return versions


def _keep_bundle(fs: AccFileSystem, bundle: BinaryIO, uri: str) -> None:
    """Store the platform's bundle of a commit, unless an earlier publish of that very
    commit of the model stored it already (a commit id names its content)."""
    if fs.exists(uri):
        return
    bundle.seek(0)
    with fs.open(uri, "wb") as target:
        shutil.copyfileobj(bundle, target, 1 << 20)


def _fetch_code(
    code: RepositoryCode | BundleCode, scratch: Path, manifest: Manifest, settings: PublishSettings
) -> _Fetched:
    """Check the code out at its commit under ``scratch``/code, with git holding none of
    the configuration or credentials of the platform's user."""
    checkout = scratch / "code"
    git = _Git(scratch, checkout)
    git("init", "--quiet", str(checkout), cwd=scratch)
    bundle = None
    if isinstance(code, RepositoryCode):
        url, protocol = _admitted_url(code.url, settings)
        commit = _full_commit(code.commit)
        git.fetch(protocol, url, commit, f"commit {commit} from {url}")
        repository = url
    else:
        upload = scratch / "upload.bundle"
        _copy_capped(code.file, upload, settings.max_bundle_bytes)
        git(
            "bundle",
            "verify",
            "--quiet",
            str(upload),
            what="the bundle: expected a complete git bundle of a commit and its history "
            "(`git bundle create code.bundle HEAD`)",
        )
        commit = _full_commit(code.commit) if code.commit else _bundle_head(git, upload)
        git.fetch("file", str(upload), commit, f"commit {commit} from the bundle", shallow=False)
        # The platform keeps a bundle of its own making: this commit's history, one ref.
        git("update-ref", "refs/acc/code", commit)
        bundle = scratch / "code.bundle"
        git("bundle", "create", "--quiet", str(bundle), "refs/acc/code")
        repository = f"acc://{CODE_AREA}/{manifest.name}/{commit}.bundle"
    git("-c", "advice.detachedHead=false", "checkout", "--quiet", commit)
    if git("rev-parse", "HEAD") != commit:
        raise PublishError(f"{commit} is not a commit")
    from git import Repo

    repo = Repo(checkout)
    repo.git.update_environment(**git.env)
    source = _code_source(repo, manifest, repository)
    return _Fetched(dataclasses.replace(source, dirty=False), bundle)


class _Git:
    """git for the platform's fetches: no global or system configuration (so no
    credential helpers, filters or hooks of the platform's user), no prompts, and only
    the transports named for each fetch."""

    def __init__(self, scratch: Path, checkout: Path) -> None:
        home = scratch / "git-home"
        home.mkdir(parents=True, exist_ok=True)
        self.scratch = scratch
        self.checkout = checkout
        self.env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(home),
            "LANG": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "GIT_ALLOW_PROTOCOL": "none",
        }

    def __call__(
        self, *args: str, cwd: Path | None = None, what: str = "", protocol: str = "none"
    ) -> str:
        env = {**self.env, "GIT_ALLOW_PROTOCOL": protocol}
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=cwd or self.checkout,
                env=env,
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PublishError(
                f"{what or 'git ' + args[0]}: took longer than {GIT_TIMEOUT:g} s"
            ) from None
        if done.returncode != 0:
            said = done.stderr.strip().replace(str(self.scratch), "").splitlines()
            reason = "; ".join(line.removeprefix("fatal: ") for line in said[-3:]) or "failed"
            raise PublishError(f"{what or 'git ' + args[0]}: {reason}")
        return done.stdout.strip()

    def fetch(self, protocol: str, url: str, commit: str, what: str, shallow: bool = True) -> None:
        depth = ["--depth", "1"] if shallow else []  # a bundle is read whole anyway
        self("fetch", "--quiet", *depth, "--", url, commit, what=what, protocol=protocol)


def _bundle_head(git: _Git, bundle: Path) -> str:
    heads = [line.split() for line in git("bundle", "list-heads", str(bundle)).splitlines()]
    named = {ref: sha for sha, ref, *_ in heads}
    if "HEAD" in named:
        return named["HEAD"]
    if len(named) == 1:
        return next(iter(named.values()))
    raise PublishError(
        "the bundle has no HEAD and several refs: name the commit to publish "
        "(or bundle one: `git bundle create code.bundle HEAD`)"
    )


def _full_commit(text: str) -> str:
    commit = text.strip().lower()
    if not _COMMIT.fullmatch(commit):
        raise PublishError(
            f"commit: {text[:80]!r}: expected a full commit id (40 hex digits), as "
            "`git rev-parse HEAD` prints it"
        )
    return commit


def _copy_capped(source: BinaryIO, target: Path, limit: int) -> None:
    written = 0
    with target.open("wb") as out:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise PublishError(
                    f"the bundle is larger than the {limit:,} bytes this platform accepts"
                )
            out.write(chunk)


def _admitted_url(text: str, settings: PublishSettings) -> tuple[str, str]:
    """The repository URL as fetched and pinned, and its git transport, if the platform
    may fetch from it on a user's behalf; :class:`~accelerator_prefect.AccessDenied` if not.

    https, ssh and git URLs to public hosts (or hosts the operator admits); local
    repositories (``file://`` or an absolute path) only under the operator's
    ``repository_roots``. No credentials in URLs: they would be kept in the version's
    record for everyone who sees it.
    """
    from urllib.parse import unquote, urlsplit

    url = text.strip()
    shown = url[:200]
    if not url or any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise AccessDenied(f"repository: {shown!r} is not a URL")
    if "://" not in url:
        if url.startswith("/"):
            return _admitted_folder(Path(url), shown, settings)
        raise AccessDenied(
            f"repository: {shown}: expected an https://, ssh:// or git:// URL (scp-like "
            "user@host:path is written ssh://user@host/path)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AccessDenied(f"repository: {shown} is not a URL") from None
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise AccessDenied(f"repository: {shown}: a file:// URL names no host")
        return _admitted_folder(Path(unquote(parts.path)), shown, settings)
    if scheme not in _SCHEMES:
        raise AccessDenied(
            f"repository: {shown}: the platform fetches code over {', '.join(_SCHEMES)} only"
        )
    if parts.password is not None or (scheme != "ssh" and parts.username is not None):
        raise AccessDenied(
            f"repository: {parts.scheme}://…@{parts.hostname}: no credentials in the URL; they "
            "would be kept with the version for everyone who sees it"
        )
    host = parts.hostname
    if not host or not _host_admitted(host, port, settings):
        raise AccessDenied(
            f"repository: {shown}: {host or 'no host'} is not a host the platform fetches "
            "code from (a public host, or one the operator admits)"
        )
    return url, scheme


def _admitted_folder(path: Path, shown: str, settings: PublishSettings) -> tuple[str, str]:
    roots = [root.resolve() for root in settings.repository_roots]
    resolved = path.resolve() if path.is_absolute() else None
    if resolved is None or not any(resolved.is_relative_to(root) for root in roots):
        raise AccessDenied(
            f"repository: {shown}: the platform reads repositories on its own disk only under "
            "the folders its operator admits (ACC_PUBLISH_REPOSITORY_ROOTS); publish a bundle "
            "of your commit, or an https:// or ssh:// URL, instead"
        )
    return resolved.as_uri(), "file"


def _host_admitted(host: str, port: int | None, settings: PublishSettings) -> bool:
    from accelerator_prefect.fetching import CloudSources

    bare = host.lower().strip("[]").rstrip(".")
    admitted = {entry.strip().lower() for entry in settings.repository_hosts}
    if bare in admitted or (port is not None and f"{bare}:{port}" in admitted):
        return True
    return CloudSources(frozenset(), frozenset()).host_allowed(bare, port)


# -- the author's side: what a client sends to the portal ----------------------------------------

PUBLISH_TIMEOUT = 900.0  # seconds a client waits for the portal to fetch, import and publish


async def publish_over_http(
    call: Callable[..., Awaitable[Any]],
    manifest: str | Path,
    *,
    allow_dirty: bool = False,
    force: bool = False,
    repository: str | None = None,
) -> PublishResult:
    """Publish through the portal (``POST /api/v1/publish``): the manifest, and the code of
    the git repository it lies in at its HEAD commit, uploaded as a git bundle, or, with
    ``repository``, a git URL the platform fetches that commit from.

    ``call`` sends one request to the portal (``PortalService._call``). Only committed code
    is published: a work tree with uncommitted changes is refused, ``allow_dirty`` or not.
    """
    path = Path(manifest)
    loaded = load_manifest(path)
    repo = _open_repo(path)
    source = _code_source(repo, loaded, None)
    if source.dirty:
        raise PublishError(
            f"{loaded.name}@{loaded.version}: the git work tree at {source.root} has "
            "uncommitted changes, and the platform runs only committed code (allow_dirty "
            "is for operators publishing on the platform itself); commit them and publish "
            f"again:\n{_status_listing(repo)}"
        )
    form = {"commit": str(source.commit), "force": "true" if force else "false"}
    files: dict[str, Any] = {"manifest": (path.name, path.read_bytes(), "application/yaml")}
    with tempfile.TemporaryDirectory(prefix="acc-bundle-") as folder:
        if repository is not None:
            form["repository"] = repository
            body = await call("POST", "/publish", data=form, files=files, timeout=PUBLISH_TIMEOUT)
        else:
            bundle = Path(folder) / "code.bundle"
            await asyncio.to_thread(repo.git.bundle, "create", "--quiet", str(bundle), "HEAD")
            with bundle.open("rb") as handle:
                files["bundle"] = ("code.bundle", handle, "application/x-git-bundle")
                body = await call(
                    "POST", "/publish", data=form, files=files, timeout=PUBLISH_TIMEOUT
                )
    return PublishResult(
        model=body["model"],
        version=body["version"],
        status=body["status"],
        deployment_id="",  # the portal does not tell where versions live on its back end
        commit=body.get("commit"),
        dirty=False,
        warnings=tuple(body.get("warnings") or ()),
    )
