"""B6: a burst of simultaneous launches on the embedded platform (Prefect server on SQLite).

A real embedded platform, as ``acc up`` starts it, hosts a trivial ``echo`` model;
its worker is stopped, so the runs stay ``Scheduled`` and only their creation is
timed. On that one server, one side after the other:

- ``raw-sequential``: ``create_flow_run_from_deployment`` N times, one after another,
  on Prefect's own client (what a user of raw Prefect has);
- ``raw-gather``: the same N calls all at once (``asyncio.gather`` on that client);
- ``raw-transport``: a reference: ``raw-sequential`` on a Prefect client with the
  product's HTTP transport (``transport.prefect_client``), which tries a write the
  server refused as busy again within milliseconds, where Prefect's own client
  waits 2 s, then 4 s — the same client a launch uses, so only the product's work
  separates it from the launch sides;
- ``acc-threads``: N ``Accelerator.launch`` calls issued at once from N threads
  through one synchronous client (what N users of one notebook kernel or one
  catalog process amount to);
- ``acc-gather``: N ``AsyncAccelerator.launch`` calls at once (``asyncio.gather``).

The raw sides send what a launch sends (parameters, name, tags, captured from a
real launch). Every burst is checked: every call
returned a run id, the ids are distinct, and the flow runs of the deployment
grew by exactly those ids (none lost, none duplicated). The target for ours:
all N created exactly once, in no more wall time than raw sequential creation.

One burst takes a few seconds, and on this 2-core machine the same burst takes
anywhere from 2.5 to 4 s from one round to the next (the server's database
grows, its background services wake and take SQLite's lock), and raw Prefect's
from 2.5 to 15 s (a few writes refused as busy cost 2 s each). So
``raw-sequential``, ``raw-transport``, ``acc-threads`` and ``acc-gather`` take
turns for nine rounds, the order reversed every round (ABCD DCBA …), and are
compared by their median wall time (with five rounds, one side's median could
still land 10% either way of another's). ``raw-gather`` is a reference without a
target; it runs once, last, since its storm of refused writes would disturb
whatever ran after it.

Run it:

    python -m benchmarks.launch_burst --launches 100 --rounds 9

Results land in ``benchmarks/results/launch_burst.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from accelerator_prefect.client import LAUNCH_CONCURRENCY
from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser
from benchmarks.launch_latency import capture_payload
from benchmarks.platform_fixture import CONF, BenchPlatform, bench_platform

NAME = "launch_burst"
SIDES = ("raw-sequential", "raw-gather", "raw-transport", "acc-threads", "acc-gather")
# These take turns, round after round; raw-gather runs once, last.
ROUNDED = ("raw-sequential", "raw-transport", "acc-threads", "acc-gather")
BASELINE = "raw-sequential"
WHAT = {
    "raw-sequential": "create_flow_run_from_deployment × N, one after another",
    "raw-gather": "create_flow_run_from_deployment × N at once (asyncio.gather)",
    "raw-transport": "reference: create_flow_run_from_deployment × N, one after another, "
    "busy writes retried within ms (the product's transport)",
    "acc-threads": "Accelerator.launch × N at once from N threads, one sync client",
    "acc-gather": "AsyncAccelerator.launch × N at once (asyncio.gather)",
}

# One call's outcome: the run id and its latency, or what it raised.
Outcome = tuple[str, float] | BaseException


@dataclass(frozen=True)
class Burst:
    """What one side did: the outcome of every call and the wall time of them all."""

    outcomes: list[Outcome]
    wall_seconds: float


async def _timed(call: Awaitable[Any], run_id: Callable[[Any], object]) -> tuple[str, float]:
    """The run id ``call`` returns (read by ``run_id``) and how long it took."""
    start = time.perf_counter()
    result = await call
    return str(run_id(result)), time.perf_counter() - start


def _flow_run_id(flow_run: Any) -> object:
    return flow_run.id


def _launch_id(launched: tuple[str, str, str | None]) -> object:
    return launched[0]


def _wall(action: Callable[[], list[Outcome]]) -> Burst:
    start = time.perf_counter()
    outcomes = action()
    return Burst(outcomes, time.perf_counter() - start)


def sides(bench: BenchPlatform, n: int, stock: Any) -> dict[str, Callable[[], Burst]]:
    """How each side issues its N calls; ``stock``: Prefect's own client, on ``bench.acc``'s
    event loop."""
    payload = capture_payload(bench)
    deployment_id = payload.pop("deployment_id")
    acc, core, model = bench.acc, bench.acc._core, bench.model

    def create(client: Any) -> Awaitable[Any]:
        return client.create_flow_run_from_deployment(deployment_id, **payload)

    async def raw_sequential(client: Any) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for _ in range(n):
            try:
                outcomes.append(await _timed(create(client), _flow_run_id))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def raw_gather(client: Any) -> list[Outcome]:
        calls = (_timed(create(client), _flow_run_id) for _ in range(n))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    async def acc_gather() -> list[Outcome]:
        calls = (_timed(core.launch(model, CONF), _launch_id) for _ in range(n))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    return {
        "raw-sequential": lambda: _wall(lambda: acc._run(raw_sequential(stock))),
        "raw-gather": lambda: _wall(lambda: acc._run(raw_gather(stock))),
        "raw-transport": lambda: _wall(lambda: acc._call(raw_sequential)),
        "acc-threads": lambda: _threads(lambda: acc.launch(model, conf=CONF).id, n),
        "acc-gather": lambda: _wall(lambda: acc._run(acc_gather())),
    }


async def _stock_client(api_url: str, auth_string: str) -> Any:
    """Prefect's own client, as a user of raw Prefect opens it (its own HTTP transport) on a
    server locked with ``auth_string``."""
    from prefect.client.orchestration import PrefectClient

    client = PrefectClient(api_url, auth_string=auth_string)
    await client.__aenter__()
    return client


def _threads(launch: Callable[[], object], n: int) -> Burst:
    """``launch`` from ``n`` threads released at the same moment."""
    ready = threading.Barrier(n + 1)

    def one() -> Outcome:
        ready.wait()
        start = time.perf_counter()
        try:
            run_id = launch()
        except Exception as exc:
            return exc
        return str(run_id), time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(one) for _ in range(n)]
        ready.wait()
        start = time.perf_counter()
        outcomes = [f.result() for f in futures]
        wall = time.perf_counter() - start
    return Burst(outcomes, wall)


def measure(bench: BenchPlatform, burst: Callable[[], Burst]) -> dict[str, Any]:
    """One burst, checked against the flow runs the server holds afterwards."""
    before, locked_before = bench.flow_run_ids(), bench.locked_requests()
    done = burst()
    created = bench.flow_run_ids() - before
    ids = [o[0] for o in done.outcomes if isinstance(o, tuple)]
    n = len(done.outcomes)
    return {
        "launches": n,
        "returned_ids": len(ids),
        "distinct_ids": len(set(ids)),
        "flow_runs_created": len(created),
        "exactly_once": len(ids) == n and set(ids) == created and len(created) == n,
        "errors": [
            f"{type(o).__name__}: {o}" for o in done.outcomes if isinstance(o, BaseException)
        ],
        "locked_requests": bench.locked_requests() - locked_before,
        "wall_seconds": round(done.wall_seconds, 3),
        "latency_seconds": [round(o[1], 4) for o in done.outcomes if isinstance(o, tuple)],
    }


def summarize(side: str, bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """One side over its bursts: each burst's checks, the median wall time, pooled latencies."""
    walls = [b["wall_seconds"] for b in bursts]
    latencies = [s for b in bursts for s in b["latency_seconds"]]
    errors = [e for b in bursts for e in b["errors"]]
    wall = median(walls)
    return {
        "side": side,
        "what": WHAT[side],
        "bursts": len(bursts),
        "launches": bursts[0]["launches"],
        "returned_ids": min(b["returned_ids"] for b in bursts),
        "distinct_ids": min(b["distinct_ids"] for b in bursts),
        "flow_runs_created": min(b["flow_runs_created"] for b in bursts),
        "exactly_once": all(b["exactly_once"] for b in bursts),
        "errors": errors[:10],
        "error_count": len(errors),
        "locked_requests": sum(b["locked_requests"] for b in bursts),
        "wall_seconds": round(wall, 3),
        "walls": walls,
        "runs_per_minute": round(bursts[0]["launches"] / wall * 60, 1),
        "latency_seconds": latencies,
        "median_latency_seconds": round(median(latencies), 3) if latencies else None,
        "p95_latency_seconds": round(p95(latencies), 3) if latencies else None,
    }


def order(round_: int) -> tuple[str, ...]:
    """ABCD, DCBA, ABCD, …: the sides with a target and the raw ones take turns."""
    return ROUNDED if round_ % 2 == 0 else ROUNDED[::-1]


def judge(results: list[dict[str, Any]]) -> None:
    """Ours: every launch created exactly one run, in no more wall time than raw sequential."""
    baseline = next(r for r in results if r["side"] == BASELINE)["wall_seconds"]
    for r in results:
        r["wall_ratio"] = round(r["wall_seconds"] / baseline, 3)
        if r["side"].startswith("acc"):
            r["baseline"] = WHAT[BASELINE]
            r["met"] = r["exactly_once"] and r["wall_seconds"] <= baseline
        else:
            r["baseline"] = "—" if r["side"] == BASELINE else WHAT[BASELINE]
            r["met"] = None


COLUMNS = [
    "What",
    "Baseline",
    "Launches × bursts",
    "Ids returned / distinct",
    "Flow runs created",
    "503 locked",
    "Wall s (median)",
    "Wall s (each burst)",
    "Runs/min",
    "Median s",
    "p95 s",
    "Wall / raw sequential",
    "Target",
    "Met?",
]


def table_row(r: dict[str, Any]) -> list[str]:
    ours = r["side"].startswith("acc")
    return [
        r["what"],
        r["baseline"],
        f"{r['launches']} × {r['bursts']}",
        f"{r['returned_ids']} / {r['distinct_ids']}",
        str(r["flow_runs_created"]),
        str(r["locked_requests"]),
        f"{r['wall_seconds']:.2f}",
        " ".join(f"{w:.2f}" for w in r["walls"]),
        f"{r['runs_per_minute']:.0f}",
        f"{r['median_latency_seconds']:.3f}" if r["median_latency_seconds"] is not None else "—",
        f"{r['p95_latency_seconds']:.3f}" if r["p95_latency_seconds"] is not None else "—",
        f"{r['wall_ratio']:.2f}",
        "each once, wall ≤ raw sequential" if ours else "—",
        ("yes" if r["met"] else "NO") if ours else "—",
    ]


def notes(launch_concurrency: int) -> list[str]:
    return [
        "Wall s: from the moment all N calls are released until the last returns, the "
        "median over the side's bursts (each burst's is listed); Runs/min = N / median wall.",
        "Bursts: raw-sequential, raw-transport, acc-threads and acc-gather take turns, the "
        "order reversed every round (ABCD DCBA …); raw-gather runs once, last.",
        "Median/p95 s: latency of one call, from its issue until it returned, over all bursts.",
        "Ids returned / distinct, flow runs created (the least over the bursts): every call "
        "must return an id, the ids distinct, and the deployment's flow runs must grow by "
        "exactly those ids, in every burst.",
        "503 locked: requests the server refused because SQLite was locked, over all bursts "
        "(it logs each). Prefect's own client (raw-sequential, raw-gather) tries them again "
        "after 2, 4, 8 … s; the product's transport (raw-transport and the launches) after "
        "10 ms, doubling.",
        f"AsyncAccelerator lets at most {launch_concurrency} flow-run creations of one client "
        "run at once (LAUNCH_CONCURRENCY); raw-gather is not bounded (one Prefect client: "
        "at most 16 HTTP connections).",
        "The worker is stopped: runs stay Scheduled, only creation is timed. Bursts run one "
        "after another on one server, with a pause between them.",
        "The benchmark's server does not mark runs Late (no worker would start them; "
        "marking hundreds of runs would load the server during the measurement).",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser("launch_burst", __doc__)
    parser.add_argument("--launches", type=int, default=100, help="simultaneous launches")
    parser.add_argument(
        "--rounds", type=int, default=9, help="bursts of each side but raw-gather (run once)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds to let the server finish its background work between sides",
    )
    args = parser.parse_args(argv)
    if args.launches < 1 or args.rounds < 1 or args.settle < 0:
        parser.error("--launches and --rounds must be at least 1, --settle at least 0")
    return args


def run(args: argparse.Namespace, console: Console) -> Report:
    title = "B6 — simultaneous launches on the embedded SQLite platform"
    report = Report(NAME, title, COLUMNS, notes=notes(LAUNCH_CONCURRENCY))
    load_before = load_average()
    bursts: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    schedule = [side for round_ in range(args.rounds) for side in order(round_)] + ["raw-gather"]
    progress = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("starting the platform", total=len(schedule))
        with bench_platform() as bench:
            stock = bench.acc._run(_stock_client(bench.info.api_url, bench.auth_string))
            try:
                calls = sides(bench, args.launches, stock)
                for side in schedule:
                    time.sleep(args.settle)
                    progress.update(task, description=side)
                    bursts[side].append(measure(bench, calls[side]))
                    progress.advance(task)
            finally:
                bench.acc._run(stock.__aexit__(None, None, None))
            states = bench.flow_run_states()
    results = [summarize(side, bursts[side]) for side in SIDES]
    judge(results)
    report.rows = [table_row(r) for r in results]
    report.data = {
        "config": {
            "launches": args.launches,
            "rounds": args.rounds,
            "settle_seconds": args.settle,
            "launch_concurrency": LAUNCH_CONCURRENCY,
            "order": schedule,
            "conf": CONF,
        },
        "flow_run_states": states,
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
    }
    report.met = all(r["met"] for r in results if r["met"] is not None)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
