"""Hosting manifests: the YAML an author writes to host one model version.

``deployments/<model>.yaml`` is validated by :class:`Manifest`; every error
names the file, the field path and what was expected. The manifest's JSON
Schema (``Manifest.model_json_schema()``) is published next to the manifests
so editors validate and complete them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from accelerator_prefect.errors import ManifestError, field_path

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
SETTING = re.compile(r"^conf(\.[A-Za-z_][A-Za-z0-9_]*)+$")
SCHEMA_FILE = "manifest.schema.json"
# What a pattern means, in words: a message names the value and then says this (the
# ajv-errors `errorMessage` convention, which editors show too), never the regex itself.
MESSAGE_KEY = "errorMessage"


def _says(message: str) -> dict[str, Any]:
    return {MESSAGE_KEY: message}


Slug = Annotated[
    str,
    Field(
        pattern=SLUG,
        json_schema_extra=_says(
            "is not a name of lowercase letters, digits and dashes (starting with a letter "
            "or digit, at most 63 characters), e.g. flood-frequency"
        ),
    ),
]


class Scope(StrEnum):
    """Who may see and run a model (decided by the access layer)."""

    private = "private"
    project = "project"
    public = "public"
    link = "link"


class Status(StrEnum):
    """Where a version is in its lifecycle."""

    active = "active"
    deprecated = "deprecated"
    archived = "archived"


class Source(StrEnum):
    """Where selected inputs may come from."""

    storage = "storage"
    cloud = "cloud"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Rules across fields and rules on paths are written once, as functions of plain values:
# the models' validators use them, and so does :func:`parse_manifest` on the raw data when
# other fields fail (pydantic then skips a model's own validators), so that every problem
# of a manifest is reported at once.


def _count_problem(min_files: Any, max_files: Any) -> str | None:
    if not (_is_int(min_files) and _is_int(max_files)) or max_files >= min_files:
        return None
    return f"max_files ({max_files}) is less than min_files ({min_files})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inside_repository(path: str) -> bool:
    return (
        bool(path) and not path.startswith("/") and ".." not in path.split("/") and "\\" not in path
    )


def _data_path_problem(path: str) -> str | None:
    if _inside_repository(path):
        return None
    return (
        f"data path {path!r}: expected a path inside the repository, relative to its root, "
        "e.g. data/terrain.nc"
    )


def _data_path(path: str) -> str:
    problem = _data_path_problem(path)
    if problem:
        raise ValueError(problem)
    return path.strip("/")


DataPath = Annotated[str, AfterValidator(_data_path)]


def _sample_problem(project: str, sample: str) -> str | None:
    # Samples become readable by everyone who may run the model: they must be the
    # project's own files, never a door into another area.
    area = f"acc://{project}/"
    rest = sample[len(area) :] if sample.startswith(area) else None
    parts = (rest or "").rstrip("/").split("/")
    if rest and not any(p in ("", ".", "..") for p in parts) and "\\" not in sample:
        return None
    return (
        f"inputs.samples: {sample!r} is not a file or folder in the model's own "
        f"project area: expected {area}<path>, e.g. {area}examples/"
    )


class AccessPolicy(_Strict):
    """Who may see and run the model."""

    scope: Scope = Field(default=Scope.private, description="private, project, public or link.")


class InputMapping(_Strict):
    """What a launcher may select as inputs."""

    min_files: int = Field(default=0, ge=0, description="Fewest files (folders expanded).")
    max_files: int | None = Field(default=None, ge=1, description="Most files (folders expanded).")
    accepted_types: list[str] = Field(
        default_factory=list,
        description="Accepted extensions ('.nc') or media types ('text/csv'); empty accepts all.",
    )
    sources: list[Source] = Field(default_factory=lambda: [Source.storage])
    max_total_size: str | None = Field(
        default=None,
        pattern=r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="Largest total size of the selection, e.g. '500 MB'.",
        json_schema_extra=_says(
            "is not a size: a number and a unit (B, KB, MB, GB, TB, KiB, MiB, GiB or TiB), "
            "e.g. '500 MB'"
        ),
    )
    samples: list[str] = Field(
        default_factory=list,
        description="Sample inputs, as acc://<project>/... files or folders (a folder ends "
        "with /) in the model's own project area. Everyone who may run the model may read "
        "them and start from them with one click.",
    )

    @model_validator(mode="after")
    def _counts(self) -> InputMapping:
        problem = _count_problem(self.min_files, self.max_files)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("accepted_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not re.match(r"^(\.[A-Za-z0-9][A-Za-z0-9._-]*|[a-z]+/([a-z0-9.+-]+|\*))$", entry):
                raise ValueError(
                    f"accepted type {entry!r}: expected an extension such as '.csv' or a media "
                    "type such as 'text/csv' or 'image/*'"
                )
        return value


class OutputColumn(_Strict):
    """What one column of an output table holds, for the people who read it."""

    title: str | None = Field(default=None, max_length=120, description="A readable name.")
    unit: str | None = Field(default=None, max_length=40, description="Its unit, e.g. 'mm/day'.")
    description: str = Field(default="", max_length=500, description="Shown on hover.")


class OutputMapping(_Strict):
    """Where a run writes its results unless the caller chooses another place."""

    location: str = Field(
        default="acc://{project}/results/{model}/{version}/{run_id}/",
        description="Template; {project}, {model}, {version}, {user} and {run_id} are filled in.",
    )
    columns: dict[str, dict[str, OutputColumn]] = Field(
        default_factory=dict,
        description="Titles and units of output tables' columns: a file name or pattern "
        "('summary.csv', '*.csv') to its columns by name. The catalog's previews head the "
        "columns with them; the files keep their own headers.",
    )

    @field_validator("location")
    @classmethod
    def _a_folder_per_run(cls, value: str) -> str:
        # A run's outputs are what its model's owner may read: a template without a folder
        # of the run's own would hand them whatever else lies there (a launcher's own area).
        if "{run_id}" not in value.rstrip("/").split("/"):
            raise ValueError(
                f"{value!r} gives runs no folder of their own: end it with a {{run_id}} "
                "folder, e.g. acc://{project}/results/{model}/{version}/{run_id}/"
            )
        return value

    @field_validator("columns")
    @classmethod
    def _table_names(
        cls, value: dict[str, dict[str, OutputColumn]]
    ) -> dict[str, dict[str, OutputColumn]]:
        for pattern in value:
            if not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
                raise ValueError(
                    f"{pattern!r} is not a file name or pattern inside the run's "
                    "output folder, e.g. summary.csv or *.csv"
                )
        return value

    def columns_of(self, path: str) -> dict[str, OutputColumn]:
        """The columns declared for the output file at ``path`` (relative to the run's
        folder): an exact name first, then the first pattern that matches."""
        from fnmatch import fnmatchcase

        name = path.lstrip("/")
        if name in self.columns:
            return self.columns[name]
        for pattern, columns in self.columns.items():
            if fnmatchcase(name, pattern) or fnmatchcase(name.rsplit("/", 1)[-1], pattern):
                return columns
        return {}


class SecretSpec(_Strict):
    """A credential the jobflow needs; its value never leaves a Secret block."""

    description: str = ""
    required: bool = True


class LaunchCheck(_Strict):
    """A rule across the settings and the inputs, checked before a launch is dispatched.

    Declarative on purpose: the service layer runs no author code. ``{conf.<setting>}``
    in ``inputs_include`` and ``message`` is filled in from the launch's settings.

    Example (YAML)::

        checks:
          - field: conf.scenario
            inputs_include: "model_{conf.scenario}.nc"
            message: "Select model_{conf.scenario}.nc among your inputs."
    """

    field: str = Field(
        pattern=r"^(conf(\.[A-Za-z_][A-Za-z0-9_]*)+|inputs)$",
        description="Where the problem is shown: conf.<setting> (under that setting) or inputs.",
        json_schema_extra=_says(
            "is not where a problem can be shown: conf.<setting> (e.g. conf.scenario) or inputs"
        ),
    )
    inputs_include: str = Field(
        min_length=1,
        description="A file-name pattern (*, ?, [abc]) that one of the inputs (folders "
        "expanded) must match, e.g. 'model_{conf.scenario}.nc'.",
    )
    message: str = Field(
        default="",
        description="What the person is told under `field` when no input matches; "
        "{conf.<setting>} is filled in. Defaults to naming the pattern.",
    )

    @field_validator("inputs_include", "message")
    @classmethod
    def _placeholders_name_settings(cls, value: str) -> str:
        for name in PLACEHOLDER.findall(value):
            if not SETTING.match(name):
                raise ValueError(
                    f"{{{name}}}: expected a placeholder naming a setting, e.g. {{conf.scenario}}"
                )
        return value

    @field_validator("inputs_include")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if "/" in value or "\\" in value:
            raise ValueError(
                f"{value!r}: expected a file-name pattern without folders, e.g. 'model_*.nc'"
            )
        return value

    @property
    def settings(self) -> list[str]:
        """The settings it reads (``conf.scenario``), each once, in order."""
        named = PLACEHOLDER.findall(self.inputs_include) + PLACEHOLDER.findall(self.message)
        return list(dict.fromkeys(named))


SIZE_PATTERN = r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"
SIZE_MESSAGE = (
    "is not a size: a number and a unit (B, KB, MB, GB, TB, KiB, MiB, GiB or TiB), e.g. '500 MB'"
)
DURATION_PATTERN = r"^\d+(\.\d+)?\s*(s|min|h|d)$"
DURATION_MESSAGE = "is not a duration: a number and a unit (s, min, h or d), e.g. '30 min'"
DURATION_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``'30 min'`` (units s, min, h, d).

    Example:
        >>> parse_duration("1.5 h")
        5400.0
    """
    match = re.match(DURATION_PATTERN, text.strip())
    if not match:
        raise ValueError(f"{text!r} {DURATION_MESSAGE}")
    return float(text.strip()[: match.start(2)]) * DURATION_UNITS[match.group(2)]


def _size_field(description: str) -> Any:
    return Field(
        default=None,
        pattern=SIZE_PATTERN,
        description=description,
        json_schema_extra=_says(SIZE_MESSAGE),
    )


def _duration_field(description: str) -> Any:
    return Field(
        default=None,
        pattern=DURATION_PATTERN,
        description=description,
        json_schema_extra=_says(DURATION_MESSAGE),
    )


class RunLimits(_Strict):
    """What one run may use; unset, the platform's defaults (``ACC_RUN_*``) apply."""

    timeout: str | None = _duration_field(
        "Longest a run may last from its start, e.g. '2 h'; a run still going then ends Failed."
    )
    memory: str | None = _size_field("Most memory a run's process may hold, e.g. '4 GB'.")
    cpu_time: str | None = _duration_field(
        "Most processor time a run may use, all its cores together, e.g. '1 h'."
    )
    output_size: str | None = _size_field(
        "Largest file a run may write, e.g. '10 GB' (its output files, and its scratch files)."
    )


class TaskRunner(_Strict):
    """How a jobflow's routines run side by side."""

    kind: Literal["threads", "dask"] = Field(
        default="threads",
        description="threads (Prefect's default) or dask (a local Dask cluster per run, through "
        "prefect-dask's DaskTaskRunner).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="For dask: the local cluster's options, e.g. {n_workers: 2, "
        "threads_per_worker: 1} (cluster_kwargs of DaskTaskRunner).",
    )


class Manifest(_Strict):
    """One hosted model version, as its author describes it."""

    name: Slug = Field(description="The model's name: lowercase letters, digits and dashes.")
    title: str = Field(min_length=1, max_length=120, description="Shown in the catalog.")
    description: str = Field(default="", description="Markdown shown on the model's page.")
    version: str = Field(description="Semantic version, e.g. 1.2.0.")
    jobflow: str = Field(
        pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$",
        description="The jobflow, as path/to/file.py:function relative to the repository root.",
        json_schema_extra=_says(
            "is not path/to/file.py:function (relative to the repository root), "
            "e.g. flows/flood.py:flood_frequency"
        ),
    )
    owner: Slug = Field(description="The user who owns the model.")
    project: Slug = Field(description="The project (team) the model belongs to.")
    access: AccessPolicy = Field(default_factory=AccessPolicy)
    inputs: InputMapping = Field(default_factory=InputMapping)
    output: OutputMapping = Field(default_factory=OutputMapping)
    secrets: dict[str, SecretSpec] = Field(default_factory=dict)
    data: list[DataPath] = Field(
        default_factory=list,
        description="DVC-tracked files or folders the jobflow reads, relative to the "
        "repository root; each version pins their content.",
    )
    checks: list[LaunchCheck] = Field(
        default_factory=list,
        description="Rules across settings and inputs checked before a launch is dispatched; "
        "a failing one refuses the launch with its message under its field.",
    )
    environment: str | None = Field(
        default=None,
        description="The file declaring the libraries the jobflow runs with, relative to the "
        "repository root: a requirements.txt, or a pyproject.toml (with its uv.lock beside it, "
        "if any). When unset, a pyproject.toml with dependencies or a requirements.txt at the "
        "root; with neither, the version runs with the platform's own libraries.",
    )
    limits: RunLimits = Field(default_factory=RunLimits)
    task_runner: TaskRunner = Field(
        default_factory=TaskRunner,
        description="How the jobflow's routines run side by side: {kind: dask, options: "
        "{...}} with the local Dask cluster's options; 'task_runner: dask' for short.",
    )
    status: Status = Status.active
    work_pool: str | None = Field(default=None, description="Defaults to the platform's pool.")
    tags: list[
        Annotated[
            str,
            Field(
                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                json_schema_extra=_says(
                    "is not a tag: letters, digits, '_', '.' and '-', starting with a letter "
                    "or digit, e.g. hydrology"
                ),
            ),
        ]
    ] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError("expected a semantic version MAJOR.MINOR.PATCH, e.g. 1.2.0")
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        from accelerator_prefect.access import RESERVED_AREAS

        if value in RESERVED_AREAS:
            raise ValueError(
                f"{value!r} is reserved for storage areas; choose another project name"
            )
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: dict[str, SecretSpec]) -> dict[str, SecretSpec]:
        for name in value:
            if not re.match(r"^[A-Z][A-Z0-9_]*$", name):
                raise ValueError(f"secret name {name!r}: expected UPPER_SNAKE_CASE")
        return value

    @field_validator("task_runner", mode="before")
    @classmethod
    def _runner_for_short(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("environment")
    @classmethod
    def _environment_path(cls, value: str | None) -> str | None:
        if value is not None and not _inside_repository(value):
            raise ValueError(
                f"environment {value!r}: expected a path inside the repository, relative to its "
                "root, e.g. requirements.txt or model/pyproject.toml"
            )
        return value

    @model_validator(mode="after")
    def _samples_in_own_area(self) -> Manifest:
        for sample in self.inputs.samples:
            problem = _sample_problem(self.project, sample)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def entrypoint_path(self) -> str:
        return self.jobflow.rsplit(":", 1)[0]

    @property
    def function_name(self) -> str:
        return self.jobflow.rsplit(":", 1)[1]


def _schema_node(schema: dict[str, Any], node: Any) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {}
    ref = node.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return {**schema["$defs"][ref.removeprefix("#/$defs/")], **node}
    return node


def _said_of(loc: tuple[int | str, ...]) -> str | None:
    """The field's own words for what its pattern means (its ``errorMessage``)."""
    schema = Manifest.model_json_schema()
    node = _schema_node(schema, schema)
    for part in loc:
        if isinstance(part, int):
            node = _schema_node(schema, node.get("items"))
        else:
            inside = node.get("properties", {}).get(part, node.get("additionalProperties"))
            node = _schema_node(schema, inside)
    return node.get(MESSAGE_KEY)


def _version_hint(value: Any) -> str:
    text = str(value)
    wanted = text + ".0" * max(0, 2 - text.count("."))
    return (
        f"version: {value!r} is a number in YAML, not a version; write it as a string: "
        f'version: "{wanted}" (a semantic version MAJOR.MINOR.PATCH)'
    )


def _describe(error: Any) -> str:
    loc, value, kind = tuple(error["loc"]), error["input"], error["type"]
    path = field_path(loc) or "(top level)"
    if kind == "extra_forbidden":
        return f"{path}: unknown field (check the spelling; see {SCHEMA_FILE})"
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "string_type" and loc == ("version",) and isinstance(value, int | float):
        return _version_hint(value)
    if kind == "string_type" and isinstance(value, int | float):
        return f'{path}: expected text, got the number {value!r}; write it in quotes: "{value}"'
    if kind == "list_type" and isinstance(value, str):
        return f"{path}: expected a list, got the text {value!r}; write one entry as [{value}]"
    if kind == "string_pattern_mismatch":
        said = _said_of(loc)
        if said:
            return f"{path}: {value!r} {said}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:  # a rule across fields names its own field, and the input is all
        return message
    if isinstance(value, dict) or repr(value) in message:
        return f"{path}: {message}"
    return f"{path}: {message} (got {value!r})"


def _rules_on_raw(data: dict[str, Any]) -> Iterator[str]:
    """Path rules and rules across fields, read off the raw data whatever else is wrong:
    pydantic skips a model's own validators when one of its fields fails, and checks a
    path's type before its rules."""
    inputs = data.get("inputs")
    if isinstance(inputs, dict):
        problem = _count_problem(inputs.get("min_files", 0), inputs.get("max_files"))
        if problem:
            yield f"inputs: {problem}"
        project = data.get("project")
        if isinstance(project, str):
            yield from _each(inputs.get("samples"), lambda s: _sample_problem(project, s))
    if isinstance(data.get("data"), str):  # one path, not in a list: its rule too
        yield from (f"data: {p}" for p in _each(data["data"], _data_path_problem))


def _each(values: Any, rule: Callable[[str], str | None]) -> Iterator[str]:
    for value in [values] if isinstance(values, str) else values or []:
        problem = rule(value) if isinstance(value, str) else None
        if problem:
            yield problem


def parse_manifest(data: Any, source: str = "<manifest>") -> Manifest:
    """Validate already-loaded manifest data; errors name ``source`` and each field."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        problems += [p for p in _rules_on_raw(data) if p not in problems]
        lines = "\n".join(f"  - {p}" for p in dict.fromkeys(problems))
        raise ManifestError(f"{source}: invalid manifest:\n{lines}") from None


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate ``deployments/<model>.yaml``.

    Example:
        >>> load_manifest("deployments/climate-downscaling.yaml").name
        'climate-downscaling'
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_manifest(data, str(path))


def manifest_json_schema() -> str:
    """The JSON Schema of manifests, as published in ``deployments/manifest.schema.json``."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "accelerator-prefect hosting manifest"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
