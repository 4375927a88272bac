"""B2 and B3 smoke runs: tiny sizes, end to end on a real platform (no timings asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import catalog_listing, run_latency


def test_catalog_listing_reports_acc_and_raw_at_each_size(tmp_path: Path) -> None:
    out = tmp_path / "results"

    catalog_listing.main(["--versions", "10,30", "--repeat", "2", "--out", str(out)])

    report = json.loads((out / "catalog_listing.json").read_text())
    sizes = [r["versions"] for r in report["results"]]
    assert sizes == [10, 30]
    for result in report["results"]:
        assert len(result["acc"]) == len(result["raw"]) == 2
        assert result["total"] == result["versions"] + 1  # the clones and the template
        assert 1 <= result["visible"] <= result["total"]
        assert all(s > 0 for s in result["acc"] + result["raw"])
    assert report["growth"]["versions"] == 3
    assert report["machine"]["packages"]["prefect"]
    markdown = (out / "catalog_listing.md").read_text()
    assert markdown.startswith("# B3") and "| 30 |" in markdown


def test_run_latency_reports_acc_and_raw_runs_to_completion(tmp_path: Path) -> None:
    out = tmp_path / "results"

    run_latency.main(["--runs", "1", "--warmup", "0", "--polling", "1s", "--out", str(out)])

    report = json.loads((out / "run_latency.json").read_text())
    (result,) = report["results"]
    assert result["polling"] == "1s"
    assert len(result["acc"]) == len(result["raw"]) == 1
    assert all(s > 0 for s in result["acc"] + result["raw"]) and result["ratio"] > 0
    assert (out / "run_latency.md").read_text().startswith("# B2")
