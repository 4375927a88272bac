"""``acc://`` storage: one fsspec filesystem over one configured backend.

``acc://<project>/<path>`` maps onto the backing URL of the installation
(``ACC_STORAGE_URL``): a folder under the platform home by default,
``s3://bucket/prefix`` through s3fs, or any fsspec URL, opened with
``ACC_STORAGE_OPTIONS``. Worker processes on other machines get the same two
settings from their environment (a work pool's job variables), never from a
shared local file.

:class:`AccFileSystem` is fsspec's ``DirFileSystem`` with two differences:
:func:`check_path`, called from the one path-translation method, refuses any
path that could leave the root; and writes are atomic per file (written
aside, then moved into place, or committed as one object on object stores),
so a crashed writer never leaves a half-written file under its final name.

:class:`Storage` is the same storage as users handle it: ``put``, ``get``,
``ls``, ``open``, streaming in chunks with progress, for one principal: the
access layer decides each path, and the sample inputs of the models the
principal may run are readable too (never writable).

Example:
    >>> import fsspec
    >>> with fsspec.open("acc://climate/obs/t2m.csv", "w") as f:  # doctest: +SKIP
    ...     f.write("date,t2m\\n")
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import re
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fsspec.callbacks import Callback
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import isfilelike

from accelerator_prefect.errors import (
    AcceleratorError,
    AccessDenied,
    NotFound,
    StorageQuotaExceeded,
)

if TYPE_CHECKING:
    from accelerator_prefect.access import Principal, SampleSource
    from accelerator_prefect.settings import Settings

PROTOCOL = "acc"
PREFIX = "acc://"
PARTIAL_MARK = ".acc-partial-"
# How much of a file's name its partial file keeps (UTF-8 bytes): enough to tell whose it
# is, short enough that any name storage takes leaves room for the mark and a random tail.
PARTIAL_HEAD = 64
CHUNK = 8 * 2**20
UPLOAD_PART = 16 * 2**20
UPLOAD_CONCURRENCY = 4
RUNSTORE = "accrun"  # :mod:`accelerator_prefect.runstore`: an object store, as a run sees it
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", RUNSTORE}
# Backslashes, percent-encoding, control characters (C0, DEL, C1) and the characters that
# reorder text on screen (bidirectional marks, embeddings, overrides and isolates), with
# which a name can show another name than it is ("invoice\u202egpj.exe").
_FORBIDDEN = re.compile(r"[\\%\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_NAME_BYTES = 255
"""The longest name (one path segment, UTF-8) storage takes: the local file systems'."""

mimetypes.add_type("application/x-netcdf", ".nc")
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")
mimetypes.add_type("text/markdown", ".md")
mimetypes.add_type("application/geo+json", ".geojson")
mimetypes.add_type("image/tiff", ".tif")

Progress = Callable[[int], None]
# Reads the hosted versions of one project as the principal's own client sees them.
VersionReader = Callable[[str], Iterable["SampleSource"]]
# Run ids found in paths → those of them that are runs, each with whether the principal
# may not read it (a run they did not launch, of a model they do not own): the folder
# named after a hidden run is not theirs, and nobody but the run writes in a run's folder.
RunGate = Callable[[list[str]], dict[str, bool]]
# (path relative to acc://, bytes about to be written or 0) → why its area's quota cannot
# hold them, or None.
QuotaGate = Callable[[str, int], "str | None"]
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# How long a Storage keeps which samples a principal may read in a project: the list
# grants reading only, and changes when a model is published or its scope changes.
SAMPLES_TTL = 10.0


class StoragePathError(AcceleratorError, ValueError):
    """An ``acc://`` path is malformed or would leave the storage root."""


class UnsupportedMode(AcceleratorError, ValueError):
    """An ``acc://`` file was opened in a mode storage does not offer (updates in place)."""


def check_path(path: str) -> str:
    """``path`` relative to the ``acc://`` root, if it cannot leave the root.

    Refused: absolute paths, ``.`` and ``..`` segments, empty segments,
    backslashes, percent-encoding and control characters.

    Example:
        >>> check_path("acc://climate/obs/t2m.csv")
        'climate/obs/t2m.csv'
    """
    rest = path[len(PREFIX) :] if path.startswith(PREFIX) else path
    rest = unicodedata.normalize("NFC", rest.rstrip("/"))  # one spelling of each name
    if not rest:
        return ""
    if rest.startswith("/"):
        raise StoragePathError(
            f"{PREFIX}{rest}: expected acc://<project>/<path>, not an absolute path"
        )
    if _FORBIDDEN.search(rest):
        shown = PREFIX + printable(rest)  # the message must not reorder itself
        raise StoragePathError(
            f"{shown}: backslashes, percent-encoding, control characters and characters that "
            "reorder text (bidirectional marks and overrides) are not allowed"
        )
    shown = PREFIX + rest
    for part in rest.split("/"):
        if part in {"", ".", ".."}:
            raise StoragePathError(f"{shown}: path segment {part!r} is not allowed")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise StoragePathError(
                f"{PREFIX}{rest[:60]}…: the name {part[:40]}… is {len(part.encode())} bytes "
                f"long; names may be at most {MAX_NAME_BYTES} bytes"
            )
    return rest


def printable(name: str) -> str:
    """``name`` as it may be shown: every character storage refuses (controls, those that
    reorder text) replaced by ``?``."""
    return _FORBIDDEN.sub("?", name)


def to_uri(path: str) -> str:
    """``climate/obs`` -> ``acc://climate/obs`` (checked)."""
    return PREFIX + check_path(path)


def media_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def accepts(name: str, accepted: Iterable[str]) -> bool:
    """Whether a file called ``name`` matches any accepted extension or media type.

    Example:
        >>> accepts("t2m.CSV", [".csv"]), accepts("map.png", ["image/*"])
        (True, True)
    """
    accepted = list(accepted)
    if not accepted:
        return True
    lower, kind = name.lower(), media_type(name)
    for entry in accepted:
        entry = entry.lower()
        if entry.startswith("."):
            if lower.endswith(entry):
                return True
        elif entry.endswith("/*"):
            if kind.startswith(entry[:-1]):
                return True
        elif kind == entry:
            return True
    return False


def partial_name(name: str) -> str:
    """The name of the file a write of ``name`` goes to until it completes, in the same
    folder: a dot-name (hidden from listings), the start of ``name`` and
    :data:`PARTIAL_MARK`, at most 90 bytes whatever the length of ``name``.

    Example:
        >>> partial_name("t2m.csv").startswith(".t2m.csv" + PARTIAL_MARK)
        True
    """
    head = name.encode()[:PARTIAL_HEAD].decode(errors="ignore")  # never half a character
    return f".{head}{PARTIAL_MARK}{uuid.uuid4().hex[:12]}"


def put_pairs(source: Path, target: str) -> list[tuple[Path, str]]:
    """What a ``put`` of the local file or folder ``source`` to ``target`` (an ``acc://``
    path) copies: (local file, its ``acc://`` path) pairs, a folder's files in order."""
    if source.is_file():
        return [(source, target)]
    return [
        (path, target + "/" + path.relative_to(source).as_posix())
        for path in sorted(source.rglob("*"))
        if path.is_file()
    ]


def refuse_dot_name(relative: str) -> None:
    """Refuse a write of a dot-name (``.env``, ``.cache/x``) by a user: listings hide them,
    as they hide partial files and the platform's own folders, so the file would be kept
    but never shown."""
    dotted = next((part for part in relative.split("/") if part.startswith(".")), None)
    if dotted is not None:
        raise StoragePathError(
            f"{to_uri(relative)}: the name {printable(dotted)!r} starts with a dot; names "
            "may not start with a dot (storage never lists such files), so rename it"
        )


def is_hidden(path: str) -> bool:
    """Whether any segment of ``path`` is a dot-name: partial files of unfinished
    writes, and what lies in dot-folders."""
    return any(part.startswith(".") for part in path.split("/"))


def folder_files(
    fs: AbstractFileSystem, folder: str, accepted: Iterable[str] = ()
) -> list[tuple[str, dict[str, Any]]]:
    """The files under ``folder`` on any fsspec ``fs``, recursively, as (path below the
    folder, fsspec info): hidden ones skipped, only ``accepted`` types.

    The outputs of earlier runs below ``folder`` are not swept in: a sub-folder holding a
    run's records (``provenance.json``, ``_INCOMPLETE.json``) is a run's output folder,
    used as inputs only when it is selected itself, and the records are never inputs.
    """
    from accelerator_prefect.outputs import RECORDS

    accepted = list(accepted)
    base = fs._strip_protocol(folder).rstrip("/")
    found = []
    for name, info in sorted(fs.find(folder, detail=True).items()):
        if info.get("type") == "file":
            found.append((name[len(base) + 1 :] if name.startswith(base + "/") else name, info))
    records = RECORDS
    runs = tuple(
        relative.rsplit("/", 1)[0] + "/"
        for relative, _ in found
        if "/" in relative and relative.rsplit("/", 1)[1] in records
    )
    return [
        (relative, info)
        for relative, info in found
        if not is_hidden(relative)
        and not relative.startswith(runs)
        and relative.rsplit("/", 1)[-1] not in records  # a run's records are not its outputs
        and accepts(str(info["name"]), accepted)
    ]


def run_folder_of(fs: AbstractFileSystem, relative: str) -> str | None:
    """The output folder of a run that ``relative`` is or lies in (one that holds the
    run's records, ``provenance.json`` or ``_INCOMPLETE.json``), if any."""
    from accelerator_prefect.outputs import INCOMPLETE, PROVENANCE

    parts = relative.strip("/").split("/")
    for depth in range(len(parts), 1, -1):
        here = "/".join(parts[:depth])
        if any(fs.isfile(f"{here}/{record}") for record in (PROVENANCE, INCOMPLETE)):
            return here
    return None


class AtomicWriter(io.RawIOBase):
    """A binary file that appears under its final name only when closed cleanly.

    Leaving a ``with`` block through an exception discards what was written.
    """

    def __init__(
        self, raw: IO[bytes], commit: Callable[[], None], discard: Callable[[], None], name: str
    ) -> None:
        self._raw = raw
        self._commit = commit
        self._discard = discard
        self._position = 0
        self._aborted = False
        self.name = name

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        count = len(memoryview(data))
        if not self._aborted:
            self._raw.write(data)
        self._position += count
        return count

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        if not self.closed and not self._aborted and not self._raw.closed:
            self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._aborted:
                try:
                    self._raw.close()
                    self._commit()
                except BaseException:  # nothing half-written stays behind
                    with contextlib.suppress(Exception):
                        self._discard()
                    raise
        finally:
            super().close()

    def abort(self) -> None:
        """Throw away what was written; nothing appears under the final name."""
        if self.closed or self._aborted:
            return
        self._aborted = True
        self._discard()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.abort()
        self.close()


class _AtomicText(io.TextIOWrapper):
    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.buffer.raw.abort()  # type: ignore[attr-defined]
        self.close()


def area_of(relative: str) -> str:
    """The storage area a path (relative to the root) lies in: its project
    (``climate``), its user's (``users/alice``), or its guest's under their link
    (``links/<id>/<guest>``: each guest of a link has an area of their own)."""
    from accelerator_prefect.access import LINKS_AREA, USERS_AREA

    parts = relative.strip("/").split("/")
    depth = {USERS_AREA: 2, LINKS_AREA: 3}.get(parts[0], 1)
    return "/".join(parts[:depth])


def run_ids(path: str) -> set[str]:
    """The run ids a path names (the folders of those runs' outputs are named after them)."""
    return set(RUN_ID.findall(path.lower()))


class AccFileSystem(DirFileSystem):  # type: ignore[misc]
    """The ``acc://`` protocol: ``acc://<project>/<path>`` under one backing URL.

    ``root`` and ``storage_options`` default to the settings
    ``ACC_STORAGE_URL`` and ``ACC_STORAGE_OPTIONS`` (JSON).
    """

    protocol = PROTOCOL
    root_marker = ""
    # Built from the settings of the process using it, so never shared from a cache.
    cachable = False

    def __init__(
        self,
        root: str | None = None,
        storage_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from fsspec.core import url_to_fs

        from accelerator_prefect.settings import get_settings

        if kwargs.pop("fo", None) or kwargs.pop("target_protocol", None):
            raise StoragePathError("acc:// is a storage root of its own and cannot be chained")
        kwargs.pop("target_options", None)
        settings = get_settings()
        self.root_url = root or settings.storage_root
        options = settings.storage_options if storage_options is None else storage_options
        if self.root_url.startswith(f"{RUNSTORE}://"):  # a warm run's, through its proxy
            from accelerator_prefect.runstore import RunStoreFileSystem

            fs, base = RunStoreFileSystem(**options), ""
        else:
            fs, base = url_to_fs(self.root_url, **options)
        self._local_root: str | None = None
        if isinstance(fs, LocalFileSystem):
            fs.makedirs(base, exist_ok=True)
            self._local_root = os.path.realpath(base)
        super().__init__(path=base, fs=fs, **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings) -> AccFileSystem:
        """The storage of the installation ``settings`` describe."""
        return cls(root=settings.storage_root, storage_options=settings.storage_options)

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = str(path.as_posix() if isinstance(path, Path) else path)
        return (text[len(PREFIX) :] if text.startswith(PREFIX) else text).rstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        return PREFIX + self._strip_protocol(name)

    def _join(self, path: Any) -> Any:
        if isinstance(path, str):
            relative = check_path(path)
            full = f"{self.path}{self.fs.sep}{relative}" if relative else self.path
            if self._local_root is not None:
                self._check_inside(full, relative)
            return full
        if isinstance(path, dict):
            return {self._join(p): value for p, value in path.items()}
        return [self._join(p) for p in path]

    def real_relative(self, relative: str) -> str:
        """Where ``acc://relative`` really lies, relative to the root, once symbolic links
        are followed (what does not exist yet: where it would be made). Object stores have
        no links: there, the path itself."""
        if self._local_root is None:
            return relative
        full = f"{self.path}{self.fs.sep}{relative}" if relative else self.path
        real = os.path.realpath(full)
        if real == self._local_root:
            return ""
        if not real.startswith(self._local_root + os.sep):
            raise StoragePathError(
                f"{PREFIX}{relative}: leads outside the storage root through a symbolic link"
            )
        return real[len(self._local_root) + 1 :].replace(os.sep, "/")

    def _check_inside(self, full: str, relative: str) -> None:
        """Refuse a path that a symbolic link leads out of the storage root, out of the
        area it names (``acc://lab/mirror`` → ``meteo``), or into the output folder of a
        run it does not name (``acc://lab/runs/<mine>/peek`` → ``lab/runs/<theirs>``):
        access is decided on areas and on the run ids paths name, so a link planted in
        storage must never open what its own path would not."""
        target = self.real_relative(relative)
        if target == relative:
            return  # no link on the way
        area = area_of(relative)
        if area_of(target) != area:
            raise StoragePathError(
                f"{PREFIX}{relative}: leads out of {PREFIX}{area}/ through a symbolic link"
            )
        if run_ids(target) - run_ids(relative):
            raise StoragePathError(
                f"{PREFIX}{relative}: leads into the output folder of another run through a "
                "symbolic link"
            )

    # -- what the local backend would otherwise get wrong -------------------------------------
    #
    # DirFileSystem hands bulk, glob and recursive calls to the backend whole, and the
    # backend expands them itself: a symbolic link met on the way would never pass
    # through _join. On the local backend those calls take fsspec's generic, per-file
    # road instead, so every file they touch is checked; object stores have no links.

    @contextmanager
    def _hiding_root(self) -> Iterator[None]:
        """Backend errors name ``acc://`` paths, never where the root lives."""
        try:
            yield
        except OSError as exc:
            root = str(self.path)
            filename = exc.filename if isinstance(exc.filename, str) else None
            if filename and filename.startswith(root):
                uri = PREFIX + filename[len(root) :].lstrip(self.fs.sep)
                raise type(exc)(exc.errno, exc.strerror, uri) from None
            if root in str(exc):
                message = str(exc).replace(root + self.fs.sep, PREFIX).replace(root, PREFIX)
                raise type(exc)(message) from None
            raise

    def _visible(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        """A listing entry as users may see it, or ``None`` if it must not be listed."""
        entry = {k: v for k, v in entry.items() if k != "destination"}
        try:
            check_path(str(entry["name"]))
            if entry.get("islink"):
                self._join(str(entry["name"]))  # refuses a link leading outside
        except StoragePathError:
            return None
        return entry

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        with self._hiding_root():
            entries = super().ls(path, detail=True, **kwargs)
        visible = [e for e in map(self._visible, entries) if e is not None]
        return visible if detail else [e["name"] for e in visible]

    def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
        detail = kwargs.pop("detail", False)
        with self._hiding_root():
            found = super().find(path, *args, detail=True, **kwargs)
        visible = {n: e for n, e in ((n, self._visible(e)) for n, e in found.items()) if e}
        return visible if detail else sorted(visible)

    def info(self, path: str, **kwargs: Any) -> Any:
        with self._hiding_root():
            return {k: v for k, v in super().info(path, **kwargs).items() if k != "destination"}

    def cat_file(self, path: str, *args: Any, **kwargs: Any) -> Any:
        with self._hiding_root():
            return super().cat_file(path, *args, **kwargs)

    def get_file(self, rpath: str, lpath: Any, callback: Any = None, **kwargs: Any) -> None:
        """Copy one file out of storage: the local file appears under its name only once
        complete, in a local folder made if need be (a folder met by a recursive get is
        made itself)."""
        with self._hiding_root():
            if isfilelike(lpath):
                with self.open(rpath, "rb") as source:
                    _copy(source, lpath, _progress_of(callback))
                return
            local = os.fspath(lpath)
            if self.isdir(rpath):
                os.makedirs(local, exist_ok=True)
                return
            folder, name = os.path.split(os.path.abspath(local))
            os.makedirs(folder, exist_ok=True)
            temp = os.path.join(folder, partial_name(name))
            try:
                if callback is not None:
                    kwargs["callback"] = callback
                self.fs.get_file(self._join(rpath), temp, **kwargs)
                os.replace(temp, local)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temp)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        with self._hiding_root():
            if self._local_root is None:
                super().rm(path, recursive=recursive, maxdepth=maxdepth)
                return
            # Exactly what the (checked) expansion found, deepest first; a symbolic link
            # is removed itself, never what lies beyond it (the expansion followed it).
            found = sorted(self.expand_path(path, recursive, maxdepth), reverse=True)
            links = [f for f in found if os.path.islink(self._join(f))]
            for name in found:
                if any(name.startswith(link + "/") for link in links):
                    continue
                full = self._join(name)
                if os.path.isdir(full) and not os.path.islink(full):
                    if recursive:  # links the listing does not show (refused ones) too
                        for entry in os.scandir(full):
                            if entry.is_symlink():
                                os.remove(entry.path)
                    os.rmdir(full)
                else:
                    os.remove(full)

    def cat(
        self, path: Any, recursive: bool = False, on_error: str = "raise", **kwargs: Any
    ) -> Any:
        if self._local_root is None:
            return super().cat(path, recursive=recursive, on_error=on_error, **kwargs)
        return AbstractFileSystem.cat(self, path, recursive, on_error, **kwargs)

    def copy(self, path1: Any, path2: Any, recursive: bool = False, **kwargs: Any) -> Any:
        with self._hiding_root():
            if self._local_root is None:
                source, target = self._join_bulk(path1), self._join_bulk(path2)
                return self.fs.copy(source, target, recursive=recursive, **kwargs)
            return AbstractFileSystem.copy(self, path1, path2, recursive=recursive, **kwargs)

    def mv(self, path1: Any, path2: Any, recursive: bool = False, **kwargs: Any) -> Any:
        with self._hiding_root():
            if self._local_root is None:
                source, target = self._join_bulk(path1), self._join_bulk(path2)
                return self.fs.mv(source, target, recursive=recursive, **kwargs)
            return AbstractFileSystem.mv(self, path1, path2, recursive=recursive, **kwargs)

    def get(self, rpath: Any, lpath: Any, recursive: bool = False, **kwargs: Any) -> Any:
        # fsspec's generic road on every backend: each file comes through get_file,
        # which makes the local folders it needs and writes each file aside first.
        with self._hiding_root():
            return AbstractFileSystem.get(self, rpath, lpath, recursive=recursive, **kwargs)

    def put(self, lpath: Any, rpath: Any, recursive: bool = False, **kwargs: Any) -> Any:
        with self._hiding_root():
            if self._local_root is None:
                return self.fs.put(lpath, self._join_bulk(rpath), recursive=recursive, **kwargs)
            return AbstractFileSystem.put(self, lpath, rpath, recursive=recursive, **kwargs)

    def _join_bulk(self, path: Any) -> Any:
        """:meth:`_join`, keeping a trailing ``/``: in a bulk call it means "into this
        folder" (a target) or "the contents of" (a source)."""
        if isinstance(path, str):
            full = self._join(path)
            return full + "/" if path.endswith("/") and check_path(path) else full
        return [self._join_bulk(p) for p in path]

    # -- writes: every one atomic, in folders made as needed, errors about acc:// paths ----
    #
    # DirFileSystem hands these to the backend, where they write in place and, on the
    # local disk, into an existing folder only; here they go through open_atomic.

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        if not truncate and self.exists(path):
            with self._hiding_root():  # only its time changes, where the backend can
                self.fs.touch(self._join(path), truncate=False, **kwargs)
            return
        with self._hiding_root(), self.open_atomic(path, **kwargs):
            pass

    def pipe(self, path: Any, value: Any = None, **kwargs: Any) -> None:
        AbstractFileSystem.pipe(self, path, value, **kwargs)

    def write_text(
        self,
        path: str,
        value: str,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        **kwargs: Any,
    ) -> int:
        options = {"encoding": encoding, "errors": errors, "newline": newline}
        with self._hiding_root(), self.open(path, "w", **options) as f:
            return int(f.write(value))

    def walk(self, path: str, *args: Any, **kwargs: Any) -> Any:
        if self._local_root is None:
            return super().walk(path, *args, **kwargs)
        return AbstractFileSystem.walk(self, path, *args, **kwargs)

    def glob(self, path: str, **kwargs: Any) -> Any:
        if self._local_root is None:
            return super().glob(path, **kwargs)
        return AbstractFileSystem.glob(self, path, **kwargs)

    def du(self, path: str, *args: Any, **kwargs: Any) -> Any:
        if self._local_root is None:
            return super().du(path, *args, **kwargs)
        return AbstractFileSystem.du(self, path, *args, **kwargs)

    def expand_path(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        if self._local_root is None:
            return super().expand_path(path, *args, **kwargs)
        return AbstractFileSystem.expand_path(self, path, *args, **kwargs)

    @property
    def is_object_store(self) -> bool:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return bool(OBJECT_STORES.intersection(protocols))

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        """Open a file; writing (``w``, ``x``, ``a``, text or binary) is atomic per file:
        what was written (or appended) appears only when the file is closed cleanly."""
        if "+" in mode:
            raise UnsupportedMode(
                f"{to_uri(path)}: mode {mode!r} is not supported: acc:// files are read "
                "('r'), or written whole ('w', 'x') or appended to ('a'), never updated "
                "in place"
            )
        if "r" in mode:
            with self._hiding_root():
                return super().open(path, mode, **kwargs)
        text = "b" not in mode
        encoding = kwargs.pop("encoding", None) or "utf-8"
        errors = kwargs.pop("errors", None)
        newline = kwargs.pop("newline", None)
        kwargs.pop("compression", None)
        with self._hiding_root():
            writer = self.open_atomic(path, exclusive="x" in mode, append="a" in mode, **kwargs)
        if not text:
            return writer
        return _AtomicText(
            io.BufferedWriter(writer), encoding=encoding, errors=errors, newline=newline
        )

    def open_atomic(
        self, path: str, *, exclusive: bool = False, append: bool = False, **kwargs: Any
    ) -> AtomicWriter:
        """A binary writer that publishes ``path`` only when closed cleanly (``append``:
        the file as it was, followed by what is written)."""
        target = self._join(path)
        if exclusive and self.fs.exists(target):
            raise FileExistsError(f"{to_uri(path)} already exists")
        parent, name = target.rsplit(self.fs.sep, 1)
        if self.is_object_store:
            raw = self.fs.open(target, "ab" if append else "wb", **kwargs)
            if isinstance(raw, AbstractBufferedFile):
                # An object appears only when its upload completes: already atomic.
                writer = AtomicWriter(
                    raw, commit=lambda: None, discard=lambda: _discard(raw), name=to_uri(path)
                )
                writer._position = raw.tell()  # appending: after what is there
                return writer
            raw.close()
        self.fs.makedirs(parent, exist_ok=True)
        temp = f"{parent}{self.fs.sep}{partial_name(name)}"
        raw = self.fs.open(temp, "wb", **kwargs)
        kept = 0
        if append and self.fs.isfile(target):
            try:
                with self.fs.open(target, "rb") as old:
                    kept = _copy(old, raw, None)
            except BaseException:
                raw.close()
                self.fs.rm_file(temp)
                raise

        def commit() -> None:
            if isinstance(self.fs, LocalFileSystem):
                os.replace(temp, target)
            else:
                self.fs.mv(temp, target)

        def discard() -> None:
            try:
                raw.close()  # may fail as the write did (a full disk flushing its buffer)
            finally:
                self.fs.rm_file(temp)

        writer = AtomicWriter(raw, commit=commit, discard=discard, name=to_uri(path))
        writer._position = kept
        return writer

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        with self._hiding_root(), self.open_atomic(path, exclusive=mode == "create") as f:
            f.write(value)

    def put_file(self, lpath: str, rpath: str, callback: Any = None, **kwargs: Any) -> None:
        if os.path.isdir(lpath):  # a folder met by a recursive put
            self.makedirs(rpath, exist_ok=True)
            return
        if self.is_object_store:
            # The backend's own upload: parallel parts, and atomic (an object appears
            # only when its multipart upload completes; s3fs aborts it on error).
            if callback is not None:
                kwargs["callback"] = callback
            if "s3" in self.fs.protocol:
                # Bounded: 4 parts of 16 MiB in flight, not s3fs's 10 of 50 MiB.
                kwargs.setdefault("chunksize", UPLOAD_PART)
                kwargs.setdefault("max_concurrency", UPLOAD_CONCURRENCY)
            with self._hiding_root():
                super().put_file(lpath, rpath, **kwargs)
            return
        with open(lpath, "rb") as source, self._hiding_root(), self.open_atomic(rpath) as target:
            _copy(source, target, _progress_of(callback))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        if self.is_object_store:
            with self._hiding_root():
                super().cp_file(path1, path2, **kwargs)
            return
        if self.isdir(path1):  # a folder met by a recursive copy
            self.makedirs(path2, exist_ok=True)
            return
        with self.open(path1, "rb") as source, self._hiding_root(), self.open_atomic(path2) as out:
            _copy(source, out, None)


class _Progress(Callback):  # type: ignore[misc]
    """An fsspec callback reporting each increment to a ``Progress`` function."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self._progress = progress
        self._reported = 0

    def call(self, *args: Any, **kwargs: Any) -> None:
        if self.value > self._reported:
            self._progress(self.value - self._reported)
            self._reported = self.value


def _progress_of(callback: Any) -> Progress | None:
    if callback is None or not hasattr(callback, "relative_update"):
        return None
    return callback.relative_update  # type: ignore[no-any-return]


def _discard(raw: AbstractBufferedFile) -> None:
    raw.discard()
    raw.closed = True


def _copy(source: IO[bytes], target: IO[bytes] | AtomicWriter, progress: Progress | None) -> int:
    total = 0
    while chunk := source.read(CHUNK):
        target.write(chunk)
        total += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return total


@dataclass(frozen=True)
class Entry:
    """A file or folder in ``acc://`` storage."""

    uri: str
    kind: str  # "file" or "folder"
    size: int
    modified: datetime | None
    media_type: str | None

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def is_folder(self) -> bool:
        return self.kind == "folder"


def _modified(info: dict[str, Any]) -> datetime | None:
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


def _entry(info: dict[str, Any]) -> Entry:
    uri = to_uri(str(info["name"]))
    if info.get("type") == "directory":
        return Entry(uri + "/", "folder", 0, _modified(info), None)
    return Entry(uri, "file", int(info.get("size") or 0), _modified(info), media_type(uri))


class Storage:
    """``acc://`` storage as users handle it: list, bring data in, take results out.

    Everything streams in chunks of 8 MiB, so memory stays flat whatever the
    file size; ``progress`` is called with the number of bytes of each chunk.

    Example:
        >>> storage = Storage()  # doctest: +SKIP
        >>> storage.put("t2m.csv", "acc://climate/obs/")  # doctest: +SKIP
        [Entry(uri='acc://climate/obs/t2m.csv', kind='file', ...)]
    """

    def __init__(
        self,
        fs: AccFileSystem | None = None,
        principal: Principal | Callable[[], Principal] | None = None,
        versions: VersionReader | None = None,
        runs: RunGate | None = None,
        quotas: QuotaGate | None = None,
    ) -> None:
        """Storage for ``principal`` (``None``: no rules, as inside a run). ``versions``
        reads the hosted versions of a project as the principal's own client sees them:
        the samples of those the principal may run are readable here too. ``runs`` says
        which runs named in paths the principal may not read: a folder named after such
        a run (a run's output folder) is not theirs, even inside their areas. ``quotas``
        says why a write of some bytes (0: not known) at a path would go over its area's
        quota, if it would (see :mod:`accelerator_prefect.retention`)."""
        self.fs = fs or AccFileSystem()
        self._principal = principal
        self._versions = versions
        self._runs = runs
        self._quotas = quotas
        self._samples: dict[tuple[Any, ...], tuple[float, tuple[str, ...]]] = {}
        self._run_gate: dict[tuple[str, str], tuple[float, bool | None]] = {}

    @property
    def principal(self) -> Principal | None:
        """Whose storage rules apply (``None``: none, as inside a run)."""
        return self._principal() if callable(self._principal) else self._principal

    def reading_samples(self, versions: VersionReader) -> Storage:
        """This storage, for the same principal, reading also the sample inputs of the
        versions ``versions`` reads that the principal may run."""
        return Storage(self.fs, self._principal, versions, self._runs, self._quotas)

    def _named_runs(self, paths: Iterable[str]) -> dict[str, bool]:
        """The run ids named in ``paths`` that are runs, each with whether the principal
        may not read it (asked again after a few seconds, so a change of rights counts
        soon); none for operators."""
        principal = self.principal
        if self._runs is None or principal is None or principal.operator:
            return {}
        ids = set().union(*map(run_ids, paths))
        now = time.monotonic()
        known: dict[str, bool | None] = {}
        for run_id in ids:
            held = self._run_gate.get((principal.name, run_id))
            if held is not None and now - held[0] <= SAMPLES_TTL:
                known[run_id] = held[1]
        unknown = sorted(ids - set(known))
        if unknown:
            found = self._runs(unknown)
            for i in unknown:
                known[i] = found.get(i)  # None: no such run
                self._run_gate[(principal.name, i)] = (now, known[i])
            if len(self._run_gate) > 4096:
                self._run_gate.clear()
        return {i: hidden for i, hidden in known.items() if hidden is not None}

    def _hidden_runs(self, paths: Iterable[str]) -> set[str]:
        """The run ids named in ``paths`` whose runs the principal may not read."""
        return {i for i, hidden in self._named_runs(paths).items() if hidden}

    def _refuse_hidden_run(self, relative: str, real: str) -> None:
        """Refuse ``relative`` if it, or where it really lies (``real``), is in the folder
        of a run the principal may not read."""
        hidden = self._hidden_runs({relative, real})
        if hidden:
            raise AccessDenied(
                f"{to_uri(relative)}: in the output folder of a run you may not read "
                "(a run is read by whoever launched it, its model's owner and operators)"
            )

    def _without_hidden_runs(self, entries: list[Entry]) -> list[Entry]:
        hidden = self._hidden_runs(e.uri for e in entries)
        if not hidden:
            return entries
        return [e for e in entries if not set(RUN_ID.findall(e.uri.lower())) & hidden]

    def _allowed(self, uri: str, listing: bool = False, reading: bool = False) -> str:
        """``uri`` relative to the root, if the principal (when there is one) may use it,
        or, when ``reading``, read it as (inside) a sample of a model they may run.

        Decided on the path (and the models' samples), and, in the principal's own areas,
        on where it really lies once symbolic links are followed: a link planted in their
        area opens nothing its target would not. So a refusal says nothing about what is
        there but for links in their own areas. Only a listing may name the root itself
        (and shows only what may be used).
        """
        relative = check_path(uri)
        principal = self.principal
        if principal is None or principal.operator or (listing and not relative):
            return relative
        from accelerator_prefect.access import may_use_path, usable_areas

        if relative and may_use_path(principal, relative):
            real = self.fs.real_relative(relative)
            if real != relative and not (real and may_use_path(principal, real)):
                raise AccessDenied(
                    f"{to_uri(relative)}: leads through a symbolic link outside the storage "
                    f"you may use ({', '.join(usable_areas(principal))})"
                )
            self._refuse_hidden_run(relative, real)
            return relative
        if relative and reading and self._sample_of(principal, relative) is not None:
            return relative
        raise AccessDenied(
            f"{to_uri(relative)}: outside the storage you may use "
            f"({', '.join(usable_areas(principal))})"
        )

    def _sample_of(self, principal: Principal, relative: str) -> str | None:
        """The sample ``relative`` lies in (or is) that ``principal`` may read, if any."""
        from accelerator_prefect.access import in_sample

        for sample in self._readable_samples(principal, relative.split("/", 1)[0]):
            if in_sample(relative, sample) and self._stays_in(relative, sample):
                return sample
        return None

    def _readable_samples(self, principal: Principal, project: str) -> tuple[str, ...]:
        """The samples in ``project`` that ``principal`` may read, read once a while."""
        if self._versions is None:
            return ()
        from accelerator_prefect.access import readable_samples

        # Who exactly is asking: a changed membership or link is another principal.
        key = (principal.name, principal.guest, principal.links, *principal.projects.items())
        key += (principal.operator, project)
        held = self._samples.get(key)
        now = time.monotonic()
        if held is None or now - held[0] > SAMPLES_TTL:
            found = readable_samples(principal, self._versions(project))
            # A model's samples lie in its own project's folder; nothing else is opened.
            inside = tuple(s for s in found if s.startswith(project + "/"))
            held = self._samples[key] = (now, inside)
        return held[1]

    def _stays_in(self, relative: str, sample: str) -> bool:
        """Whether ``relative`` really lies in ``sample``, and the sample in its project's
        folder, once symbolic links are followed (object stores have none)."""
        root = self.fs._local_root
        if root is None:
            return True
        project = os.path.realpath(os.path.join(root, sample.split("/", 1)[0]))
        base = os.path.realpath(os.path.join(root, sample.rstrip("/")))
        real = os.path.realpath(os.path.join(root, relative))
        return _within(base, project) and _within(real, base)

    def _readable_entries(self, uri: str, entries: list[Entry]) -> list[Entry]:
        """``entries`` found under ``uri``, those the principal may read: all of them in
        their own areas; inside a sample, those that stay in it."""
        principal = self.principal
        relative = check_path(uri)
        if principal is None or principal.operator or not relative:
            return entries
        from accelerator_prefect.access import may_use_path

        if may_use_path(principal, relative):
            return self._without_hidden_runs(entries)
        sample = self._sample_of(principal, relative)
        if sample is None:
            return []
        return [e for e in entries if self._stays_in(check_path(e.uri), sample)]

    def _failed(self, uri: str, exc: OSError) -> AcceleratorError:
        """A backend error as users should read it: about their acc:// path."""
        if isinstance(exc, FileNotFoundError):
            return NotFound(f"{to_uri(uri)}: no such file or folder")
        return AcceleratorError(f"{to_uri(uri)}: {exc.strerror or type(exc).__name__}")

    def info(self, uri: str) -> Entry:
        self._allowed(uri, reading=True)
        try:
            return _entry(self.fs.info(uri))
        except OSError as exc:
            raise self._failed(uri, exc) from None

    def exists(self, uri: str) -> bool:
        self._allowed(uri, reading=True)
        return bool(self.fs.exists(uri))

    def ls(self, uri: str = PREFIX) -> list[Entry]:
        """The files and folders directly inside ``uri`` (dot-files hidden; at the root,
        only the folders this principal may use)."""
        top = not self._allowed(uri, listing=True, reading=True)
        try:
            infos = self.fs.ls(uri, detail=True)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not check_path(uri):
                return []  # an empty storage (an object store has no folder until a file)
            raise self._failed(uri, exc) from None
        entries = [_entry(i) for i in infos if not is_hidden(str(i["name"]).rsplit("/", 1)[-1])]
        principal = self.principal
        if top and principal is not None and not principal.operator:
            from accelerator_prefect.access import may_use_path

            entries = [e for e in entries if may_use_path(principal, e.name)]
        elif not top:
            entries = self._readable_entries(uri, entries)
        return sorted(entries, key=lambda e: (not e.is_folder, e.uri))

    def files(self, uri: str, accepted: Iterable[str] = ()) -> list[Entry]:
        """Every file under folder ``uri``, recursively, matching ``accepted`` types."""
        self._allowed(uri, reading=True)
        try:
            found = [_entry(info) for _, info in folder_files(self.fs, uri, accepted)]
        except OSError as exc:
            raise self._failed(uri, exc) from None
        return self._readable_entries(uri, found)

    def _writable(self, uri: str, *, recursive: bool = False) -> str:
        """``uri`` relative to the root, if the principal may write or remove it: inside
        their areas, and not in the output folder of a run: one that has ended (its
        outputs are kept as it wrote them), nor one named after a run, which only the run
        writes (operators excepted), nor leading into one through a symbolic link.
        ``recursive``: nor holding one that has ended."""
        relative = self._allowed(uri)
        principal = self.principal
        if principal is None or principal.operator or not relative:
            return relative
        real = self.fs.real_relative(relative)
        ended = run_folder_of(self.fs, relative)
        if ended is None and real != relative:
            ended = run_folder_of(self.fs, real)
        if ended is None and recursive and self.fs.isdir(uri):
            from accelerator_prefect.outputs import INCOMPLETE, PROVENANCE

            records = [
                name
                for name in self.fs.find(uri)
                if name.rsplit("/", 1)[-1] in (PROVENANCE, INCOMPLETE)
            ]
            ended = records[0].rsplit("/", 1)[0] if records else None
        if ended is not None:
            raise AccessDenied(
                f"{to_uri(relative)}: in the output folder of an ended run ({to_uri(ended)}/), "
                "which stays as the run wrote it; copy its files elsewhere to change them"
            )
        running = sorted(self._named_runs({relative, real}))
        if running:
            raise AccessDenied(
                f"{to_uri(relative)}: in the output folder of run {running[0]}, which only the "
                "run writes; copy its files elsewhere to change them once it has ended"
            )
        return relative

    def _refuse_dot_name(self, relative: str) -> None:
        """:func:`refuse_dot_name` for a user's write. (Runs and the platform itself write
        with no principal.)"""
        if self.principal is not None:
            refuse_dot_name(relative)

    def _within_quota(self, relative: str, incoming: int = 0) -> None:
        """Refuse a write of ``incoming`` bytes (0: not known) at ``relative`` that its
        area's quota cannot hold (operators are not held by quotas)."""
        principal = self.principal
        if self._quotas is None or principal is None or principal.operator:
            return
        problem = self._quotas(relative, incoming)
        if problem is not None:
            raise StorageQuotaExceeded(problem)

    def open(self, uri: str, mode: str = "rb", *, expected_size: int = 0, **kwargs: Any) -> Any:
        """Open a file; writes appear only once the file is closed cleanly.
        ``expected_size``: the bytes about to be written, if known (for the quota)."""
        if any(c in mode for c in "wax+"):
            relative = self._writable(uri)
            self._refuse_dot_name(relative)
            self._within_quota(relative, expected_size)
        else:
            self._allowed(uri, reading=True)
        try:
            return self.fs.open(uri, mode, **kwargs)
        except OSError as exc:
            raise self._failed(uri, exc) from None

    def rm(self, uri: str, recursive: bool = False) -> None:
        self._writable(uri, recursive=recursive)
        try:
            self.fs.rm(uri, recursive=recursive)
        except OSError as exc:
            raise self._failed(uri, exc) from None

    def _into(self, uri: str, name: str) -> str:
        """``uri`` itself, or ``uri/name`` when ``uri`` is a folder."""
        if uri.endswith("/") or check_path(uri).count("/") == 0 or self.fs.isdir(uri):
            return to_uri(check_path(uri) + "/" + name)
        return to_uri(uri)

    def plan_put(self, local: str | Path, uri: str) -> list[tuple[Path, str]]:
        """The (local file, acc:// URI) pairs ``put`` would copy."""
        self._allowed(uri)
        source = Path(local)
        if not source.exists():
            raise NotFound(f"{source}: no such local file or folder")
        target = self._into(uri, source.name)
        self._writable(target)
        pairs = put_pairs(source, target)
        if source.is_dir():
            for folder in sorted({t.rsplit("/", 1)[0] for _, t in pairs}):
                self._writable(folder)  # once a folder, not once a file
        for _, each in pairs:  # before anything is copied
            self._refuse_dot_name(check_path(each))
        self._within_quota(check_path(target), sum(path.stat().st_size for path, _ in pairs))
        return pairs

    def put(self, local: str | Path, uri: str, progress: Progress | None = None) -> list[Entry]:
        """Copy a local file or folder into ``uri`` (into it, if ``uri`` is a folder)."""
        done = []
        for source, target in self.plan_put(local, uri):
            if progress is None:
                self.fs.put_file(str(source), target)
            else:
                self.fs.put_file(str(source), target, callback=_Progress(progress))
            done.append(target)
        return [self.info(target) for target in done]

    def plan_get(self, uri: str, local: str | Path) -> list[tuple[Entry, Path]]:
        """The (acc:// file, local path) pairs ``get`` would copy."""
        entry = self.info(uri)
        destination = Path(local)
        if destination.is_dir() or str(local).endswith(os.sep):
            destination = destination / entry.name
        if not entry.is_folder:
            return [(entry, destination)]
        base = entry.uri
        return [(f, destination / f.uri[len(base) :]) for f in self.files(uri)]

    def get(self, uri: str, local: str | Path, progress: Progress | None = None) -> list[Path]:
        """Copy a file or folder out of storage; a local file appears only once complete."""
        done = []
        for entry, target in self.plan_get(uri, local):
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(partial_name(target.name))
            try:
                # Streamed, not the backend's get_file: s3fs's buffers the whole object.
                with self.fs.open(entry.uri, "rb") as f, temp.open("wb") as out:
                    _copy(f, out, progress)
                os.replace(temp, target)
            finally:
                temp.unlink(missing_ok=True)
            done.append(target)
        return done
