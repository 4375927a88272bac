"""``make bench``: every benchmark, one after another, then ``benchmarks/RESULTS.md`` (a
summary table, then each benchmark's own table) and ``benchmarks/RESULTS.json``.

Each benchmark measures the product and its raw baseline in the same run; its full
samples stay in ``benchmarks/results/<name>.json``. A benchmark that fails is
reported and the others still run.

    python -m benchmarks                      # all, at the issue's sizes (tens of minutes)
    python -m benchmarks --only B1,B7         # some
    python -m benchmarks --smoke              # tiny sizes: does everything still run?
"""

from __future__ import annotations

import argparse
import importlib
import json
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from benchmarks.common import console as common_console
from benchmarks.common import describe_machine, machine_line

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Benchmark:
    id: str
    module: str  # benchmarks.<module>, with main(argv) writing results/<module>.{json,md}
    what: str
    full: tuple[str, ...]
    smoke: tuple[str, ...]


BENCHMARKS = [
    Benchmark(
        "B1",
        "launch_latency",
        "Accelerator.launch latency vs create_flow_run_from_deployment",
        (),
        ("--launches", "5"),
    ),
    Benchmark(
        "B2",
        "run_latency",
        "launch → Completed vs a plain Prefect deployment",
        (),
        ("--runs", "1", "--warmup", "0", "--polling", "1s"),
    ),
    Benchmark(
        "B3",
        "catalog_listing",
        "catalog listing at 1,000 and 10,000 versions vs read_deployments",
        (),
        ("--versions", "10,30", "--repeat", "2"),
    ),
    Benchmark(
        "B4",
        "storage_throughput",
        "acc:// throughput vs raw fsspec, local and S3, 1 GB",
        ("--size-mb", "1024", "--repeat", "3", "--warmup", "1"),
        ("--size-mb", "4", "--repeat", "2"),
    ),
    Benchmark(
        "B5",
        "routine_overhead",
        "per-routine overhead, 1,000 routines vs bare @task",
        (),
        ("--routines", "20", "--repeat", "1"),
    ),
    Benchmark(
        "B6",
        "launch_burst",
        "100 simultaneous launches vs raw, at once and in sequence",
        (),
        ("--launches", "5", "--rounds", "2"),
    ),
    Benchmark(
        "B7",
        "import_time",
        "import accelerator_prefect vs import prefect",
        (),
        ("--rounds", "3"),
    ),
    Benchmark(
        "B8",
        "portal_latency",
        "launch through the portal's HTTP API vs in-process Accelerator.launch",
        (),
        ("--launches", "3", "--warmup", "1"),
    ),
    Benchmark(
        "B9",
        "portal_burst",
        "100 simultaneous launches through the portal vs the in-process burst",
        (),
        ("--launches", "5", "--rounds", "2", "--settle", "0"),
    ),
    Benchmark(
        "B10",
        "portal_download",
        "1 GB run output downloaded through the portal vs read from acc://",
        ("--size-mb", "1024", "--repeat", "3", "--warmup", "1"),
        ("--size-mb", "4", "--repeat", "2", "--warmup", "0"),
    ),
    Benchmark(
        "B11",
        "warm_worker",
        "launch → Completed on the warm worker vs the process worker polling every second",
        (),
        ("--runs", "2", "--warmup", "0", "--climate-runs", "1", "--climate-warmup", "0"),
    ),
    Benchmark(
        "B12",
        "catalog_launch",
        "click on Launch in the catalog (Chromium) → run page shows Completed vs the Python API",
        (),
        ("--runs", "2", "--warmup", "1"),
    ),
    Benchmark(
        "B13",
        "environments",
        "runs in a version's own environment: first runs and warm runs, vs the platform's",
        (),
        ("--runs", "1", "--cold", "1"),
    ),
    Benchmark(
        "B14",
        "hidden_models",
        "a hidden model's lookup through the portal vs a missing one's",
        (),
        ("--rounds", "3", "--warmup", "1", "--versions", "2"),
    ),
    Benchmark(
        "B15",
        "run_proxy",
        "a run's requests through the run-scoped proxy vs raw Prefect",
        (),
        ("--rounds", "3", "--warmup", "1"),
    ),
    Benchmark(
        "B16",
        "run_storage",
        "a run's object storage through the run-scoped proxy vs with the keys",
        (),
        ("--size-mb", "2", "--rounds", "2", "--warmup", "1", "--info-calls", "3"),
    ),
    Benchmark(
        "B17",
        "load",
        "1,000 launches over 10 min through the portal, 20 clients, SQLite and PostgreSQL; "
        "runs/min by workers; launch write concurrency",
        (),  # the defaults are the size
        (
            *("--launches", "6", "--minutes", "0.1", "--clients", "3"),
            *("--scaling-workers", "1,2", "--scaling-launches", "4"),
            *("--burst", "4", "--burst-rounds", "2", "--settle", "0"),
        ),
    ),
    Benchmark(
        "B18",
        "dask_fanout",
        "a CPU-bound routine mapped over 8 items: thread runner vs task_runner: dask (2 workers)",
        (),  # the defaults: 8 items of 15 million pure-Python loop steps each, 3 runs a side
        ("--items", "2", "--work", "1000", "--runs", "1", "--warmup", "0"),
    ),
]


def run(benchmarks: list[Benchmark], out: Path, smoke: bool, console: Console) -> list[str]:
    """Run each benchmark into ``out``; the ids of those that failed."""
    failed = []
    for bench in benchmarks:
        console.rule(f"{bench.id} · {bench.what}")
        args = [*(bench.smoke if smoke else bench.full), "--out", str(out)]
        try:
            importlib.import_module(f"benchmarks.{bench.module}").main(args)
        except Exception:
            console.print(traceback.format_exc(), style="red")
            failed.append(bench.id)
    return failed


def summary(out: Path, results: Path) -> None:
    """RESULTS.md and RESULTS.json from the benchmarks' own files in ``out``."""
    sections, found = [], {}
    rows = ["| id | what | figures | file |", "|---|---|---|---|"]
    for bench in BENCHMARKS:
        json_path, md_path = out / f"{bench.module}.json", out / f"{bench.module}.md"
        if not json_path.exists():
            rows.append(f"| {bench.id} | {bench.what} | not run | |")
            continue
        data = json.loads(json_path.read_text())
        found[bench.id] = data
        table = data["table"]
        marks = [c.lower().rstrip("?") for c in table["columns"]]
        met = [row[marks.index("met")].lower() for row in table["rows"]] if "met" in marks else []
        verdict = (
            f"{met.count('no')} target(s) missed"
            if "no" in met
            else "targets met"
            if "yes" in met
            else "no target"
        )
        rows.append(f"| {bench.id} | {bench.what} | {verdict} | below |")
        body = md_path.read_text().split("\n", 1)[1].strip()
        sections.append(f"## {data['title']}\n\n{body}\n")
    machine = describe_machine()
    page = [
        "# Benchmarks",
        "",
        "Each figure is measured side by side with its raw baseline in the same run "
        "(`make bench`); medians and 95th percentiles, ratios of medians.",
        "",
        f"Machine: {machine_line(machine)}",
        "",
        f"Written: {datetime.now(UTC).isoformat(timespec='seconds')}",
        "",
        *rows,
        "",
        *sections,
    ]
    (results / "RESULTS.md").write_text("\n".join(page).rstrip() + "\n")
    (results / "RESULTS.json").write_text(
        json.dumps({"machine": machine, "benchmarks": found}, indent=2) + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks; write RESULTS.md.")
    parser.add_argument("--only", default="", help="Ids to run, e.g. B1,B7 (default: all).")
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes: does it all run?")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--results", type=Path, default=HERE, help="Where RESULTS.md goes.")
    args = parser.parse_args(argv)
    wanted = {i.strip().upper() for i in args.only.split(",") if i.strip()}
    chosen = [b for b in BENCHMARKS if not wanted or b.id in wanted]
    console = common_console()
    failed = run(chosen, args.out, args.smoke, console)
    summary(args.out, args.results)
    console.print(f"wrote {args.results / 'RESULTS.md'}")
    if failed:
        console.print(f"failed: {', '.join(failed)}", style="red")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
