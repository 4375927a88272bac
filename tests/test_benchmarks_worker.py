"""B11 (the warm worker against the process worker, then the climate example against its
own compute time) runs end to end on a tiny size and writes its results (no timings
asserted). The climate example is published from this repository, as ``acc up`` does:
the tree must be committed."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import warm_worker


def test_warm_worker_benchmark_times_both_workers_and_reports_their_ratio(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"

    argv = ["--runs", "2", "--warmup", "0", "--climate-runs", "1", "--climate-warmup", "0"]
    warm_worker.main([*argv, "--out", str(out)])

    report = json.loads((out / "warm_worker.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {"warm", "process-1s"}
    for result in results.values():
        assert len(result["seconds"]) == 2
        assert result["median_s"] > 0 and result["p95_s"] >= result["median_s"]
        # Every run's own state history splits its time into pick-up, start and run.
        assert result["pickup_median_s"] is not None and result["run_median_s"] is not None
    assert results["process-1s"]["ratio_to_process_1s"] == 1.0
    assert results["warm"]["ratio_to_process_1s"] > 0
    assert report["speedup_vs_process_1s"] > 0
    assert report["machine"]["cpus"]
    # The climate example: launch → Completed set against the span of its routines.
    climate = report["climate"]
    assert climate is not None, "climate-downscaling was not measured (is the tree committed?)"
    (only,) = climate["runs"]
    assert 0 < only["compute_s"] < only["seconds"]
    assert climate["overhead_median_s"] == only["overhead_s"]

    markdown = (out / "warm_worker.md").read_text()
    assert markdown.startswith("# B11")
    for column in ("Median s", "p95 s", "Pick-up median s", "Ratio to process-1s (medians)"):
        assert column in markdown
    assert "climate-downscaling (compute median" in markdown
