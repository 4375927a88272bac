"""Retention and quotas: how long run outputs and uploads are kept, and how much each
area of storage may hold.

Storage is charged by area: a project's folder (``acc://<project>/``), a user's own
(``acc://users/<name>/``) and a guest's (``acc://links/<link>/<guest>/``). Operators
set the platform's defaults (the settings ``keep_outputs``, ``keep_uploads``,
``project_quota``, ``user_quota``) and each project's own (``acc projects policy``)
or user's own quota (``acc users quota``).

- **Quotas** count what is stored (a run's output size is not known in advance): a
  write or upload is refused once its area holds its quota, or would with the file's
  known size; a launch is refused when its output folder's area is full. Operators
  are not held by quotas.
- **Retention**: a sweep (every ``sweep_every`` seconds in ``acc up``; ``acc sweep``
  elsewhere) deletes the output files of runs that ended longer ago than their
  project keeps outputs, and files in ``uploads/`` folders older than their area keeps
  uploads. A run's provenance (in Prefect, and ``provenance.json`` beside its files)
  and its history stay; ``_EXPIRED.json`` takes the files' place, saying when and why.
  Guest areas go with their link's retention (``--guest-days``).
- Every deletion is recorded: as an audit event (``acc.model.outputs-deleted``,
  ``acc.storage.uploads-deleted``, ``acc.model.guest-area-deleted``) and in
  ``acc://.platform/retention/<when>.json`` (operators only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from accelerator_prefect.access import LINKS_AREA, RESERVED_AREAS, USERS_AREA
from accelerator_prefect.mapping import human_size
from accelerator_prefect.outputs import EXPIRED

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from accelerator_prefect.client import AsyncAccelerator
    from accelerator_prefect.directory import PolicyRecord, UserRecord
    from accelerator_prefect.settings import Settings

UPLOADS = "uploads"  # acc://<area>/uploads/: what people bring in, kept for keep_uploads
RECORDS = ".platform/retention"  # acc://.platform/retention/<when>.json: what each sweep deleted


@dataclass(frozen=True)
class Rule:
    """One retention period or quota, and whose it is, in words."""

    value: float  # seconds, or bytes
    text: str  # as set, e.g. "30 d" or "10 GB"
    whose: str  # e.g. "the project climate's", "the platform's default"


@dataclass(frozen=True)
class Rules:
    """The retention periods and quotas in force, read once (see :meth:`read`)."""

    keep_outputs: Rule | None = None
    keep_uploads: Rule | None = None
    project_quota: Rule | None = None
    user_quota: Rule | None = None
    projects: dict[str, PolicyRecord] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # user -> their own quota

    @classmethod
    def read(
        cls, settings: Settings, policies: list[PolicyRecord], users: list[UserRecord]
    ) -> Rules:
        default = "the platform's default"
        return cls(
            keep_outputs=_duration(settings.keep_outputs, default),
            keep_uploads=_duration(settings.keep_uploads, default),
            project_quota=_size(settings.project_quota, default),
            user_quota=_size(settings.user_quota, default),
            projects={p.name: p for p in policies},
            users={u.name: u.quota for u in users if u.quota},
        )

    def outputs_kept(self, project: str) -> Rule | None:
        """How long the outputs of runs of ``project``'s models are kept (``None``: always)."""
        own = self.projects.get(project)
        if own is not None and own.keep_outputs:
            return _duration(own.keep_outputs, f"the project {project}'s")
        return self.keep_outputs

    def uploads_kept(self, area: str) -> Rule | None:
        """How long uploads in ``area`` (a project's or a user's) are kept."""
        own = self.projects.get(area)
        if own is not None and own.keep_uploads:
            return _duration(own.keep_uploads, f"the project {area}'s")
        return self.keep_uploads

    def quota(self, area: str) -> Rule | None:
        """The quota of ``area`` (as :func:`charged_area` names it), if it has one."""
        parts = area.split("/")
        if parts[0] == USERS_AREA:
            own_quota = self.users.get(parts[1])
            if own_quota:
                return _size(own_quota, f"{parts[1]}'s")
            return self.user_quota
        if parts[0] == LINKS_AREA:
            return self.user_quota  # each guest is a user of their own
        policy = self.projects.get(area)
        if policy is not None and policy.quota:
            return _size(policy.quota, f"the project {area}'s")
        return self.project_quota

    @property
    def any_retention(self) -> bool:
        return bool(
            self.keep_outputs
            or self.keep_uploads
            or any(p.keep_outputs or p.keep_uploads for p in self.projects.values())
        )


def check_period(value: str | None) -> str | None:
    """``value`` if it is a retention period (a duration above 0, e.g. ``"90 d"``), else a
    ValueError saying what is expected; settings and projects' policies both check here."""
    from accelerator_prefect.manifest import parse_duration

    if value and parse_duration(value) <= 0:  # parse_duration's own error names the form
        raise ValueError(f"{value!r}: expected a duration above 0, e.g. '90 d'")
    return value or None


def check_size(value: str | None) -> str | None:
    """``value`` if it is a size such as ``"10 GB"``, else a ValueError saying so."""
    from accelerator_prefect.mapping import parse_size

    if value:
        parse_size(value)
    return value or None


def _duration(text: str | None, whose: str) -> Rule | None:
    from accelerator_prefect.manifest import parse_duration

    return Rule(parse_duration(text), text, whose) if text else None


def _size(text: str | None, whose: str) -> Rule | None:
    from accelerator_prefect.mapping import parse_size

    return Rule(parse_size(text), text, whose) if text else None


def charged_area(relative: str) -> str | None:
    """The area a path (relative to ``acc://``) is charged to: ``<project>``,
    ``users/<name>`` or ``links/<link>/<guest>``; ``None`` for the platform's own."""
    parts = relative.strip("/").split("/")
    if not parts[0] or parts[0].startswith("."):
        return None
    if parts[0] == USERS_AREA:
        return "/".join(parts[:2]) if len(parts) >= 2 else None
    if parts[0] == LINKS_AREA:
        return "/".join(parts[:3]) if len(parts) >= 3 else None
    return parts[0]


def describe_area(area: str) -> str:
    parts = area.split("/")
    if parts[0] == USERS_AREA:
        return f"{parts[1]}'s own area (acc://{area}/)"
    if parts[0] == LINKS_AREA:
        return f"this guest's area (acc://{area}/)"
    return f"the project {area} (acc://{area}/)"


def used_bytes(fs: AbstractFileSystem, area: str) -> int:
    """What ``area`` holds now, in bytes."""
    try:
        return int(fs.du(area, total=True))
    except FileNotFoundError:
        return 0


# What each area held when last measured for a quota check, and when: a listing of a large
# area (on an object store, one request per 1,000 objects) is not repeated on every write.
USAGE_TTL = 10.0
_usage: dict[tuple[str, str], tuple[float, int]] = {}


def _held(fs: AbstractFileSystem, area: str, fresh: bool = False) -> int:
    import time

    key = (str(getattr(fs, "root_url", id(fs))), area)
    now = time.monotonic()
    known = _usage.get(key)
    if known is None or fresh or now - known[0] > USAGE_TTL:
        known = _usage[key] = (now, used_bytes(fs, area))
        if len(_usage) > 4096:
            _usage.pop(next(iter(_usage)))
    return known[1]


def _count(fs: AbstractFileSystem, area: str, written: int) -> None:
    """Count ``written`` bytes about to go into ``area`` until it is measured again."""
    key = (str(getattr(fs, "root_url", id(fs))), area)
    known = _usage.get(key)
    if known is not None:
        _usage[key] = (known[0], known[1] + written)


def quota_problem(
    fs: AbstractFileSystem, rules: Rules, relative: str, incoming: int = 0
) -> str | None:
    """Why writing ``incoming`` more bytes (0: not known) at ``relative`` would go over
    its area's quota, if it would."""
    area = charged_area(relative)
    rule = rules.quota(area) if area else None
    if area is None or rule is None:
        return None

    def fits(used: int) -> bool:
        return used + incoming <= rule.value and (incoming > 0 or used < rule.value)

    # A write of known size counts on what was measured lately (and adds itself to it);
    # one of unknown size, and any refusal, look at what is stored now.
    used = _held(fs, area, fresh=incoming == 0)
    if not fits(used):  # measured a while ago, maybe before a deletion: look again
        used = _held(fs, area, fresh=True)
    if fits(used):
        _count(fs, area, incoming)
        return None
    state = "is full" if used >= rule.value else f"has no room for {human_size(incoming)} more"
    return (
        f"{describe_area(area)} {state}: {human_size(used)} stored, of {rule.whose} storage "
        f"quota of {rule.text}; delete files no longer needed, or ask an operator for more"
    )


def quota_room(fs: AbstractFileSystem, rules: Rules, relative: str) -> int | None:
    """How many more bytes the area of ``relative`` may take now (``None``: no quota)."""
    area = charged_area(relative)
    rule = rules.quota(area) if area else None
    if area is None or rule is None:
        return None
    return max(int(rule.value) - _held(fs, area, fresh=True), 0)


# -- the sweep ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deleted:
    """What a sweep deleted (or, dry, would delete)."""

    kind: str  # "outputs", "upload" or "guest area"
    uri: str
    files: int
    bytes: int
    reason: str
    run: str | None = None
    model: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _age_reason(rule: Rule, what: str) -> str:
    return f"{rule.whose} retention keeps {what} {rule.text}"


def expire_outputs(
    fs: AbstractFileSystem,
    folder: str,
    *,
    run: str,
    model: str | None,
    rule: Rule,
    ended: datetime,
    listed: Iterable[str],
    dry_run: bool = False,
) -> Deleted | None:
    """Delete the output files run ``run`` wrote in its ``folder`` (``acc://…/``), those
    ``listed`` (paths in it, as its provenance, or its ``_INCOMPLETE.json``, names them),
    and leave ``_EXPIRED.json`` beside its records. ``None`` if nothing of it was left to
    delete, or the folder is not the run's own.

    Nothing else goes: not a file others put beside them (a run may have been told to
    write into a folder others use too), not another run's folder inside it, not a path
    a record names outside the folder."""
    from accelerator_prefect.outputs import RECORDS
    from accelerator_prefect.storage import StoragePathError, check_path, run_folder_of

    relative = check_path(folder).rstrip("/")
    area = charged_area(relative)
    # Only a folder below an area's root, holding a run's records, is a run's own folder.
    if area is None or relative == area or run_folder_of(fs, relative) != relative:
        return None
    files = []
    for path in dict.fromkeys(listed):
        try:
            name = check_path(f"{relative}/{path}")
        except StoragePathError:
            continue
        if (
            not name.startswith(relative + "/")
            or name.rsplit("/", 1)[-1] in RECORDS
            or run_folder_of(fs, name) != relative  # in another run's folder
            or not fs.isfile(name)
        ):
            continue
        files.append((name, int(fs.info(name).get("size") or 0)))
    if not files:
        return None
    deleted = Deleted(
        "outputs",
        f"acc://{relative}/",
        len(files),
        sum(size for _, size in files),
        _age_reason(rule, "outputs") + f" after the run ended ({ended:%Y-%m-%d})",
        run=run,
        model=model,
    )
    if dry_run:
        return deleted
    fs.rm([name for name, _ in files])
    for name in sorted({n.rsplit("/", 1)[0] for n, _ in files}, key=len, reverse=True):
        if name != relative and not fs.find(name):  # folders the run made, now empty
            fs.rm(name, recursive=True)
    record = {
        "run": run,
        "deleted": datetime.now(UTC).isoformat(),
        "files": deleted.files,
        "bytes": deleted.bytes,
        "reason": deleted.reason,
    }
    with fs.open(f"{relative}/{EXPIRED}", "w") as f:
        f.write(json.dumps(record, indent=2))
    return deleted


def incomplete_files(fs: AbstractFileSystem, folder: str) -> list[str]:
    """The files a run that did not finish listed in its ``_INCOMPLETE.json``."""
    from accelerator_prefect.outputs import INCOMPLETE
    from accelerator_prefect.storage import check_path

    try:
        with fs.open(f"{check_path(folder).rstrip('/')}/{INCOMPLETE}", "r") as f:
            files = json.loads(f.read()).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    return [str(p) for p in files] if isinstance(files, list) else []


def read_expiry(fs: AbstractFileSystem, folder: str, run: str, ended: datetime) -> str | None:
    """If retention deleted the outputs of run ``run`` (which ended at ``ended``) in
    ``folder``: when and why, in words. Only a record the sweep wrote counts: one naming
    this run, written after it ended (a run cannot write its folder once it has ended)."""
    from accelerator_prefect.storage import check_path

    path = f"{check_path(folder).rstrip('/')}/{EXPIRED}"
    try:
        written = _modified(fs, path, fs.info(path))
        with fs.open(path, "r") as f:
            record = json.loads(f.read())
        when = datetime.fromisoformat(str(record["deleted"]))
        files, size, reason = int(record["files"]), int(record["bytes"]), str(record["reason"])
        if record.get("run") != run or written is None or written <= ended:
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return (
        f"The {files} output file(s) of this run ({human_size(size)}) were deleted on "
        f"{when:%Y-%m-%d}: {reason}. Its provenance is kept; run it again to make them anew."
    )


def upload_areas(fs: AbstractFileSystem) -> list[str]:
    """The ``uploads/`` folders of projects and users (guests' go with their area)."""
    found = []
    for top in fs.ls("", detail=False):
        name = str(top).strip("/").rsplit("/", 1)[-1]
        if name.startswith(".") or name == LINKS_AREA:
            continue
        if name == USERS_AREA:
            for user in fs.ls(USERS_AREA, detail=False):
                found.append(f"{str(user).strip('/')}/{UPLOADS}")
        elif name not in RESERVED_AREAS:
            found.append(f"{name}/{UPLOADS}")
    return [f for f in found if fs.isdir(f)]


def expire_uploads(
    fs: AbstractFileSystem, folder: str, rule: Rule, now: datetime, dry_run: bool = False
) -> list[Deleted]:
    """Delete the files in ``folder`` (an ``uploads/`` folder) written longer ago than
    ``rule`` keeps them."""
    cutoff = now - timedelta(seconds=rule.value)
    gone = []
    for name, info in fs.find(folder, detail=True).items():
        modified = _modified(fs, name, info)
        if modified is None or modified > cutoff:
            continue
        size = int(info.get("size") or 0)
        reason = _age_reason(rule, "uploads") + f" after they were written ({modified:%Y-%m-%d})"
        gone.append(Deleted("upload", f"acc://{name}", 1, size, reason))
        if not dry_run:
            fs.rm_file(name)
    return gone


def _modified(fs: AbstractFileSystem, name: str, info: dict[str, Any]) -> datetime | None:
    """When a file was last written, from its listing (local ``mtime``, S3
    ``LastModified``) or, failing that, the backend's own answer."""
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if value is None:
        try:
            value = fs.modified(name)
        except (NotImplementedError, OSError):
            return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def write_record(fs: AbstractFileSystem, deleted: list[Deleted], actor: str) -> str | None:
    """Keep what a sweep deleted in ``acc://.platform/retention/<when>.json``."""
    if not deleted:
        return None
    now = datetime.now(UTC)
    path = f"{RECORDS}/{now:%Y%m%dT%H%M%S%fZ}.json"
    body = {"swept": now.isoformat(), "by": actor, "deleted": [d.as_json() for d in deleted]}
    fs.makedirs(RECORDS, exist_ok=True)
    with fs.open(path, "w") as f:
        f.write(json.dumps(body, indent=2))
    return f"acc://{path}"


# -- the sweep, against the platform ---------------------------------------------------------

SWEPT_PREFIX = "acc-swept-"  # acc-swept-<project>: runs ended before this were judged
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # as the directory names projects


async def sweep(acc: AsyncAccelerator, now: datetime, dry_run: bool = False) -> list[Deleted]:
    """Delete what is past its retention, and record what was deleted (see the module's
    docstring). ``dry_run``: say what would go, deleting and recording nothing."""
    import asyncio

    rules, guests = await asyncio.gather(acc.retention_rules(fresh=True), _guest_areas(acc, now))
    deleted, failed = list(guests), []
    if rules.any_retention:
        for project in sorted(await _projects(acc)):
            rule = rules.outputs_kept(project)
            if rule is None:
                continue
            try:  # one project that cannot be swept stops no other
                deleted += await _expire_project_outputs(acc, project, rule, now, dry_run)
            except Exception as exc:
                failed.append(f"the outputs of project {project}: {exc}")
        fs = acc.storage_fs()
        for folder in await asyncio.to_thread(upload_areas, fs):
            area = charged_area(folder)
            rule = rules.uploads_kept(area or "")
            if area is None or rule is None:
                continue
            try:
                found = await asyncio.to_thread(expire_uploads, fs, folder, rule, now, dry_run)
            except Exception as exc:
                failed.append(f"the uploads in acc://{folder}/: {exc}")
                continue
            deleted += found
            if found and not dry_run:
                await _record_uploads(acc, area, found)
    if not dry_run:
        for gone in guests:
            await _remove_guest_area(acc, gone)
        await _keep_record(acc, deleted)
    if failed:  # what was deleted is recorded; what could not be swept is said
        from accelerator_prefect.errors import AcceleratorError

        raise AcceleratorError(
            f"swept {len(deleted)} item(s), but could not sweep " + "; ".join(failed)
        )
    return deleted


async def expire_guest_areas(acc: AsyncAccelerator, now: datetime) -> list[Deleted]:
    """Delete (and record) the areas of guest sessions past their link's retention."""
    gone = await _guest_areas(acc, now)
    for area in gone:
        await _remove_guest_area(acc, area)
    await _keep_record(acc, gone)
    return gone


async def _keep_record(acc: AsyncAccelerator, deleted: list[Deleted]) -> None:
    import asyncio

    actor = (await acc.principal()).name
    await asyncio.to_thread(write_record, acc.storage_fs(), deleted, actor)


async def _guest_areas(acc: AsyncAccelerator, now: datetime) -> list[Deleted]:
    """The areas of guest sessions past their link's retention."""
    import asyncio

    from accelerator_prefect.directory import GUEST_ID, list_links

    fs = acc.storage_fs()
    records = await list_links(await acc.client())

    def find() -> list[Deleted]:
        found = []
        for record in records:
            area = f"{LINKS_AREA}/{record.id}"
            if not fs.isdir(area):
                continue
            for entry in fs.ls(area, detail=False):
                guest = str(entry).rstrip("/").rsplit("/", 1)[-1]
                if GUEST_ID.match(guest) and record.guest_expires(guest) <= now:
                    sizes = fs.find(f"{area}/{guest}", detail=True).values()
                    found.append(
                        Deleted(
                            "guest area",
                            f"acc://{area}/{guest}/",
                            len(sizes),
                            sum(int(i.get("size") or 0) for i in sizes),
                            f"the link {record.id} keeps each guest's files and runs "
                            f"{record.guest_days} d",
                            model=record.model,
                        )
                    )
        return found

    return await asyncio.to_thread(find)


async def _remove_guest_area(acc: AsyncAccelerator, gone: Deleted) -> None:
    import asyncio

    from accelerator_prefect.storage import check_path

    await asyncio.to_thread(acc.storage_fs().rm, check_path(gone.uri), recursive=True)
    await _audit_deleted(acc, "acc.model.guest-area-deleted", gone)


async def _audit_deleted(acc: AsyncAccelerator, event: str, gone: Deleted) -> None:
    """Record a deletion in its model's audit log (the sweep's record file has it anyway)."""
    if not gone.model:
        return
    details = {"run": gone.run} if gone.run else {}
    await acc._audit(
        event,
        model=gone.model,
        folder=gone.uri,
        files=gone.files,
        bytes=gone.bytes,
        reason=gone.reason,
        **details,
    )


async def _projects(acc: AsyncAccelerator) -> set[str]:
    """Every project runs may belong to: those with a policy, members' projects, the
    folders at the storage's root and the catalog's."""
    import asyncio

    from accelerator_prefect.directory import list_policies, list_users

    client = await acc.client()
    policies, users, models = await asyncio.gather(
        list_policies(client), list_users(client), acc.catalog()
    )
    fs = acc.storage_fs()
    tops = [str(t).strip("/").rsplit("/", 1)[-1] for t in await asyncio.to_thread(fs.ls, "")]
    found = {p.name for p in policies} | {p for u in users for p in u.projects}
    found |= {t for t in tops if t and not t.startswith(".") and t not in RESERVED_AREAS}
    found |= {m.latest.record.project for m in models}
    return {p for p in found if PROJECT_NAME.match(p)}


async def _expire_project_outputs(
    acc: AsyncAccelerator, project: str, rule: Rule, now: datetime, dry_run: bool
) -> list[Deleted]:
    """The outputs of ``project``'s runs that ended before ``now`` minus ``rule``, and
    after the last sweep's cutoff (kept in ``acc-swept-<project>``): each run is judged
    once, however many runs the project keeps. Its runs are read where the project lives
    (its own Prefect API, if bound to one)."""
    import asyncio

    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    from accelerator_prefect.catalog import tag
    from accelerator_prefect.directory import _read, _write
    from accelerator_prefect.errors import NotFound
    from accelerator_prefect.outputs import run_folder
    from accelerator_prefect.runs import FINAL_TYPES, read_provenance, run_tags

    home = await acc.client()
    marker = SWEPT_PREFIX + project
    swept = await _read(home, marker) or {}
    after = datetime.fromisoformat(swept["outputs"]) if swept.get("outputs") else None
    cutoff = now - timedelta(seconds=rule.value)
    if after is not None and after >= cutoff:
        return []
    bound = {p.name: p.api_url.rstrip("/") for p in await acc._project_bindings(fresh=True)}
    client = (await acc.workspaces())[bound.get(project, acc.api_url)]
    fs, deleted, offset, page = acc.storage_fs(), [], 0, 200
    while True:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[tag("project", project)]),
                end_time=FlowRunFilterEndTime(before_=cutoff, after_=after),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType(t) for t in FINAL_TYPES])
                ),
            ),
            sort=FlowRunSort.END_TIME_DESC,
            offset=offset,
            limit=page,
        )
        for run in runs:
            folder = run_folder(run.parameters, run.id)
            if folder is None or run.end_time is None:
                continue
            try:  # the files the run recorded (its artifact, which no user can change)
                listed = [f.uri for f in (await read_provenance(client, run.id)).outputs]
            except NotFound:  # it ended before recording any: what its marker lists
                listed = await asyncio.to_thread(incomplete_files, fs, folder)
            gone = await asyncio.to_thread(
                expire_outputs,
                fs,
                folder,
                run=str(run.id),
                model=run_tags(run).get("model"),
                rule=rule,
                ended=run.end_time,
                listed=listed,
                dry_run=dry_run,
            )
            if gone is not None:
                deleted.append(gone)
                if not dry_run:
                    await _audit_deleted(acc, "acc.model.outputs-deleted", gone)
        if len(runs) < page:
            break
        offset += page
    if not dry_run:
        await _write(home, marker, {"outputs": cutoff.isoformat()}, "acc:swept")
    return deleted


async def _record_uploads(acc: AsyncAccelerator, area: str, found: list[Deleted]) -> None:
    """One audit event for the uploads of ``area`` a sweep deleted."""
    from accelerator_prefect import audit

    resource = {"prefect.resource.id": f"acc.storage.{area}", "prefect.resource.name": area}
    await audit.record(
        await acc.client(),
        "acc.storage.uploads-deleted",
        resource,
        actor=(await acc.principal()).name,
        payload={
            "files": [d.uri for d in found[:100]],
            "count": len(found),
            "bytes": sum(d.bytes for d in found),
            "reason": found[0].reason.split(" after ", 1)[0],
        },
    )


@dataclass(frozen=True)
class AreaUsage:
    """What one storage area holds, against its quota."""

    area: str  # e.g. acc://climate/
    used: int
    quota: int | None = None
    quota_text: str | None = None

    @property
    def full(self) -> bool:
        return self.quota is not None and self.used >= self.quota


async def area_usage(acc: AsyncAccelerator) -> list[AreaUsage]:
    """The areas ``acc``'s principal may use (an operator: all that hold files), each
    with what it holds and its quota."""
    import asyncio

    principal, rules = await asyncio.gather(acc.principal(), acc.retention_rules())
    fs = acc.storage_fs()

    def measure() -> list[AreaUsage]:
        if principal.operator:
            areas = []
            for top in fs.ls("", detail=False):
                name = str(top).strip("/").rsplit("/", 1)[-1]
                if name.startswith("."):
                    continue
                if name == USERS_AREA:
                    areas += [str(u).strip("/") for u in fs.ls(USERS_AREA, detail=False)]
                elif name == LINKS_AREA:
                    for link in fs.ls(LINKS_AREA, detail=False):
                        areas += [str(g).strip("/") for g in fs.ls(link, detail=False)]
                else:
                    areas.append(name)
        else:
            areas = [*sorted(principal.projects), principal.own_area]
        found = []
        for area in areas:
            rule = rules.quota(area)
            found.append(
                AreaUsage(
                    f"acc://{area}/",
                    _held(fs, area),
                    int(rule.value) if rule else None,
                    rule.text if rule else None,
                )
            )
        return found

    return await asyncio.to_thread(measure)
