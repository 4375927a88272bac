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
  worker processes), which happens at the first submit. On the warm worker they are
  forked from the run's forker, with Prefect and Dask imported
  (:mod:`accelerator_prefect.daskfork`); elsewhere each is a fresh Python importing them;
- launch → Completed: what the user waits, from ``Accelerator.launch`` to the run's
  Completed state.

And where the fan-out's time went, from each routine's own wall-clock start and end, its
process and its thread CPU time (:func:`timeline`): the cluster's start (fan-out's start
to the first routine's start), the compute span (first routine's start to the last one's
end), the most routines running at once, how many each process ran, and the cores used
during the compute span. A routine's wall time over its CPU time tells whether routines
that ran at once really had a core each (about 1) or took turns on one (about 2 for two).

The speed-up is the thread side's median over the Dask side's. Run it:

    python -m benchmarks.dask_fanout --items 8 --work 15000000 --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import textwrap
import time
from collections import Counter
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


def queued() -> float | None:  # seconds this thread waited for a CPU, able to run
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


@routine
def crunch(seed: int, work: int) -> dict:
    waited = queued()
    start, cpu = time.time(), time.thread_time()
    total = 0
    for i in range(work):  # pure Python: holds the GIL throughout
        total = (total * 31 + i + seed) % 1000003
    return {
        "total": total,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cpu_s": time.thread_time() - cpu,
        "start": start,
        "end": time.time(),
        "queued_s": None if waited is None else (queued() or 0.0) - waited,
    }


@jobflow(name="bench-fanout")
def fanout(conf: FanOut) -> dict:
    began, start = time.time(), time.perf_counter()
    futures = crunch.map(list(range(conf.items)), work=conf.work)
    results = [f.result() for f in futures]
    if all(r["pid"] == os.getpid() for r in results):
        workers = "threads of the run"
    elif all(r["ppid"] == os.getpid() for r in results):
        workers = "spawned by the run"
    else:
        workers = "forked by its forker"
    return {
        "fanout_s": time.perf_counter() - start,
        "cpu_s": sum(r["cpu_s"] for r in results),
        "totals": [r["total"] for r in results],
        "processes": len({r["pid"] for r in results}),
        "workers": workers,
        "flow_pid": os.getpid(),
        "began": began,
        "routines": [[r["start"], r["end"], r["pid"], r["cpu_s"]] for r in results],
        "queued": [r["queued_s"] for r in results],
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
    "Cluster start median s",
    "Compute span median s",
    "Peak routines at once",
    "Routines per process",
    "Launch → Completed median s",
    "Processes",
    "Routines ran in",
    "Cores used (median)",
    "Cores used in compute span (median)",
    "Routine wall / CPU (median)",
    "Run-queue wait per routine (median s)",
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
        "workers": result["workers"],
        "totals": result["totals"],
        "load_average": load_average(),
        "queued_s": _median_or_none(result["queued"]),
        **timeline(result["began"], result["routines"]),
    }


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return median(known) if known else None


def timeline(began: float, routines: list[list[float]]) -> dict[str, Any]:
    """Where a fan-out's time went, from when it began and each routine's ``[start, end,
    pid, cpu_s]`` (wall-clock seconds, its process, its thread CPU time):

    - ``cluster_start_s``: from the fan-out's start to the first routine's start (for
      Dask, starting the cluster and sending the first task; for threads, Prefect's
      own start of a routine);
    - ``compute_span_s``: from the first routine's start to the last one's end;
    - ``peak_overlap``: the most routines running at the same moment;
    - ``compute_cores``: the routines' CPU time over the compute span;
    - ``wall_over_cpu``: the routines' wall time over their CPU time (about 1 when each
      had a core of its own while it ran);
    - ``per_process``: how many routines each process ran, most first;
    - ``intervals``: each routine as ``[start, end]`` from the fan-out's start, the
      process it ran in (0, 1 … in order of first start) and its CPU time.

    Example:
        >>> t = timeline(100.0, [[101.0, 103.0, 7, 2.0], [101.5, 104.0, 9, 2.5]])
        >>> t["cluster_start_s"], t["compute_span_s"], t["peak_overlap"], t["per_process"]
        (1.0, 3.0, 2, [1, 1])
        >>> t["compute_cores"], t["wall_over_cpu"]
        (1.5, 1.0)
    """
    ordered = sorted(routines, key=lambda r: r[0])
    first, last = ordered[0][0], max(r[1] for r in ordered)
    span, cpu = last - first, sum(r[3] for r in ordered)
    wall = sum(r[1] - r[0] for r in ordered)
    # At equal times an end counts before a start: touching routines did not overlap.
    events = sorted([(r[0], 1) for r in ordered] + [(r[1], -1) for r in ordered])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    processes = list(dict.fromkeys(int(r[2]) for r in ordered))
    return {
        "cluster_start_s": first - began,
        "compute_span_s": span,
        "peak_overlap": peak,
        "compute_cores": cpu / span if span > 0 else None,
        "wall_over_cpu": wall / cpu if cpu > 0 else None,
        "per_process": sorted(Counter(int(r[2]) for r in ordered).values(), reverse=True),
        "intervals": [
            [
                round(r[0] - began, 3),
                round(r[1] - began, 3),
                processes.index(int(r[2])),
                round(r[3], 3),
            ]
            for r in ordered
        ],
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
        "From each routine's own start and end: cluster start = fan-out's start to the "
        "first routine's start; compute span = first routine's start to the last one's "
        "end; peak = the most routines running at once; routines per process, run by run; "
        "cores used in compute span = the routines' CPU time over the compute span; "
        "routine wall / CPU = their wall time over their CPU time (about 1 when each "
        "routine running had a core of its own, about 2 when two took turns on one); "
        "run-queue wait = how long a routine's thread could run but waited for a CPU "
        "(Linux's schedstat; a thread waiting for the GIL is not counted): time the "
        "machine's other work took from it.",
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
    starts = [r["cluster_start_s"] for r in runs]
    spans = [r["compute_span_s"] for r in runs]
    return {
        "runs": len(runs),
        "seconds": [round(s, 3) for s in seconds],
        "fanout_s": [round(s, 3) for s in fanout],
        "median_s": round(median(seconds), 3),
        "fanout_median_s": round(median(fanout), 4),
        "routine_cpu_s": [round(r["cpu_s"], 3) for r in runs],
        "cores_used": float(f"{median(cores):.3g}"),
        "processes": max(r["processes"] for r in runs),
        "workers": sorted({r["workers"] for r in runs}),
        "cluster_start_s": [round(s, 3) for s in starts],
        "cluster_start_median_s": round(median(starts), 4),
        "compute_span_s": [round(s, 3) for s in spans],
        "compute_span_median_s": round(median(spans), 4),
        "peak_overlap": [r["peak_overlap"] for r in runs],
        "compute_cores": _median_of("compute_cores", runs),
        "wall_over_cpu": _median_of("wall_over_cpu", runs),
        "runqueue_wait_s": _median_of("queued_s", runs),
        "per_process": [r["per_process"] for r in runs],
        "load_average": [r["load_average"] for r in runs],
        "timelines": [r["intervals"] for r in runs],
    }


def _median_of(key: str, runs: list[dict[str, Any]]) -> float | None:
    """The runs' median of a ratio, three significant digits; ``None`` if no run had it
    (a compute span or CPU time too short to measure)."""
    values = [r[key] for r in runs if r[key] is not None]
    return float(f"{median(values):.3g}") if values else None


def _row(
    side: str, r: dict[str, Any], args: argparse.Namespace, speedup: dict[str, float] | None
) -> list[str]:
    return [
        side,
        str(r["runs"]),
        f"{args.items} x {args.work:,}",
        f"{r['fanout_median_s']:.2f}",
        f"{r['cluster_start_median_s']:.2f}",
        f"{r['compute_span_median_s']:.2f}",
        str(max(r["peak_overlap"])),
        " / ".join("+".join(str(n) for n in counts) for counts in r["per_process"]),
        f"{r['median_s']:.2f}",
        str(r["processes"]),
        " / ".join(r["workers"]),
        f"{r['cores_used']:.2f}",
        _ratio(r["compute_cores"]),
        _ratio(r["wall_over_cpu"]),
        _ratio(r["runqueue_wait_s"]),
        f"{speedup['fanout']:.2f}" if speedup else "1.00 (baseline)",
        f"{speedup['launch_to_completed']:.2f}" if speedup else "1.00 (baseline)",
    ]


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
