"""B17 (the load through the portal) runs end to end on tiny sizes and writes its results:
every launch made exactly one run and every run ended Completed, in each of its three
measurements (no timings asserted). On the session's database: SQLite, or PostgreSQL when
the session runs on it (``ACC_TEST_DATABASE=postgresql``)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import load
from benchmarks.__main__ import BENCHMARKS
from tests.conftest import ON_POSTGRES

DATABASE = "postgresql" if ON_POSTGRES else "sqlite"


def test_the_load_benchmark_is_registered_with_the_issues_size_and_a_smoke_size() -> None:
    (entry,) = [b for b in BENCHMARKS if b.module == "load"]
    assert entry.smoke
    args = load.parse_args(list(entry.full))
    assert (args.launches, args.minutes, args.clients, args.workers) == (1000, 10, 20, 2)
    assert args.databases == ["sqlite", "postgresql"]
    assert args.scaling_workers == [1, 2, 4] and args.concurrency == [1, 4]


def test_the_load_loses_and_duplicates_no_launch_and_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--launches", "4", "--minutes", "0.05", "--clients", "2", "--workers", "2"]
    argv += ["--databases", DATABASE, "--scaling-workers", "1", "--scaling-launches", "3"]
    argv += ["--burst", "3", "--burst-rounds", "1", "--settle", "0", "--out", str(out)]

    assert load.main(argv) == 0

    report = json.loads((out / "load.json").read_text())
    (steady,) = report["load"]
    assert steady["database"] == DATABASE and steady["workers"] == 2
    assert steady["launches"] == steady["returned_ids"] == steady["distinct_ids"] == 4
    assert steady["flow_runs_created"] == steady["completed"] == 4
    assert steady["states"] == {"Completed": 4} and steady["none_lost"]
    assert steady["launch_p50_seconds"] > 0 and steady["runs_completed_per_minute"] > 0
    assert steady["to_completed_p50_seconds"] > 0
    # The server's CPU was read before and after: it worked for the launches.
    assert steady["cpu"]["server"]["cpu_seconds"] > 0
    assert steady["cpu"]["workers"]["cpu_seconds"] > 0
    if DATABASE == "postgresql":
        assert steady["cpu"]["database"]["cpu_seconds"] > 0

    (one_worker,) = report["workers"]
    assert one_worker["workers"] == 1 and one_worker["none_lost"]
    assert one_worker["completed"] == one_worker["flow_runs_created"] == 3

    values = {r["launch_concurrency"]: r for r in report["concurrency"]}
    assert set(values) == {1, 4}
    for result in values.values():
        assert result["exactly_once"] and result["error_count"] == 0
        assert result["bursts"] == 1 and result["launches"] == 3
    assert report["concurrency_choice"][DATABASE]["fastest"] in {1, 4}

    markdown = (out / "load.md").read_text()
    assert markdown.startswith("# B17") and "REDUCED: 4 launches" in markdown
    for heading in ("## Runs per minute by warm workers", "## Launch write concurrency"):
        assert heading in markdown
    assert f"| {DATABASE} | 4 / 0.05 / 2 | 2 | 4 / 4 | 4 | 4 | 0 |" in markdown
