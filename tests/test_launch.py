from __future__ import annotations

import asyncio
import csv
import io
import re
import shutil
import uuid
from pathlib import Path

import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.exceptions import PrefectHTTPStatusError

from accelerator_prefect import Accelerator, InvalidConf, NotFound, Run, data
from accelerator_prefect.bundled import data_folder as bundled_data
from accelerator_prefect.bundled import seed_example_data, seed_reference_data
from accelerator_prefect.manifest import load_manifest
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.settings import get_settings
from accelerator_prefect.storage import Storage
from accelerator_prefect.transport import prefect_client
from tests.conftest import ROOT, ModelRepo, User

pytestmark = pytest.mark.scale  # run on PostgreSQL too (make test-postgres)

PORTAL_ONLY = pytest.mark.parametrize("user", ["portal"], indirect=True)
"""For a test running a heavy model: its user only through the portal, so it runs once."""


def count_runs(api_url: str, deployment_name: str, home: Path | None = None) -> int:
    """Runs of one deployment, read with the auth string of the platform under ``home``
    (``ACC_HOME``'s by default)."""
    auth_string = get_settings(home=home).service_auth_string()

    async def count() -> int:
        async with prefect_client(api_url, auth_string=auth_string) as client:
            return await client.count_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=[deployment_name])
                )
            )

    return asyncio.run(count())


def connect_like(user: User, token: str) -> Accelerator:
    """A client for ``token``, reaching the platform the way ``user``'s client does."""
    if user.via == "portal":
        return Accelerator.connect(url=user.acc.api_url, token=token)
    return Accelerator.connect(user.acc.api_url, token=token)


def uploaded_inputs(user: User, sample: str) -> str:
    """A bundled example's sample inputs (``climate/coarse-cmip6``), uploaded by ``user``
    into their own area as users bring their data; their acc:// folder."""
    user.acc.storage.put(bundled_data() / sample, f"acc://users/{user.name}/")
    return f"acc://users/{user.name}/{sample.rsplit('/', 1)[-1]}/"


def bundled_example(folder: Path, model: str) -> ModelRepo:
    """A bundled example committed in its own repository, its sample inputs in storage
    and its DVC-tracked reference data in the platform's DVC remote."""
    repo = ModelRepo(folder, model)
    flow = f"flows/{model.replace('-', '_')}.py"
    manifest = ROOT / "deployments" / f"{model}.yaml"
    repo.write(flow, (ROOT / flow).read_text())
    repo.write(f"deployments/{model}.yaml", manifest.read_text())
    environment = load_manifest(manifest).environment
    if environment:  # the libraries it computes with
        repo.write(environment, (ROOT / environment).read_text())
    paths = load_manifest(manifest).data
    if paths:
        remote = get_settings().data_remote
        seed_reference_data([manifest], remote, lambda _: None)  # makes the files if missing
        for name in [".dvc/config", ".dvc/.gitignore", ".dvcignore"]:
            repo.write(name, (ROOT / name).read_text())
        for path in paths:
            for name in [f"{path}.dvc", str(Path(path).parent / ".gitignore")]:
                repo.write(name, (ROOT / name).read_text())
            shutil.copyfile(ROOT / path, repo.path / path)
        data.commit_workspace(repo.path, paths)
        data.push(repo.path, data.DataRemote(url=remote), paths)
    repo.commit(f"{model} 1.0.0")
    seed_example_data(Storage())
    return repo


@pytest.fixture(scope="module")
def climate_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepo:
    """The bundled climate-downscaling example, committed in its own repository."""
    return bundled_example(tmp_path_factory.mktemp("climate"), "climate-downscaling")


@PORTAL_ONLY
@pytest.mark.computes
def test_climate_downscaling_runs_to_completion_and_writes_its_outputs(
    acc: Accelerator, platform: PlatformInfo, climate_repo: ModelRepo, user: User
) -> None:
    acc.publish(climate_repo.manifest)
    run = user.acc.launch(
        "climate-downscaling",
        conf={"scenario": "ssp245", "target_region": "alps", "base_year": 1995},
        inputs=[uploaded_inputs(user, "climate/coarse-cmip6")],
    )
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    assert run.state == "Completed"
    assert [(f.path, f.media_type) for f in run.outputs()] == [
        ("downscaled.nc", "application/x-netcdf"),
        ("quicklook.png", "image/png"),
        ("summary.csv", "text/csv"),
    ]
    assert run.outputs_complete

    # Not a member of the model's project: the outputs go to the user's own area.
    result = run.result()
    assert result["files"] == ["downscaled.nc", "quicklook.png", "summary.csv"]
    output = f"acc://users/{user.name}/results/climate-downscaling/1.0.0/{run.id}/"
    assert result["output"] == run.output_location == output
    folder = platform.home / "storage" / "users" / user.name / "results" / "climate-downscaling"
    assert (folder / "1.0.0" / str(run.id) / "summary.csv").is_file()  # on the platform
    with user.acc.storage.open(f"{output}quicklook.png") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with user.acc.storage.open(f"{output}downscaled.nc") as f:
        assert f.read(3) == b"CDF"
    with user.acc.storage.open(f"{output}summary.csv") as f:
        rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
    assert {r["sub_region"] for r in rows} >= {"west lowland", "central highland"}
    # Highlands are colder than lowlands after the lapse-rate correction, and ssp245 warms.
    by_name = {r["sub_region"]: r for r in rows}
    assert float(by_name["central highland"]["tas_annual_mean_c"]) < float(
        by_name["central lowland"]["tas_annual_mean_c"]
    )
    assert all(float(r["tas_change_k"]) > 1.0 for r in rows)

    logs = run.logs()
    assert any("postprocess: wrote downscaled.nc" in line for line in logs)


def test_run_is_tagged_and_named_after_model_version_and_user(
    acc: Accelerator, platform: PlatformInfo, echo_repo: ModelRepo, user: User
) -> None:
    acc.publish(echo_repo.manifest)
    run = user.acc.launch(echo_repo.name, conf={"message": "hi", "repeat": 2})
    assert run.wait(timeout=120) == "Completed"
    assert run.result() == {"code": "v1", "text": "HI HI"}

    async def read() -> object:
        async with prefect_client(platform.api_url) as client:
            return await client.read_flow_run(run.id)

    flow_run = asyncio.run(read())
    assert {
        f"acc:model:{echo_repo.name}",
        "acc:version:1.0.0",
        f"acc:user:{user.name}",
        f"acc:via:{user.via}",  # python, or portal: how it was launched
    } <= set(flow_run.tags)  # type: ignore[attr-defined]
    assert flow_run.name.startswith(f"{echo_repo.name} 1.0.0 · {user.name} · ")  # type: ignore[attr-defined]
    assert run.name == flow_run.name  # type: ignore[attr-defined]
    # Where to look at it: its page in the Prefect UI, or its resource in the portal.
    assert run.url == (
        f"{platform.ui_url}/runs/flow-run/{run.id}"
        if user.via == "python"
        else f"{user.acc.api_url}/api/v1/runs/{run.id}"
    )
    # Each line says which routine logged it.
    assert any(re.search(r"INFO +shout-\w+ │ shouting 'hi' x2", line) for line in run.logs()), (
        run.logs()
    )


def test_invalid_conf_is_refused_with_field_paths_and_creates_no_run(
    acc: Accelerator, platform: PlatformInfo, echo_repo: ModelRepo, user: User
) -> None:
    acc.publish(echo_repo.manifest)
    with pytest.raises(InvalidConf) as error:
        user.acc.launch(echo_repo.name, conf={"repeat": 30, "mesage": "typo"})
    assert error.value.problems == [
        "conf.mesage: unknown field (expected one of: message, repeat)",
        "conf.repeat: 30 is greater than the maximum of 10",
    ]
    assert count_runs(platform.api_url, f"{echo_repo.name}@1.0.0") == 0


def test_the_server_enforces_the_schema_for_clients_that_skip_the_launcher(
    platform: PlatformInfo, acc: Accelerator, echo_repo: ModelRepo
) -> None:
    acc.publish(echo_repo.manifest)
    deployment_id = acc.get(echo_repo.name).latest.deployment_id

    async def raw_launch() -> None:
        async with prefect_client(platform.api_url) as client:
            await client.create_flow_run_from_deployment(
                deployment_id, parameters={"conf": {"repeat": 99}}
            )

    with pytest.raises(PrefectHTTPStatusError, match="409"):
        asyncio.run(raw_launch())


def test_launch_takes_the_newest_version_unless_one_is_named(
    acc: Accelerator, echo_repo: ModelRepo, user: User
) -> None:
    acc.publish(echo_repo.manifest)
    echo_repo.echo(version="1.10.0", code_version="v1.10")
    echo_repo.commit("1.10.0")
    acc.publish(echo_repo.manifest)
    echo_repo.echo(version="1.9.0", code_version="v1.9")
    echo_repo.commit("1.9.0 published later")
    acc.publish(echo_repo.manifest)

    assert [v.version for v in user.acc.get(echo_repo.name).versions] == [
        "1.10.0",
        "1.9.0",
        "1.0.0",
    ]
    newest = user.acc.launch(echo_repo.name)
    pinned = user.acc.launch(echo_repo.name, version="1.0.0")
    assert newest.wait(timeout=120) == "Completed" and pinned.wait(timeout=120) == "Completed"
    # Each version ran its own commit, although the work tree now holds 1.9.0.
    assert newest.result()["code"] == "v1.10"
    assert pinned.result()["code"] == "v1"


def test_unknown_model_and_version_are_not_found(
    acc: Accelerator, echo_repo: ModelRepo, user: User
) -> None:
    with pytest.raises(NotFound, match="model 'no-such-model' not found"):
        user.acc.launch("no-such-model")
    acc.publish(echo_repo.manifest)
    with pytest.raises(NotFound, match=r"version '9.9.9' not found \(published: 1.0.0\)"):
        user.acc.launch(echo_repo.name, version="9.9.9")


_FAILED: dict[str, tuple[ModelRepo, Run]] = {}


def failed_run(
    acc: Accelerator, user: User, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ModelRepo, Run]:
    """``user``'s run (message "hi") of an echo model whose jobflow raises, and its repository;
    made once per user for the session: the failure tests here and in test_provenance read it."""
    if user.name not in _FAILED:
        repo = ModelRepo(tmp_path_factory.mktemp("broken"), f"echo-{uuid.uuid4().hex[:8]}").echo()
        repo.commit("echo 1.0.0")
        flow = repo.path / "flows" / "echo.py"
        flow.write_text(
            flow.read_text().replace(
                'return {"code"', 'raise RuntimeError("model broke")\n    return {"code"'
            )
        )
        repo.commit("break it")
        acc.publish(repo.manifest)
        run = user.acc.launch(repo.name, conf={"message": "hi"})
        assert run.wait(timeout=120) == "Failed"
        _FAILED[user.name] = repo, run
    return _FAILED[user.name]


def test_a_failing_run_reports_failure(
    acc: Accelerator, user: User, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, run = failed_run(acc, user, tmp_path_factory)
    assert run.state == "Failed"
    with pytest.raises(Exception, match="ended Failed"):
        run.result()
    assert any("model broke" in line for line in run.logs())


@PORTAL_ONLY
@pytest.mark.computes
def test_data_harmonization_turns_station_tables_into_one_dataset(
    acc: Accelerator, tmp_path: Path, user: User
) -> None:
    import pandas as pd

    repo = bundled_example(tmp_path / "meteo", "data-harmonization")
    acc.publish(repo.manifest)

    run = user.acc.launch(
        "data-harmonization",
        conf={"tas_unit": "F", "pr_unit": "in"},
        inputs=[uploaded_inputs(user, "meteo/stations")],
    )
    assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    assert [f.path for f in run.outputs()] == [
        "harmonized.parquet",
        "quality.csv",
        "quality_report.md",
        "timeseries.png",
    ]
    with user.acc.storage.open(f"{run.output_location}harmonized.parquet") as f:
        table = pd.read_parquet(f)
    assert set(table["station"]) == {"CH-SAE", "DE-HPB", "ES-MAD", "FI-SOD", "US-BOU"}
    assert {"tas_f", "pr_in"} <= set(table.columns)
    # One row per station and day, whatever the sources repeated.
    assert not table.duplicated(["station", "date"]).any()
    # Fahrenheit: a cold Säntis winter and a hot Madrid summer, no Kelvin or °C left over.
    assert table["tas_f"].dropna().between(-80, 125).all()
    with user.acc.storage.open(f"{run.output_location}quality.csv") as f:
        quality = pd.read_csv(f).set_index("station")
    assert quality.loc["US-BOU", "duplicates_dropped"] >= 1
    assert quality.loc["FI-SOD", "tas_out_of_range"] >= 1  # 0 K in the Finnish file
    assert quality.loc["FI-SOD", "longest_gap_days"] == 12
    assert quality.loc["CH-SAE", "date_column"] == "obs_date"
