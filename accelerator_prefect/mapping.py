"""Input and output mappings: what a launch may select, and where a run writes.

The manifest's input mapping (counts, accepted types, sources, total size)
goes into the deployment's parameter schema where JSON Schema can say it, so
the Prefect UI and the server enforce it too; :func:`input_problems` checks it
in full at launch, against the files as they are in storage. Inside a run,
:func:`expand` turns the selection into the files a routine reads. Cloud URLs
are read only where :mod:`accelerator_prefect.fetching` allows, at launch and
again in the run, and before anything is connected to.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from accelerator_prefect.errors import InvalidInputs
from accelerator_prefect.fetching import UNREADABLE, CloudSources, cloud_filesystem
from accelerator_prefect.manifest import InputMapping, Manifest, Source
from accelerator_prefect.settings import Settings, get_settings
from accelerator_prefect.storage import (
    PREFIX,
    StoragePathError,
    accepts,
    check_path,
    folder_files,
    media_type,
)
from accelerator_prefect.validation import MESSAGE_KEY

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from accelerator_prefect.storage import AccFileSystem

_log = logging.getLogger(__name__)
_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_size(text: str) -> int:
    """``"500 MB"`` -> ``500000000``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)\s*", text)
    if not match:
        raise ValueError(f"{text!r}: expected a size such as '500 MB' or '2 GiB'")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def source_of(uri: str, settings: Settings | None = None) -> Source | None:
    """Where ``uri`` lives: ``storage`` (acc://), ``cloud`` (one of the installation's
    ``cloud_schemes``: s3://, https:// …) or unknown."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "acc":
        return Source.storage
    return Source.cloud if scheme in (settings or get_settings()).cloud_schemes else None


def _filesystem(
    uri: str,
    storage: AccFileSystem | None = None,
    settings: Settings | None = None,
    where: str = "input",
) -> tuple[AbstractFileSystem, str]:
    """The filesystem reading ``uri``; any other URL than acc:// only once
    :func:`~accelerator_prefect.fetching.cloud_filesystem` allows it (``InvalidInputs``)."""
    if uri.startswith(PREFIX):
        from accelerator_prefect.storage import AccFileSystem

        return storage or AccFileSystem(), uri
    return cloud_filesystem(uri, settings, where=where)


@dataclass(frozen=True)
class InputFile:
    """One selected file (folders expanded), as a routine reads it.

    Example:
        >>> for f in inputs.files():  # doctest: +SKIP
        ...     with f.open() as stream:
        ...         header = stream.readline()
    """

    uri: str
    size: int
    selected: str  # the file or folder the user selected

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def relative(self) -> str:
        """The path below the selected folder (the name, for a selected file)."""
        if self.selected == self.uri:
            return self.name
        return self.uri[len(self.selected.rstrip("/")) + 1 :]

    @property
    def suffix(self) -> str:
        return "." + self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""

    @property
    def media_type(self) -> str:
        return media_type(self.name)

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """Open the file for reading (``"rb"`` or ``"r"``); it streams, nothing is loaded."""
        if "r" not in mode:
            raise ValueError(f"{self.uri}: inputs are read-only; write to the run's output")
        fs, path = _filesystem(self.uri)
        return fs.open(path, mode, **kwargs)  # type: ignore[no-any-return]

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()  # type: ignore[no-any-return]

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def __str__(self) -> str:
        return self.uri


def _folder_files(fs: AbstractFileSystem, path: str, accepted: list[str]) -> list[tuple[str, int]]:
    return [
        (relative, int(info.get("size") or 0))
        for relative, info in folder_files(fs, path, accepted)
    ]


def expand(
    selected_files: Iterable[str],
    selected_folders: Iterable[str],
    accepted: Iterable[str] = (),
    settings: Settings | None = None,
) -> list[InputFile]:
    """The selected files with folders expanded (matching ``accepted``), in order,
    each once.

    Every cloud URL is checked again here, in the run, before any is read: a run
    created past the launcher (Prefect's own API) or a name that now resolves
    elsewhere meets the same rule. Raises ``InvalidInputs`` naming each refused one.
    """
    accepted, settings = list(accepted), settings or get_settings()
    selection = [(f"inputs.selected_files[{i}]", u, False) for i, u in enumerate(selected_files)]
    selection += [
        (f"inputs.selected_folders[{i}]", u, True) for i, u in enumerate(selected_folders)
    ]
    opened: list[tuple[str, bool, AbstractFileSystem, str]] = []
    refused: list[str] = []
    for where, uri, is_folder in selection:
        try:
            opened.append((uri, is_folder, *_filesystem(uri, settings=settings, where=where)))
        except InvalidInputs as exc:
            refused += exc.problems
    if refused:
        raise InvalidInputs(refused, what="inputs")
    files: list[InputFile] = []
    for uri, is_folder, fs, path in opened:
        if not is_folder:
            files.append(InputFile(uri, int(fs.info(path).get("size") or 0), uri))
    for uri, is_folder, fs, path in opened:
        if is_folder:
            base = uri.rstrip("/")
            files += [
                InputFile(f"{base}/{relative}", size, uri)
                for relative, size in _folder_files(fs, path, accepted)
            ]
    unique: dict[str, InputFile] = {}
    for f in files:
        unique.setdefault(f.uri, f)
    return list(unique.values())


def _check_one(
    where: str,
    uri: str,
    mapping: InputMapping,
    folder: bool,
    storage: AccFileSystem | None,
    settings: Settings,
) -> tuple[list[str], list[InputFile]]:
    """Problems with one selected file or folder, and the files it contributes."""
    source = source_of(uri, settings)
    if source is None:
        schemes = ", ".join(f"{s}://" for s in settings.cloud_schemes)
        return [f"{where}: {uri!r} is not an acc:// path or a cloud URL ({schemes})"], []
    if source not in mapping.sources:
        allowed = " or ".join(s.value for s in mapping.sources)
        return [f"{where}: {uri} comes from {source.value}; this model accepts {allowed} only"], []
    if source == Source.cloud:
        return _check_cloud(where, uri, mapping, folder, settings)
    try:
        check_path(uri)
    except StoragePathError as exc:
        return [f"{where}: {exc}"], []
    try:
        fs, path = _filesystem(uri, storage)
        info = fs.info(path)
    except StoragePathError as exc:  # e.g. through a link leading out of the root
        return [f"{where}: {exc}"], []
    except FileNotFoundError:
        return [f"{where}: {uri} does not exist"], []
    except OSError as exc:  # the reason only: the message may name backend paths
        return [f"{where}: {uri} cannot be read ({exc.strerror or type(exc).__name__})"], []
    except Exception as exc:  # a storage backend's own error: say which input it was
        return [f"{where}: {uri} cannot be read ({type(exc).__name__})"], []
    return _selected(where, uri, mapping, folder, fs, path, info)


def _check_cloud(
    where: str, uri: str, mapping: InputMapping, folder: bool, settings: Settings
) -> tuple[list[str], list[InputFile]]:
    """A cloud URL: refused before anything is connected to unless inputs may come
    from there; once read, every failure (refused, timed out, missing, denied) gives
    the same answer, so a launch cannot tell what lies behind an address."""
    CloudSources.from_settings(settings)  # malformed cloud_hosts: the operator's to fix, loudly
    try:
        fs, path = cloud_filesystem(uri, settings, where=where)
        return _selected(where, uri, mapping, folder, fs, path, fs.info(path))
    except InvalidInputs as exc:  # refused: nothing was connected to
        return exc.problems, []
    except Exception as exc:  # e.g. its backend is not installed, or the read failed
        _log.info("cloud input %s could not be read: %s", uri, type(exc).__name__)
        return [f"{where}: {uri} {UNREADABLE}"], []


def _selected(
    where: str,
    uri: str,
    mapping: InputMapping,
    folder: bool,
    fs: AbstractFileSystem,
    path: str,
    info: dict[str, Any],
) -> tuple[list[str], list[InputFile]]:
    """Problems with a selected file or folder that exists, and the files it contributes."""
    is_folder = info.get("type") == "directory"
    if folder and not is_folder:
        return [f"{where}: {uri} is a file, not a folder; select it as a file"], []
    if not folder and is_folder:
        return [f"{where}: {uri} is a folder; select it as a folder"], []
    if not folder:
        if not accepts(uri, mapping.accepted_types):
            kinds = ", ".join(mapping.accepted_types)
            return [f"{where}: {uri} is not an accepted type (accepted: {kinds})"], []
        return [], [InputFile(uri, int(info.get("size") or 0), uri)]
    base = uri.rstrip("/")
    files = [
        InputFile(f"{base}/{relative}", size, uri)
        for relative, size in _folder_files(fs, path, mapping.accepted_types)
    ]
    if not files:
        kinds = f" of type {', '.join(mapping.accepted_types)}" if mapping.accepted_types else ""
        return [f"{where}: {uri} contains no files{kinds}"], []
    return [], files


def input_problems(
    mapping: InputMapping,
    inputs: dict[str, Any],
    storage: AccFileSystem | None = None,
    settings: Settings | None = None,
) -> list[str]:
    """Every way a selection fails the model's input mapping, one line per problem."""
    settings = settings or get_settings()
    problems: list[str] = []
    files: list[InputFile] = []
    for key, folder in (("selected_files", False), ("selected_folders", True)):
        for index, uri in enumerate(inputs.get(key) or []):
            where = f"inputs.{key}[{index}]"
            found, contributed = _check_one(where, uri, mapping, folder, storage, settings)
            problems += found
            files += contributed
    if problems:
        return problems
    count = len({f.uri for f in files})
    kinds = f" of type {', '.join(mapping.accepted_types)}" if mapping.accepted_types else ""
    if count < mapping.min_files:
        problems.append(
            f"inputs: {count} file(s){kinds} selected (folders expanded); "
            f"at least {mapping.min_files} required"
        )
    if mapping.max_files is not None and count > mapping.max_files:
        problems.append(
            f"inputs: {count} files selected (folders expanded); at most {mapping.max_files} "
            "allowed"
        )
    if mapping.max_total_size is not None:
        total, limit = sum(f.size for f in files), parse_size(mapping.max_total_size)
        if total > limit:
            problems.append(
                f"inputs: the selection totals {human_size(total)}; at most "
                f"{mapping.max_total_size} allowed"
            )
    return problems


def output_problems(location: str, storage: AccFileSystem | None = None) -> list[str]:
    """Problems with an output location (an acc:// folder, not an existing file)."""
    if not location.startswith(PREFIX):
        return [f"output.location: {location!r} must be an acc:// folder"]
    concrete = location.replace("{run_id}", "run")
    try:
        relative = check_path(concrete)
    except StoragePathError as exc:
        return [f"output.location: {exc}"]
    if "/" not in relative:
        return [f"output.location: {location} is a project root; choose a folder inside it"]
    from accelerator_prefect.storage import AccFileSystem, run_folder_of

    fs = storage or AccFileSystem()
    parts = relative.split("/")
    try:
        for depth in range(2, len(parts) + 1):
            here = "/".join(parts[:depth])
            if fs.isfile(here):
                what = (
                    "is an existing file"
                    if depth == len(parts)
                    else f"is inside the file {PREFIX}{here}"
                )
                return [f"output.location: {location} {what}; choose a folder"]
        ran = run_folder_of(fs, relative)
    except StoragePathError as exc:
        return [f"output.location: {exc}"]
    if ran is not None:
        return [
            f"output.location: {location} is in the output folder of another run "
            f"({PREFIX}{ran}/); choose a new folder"
        ]
    return []


# -- the parameter schema ------------------------------------------------------------------------


def _insensitive(suffix: str) -> str:
    return "".join(
        f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in suffix.lstrip(".")
    )


def _uri_pattern(sources: list[Source], cloud_schemes: Iterable[str]) -> str:
    schemes = ["acc"] if Source.storage in sources else []
    if Source.cloud in sources:
        schemes += [s.lower() for s in cloud_schemes]
    return f"^({'|'.join(re.escape(s) for s in schemes)})://"


def _file_pattern(accepted: list[str]) -> str | None:
    """A JSON Schema pattern for accepted extensions (``None`` if media types are used)."""
    if not accepted or any(not a.startswith(".") for a in accepted):
        return None
    return f"\\.({'|'.join(_insensitive(a) for a in accepted)})$"


def inputs_schema(
    mapping: InputMapping, title: str = "inputs", settings: Settings | None = None
) -> dict[str, Any]:
    """The ``inputs`` parameter's schema with the mapping's constraints inlined (the
    cloud schemes as the installation allows them when the version is published)."""
    cloud = Source.cloud in mapping.sources
    schemes = (settings or get_settings()).cloud_schemes if cloud else []
    uri = {
        "type": "string",
        "pattern": _uri_pattern(mapping.sources, schemes),
        MESSAGE_KEY: "is not an acc:// path or a cloud URL (s3://, https:// …)"
        if cloud
        else "is not an acc:// path (this model reads acc:// storage only)",
    }
    file_item: dict[str, Any] = dict(uri)
    pattern = _file_pattern(mapping.accepted_types)
    if pattern:
        kinds = ", ".join(mapping.accepted_types)
        types = {"pattern": pattern, MESSAGE_KEY: f"is not an accepted type (accepted: {kinds})"}
        file_item = {"type": "string", "allOf": [uri, types]}
    files: dict[str, Any] = {
        "type": "array",
        "title": "Selected files",
        "items": file_item,
        "description": "Files to read (acc:// paths"
        + (", or cloud URLs" if Source.cloud in mapping.sources else "")
        + ").",
    }
    if mapping.max_files is not None:
        files["maxItems"] = mapping.max_files
    return {
        "type": "object",
        "title": title,
        "additionalProperties": False,
        "properties": {
            "selected_files": files,
            "selected_folders": {
                "type": "array",
                "title": "Selected folders",
                "items": dict(uri),
                "description": "Folders whose matching files are all read.",
            },
            "accepted_types": {
                "type": "array",
                "title": "Accepted types",
                "items": {"type": "string"},
                "default": list(mapping.accepted_types),
                "description": "Set from the model's input mapping at launch.",
            },
        },
    }


def constrain_schema(schema: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    """The jobflow's parameter schema with the manifest's input and output mappings."""
    schema = copy.deepcopy(schema)
    properties = schema.get("properties", {})
    if "inputs" in properties:
        position = properties["inputs"].get("position")
        properties["inputs"] = {**inputs_schema(manifest.inputs), "position": position}
    if "output" in properties:
        position = properties["output"].get("position")
        properties["output"] = {
            "type": "object",
            "title": "output",
            "position": position,
            "additionalProperties": False,
            "required": ["location"],
            "properties": {
                "location": {
                    "type": "string",
                    "title": "Output location",
                    "pattern": "^acc://",
                    MESSAGE_KEY: "is not an acc:// folder",
                    "description": "The acc:// folder the run writes its results into.",
                }
            },
        }
    definitions = schema.get("definitions", {})
    for name in ("Inputs", "Output"):
        if name in definitions and f'"#/definitions/{name}"' not in json.dumps(properties):
            del definitions[name]
    return schema
