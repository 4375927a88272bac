"""B8: launch latency through the portal against the in-process ``Accelerator.launch``.

A real embedded platform (Prefect server on SQLite, as ``acc up`` starts it) hosts
the trivial ``echo`` model; its worker is stopped, so only the creation of runs is
measured. The portal serves it on a loopback port, with its limits lifted (see
:data:`~benchmarks.portal_fixture.LIMITS_LIFTED`). One member of the model's project,
holding a personal token, launches it, one launch after the other, in four ways (and
asks who they are, as a reference):

- ``acc`` (the baseline): ``Accelerator.launch`` in this process, straight to the
  Prefect API, the user's token checked on every call — what the portal itself does
  for each request;
- ``portal-http``: ``POST /api/v1/models/{model}/launch`` with ``{"conf": …}`` and
  ``Authorization: Bearer <token>``, from one httpx client keeping one connection alive;
- ``python-http``: ``Accelerator.connect(url=portal, token=…).launch``, the user's
  Python client over the portal (it also sends an ``Idempotency-Key``);
- ``portal-rate-limited``: a reference: the same request through a second portal
  on the same platform whose per-token rate limit is as shipped (its other limits
  lifted) — what the rate limit costs a request;
- ``portal-me``: a reference: ``GET /api/v1/me`` on the same connection as
  ``portal-http`` — the HTTP hop and the token check alone, no launch.

What separates ``portal-http`` from ``acc`` is the HTTP hop and what the portal
does per request besides the launch. The sides are interleaved, the order reversed
every round (ABCDE EDCBA …), after untimed warm-up rounds. The target is a ratio of
medians ``portal-http / acc`` of at most 1.15.

Run it:

    python -m benchmarks.portal_latency --launches 200

Results land in ``benchmarks/results/portal_latency.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser
from benchmarks.platform_fixture import CONF
from benchmarks.portal_fixture import (
    API,
    LIMITS_LIFTED,
    PortalBench,
    cpu_seconds,
    given_or_started,
    rate_limit_as_shipped,
    rate_limited_portal,
)

NAME = "portal_latency"
TARGET_RATIO = 1.15
SIDES = ("acc", "portal-http", "python-http", "portal-rate-limited", "portal-me")
BASELINE = "acc"
TARGETED = ("portal-http",)
WHAT = {
    "acc": "Accelerator.launch in-process (user token, straight to Prefect)",
    "portal-http": "POST /api/v1/models/{model}/launch (httpx, one keep-alive connection)",
    "python-http": "Accelerator.connect(url=portal, token=…).launch (Python client over HTTP)",
    "portal-rate-limited": "reference: the same POST through a second portal whose "
    "per-token rate limit is as shipped",
    "portal-me": "reference: GET /api/v1/me on the same connection (the HTTP hop and the "
    "token check, no launch)",
}


@dataclass(frozen=True)
class Side:
    """One call (returning the run id it made, if any), and the pid of the portal it goes
    through (the in-process side: the portal, idle meanwhile)."""

    call: Callable[[], str | None]
    portal: int


def launchers(bench: PortalBench, stack: ExitStack) -> dict[str, Side]:
    """One call of each side; clients (and the rate-limited portal) opened on ``stack``."""
    import httpx

    model = bench.model
    in_process = stack.enter_context(bench.in_process())
    over_http = stack.enter_context(bench.over_http())
    one_connection = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    http = stack.enter_context(bench.http(timeout=60, limits=one_connection))
    limited_pid, limited_url = stack.enter_context(rate_limited_portal(bench))
    limited = stack.enter_context(
        httpx.Client(
            base_url=limited_url + API, headers=bench.headers, timeout=60, limits=one_connection
        )
    )

    def post(client: httpx.Client) -> str:
        response = client.post(f"/models/{model}/launch", json={"conf": CONF})
        if response.status_code != 201:
            raise RuntimeError(f"launch through the portal: {response.status_code} {response.text}")
        return str(response.json()["id"])

    def me() -> None:
        response = http.get("/me")
        if response.status_code != 200:
            raise RuntimeError(f"GET /me: {response.status_code} {response.text}")

    return {
        "acc": Side(lambda: str(in_process.launch(model, conf=CONF).id), bench.pid),
        "portal-http": Side(lambda: post(http), bench.pid),
        "python-http": Side(lambda: str(over_http.launch(model, conf=CONF).id), bench.pid),
        "portal-rate-limited": Side(lambda: post(limited), limited_pid),
        "portal-me": Side(me, bench.pid),
    }


def order(round_: int) -> tuple[str, ...]:
    """ABCDE, EDCBA, ABCDE, …: interleaved, reversing the order every round."""
    return SIDES if round_ % 2 == 0 else SIDES[::-1]


def measure(
    calls: dict[str, Side],
    launches: int,
    warmup: int,
    progress: Progress,
) -> dict[str, Any]:
    """Every side's latencies (s), the portal's CPU seconds spent on each side's timed
    calls, and every run id returned."""
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    portal_cpu = dict.fromkeys(SIDES, 0.0)
    ids: list[str] = []
    task = progress.add_task("warm-up", total=(launches + warmup) * len(SIDES))
    for round_ in range(warmup + launches):
        if round_ == warmup:
            progress.update(task, description="launching")
        for side in order(round_):
            portal = calls[side].portal
            cpu, start = cpu_seconds(portal), time.perf_counter()
            run_id = calls[side].call()
            elapsed, used = time.perf_counter() - start, cpu_seconds(portal) - cpu
            if run_id is not None:
                ids.append(run_id)
            if round_ >= warmup:
                seconds[side].append(elapsed)
                portal_cpu[side] += used
            progress.advance(task)
    return {"seconds": seconds, "portal_cpu": portal_cpu, "ids": ids}


def result(side: str, seconds: dict[str, list[float]], portal_cpu: float) -> dict[str, Any]:
    ours, base = seconds[side], seconds[BASELINE]
    ratio = median(ours) / median(base)
    targeted = side in TARGETED
    return {
        "side": side,
        "what": WHAT[side],
        "baseline": WHAT[BASELINE] if side != BASELINE else "—",
        "launches": len(ours),
        "ms": [round(s * 1000, 2) for s in ours],
        "median_ms": round(median(ours) * 1000, 2),
        "p95_ms": round(p95(ours) * 1000, 2),
        "mean_ms": round(sum(ours) / len(ours) * 1000, 2),
        "ratio": round(ratio, 3),
        "p95_ratio": round(p95(ours) / p95(base), 3),
        "portal_cpu_ms_per_call": round(portal_cpu / len(ours) * 1000, 1),
        "target": TARGET_RATIO if targeted else None,
        "met": ratio <= TARGET_RATIO if targeted else None,
    }


COLUMNS = [
    "What",
    "Baseline",
    "Calls",
    "Median ms",
    "p95 ms",
    "Ratio (medians)",
    "p95 ratio",
    "Portal CPU ms/call",
    "Target",
    "Met?",
]


def table_row(r: dict[str, Any]) -> list[str]:
    return [
        r["what"],
        r["baseline"],
        str(r["launches"]),
        f"{r['median_ms']:.1f}",
        f"{r['p95_ms']:.1f}",
        f"{r['ratio']:.3f}",
        f"{r['p95_ratio']:.3f}",
        f"{r['portal_cpu_ms_per_call']:.1f}",
        f"≤ {r['target']:.2f}" if r["target"] is not None else "—",
        "—" if r["met"] is None else "yes" if r["met"] else "NO",
    ]


NOTES = [
    "Latency = wall time of one synchronous call, from the caller's thread, until the "
    "flow run exists (the worker is stopped: runs stay Scheduled, creation only).",
    f"Ratio = median of the side / median of the in-process launch; target ≤ {TARGET_RATIO} "
    "for the launch through the portal's HTTP API (the other rows are references).",
    "All sides act for the same user (a member of the model's project, with a personal "
    "token), on the same server and model; the in-process client checks the token on every "
    "call, as the portal does for every request.",
    "The portal answers a launch with the run's record (201), which it reads back from "
    "Prefect after creating the run; the in-process launch returns a handle without reading.",
    "portal-me is no launch: its time is what any request through the portal costs (the "
    "HTTP hop, the portal's routing, reading who the token belongs to).",
    "Portal CPU ms/call: CPU time of the portal process a side goes through over its timed "
    "calls, divided by their number (the in-process row: what the idle portal spends "
    "meanwhile).",
    "The portal's limits were lifted for the benchmark ("
    + ", ".join(f"{k}={v}" for k, v in LIMITS_LIFTED.items())
    + "): hundreds of launches a minute by one token are what they refuse. The "
    "portal-rate-limited row goes through a second portal with the per-token rate limit as "
    "shipped ("
    + (", ".join(f"{k}={v}" for k, v in rate_limit_as_shipped().items()) or "none in this version")
    + "), the cap on a user's waiting runs still lifted (the runs here never start).",
    "Sides interleaved, order reversed every round (ABCDE EDCBA …), after untimed warm-up rounds.",
    "Prefect server on SQLite (the embedded default), portal (uvicorn, one process) and "
    "client on the same machine.",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--launches", type=int, default=200, help="timed launches per side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    args = parser.parse_args(argv)
    if args.launches < 1 or args.warmup < 0:
        parser.error("--launches must be at least 1, --warmup at least 0")
    return args


def run(args: argparse.Namespace, console: Console, given: PortalBench | None = None) -> Report:
    report = Report(NAME, "B8 — launch latency through the portal vs in-process", COLUMNS)
    report.notes = list(NOTES)
    load_before = load_average()
    progress = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress, given_or_started(given) as bench, ExitStack() as clients:
        task = progress.add_task("starting the platform", total=None)
        before = bench.bench.flow_run_ids()
        calls = launchers(bench, clients)
        progress.remove_task(task)
        measured = measure(calls, args.launches, args.warmup, progress)
        created = bench.bench.flow_run_ids() - before
    ids = measured["ids"]
    results = [result(side, measured["seconds"], measured["portal_cpu"][side]) for side in SIDES]
    report.rows = [table_row(r) for r in results]
    report.data = {
        "config": {
            "launches": args.launches,
            "warmup": args.warmup,
            "target_ratio": TARGET_RATIO,
            "order": "interleaved, reversed every round: ABCDE EDCBA ...",
            "limits_lifted": LIMITS_LIFTED,
            "rate_limit_as_shipped": rate_limit_as_shipped(),
            "conf": CONF,
        },
        "flow_runs_created": len(created),
        "returned_ids": len(ids),
        "exactly_once": len(set(ids)) == len(ids) and set(ids) == created,
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
    }
    report.met = report.data["exactly_once"] and all(
        r["met"] for r in results if r["met"] is not None
    )
    return report


def main(argv: Sequence[str] | None = None, platform: PortalBench | None = None) -> int:
    """The benchmark's command line; ``platform``: a running one to measure on (the smoke
    tests share one), else one is started and stopped."""
    return command(argv, parse_args, lambda args, console: run(args, console, platform))


if __name__ == "__main__":
    raise SystemExit(main())
