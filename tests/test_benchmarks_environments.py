"""B13 (runs in a version's own environment, cold and warm, against the platform's own
libraries) runs end to end on a tiny size and writes its results (no timings asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import environments


def test_environments_benchmark_times_cold_first_and_warm_runs(tmp_path: Path) -> None:
    out = tmp_path / "results"

    environments.main(["--runs", "1", "--cold", "1", "--out", str(out)])

    report = json.loads((out / "environments.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {"cold-build", "first", "warm-A", "warm-B", "warm-platform"}
    assert len(results["first"]["seconds"]) == 2
    for result in results.values():
        assert result["median_s"] > 0 and result["p95_s"] >= result["median_s"]
    (build,) = report["build_seconds"]
    assert 0 < build < results["cold-build"]["median_s"]
    markdown = (out / "environments.md").read_text()
    assert markdown.startswith("# B13")
    assert "warm, environment A" in markdown
