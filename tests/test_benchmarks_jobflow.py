"""B5, B7 and B18 run end to end on tiny sizes and write their results (no timings asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import dask_fanout, import_time, routine_overhead


def test_import_time_reports_both_sides_and_a_jobflow_process_loads_no_heavy_package(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"

    import_time.main(["--rounds", "2", "--out", str(out)])

    report = json.loads((out / "import_time.json").read_text())
    for case in ("prefect", "accelerator_prefect", "jobflow_module", "prefect_module"):
        assert len(report["cases"][case]["seconds"]) == 2
        assert report["cases"][case]["median_ms"] > 0
        assert report["cases"][case]["p95_ms"] > 0
    sides = {(c["what"], c["baseline"]): c for c in report["comparisons"]}
    assert set(sides) >= {("accelerator_prefect", "prefect"), ("jobflow_module", "prefect_module")}
    for comparison in sides.values():
        assert comparison["ratio"] > 0
    assert sides["accelerator_prefect", "prefect"]["target"] == 1.10
    assert report["machine"]["packages"]["prefect"]
    assert report["machine"]["cpus"]

    loaded = report["heavy_packages"]["loaded"]
    assert report["heavy_packages"]["checked"] == [
        *["streamlit", "dvc", "s3fs", "pandas", "git"],
        *["dask", "distributed", "prefect_dask"],
    ]
    assert loaded["accelerator_prefect"] == []
    assert loaded["jobflow_module"] == []
    # The check looked at a process that really imported the jobflow machinery.
    assert "accelerator_prefect.jobflow" in report["accelerator_modules"]["jobflow_module"]

    markdown = (out / "import_time.md").read_text()
    assert markdown.startswith("# B7")
    assert "Machine:" in markdown
    assert "| from accelerator_prefect import Conf, Inputs, Output, jobflow, routine |" in markdown
    assert "| import prefect |" in markdown
    for column in ("Baseline median ms", "Median ms", "p95 ms", "Ratio", "Target", "Met?"):
        assert column in markdown


def test_routine_overhead_reports_routines_and_bare_tasks_run_on_a_real_server(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"

    routine_overhead.main(
        ["--routines", "20", "--repeat", "1", "--warmup-routines", "5", "--out", str(out)]
    )

    report = json.loads((out / "routine_overhead.json").read_text())
    for side in ("routine", "task", "task_same_options"):
        summary = report["sides"][side]
        assert summary["routines"] == 20
        assert len(summary["seconds"]) == 1
        assert summary["median_ms_per_routine"] > 0
        assert summary["p95_ms_per_routine"] > 0
    comparison = report["comparisons"][0]
    assert (comparison["what"], comparison["baseline"]) == ("routine", "task")
    assert comparison["ratio"] > 0
    assert comparison["target"] == 1.05
    # One warm-up and one timed flow run per side, all of them recorded by the server.
    assert report["flow_runs_on_server"] == 6
    assert report["machine"]["packages"]["prefect"]

    markdown = (out / "routine_overhead.md").read_text()
    assert markdown.startswith("# B5")
    assert "Machine:" in markdown
    assert "| @routine in @jobflow | bare @task in bare @flow |" in markdown
    for column in ("Baseline median ms/routine", "Median ms/routine", "Ratio", "Target", "Met?"):
        assert column in markdown


def test_dask_fanout_runs_the_same_jobflow_on_threads_and_on_a_dask_cluster(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"

    dask_fanout.main(
        ["--items", "2", "--work", "1000", "--runs", "1", "--warmup", "0", "--out", str(out)]
    )

    report = json.loads((out / "dask_fanout.json").read_text())
    sides = {r["side"]: r for r in report["results"]}
    assert set(sides) == {"threads", "dask"}
    for side in sides.values():
        assert side["runs"] == 1 and side["median_s"] > side["fanout_median_s"] > 0
        assert side["cores_used"] > 0 and len(side["routine_cpu_s"]) == 1
    # The thread runner's routines run in the run's own process; Dask's in its workers.
    assert sides["threads"]["processes"] == 1
    assert 1 <= sides["dask"]["processes"] <= 2
    # On acc up's warm worker, Dask's workers are forked from the run's forker.
    assert sides["threads"]["workers"] == ["threads of the run"]
    assert sides["dask"]["workers"] == ["forked by its forker"]
    # Each side's timeline: both routines, in the processes counted above.
    for side in sides.values():
        (timeline,) = side["timelines"]
        assert len(timeline) == 2 and sum(side["per_process"][0]) == 2
        assert len(side["per_process"][0]) == side["processes"]
        assert 1 <= side["peak_overlap"][0] <= 2
        assert 0 < side["cluster_start_s"][0] < side["fanout_s"][0]
        within = side["cluster_start_s"][0] + side["compute_span_s"][0]
        assert within <= side["fanout_s"][0] + 0.01  # each rounded to the millisecond
        assert side["runqueue_wait_s"] is None or side["runqueue_wait_s"] >= 0
    assert report["speedup"]["fanout"] > 0 and report["speedup"]["launch_to_completed"] > 0
    assert report["config"] == {"items": 2, "work": 1000, "runs": 1, "warmup": 0}

    markdown = (out / "dask_fanout.md").read_text()
    assert markdown.startswith("# B18")
    for column in (
        "Fan-out median s",
        "Launch → Completed median s",
        "Speed-up (fan-out)",
        "Cluster start median s",
        "Compute span median s",
        "Peak routines at once",
        "Routines ran in",
        "Cores used in compute span (median)",
    ):
        assert column in markdown
