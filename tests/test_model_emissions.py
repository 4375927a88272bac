"""The bundled emissions-impact model, launched through the platform against its
emission-factor service (the stand-in ``examples/factor_service.py``, on a free port)."""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType

import pytest

from accelerator_prefect import Accelerator, Run
from accelerator_prefect.manifest import load_manifest
from accelerator_prefect.platform import PlatformInfo, free_port
from tests.conftest import ROOT, User
from tests.test_launch import PORTAL_ONLY, bundled_example
from tests.test_secrets import _everything_prefect_shows

MODEL = "emissions-impact"
REFUSED = "the emission-factor service refused the key: check FACTOR_API_KEY"
OUTPUTS = [
    "concentration_map.png",
    "emissions.csv",
    "emissions.png",
    "plume_centreline.csv",
    "report.md",
]


def _factor_service() -> ModuleType:
    path = ROOT / "examples" / "factor_service.py"
    spec = importlib.util.spec_from_file_location("factor_service", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FACTORS = _factor_service()


@dataclass(frozen=True)
class Service:
    url: str
    key: str


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """The stand-in emission-factor service, answering in a thread on a free port."""
    key = "fk-" + uuid.uuid4().hex
    server = FACTORS.serve(free_port(), key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Service(f"http://127.0.0.1:{server.server_address[1]}", key)
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def samples(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The model published from its own repository; its sample inputs, as the catalog's
    "Use the sample inputs" selects them."""
    repo = bundled_example(tmp_path_factory.mktemp("environment"), MODEL)
    acc.publish(repo.manifest)
    return load_manifest(repo.manifest).inputs.samples


def read_csv(user: User, run: Run, name: str) -> list[dict[str, str]]:
    with user.acc.storage.open(f"{run.output_location}{name}") as f:
        return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))


def read_text(user: User, run: Run, name: str) -> str:
    with user.acc.storage.open(f"{run.output_location}{name}") as f:
        return str(f.read().decode("utf-8"))


def emitted(rows: list[dict[str, str]], year: int, sector: str, pollutant: str) -> float:
    (row,) = [
        r
        for r in rows
        if (r["year"], r["sector"], r["pollutant"]) == (str(year), sector, pollutant)
    ]
    return float(row["emissions_t"])


def factor(table: str, sector: str, pollutant: str) -> float:
    return float(FACTORS.TABLES[table]["sectors"][sector]["factors"][pollutant]["value"])


def briggs_rural_d(x: float) -> tuple[float, float]:
    """σy, σz (m) of stability class D in open country (Briggs 1973), written out here."""
    return 0.08 * x / math.sqrt(1 + 0.0001 * x), 0.06 * x / math.sqrt(1 + 0.0015 * x)


@PORTAL_ONLY
def test_emissions_impact_projects_the_sample_scenario_and_maps_its_plume(
    user: User, samples: list[str], service: Service
) -> None:
    run = user.acc.launch(
        MODEL,
        conf={"service_url": service.url},
        inputs=samples,
        secrets={"FACTOR_API_KEY": service.key},
    )
    assert run.wait(timeout=240) == "Completed", "\n".join(run.logs())
    assert [f.path for f in run.outputs()] == OUTPUTS
    rows = read_csv(user, run, "emissions.csv")

    # The sample CSVs replace the conf's scenario: power burns 4200 GWh and 8.5 PJ of fuel
    # (23,620 TJ), at the eea-2023 factor the service gives (kg/TJ), in tonnes.
    power_tj = 4200 * 3.6 + 8.5 * 1000
    co2 = power_tj * factor("eea-2023", "power", "CO2") / 1000
    assert emitted(rows, 2025, "power", "CO2") == pytest.approx(co2, rel=1e-9)
    # Power shrinks by 2 % a year, compounded from 2025; traffic (4580 Mvkm, g/vkm) grows 1 %.
    assert emitted(rows, 2050, "power", "CO2") == pytest.approx(co2 * 0.98**25, rel=1e-9)
    nox = 4580e6 * factor("eea-2023", "transport", "NOx") / 1e6
    assert emitted(rows, 2030, "transport", "NOx") == pytest.approx(nox * 1.01**5, rel=1e-9)
    assert {r["year"] for r in rows} == {str(y) for y in range(2025, 2051)}
    assert len(rows) == 26 * 5 * 4  # years × sectors × pollutants

    # The report's totals are the table's.
    report = read_text(user, run, "report.md")
    total = sum(float(r["emissions_t"]) for r in rows if r["pollutant"] == "CO2")
    start = sum(emitted(rows, 2025, s, "CO2") for s in {r["sector"] for r in rows})
    assert f"| CO2 | {start / 1e3:,.1f} kt |" in report
    assert f"{total / 1e3:,.1f} kt |" in report

    # The plume: zero at the stack's foot, a peak downwind, falling off beyond it; the more
    # unstable the air, the closer the peak.
    profile = read_csv(user, run, "plume_centreline.csv")
    distance = [float(r["distance_m"]) for r in profile]
    by_class = {c: [float(r[f"class_{c}_ug_m3"]) for r in profile] for c in "ABCDEF"}
    peaks = {c: distance[max(range(len(v)), key=v.__getitem__)] for c, v in by_class.items()}
    assert peaks["A"] < peaks["B"] < peaks["C"] < peaks["D"] < peaks["E"]
    assert 1000 < peaks["D"] < 5000  # an effective height of 120 m, neutral air
    d = by_class["D"]
    at = distance.index(peaks["D"])
    assert d[0] == 0.0 and d[at] > 0
    assert all(a >= b for a, b in zip(d[at:], d[at + 1 :], strict=False))
    assert d[-1] < 0.5 * d[at]

    # The peak is the Gaussian plume of the stack sectors' 2025 NOx, by the formula.
    tonnes = emitted(rows, 2025, "power", "NOx") + emitted(rows, 2025, "industry", "NOx")
    rate_ug_s = tonnes * 1e12 / (365.25 * 86400)
    sy, sz = briggs_rural_d(peaks["D"])
    expected = rate_ug_s / (math.pi * 5.0 * sy * sz) * math.exp(-(120.0**2) / (2 * sz**2))
    assert d[at] == pytest.approx(expected, rel=1e-5)
    assert f"{d[at]:,.4g} µg/m³" in report

    for name in ("concentration_map.png", "emissions.png"):
        with user.acc.storage.open(f"{run.output_location}{name}") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # The key is in nothing the run shows or keeps.
    assert service.key not in "\n".join(run.logs())
    assert service.key not in run.provenance().model_dump_json()
    assert all(service.key not in read_text(user, run, n) for n in OUTPUTS if "png" not in n)

    # A rerun (same version, conf and inputs; the key given again) writes the same bytes.
    again = user.acc.rerun(str(run.id), secrets={"FACTOR_API_KEY": service.key})
    assert again.wait(timeout=240) == "Completed", "\n".join(again.logs())
    found = user.acc.diff(str(run.id), str(again.id))
    assert found.identical and found.same_outputs == len(OUTPUTS), found


@PORTAL_ONLY
def test_without_inputs_the_conf_scenario_runs_with_the_chosen_table(
    user: User, samples: list[str], service: Service
) -> None:
    run = user.acc.launch(
        MODEL,
        conf={"service_url": service.url, "factor_table": "epa-ap42", "end_year": 2030},
        secrets={"FACTOR_API_KEY": service.key},
    )
    assert run.wait(timeout=240) == "Completed", "\n".join(run.logs())
    rows = read_csv(user, run, "emissions.csv")
    assert {r["year"] for r in rows} == {str(y) for y in range(2025, 2031)}
    # The conf's 3500 Mvkm of traffic, at AP-42's grams per vehicle-mile.
    co2 = 3500e6 / 1.609344 * factor("epa-ap42", "transport", "CO2") / 1e6
    assert emitted(rows, 2025, "transport", "CO2") == pytest.approx(co2, rel=1e-9)
    # 20,000 TJ of fuel for power, at pounds per MMBtu.
    so2 = 20_000e3 / 1.055056 * factor("epa-ap42", "power", "SO2") * 0.45359237 / 1e3
    assert emitted(rows, 2025, "power", "SO2") == pytest.approx(so2, rel=1e-9)
    assert "activities from the conf's table" in read_text(user, run, "report.md")


@PORTAL_ONLY
def test_a_wrong_key_fails_the_run_with_a_clear_message_and_is_never_shown(
    acc: Accelerator, platform: PlatformInfo, user: User, samples: list[str], service: Service
) -> None:
    wrong, since = "fk-" + uuid.uuid4().hex, datetime.now(UTC)
    run = user.acc.launch(
        MODEL,
        conf={"service_url": service.url},
        inputs=samples,
        secrets={"FACTOR_API_KEY": wrong},
    )
    assert run.wait(timeout=240) == "Failed"
    failure = run.failure()
    assert failure is not None
    assert (failure.message, failure.routine) == (REFUSED, "fetch_factors")
    owner_view = acc.run(str(run.id)).failure()  # the operator owns it: the traceback too
    assert owner_view is not None and owner_view.details
    shown = [
        *run.logs(),
        owner_view.details,
        _everything_prefect_shows(platform.api_url, str(run.id), since),
    ]
    assert any(REFUSED in text for text in shown)
    assert not any(wrong in text or service.key in text for text in shown)
