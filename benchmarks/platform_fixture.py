"""A real embedded platform for the launch benchmarks, with one trivial model published.

:func:`bench_platform` starts what ``acc up`` starts (a Prefect server on SQLite
and a process worker) in a temporary home, publishes an ``echo`` model from a
git repository of its own (publishing pins committed code, so never from this
repository's work tree), stops the worker so the runs it creates stay
``Scheduled`` and only creation is measured, and stops everything on exit. The
server logs each request SQLite's lock made it refuse, and does not mark the
never-started runs Late (see ``SERVER_ENVIRONMENT``). Its API is locked with the auth
string ``acc up`` keeps in the home (:attr:`BenchPlatform.auth_string`), which a user of
raw Prefect passes to ``PrefectClient(…, auth_string=…)``.

With ``keep_worker`` the workers stay (``workers`` of them, warm, on one pool) and run
what is launched; ``database`` puts the server's data in PostgreSQL (a
``postgresql+asyncpg://`` URL) instead of SQLite; ``environment`` adds settings for what
is started (e.g. ``ACC_WORK_POOL_CONCURRENCY``, which ``up`` reads for the pool).

Example:
    >>> with bench_platform() as bench:  # doctest: +SKIP
    ...     run = bench.acc.launch(bench.model, conf={"message": "hi"})
"""

from __future__ import annotations

import os
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from accelerator_prefect.client import Accelerator
from accelerator_prefect.platform import PlatformInfo, down, free_port, stop_process, up
from accelerator_prefect.settings import get_settings

ECHO_FLOW = """
from pydantic import Field

from accelerator_prefect import Conf, jobflow, routine


class EchoConf(Conf):
    message: str = Field(default="hello", description="What to say.")
    repeat: int = Field(default=1, ge=1, le=10, description="How many times.")


@routine
def shout(conf: EchoConf) -> str:
    return " ".join([conf.message.upper()] * conf.repeat)


@jobflow(name="echo")
def echo(conf: EchoConf) -> str:
    return shout(conf)
"""

ECHO_MANIFEST = """
name: {name}
title: Echo
description: A trivial model for the launch benchmarks.
version: {version}
jobflow: flows/echo.py:echo
owner: operator
project: {project}
access:
  scope: project
"""

# What every benchmark launch sends: valid against the echo model's conf schema.
CONF = {"message": "benchmark", "repeat": 2}
# The server the benchmarks start differs from `acc up`'s in two settings:
SERVER_ENVIRONMENT = {
    # Log every request refused with 503 because SQLite was locked (the client retries
    # those after 2, 4, 8 … s), so the benchmarks can count them; nothing else changes.
    "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",
    # With no worker, every run created would turn Late after 15 s, and the server would
    # spend its CPU (and SQLite's write lock) marking hundreds of runs that never start,
    # while the benchmark runs; a platform with a worker starts them before that.
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
}
# What the server logs for each of those refusals.
LOCKED = "Encountered retryable exception in request"


@dataclass(frozen=True)
class BenchPlatform:
    """A running platform: the client (the local operator, as ``Accelerator.connect()``
    acts on ``acc up``'s machine) and the published model's deployment."""

    home: Path
    info: PlatformInfo
    acc: Accelerator
    model: str
    version: str
    deployment_id: UUID

    @property
    def auth_string(self) -> str:
        """The Prefect API's auth string, which ``acc up`` keeps in the home."""
        return get_settings(home=self.home).auth_string_file.read_text().strip()

    def locked_requests(self) -> int:
        """How many requests the server has refused so far because SQLite was locked."""
        log = self.home / "logs" / "server.log"
        return log.read_text(errors="replace").count(LOCKED) if log.exists() else 0

    def flow_run_ids(self) -> set[str]:
        """The ids of every flow run of the model's deployment, read page by page."""
        return self.acc._call(lambda client: _flow_run_ids(client, self.deployment_id))

    def flow_run_states(self) -> dict[str, int]:
        """How many flow runs of the deployment are in each state."""
        return self.acc._call(lambda client: _flow_run_states(client, self.deployment_id))


def make_model_repo(path: Path, name: str, version: str = "1.0.0", project: str = "bench") -> Path:
    """A committed git repository holding the echo model; returns its manifest."""
    from git import Repo

    repo = Repo.init(path)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Benchmark")
        config.set_value("user", "email", "benchmark@example.invalid")
    files = {
        "flows/echo.py": ECHO_FLOW,
        f"deployments/{name}.yaml": ECHO_MANIFEST.format(
            name=name, version=version, project=project
        ),
    }
    for relative, text in files.items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    repo.git.add(A=True)
    repo.index.commit("echo")
    return path / "deployments" / f"{name}.yaml"


@contextmanager
def bench_platform(
    *,
    keep_worker: bool = False,
    database: str | None = None,
    workers: int = 1,
    environment: dict[str, str] | None = None,
) -> Iterator[BenchPlatform]:
    """Start a platform in a temporary home, publish the echo model; stop it all on exit.

    Without ``keep_worker`` the workers are stopped once the platform is up, so no
    run executes (and no run execution competes with the launches for the CPU). With it,
    ``workers`` warm workers run the runs, and the server marks runs Late as ``acc up``'s
    does. ``database``: a PostgreSQL URL for the server's data (``None``: SQLite in the
    home). ``environment``: settings added to this process's while the platform starts.
    """
    server = dict(SERVER_ENVIRONMENT)
    if keep_worker:  # runs are started: the Late-runs service does what it does in use
        server.pop("PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED")
    with tempfile.TemporaryDirectory(prefix="acc-bench-") as folder:
        workdir = Path(folder)
        home = workdir / "home"
        try:
            with _environment(**server, **(environment or {})):
                info, _ = up(
                    home,
                    port=free_port(),
                    examples=[],
                    catalog_port=None,
                    portal_port=None,
                    database=database,
                    workers=workers,
                )
            if not keep_worker:
                for pid in info.workers():
                    stop_process(pid)
            token = get_settings(home=home).operator_token_file.read_text().strip()
            acc = Accelerator.connect(info.api_url, home=home, token=token)
            try:
                name = f"echo-{uuid.uuid4().hex[:8]}"
                result = acc.publish(make_model_repo(workdir / "models", name))
                yield BenchPlatform(
                    home=home,
                    info=info,
                    acc=acc,
                    model=name,
                    version=result.version,
                    deployment_id=UUID(result.deployment_id),
                )
            finally:
                acc.close()
        finally:
            down(home)


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """``values`` in this process's environment (so in the servers it starts), then as before."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _flow_runs(client: Any, deployment_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    found: list[Any] = []
    offset, page = 0, 200
    while True:
        batch = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            limit=page,
            offset=offset,
        )
        found += batch
        if len(batch) < page:
            return found
        offset += page


async def _flow_run_ids(client: Any, deployment_id: UUID) -> set[str]:
    return {str(run.id) for run in await _flow_runs(client, deployment_id)}


async def _flow_run_states(client: Any, deployment_id: UUID) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in await _flow_runs(client, deployment_id):
        state = run.state.name if run.state is not None else "none"
        counts[state] = counts.get(state, 0) + 1
    return counts
