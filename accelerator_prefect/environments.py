"""Each version's environment: the libraries it runs with, pinned like its code.

A model's repository declares its dependencies, in the file its manifest names under
``environment:`` or else at the repository's root:

- a ``pyproject.toml`` (its ``[project] dependencies``), with the ``uv.lock`` beside it
  when there is one (its pins are kept exactly);
- or a ``requirements.txt``.

Publishing locks them with uv, together with the product's own runtime: this package,
built into a wheel of its exact code (``accelerator-prefect==0.1.0+<digest>``), so that
upgrading the platform does not change what an old version runs with. The lock (every
package ``==`` pinned) and its hash go into the version's record. Publishing then builds
the environment, or refuses the version with uv's own message.

An environment is a virtual environment under the platform's ``environments`` folder,
named by its hash: shared by every version with the same lock, built once per machine
(a worker that lacks one builds it before the run starts), and complete only once its
``ready.json`` is written, so that a build that failed or was cut short is never used.
Versions that declare nothing run with the platform's own interpreter, as before.

A manifest's ``task_runner: dask`` needs prefect-dask where the run imports its jobflow:
publishing locks the runtime with its ``dask`` extra then (:func:`runtime_extras`), so
the author need not declare it; :func:`task_runner_problem` says what is missing
otherwise (a version on the platform's own interpreter, which lacks it).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from accelerator_prefect.errors import AcceleratorError

_log = logging.getLogger(__name__)

RUNTIME = "accelerator-prefect"
RUNTIME_PACKAGE = "accelerator_prefect"
LOCK_FILE = "requirements.lock"
READY_FILE = "ready.json"
NOT_IN_RUNTIME = frozenset({"streamlit"})
"""The runtime's own requirements that runs never import (the catalog's)."""
UV_TIMEOUT = 600.0
RUNTIMES = "acc://.platform/runtimes/"
"""Where the platform keeps every runtime wheel it locked, for workers elsewhere."""
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
EXTRAS_OF_TASK_RUNNERS = {"dask": "dask"}
"""A manifest's ``task_runner.kind`` → the runtime's extra its runs need."""


class EnvironmentFailed(AcceleratorError):
    """An environment could not be locked or built; the message is uv's."""


class EnvironmentRecord(BaseModel):
    """What a version records about its environment."""

    hash: str = Field(description="sha256 of the lock and the Python it is for.")
    source: str = Field(description="The file that declares it, relative to the repository.")
    python: str = Field(description="The Python it runs on (major.minor).")
    runtime: str = Field(description="The product's runtime it locks (its exact version).")
    requirements: list[str] = Field(description="The model's direct requirements, as declared.")
    lock: str = Field(description="Every package, pinned: what the environment is built from.")

    @property
    def packages(self) -> dict[str, str]:
        """Locked package → version."""
        return locked_packages(self.lock)


def of_deployment(deployment: Any) -> EnvironmentRecord | None:
    """The environment a hosted version's deployment locks, if it declares one."""
    from accelerator_prefect.validation import EXTENSION_KEY

    schema = (deployment.parameter_openapi_schema or {}) if deployment is not None else {}
    data = (schema.get(EXTENSION_KEY) or {}).get("environment")
    return EnvironmentRecord.model_validate(data) if data else None


def running_in(hash: str) -> bool:
    """Whether this interpreter is the environment of the lock ``hash``: one this platform
    built (its folder is named after the hash), or an image an operator built from the
    lock, which says so with ``ACC_ENVIRONMENT=<hash>``."""
    return Path(sys.prefix).name == hash[:24] or os.environ.get("ACC_ENVIRONMENT") == hash


def locked_packages(lock: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line.strip())
        if match:
            pins[normalised_name(match[1])] = match[2]
    return pins


def normalised_name(name: str) -> str:
    """A distribution's name as PEP 503 compares it (``Foo_Bar.baz`` → ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# -- finding what a repository declares ----------------------------------------------------


def declared(root: Path, named: str | None) -> Path | None:
    """The file declaring the environment: ``named`` (the manifest's ``environment:``,
    relative to the repository ``root``), else a ``pyproject.toml`` with dependencies or a
    ``requirements.txt`` at the root; ``None`` when there is none."""
    if named is not None:
        path = (root / named).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise EnvironmentFailed(
                f"environment: {named!r} is not a file in the repository; expected a "
                "requirements.txt or a pyproject.toml, relative to the repository's root"
            )
        if path.name != "pyproject.toml" and path.suffix not in (".txt", ".in"):
            raise EnvironmentFailed(
                f"environment: {named!r}: expected a requirements file (.txt) or a pyproject.toml"
            )
        return path
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        project = _project_table(pyproject)
        if project.get("dependencies") and normalised_name(str(project.get("name", ""))) != RUNTIME:
            return pyproject
    requirements = root / "requirements.txt"
    return requirements if requirements.is_file() else None


def _project_table(path: Path) -> dict[str, Any]:
    """The ``[project]`` table of a pyproject.toml."""
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EnvironmentFailed(f"{path.name}: not readable as TOML ({exc})") from exc
    return project if isinstance(project, dict) else {}


def _direct_requirements(path: Path, shown: str) -> list[str]:
    """The requirements ``path`` declares, each checked by :func:`_checked`."""
    if path.name == "pyproject.toml":
        dependencies = _project_table(path).get("dependencies", [])
        if not isinstance(dependencies, list):
            raise EnvironmentFailed(f"{shown}: [project] dependencies: expected a list")
        return [_checked(str(d), f"{shown}: [project] dependencies") for d in dependencies]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvironmentFailed(f"{shown}: not readable as text ({exc})") from exc
    return [
        _checked(line.split(" #", 1)[0].strip(), f"{shown}, line {number}")
        for number, line in enumerate(lines, 1)
        if line.split(" #", 1)[0].strip() and not line.lstrip().startswith("#")
    ]


def _checked(requirement: str, where: str) -> str:
    """A requirement on a package of the index, by name and version: never an option
    (``-r``, ``--index-url``…) nor a URL or path, which would make the platform read its
    own files or fetch from elsewhere than its configured index."""
    from packaging.requirements import InvalidRequirement, Requirement

    if requirement.startswith("-"):
        raise EnvironmentFailed(
            f"{where}: {requirement.split()[0]!r}: options are not accepted; list one "
            "requirement a line (e.g. numpy>=2.1), all from the platform's package index"
        )
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        raise EnvironmentFailed(
            f"{where}: {requirement!r} is not a requirement (expected e.g. numpy>=2.1): {exc}"
        ) from None
    if parsed.url:
        raise EnvironmentFailed(
            f"{where}: {parsed.name} comes from {parsed.url.split(':', 1)[0]}: a URL or path; "
            "expected a package of the platform's index, by name and version"
        )
    return requirement


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement (``Foo_Bar[x]>=1`` → ``foo-bar``)."""
    return normalised_name(re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0])


def _without_runtime(requirements: list[str]) -> list[str]:
    """The model's requirements without the product itself: the platform adds its own."""
    return [r for r in requirements if requirement_name(r) != RUNTIME]


# -- uv ------------------------------------------------------------------------------------


def uv_command() -> list[str]:
    """How to call uv: the binary of the ``uv`` package this product depends on."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        from uv import find_uv_bin

        return [find_uv_bin()]
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _uv(args: list[str], *, what: str, cwd: Path | None = None, hide: Sequence[Path] = ()) -> str:
    """Run uv; on failure raise :class:`EnvironmentFailed` with uv's own message (this
    machine's folders ``hide`` replaced by nothing)."""
    try:
        done = subprocess.run(
            [*uv_command(), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=UV_TIMEOUT,
            check=False,
            env=_uv_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentFailed(f"{what}: uv did not finish within {UV_TIMEOUT:g} s") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        for folder in sorted({str(h) for h in hide}, key=len, reverse=True):
            message = message.replace(f"{folder}/", "").replace(folder, ".")
        raise EnvironmentFailed(f"{what}:\n{message}")
    return done.stdout


def _uv_env() -> dict[str, str]:
    import os

    from accelerator_prefect.settings import get_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env.pop("UV_PROJECT_ENVIRONMENT", None)
    index = get_settings().package_index
    if index:
        env["UV_DEFAULT_INDEX"] = index
    env.setdefault("UV_NO_PROGRESS", "1")
    return env


# -- the product's runtime, as a wheel -----------------------------------------------------


def _package_files() -> Iterator[tuple[str, bytes]]:
    """The runtime package's files (its source as this process imports it)."""
    import accelerator_prefect

    folder = Path(accelerator_prefect.__file__).parent
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield f"{RUNTIME_PACKAGE}/{path.relative_to(folder).as_posix()}", path.read_bytes()


def _runtime_requirements() -> list[str]:
    wanted = metadata.requires(RUNTIME) or []
    return [r for r in wanted if requirement_name(r) not in NOT_IN_RUNTIME]


def _runtime_extras() -> list[str]:
    """The runtime's extras (``dask``, ``geo`` …), which its wheel provides too."""
    return sorted(set(metadata.metadata(RUNTIME).get_all("Provides-Extra") or []))


def runtime_extras(task_runner: str) -> tuple[str, ...]:
    """The runtime's extras a version's environment is locked with, for the manifest's
    ``task_runner.kind``: ``("dask",)`` for ``dask`` (prefect-dask and Dask's
    distributed, at the versions the platform runs), none for ``threads``.

    Example:
        >>> runtime_extras("dask"), runtime_extras("threads")
        (('dask',), ())
    """
    extra = EXTRAS_OF_TASK_RUNNERS.get(task_runner)
    return (extra,) if extra else ()


def task_runner_problem(record: EnvironmentRecord | None, task_runner: str) -> str | None:
    """What a version choosing ``task_runner`` lacks to run, for publishing to warn
    about: prefect-dask, missing from its environment's lock (``record``) or, for a
    version on the platform's own interpreter (no ``record``), from this one. ``None``
    when nothing is missing."""
    if task_runner != "dask":
        return None
    if record is not None:
        if "prefect-dask" in record.packages:
            return None
        return (
            f"task_runner: dask needs prefect-dask in the model's environment, and "
            f"{record.source} does not bring it: add prefect-dask to its requirements; "
            "its runs fail until then"
        )
    import importlib.util

    if importlib.util.find_spec("prefect_dask") is not None:
        return None
    return (
        "task_runner: dask needs prefect-dask, and the platform's own Python, which this "
        "version runs with, lacks it: declare an environment with prefect-dask in its "
        "requirements, or ask the operator to install accelerator-prefect[dask]; its runs "
        "fail until then"
    )


def runtime_version() -> str:
    """This process's runtime as a version: the package's own version with a digest of its
    code and requirements as the local label, so that any change to either is a new one."""
    digest = hashlib.sha256()
    for name, data in _package_files():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update("\n".join(_runtime_requirements()).encode())
    base = metadata.version(RUNTIME).split("+", 1)[0]
    return f"{base}+{digest.hexdigest()[:12]}"


def runtime_wheel(wheelhouse: Path) -> tuple[str, Path]:
    """Build (once) the wheel of this process's runtime into ``wheelhouse``; its version
    and path. Old wheels stay: the environments of old versions are built from them."""
    version = runtime_version()
    name = _wheel_name(version)
    path = wheelhouse / name
    if path.exists():
        return version, path
    wheelhouse.mkdir(parents=True, exist_ok=True)
    dist_info = f"{RUNTIME_PACKAGE}-{version}.dist-info"
    files = dict(_package_files())
    lines = ["Metadata-Version: 2.1", f"Name: {RUNTIME}", f"Version: {version}"]
    requires_python = metadata.metadata(RUNTIME)["Requires-Python"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Provides-Extra: {extra}" for extra in _runtime_extras()]
    lines += [f"Requires-Dist: {r}" for r in _runtime_requirements()]
    files[f"{dist_info}/METADATA"] = ("\n".join(lines) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: accelerator-prefect\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    entry_points = metadata.distribution(RUNTIME).read_text("entry_points.txt")
    if entry_points:
        files[f"{dist_info}/entry_points.txt"] = entry_points.encode()
    record = [
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
        f"{len(d)}"
        for n, d in files.items()
    ]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for n, d in files.items():
            wheel.writestr(zipfile.ZipInfo(n, _ZIP_TIME), d)
    scratch = path.with_name(f".{name}.{id(buffer)}.part")
    scratch.write_bytes(buffer.getvalue())
    scratch.replace(path)
    return version, path


# -- locking -------------------------------------------------------------------------------


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def lock(root: Path, source: Path, home: Path, extras: Sequence[str] = ()) -> EnvironmentRecord:
    """Lock what ``source`` (a file in the repository ``root``) declares, with this
    process's runtime and its ``extras`` (:func:`runtime_extras`); raise
    :class:`EnvironmentFailed` with uv's message if it does not resolve."""
    shown = source.relative_to(root).as_posix()
    direct = _direct_requirements(source, shown)
    version, wheel = runtime_wheel(wheelhouse(home))
    keep_runtime(wheel)
    with tempfile.TemporaryDirectory(prefix="acc-lock-") as scratch_name:
        scratch = Path(scratch_name)
        pins = _pins_of_uv_lock(source, scratch, shown)  # the author's own, kept exactly
        model = _without_runtime(pins if pins is not None else direct)
        wanted = [scratch / "requirements.in"]
        wanted[0].write_text("\n".join(model) + "\n")
        runtime = scratch / "runtime.in"
        wanted_extras = f"[{','.join(sorted(extras))}]" if extras else ""
        runtime.write_text(f"{RUNTIME}{wanted_extras}=={version}\n")
        out = scratch / LOCK_FILE
        # uv prefers the versions already in the output file: the platform's own, where the
        # model allows them (already in uv's cache, and what the platform is tested with).
        out.write_text(_platform_pins())
        _uv(
            [
                "pip",
                "compile",
                *map(str, wanted),
                str(runtime),
                "--output-file",
                str(out),
                "--python",
                sys.executable,
                "--find-links",
                str(wheelhouse(home)),
                "--no-header",
                "--no-annotate",
                "--no-build",  # wheels only: no package's build code runs on the platform
                "--quiet",
            ],
            what=f"{shown}: its requirements do not resolve",
            cwd=scratch,  # no uv.toml of the caller's folder counts
            hide=(scratch, root, root.resolve()),
        )
        text = _normalised_lock(out.read_text())
    python = python_version()
    digest = hashlib.sha256(f"python {python}\n{text}".encode()).hexdigest()
    return EnvironmentRecord(
        hash=digest, source=shown, python=python, runtime=version, requirements=direct, lock=text
    )


def _pins_of_uv_lock(source: Path, scratch: Path, shown: str) -> list[str] | None:
    """The pins of the ``uv.lock`` beside a ``pyproject.toml``, if there is one."""
    if source.name != "pyproject.toml" or not (source.parent / "uv.lock").is_file():
        return None
    project = scratch / "project"
    project.mkdir()
    shutil.copyfile(source, project / "pyproject.toml")
    shutil.copyfile(source.parent / "uv.lock", project / "uv.lock")
    exported = _uv(
        [
            "export",
            "--frozen",
            "--format",
            "requirements-txt",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--no-emit-project",
            "--no-dev",
            "--project",
            str(project),
            "--python",
            sys.executable,
        ],
        what=f"{shown}: its uv.lock cannot be read",
        hide=(scratch,),
    )
    return [
        _checked(line.strip(), f"{shown}: its uv.lock")
        for line in exported.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _platform_pins() -> str:
    return "".join(
        f"{dist.metadata['Name']}=={dist.version}\n"
        for dist in metadata.distributions()
        if dist.metadata["Name"] and normalised_name(dist.metadata["Name"]) != RUNTIME
    )


def _normalised_lock(text: str) -> str:
    """The lock as recorded: its pins, sorted, nothing of this machine in it."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("#", "-"))
    ]
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


# -- building ------------------------------------------------------------------------------


def wheelhouse(home: Path) -> Path:
    return home / "wheels"


def environments_root(home: Path) -> Path:
    return home / "environments"


def folder(home: Path, record: EnvironmentRecord) -> Path:
    return environments_root(home) / record.hash[:24]


def interpreter(path: Path) -> Path:
    return path / "bin" / "python"


def ready(home: Path, record: EnvironmentRecord) -> bool:
    return (folder(home, record) / READY_FILE).is_file()


Report = Callable[[str], None]


def ensure(home: Path, record: EnvironmentRecord, report: Report = lambda _: None) -> Path:
    """The interpreter of ``record``'s environment, built first if this machine lacks it
    (one builder at a time; the others wait for it and use what it built)."""
    path = folder(home, record)
    if (path / READY_FILE).is_file():
        return interpreter(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".building"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if (path / READY_FILE).is_file():  # built while this one waited
            return interpreter(path)
        report(f"preparing the model's environment ({len(record.packages)} packages)")
        started = time.monotonic()
        shutil.rmtree(path, ignore_errors=True)  # a build cut short earlier
        try:
            _build(home, record, path)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        (path / READY_FILE).write_text(
            json.dumps(
                {
                    "hash": record.hash,
                    "runtime": record.runtime,
                    "built_at": datetime.now(UTC).isoformat(),
                    "seconds": round(time.monotonic() - started, 2),
                }
            )
        )
    return interpreter(path)


def _wheel_name(version: str) -> str:
    return f"{RUNTIME_PACKAGE}-{version}-py3-none-any.whl"


def keep_runtime(wheel: Path) -> None:
    """Keep a runtime wheel in the platform's storage (``acc://.platform/runtimes/``, where
    no user writes), so that a worker on another machine builds old versions' environments
    with the runtime they locked. Best effort: the publishing machine has it anyway."""
    from accelerator_prefect.storage import AccFileSystem

    try:
        fs = AccFileSystem()
        uri = RUNTIMES + wheel.name
        if not fs.exists(uri):
            fs.put_file(str(wheel), uri)
    except Exception as exc:  # storage unreachable from here: workers here still have it
        _log.warning("could not keep the runtime %s in storage: %s", wheel.name, exc)


def _fetch_runtime(home: Path, version: str) -> bool:
    """Fetch a runtime wheel this machine lacks from the platform's storage."""
    from accelerator_prefect.storage import AccFileSystem

    target = wheelhouse(home) / _wheel_name(version)
    try:
        fs = AccFileSystem()
        uri = RUNTIMES + _wheel_name(version)
        if not fs.exists(uri):
            return False
        wheelhouse(home).mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")
        fs.get_file(uri, str(part))
        part.replace(target)
    except Exception as exc:
        _log.warning("could not fetch the runtime %s from storage: %s", version, exc)
        return False
    return True


def _build(home: Path, record: EnvironmentRecord, path: Path) -> None:
    runtime = record.runtime
    if not (wheelhouse(home) / _wheel_name(runtime)).exists() and not _fetch_runtime(home, runtime):
        built, _ = runtime_wheel(wheelhouse(home))
        if built != runtime:
            raise EnvironmentFailed(
                f"this version locks the runtime {RUNTIME} {runtime}, which this machine does "
                f"not have (it runs {built}); publish the version again to run it here"
            )
    what = f"building the environment {record.hash[:12]}"
    _uv(["venv", "--quiet", "--python", sys.executable, str(path)], what=what)
    (path / LOCK_FILE).write_text(record.lock)
    _uv(
        [
            "pip",
            "sync",
            "--quiet",
            "--python",
            str(interpreter(path)),
            "--find-links",
            str(wheelhouse(home)),
            "--no-build",
            str(path / LOCK_FILE),
        ],
        what=what,
        hide=(path,),
    )
