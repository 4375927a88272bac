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
    """Run the version in its own environment (the lock ``hash``).

    The warm worker starts each run there already: nothing to do. Any other worker
    (Prefect's process worker, a Docker or Kubernetes image without the environment)
    starts it on its own interpreter; then this step builds the environment if the
    machine lacks it (the run's log says so) and starts the engine again on the
    environment's interpreter, in the same process, which the worker keeps watching.
    A run whose environment cannot be prepared fails with the reason, and never runs on
    the worker's own libraries.

    Example (the first pull step of a version that declares an environment):
        {"accelerator_prefect.steps.environment": {"hash": "5be0…"}}
    """
    import sys

    from accelerator_prefect import environments

    if environments.running_in(hash):
        return {"python": sys.executable}
    try:
        python = _prepared_environment(hash)
    except AcceleratorError as exc:
        message = f"The model's environment could not be prepared: {exc}"
        _fail_run(message)
        raise AcceleratorError(message) from None
    # The engine again, on the environment's interpreter; its pull steps run once more,
    # this one returning at once and the checkout coming from the cache.
    _send_logs()
    os.execv(python, [python, "-m", "prefect.engine"])
    raise AssertionError("unreachable")  # pragma: no cover


def _prepared_environment(hash: str) -> str:
    """The interpreter of this run's environment, built first if this machine lacks it."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from accelerator_prefect import environments
    from accelerator_prefect.settings import get_settings

    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        raise AcceleratorError(
            f"this version runs with libraries of its own (environment {hash[:12]}), and "
            "this process is not one of its runs"
        )
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(run_id))
        deployment = (
            client.read_deployment(flow_run.deployment_id) if flow_run.deployment_id else None
        )
    record = environments.of_deployment(deployment)
    if record is None or record.hash != hash:
        raise AcceleratorError(f"its deployment does not lock the environment {hash[:12]}")
    home = get_settings().home
    if not environments.ready(home, record):
        _log_to_run("Preparing the model's environment…")
    return str(environments.ensure(home, record))


def _send_logs() -> None:
    """Send the log lines Prefect still holds, before this process becomes another."""
    import contextlib
    import sys

    from prefect._internal.concurrency.services import QueueService

    with contextlib.suppress(Exception):
        QueueService.drain_all(timeout=5)
    sys.stdout.flush()
    sys.stderr.flush()


def _log_to_run(message: str, level: int = 20) -> None:
    """A line in the run's log, sent at once (pull steps run before the run's own
    logging does, so a line logged the usual way could reach only the worker's console)."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return
    from datetime import UTC, datetime
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import LogCreate

    with get_client(sync_client=True) as client:
        client.create_logs(
            [
                LogCreate(
                    name="accelerator_prefect.steps",
                    level=level,
                    message=message,
                    timestamp=datetime.now(UTC),
                    flow_run_id=UUID(run_id),
                )
            ]
        )


def _fail_run(message: str) -> None:
    """Tell the run's readers why it did not start: a log line and a Failed state."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    _log_to_run(message, level=40)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(run_id), Failed(message=message), force=True)
