"""B18: a routine mapped over N items, run as a hosted jobflow with Prefect's thread
runner (the default) and with ``task_runner: dask`` (a local Dask cluster of two worker
processes), side by side on the same platform.

The routine computes in pure Python and holds the GIL while it does, as most
scientists' own code does: threads take turns on one core, Dask's worker processes use
both. Both sides are versions of one model on ``acc up``'s warm worker, so each run is
confined and reaches Prefect through its run-scoped proxy, as in use; their runs
alternate (the order turns from one round to the next) so that the machine's load
weighs on both alike.

Two figures per run:

- fan-out: the jobflow's own time from mapping the routine to holding every result,
  measured inside the run. For Dask this includes starting the run's cluster (two
  worker processes, each importing Prefect), which happens at the first submit;
- launch → Completed: what the user waits, from ``Accelerator.launch`` to the run's
  Completed state.

The speed-up is the thread side's median over the Dask side's. Run it:

    python -m benchmarks.dask_fanout --items 8 --work 15000000 --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import Report, command, load_average, median
from benchmarks.common import parser as common_parser

NAME = "dask_fanout"
MODEL = "bench-fanout"
SIDES = ("threads", "dask")
WHAT = {
    "threads": "task_runner: threads (Prefect's ThreadPoolTaskRunner, the default)",
    "dask": "task_runner: {kind: dask, options: {n_workers: 2}} (prefect-dask, local cluster)",
}
VERSIONS = {"threads": "1.0.0", "dask": "1.0.1"}
RUNNERS = {"threads": "", "dask": "task_runner:\n  kind: dask\n  options: {n_workers: 2}\n"}

FLOW = """
import os
import time

from pydantic import Field

from accelerator_prefect import Conf, jobflow, routine


class FanOut(Conf):
    items: int = Field(default=8, ge=1, le=1000, description="How many items to map over.")
    work: int = Field(default=1000, ge=1, description="Loop steps per item.")


@routine
def crunch(seed: int, work: int) -> dict:
    cpu = time.thread_time()
    total = 0
    for i in range(work):  # pure Python: holds the GIL throughout
        total = (total * 31 + i + seed) % 1000003
    return {"total": total, "pid": os.getpid(), "cpu_s": time.thread_time() - cpu}


@jobflow(name="bench-fanout")
def fanout(conf: FanOut) -> dict:
    start = time.perf_counter()
    futures = crunch.map(list(range(conf.items)), work=conf.work)
    results = [f.result() for f in futures]
    return {
        "fanout_s": time.perf_counter() - start,
        "cpu_s": sum(r["cpu_s"] for r in results),
        "totals": [r["total"] for r in results],
        "processes": len({r["pid"] for r in results}),
        "flow_pid": os.getpid(),
    }
"""

MANIFEST = """
name: bench-fanout
title: Fan-out
version: {version}
jobflow: flows/fanout.py:fanout
owner: operator
project: bench
access:
  scope: project
{runner}"""

COLUMNS = [
    "Task runner",
    "Runs",
    "Items x work",
    "Fan-out median s",
    "Launch → Completed median s",
    "Processes",
    "Cores used (median)",
    "Speed-up (fan-out)",
    "Speed-up (launch → Completed)",
]


def _repo(folder: Path) -> list[Path]:
    """A committed repository with the model at both versions (one per side)."""
    from git import Repo

    repo = Repo.init(folder)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Benchmark")
        config.set_value("user", "email", "benchmark@example.invalid")
    (folder / "flows").mkdir(parents=True)
    (folder / "flows" / "fanout.py").write_text(textwrap.dedent(FLOW).lstrip())
    manifests = []
    for side in SIDES:
        manifest = folder / "deployments" / VERSIONS[side] / f"{MODEL}.yaml"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(MANIFEST.format(version=VERSIONS[side], runner=RUNNERS[side]))
        manifests.append(manifest)
    repo.git.add(A=True)
    repo.index.commit("fan-out")
    return manifests


def _timed_run(acc: Any, side: str, conf: dict[str, int]) -> dict[str, Any]:
    start = time.perf_counter()
    run = acc.launch(MODEL, conf, version=VERSIONS[side])
    state = run.wait(timeout=1800)
    seconds = time.perf_counter() - start
    if state != "Completed":
        raise RuntimeError(f"a {side} run ended {state}:\n" + "\n".join(run.logs()[-20:]))
    result = run.result()
    return {
        "seconds": seconds,
        "fanout_s": result["fanout_s"],
        "cpu_s": result["cpu_s"],
        "processes": result["processes"],
        "totals": result["totals"],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--items", type=int, default=8, help="items the routine is mapped over")
    parser.add_argument(
        "--work", type=int, default=15_000_000, help="loop steps per item (CPU time of each)"
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per side first")
    args = parser.parse_args(argv)
    if args.items < 1 or args.work < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--items, --work and --runs must be at least 1, --warmup at least 0")
    return args


def run(args: argparse.Namespace, console: Console) -> Report:
    from accelerator_prefect import Accelerator
    from accelerator_prefect.platform import down, free_port, up

    report = Report(NAME, "B18 — a mapped CPU-bound routine: thread runner vs Dask", COLUMNS)
    workdir = Path(tempfile.mkdtemp(prefix="acc-bench-fanout-"))
    home = workdir / "home"
    conf = {"items": args.items, "work": args.work}
    samples: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    try:
        with console.status("starting a platform (Prefect server on SQLite, warm worker)…"):
            info, _ = up(home, port=free_port(), examples=[], catalog_port=None, portal_port=None)
        with Accelerator.connect(info.api_url, home=home, trusted_user="operator") as operator:
            for manifest in _repo(workdir / "repo"):
                operator.publish(manifest)
            load_before = load_average()
            for side in SIDES:
                for _ in range(args.warmup):
                    console.print(f"[dim]warm-up: {side}")
                    _timed_run(operator, side, conf)
            for round_ in range(args.runs):
                for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                    console.print(f"[dim]run {round_ + 1}/{args.runs}: {side}")
                    samples[side].append(_timed_run(operator, side, conf))
    finally:
        down(home)
        shutil.rmtree(workdir, ignore_errors=True)
    if samples["threads"][0]["totals"] != samples["dask"][0]["totals"]:
        raise RuntimeError("the two task runners computed different results")
    results = {side: _summary(samples[side]) for side in SIDES}
    threads, dask = results["threads"], results["dask"]
    speedup = {  # three significant digits: tiny sizes make tiny ratios
        "fanout": float(f"{threads['fanout_median_s'] / dask['fanout_median_s']:.3g}"),
        "launch_to_completed": float(f"{threads['median_s'] / dask['median_s']:.3g}"),
    }
    report.rows = [
        _row(side, results[side], args, speedup if side == "dask" else None) for side in SIDES
    ]
    report.notes = [
        "Fan-out = the jobflow's own time from mapping the routine to holding every result "
        "(for Dask, starting the run's cluster included); launch → Completed = what the user "
        "waits. Speed-up = the thread runner's median over Dask's. Cores used = the "
        "routines' CPU time (each one's thread time, summed) over the fan-out's wall time: "
        "at most 1 for threads (the GIL), up to the workers' count for Dask.",
        "On a host busy with other work, Linux shares the CPU between sessions "
        "(autogroups): the warm worker's runs and their Dask workers share one session's "
        "part, so the speed-up needs cores that are free; see cores used.",
        "Both sides run on acc up's warm worker (confined, through the run-scoped proxy); "
        "runs alternate, the order turning each round.",
        f"Load average before {load_before}, after {load_average()}.",
    ]
    report.data = {
        "config": {**conf, "runs": args.runs, "warmup": args.warmup},
        "results": [{"side": side, "what": WHAT[side], **results[side]} for side in SIDES],
        "speedup": speedup,
    }
    return report


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [r["seconds"] for r in runs]
    fanout = [r["fanout_s"] for r in runs]
    cores = [r["cpu_s"] / r["fanout_s"] for r in runs]
    return {
        "runs": len(runs),
        "seconds": [round(s, 3) for s in seconds],
        "fanout_s": [round(s, 3) for s in fanout],
        "median_s": round(median(seconds), 3),
        "fanout_median_s": round(median(fanout), 4),
        "routine_cpu_s": [round(r["cpu_s"], 3) for r in runs],
        "cores_used": float(f"{median(cores):.3g}"),
        "processes": max(r["processes"] for r in runs),
    }


def _row(
    side: str, r: dict[str, Any], args: argparse.Namespace, speedup: dict[str, float] | None
) -> list[str]:
    return [
        side,
        str(r["runs"]),
        f"{args.items} x {args.work:,}",
        f"{r['fanout_median_s']:.2f}",
        f"{r['median_s']:.2f}",
        str(r["processes"]),
        f"{r['cores_used']:.2f}",
        f"{speedup['fanout']:.2f}" if speedup else "1.00 (baseline)",
        f"{speedup['launch_to_completed']:.2f}" if speedup else "1.00 (baseline)",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
