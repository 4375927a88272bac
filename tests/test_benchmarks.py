"""The benchmarks run end to end on tiny sizes and write their results (no timings asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from benchmarks import run_storage, storage_throughput
from benchmarks.__main__ import summary


def test_storage_throughput_reports_acc_and_raw_for_local_and_s3(tmp_path: Path) -> None:
    out = tmp_path / "results"

    storage_throughput.main(["--size-mb", "4", "--repeat", "2", "--out", str(out)])

    report = json.loads((out / "storage_throughput.json").read_text())
    results = {(r["backend"], r["operation"]): r for r in report["results"]}
    assert set(results) == {
        (backend, operation)
        for backend in ("local", "s3")
        for operation in ("write", "read", "put", "get")
    }
    for result in results.values():
        assert result["size_bytes"] == 4 * 2**20
        for side in ("acc", "raw"):
            assert len(result[side]["seconds"]) == 2
            assert result[side]["median_mb_per_s"] > 0
        assert result["ratio"] > 0
    assert report["machine"]["packages"]["fsspec"]
    assert report["machine"]["cpus"]

    markdown = (out / "storage_throughput.md").read_text()
    assert markdown.startswith("# B4")
    assert "Machine:" in markdown
    for backend in ("local", "s3"):
        for operation in ("write", "read", "put", "get"):
            assert f"| {backend} | {operation} |" in markdown
    assert "Raw MB/s median" in markdown and "acc MB/s median" in markdown


def test_moto_server_is_stopped_even_when_the_benchmark_fails(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="benchmark failed"),
        storage_throughput.moto_server(tmp_path / "moto.log") as url,
    ):
        httpx.get(url, timeout=5)
        raise RuntimeError("benchmark failed")

    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=5)


def test_results_page_summarises_what_ran_and_names_what_did_not(tmp_path: Path) -> None:
    out = tmp_path / "results"
    storage_throughput.main(["--size-mb", "2", "--repeat", "1", "--out", str(out)])

    summary(out, tmp_path)

    page = (tmp_path / "RESULTS.md").read_text()
    assert page.startswith("# Benchmarks") and "Machine:" in page
    assert "| B4 |" in page and "## B4" in page
    assert "create_flow_run_from_deployment | not run |" in page
    data = json.loads((tmp_path / "RESULTS.json").read_text())
    assert set(data["benchmarks"]) == {"B4"}


def test_run_storage_compares_a_runs_storage_through_the_proxy_with_the_keys(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"
    argv = ["--size-mb", "2", "--rounds", "2", "--warmup", "1", "--info-calls", "3"]

    run_storage.main([*argv, "--out", str(out)])

    report = json.loads((out / "run_storage.json").read_text())
    results = {r["operation"]: r for r in report["results"]}
    assert set(results) == {"write", "read", "info"}
    for result in results.values():
        assert result["raw_median_ms"] > 0 and result["proxied_median_ms"] > 0
        assert result["met"] in (True, False)
    assert (out / "run_storage.md").read_text().startswith("# B16")
