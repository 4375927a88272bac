"""What a run was made of: the provenance every run records, and how two runs differ.

A jobflow records, as its run ends, the model and version it ran, the code
(repository and commit) and the DVC data the version pinned, its conf, its
inputs and outputs with their content hashes, the packages it ran with, the
worker and the times. The record is written as ``provenance.json`` beside the
outputs and as a Prefect artifact (``<jobflow>-provenance``) readable in the
Prefect UI.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import logging
import platform
import re
import socket
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from accelerator_prefect.jobflow import Inputs
    from accelerator_prefect.storage import Storage

PROVENANCE_FILE = "provenance.json"  # the same name as outputs.PROVENANCE
_log = logging.getLogger(__name__)
_FENCE = re.compile(r"```json\n(.*)\n```", re.DOTALL)


class FileRecord(BaseModel):
    """One input or output file and the sha256 of its content."""

    uri: str
    sha256: str
    size: int


class DataRecord(BaseModel):
    """One DVC-tracked path the version pinned: its DVC hash as published."""

    path: str
    md5: str
    size: int | None = None
    files: int | None = None  # for a tracked folder


class CodeRecord(BaseModel):
    repository: str | None = None
    commit: str | None = None
    dirty: bool = False


class EnvironmentSummary(BaseModel):
    """The environment a run ran in: the lock its version recorded (``None`` in a
    provenance record: the platform's own libraries)."""

    hash: str
    source: str
    runtime: str
    python: str | None = None


class Provenance(BaseModel):
    """Everything needed to tell what a run ran on, and to run it again."""

    run_id: str
    run_name: str | None = None
    model: str | None = None
    version: str | None = None
    launched_by: str | None = None
    state: str
    code: CodeRecord = Field(default_factory=CodeRecord)
    data: list[DataRecord] = Field(default_factory=list)
    conf: dict[str, Any] = Field(default_factory=dict)
    inputs: list[FileRecord] = Field(default_factory=list)
    output: str | None = None
    outputs: list[FileRecord] = Field(default_factory=list)  # uri relative to ``output``
    secrets: list[str] = Field(default_factory=list)  # names only; values are never recorded
    packages: dict[str, str] = Field(default_factory=dict)  # those the jobflow imported
    environment: EnvironmentSummary | None = None
    worker: dict[str, str] = Field(default_factory=dict)
    started: datetime | None = None
    ended: datetime

    def rows(self, *, operator: bool = True) -> list[tuple[str, str]]:
        """The record's summary, one (what, value) pair a line. For people who are not
        operators, a repository on the platform's own disk is named, not located, and the
        worker's host is left out: neither is theirs to see."""
        repository = self.code.repository or "unknown"
        if not operator and not re.match(r"^([a-z][a-z0-9+.-]*://|git@)", repository):
            repository = repository.rstrip("/\\").rsplit("/", 1)[-1] + " (on the platform)"
        rows = [
            ("model", f"{self.model}@{self.version}"),
            ("code", f"{repository} @ {(self.code.commit or 'working tree')[:12]}"),
            ("data", ", ".join(f"{d.path} (md5 {d.md5[:12]})" for d in self.data) or "none"),
            ("inputs", f"{len(self.inputs)} file(s)"),
            ("outputs", f"{len(self.outputs)} file(s) in `{self.output}`"),
            (
                "environment",
                f"{self.environment.source} (lock {self.environment.hash[:12]})"
                if self.environment
                else "the platform's libraries",
            ),
        ]
        return [*rows, ("worker", self.worker.get("host", ""))] if operator else rows

    def markdown(self) -> str:
        """The record as the Prefect UI shows it: a summary, then the JSON itself."""
        table = "\n".join(f"| {k} | {v} |" for k, v in self.rows())
        body = self.model_dump_json(indent=2)
        return f"**Provenance** of this run.\n\n| | |\n|---|---|\n{table}\n\n```json\n{body}\n```\n"

    @classmethod
    def from_markdown(cls, text: str) -> Provenance:
        found = _FENCE.search(text)
        if found is None:
            raise ValueError("no provenance record in this artifact")
        return cls.model_validate_json(found.group(1))


def sha256_of(storage: Storage, uri: str) -> tuple[str, int]:
    """The sha256 and size of a file in storage."""
    with storage.open(uri, "rb") as stream:
        return _sha256(stream)


def _sha256(stream: Any) -> tuple[str, int]:
    """The sha256 and size of what ``stream`` holds, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    while block := stream.read(1 << 20):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _imported_modules(fn: Callable[..., Any]) -> set[str]:
    """The top-level modules the jobflow's own module imports (anywhere in it)."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[fn.__module__]))
    except (OSError, TypeError, KeyError, SyntaxError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names)


def _installed(module: str) -> bool:
    """Whether top-level ``module`` comes from an installed distribution (site-packages)."""
    import importlib.util
    import sys

    loaded = sys.modules.get(module)
    origin = getattr(loaded, "__file__", None)
    if loaded is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return False
        origin = spec.origin if spec is not None else None
    return origin is not None and any(
        part in {"site-packages", "dist-packages"} for part in origin.replace("\\", "/").split("/")
    )


_distributions: dict[str, tuple[str, str]] | None = None
_module_distributions: dict[str, list[str]] | None = None


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def index_distributions() -> None:
    """Read every installed distribution's name and version, and which modules each
    provides, once: a process that runs many jobflows (the warm worker's zygote, whose
    children inherit it) then finds each run's package versions without reading
    metadata again."""
    from importlib import metadata

    global _distributions, _module_distributions
    index: dict[str, tuple[str, str]] = {}
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            index.setdefault(_normalised(name), (name, distribution.version))
    _distributions, _module_distributions = index, dict(metadata.packages_distributions())


def jobflow_packages(fn: Callable[..., Any]) -> dict[str, str]:
    """Prefect's, this package's and the jobflow module's own imports' versions."""
    from importlib import metadata

    versions: dict[str, str] = {}
    unknown = []
    for name in sorted({"prefect", "accelerator-prefect", *_imported_modules(fn)}):
        if _distributions is not None:
            found = _distributions.get(_normalised(name))
            if found is None:
                unknown.append(name)
            else:
                versions[found[0]] = found[1]
            continue
        try:  # most distributions are named as their module: ask them directly
            versions[metadata.distribution(name).name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            unknown.append(name)
    # The model's own modules (beside the jobflow, pinned by its commit) belong to no
    # distribution: only installed ones are worth the full map's 0.2-0.5 s.
    unknown = [name for name in unknown if _installed(name)]
    if unknown:  # e.g. yaml -> PyYAML: the full (slower) map of modules to distributions
        distributions = _module_distributions or metadata.packages_distributions()
        for module in unknown:
            for name in distributions.get(module, []):
                found = (_distributions or {}).get(_normalised(name))
                versions[name] = found[1] if found else metadata.version(name)
    return dict(sorted(versions.items()))


_known_deployments: dict[str, Any] = {}
"""Deployments this process already holds (the warm worker hands its child the one it
read), so the record needs no second read of the same deployment."""


def remember_deployment(deployment: Any) -> None:
    """Let this process's provenance records use ``deployment`` without reading it again."""
    _known_deployments[str(deployment.id)] = deployment


def _hosting_record(deployment_id: Any) -> dict[str, Any]:
    """The hosting record of the version this run belongs to (read from its deployment)."""
    if deployment_id is None:
        return {}
    from accelerator_prefect.validation import EXTENSION_KEY

    deployment = _known_deployments.get(str(deployment_id))
    if deployment is None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(deployment_id)
    return dict((deployment.parameter_openapi_schema or {}).get(EXTENSION_KEY) or {})


def _input_records(inputs: Inputs | None) -> list[FileRecord]:
    if inputs is None:
        return []
    records = []
    for f in inputs.files():  # acc:// files, or cloud URLs: each opened as the run read it
        with f.open("rb") as stream:
            digest, size = _sha256(stream)
        records.append(FileRecord(uri=f.uri, sha256=digest, size=size))
    return records


def output_records(folder: str, storage: Storage) -> list[FileRecord]:
    from accelerator_prefect.outputs import list_outputs

    records = []
    for f in list_outputs(folder, storage):
        if f.path == PROVENANCE_FILE:
            continue
        digest, size = sha256_of(storage, f.uri)
        records.append(FileRecord(uri=f.path, sha256=digest, size=size))
    return records


def record(
    fn: Callable[..., Any], arguments: dict[str, Any], state: str, storage: Storage | None = None
) -> Provenance | None:
    """Build and publish the provenance of the run now ending (``None`` outside a run).

    Never raises: a run's own outcome matters more than its record.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    try:
        provenance = _build(fn, arguments, state, context.flow_run, storage)
        provenance.started = provenance.started or context.start_time
        _publish(provenance, fn, storage)
        return provenance
    except Exception as exc:
        _log.warning("could not record the run's provenance: %s", exc)
        return None


def _build(
    fn: Callable[..., Any],
    arguments: dict[str, Any],
    state: str,
    flow_run: Any,
    storage: Storage | None,
) -> Provenance:
    from pydantic import BaseModel as Model

    from accelerator_prefect.jobflow import Inputs, Output, Secrets
    from accelerator_prefect.runs import run_tags
    from accelerator_prefect.storage import Storage

    storage = storage or Storage()
    tags = run_tags(flow_run)
    hosting = _hosting_record(flow_run.deployment_id)
    conf = arguments.get("conf")
    inputs = arguments.get("inputs")
    output = arguments.get("output")
    secrets = arguments.get("secrets")
    folder = output.uri if isinstance(output, Output) else None
    return Provenance(
        run_id=str(flow_run.id),
        run_name=flow_run.name,
        model=tags.get("model"),
        version=tags.get("version"),
        launched_by=tags.get("user"),
        state=state,
        code=CodeRecord(
            repository=hosting.get("repository"),
            commit=hosting.get("commit"),
            dirty=bool(hosting.get("dirty")),
        ),
        data=[DataRecord.model_validate(d) for d in hosting.get("data") or []],
        conf=conf.model_dump(mode="json") if isinstance(conf, Model) else {},
        inputs=_input_records(inputs if isinstance(inputs, Inputs) else None),
        output=folder,
        outputs=output_records(folder, storage) if folder else [],
        secrets=sorted(secrets.blocks) if isinstance(secrets, Secrets) else [],
        packages=jobflow_packages(fn),
        environment=_environment(hosting.get("environment")),
        worker={
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
        },
        started=flow_run.start_time,
        ended=datetime.now(UTC),
    )


def _environment(locked: dict[str, Any] | None) -> EnvironmentSummary | None:
    if not locked:
        return None
    return EnvironmentSummary(
        hash=locked["hash"],
        source=locked["source"],
        runtime=locked["runtime"],
        python=locked.get("python"),
    )


def _publish(provenance: Provenance, fn: Callable[..., Any], storage: Storage | None) -> None:
    from prefect.artifacts import create_markdown_artifact

    from accelerator_prefect.storage import Storage

    if provenance.output:
        with (storage or Storage()).open(provenance.output + PROVENANCE_FILE, "w") as f:
            f.write(provenance.model_dump_json(indent=2))
    create_markdown_artifact(
        key=artifact_key(fn.__name__),
        markdown=provenance.markdown(),
        description=f"Provenance of {provenance.model}@{provenance.version}",
    )


def artifact_key(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") + "-provenance"


# -- comparing two runs -----------------------------------------------------------------------


class Change(BaseModel):
    """One thing that differs between run A and run B (``None``: absent in that run)."""

    what: str
    a: Any = None
    b: Any = None


class RunDiff(BaseModel):
    """What differed between two runs, by kind; an empty list means identical."""

    a: str
    b: str
    code: list[Change] = Field(default_factory=list)
    data: list[Change] = Field(default_factory=list)
    conf: list[Change] = Field(default_factory=list)
    inputs: list[Change] = Field(default_factory=list)
    outputs: list[Change] = Field(default_factory=list)
    packages: list[Change] = Field(default_factory=list)
    environment: list[Change] = Field(default_factory=list)
    same_outputs: int = 0  # output files with identical content in both

    @property
    def identical(self) -> bool:
        """Same code, data, conf, inputs and outputs (packages and environment may differ)."""
        return not (self.code or self.data or self.conf or self.inputs or self.outputs)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    return [
        Change(what=key, a=a.get(key), b=b.get(key))
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    ]


def _by(items: Iterable[Any], key: str, value: str) -> dict[str, Any]:
    return {getattr(item, key): getattr(item, value) for item in items}


def diff(a: Provenance, b: Provenance) -> RunDiff:
    """What differs between the runs ``a`` and ``b``."""
    outputs_a, outputs_b = _by(a.outputs, "uri", "sha256"), _by(b.outputs, "uri", "sha256")
    return RunDiff(
        a=a.run_id,
        b=b.run_id,
        code=_changes(
            {"model": a.model, "version": a.version, **a.code.model_dump()},
            {"model": b.model, "version": b.version, **b.code.model_dump()},
        ),
        data=_changes(_by(a.data, "path", "md5"), _by(b.data, "path", "md5")),
        conf=_changes(_flatten(a.conf), _flatten(b.conf)),
        inputs=_changes(_by(a.inputs, "uri", "sha256"), _by(b.inputs, "uri", "sha256")),
        outputs=_changes(outputs_a, outputs_b),
        packages=_changes(a.packages, b.packages),
        environment=_changes(_environment_fields(a), _environment_fields(b)),
        same_outputs=sum(1 for k, v in outputs_a.items() if outputs_b.get(k) == v),
    )


def _environment_fields(run: Provenance) -> dict[str, Any]:
    if run.environment is None:
        return {"lock": "the platform's libraries"}
    return {
        "lock": run.environment.hash[:12],
        "declared in": run.environment.source,
        "runtime": run.environment.runtime,
    }


def load(text: str) -> Provenance:
    return Provenance.model_validate(json.loads(text))
