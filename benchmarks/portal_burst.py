"""B9: a burst of simultaneous launches through the portal against the same burst in-process.

A real embedded platform (Prefect server on SQLite, as ``acc up`` starts it) hosts
the trivial ``echo`` model; its worker is stopped, so the runs stay ``Scheduled`` and
only their creation is timed. The portal serves it on a loopback port, with its
limits lifted (see :data:`~benchmarks.portal_fixture.LIMITS_LIFTED`). One member of
the model's project, holding a personal token, launches it N times at once:

- ``acc-gather`` (the baseline, B6's in-process burst): N ``AsyncAccelerator.launch``
  calls at once (``asyncio.gather``) on the user's in-process client, straight to the
  Prefect API;
- ``portal-gather``: N ``POST /api/v1/models/{model}/launch`` at once from one
  ``httpx.AsyncClient`` (``asyncio.gather``; a new client per burst, so its N
  connections are opened within the burst, as N users arriving would);
- ``python-http-gather``: a reference: N launches at once through the user's Python
  client over the portal (``Accelerator.connect(url=…, token=…)``'s async service).

Every burst is checked: every call returned a run id, the ids are distinct, and the
deployment's flow runs grew by exactly those ids (none lost, none duplicated). The
sides take turns, the order reversed every round (ABC CBA …), a pause between bursts,
and are compared by their median wall time. The target: every launch through the
portal created exactly once, in at most 1.2 × the in-process burst's wall time.

Run it:

    python -m benchmarks.portal_burst --launches 100 --rounds 9

Results land in ``benchmarks/results/portal_burst.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from accelerator_prefect.client import LAUNCH_CONCURRENCY
from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser
from benchmarks.launch_burst import Burst, Outcome, measure
from benchmarks.platform_fixture import CONF
from benchmarks.portal_fixture import LIMITS_LIFTED, PortalBench, given_or_started

NAME = "portal_burst"
TARGET_RATIO = 1.2
SIDES = ("acc-gather", "portal-gather", "python-http-gather")
BASELINE = "acc-gather"
TARGETED = ("portal-gather",)
WHAT = {
    "acc-gather": "AsyncAccelerator.launch × N at once in-process (user token; B6's burst)",
    "portal-gather": "POST /api/v1/models/{model}/launch × N at once (httpx.AsyncClient)",
    "python-http-gather": "reference: the Python client over the portal, launch × N at once",
}


async def _gather(one: Callable[[], Awaitable[str]], n: int) -> Burst:
    """``n`` calls of ``one`` at once; each call's run id and latency, and the wall time."""

    async def timed() -> tuple[str, float]:
        start = time.perf_counter()
        run_id = await one()
        return run_id, time.perf_counter() - start

    start = time.perf_counter()
    outcomes: list[Outcome] = list(
        await asyncio.gather(*(timed() for _ in range(n)), return_exceptions=True)
    )
    return Burst(outcomes, time.perf_counter() - start)


def sides(bench: PortalBench, n: int, stack: ExitStack) -> dict[str, Callable[[], Burst]]:
    """How each side issues its N launches at once; clients opened on ``stack``."""
    import httpx

    model = bench.model
    in_process = stack.enter_context(bench.in_process())
    over_http = stack.enter_context(bench.over_http())

    async def in_process_one() -> str:
        run_id, _, _ = await in_process._core.launch(model, CONF)
        return str(run_id)

    async def python_http_one() -> str:
        run_id, _, _ = await over_http._core.launch(model, CONF)
        return str(run_id)

    async def portal_burst() -> Burst:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with bench.async_http(timeout=300, limits=limits) as http:

            async def one() -> str:
                response = await http.post(f"/models/{model}/launch", json={"conf": CONF})
                if response.status_code != 201:
                    raise RuntimeError(f"{response.status_code} {response.text}")
                return str(response.json()["id"])

            return await _gather(one, n)

    return {
        "acc-gather": lambda: in_process._run(_gather(in_process_one, n)),
        "portal-gather": lambda: asyncio.run(portal_burst()),
        "python-http-gather": lambda: over_http._run(_gather(python_http_one, n)),
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


def judge(results: list[dict[str, Any]]) -> None:
    """The portal's burst: every launch created exactly once, in at most 1.2 × the
    in-process burst's wall time."""
    baseline = next(r for r in results if r["side"] == BASELINE)["wall_seconds"]
    for r in results:
        r["wall_ratio"] = round(r["wall_seconds"] / baseline, 3)
        r["baseline"] = "—" if r["side"] == BASELINE else WHAT[BASELINE]
        targeted = r["side"] in TARGETED
        r["target"] = TARGET_RATIO if targeted else None
        r["met"] = (r["exactly_once"] and r["wall_ratio"] <= TARGET_RATIO) if targeted else None


def order(round_: int) -> tuple[str, ...]:
    """ABC, CBA, ABC, …: the sides take turns, the order reversed every round."""
    return SIDES if round_ % 2 == 0 else SIDES[::-1]


COLUMNS = [
    "What",
    "Baseline",
    "Launches × bursts",
    "Ids returned / distinct",
    "Flow runs created",
    "Errors",
    "503 locked",
    "Wall s (median)",
    "Wall s (each burst)",
    "Runs/min",
    "Median s",
    "p95 s",
    "Wall / in-process",
    "Target",
    "Met?",
]


def table_row(r: dict[str, Any]) -> list[str]:
    targeted = r["target"] is not None
    return [
        r["what"],
        r["baseline"],
        f"{r['launches']} × {r['bursts']}",
        f"{r['returned_ids']} / {r['distinct_ids']}",
        str(r["flow_runs_created"]),
        str(r["error_count"]),
        str(r["locked_requests"]),
        f"{r['wall_seconds']:.2f}",
        " ".join(f"{w:.2f}" for w in r["walls"]),
        f"{r['runs_per_minute']:.0f}",
        f"{r['median_latency_seconds']:.3f}" if r["median_latency_seconds"] is not None else "—",
        f"{r['p95_latency_seconds']:.3f}" if r["p95_latency_seconds"] is not None else "—",
        f"{r['wall_ratio']:.2f}",
        f"each once, wall ≤ {r['target']:.1f} × in-process" if targeted else "—",
        ("yes" if r["met"] else "NO") if targeted else "—",
    ]


def notes(launch_concurrency: int) -> list[str]:
    return [
        "Wall s: from the moment all N calls are issued until the last returns, the median "
        "over the side's bursts (each burst's is listed); Runs/min = N / median wall.",
        "The sides take turns, the order reversed every round (ABC CBA …), with a pause "
        "between bursts. All act for the same user (a member of the model's project, with "
        "a personal token), on the same server and model.",
        "Median/p95 s: latency of one call, from its issue until it returned, over all bursts.",
        "Ids returned / distinct, flow runs created (the least over the bursts): every call "
        "must return an id, the ids distinct, and the deployment's flow runs must grow by "
        "exactly those ids, in every burst.",
        "503 locked: requests the Prefect server refused because SQLite was locked, over all "
        "bursts (retried by the product's transport within milliseconds).",
        f"One client (in-process, or the portal's shared one) lets at most {launch_concurrency} "
        "flow-run creations run at once (LAUNCH_CONCURRENCY); the portal serves every request "
        "through one shared Prefect client, so its N requests queue there as the in-process "
        "burst does.",
        "portal-gather opens a new httpx.AsyncClient per burst (up to N connections, opened "
        "within the burst); the Python client over HTTP keeps its connections between bursts "
        "and sends an Idempotency-Key with every launch.",
        "The portal's limits were lifted for the benchmark ("
        + ", ".join(f"{k}={v}" for k, v in LIMITS_LIFTED.items())
        + "): a burst of N launches by one token is what they refuse.",
        "The worker is stopped: runs stay Scheduled, only creation is timed; the benchmark's "
        "server does not mark runs Late.",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--launches", type=int, default=100, help="simultaneous launches")
    parser.add_argument("--rounds", type=int, default=9, help="bursts of each side")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds to let the server finish its background work between bursts",
    )
    args = parser.parse_args(argv)
    if args.launches < 1 or args.rounds < 1 or args.settle < 0:
        parser.error("--launches and --rounds must be at least 1, --settle at least 0")
    return args


def run(args: argparse.Namespace, console: Console, given: PortalBench | None = None) -> Report:
    title = "B9 — simultaneous launches through the portal vs in-process"
    report = Report(NAME, title, COLUMNS, notes=notes(LAUNCH_CONCURRENCY))
    load_before = load_average()
    bursts: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    schedule = [side for round_ in range(args.rounds) for side in order(round_)]
    progress = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress, given_or_started(given) as bench, ExitStack() as clients:
        task = progress.add_task("starting the platform", total=len(schedule))
        calls = sides(bench, args.launches, clients)
        for side in schedule:
            time.sleep(args.settle)
            progress.update(task, description=side)
            bursts[side].append(measure(bench.bench, calls[side]))
            progress.advance(task)
        states = bench.bench.flow_run_states()
    results = [summarize(side, bursts[side]) for side in SIDES]
    judge(results)
    report.rows = [table_row(r) for r in results]
    report.data = {
        "config": {
            "launches": args.launches,
            "rounds": args.rounds,
            "settle_seconds": args.settle,
            "launch_concurrency": LAUNCH_CONCURRENCY,
            "target_ratio": TARGET_RATIO,
            "order": schedule,
            "limits_lifted": LIMITS_LIFTED,
            "conf": CONF,
        },
        "flow_run_states": states,
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
    }
    report.met = all(r["met"] for r in results if r["met"] is not None)
    return report


def main(argv: Sequence[str] | None = None, platform: PortalBench | None = None) -> int:
    """The benchmark's command line; ``platform``: a running one to measure on (the smoke
    tests share one), else one is started and stopped."""
    return command(argv, parse_args, lambda args, console: run(args, console, platform))


if __name__ == "__main__":
    raise SystemExit(main())
