"""Hosting manifests: the YAML an author writes to host one model version.

``deployments/<model>.yaml`` is validated by :class:`Manifest`; every error
names the file, the field path and what was expected. The manifest's JSON
Schema (``Manifest.model_json_schema()``) is published next to the manifests
so editors validate and complete them.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
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
Slug = Annotated[str, Field(pattern=SLUG)]
SCHEMA_FILE = "manifest.schema.json"


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
    )
    samples: list[str] = Field(
        default_factory=list,
        description="Sample inputs, as acc://<project>/... files or folders (a folder ends "
        "with /) in the model's own project area. Everyone who may run the model may read "
        "them and start from them with one click.",
    )

    @model_validator(mode="after")
    def _counts(self) -> InputMapping:
        if self.max_files is not None and self.max_files < self.min_files:
            raise ValueError(
                f"max_files ({self.max_files}) is less than min_files ({self.min_files})"
            )
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


class Manifest(_Strict):
    """One hosted model version, as its author describes it."""

    name: Slug = Field(description="The model's name: lowercase letters, digits and dashes.")
    title: str = Field(min_length=1, max_length=120, description="Shown in the catalog.")
    description: str = Field(default="", description="Markdown shown on the model's page.")
    version: str = Field(description="Semantic version, e.g. 1.2.0.")
    jobflow: str = Field(
        pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$",
        description="The jobflow, as path/to/file.py:function relative to the repository root.",
    )
    owner: Slug = Field(description="The user who owns the model.")
    project: Slug = Field(description="The project (team) the model belongs to.")
    access: AccessPolicy = Field(default_factory=AccessPolicy)
    inputs: InputMapping = Field(default_factory=InputMapping)
    output: OutputMapping = Field(default_factory=OutputMapping)
    secrets: dict[str, SecretSpec] = Field(default_factory=dict)
    data: list[str] = Field(
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
    status: Status = Status.active
    work_pool: str | None = Field(default=None, description="Defaults to the platform's pool.")
    tags: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]] = Field(
        default_factory=list
    )

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

    @field_validator("environment")
    @classmethod
    def _environment_path(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or value.startswith("/") or ".." in value.split("/") or "\\" in value
        ):
            raise ValueError(
                f"environment {value!r}: expected a path inside the repository, relative to its "
                "root, e.g. requirements.txt or model/pyproject.toml"
            )
        return value

    @field_validator("data")
    @classmethod
    def _data_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path or path.startswith("/") or ".." in path.split("/") or "\\" in path:
                raise ValueError(
                    f"data path {path!r}: expected a path inside the repository, relative to "
                    "its root, e.g. data/terrain.nc"
                )
        return [path.strip("/") for path in value]

    @model_validator(mode="after")
    def _samples_in_own_area(self) -> Manifest:
        # Samples become readable by everyone who may run the model: they must be the
        # project's own files, never a door into another area.
        area = f"acc://{self.project}/"
        for sample in self.inputs.samples:
            rest = sample[len(area) :] if sample.startswith(area) else None
            parts = (rest or "").rstrip("/").split("/")
            if not rest or any(p in ("", ".", "..") for p in parts) or "\\" in sample:
                raise ValueError(
                    f"inputs.samples: {sample!r} is not a file or folder in the model's own "
                    f"project area: expected {area}<path>, e.g. {area}examples/"
                )
        return self

    @property
    def entrypoint_path(self) -> str:
        return self.jobflow.rsplit(":", 1)[0]

    @property
    def function_name(self) -> str:
        return self.jobflow.rsplit(":", 1)[1]


def _describe(error: Any) -> str:
    path = field_path(error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown field (check the spelling; see {SCHEMA_FILE})"
    if error["type"] == "missing":
        return f"{path}: required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a rule across fields names its own field, and the input is all
        return message
    return f"{path}: {message} (got {error['input']!r})"


def parse_manifest(data: Any, source: str = "<manifest>") -> Manifest:
    """Validate already-loaded manifest data; errors name ``source`` and each field."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  - {_describe(e)}" for e in exc.errors())
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
