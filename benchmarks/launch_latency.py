"""B1: ``Accelerator.launch`` latency against Prefect's ``create_flow_run_from_deployment``.

A real embedded platform (Prefect server on SQLite, as ``acc up`` starts it) hosts
a trivial ``echo`` model; its worker is stopped, so only the creation of runs is
measured. Each round times, one launch after the other:

- ``acc``: ``Accelerator.launch`` — the synchronous client users call — acting as
  the local operator through its token, as ``Accelerator.connect()`` does on the
  machine that ran ``acc up`` (the token is checked on every call);
- ``acc-trusted``: the same call by a client for a trusted user (no token), to
  show what the token check costs;
- ``raw``: ``create_flow_run_from_deployment`` on the same Prefect client, through
  the same background event loop, with exactly the deployment id, parameters,
  name and tags a launch sends (captured from a real launch);
- ``raw-read``: a reference, no target: Prefect's ``read_deployments`` of the
  model's versions, then the same creation — the least any launcher must do that
  checks a model's current access rules and schema before creating its run;
- ``raw-checked``: a reference, no target: ``read_variable_by_name`` (a record of
  who is asking) and ``read_deployments`` of the model at once, then the same
  creation — the least a launcher must do that also checks, on every call, that
  whoever asks may still ask (a revoked token fails the very next launch).

What separates ``acc`` from ``raw`` is the product's own work: resolving who is
asking, reading the model, access rules, validating conf, inputs, output and
secrets, and tagging. Sides are interleaved, the order reversed every round
(ABCDE EDCBA …), after untimed warm-up rounds. The target is a ratio of medians
``acc / raw`` of at most 1.25.

Run it:

    python -m benchmarks.launch_latency --launches 200

Results land in ``benchmarks/results/launch_latency.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from accelerator_prefect.client import Accelerator
from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser
from benchmarks.platform_fixture import CONF, BenchPlatform, bench_platform

NAME = "launch_latency"
TARGET_RATIO = 1.25
SIDES = ("acc", "acc-trusted", "raw-checked", "raw-read", "raw")
TARGETED = ("acc", "acc-trusted")
WHAT = {
    "acc": "Accelerator.launch (sync client, operator token)",
    "acc-trusted": "Accelerator.launch (sync client, trusted user, no token)",
    "raw-checked": "reference: read who is asking and the model at once, then the same "
    "creation (raw)",
    "raw-read": "reference: read_deployments of the model, then the same creation (raw)",
}
BASELINE = "create_flow_run_from_deployment, same client and payload"


@dataclass(frozen=True)
class Timing:
    seconds: float
    # CPU time of this whole process (the client's event-loop thread included):
    # the client's own work, free of the server's.
    cpu_seconds: float


def timed(action: Callable[[], object]) -> Timing:
    cpu, start = time.process_time(), time.perf_counter()
    action()
    return Timing(time.perf_counter() - start, time.process_time() - cpu)


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, timing: Timing) -> None:
        self.seconds.append(timing.seconds)
        self.cpu_seconds.append(timing.cpu_seconds)

    def summary(self) -> dict[str, Any]:
        return {
            "ms": [round(s * 1000, 2) for s in self.seconds],
            "cpu_ms": [round(s * 1000, 2) for s in self.cpu_seconds],
            "median_ms": round(median(self.seconds) * 1000, 2),
            "p95_ms": round(p95(self.seconds) * 1000, 2),
            "mean_ms": round(sum(self.seconds) / len(self.seconds) * 1000, 2),
            "median_cpu_ms": round(median(self.cpu_seconds) * 1000, 2),
        }


def capture_payload(bench: BenchPlatform) -> dict[str, Any]:
    """The arguments one real launch passes to ``create_flow_run_from_deployment``."""
    client = bench.acc._call(_identity)
    original = client.create_flow_run_from_deployment
    captured: dict[str, Any] = {}

    async def spy(deployment_id: Any, **kwargs: Any) -> Any:
        captured.update(kwargs, deployment_id=deployment_id)
        return await original(deployment_id, **kwargs)

    client.create_flow_run_from_deployment = spy
    try:
        bench.acc.launch(bench.model, conf=CONF)
    finally:
        del client.create_flow_run_from_deployment  # the class's method again
    return captured


async def _identity(client: Any) -> Any:
    return client


def launchers(
    bench: BenchPlatform, trusted: Accelerator, payload: dict[str, Any]
) -> dict[str, Callable[[], object]]:
    """One call of each side; ``raw`` sends ``payload``, captured from a launch."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    from accelerator_prefect.catalog import HOSTED_TAG, tag
    from accelerator_prefect.directory import USER_PREFIX

    payload = dict(payload)
    deployment_id = payload.pop("deployment_id")
    model = bench.model
    versions = DeploymentFilter(tags=DeploymentFilterTags(all_=[HOSTED_TAG, tag("model", model)]))
    who = USER_PREFIX + "operator"

    async def create(client: Any) -> Any:
        return await client.create_flow_run_from_deployment(deployment_id, **payload)

    async def read_then_create(client: Any) -> Any:
        await client.read_deployments(deployment_filter=versions)
        return await create(client)

    async def check_then_create(client: Any) -> Any:
        await asyncio.gather(
            client.read_variable_by_name(who),
            client.read_deployments(deployment_filter=versions),
        )
        return await create(client)

    return {
        "acc": lambda: bench.acc.launch(model, conf=CONF),
        "acc-trusted": lambda: trusted.launch(model, conf=CONF),
        "raw-checked": lambda: bench.acc._call(check_then_create),
        "raw-read": lambda: bench.acc._call(read_then_create),
        "raw": lambda: bench.acc._call(create),
    }


def order(round_: int) -> tuple[str, ...]:
    """ABCDE, EDCBA, ABCDE, …: interleaved, reversing the order every round."""
    return SIDES if round_ % 2 == 0 else SIDES[::-1]


def measure(
    calls: dict[str, Callable[[], object]], launches: int, warmup: int, progress: Progress
) -> dict[str, Samples]:
    samples = {side: Samples() for side in SIDES}
    task = progress.add_task("warm-up", total=(launches + warmup) * len(SIDES))
    for round_ in range(warmup + launches):
        kept = round_ >= warmup
        if round_ == warmup:
            progress.update(task, description="launching")
        for side in order(round_):
            timing = timed(calls[side])
            if kept:
                samples[side].add(timing)
            progress.advance(task)
    return samples


COLUMNS = [
    "What",
    "Baseline",
    "Launches",
    "Median ms",
    "p95 ms",
    "Baseline median ms",
    "Baseline p95 ms",
    "Ratio (medians)",
    "Target",
    "Met?",
    "Client CPU ratio",
    "Ratio to raw-checked",
]


def result(side: str, samples: dict[str, Samples]) -> dict[str, Any]:
    ours, raw = samples[side], samples["raw"]
    ratio = median(ours.seconds) / median(raw.seconds)
    targeted = side in TARGETED
    return {
        "side": side,
        "what": WHAT[side],
        "baseline": BASELINE,
        "launches": len(ours.seconds),
        "ours": ours.summary(),
        "raw": raw.summary(),
        "ratio": round(ratio, 3),
        "p95_ratio": round(p95(ours.seconds) / p95(raw.seconds), 3),
        "cpu_ratio": round(median(ours.cpu_seconds) / max(median(raw.cpu_seconds), 1e-9), 3),
        "checked_ratio": round(median(ours.seconds) / median(samples["raw-checked"].seconds), 3),
        "target": TARGET_RATIO if targeted else None,
        "met": ratio <= TARGET_RATIO if targeted else None,
    }


def table_row(r: dict[str, Any]) -> list[str]:
    return [
        r["what"],
        r["baseline"],
        str(r["launches"]),
        f"{r['ours']['median_ms']:.1f}",
        f"{r['ours']['p95_ms']:.1f}",
        f"{r['raw']['median_ms']:.1f}",
        f"{r['raw']['p95_ms']:.1f}",
        f"{r['ratio']:.3f}",
        f"≤ {r['target']:.2f}" if r["target"] is not None else "—",
        "—" if r["met"] is None else "yes" if r["met"] else "NO",
        f"{r['cpu_ratio']:.2f}",
        f"{r['checked_ratio']:.3f}",
    ]


NOTES = [
    "Latency = wall time of one synchronous call, from the caller's thread, until the "
    "flow run exists (the worker is stopped: runs stay Scheduled, creation only).",
    "Ratio = median of ours / median of create_flow_run_from_deployment; target ≤ 1.25 "
    "(the trusted-user row shows what checking the token on every call costs).",
    "The reference row is raw Prefect reading the model's deployments before creating the "
    "run: no launcher that decides access and validates on the model's current record can "
    "go below it.",
    "The baseline sends what a launch sends (parameters, name, tags, captured from a real "
    "launch) on the same PrefectClient and event loop, so only the product's work differs.",
    "Sides interleaved, order reversed every round (ABCDE EDCBA …), after untimed warm-up rounds.",
    "The raw-checked reference also reads who is asking on every call, as a launch "
    "does so that a revoked token fails the very next launch: it is the floor for the "
    "launch rows; their ratio to it is the cost of the product's own work.",
    "Client CPU ratio = median CPU time of this process per call, ours over raw (the "
    "server's CPU is not in it).",
    "Prefect server on SQLite (the embedded default), on the same machine as the client.",
    "The benchmark's server does not mark runs Late (no worker would start them; "
    "marking hundreds of runs would load the server during the measurement).",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser("launch_latency", __doc__)
    parser.add_argument("--launches", type=int, default=200, help="timed launches per side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    args = parser.parse_args(argv)
    if args.launches < 1 or args.warmup < 0:
        parser.error("--launches must be at least 1, --warmup at least 0")
    return args


def run(args: argparse.Namespace, console: Console) -> Report:
    report = Report(NAME, "B1 — Accelerator.launch latency vs raw Prefect", COLUMNS, notes=NOTES)
    load_before = load_average()
    progress = Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("starting the platform", total=None)
        with bench_platform() as bench:
            before = len(bench.flow_run_ids())
            with Accelerator.connect(
                bench.info.api_url, home=bench.home, trusted_user="operator"
            ) as user:
                payload = capture_payload(bench)
                calls = launchers(bench, user, payload)
                progress.remove_task(task)
                samples = measure(calls, args.launches, args.warmup, progress)
            created = len(bench.flow_run_ids()) - before
    results = [result(side, samples) for side in SIDES if side != "raw"]
    report.rows = [table_row(r) for r in results]
    report.data = {
        "config": {
            "launches": args.launches,
            "warmup": args.warmup,
            "target_ratio": TARGET_RATIO,
            "order": "interleaved, reversed every round: ABCDE EDCBA ...",
            "client": "sync Accelerator (one background event loop), worker stopped",
            "conf": CONF,
        },
        "raw_payload": {key: str(v) if key == "deployment_id" else v for key, v in payload.items()},
        "flow_runs_created": created,
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
    }
    report.met = bool(results[0]["met"])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
