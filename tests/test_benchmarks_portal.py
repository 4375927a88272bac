"""The portal benchmarks run end to end on tiny sizes and write their results (no timings
asserted): B8 (launch latency through the portal), B9 (a burst of launches through it) and
B10 (a run output downloaded through it). They share one platform with its portal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import hidden_models, portal_burst, portal_download, portal_latency, run_proxy
from benchmarks.__main__ import BENCHMARKS
from benchmarks.portal_fixture import LIMITS_LIFTED, PortalBench, portal_platform


@pytest.fixture(scope="module")
def bench() -> Iterator[PortalBench]:
    with portal_platform() as running:
        yield running


def test_the_portal_benchmarks_are_registered_with_smoke_sizes() -> None:
    registered = {b.id: b for b in BENCHMARKS}
    assert [registered[i].module for i in ("B8", "B9", "B10")] == [
        "portal_latency",
        "portal_burst",
        "portal_download",
    ]
    assert all(registered[i].smoke for i in ("B8", "B9", "B10"))


def test_portal_latency_reports_http_and_python_client_against_in_process_launch(
    bench: PortalBench, tmp_path: Path
) -> None:
    out = tmp_path / "results"

    portal_latency.main(["--launches", "3", "--warmup", "1", "--out", str(out)], platform=bench)

    report = json.loads((out / "portal_latency.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {
        "acc",
        "portal-http",
        "python-http",
        "portal-rate-limited",
        "portal-me",
    }
    for result in results.values():
        assert len(result["ms"]) == result["launches"] == 3
        assert result["median_ms"] > 0 and result["p95_ms"] > 0 and result["ratio"] > 0
        assert result["portal_cpu_ms_per_call"] >= 0
    assert results["acc"]["ratio"] == 1.0
    assert results["portal-http"]["target"] == 1.15
    assert results["portal-http"]["met"] in (True, False)
    assert results["python-http"]["met"] is None
    assert results["portal-me"]["met"] is None
    assert results["portal-rate-limited"]["met"] is None
    # Every launch of every side made exactly one run, each id returned once (/me makes none).
    assert report["flow_runs_created"] == report["returned_ids"] == (3 + 1) * 4
    assert report["exactly_once"]
    assert report["config"]["limits_lifted"] == LIMITS_LIFTED

    markdown = (out / "portal_latency.md").read_text()
    assert markdown.startswith("# B8")
    assert "Machine:" in markdown and "limits were lifted" in markdown
    for column in ("Median ms", "Ratio (medians)", "Portal CPU ms/call", "Met?"):
        assert column in markdown


def test_portal_burst_creates_exactly_one_run_per_launch_on_every_side(
    bench: PortalBench, tmp_path: Path
) -> None:
    out = tmp_path / "results"

    portal_burst.main(
        ["--launches", "5", "--rounds", "2", "--settle", "0", "--out", str(out)], platform=bench
    )

    report = json.loads((out / "portal_burst.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {"acc-gather", "portal-gather", "python-http-gather"}
    for result in results.values():
        assert result["error_count"] == 0, result["errors"]
        assert result["returned_ids"] == result["distinct_ids"] == 5
        assert result["flow_runs_created"] == 5
        assert result["exactly_once"]
        assert result["bursts"] == len(result["walls"]) == 2
        assert result["wall_seconds"] > 0 and result["wall_ratio"] > 0
    assert results["acc-gather"]["wall_ratio"] == 1.0
    assert results["portal-gather"]["target"] == 1.2
    assert results["portal-gather"]["met"] in (True, False)
    assert results["python-http-gather"]["met"] is None
    sides = ["acc-gather", "portal-gather", "python-http-gather"]
    assert report["config"]["order"] == [*sides, *reversed(sides)]

    markdown = (out / "portal_burst.md").read_text()
    assert markdown.startswith("# B9")
    for column in ("Ids returned / distinct", "Wall s (median)", "Wall / in-process", "Met?"):
        assert column in markdown


def test_portal_download_reports_throughput_and_the_portals_memory(
    bench: PortalBench, tmp_path: Path
) -> None:
    out = tmp_path / "results"

    # The writer run is created and its output written here: a worker's start and a fresh
    # Python for the run would take most of a minute on a busy machine.
    args = ["--size-mb", "2", "--repeat", "2", "--warmup", "0", "--writer", "here"]
    portal_download.main([*args, "--out", str(out)], platform=bench)

    report = json.loads((out / "portal_download.json").read_text())
    assert report["output"]["size_bytes"] == 2 * 2**20
    assert report["output"]["written_by"] == "here"
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {"acc", "portal-file", "portal-output", "python-http", "raw-http"}
    for result in results.values():
        assert len(result["seconds"]) == 2
        assert result["median_mb_per_s"] > 0 and result["ratio"] > 0
    assert results["acc"]["max_rss_growth_mb"] is None and results["acc"]["met"] is None
    for side in ("portal-file", "portal-output", "python-http"):
        assert results[side]["max_rss_growth_mb"] is not None
        assert results[side]["server_cpu_s_per_gb"] is not None
        assert results[side]["memory_met"] in (True, False)
    for side in ("portal-file", "portal-output"):
        assert results[side]["target"] == 0.8
        assert results[side]["met"] in (True, False)
    assert results["raw-http"]["met"] is None

    markdown = (out / "portal_download.md").read_text()
    assert markdown.startswith("# B10")
    for column in ("MB/s median", "Ratio to acc://", "Server RSS growth MB (max)", "Met?"):
        assert column in markdown


def test_hidden_models_compares_a_hidden_models_lookup_with_a_missing_ones(
    bench: PortalBench, tmp_path: Path
) -> None:
    out = tmp_path / "results"

    hidden_models.main(
        ["--rounds", "3", "--warmup", "1", "--versions", "2", "--out", str(out)], platform=bench
    )

    report = json.loads((out / "hidden_models.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {"visible", "hidden", "missing", "raw-hidden"}
    for result in results.values():
        assert result["calls"] == 3 and result["median_ms"] > 0
    assert results["missing"]["ratio_to_missing"] == 1.0
    assert results["hidden"]["met"] in (True, False)
    assert results["visible"]["met"] is None


def test_run_proxy_compares_a_runs_requests_through_the_proxy_with_raw_ones(
    bench: PortalBench, tmp_path: Path
) -> None:
    out = tmp_path / "results"

    run_proxy.main(["--rounds", "3", "--warmup", "1", "--out", str(out)], platform=bench)

    report = json.loads((out / "run_proxy.json").read_text())
    results = {r["side"]: r for r in report["results"]}
    assert set(results) == {"read raw", "read proxied", "log raw", "log proxied"}
    for result in results.values():
        assert result["calls"] == 3 and result["median_ms"] > 0
    assert results["read raw"]["ratio_to_raw"] == 1.0 and results["read raw"]["met"] is None
    assert results["read proxied"]["met"] in (True, False)
