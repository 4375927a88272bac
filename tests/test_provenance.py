"""Every run records its provenance; a rerun reproduces a run, and a diff says what changed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from pathlib import Path

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from accelerator_prefect import Accelerator, AccessDenied, NotFound, Run
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.provenance import Provenance
from accelerator_prefect.transport import prefect_client
from tests.conftest import ModelRepo, User
from tests.test_cli import acc_cli
from tests.test_launch import (
    PORTAL_ONLY,
    bundled_example,
    connect_like,
    failed_run,
    uploaded_inputs,
)

CONF = {"scenario": "ssp245", "target_region": "pyrenees", "resolution_km": 10.0}


@pytest.fixture(scope="module")
def climate(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    repo = bundled_example(tmp_path_factory.mktemp("climate"), "climate-downscaling")
    acc.publish(repo.manifest)
    return repo


@pytest.fixture(scope="module")
def inputs(user: User) -> list[str]:
    """The climate sample inputs, in the user's own area."""
    return [uploaded_inputs(user, "climate/coarse-cmip6")]


@pytest.fixture(scope="module")
def first(user: User, climate: ModelRepo, inputs: list[str]) -> Run:
    """The user's run of the climate model (heavy: every test reading it is portal-only)."""
    run = user.acc.launch("climate-downscaling", conf=CONF, inputs=inputs)
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    return run


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@PORTAL_ONLY
def test_a_run_records_what_it_ran_on(
    platform: PlatformInfo, user: User, first: Run, tmp_path: Path, acc: Accelerator
) -> None:
    record = first.provenance()
    hosted = user.acc.get("climate-downscaling").versions[0]
    assert (record.model, record.version, record.state) == (
        "climate-downscaling",
        "1.0.0",
        "Completed",
    )
    assert record.run_id == str(first.id) and record.launched_by == user.name
    assert record.code.commit == hosted.record.commit and record.code.repository
    assert record.conf == {**CONF, "base_year": 1995}

    # Inputs and outputs are named with the hashes of what was really read and written.
    storage = user.acc.storage
    assert {i.uri.rsplit("/", 1)[1] for i in record.inputs} >= {
        "observations.nc",
        "model_ssp245.nc",
    }
    for item in record.inputs:
        with storage.open(item.uri) as f:
            assert sha256(f.read()) == item.sha256
    assert sorted(o.uri for o in record.outputs) == [
        "downscaled.nc",
        "quicklook.png",
        "summary.csv",
    ]
    for item in record.outputs:
        with storage.open(first.output_location + item.uri) as f:
            assert sha256(f.read()) == item.sha256

    assert {"prefect", "accelerator-prefect", "numpy", "scipy"} <= set(record.packages)
    assert record.worker["host"] and record.worker["python"]
    assert record.started is not None and record.started <= record.ended

    # provenance.json sits beside the outputs, and the Prefect UI shows the same record.
    assert "provenance.json" not in {f.path for f in first.outputs()}  # a record, not an output
    assert storage.exists(f"{first.output_location}provenance.json")

    async def artifacts() -> list[object]:
        async with prefect_client(platform.api_url) as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first.id]))
            )

    found = {a.key: a for a in asyncio.run(artifacts())}  # type: ignore[attr-defined]
    shown = found["climate-downscaling-provenance"]
    assert shown.type == "markdown"  # type: ignore[attr-defined]
    assert Provenance.from_markdown(shown.data) == record  # type: ignore[attr-defined]

    # The copy beside the outputs stays as the run wrote it: its user may not change it,
    # and if an operator does, the run's record (its artifact) stays what it was.
    changed = tmp_path / "provenance.json"
    changed.write_text(record.model_copy(update={"version": "6.6.6"}).model_dump_json())
    with pytest.raises(AccessDenied, match="in the output folder of an ended run"):
        storage.put(changed, f"{first.output_location}provenance.json")
    acc.storage.put(changed, f"{first.output_location}provenance.json")
    with acc.storage.open(f"{first.output_location}provenance.json") as f:
        assert Provenance.model_validate_json(f.read()).version == "6.6.6"
    assert first.provenance() == record


@PORTAL_ONLY
def test_a_rerun_of_a_deterministic_run_gives_identical_outputs(
    platform: PlatformInfo, user: User, first: Run
) -> None:
    again = user.acc.rerun(str(first.id))
    assert again.wait(timeout=180) == "Completed", "\n".join(again.logs())
    assert again.output_location != first.output_location

    a, b = first.provenance(), again.provenance()
    assert (b.version, b.conf, b.code) == (a.version, a.conf, a.code)
    assert {(o.uri, o.sha256) for o in b.outputs} == {(o.uri, o.sha256) for o in a.outputs}

    found = user.acc.diff(str(first.id), str(again.id))
    assert found.identical and found.same_outputs == 3
    assert not (found.code or found.data or found.conf or found.inputs or found.outputs)

    code, out = acc_cli(platform, "diff", str(first.id), str(again.id))
    assert code == 0, out
    assert "3 output file(s) identical; the runs are the same" in out
    assert re.search(r"conf\s+│\s+identical", out)


@PORTAL_ONLY
def test_diff_names_the_conf_field_and_the_outputs_that_changed(
    platform: PlatformInfo, user: User, first: Run, inputs: list[str]
) -> None:
    other = user.acc.launch(
        "climate-downscaling", conf={**CONF, "base_year": 2005}, inputs=inputs, via="cli"
    )
    assert other.wait(timeout=180) == "Completed"
    found = user.acc.diff(str(first.id), str(other.id))
    assert [(c.what, c.a, c.b) for c in found.conf] == [("base_year", 1995, 2005)]
    assert {c.what for c in found.outputs} == {"downscaled.nc", "quicklook.png", "summary.csv"}
    assert not found.identical and found.same_outputs == 0

    code, out = acc_cli(platform, "diff", str(first.id), str(other.id))
    assert code == 0
    assert re.search(r"conf\s+│\s+base_year\s+│\s+1995\s+│\s+2005", out)
    assert "the runs are different" in out


@PORTAL_ONLY
def test_rerun_and_provenance_from_the_cli(platform: PlatformInfo, first: Run) -> None:
    code, out = acc_cli(platform, "rerun", str(first.id), "--wait")
    assert code == 0, out
    assert f"launched a rerun of {first.id} run" in out and "Completed" in out
    new_id = re.search(r"run ([0-9a-f-]{36})", out.split("launched", 1)[1]).group(1)  # type: ignore[union-attr]

    code, out = acc_cli(platform, "provenance", new_id)
    assert code == 0, out
    record = json.loads(out)
    assert record["run_id"] == new_id and record["model"] == "climate-downscaling"
    assert {o["uri"]: o["sha256"] for o in record["outputs"]} == {
        o.uri: o.sha256 for o in first.provenance().outputs
    }

    async def tags() -> list[str]:
        async with prefect_client(platform.api_url) as client:
            return list((await client.read_flow_run(uuid.UUID(new_id))).tags)

    assert f"acc:rerun-of:{first.id}" in asyncio.run(tags())


def test_a_failed_run_records_its_provenance_too(
    acc: Accelerator, user: User, tmp_path_factory: pytest.TempPathFactory
) -> None:
    repo, run = failed_run(acc, user, tmp_path_factory)  # the run test_launch fails too
    record = run.provenance()  # no output folder: read from the run's artifact
    assert (record.state, record.model, record.conf["message"]) == ("Failed", repo.name, "hi")
    assert record.code.commit == repo.repo.head.commit.hexsha
    assert record.launched_by == user.name


@PORTAL_ONLY
def test_an_outsider_can_neither_rerun_nor_read_the_provenance(
    acc: Accelerator, platform: PlatformInfo, user: User, first: Run
) -> None:
    _, token = acc.add_user(f"eve-{uuid.uuid4().hex[:6]}", {"elsewhere": "member"})
    # In-process and through the portal alike.
    for eve in (Accelerator.connect(platform.api_url, token=token), connect_like(user, token)):
        with eve:
            with pytest.raises(NotFound, match="not found"):
                eve.rerun(str(first.id))
            with pytest.raises(NotFound, match="not found"):
                eve.run(str(first.id)).provenance()
            with pytest.raises(NotFound):
                eve.diff(str(first.id), str(first.id))
