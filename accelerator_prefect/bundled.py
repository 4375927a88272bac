"""The example models that ship with the package, and what ``acc up`` does with them.

The examples (``deployments/``, ``flows/``, ``examples/``) live at the root of the
project's repository; a wheel carries the same files under ``accelerator_prefect_examples/``
beside the package. A published version is pinned to a git commit, so:

- run from a checkout, the examples are published from that checkout, at its commit;
- installed from a wheel, they are first written into a git repository of the platform's
  own (``<home>/examples``) and committed there with fixed author, date and message: the
  commit's hash is then a function of the files' content alone, identical on every machine
  that installs the same package, and a package with other examples makes a new commit on
  top (the old one, which old versions are pinned to, stays).

Their sample inputs are copied to ``acc://<project>/examples/…`` and their DVC-tracked
reference data is made (``examples/make_<name>.py``) and pushed to the platform's DVC remote.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from accelerator_prefect.errors import AcceleratorError

if TYPE_CHECKING:
    from accelerator_prefect.storage import Storage

Report = Callable[[str], None]

DISTRIBUTION = "accelerator-prefect"
EXTRA = "examples"
"""The extra that installs what the platform needs for the examples (``pip install
"accelerator-prefect[examples]"``): the libraries that make their reference data and that
the catalog previews their outputs with."""

INSTALLED = "accelerator_prefect_examples"
"""Where a wheel keeps the examples, beside the package in site-packages."""

# The fixed identity of a commit of the bundled examples: the same files, the same hash.
_AUTHOR = "accelerator-prefect"
_EMAIL = "examples@accelerator-prefect.invalid"
_DATE = "2026-01-01T00:00:00+00:00"
_SKIPPED = {"__pycache__", ".git", ".venv", ".pytest_cache", ".ruff_cache", ".mypy_cache"}

_log = logging.getLogger(__name__)


class ExamplesUnavailable(AcceleratorError):
    """The examples cannot be published here: the message says what to install or fix."""


def _checkout() -> Path:
    return Path(__file__).resolve().parents[1]


def source() -> Path | None:
    """Where the bundled examples are on this machine: the repository's root in a checkout,
    the wheel's ``accelerator_prefect_examples`` when installed; ``None`` if neither has them."""
    root = _checkout()
    if (root / "deployments").is_dir() and (root / "flows").is_dir():
        return root
    installed = root / INSTALLED
    return installed if (installed / "deployments").is_dir() else None


def in_checkout() -> bool:
    root = source()
    return root is not None and root == _checkout() and (root / ".git").exists()


def manifests(root: Path | None = None) -> list[Path]:
    """The example manifests (``deployments/*.yaml``) under ``root`` (their source if None)."""
    root = root or source()
    folder = root / "deployments" if root else None
    return sorted(folder.glob("*.yaml")) if folder and folder.is_dir() else []


def data_folder(root: Path | None = None) -> Path:
    """Sample inputs of the examples: ``examples/data/<project>/…``."""
    root = root or source() or _checkout()
    return root / "examples" / "data"


def missing_libraries() -> list[str]:
    """The libraries of the ``examples`` extra this environment lacks."""
    try:
        wanted = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    from packaging.requirements import Requirement

    missing = []
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is None or not requirement.marker.evaluate({"extra": EXTRA}):
            continue
        if requirement.marker.evaluate({"extra": ""}):
            continue  # not the extra's own: a plain dependency under a marker
        module = requirement.name.replace("-", "_").lower()
        if importlib.util.find_spec(module) is None:
            missing.append(requirement.name)
    return missing


def _files(root: Path) -> dict[str, bytes]:
    """The examples' files under ``root`` by relative path, without caches or data files
    git ignores (made again where needed)."""
    files: dict[str, bytes] = {}
    for top in ("deployments", "flows", "examples", ".dvc"):
        folder = root / top
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(root)
            if (
                not path.is_file()
                or _SKIPPED & set(relative.parts)
                or path.suffix == ".pyc"
                or relative.parts[:2] in {(".dvc", "cache"), (".dvc", "tmp")}
                or relative.name == "config.local"
                or (
                    (path.parent / ".gitignore").is_file()
                    and f"/{path.name}" in (path.parent / ".gitignore").read_text().split()
                )
            ):
                continue
            files[relative.as_posix()] = path.read_bytes()
    for name in (".dvcignore",):
        if (root / name).is_file():
            files[name] = (root / name).read_bytes()
    return files


def content_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def repository(home: Path) -> Path:
    """The git repository the examples are published from: the checkout itself, or
    ``<home>/examples``, brought up to this package's examples by a commit whose hash
    depends on their content alone."""
    root = source()
    if root is None:
        raise ExamplesUnavailable(f"this installation of {DISTRIBUTION} carries no example models")
    if in_checkout():
        return root
    import git

    files = _files(root)
    target = home / "examples"
    target.mkdir(parents=True, exist_ok=True)
    repo = git.Repo(target) if (target / ".git").exists() else git.Repo.init(target)
    tracked = set(repo.git.ls_files().splitlines()) if repo.head.is_valid() else set()
    for name in sorted(tracked - set(files)):
        (target / name).unlink(missing_ok=True)
    for name, data in files.items():
        path = target / name
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(f".{path.name}.part")
            scratch.write_bytes(data)
            scratch.replace(path)
    repo.git.add("-A", "--", *sorted({n.split("/")[0] for n in files | dict.fromkeys(tracked)}))
    if repo.head.is_valid() and not repo.index.diff("HEAD"):
        return target
    version = metadata.version(DISTRIBUTION)
    identity = {
        "GIT_AUTHOR_NAME": _AUTHOR,
        "GIT_AUTHOR_EMAIL": _EMAIL,
        "GIT_AUTHOR_DATE": _DATE,
        "GIT_COMMITTER_NAME": _AUTHOR,
        "GIT_COMMITTER_EMAIL": _EMAIL,
        "GIT_COMMITTER_DATE": _DATE,
    }
    message = (
        f"The example models of {DISTRIBUTION} {version}\n\ncontent sha256 {content_hash(files)}\n"
    )
    with repo.git.custom_environment(**identity):
        repo.git.commit("--no-gpg-sign", "--no-verify", "-q", "-m", message)
    return target


def seed_example_data(storage: Storage, folder: Path | None = None) -> list[str]:
    """Copy the examples' sample inputs to ``acc://<project>/examples/…``; return what was new.

    Files already there with the same size are left alone, so users' edits survive.
    """
    folder = folder or data_folder()
    copied: list[str] = []
    if not folder.is_dir():
        return copied
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        project, *rest = path.relative_to(folder).parts
        uri = f"acc://{project}/examples/{'/'.join(rest)}"
        if storage.exists(uri) and storage.info(uri).size == path.stat().st_size:
            continue
        storage.put(path, uri)
        copied.append(uri)
    return copied


def seed_reference_data(
    manifest_files: list[Path], remote_url: str, report: Report, root: Path | None = None
) -> list[str]:
    """Put the examples' DVC-tracked reference data into the default DVC remote; return
    the paths pushed.

    A missing data file ``…/<name>.<ext>`` is made by ``examples/make_<name>.py`` (written
    aside and renamed into place, so a failure leaves nothing); one whose content is not
    what its ``.dvc`` file records is made again.
    """
    from accelerator_prefect import data
    from accelerator_prefect.manifest import load_manifest

    root = root or source() or _checkout()
    paths = sorted({p for m in manifest_files for p in load_manifest(m).data})
    if not paths:
        return []
    records = {r.path: r.md5 for r in data.tracked(root, None, paths)}
    for path in paths:
        target = root / path
        if target.is_file() and data.md5_of(target) != records.get(path):
            report(f"{path} is not what its .dvc file records: making it again")
            target.unlink()
    remote = data.default_remote(root, remote_url)
    gaps = data.missing(root, None, remote, paths)
    for path in gaps:
        if not (root / path).exists():
            _make(root, path, report)
    if gaps:
        report(f"pushing {', '.join(gaps)} to the DVC remote {remote.url}")
        data.commit_workspace(root, gaps)
        data.push(root, remote, gaps)
    return gaps


def _make(root: Path, path: str, report: Report) -> None:
    maker = root / "examples" / f"make_{Path(path).stem}.py"
    if not maker.is_file():
        raise ExamplesUnavailable(f"{path} is missing and nothing here makes it ({maker.name})")
    report(f"making the reference data {path} with {maker.relative_to(root)}")
    # The maker imports the model's module (``flows.…``) from the examples' root.
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, str(maker)], cwd=root, env=env, capture_output=True, text=True
    )
    if done.returncode != 0 or not (root / path).is_file():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ExamplesUnavailable(f"could not make the reference data {path}: {last[0]}")
