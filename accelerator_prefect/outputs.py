"""What a run wrote: the listing users get, the artifact operators see, and the
marker a failed run leaves beside its partial outputs.

Files are written atomically (see :mod:`accelerator_prefect.storage`), so a
listing never shows a half-written file; when the jobflow fails, it leaves
``_INCOMPLETE.json`` in its output folder, so the files that did get written
are never mistaken for a complete result.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from accelerator_prefect.mapping import human_size

if TYPE_CHECKING:
    from accelerator_prefect.jobflow import Output
    from accelerator_prefect.provenance import FileRecord
    from accelerator_prefect.storage import Storage

INCOMPLETE = "_INCOMPLETE.json"
PROVENANCE = "provenance.json"  # written beside the outputs; read with Run.provenance()
EXPIRED = "_EXPIRED.json"  # takes the outputs' place once retention deleted them
RECORDS = frozenset({INCOMPLETE, PROVENANCE, EXPIRED})  # about the outputs, never outputs
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFile:
    """One file a run wrote."""

    uri: str
    path: str  # relative to the run's output folder
    size: int
    media_type: str
    # Changed since the run ended: its size or content no longer what the run's
    # provenance recorded (or the run never wrote it). Never shown as the run's output.
    altered: bool = False


# Outputs up to this size are hashed when listed or opened (the hash of a file is kept
# while its size and modification time stay); larger ones are compared by size.
VERIFY_LIMIT = 64 << 20
_verified: dict[tuple[str, int, str], str] = {}


def _sha256(storage: Storage, uri: str, size: int, modified: object) -> str:
    import hashlib

    key = (uri, size, str(modified))
    known = _verified.get(key)
    if known is None:
        digest = hashlib.sha256()
        with storage.open(uri, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        known = _verified[key] = digest.hexdigest()
        if len(_verified) > 4096:
            _verified.pop(next(iter(_verified)))
    return known


def is_altered(
    storage: Storage,
    uri: str,
    size: int,
    path: str,
    recorded: dict[str, FileRecord] | None,
    modified: datetime | None = None,
) -> bool:
    """Whether output ``path`` (at ``uri``, ``size`` bytes, ``modified`` then, if known)
    differs from what the run recorded: ``recorded`` holds the hashes of its provenance
    (``None``: none yet, nothing to compare with)."""
    if recorded is None:
        return False
    record = recorded.get(path)
    if record is None or record.size != size:
        return True
    if size > VERIFY_LIMIT:
        return False
    when = modified or storage.info(uri).modified  # the hash is kept while size and time stay
    return _sha256(storage, uri, size, when) != record.sha256


def checked(
    files: list[OutputFile], storage: Storage, recorded: dict[str, FileRecord] | None
) -> list[OutputFile]:
    """``files``, each marked altered if it differs from what the run recorded."""
    import dataclasses

    if recorded is None:
        return files
    return [
        dataclasses.replace(f, altered=is_altered(storage, f.uri, f.size, f.path, recorded))
        for f in files
    ]


def list_outputs(folder: str, storage: Storage | None = None) -> list[OutputFile]:
    """The files the run wrote under the output ``folder`` (empty if none), without the
    records kept beside them (``_INCOMPLETE.json``, ``provenance.json``, ``_EXPIRED.json``)."""
    from accelerator_prefect.errors import NotFound
    from accelerator_prefect.storage import Storage

    base = folder.rstrip("/") + "/"
    try:
        entries = (storage or Storage()).files(base)
    except NotFound:
        return []
    return [
        OutputFile(e.uri, e.uri[len(base) :], e.size, e.media_type or "application/octet-stream")
        for e in entries
        if e.uri[len(base) :] not in RECORDS
    ]


def is_incomplete(folder: str, storage: Storage | None = None) -> bool:
    from accelerator_prefect.storage import Storage

    return (storage or Storage()).exists(folder.rstrip("/") + "/" + INCOMPLETE)


def run_folder(parameters: dict[str, Any], run_id: object) -> str | None:
    """The output folder a run with these parameters writes into."""
    location = (parameters.get("output") or {}).get("location")
    if not location:
        return None
    return str(location).replace("{run_id}", str(run_id)).rstrip("/") + "/"


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()  # type: ignore[no-any-return]
    except MissingContextError:
        return _log


def report(output: Output | None) -> None:
    """Publish the outputs of a finished jobflow as a Prefect table artifact."""
    if output is None:
        return
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext
    from prefect.runtime import flow_run

    from accelerator_prefect.storage import Storage

    storage, folder = Storage(), output.uri
    if is_incomplete(folder, storage):  # an earlier attempt of this run failed; this one did not
        storage.fs.rm_file(folder + INCOMPLETE)
    files = list_outputs(folder, storage)
    total = sum(f.size for f in files)
    _logger().info("wrote %d file(s), %s, to %s", len(files), human_size(total), folder)
    if FlowRunContext.get() is None:
        return
    create_table_artifact(
        key=re.sub(r"[^a-z0-9-]+", "-", str(flow_run.flow_name).lower()).strip("-") + "-outputs",
        table=[
            {"file": f.path, "size": human_size(f.size), "bytes": f.size, "type": f.media_type}
            for f in files
        ],
        description=f"**Outputs** of this run, in `{folder}` ({human_size(total)}).",
    )


def mark_folder_incomplete(folder: str, storage: Storage, why: str) -> bool:
    """Leave ``_INCOMPLETE.json`` in ``folder`` if it holds files and no marker yet
    (a run cancelled or failed mid-way); whether one was written."""
    files = list_outputs(folder, storage)
    if not files or is_incomplete(folder, storage):
        return False
    marker = {
        "complete": False,
        "error": why,
        "at": datetime.now(UTC).isoformat(),
        "files": [f.path for f in files],
        "note": "The run did not finish; these files are partial results.",
    }
    with storage.open(folder.rstrip("/") + "/" + INCOMPLETE, "w") as f:
        f.write(json.dumps(marker, indent=2))
    return True


def mark_incomplete(output: Output | None, error: BaseException) -> None:
    """Leave ``_INCOMPLETE.json`` beside the partial outputs of a failed jobflow.

    The marker names the error's type only: its message could carry data the
    run should not publish.
    """
    if output is None:
        return
    try:
        from accelerator_prefect.storage import Storage

        storage, folder = Storage(), output.uri
        files = list_outputs(folder, storage)
        if not files:
            return
        marker = {
            "complete": False,
            "error": type(error).__name__,
            "at": datetime.now(UTC).isoformat(),
            "files": [f.path for f in files],
            "note": "The run failed before finishing; these files are partial results.",
        }
        with storage.open(folder + INCOMPLETE, "w") as f:
            f.write(json.dumps(marker, indent=2))
        _logger().warning(
            "the run failed; %d partial file(s) in %s are marked %s", len(files), folder, INCOMPLETE
        )
    except Exception as exc:  # never hide the jobflow's own error behind this one
        _logger().warning("could not mark the partial outputs as incomplete: %s", exc)
