"""B12 (the catalog's Launch in Chromium against the Python API) runs end to end on a tiny
size and writes its results (no timings asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import catalog_launch

pytestmark = pytest.mark.skipif(
    not Path(catalog_launch.CHROMIUM).exists(),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)


def test_catalog_launch_benchmark_times_the_click_and_the_api_and_reports_their_ratio(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"

    catalog_launch.main(["--runs", "2", "--warmup", "1", "--out", str(out)])

    report = json.loads((out / "catalog_launch.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {"catalog", "api"}
    for result in results.values():
        assert len(result["seconds"]) == 2 and len(result["runs"]) == 2
        assert result["median_s"] > 0 and result["p95_s"] >= result["median_s"]
        # Each run's own state history splits its time into launch, run and shown.
        for key in ("launch_median_s", "run_median_s", "shown_median_s"):
            assert result[key] is not None, key
    assert results["api"]["ratio_to_api"] == 1.0
    assert results["catalog"]["ratio_to_api"] > 0
    # The page saw its run page, a phase, and Completed last, after the click.
    for run in results["catalog"]["runs"]:
        assert 0 < run["run_page_s"] <= run["seconds"]
        assert 0 < run["first_phase_s"] <= run["seconds"]
        assert run["labels"][-1] == ["Completed", run["seconds"]]
        assert run["sent_s"], "the page sent Streamlit nothing after the click"
    assert report["config"]["target_s"] == catalog_launch.TARGET_SECONDS
    assert report["load_average"]["before"] is not None
    assert report["machine"]["cpus"]

    markdown = (out / "catalog_launch.md").read_text()
    assert markdown.startswith("# B12")
    for column in ("Median s", "p95 s", "Run page median s", "Ratio to API (medians)", "Met?"):
        assert column in markdown
