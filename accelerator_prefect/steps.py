"""Deployment pull steps that pin a hosted version to its code.

``checkout`` runs on the worker before each flow run: it materialises the
repository at the version's commit in a per-commit cache (cloned once, then
reused), so publishing version N+1 never changes what version N runs and a
warm run pays no clone. The repository is a git URL, or, for code published
through the portal as a bundle, the ``acc://`` path of the bundle the platform
keeps (``acc://.platform/code/<model>/<commit>.bundle``), read with the
worker's storage settings.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from accelerator_prefect.errors import AcceleratorError
from accelerator_prefect.storage import PREFIX


def _cache_root() -> Path:
    configured = os.environ.get("ACC_CODE_CACHE")
    if configured:
        return Path(configured)
    home = os.environ.get("ACC_HOME")
    base = Path(home) if home else Path.home() / ".accelerator"
    return base / "code"


def _git(*args: str, cwd: Path | None = None) -> None:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AcceleratorError(f"git {' '.join(args)} failed: {result.stderr.strip()}")


def checkout(
    repository: str,
    commit: str,
    data: list[dict[str, Any]] | None = None,
    data_remote: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Materialise ``repository`` at ``commit`` and return ``{"directory": path}``.

    With ``data`` (the DVC-tracked paths the version pinned, with their hashes),
    fetch them from ``data_remote`` into the checkout and verify each file; the
    checkout counts as complete only once its data is.

    Example (a pull step in a deployment):
        {"accelerator_prefect.steps.checkout": {"id": "code",
            "repository": "https://example.org/team/models.git", "commit": "3f2c…"}}
    """
    key = hashlib.sha256(repository.encode()).hexdigest()[:16]
    target = _cache_root() / key / commit
    if (target / ".acc-complete").exists():
        return {"directory": str(target)}
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=target.parent))
    try:
        _git("init", "--quiet", str(scratch))
        _fetch(repository, commit, scratch)
        _git("-c", "advice.detachedHead=false", "checkout", "--quiet", commit, cwd=scratch)
        if data:
            from accelerator_prefect.data import DataRemote, fetch
            from accelerator_prefect.provenance import DataRecord

            try:
                fetch(
                    scratch,
                    DataRemote.model_validate(data_remote or {}),
                    [DataRecord.model_validate(d) for d in data],
                    cache=_cache_root() / "dvc-cache",
                )
            except AcceleratorError as exc:
                _fail_run(str(exc))
                raise
        (scratch / ".acc-complete").touch()
        try:
            scratch.rename(target)
        except OSError:
            # Another run of the same version finished the checkout first.
            if not (target / ".acc-complete").exists():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return {"directory": str(target)}


def _fetch(repository: str, commit: str, scratch: Path) -> None:
    """Fetch ``commit`` into the empty repository ``scratch``: from a git URL, or from a
    bundle the platform keeps in ``acc://`` storage (code published through the portal)."""
    if not repository.startswith(PREFIX):
        _git("fetch", "--quiet", "--depth", "1", "--", repository, commit, cwd=scratch)
        return
    from accelerator_prefect.storage import AccFileSystem

    bundle = scratch.parent / f"{scratch.name}.bundle"
    try:
        try:
            AccFileSystem().get_file(repository, str(bundle))
        except OSError as exc:
            message = f"{repository}: the version's code could not be read from storage ({exc})"
            _fail_run(message)
            raise AcceleratorError(message) from None
        _git("fetch", "--quiet", "--", str(bundle), commit, cwd=scratch)
    finally:
        bundle.unlink(missing_ok=True)


def environment(hash: str) -> dict[str, str]:
    """Check that the run runs in its version's environment (the lock ``hash``), and fail
    it with a clear message otherwise: a worker that does not start versions in their own
    environments (Prefect's process worker, for one) must never run them on its own
    libraries. The warm worker starts each run in its version's environment.

    Example (the first pull step of a version that declares an environment):
        {"accelerator_prefect.steps.environment": {"hash": "5be0…"}}
    """
    import sys

    if Path(sys.prefix).name == hash[:24]:
        return {"python": sys.executable}
    message = (
        f"This version runs with libraries of its own (environment {hash[:12]}), which its "
        "worker did not start it in: run it on a warm work pool (type acc-warm), which "
        "prepares each version's environment."
    )
    _fail_run(message)
    raise AcceleratorError(message)


def _fail_run(message: str) -> None:
    """Tell the run's readers why it did not start: a log line and a Failed state.

    Pull steps run before the run's own logging does, so an error here would
    otherwise reach only the worker's console.
    """
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return
    from datetime import UTC, datetime
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import LogCreate
    from prefect.states import Failed

    with get_client(sync_client=True) as client:
        client.create_logs(
            [
                LogCreate(
                    name="accelerator_prefect.steps",
                    level=40,
                    message=message,
                    timestamp=datetime.now(UTC),
                    flow_run_id=UUID(run_id),
                )
            ]
        )
        client.set_flow_run_state(UUID(run_id), Failed(message=message), force=True)
