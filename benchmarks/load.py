"""B17: the platform under load through the portal, on SQLite and on PostgreSQL.

A real platform (a Prefect server, as ``acc up`` starts it, on SQLite in its home or on a
PostgreSQL server of the benchmark's own, ``durable``: it waits for the disk as an
installation's would) hosts the trivial ``echo`` model, with warm workers on its pool and
the portal in front of it (its limits lifted, see
:data:`~benchmarks.portal_fixture.LIMITS_LIFTED`). A member of the model's project,
holding a personal token, launches it with ``POST /api/v1/models/{model}/launch``.
Three measurements, for each database:

- **the load**: ``--launches`` over ``--minutes`` at a steady rate, from ``--clients``
  concurrent clients (each its own HTTP connection, taking every ``clients``-th launch of
  the schedule), with ``--workers`` warm workers. Then: none lost or duplicated (every
  launch returned a run id, the ids distinct, the deployment's flow runs grew by exactly
  those ids, every run ended Completed), launch latency p50/p95, launch → Completed
  p50/p95, runs completed per minute, and the CPU of the Prefect server (and of
  PostgreSQL, the portal and the workers) from the first launch until the last run ended.
- **runs per minute by workers**: with 1, 2 and 4 warm workers (``--scaling-workers``),
  ``--scaling-launches`` launches as fast as the portal takes them (the same clients,
  back to back), from the first launch until the last run is Completed, after a warm-up
  of two runs per worker.
- **the client's launch write concurrency**: ``ACC_LAUNCH_CONCURRENCY`` (how many
  launches of one client write to Prefect at once) set to each of ``--concurrency`` in a
  portal's environment; bursts of ``--burst`` launches at once through each portal,
  taking turns (ABBA …), the workers stopped so only creation is timed.

The work pool's concurrency is raised (``ACC_WORK_POOL_CONCURRENCY``, default
:data:`POOL_CONCURRENCY`) so that it does not hide what the workers can do: each warm
worker runs at most 8 runs at once (``ACC_WARM_LIMIT``), 4 workers 32.

Run it (the issue's size, about 40 minutes; a reduced run says so in its table):

    python -m benchmarks.load --launches 1000 --minutes 10

Results land in ``benchmarks/results/load.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from benchmarks.common import Report, command, load_average, median, p95, percentile
from benchmarks.common import parser as common_parser
from benchmarks.platform_fixture import CONF, _environment
from benchmarks.portal_fixture import LIMITS_LIFTED, PortalBench, portal_platform

NAME = "load"
POOL_CONCURRENCY = 32
"""The work pool's limit during the benchmark: 4 warm workers × 8 runs each."""
DATABASES = ("sqlite", "postgresql")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- CPU of a process and its children ------------------------------------------------


def _stat(pid: int) -> tuple[int, float, float] | None:
    """``(parent pid, own CPU s, CPU s of its children it has reaped)``, or ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    reaped = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return int(fields[1]), own, reaped


def tree_cpu_seconds(pids: Sequence[int | None]) -> float:
    """The CPU time (user and system) used so far by ``pids`` and every process under them,
    including children that have ended (counted in their parent once reaped): the
    Prefect server's, or PostgreSQL's backends that come and go with connections."""
    stats: dict[int, tuple[int, float, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                stats[int(entry.name)] = found
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo, seen = 0.0, [p for p in pids if p], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        _, own, reaped = stats[pid]
        total += own + reaped
        todo += children.get(pid, [])
    return total


@dataclass
class Processes:
    """The processes whose CPU the benchmark reads: the Prefect server, the database
    (PostgreSQL's postmaster; none for SQLite, which is inside the server), the portal and
    the workers."""

    server: int
    database: int | None
    portal: int
    workers: list[int] = field(default_factory=list)

    def cpu(self) -> dict[str, float]:
        return {
            "server": tree_cpu_seconds([self.server]),
            "database": tree_cpu_seconds([self.database]) if self.database else 0.0,
            "portal": tree_cpu_seconds([self.portal]),
            "workers": tree_cpu_seconds(self.workers),
        }


def cpu_use(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, Any]:
    """Each process's CPU over a window of ``seconds``: CPU-seconds, per minute, % of a core."""
    used = {name: after[name] - before[name] for name in before}
    return {
        name: {
            "cpu_seconds": round(value, 2),
            "cpu_seconds_per_minute": round(value / seconds * 60, 2),
            "percent_of_one_core": round(value / seconds * 100, 1),
        }
        for name, value in used.items()
    }


# -- the platform on each database ----------------------------------------------------


@dataclass
class Site:
    """A running platform on one database, with its portal and what it takes to change it."""

    database: str  # sqlite or postgresql
    bench: PortalBench
    database_pid: int | None
    environment: dict[str, str]

    def processes(self) -> Processes:
        from accelerator_prefect.platform import read_platform

        info = read_platform(self.bench.bench.home)
        assert info is not None, "the platform is not running"
        workers = [pid for pid in info.workers() if pid]
        return Processes(info.server_pid, self.database_pid, self.bench.pid, workers)

    def set_workers(self, count: int) -> None:
        """Run ``count`` warm workers on the pool (``acc up`` starts or stops the others)."""
        from accelerator_prefect.platform import up

        with _environment(**self.environment):
            up(
                self.bench.bench.home,
                port=self.bench.bench.info.port,
                examples=[],
                catalog_port=None,
                portal_port=None,
                workers=count,
            )

    def stop_workers(self) -> None:
        from accelerator_prefect.platform import stop_process

        for pid in self.processes().workers:
            stop_process(pid)


@contextmanager
def site(database: str, workers: int, environment: dict[str, str]) -> Iterator[Site]:
    """The platform on ``database`` (a PostgreSQL server of its own, durable, for
    ``postgresql``), ``workers`` warm workers kept, the portal serving; stopped on exit."""
    with ExitStack() as stack:
        url, postmaster = None, None
        if database == "postgresql":
            from tests.postgres import postgres_server

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acc-pg-")))
            server = stack.enter_context(postgres_server(folder / "pg", durable=True))
            url = server.url
            postmaster = int((folder / "pg" / "data" / "postmaster.pid").read_text().split()[0])
        bench = stack.enter_context(
            portal_platform(
                keep_worker=True, database=url, workers=workers, environment=environment
            )
        )
        yield Site(database, bench, postmaster, environment)


def postgres_available() -> bool:
    from tests.postgres import binaries

    return binaries() is not None


# -- launching through the portal ----------------------------------------------------


@dataclass
class Launch:
    """One launch: when it was issued (wall clock), how long the portal took to answer, and
    the run id it returned or the error it met."""

    issued: float
    seconds: float
    run_id: str | None = None
    error: str | None = None


async def _launch(http: httpx.AsyncClient, model: str) -> Launch:
    issued, start = time.time(), time.perf_counter()
    try:
        response = await http.post(f"/models/{model}/launch", json={"conf": CONF})
    except httpx.HTTPError as exc:
        return Launch(issued, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    if response.status_code != 201:
        return Launch(issued, seconds, error=f"{response.status_code} {response.text[:200]}")
    return Launch(issued, seconds, run_id=str(response.json()["id"]))


async def _launches(
    bench: PortalBench, total: int, clients: int, due: Callable[[int], float] | None
) -> tuple[list[Launch], float]:
    """``total`` launches from ``clients`` clients; launch ``i`` by client ``i % clients``,
    not before ``due(i)`` seconds from the start (``None``: each as soon as its client is
    free). The launches, and how late the latest one was issued (s)."""
    results: list[Launch | None] = [None] * total
    late = [0.0]
    start = time.perf_counter()

    async def client(number: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with bench.async_http(timeout=300, limits=limits) as http:
            for i in range(number, total, clients):
                if due is not None:
                    wait = start + due(i) - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    else:
                        late[0] = max(late[0], -wait)
                results[i] = await _launch(http, bench.model)

    await asyncio.gather(*(client(n) for n in range(min(clients, total))))
    return [r for r in results if r is not None], late[0]


# -- what the server holds -------------------------------------------------------------


@dataclass(frozen=True)
class Ended:
    state: str
    start: float | None
    end: float | None


async def _read_runs(client: Any, ids: list[str]) -> dict[str, Ended]:
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found: dict[str, Ended] = {}
    for first in range(0, len(ids), 200):
        chunk = [UUID(i) for i in ids[first : first + 200]]
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
        )
        for run in runs:
            state = run.state
            found[str(run.id)] = Ended(
                state=state.name if state is not None else "none",
                start=run.start_time.timestamp() if run.start_time else None,
                end=run.end_time.timestamp() if run.end_time else None,
            )
    return found


FINAL = {"Completed", "Failed", "Crashed", "Cancelled"}


def wait_until_ended(bench: PortalBench, ids: list[str], deadline: float) -> dict[str, Ended]:
    """Read the runs every second until every one has ended (or ``deadline`` s passed); the
    last reading. Only the runs still going are read again."""
    acc = bench.bench.acc
    runs: dict[str, Ended] = {}
    going = list(ids)
    end = time.monotonic() + deadline
    while going and time.monotonic() < end:
        runs.update(acc._call(functools.partial(_read_runs, ids=going)))
        going = [i for i in going if i not in runs or runs[i].state not in FINAL]
        if going:
            time.sleep(1.0)
    return runs


class LoadWatch:
    """The machine's 1-minute load average, sampled every 10 s while a part runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = False

    async def watch(self) -> None:
        while not self._stop:
            average = load_average()
            if average:
                self.samples.append(average[0])
            await asyncio.sleep(10)

    def summary(self) -> dict[str, Any]:
        return {
            "mean": round(sum(self.samples) / len(self.samples), 2) if self.samples else None,
            "max": max(self.samples) if self.samples else None,
            "samples": self.samples,
        }


def _quantiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(median(values), 3), round(p95(values), 3)


def check(launches: list[Launch], created: set[str], runs: dict[str, Ended]) -> dict[str, Any]:
    """None lost or duplicated: every launch returned an id, the ids distinct, the
    deployment's flow runs grew by exactly those ids, every run ended Completed."""
    ids = [launch.run_id for launch in launches if launch.run_id]
    states: dict[str, int] = {}
    for run_id in ids:
        state = runs[run_id].state if run_id in runs else "not found"
        states[state] = states.get(state, 0) + 1
    errors = [launch.error for launch in launches if launch.error]
    exactly_once = len(ids) == len(launches) and set(ids) == created and len(created) == len(ids)
    completed = states.get("Completed", 0)
    return {
        "launches": len(launches),
        "returned_ids": len(ids),
        "distinct_ids": len(set(ids)),
        "flow_runs_created": len(created),
        "exactly_once": exactly_once,
        "completed": completed,
        "states": states,
        "none_lost": exactly_once and completed == len(launches),
        "error_count": len(errors),
        "errors": errors[:10],
    }


def measure(
    site: Site,
    total: int,
    clients: int,
    due: Callable[[int], float] | None,
    drain: float,
) -> dict[str, Any]:
    """Launch ``total`` runs (see :func:`_launches`), wait until they end; the checks, the
    latencies, the rate of completion and the CPU used from the first launch to the last
    run's end."""
    bench = site.bench
    processes = site.processes()
    before_ids = bench.bench.flow_run_ids()
    locked_before = bench.bench.locked_requests()
    watch = LoadWatch()
    load_before = load_average()

    async def launch_all() -> tuple[list[Launch], float]:
        watcher = asyncio.create_task(watch.watch())
        try:
            return await _launches(bench, total, clients, due)
        finally:
            watch._stop = True
            watcher.cancel()

    cpu_before, started = processes.cpu(), time.time()
    launches, late = asyncio.run(launch_all())
    launched = time.time()
    ids = [launch.run_id for launch in launches if launch.run_id]
    runs = wait_until_ended(bench, ids, drain)
    cpu_after, finished = processes.cpu(), time.time()
    created = bench.bench.flow_run_ids() - before_ids
    result = check(launches, created, runs)
    ends = [run.end for run in runs.values() if run.state == "Completed" and run.end]
    first = min(launch.issued for launch in launches)
    last_end = max(ends) if ends else finished
    issued = {launch.run_id: launch.issued for launch in launches if launch.run_id}
    to_completed = [
        runs[i].end - issued[i]  # type: ignore[operator]
        for i in ids
        if i in runs and runs[i].state == "Completed" and runs[i].end
    ]
    latency = [launch.seconds for launch in launches]
    span = max(last_end - first, 1e-6)
    result.update(
        {
            "launch_seconds": [round(s, 4) for s in latency],
            "launch_p50_seconds": _quantiles(latency)[0],
            "launch_p95_seconds": _quantiles(latency)[1],
            "launch_max_seconds": round(max(latency), 3) if latency else None,
            "to_completed_p50_seconds": _quantiles(to_completed)[0],
            "to_completed_p95_seconds": _quantiles(to_completed)[1],
            "to_completed_p99_seconds": (
                round(percentile(to_completed, 99), 3) if to_completed else None
            ),
            "launching_seconds": round(launched - started, 2),
            "latest_launch_behind_schedule_seconds": round(late, 2),
            "first_launch_to_last_completed_seconds": round(span, 2),
            "drain_seconds": round(max(last_end - launched, 0.0), 2),
            "runs_completed_per_minute": round(result["completed"] / span * 60, 1),
            "cpu_window_seconds": round(finished - started, 2),
            "cpu": cpu_use(cpu_before, cpu_after, finished - started),
            "locked_requests": bench.bench.locked_requests() - locked_before,
            "load_average": {"before": load_before, "after": load_average(), **watch.summary()},
        }
    )
    return result


# -- the three parts ----------------------------------------------------------------------


def steady_load(site: Site, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    seconds = args.minutes * 60
    interval = seconds / args.launches
    console.print(
        f"[{site.database}] the load: {args.launches} launches over {args.minutes:g} min "
        f"from {args.clients} clients, {args.workers} workers"
    )
    site.set_workers(args.workers)
    result = measure(
        site, args.launches, args.clients, lambda i: i * interval, drain=max(600.0, seconds)
    )
    result.update(
        {
            "database": site.database,
            "workers": args.workers,
            "clients": args.clients,
            "minutes": args.minutes,
            "offered_per_minute": round(args.launches / args.minutes, 1),
        }
    )
    return result


def by_workers(site: Site, args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    results = []
    for count in args.scaling_workers:
        console.print(
            f"[{site.database}] {count} worker(s): {args.scaling_launches} launches, as fast "
            "as the portal takes them"
        )
        site.set_workers(count)
        measure(site, 2 * count, args.clients, None, drain=300.0)  # warm-up, not counted
        result = measure(site, args.scaling_launches, args.clients, None, drain=600.0)
        result.update({"database": site.database, "workers": count, "clients": args.clients})
        results.append(result)
    return results


def _burst(bench: PortalBench, url: str, n: int) -> tuple[list[Launch], float]:
    """``n`` launches at once through the portal at ``url`` (one client, ``n`` connections,
    opened within the burst, as B9's portal-gather)."""

    async def burst() -> tuple[list[Launch], float]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(
            base_url=url + "/api/v1", headers=bench.headers, timeout=300, limits=limits
        ) as http:
            start = time.perf_counter()
            launches = await asyncio.gather(*(_launch(http, bench.model) for _ in range(n)))
            return list(launches), time.perf_counter() - start

    return asyncio.run(burst())


def write_concurrency(
    site: Site, args: argparse.Namespace, console: Console
) -> list[dict[str, Any]]:
    from accelerator_prefect.platform import free_port, start_portal, stop_process

    bench = site.bench
    site.stop_workers()  # runs stay Scheduled: only their creation is timed
    portals: dict[int, tuple[int, str]] = {}
    bursts: dict[int, list[dict[str, Any]]] = {value: [] for value in args.concurrency}
    try:
        for value in args.concurrency:
            env = {**LIMITS_LIFTED, "ACC_LAUNCH_CONCURRENCY": str(value)}
            portals[value] = start_portal(
                bench.bench.home, bench.bench.info.api_url, free_port(), env=env
            )
        values = list(args.concurrency)
        for round_ in range(args.burst_rounds):
            for value in values if round_ % 2 == 0 else values[::-1]:
                console.print(
                    f"[{site.database}] ACC_LAUNCH_CONCURRENCY={value}: burst {round_ + 1} "
                    f"of {args.burst} launches"
                )
                time.sleep(args.settle)
                pid, url = portals[value]
                processes = site.processes()
                processes.portal = pid
                before_ids = bench.bench.flow_run_ids()
                locked = bench.bench.locked_requests()
                cpu_before, start = processes.cpu(), time.time()
                launches, wall = _burst(bench, url, args.burst)
                cpu = cpu_use(cpu_before, processes.cpu(), time.time() - start)
                created = bench.bench.flow_run_ids() - before_ids
                ids = [launch.run_id for launch in launches if launch.run_id]
                errors = [launch.error for launch in launches if launch.error]
                bursts[value].append(
                    {
                        "wall_seconds": round(wall, 3),
                        "exactly_once": len(ids) == args.burst
                        and set(ids) == created
                        and len(created) == args.burst,
                        "error_count": len(errors),
                        "errors": errors[:5],
                        "launch_seconds": [round(launch.seconds, 4) for launch in launches],
                        "locked_requests": bench.bench.locked_requests() - locked,
                        "server_cpu_seconds": cpu["server"]["cpu_seconds"],
                        "database_cpu_seconds": cpu["database"]["cpu_seconds"],
                        "load_average": load_average(),
                    }
                )
    finally:
        for pid, _ in portals.values():
            stop_process(pid)
    results = []
    for value, done in bursts.items():
        walls = [b["wall_seconds"] for b in done]
        latency = [s for b in done for s in b["launch_seconds"]]
        results.append(
            {
                "database": site.database,
                "launch_concurrency": value,
                "launches": args.burst,
                "bursts": len(done),
                "exactly_once": all(b["exactly_once"] for b in done),
                "error_count": sum(b["error_count"] for b in done),
                "wall_seconds": round(median(walls), 3),
                "walls": walls,
                "creations_per_minute": round(args.burst / median(walls) * 60, 1),
                "launch_p50_seconds": _quantiles(latency)[0],
                "launch_p95_seconds": _quantiles(latency)[1],
                "locked_requests": sum(b["locked_requests"] for b in done),
                "server_cpu_seconds_per_burst": round(
                    median([b["server_cpu_seconds"] for b in done]), 2
                ),
                "database_cpu_seconds_per_burst": round(
                    median([b["database_cpu_seconds"] for b in done]), 2
                ),
                "load_average": [b["load_average"] for b in done],
                "samples": done,
            }
        )
    return results


def better_concurrency(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per database: the value whose bursts were fastest (median wall); a value more than
    10 % slower than the best is not recommended, one within 10 % is a tie (then the
    lowest value, which asks least of the database)."""
    chosen: dict[str, Any] = {}
    for database in sorted({r["database"] for r in results}):
        mine = [r for r in results if r["database"] == database and r["exactly_once"]]
        if not mine:
            continue
        best = min(r["wall_seconds"] for r in mine)
        near = sorted(r["launch_concurrency"] for r in mine if r["wall_seconds"] <= best * 1.1)
        fastest = min(mine, key=lambda r: r["wall_seconds"])["launch_concurrency"]
        chosen[database] = {
            "fastest": fastest,
            "recommended": near[0] if len(near) > 1 else fastest,
            "tie_within_10_percent": len(near) > 1,
        }
    return chosen


# -- the report ---------------------------------------------------------------------------


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> list[str]:
        lines = [
            f"## {self.title}",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return lines


@dataclass
class LoadReport(Report):
    """B17's report: the load's table first (the one ``make bench``'s summary counts), then
    runs per minute by workers and the launch write concurrency, each a table of its own."""

    sections: list[Section] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [super().markdown().rstrip("\n")]
        for section in self.sections:
            lines += ["", *section.markdown()]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        data = super().as_json()
        data["sections"] = [
            {"title": s.title, "columns": s.columns, "rows": s.rows} for s in self.sections
        ]
        return data

    def finish(self, folder: Path, console: Any) -> None:
        from rich.table import Table

        super().finish(folder, console)
        for section in self.sections:
            table = Table(title=section.title)
            for column in section.columns:
                table.add_column(column)
            for row in section.rows:
                table.add_row(*row)
            console.print(table)


def _s(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _load(result: dict[str, Any]) -> str:
    load = result["load_average"]
    return f"{_s(load['mean'], 1)} (max {_s(load['max'], 1)})"


LOAD_COLUMNS = [
    "Database",
    "Launches / min. / clients",
    "Workers",
    "Ids returned / distinct",
    "Flow runs created",
    "Completed",
    "Errors",
    "Launch p50 s",
    "Launch p95 s",
    "Launch → Completed p50 / p95 s",
    "Runs completed / min",
    "Server CPU s/min",
    "Server % of a core",
    "PostgreSQL % of a core",
    "Portal / workers % of a core",
    "Machine load (1 min)",
    "Target",
    "Met?",
]


def load_row(r: dict[str, Any]) -> list[str]:
    cpu = r["cpu"]
    return [
        r["database"],
        f"{r['launches']} / {r['minutes']:g} / {r['clients']}",
        str(r["workers"]),
        f"{r['returned_ids']} / {r['distinct_ids']}",
        str(r["flow_runs_created"]),
        str(r["completed"]),
        str(r["error_count"]),
        _s(r["launch_p50_seconds"], 3),
        _s(r["launch_p95_seconds"], 3),
        f"{_s(r['to_completed_p50_seconds'])} / {_s(r['to_completed_p95_seconds'])}",
        f"{r['runs_completed_per_minute']:.1f}",
        f"{cpu['server']['cpu_seconds_per_minute']:.1f}",
        f"{cpu['server']['percent_of_one_core']:.0f}",
        f"{cpu['database']['percent_of_one_core']:.0f}" if r["database"] != "sqlite" else "—",
        f"{cpu['portal']['percent_of_one_core']:.0f} / {cpu['workers']['percent_of_one_core']:.0f}",
        _load(r),
        "none lost or duplicated, all Completed",
        "yes" if r["none_lost"] else "NO",
    ]


WORKER_COLUMNS = [
    "Database",
    "Workers",
    "Launches",
    "Ids returned / distinct",
    "Completed",
    "Launching s",
    "First launch → last Completed s",
    "Runs / min",
    "Launch → Completed p50 / p95 s",
    "Server % of a core",
    "PostgreSQL % of a core",
    "Workers % of a core",
    "Machine load (1 min)",
    "None lost?",
]


def worker_row(r: dict[str, Any]) -> list[str]:
    cpu = r["cpu"]
    return [
        r["database"],
        str(r["workers"]),
        str(r["launches"]),
        f"{r['returned_ids']} / {r['distinct_ids']}",
        str(r["completed"]),
        f"{r['launching_seconds']:.1f}",
        f"{r['first_launch_to_last_completed_seconds']:.1f}",
        f"{r['runs_completed_per_minute']:.1f}",
        f"{_s(r['to_completed_p50_seconds'])} / {_s(r['to_completed_p95_seconds'])}",
        f"{cpu['server']['percent_of_one_core']:.0f}",
        f"{cpu['database']['percent_of_one_core']:.0f}" if r["database"] != "sqlite" else "—",
        f"{cpu['workers']['percent_of_one_core']:.0f}",
        _load(r),
        "yes" if r["none_lost"] else "NO",
    ]


CONCURRENCY_COLUMNS = [
    "Database",
    "ACC_LAUNCH_CONCURRENCY",
    "Launches × bursts",
    "Exactly once?",
    "Errors",
    "Wall s (median)",
    "Wall s (each burst)",
    "Creations / min",
    "Launch p50 s",
    "Launch p95 s",
    "503 locked",
    "Server CPU s / burst",
    "PostgreSQL CPU s / burst",
    "Machine load (1 min)",
]


def concurrency_row(r: dict[str, Any]) -> list[str]:
    loads = [a[0] for a in r["load_average"] if a]
    return [
        r["database"],
        str(r["launch_concurrency"]),
        f"{r['launches']} × {r['bursts']}",
        "yes" if r["exactly_once"] else "NO",
        str(r["error_count"]),
        f"{r['wall_seconds']:.2f}",
        " ".join(f"{w:.2f}" for w in r["walls"]),
        f"{r['creations_per_minute']:.0f}",
        _s(r["launch_p50_seconds"], 3),
        _s(r["launch_p95_seconds"], 3),
        str(r["locked_requests"]),
        f"{r['server_cpu_seconds_per_burst']:.2f}",
        f"{r['database_cpu_seconds_per_burst']:.2f}" if r["database"] != "sqlite" else "—",
        f"{min(loads):.1f}–{max(loads):.1f}" if loads else "—",
    ]


def load_notes(args: argparse.Namespace, reduced: bool) -> list[str]:
    size = (
        f"REDUCED: {args.launches} launches over {args.minutes:g} min, not the issue's 1,000 "
        "over 10."
        if reduced
        else f"{args.launches} launches over {args.minutes:g} min (the issue's size)."
    )
    return [
        size,
        f"The launches are due at a steady rate ({args.launches / args.minutes:.0f} a minute), "
        f"spread over {args.clients} clients (one HTTP connection each, client k taking every "
        f"{args.clients}-th launch); a client whose previous launch had not returned issues its "
        "next late (the JSON says how late the latest was).",
        "Every launch: POST /api/v1/models/{model}/launch by a member of the model's project "
        "with a personal token, the trivial echo model (one routine).",
        "Launch p50/p95: from issue until the portal answered 201 with the run id. "
        "Launch → Completed: from issue until the run's end time as the server recorded it.",
        "Runs completed / min: runs Completed ÷ (first launch → last run's end).",
        "CPU: utime+stime from /proc of the Prefect server and every process under it (and of "
        "PostgreSQL's postmaster and its backends, the portal, the workers and their runs), "
        "read before the first launch and after the last run ended; CPU-seconds per minute "
        "of that window and % of one core (the machine has "
        f"{os.cpu_count()}). SQLite runs inside the server process.",
        "Machine load: the 1-minute load average sampled every 10 s while launching, mean "
        "(max); the machine was shared with other work while measuring.",
        f"Work pool concurrency raised to {args.pool_concurrency} "
        "(ACC_WORK_POOL_CONCURRENCY; shipped default 4) so it does not hide the workers' "
        "capacity; each warm worker runs at most 8 runs at once (ACC_WARM_LIMIT).",
        "ACC_LAUNCH_CONCURRENCY in the portal: "
        + os.environ.get("ACC_LAUNCH_CONCURRENCY", "as shipped (1 on SQLite, 4 on PostgreSQL)")
        + ". The portal's limits were lifted ("
        + ", ".join(f"{k}={v}" for k, v in LIMITS_LIFTED.items())
        + "). PostgreSQL: durable (fsync on), on the same machine.",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--launches", type=int, default=1000, help="launches in the load")
    parser.add_argument("--minutes", type=float, default=10.0, help="the load's duration")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="warm workers in the load")
    parser.add_argument(
        "--databases", default=",".join(DATABASES), help="sqlite, postgresql or both"
    )
    parser.add_argument(
        "--parts", default="load,workers,concurrency", help="which measurements to make"
    )
    parser.add_argument("--scaling-workers", default="1,2,4", help="worker counts to compare")
    parser.add_argument(
        "--scaling-launches", type=int, default=200, help="launches for each worker count"
    )
    parser.add_argument(
        "--scaling-databases",
        default=None,
        help="databases for the workers part (default: --databases)",
    )
    parser.add_argument(
        "--concurrency", default="1,4", help="ACC_LAUNCH_CONCURRENCY values to compare"
    )
    parser.add_argument("--burst", type=int, default=100, help="launches at once in a burst")
    parser.add_argument("--burst-rounds", type=int, default=6, help="bursts of each value")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between bursts")
    parser.add_argument(
        "--pool-concurrency",
        type=int,
        default=POOL_CONCURRENCY,
        help="the work pool's limit (ACC_WORK_POOL_CONCURRENCY) during the benchmark",
    )
    args = parser.parse_args(argv)
    args.databases = [d.strip().lower() for d in args.databases.split(",") if d.strip()]
    args.scaling_databases = (
        args.databases
        if args.scaling_databases is None
        else [d.strip().lower() for d in args.scaling_databases.split(",") if d.strip()]
    )
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    args.scaling_workers = [int(n) for n in args.scaling_workers.split(",") if n.strip()]
    args.concurrency = [int(n) for n in args.concurrency.split(",") if n.strip()]
    unknown = (set(args.databases) | set(args.scaling_databases)) - set(DATABASES)
    if unknown:
        parser.error(f"--databases: {', '.join(sorted(unknown))}: expected sqlite or postgresql")
    if args.parts - {"load", "workers", "concurrency"}:
        parser.error("--parts: expected some of load, workers, concurrency")
    if min(args.launches, args.clients, args.workers, args.scaling_launches, args.burst) < 1:
        parser.error("--launches, --clients, --workers, --scaling-launches, --burst: at least 1")
    if args.minutes <= 0 or args.burst_rounds < 1 or args.settle < 0:
        parser.error("--minutes must be above 0, --burst-rounds at least 1, --settle ≥ 0")
    if not args.scaling_workers or min(args.scaling_workers) < 1 or min(args.concurrency) < 1:
        parser.error("--scaling-workers and --concurrency: numbers of at least 1")
    return args


def run(args: argparse.Namespace, console: Console) -> LoadReport:
    reduced = args.launches < 1000 or args.minutes < 10
    title = "B17 — load through the portal: SQLite and PostgreSQL, workers, write concurrency"
    report = LoadReport(NAME, title, LOAD_COLUMNS, notes=load_notes(args, reduced))
    environment = {"ACC_WORK_POOL_CONCURRENCY": str(args.pool_concurrency)}
    skipped = []
    loads: list[dict[str, Any]] = []
    workers: list[dict[str, Any]] = []
    concurrency: list[dict[str, Any]] = []
    for database in args.databases:
        if database == "postgresql" and not postgres_available():
            skipped.append("postgresql: PostgreSQL is not installed on this machine")
            continue
        parts = set(args.parts)
        if database not in args.scaling_databases:
            parts.discard("workers")
        if not parts:
            continue
        console.rule(f"{database}")
        with site(database, args.workers, environment) as running:
            if "load" in parts:
                loads.append(steady_load(running, args, console))
            if "workers" in parts:
                workers += by_workers(running, args, console)
            if "concurrency" in parts:
                concurrency += write_concurrency(running, args, console)
        fill(report, args, loads, workers, concurrency, skipped)
        report.write(args.out)  # what is measured so far stays if a later database fails
    fill(report, args, loads, workers, concurrency, skipped)
    return report


def fill(
    report: LoadReport,
    args: argparse.Namespace,
    loads: list[dict[str, Any]],
    workers: list[dict[str, Any]],
    concurrency: list[dict[str, Any]],
    skipped: list[str],
) -> None:
    """The report's tables, data and verdict from what was measured."""
    reduced = args.launches < 1000 or args.minutes < 10
    report.rows = [load_row(r) for r in loads]
    chosen = better_concurrency(concurrency)
    report.sections = [
        Section(
            "Runs per minute by warm workers",
            WORKER_COLUMNS,
            [worker_row(r) for r in workers],
            [
                f"{args.scaling_launches} launches from {args.clients} clients as fast as the "
                "portal answers them (each client's next as soon as its last returned), after "
                "an uncounted warm-up of two runs per worker; Runs / min = launches ÷ (first "
                "launch → last run's end). The trivial echo model.",
            ],
        ),
        Section(
            "Launch write concurrency (ACC_LAUNCH_CONCURRENCY in the portal)",
            CONCURRENCY_COLUMNS,
            [concurrency_row(r) for r in concurrency],
            [
                f"Bursts of {args.burst} launches at once through a portal started with each "
                "value, the values taking turns (ABBA …), "
                f"{args.settle:g} s apart; the workers stopped so only creation is timed.",
                "503 locked: requests the Prefect server refused because SQLite was locked.",
                "Fastest (median wall) per database: "
                + (
                    ", ".join(
                        f"{db}: {c['fastest']}"
                        + (" (within 10 % of another value)" if c["tie_within_10_percent"] else "")
                        for db, c in chosen.items()
                    )
                    or "—"
                )
                + ".",
            ],
        ),
    ]
    report.data = {
        "config": {
            "launches": args.launches,
            "minutes": args.minutes,
            "clients": args.clients,
            "workers": args.workers,
            "reduced": reduced,
            "databases": args.databases,
            "parts": sorted(args.parts),
            "scaling_workers": args.scaling_workers,
            "scaling_launches": args.scaling_launches,
            "scaling_databases": args.scaling_databases,
            "concurrency": args.concurrency,
            "burst": args.burst,
            "burst_rounds": args.burst_rounds,
            "settle_seconds": args.settle,
            "pool_concurrency": args.pool_concurrency,
            "launch_concurrency_in_load": os.environ.get("ACC_LAUNCH_CONCURRENCY"),
            "limits_lifted": LIMITS_LIFTED,
            "conf": CONF,
        },
        "skipped": skipped,
        "load": loads,
        "workers": workers,
        "concurrency": concurrency,
        "concurrency_choice": chosen,
    }
    report.notes = load_notes(args, reduced)
    if skipped:
        report.notes.append("Not measured: " + "; ".join(skipped) + ".")
    report.met = all(r["none_lost"] for r in loads + workers) and all(
        r["exactly_once"] for r in concurrency
    )


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
