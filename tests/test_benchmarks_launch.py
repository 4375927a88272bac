"""The launch benchmarks run end to end on tiny sizes and write their results (no timings
asserted): B1 (launch latency) and B6 (a burst of simultaneous launches)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import launch_burst, launch_latency
from benchmarks.platform_fixture import CONF


def test_launch_latency_reports_launch_and_raw_creation_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "results"

    launch_latency.main(["--launches", "5", "--warmup", "1", "--out", str(out)])

    report = json.loads((out / "launch_latency.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {"acc", "acc-trusted", "raw-checked", "raw-read"}
    for result in results.values():
        for side in ("ours", "raw"):
            assert len(result[side]["ms"]) == 5
            assert result[side]["median_ms"] > 0
            assert result[side]["p95_ms"] > 0
        assert result["ratio"] > 0
    assert results["acc"]["target"] == 1.25
    assert results["acc"]["met"] in (True, False)
    assert results["raw-read"]["met"] is None
    assert results["raw-checked"]["met"] is None
    assert results["raw-checked"]["checked_ratio"] == 1.0
    # The baseline sends what a launch sends; every call of every side made one run.
    assert report["raw_payload"]["parameters"] == {"conf": CONF}
    assert "acc:via:python" in report["raw_payload"]["tags"]
    assert report["flow_runs_created"] == (5 + 1) * 5 + 1
    assert report["machine"]["cpus"]
    assert report["machine"]["packages"]["prefect"]

    markdown = (out / "launch_latency.md").read_text()
    assert markdown.startswith("# B1")
    assert "Machine:" in markdown
    assert "| Accelerator.launch (sync client, operator token) |" in markdown
    for column in ("Median ms", "p95 ms", "Baseline median ms", "Ratio (medians)", "Met?"):
        assert column in markdown


def test_launch_burst_creates_exactly_one_run_per_launch_on_every_side(tmp_path: Path) -> None:
    out = tmp_path / "results"

    launch_burst.main(["--launches", "5", "--rounds", "2", "--settle", "0", "--out", str(out)])

    report = json.loads((out / "launch_burst.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {
        "raw-sequential",
        "raw-gather",
        "raw-transport",
        "acc-threads",
        "acc-gather",
    }
    for result in results.values():
        assert result["error_count"] == 0, result["errors"]
        assert result["returned_ids"] == result["distinct_ids"] == 5
        assert result["flow_runs_created"] == 5
        assert result["exactly_once"]
        assert result["wall_seconds"] > 0
        assert len(result["walls"]) == result["bursts"]
        assert result["runs_per_minute"] > 0
        assert result["wall_ratio"] > 0
    assert results["raw-sequential"]["wall_ratio"] == 1.0
    assert results["raw-transport"]["met"] is None
    # Four sides take turns for two rounds, raw-gather runs once.
    assert {side: r["bursts"] for side, r in results.items()} == {
        "raw-sequential": 2,
        "raw-gather": 1,
        "raw-transport": 2,
        "acc-threads": 2,
        "acc-gather": 2,
    }
    turns = ["raw-sequential", "raw-transport", "acc-threads", "acc-gather"]
    assert report["config"]["order"] == [*turns, *reversed(turns), "raw-gather"]
    # Nine bursts of five, and the launch that captured what the raw sides send.
    assert sum(report["flow_run_states"].values()) == 9 * 5 + 1
    assert report["config"]["launch_concurrency"] >= 1
    assert report["machine"]["cpus"]

    markdown = (out / "launch_burst.md").read_text()
    assert markdown.startswith("# B6")
    assert "Machine:" in markdown
    for column in (
        "Wall s (median)",
        "Wall s (each burst)",
        "Runs/min",
        "Wall / raw sequential",
        "Target",
        "Met?",
    ):
        assert column in markdown
    assert "| Accelerator.launch × N at once from N threads, one sync client |" in markdown
