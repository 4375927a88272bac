"""Reference data tracked with DVC: pinned by each published version, fetched by its runs.

A manifest lists the DVC-tracked paths its jobflow reads (``data:``). Publishing
reads their hashes at the version's commit and checks that the DVC remote
holds every object, so the version can always be run again; the hashes go
into the version's hosting record. Before a run, the ``checkout`` pull step
fetches exactly those objects into the version's checkout, verifies each file
against the published hash, and refuses to run on anything else: a later
``dvc push`` to the same paths cannot change what an existing version runs.

The remote is the repository's default DVC remote, else the platform's
(``ACC_DVC_REMOTE``, by default the folder ``<ACC_HOME>/dvc-remote``). It is
passed to DVC in memory: nothing is written into the repository's config.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from accelerator_prefect.errors import AcceleratorError, PublishError
from accelerator_prefect.provenance import DataRecord

if TYPE_CHECKING:
    from dvc.repo import Repo

REMOTE = "acc"  # the name the remote has in the in-memory config
_SECRET_OPTION = re.compile(r"key|secret|token|password|credential|session", re.IGNORECASE)


class DataRemote(BaseModel):
    """A DVC remote: its URL and the options needed to reach it (never credentials;
    workers take those from their environment)."""

    url: str
    options: dict[str, Any] = Field(default_factory=dict)


def _quiet() -> None:
    """DVC attaches its own console handlers on import; runs log through Prefect instead."""
    for name in ("dvc", "dvc_data", "dvc_objects"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)


def _repo(root: Path | str, rev: str | None = None, config: dict[str, Any] | None = None) -> Repo:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.repo import Repo

    _quiet()
    return Repo(str(root), rev=rev, config=config)


def _config(
    remote: DataRemote, cache: Path | None = None, site_cache: Path | None = None
) -> dict[str, Any]:
    core: dict[str, Any] = {"remote": REMOTE}
    if site_cache is not None:
        core["site_cache_dir"] = str(site_cache)
    config: dict[str, Any] = {
        "core": core,
        "remote": {REMOTE: {"url": remote.url, **remote.options, "verify": True}},
    }
    if cache is not None:
        config["cache"] = {"dir": str(cache)}
    return config


def default_remote(root: Path, fallback: str) -> DataRemote:
    """The repository's default DVC remote (without credentials), else ``fallback``."""
    from dvc.exceptions import NotDvcRepoError

    found: dict[str, Any] = {}
    try:
        with _repo(root) as repo:
            name = repo.config["core"].get("remote")
            for level in repo.config.LEVELS:  # as written (validation fills in every default)
                written = repo.config.load_one(level)
                found.update(written.get("remote", {}).get(name, {}) if name else {})
    except NotDvcRepoError:
        pass
    if not found.get("url"):
        return DataRemote(url=fallback)
    url = str(found.pop("url"))
    return DataRemote(
        url=url, options={k: v for k, v in found.items() if not _SECRET_OPTION.search(k)}
    )


def tracked(root: Path, commit: str | None, paths: list[str]) -> list[DataRecord]:
    """The DVC hashes of ``paths`` at ``commit`` (the work tree if ``None``), from their
    ``.dvc`` files or ``dvc.lock``; :class:`PublishError` for a path DVC does not track."""
    from dvc.exceptions import NotDvcRepoError

    try:
        with _repo(root, rev=commit) as repo:
            outs = {
                repo.fs.relpath(o.fs_path, repo.root_dir): o
                for o in repo.index.outs
                if o.hash_info and o.hash_info.value
            }
    except NotDvcRepoError:
        outs = {}
    records = []
    for path in paths:
        out = outs.get(path.strip("/"))
        if out is None:
            where = f"commit {commit[:12]}" if commit else "the work tree"
            raise PublishError(
                f"data: {path} is not tracked by DVC at {where}; run `dvc add {path}` and "
                "commit the .dvc file (or list only DVC-tracked paths under `data`)"
            )
        if out.hash_info.name != "md5":
            raise PublishError(
                f"data: {path} was added by DVC 2 ({out.hash_info.name} hash); run "
                "`dvc cache migrate --dvc-files` and commit, so its hash is a plain md5"
            )
        records.append(
            DataRecord(
                path=path.strip("/"),
                md5=out.hash_info.value,
                size=out.meta.size,
                files=out.meta.nfiles if out.hash_info.isdir else None,
            )
        )
    return records


def missing(root: Path, commit: str | None, remote: DataRemote, paths: list[str]) -> list[str]:
    """The ``paths`` whose objects (for a folder: its manifest and every file) the remote
    lacks. Asks the remote for the exact objects; nothing is downloaded but manifests."""
    from dvc_data.hashfile.tree import Tree

    gaps = []
    with _repo(root, rev=commit, config=_config(remote)) as repo:
        outs = {repo.fs.relpath(o.fs_path, repo.root_dir): o.hash_info for o in repo.index.outs}
        odb = repo.cloud.get_remote_odb(REMOTE)
        for path in paths:
            info = outs[path.strip("/")]
            oids = [info.value]
            if info.isdir:
                try:
                    oids += [entry.value for _, _, entry in Tree.load(odb, info)]
                except FileNotFoundError:
                    gaps.append(path)
                    continue
            if set(oids) - set(odb.oids_exist(oids)):
                gaps.append(path)
    return gaps


def push(root: Path, remote: DataRemote, paths: list[str]) -> int:
    """Push the objects of ``paths`` (already in the repository's DVC cache) to ``remote``."""
    with _repo(root, config=_config(remote)) as repo:
        return int(repo.push(targets=[str(root / p) for p in paths], remote=REMOTE))


def commit_workspace(root: Path, paths: list[str]) -> None:
    """Put the work tree's copies of ``paths`` into the DVC cache, if they match their
    ``.dvc`` hashes (the files themselves are left as they are)."""
    records = {r.path: r for r in tracked(root, None, paths)}
    for path in paths:
        found = md5_of(root / path)
        if found != records[path].md5:
            raise AcceleratorError(
                f"{path}: its content (md5 {found}) is not what its .dvc file records "
                f"(md5 {records[path].md5})"
            )
    with _repo(root) as repo:
        for path in paths:
            repo.commit(str(root / path), force=True)


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(directory: Path, remote: DataRemote, data: list[DataRecord], cache: Path) -> None:
    """Materialise ``data`` in the checkout ``directory`` from ``remote`` (through the
    shared object ``cache``), then check every file against its published hash."""
    from dvc.exceptions import CheckoutError

    site_cache = Path(tempfile.mkdtemp(prefix="acc-dvc-site-"))
    try:
        config = _config(remote, cache=cache, site_cache=site_cache)
        targets = [str(directory / d.path) for d in data]
        with _repo(directory, config=config) as repo:
            try:
                repo.checkout(targets=targets)  # everything already in the cache: no remote call
            except CheckoutError:
                try:
                    repo.pull(targets=targets, remote=REMOTE)
                except CheckoutError:
                    names = ", ".join(d.path for d in data)
                    raise AcceleratorError(
                        f"data: cannot fetch {names} from the DVC remote {remote.url}: an "
                        "object is missing there or its content does not match its hash"
                    ) from None
            verify(directory, data, repo)
    finally:
        shutil.rmtree(site_cache, ignore_errors=True)


def verify(directory: Path, data: list[DataRecord], repo: Repo) -> None:
    """Each path's content hashes to what the version was published with."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    for record in data:
        target = directory / record.path
        if record.files is None:
            expected = {target: record.md5}
        else:
            tree = Tree.load(repo.cache.local, HashInfo("md5", record.md5))
            expected = {target.joinpath(*key): entry.value for key, _, entry in tree}
            present = {p for p in target.rglob("*") if p.is_file()}
            if present != set(expected):
                raise AcceleratorError(f"data: {record.path} does not hold the published files")
        for path, md5 in expected.items():
            found = md5_of(path) if path.is_file() else "missing"
            if found != md5:
                raise AcceleratorError(
                    f"data: {path.relative_to(directory)} has md5 {found}, but this version was "
                    f"published with md5 {md5}; the data in the DVC remote or cache was changed"
                )
