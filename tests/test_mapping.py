"""Input and output mappings, end to end: refused launches, runs reading their
inputs, writing their outputs, failing and crashing, on local disk and on S3."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import PrefectHTTPStatusError

from accelerator_prefect import Accelerator, InvalidInputs, Run
from accelerator_prefect.catalog import read_versions
from accelerator_prefect.fetching import UNREADABLE
from accelerator_prefect.manifest import InputMapping
from accelerator_prefect.mapping import inputs_schema, parse_size
from accelerator_prefect.outputs import INCOMPLETE
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.storage import AccFileSystem, Storage
from accelerator_prefect.transport import prefect_client
from tests.conftest import ModelRepo, S3Server, User, pool_on_s3
from tests.test_launch import count_runs


def _seed(storage: Storage, base: str) -> None:
    """Three small CSV files, a text file, a folder of four CSVs and a big one."""
    for name, rows in [("a.csv", 2), ("b.csv", 3), ("c.csv", 1)]:
        storage.fs.pipe_file(f"{base}/few/{name}", ("x\n" + "1\n" * rows).encode())
    storage.fs.pipe_file(f"{base}/notes.txt", b"not a table")
    for index in range(4):
        storage.fs.pipe_file(f"{base}/many/t{index}.csv", b"x\n1\n")
    storage.fs.pipe_file(f"{base}/big/large.csv", b"x\n" + b"12345\n" * 400)
    storage.fs.pipe_file(f"{base}/empty/readme.md", b"# no tables here")
    storage.fs.pipe_file(f"{base}/odd.csv/inner.csv", b"x\n1\n")


# Published once for the session: this module's tests run in a group for each `user`.
@pytest.fixture(scope="session")
def tables(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    repo = ModelRepo(tmp_path_factory.mktemp("tables"), f"tables-{uuid.uuid4().hex[:8]}")
    repo.tables().commit("tables 1.0.0")
    acc.publish(repo.manifest)
    _seed(acc.storage, "acc://demo/in")
    return repo


@pytest.fixture(scope="session")
def cloud_tables(
    acc: Accelerator, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A tables model whose manifest allows cloud inputs, and one CSV object in the bucket."""
    repo = ModelRepo(tmp_path_factory.mktemp("cloud"), f"tables-{uuid.uuid4().hex[:8]}")
    repo.tables(sources="storage, cloud").commit("tables with cloud inputs")
    acc.publish(repo.manifest)
    s3_server.filesystem().pipe_file(f"{s3_server.bucket}/cloud/x.csv", b"x\n1\n2\n3\n4\n")
    return repo.name


@dataclass(frozen=True)
class TablesRuns:
    """The module's runs, launched by one user all at once (they run side by side);
    ``chosen`` was told to write into ``target``."""

    one: Run
    two: Run
    chosen: Run
    target: str
    failed: Run
    crashed: Run
    cloud: Run


@pytest.fixture(scope="module")
def tables_runs(
    user: User, tables: ModelRepo, cloud_tables: str, s3_server: S3Server
) -> TablesRuns:
    target = f"acc://demo/mine/{uuid.uuid4().hex[:8]}/"
    launch = user.acc.launch
    return TablesRuns(
        one=launch(tables.name, inputs=["acc://demo/in/few/b.csv"]),
        two=launch(
            tables.name,
            inputs={
                "selected_files": ["acc://demo/in/few/a.csv"],
                "selected_folders": ["acc://demo/in/few/"],
            },
        ),
        chosen=launch(tables.name, inputs=["acc://demo/in/few/c.csv"], output=target),
        target=target,
        failed=launch(tables.name, conf={"fail_after": 1}, inputs=["acc://demo/in/few/"]),
        crashed=launch(tables.name, conf={"crash": True}, inputs=["acc://demo/in/few/a.csv"]),
        cloud=launch(cloud_tables, inputs=[f"s3://{s3_server.bucket}/cloud/x.csv"]),
    )


REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({}, "inputs: 0 file(s) of type .csv selected (folders expanded); at least 1 required"),
    (
        {"inputs": ["acc://demo/in/missing.csv"]},
        "inputs.selected_files[0]: acc://demo/in/missing.csv does not exist",
    ),
    (
        {"inputs": ["acc://demo/in/notes.txt"]},
        "inputs.selected_files[0]: acc://demo/in/notes.txt is not an accepted type "
        "(accepted: .csv)",
    ),
    (
        {"inputs": {"selected_files": ["acc://demo/in/odd.csv"]}},
        "inputs.selected_files[0]: acc://demo/in/odd.csv is a folder; select it as a folder",
    ),
    (
        {"inputs": {"selected_folders": ["acc://demo/in/few/a.csv"]}},
        "inputs.selected_folders[0]: acc://demo/in/few/a.csv is a file, not a folder",
    ),
    (
        {"inputs": ["acc://demo/in/many/"]},
        "inputs: 4 files selected (folders expanded); at most 3 allowed",
    ),
    (
        {"inputs": ["acc://demo/in/big/"]},
        "inputs: the selection totals 2.4 KB; at most 1 KB allowed",
    ),
    (
        {"inputs": ["acc://demo/in/empty/"]},
        "inputs.selected_folders[0]: acc://demo/in/empty/ contains no files of type .csv",
    ),
    (
        {"inputs": ["s3://acc-test/cloud/x.csv"]},
        "inputs.selected_files[0]: s3://acc-test/cloud/x.csv is not an acc:// path "
        "(this model reads acc:// storage only)",
    ),
    (
        {"inputs": ["acc://demo/in/../../etc/passwd.csv"]},
        "inputs.selected_files[0]: acc://demo/in/../../etc/passwd.csv: path segment '..' "
        "is not allowed",
    ),
    (
        {"inputs": ["/etc/passwd.csv"]},
        "inputs.selected_files[0]: /etc/passwd.csv is not an acc:// path",
    ),
    (
        {"inputs": ["acc://demo/in/few/"], "output": "acc://demo/../../tmp/x/"},
        "output.location: acc://demo/../../tmp/x: path segment '..' is not allowed",
    ),
    (
        {"inputs": ["acc://demo/in/few/"], "output": "s3://elsewhere/x/"},
        "output.location: s3://elsewhere/x/ is not an acc:// folder",
    ),
    (
        {"inputs": ["acc://demo/in/few/"], "output": "acc://demo/in/few/a.csv"},
        "output.location: acc://demo/in/few/a.csv is an existing file; choose a folder",
    ),
]


@pytest.mark.parametrize(("arguments", "expected"), REFUSALS)
def test_a_bad_selection_is_refused_by_name_and_creates_no_run(
    user: User,
    platform: PlatformInfo,
    tables: ModelRepo,
    arguments: dict[str, Any],
    expected: str,
) -> None:
    before = count_runs(platform.api_url, f"{tables.name}@1.0.0")
    with pytest.raises(InvalidInputs) as refused:
        user.acc.launch(tables.name, **arguments)
    assert any(p.startswith(expected) for p in refused.value.problems), refused.value.problems
    assert count_runs(platform.api_url, f"{tables.name}@1.0.0") == before


def test_every_bad_input_is_reported_at_once(user: User, tables: ModelRepo) -> None:
    with pytest.raises(InvalidInputs) as refused:
        user.acc.launch(
            tables.name, inputs=["acc://demo/in/missing.csv", "acc://demo/in/notes.txt"]
        )
    assert len(refused.value.problems) == 2
    assert "launch of" in str(refused.value) and "2 problem(s)" in str(refused.value)


def test_the_prefect_server_enforces_the_mapping_too(
    acc: Accelerator, platform: PlatformInfo, tables: ModelRepo
) -> None:
    """What JSON Schema can say is in the deployment's schema, so a launch that
    bypasses the product (Prefect UI, raw API) is refused by the server."""

    async def raw_launch(inputs: dict[str, Any]) -> None:
        async with prefect_client(platform.api_url) as client:
            [hosted] = await read_versions(client, model=tables.name)
            await client.create_flow_run_from_deployment(
                hosted.deployment_id, parameters={"conf": {}, "inputs": inputs}
            )

    before = count_runs(platform.api_url, f"{tables.name}@1.0.0")
    asyncio.run(raw_launch({"selected_files": ["acc://demo/in/few/a.csv"]}))
    assert count_runs(platform.api_url, f"{tables.name}@1.0.0") == before + 1

    too_many = [f"acc://demo/in/many/t{i}.csv" for i in range(4)]
    for inputs in (
        {"selected_files": too_many},
        {"selected_files": ["acc://demo/in/notes.txt"]},
        {"selected_files": ["https://example.invalid/x.csv"]},
    ):
        with pytest.raises(PrefectHTTPStatusError, match="409"):
            asyncio.run(raw_launch(inputs))


def _artifacts(api_url: str, run_id: uuid.UUID) -> list[Any]:
    async def read() -> list[Any]:
        async with prefect_client(api_url) as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )

    return asyncio.run(read())


def test_routines_read_the_selection_and_the_run_lists_its_outputs(
    user: User, platform: PlatformInfo, tables: ModelRepo, tables_runs: TablesRuns
) -> None:
    run, run_two = tables_runs.one, tables_runs.two
    assert run.wait(timeout=120) == "Completed", "\n".join(run.logs())
    assert run.result() == {"b.csv": 3}

    assert run_two.wait(timeout=120) == "Completed", "\n".join(run_two.logs())
    assert run_two.result() == {"a.csv": 2, "b.csv": 3, "c.csv": 1}
    outputs = run_two.outputs()
    assert [(f.path, f.size, f.media_type) for f in outputs] == [
        ("a.csv.rows.txt", 1, "text/plain"),
        ("b.csv.rows.txt", 1, "text/plain"),
        ("c.csv.rows.txt", 1, "text/plain"),
        ("summary.csv", 34, "text/csv"),
    ]
    assert outputs[0].uri == f"acc://demo/results/{tables.name}/1.0.0/{run_two.id}/a.csv.rows.txt"
    assert run_two.outputs_complete
    assert user.acc.storage.open(outputs[-1].uri, "rb").read().decode().splitlines()[1:] == [
        "a.csv,2",
        "b.csv,3",
        "c.csv,1",
    ]
    # Besides Prefect's own result artifact, one table of the outputs.
    [artifact] = [a for a in _artifacts(platform.api_url, run_two.id) if a.type == "table"]
    assert artifact.key == "tables-outputs"
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [row["file"] for row in table] == [f.path for f in outputs]
    assert any("wrote 4 file(s)" in line for line in run_two.logs())


def test_the_caller_chooses_where_outputs_go(user: User, tables_runs: TablesRuns) -> None:
    run, target = tables_runs.chosen, tables_runs.target
    assert run.wait(timeout=120) == "Completed", "\n".join(run.logs())
    assert run.output_location == target
    listed = [e.name for e in user.acc.storage.ls(target)]
    assert listed == ["c.csv.rows.txt", "provenance.json", "summary.csv"]


def test_a_failed_run_marks_its_partial_outputs(user: User, tables_runs: TablesRuns) -> None:
    run = tables_runs.failed
    assert run.wait(timeout=120) == "Failed"
    assert [f.path for f in run.outputs()] == ["a.csv.rows.txt"]
    assert not run.outputs_complete
    marker = json.loads(user.acc.storage.open(f"{run.output_location}{INCOMPLETE}", "rb").read())
    assert marker["complete"] is False and marker["files"] == ["a.csv.rows.txt"]
    assert marker["error"] == "RuntimeError" and "failing on purpose" not in json.dumps(marker)


def test_a_crashed_run_leaves_no_complete_looking_file(
    user: User, platform: PlatformInfo, tables_runs: TablesRuns
) -> None:
    run = tables_runs.crashed
    assert run.wait(timeout=120) == "Crashed", "\n".join(run.logs())
    assert [f.path for f in run.outputs()] == ["a.csv.rows.txt"]
    assert not run.outputs_complete
    assert not user.acc.storage.exists(f"{run.output_location}big.bin")
    folder = platform.home / "storage" / str(run.output_location)[len("acc://") :]
    hidden = [p.name for p in Path(folder).iterdir() if p.name.startswith(".")]
    assert len(hidden) == 1 and hidden[0].startswith(".big.bin.acc-partial-")


def test_cloud_inputs_where_the_manifest_allows_them(
    user: User, s3_server: S3Server, cloud_tables: str, tables_runs: TablesRuns
) -> None:
    run = tables_runs.cloud
    assert run.wait(timeout=120) == "Completed", "\n".join(run.logs())
    assert run.result() == {"x.csv": 4}
    # A missing object reads like any other failure to fetch (see tests/test_fetching.py).
    with pytest.raises(
        InvalidInputs, match=re.escape(f"s3://acc-test/cloud/nothing.csv {UNREADABLE}")
    ):
        user.acc.launch(cloud_tables, inputs=[f"s3://{s3_server.bucket}/cloud/nothing.csv"])


def test_a_platform_on_s3_reads_and_writes_acc_paths_in_the_bucket(
    platform: PlatformInfo, s3_server: S3Server, tmp_path: Path
) -> None:
    """A worker configured only through its environment (ACC_STORAGE_URL and
    ACC_STORAGE_OPTIONS, as on another machine) serves acc:// from S3. It is Prefect's
    process worker on a process pool, which `ACC_WORKER=process` keeps available."""
    with pool_on_s3(platform, s3_server, "process") as (acc, pool, prefix):
        repo = ModelRepo(tmp_path / "s3", f"tables-{uuid.uuid4().hex[:8]}")
        repo.tables(extra=f"work_pool: {pool}").commit("tables on s3")
        acc.publish(repo.manifest)
        _seed(acc.storage, "acc://demo/in")
        assert isinstance(acc.storage.fs, AccFileSystem) and acc.storage.fs.is_object_store

        run = acc.launch(repo.name, inputs=["acc://demo/in/few/"])
        assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
        assert run.result() == {"a.csv": 2, "b.csv": 3, "c.csv": 1}
        assert [f.path for f in run.outputs()][-1] == "summary.csv"
        key = f"{prefix}/demo/results/{repo.name}/1.0.0/{run.id}/summary.csv"
        assert s3_server.filesystem().cat_file(key).startswith(b"file,rows\n")
        with pytest.raises(
            InvalidInputs, match=re.escape("acc://demo/in/few/zzz.csv does not exist")
        ):
            acc.launch(repo.name, inputs=["acc://demo/in/few/zzz.csv"])


def test_the_schema_says_what_json_schema_can() -> None:
    from jsonschema import Draft202012Validator

    schema = inputs_schema(InputMapping(max_files=2, accepted_types=[".nc", ".CSV"]))
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"selected_files": ["acc://a/b.NC", "acc://a/c.csv"]})
    assert not validator.is_valid({"selected_files": ["acc://a/b.nc"] * 3})
    assert not validator.is_valid({"selected_files": ["acc://a/b.txt"]})
    assert not validator.is_valid({"selected_files": ["https://x.invalid/b.nc"]})
    assert parse_size("1.5 GiB") == 1610612736 and parse_size("500 MB") == 500_000_000
