"""The benchmark platform with the portal in front of it, and a user who holds a token.

:func:`portal_platform` starts what :func:`~benchmarks.platform_fixture.bench_platform`
starts (a Prefect server on SQLite, the ``echo`` model published in project ``bench``),
adds a user who is a member of that project, and serves the portal for them on a free
loopback port, so the portal benchmarks (B8, B9, B10) can put the same act through the
portal and through the in-process client, for the same user, in the same run.

The portal is started with :data:`LIMITS_LIFTED` in its environment, and this process
keeps the same settings while the platform runs (the in-process client reads them too):
the per-token rate limit and the cap on a user's waiting runs would otherwise refuse a
benchmark's hundreds of launches, which is what they are for and not what is measured.

Example:
    >>> with portal_platform() as bench:  # doctest: +SKIP
    ...     with bench.http() as http:
    ...         http.post(f"/models/{bench.model}/launch", json={"conf": CONF})
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from accelerator_prefect.client import Accelerator
from accelerator_prefect.platform import free_port, start_portal, stop_process
from benchmarks.platform_fixture import BenchPlatform, _environment, bench_platform

# Settings that lift the portal's limits for a benchmark (0: no limit). A setting the
# installed version does not know is ignored (settings ignore unknown ACC_ variables).
LIMITS_LIFTED = {
    "ACC_PORTAL_RATE_PER_SECOND": "0",  # requests a second per token
    "ACC_SIGNIN_FAILURES_PER_MINUTE": "0",  # refused credentials a minute per address
    "ACC_MAX_ACTIVE_RUNS_PER_USER": "0",  # runs a user may have waiting or running
}
PROJECT = "bench"  # the project the echo model is published in
API = "/api/v1"


@dataclass(frozen=True)
class PortalBench:
    """A running platform (``bench``), its portal at ``url`` (process ``pid``), and a member
    of the model's project: ``user``, holding ``token``."""

    bench: BenchPlatform
    url: str
    pid: int
    user: str
    token: str

    @property
    def model(self) -> str:
        return self.bench.model

    def http(self, **options: Any) -> httpx.Client:
        """An HTTP client for ``/api/v1`` carrying the user's token (keep-alive)."""
        return httpx.Client(base_url=self.url + API, headers=self.headers, **options)

    def async_http(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url + API, headers=self.headers, **options)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def in_process(self) -> Accelerator:
        """The user's client straight to the Prefect API (as the platform's services have it),
        checking the user's token on every call."""
        return Accelerator.connect(self.bench.info.api_url, home=self.bench.home, token=self.token)

    def over_http(self) -> Accelerator:
        """The user's Python client over the portal, as every user has it."""
        return Accelerator.connect(url=self.url, token=self.token)


@contextmanager
def portal_platform(
    *,
    keep_worker: bool = False,
    database: str | None = None,
    workers: int = 1,
    environment: dict[str, str] | None = None,
    portal_environment: dict[str, str] | None = None,
) -> Iterator[PortalBench]:
    """Start the platform (its worker stopped unless ``keep_worker``; ``database``,
    ``workers`` and ``environment`` as :func:`bench_platform` takes them), add a member of
    project ``bench``, serve the portal with its limits lifted (and ``portal_environment``,
    e.g. ``ACC_LAUNCH_CONCURRENCY``); stop it all on exit."""
    platform = bench_platform(
        keep_worker=keep_worker, database=database, workers=workers, environment=environment
    )
    with _environment(**LIMITS_LIFTED), platform as bench:
        user = f"bench-user-{uuid.uuid4().hex[:6]}"
        _, token = bench.acc.add_user(user, {PROJECT: "member"})
        pid, url = start_portal(
            bench.home,
            bench.info.api_url,
            free_port(),
            env={**LIMITS_LIFTED, **(portal_environment or {})},
        )
        try:
            yield PortalBench(bench=bench, url=url, pid=pid, user=user, token=token)
        finally:
            stop_process(pid)


@contextmanager
def given_or_started(given: PortalBench | None) -> Iterator[PortalBench]:
    """``given`` (a platform the caller runs, as the smoke tests share one), else a platform
    started here and stopped on exit."""
    if given is not None:
        yield given
        return
    with portal_platform() as started:
        yield started


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used so far."""
    try:
        import psutil
    except ImportError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def rate_limit_as_shipped() -> dict[str, str]:
    """The portal's per-token rate limit at its defaults, as environment variables (none if
    this version of the portal has no rate limit)."""
    from accelerator_prefect.settings import Settings

    names = ("portal_rate_per_second", "portal_rate_burst")
    fields = Settings.model_fields
    return {f"ACC_{name.upper()}": str(fields[name].default) for name in names if name in fields}


@contextmanager
def rate_limited_portal(bench: PortalBench) -> Iterator[tuple[int, str]]:
    """A second portal on the same platform whose per-token rate limit is as shipped (the
    other limits still lifted); its pid and URL, stopped on exit."""
    env = {**LIMITS_LIFTED, **rate_limit_as_shipped()}
    pid, url = start_portal(bench.bench.home, bench.bench.info.api_url, free_port(), env=env)
    try:
        yield pid, url
    finally:
        stop_process(pid)


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (psutil if installed, else ``/proc``)."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None
    return int(psutil.Process(pid).memory_info().rss)
