"""The bundled crop-yield model, run through the real platform on its sample weather."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from accelerator_prefect import Accelerator, InvalidConf, Run
from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ROOT, ModelRepo, User
from tests.test_launch import PORTAL_ONLY, bundled_example, count_runs

SAMPLES = "acc://agri/examples/weather/"
FIELDS = {"continental_humid", "oceanic_wet", "semiarid_dry", "subtropical_monsoon"}
IRRIGATED = {"irrigation": {"amount_mm": 30, "interval_days": 7}}
_RUNS: dict[tuple[str, str], Run] = {}


@pytest.fixture(scope="module")
def crop_repo(tmp_path_factory: pytest.TempPathFactory, acc: Accelerator) -> ModelRepo:
    """The bundled crop-yield example in its own repository, published, its samples seeded."""
    repo = bundled_example(tmp_path_factory.mktemp("agri"), "crop-yield")
    acc.publish(repo.manifest)
    return repo


def completed(user: User, conf: dict[str, Any]) -> Run:
    """``user``'s Completed run of crop-yield on the samples with ``conf``, launched once."""
    key = (user.name, json.dumps(conf, sort_keys=True))
    if key not in _RUNS:
        run = user.acc.launch("crop-yield", conf=conf, inputs=[SAMPLES])
        assert run.wait(timeout=240) == "Completed", "\n".join(run.logs())
        _RUNS[key] = run
    return _RUNS[key]


def rows(run: Run, name: str) -> list[dict[str, str]]:
    with run.open_output(name) as f:
        return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))


def table(run: Run) -> dict[str, dict[str, str]]:
    """yield.csv by field."""
    return {row["field"]: row for row in rows(run, "yield.csv")}


def yields(run: Run) -> dict[str, float]:
    return {name: float(row["yield_t_ha"]) for name, row in table(run).items()}


@PORTAL_ONLY
def test_crop_yield_estimates_every_sample_field_with_its_range(
    crop_repo: ModelRepo, user: User
) -> None:
    run = completed(user, {})  # the defaults: maize sown 2023-04-25 on loam, rain-fed
    assert [f.path for f in run.outputs()] == [
        "ensemble.csv",
        "summary.md",
        "yield.csv",
        "yield.png",
    ]
    fields = table(run)
    assert set(fields) == FIELDS
    for name, row in fields.items():
        p05, median, p95 = (float(row[f"yield{k}_t_ha"]) for k in ("_p05", "", "_p95"))
        # Dry grain maize: a few t/ha under drought, up to 12–14 with water and sun.
        assert 2.0 <= p05 <= median <= p95 <= 16.0, (name, p05, median, p95)
        assert p05 < p95, name  # an ensemble, not one number
        assert row["crop"] == "maize" and row["water"] == "rain-fed"
        assert row["flowering_date"] < row["maturity_date"], name
        assert "2023-06-01" <= row["flowering_date"] <= "2023-08-15", name
    # The dry field yields less than the wet ones, and it is the water that says why.
    dry, wet = fields["semiarid_dry"], fields["oceanic_wet"]
    assert float(dry["yield_t_ha"]) < 0.8 * min(
        float(fields[f]["yield_t_ha"]) for f in ("oceanic_wet", "continental_humid")
    )
    assert float(dry["season_rain_mm"]) < float(wet["season_rain_mm"])
    assert int(dry["water_stress_days"]) > int(wet["water_stress_days"]) + 10
    assert float(dry["harvest_index"]) < float(wet["harvest_index"])

    members = rows(run, "ensemble.csv")
    assert len(members) == 4 * 50  # the default ensemble, every field under the same draws
    by_field = {f: [m for m in members if m["field"] == f] for f in FIELDS}
    offsets = {f: [m["temperature_offset_c"] for m in ms] for f, ms in by_field.items()}
    assert len({tuple(o) for o in offsets.values()}) == 1
    with run.open_output("yield.png") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with run.open_output("summary.md") as f:
        summary = f.read().decode()
    assert "# Crop yield: maize, sown 2023-04-25" in summary
    assert f"| semiarid_dry | **{float(dry['yield_t_ha']):.2f}** |" in summary
    assert any("simulate: semiarid_dry: maize" in line for line in run.logs())


@PORTAL_ONLY
def test_a_rerun_of_crop_yield_gives_identical_outputs(crop_repo: ModelRepo, user: User) -> None:
    first = completed(user, {})
    again = user.acc.rerun(str(first.id))
    assert again.wait(timeout=240) == "Completed", "\n".join(again.logs())
    assert again.output_location != first.output_location
    a, b = first.provenance(), again.provenance()
    assert {(Path(o.uri).name, o.sha256) for o in a.outputs} == {
        (Path(o.uri).name, o.sha256) for o in b.outputs
    }
    found = user.acc.diff(str(first.id), str(again.id))
    assert found.identical and found.same_outputs == 4, found


@PORTAL_ONLY
def test_irrigation_raises_the_dry_fields_yield(crop_repo: ModelRepo, user: User) -> None:
    rainfed, irrigated = completed(user, {}), completed(user, IRRIGATED)
    before, after = yields(rainfed), yields(irrigated)
    assert after["semiarid_dry"] > 1.5 * before["semiarid_dry"]
    # Where rain was enough, water adds little; nowhere does it take away.
    assert all(after[f] >= before[f] for f in FIELDS)
    assert after["subtropical_monsoon"] < 1.1 * before["subtropical_monsoon"]
    dry = table(irrigated)["semiarid_dry"]
    assert dry["water"] == "30 mm every 7 days"
    assert float(dry["irrigation_mm"]) > 200
    assert dry["water_stress_days"] == "0"


@PORTAL_ONLY
def test_other_crops_and_soils_change_the_yield_as_agronomy_expects(
    crop_repo: ModelRepo, user: User
) -> None:
    maize = yields(completed(user, {}))
    soybean = yields(completed(user, {"crop": "soybean"}))
    sand = yields(completed(user, {"soil": "sand"}))
    # Soybean yields about half of maize; a sand, holding little water, lowers every
    # rain-fed yield.
    assert all(1.5 <= soybean[f] <= 0.7 * maize[f] for f in FIELDS), soybean
    assert all(sand[f] < maize[f] for f in FIELDS), sand
    assert sand["semiarid_dry"] < 0.8 * maize["semiarid_dry"]


@PORTAL_ONLY
def test_a_bad_crop_yield_conf_is_refused_or_fails_naming_the_field(
    platform: PlatformInfo, crop_repo: ModelRepo, user: User
) -> None:
    before = count_runs(platform.api_url, "crop-yield@1.0.0")
    with pytest.raises(InvalidConf) as error:
        user.acc.launch("crop-yield", conf={"soil": "peat", "ensemble_size": 5}, inputs=[SAMPLES])
    assert error.value.problems == [
        "conf.ensemble_size: 5 is less than the minimum of 10",
        "conf.soil: 'peat' is not one of ['sand', 'sandy_loam', 'loam', 'silt_loam', 'clay']",
    ]
    assert count_runs(platform.api_url, "crop-yield@1.0.0") == before

    # Outside the weather: only the files know their period, so the run says it.
    run = user.acc.launch("crop-yield", conf={"sowing_date": "2024-04-25"}, inputs=[SAMPLES])
    assert run.wait(timeout=240) == "Failed"
    failure = run.failure()
    assert failure is not None and failure.routine == "read_weather"
    assert failure.message.startswith(
        "conf.sowing_date: 2024-04-25 is outside the weather of field continental_humid "
        "(2023-01-01 to 2023-12-31); choose a sowing date from 2023-01-01 to 2023-12-30"
    ), failure.message


@PORTAL_ONLY
def test_a_weather_file_without_radiation_fails_naming_the_file_and_column(
    crop_repo: ModelRepo, user: User, tmp_path: Path
) -> None:
    folder = tmp_path / "my-fields"
    folder.mkdir()
    sample = (ROOT / "examples/data/agri/weather/oceanic_wet.csv").read_text()
    (folder / "north_plot.csv").write_text(sample.replace(",srad_mj_m2", ""))
    user.acc.storage.put(folder, f"acc://users/{user.name}/")
    run = user.acc.launch("crop-yield", inputs=[f"acc://users/{user.name}/my-fields/"])
    assert run.wait(timeout=240) == "Failed"
    failure = run.failure()
    assert failure is not None
    assert failure.message.startswith(
        "inputs: north_plot.csv has no column srad_mj_m2 (found: date, tmin_c, tmax_c, "
        "precip_mm); the weather needs date, tmin_c, tmax_c, precip_mm, srad_mj_m2"
    ), failure.message
