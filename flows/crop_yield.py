"""Crop yield estimation from daily weather, with an ensemble for its uncertainty.

A simple process-based crop model, in the family of the textbook models
(SUCROS, AquaCrop, the FAO-56 water balance), run once per field and ensemble
member:

- **Phenology** from growing degree days: each day adds its mean temperature
  above the crop's base temperature (capped at a cutoff); the crop emerges,
  flowers and matures when the sum since sowing reaches the crop's thresholds.
- **Canopy**: the leaf area index (LAI) grows on an S-curve from emergence to
  flowering, slowed by water stress, and senesces to maturity (faster when
  stressed). It intercepts ``1 - exp(-k LAI)`` of the sunlight.
- **Water balance**: a bucket holding the soil's plant-available water over the
  crop's root depth (mm per metre by soil type), full on the first day of the
  weather and run from then on: rain (less runoff) and irrigation fill it,
  what overflows drains away; the crop transpires the reference
  evapotranspiration (Hargreaves' radiation formula, ``0.0135 (T + 17.8)
  Rs / λ``) times its crop coefficient and the intercepted fraction, and the
  bare soil between the plants evaporates. Once the crop has used more than
  its depletion fraction of the water, transpiration and growth fall in
  proportion (the FAO-56 stress coefficient ``Ks``).
- **Biomass** grows by radiation-use efficiency: ``RUE × intercepted solar
  radiation × Ks × f(T)``, with ``f(T)`` a trapezoid of the crop's cardinal
  temperatures. **Yield** is the biomass at maturity times the harvest index,
  lowered by water stress around flowering (and by an unfinished grain fill
  when the weather ends before maturity).

The **ensemble** perturbs, per member, the weather (a temperature offset, a
rain scaling) and the parameters (RUE, harvest index, the soil's water
capacity), drawn once from the conf's seed and shared by all fields, so fields
are compared under the same draws and a rerun is identical. The yield of a
field is the ensemble's median, with its 5–95 % range.

Inputs are one CSV of daily weather per field (the field is named after the
file): ``date, tmin_c, tmax_c, precip_mm, srad_mj_m2``, one row per day,
``#`` comment lines above the header allowed. ``examples/make_weather_data.py``
makes the bundled samples (four climates, 2023).

Yields are dry matter (grain at 0 % moisture); add 15.5 % for maize at market
moisture, 13.5 % for wheat, 13 % for soybean, 14 % for rice. Not modelled:
nitrogen, pests, frost and heat damage, lodging, waterlogging.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from pydantic import Field

from accelerator_prefect import Conf, InputFile, Inputs, Output, jobflow, routine

COLUMNS = ("date", "tmin_c", "tmax_c", "precip_mm", "srad_mj_m2")
NEEDED = ", ".join(COLUMNS)
LATENT_HEAT_MJ_KG = 2.45
FLOWERING_WINDOW_GDD = 100.0  # water stress this close to flowering lowers the harvest index
HARVEST_INDEX_STRESS_SENSITIVITY = 0.5
SOIL_EVAPORATION = 0.5  # bare, wet soil evaporates this fraction of the reference ET
STRESS_DAY_KS = 0.5  # a water-stress day: the crop transpires less than half its demand
RUNOFF_ABOVE_MM = 10.0  # daily rain beyond this partly runs off


class Crop(StrEnum):
    maize = "maize"
    wheat = "wheat"
    soybean = "soybean"
    rice = "rice"


class Soil(StrEnum):
    sand = "sand"
    sandy_loam = "sandy_loam"
    loam = "loam"
    silt_loam = "silt_loam"
    clay = "clay"


@dataclass(frozen=True)
class CropParameters:
    """A crop's phenology, canopy, growth and water use."""

    base_c: float  # no thermal time below
    cutoff_c: float  # no more thermal time above
    emergence_gdd: float  # °C·d from sowing
    flowering_gdd: float
    maturity_gdd: float
    lai_max: float  # m² leaf per m² ground, unstressed, at flowering
    extinction: float  # k of Beer's law
    rue_g_mj: float  # g dry matter per MJ of intercepted global radiation
    harvest_index: float
    root_depth_m: float
    depletion: float  # fraction of the available water used before stress (FAO-56 p)
    crop_coefficient: float  # transpiration at full cover, relative to the reference ET
    optimum_c: tuple[float, float]  # growth at its best between these daily means
    maximum_c: float  # no growth above


CROPS: dict[Crop, CropParameters] = {
    # A mid-season grain hybrid (about 2,450 °F growing degree days), C4.
    Crop.maize: CropParameters(
        base_c=10, cutoff_c=30, emergence_gdd=70, flowering_gdd=700, maturity_gdd=1350,
        lai_max=5.0, extinction=0.65, rue_g_mj=1.45, harvest_index=0.5, root_depth_m=1.2,
        depletion=0.55, crop_coefficient=1.2, optimum_c=(18, 32), maximum_c=42,
    ),
    # Spring-sown bread wheat, no vernalization.
    Crop.wheat: CropParameters(
        base_c=0, cutoff_c=26, emergence_gdd=120, flowering_gdd=1000, maturity_gdd=1650,
        lai_max=6.0, extinction=0.5, rue_g_mj=1.35, harvest_index=0.45, root_depth_m=1.2,
        depletion=0.55, crop_coefficient=1.15, optimum_c=(12, 25), maximum_c=35,
    ),
    # Maturity group II-III; its energy-rich seed makes its RUE low.
    Crop.soybean: CropParameters(
        base_c=10, cutoff_c=30, emergence_gdd=80, flowering_gdd=600, maturity_gdd=1300,
        lai_max=5.0, extinction=0.55, rue_g_mj=0.85, harvest_index=0.4, root_depth_m=1.0,
        depletion=0.5, crop_coefficient=1.15, optimum_c=(20, 30), maximum_c=40,
    ),
    # Lowland rice: shallow roots, stressed as soon as the soil dries.
    Crop.rice: CropParameters(
        base_c=10, cutoff_c=32, emergence_gdd=60, flowering_gdd=1000, maturity_gdd=1650,
        lai_max=6.0, extinction=0.5, rue_g_mj=1.4, harvest_index=0.45, root_depth_m=0.5,
        depletion=0.2, crop_coefficient=1.2, optimum_c=(22, 32), maximum_c=42,
    ),
}  # fmt: skip

# Plant-available water (mm per metre of soil) and the fraction of heavy rain that runs off.
SOILS: dict[Soil, tuple[float, float]] = {
    Soil.sand: (60.0, 0.05),
    Soil.sandy_loam: (110.0, 0.10),
    Soil.loam: (160.0, 0.15),
    Soil.silt_loam: (200.0, 0.18),
    Soil.clay: (130.0, 0.30),
}


class Irrigation(Conf):
    """A fixed irrigation schedule, from sowing to maturity."""

    amount_mm: float = Field(
        default=30.0,
        gt=0.0,
        le=150.0,
        title="Amount",
        description="Water given at each irrigation.",
        json_schema_extra={"x-unit": "mm"},
    )
    interval_days: int = Field(
        default=7,
        ge=1,
        le=60,
        title="Interval",
        description="Days between irrigations; the first is on the sowing day.",
        json_schema_extra={"x-unit": "days"},
    )


class YieldConf(Conf):
    """The crop, when it is sown, the field's soil and water, and the ensemble."""

    crop: Crop = Field(
        default=Crop.maize,
        description="Crop to simulate: its development, canopy, growth and water use.",
        json_schema_extra={
            "x-section": "Crop and season",
            "x-enum-titles": {
                "maize": "Maize (grain)",
                "wheat": "Wheat (spring-sown)",
                "soybean": "Soybean",
                "rice": "Rice",
            },
        },
    )
    sowing_date: date = Field(
        default=date(2023, 4, 25),
        title="Sowing date",
        description="Day the crop is sown in every field; it must lie within each field's "
        "weather (the sample weather covers 2023).",
        json_schema_extra={"x-section": "Crop and season"},
    )
    soil: Soil = Field(
        default=Soil.loam,
        description="Soil of the fields: how much water it holds for the crop, and how much "
        "heavy rain runs off.",
        json_schema_extra={
            "x-section": "Soil and water",
            "x-enum-titles": {
                "sand": "Sand (60 mm of available water per metre)",
                "sandy_loam": "Sandy loam (110 mm/m)",
                "loam": "Loam (160 mm/m)",
                "silt_loam": "Silt loam (200 mm/m)",
                "clay": "Clay (130 mm/m, more runoff)",
            },
        },
    )
    irrigation: Irrigation | None = Field(
        default=None,
        description="Irrigation schedule; leave it out for a rain-fed crop.",
        json_schema_extra={"x-section": "Soil and water"},
    )
    ensemble_size: int = Field(
        default=50,
        ge=10,
        le=500,
        title="Ensemble size",
        description="Members of the ensemble, each with its own perturbed weather and "
        "parameters; the yield range is their 5th to 95th percentile.",
        json_schema_extra={"x-section": "Uncertainty"},
    )
    seed: int = Field(
        default=2023,
        ge=0,
        le=2**32 - 1,
        description="Seed of the ensemble's perturbations: the same seed gives the same result.",
        json_schema_extra={"x-section": "Uncertainty", "x-advanced": True},
    )


@dataclass
class FieldWeather:
    name: str
    source: str  # the file, below the selected folder
    first: date
    tmin: np.ndarray  # °C, one value per day from ``first``
    tmax: np.ndarray
    rain: np.ndarray  # mm
    srad: np.ndarray  # MJ m-2

    @property
    def last(self) -> date:
        return self.first + timedelta(days=len(self.tmin) - 1)


@dataclass
class Perturbations:
    """Per ensemble member: weather offsets and parameter factors."""

    temperature_offset_c: np.ndarray
    rain_factor: np.ndarray
    rue_factor: np.ndarray
    harvest_index_factor: np.ndarray
    soil_water_factor: np.ndarray


@dataclass
class FieldResult:
    name: str
    first: date  # of the weather
    yield_t_ha: np.ndarray  # per member
    biomass_t_ha: np.ndarray
    harvest_index: np.ndarray
    flowering_day: np.ndarray  # days after the weather's first day; -1: not reached
    maturity_day: np.ndarray
    season_rain_mm: np.ndarray  # sowing to maturity (or the weather's end)
    irrigation_mm: np.ndarray
    season_et_mm: np.ndarray
    stress_days: np.ndarray
    soil_water: np.ndarray  # (day, member): fraction of the available water
    lai: np.ndarray  # (day, member)


# -- reading ----------------------------------------------------------------------------------


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        if not text.strip():
            raise ValueError(f"{where}: {column} is empty; the weather must have no gaps") from None
        raise ValueError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {column} {text!r} is not a number")
    return value


def parse_weather(name: str, source: str, text: str) -> FieldWeather:
    """One field's daily weather from the text of its CSV."""
    lines = text.lstrip("\ufeff").splitlines()
    table = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    if not table:
        raise ValueError(f"inputs: {source} holds no table; expected the columns {NEEDED}")
    start = table[0]
    rows = list(csv.reader(lines[start:]))
    header = [cell.strip().lower() for cell in rows[0]]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"inputs: {source} has no column {', '.join(missing)} (found: {', '.join(header)}); "
            f"the weather needs {NEEDED}"
        )
    at = {c: header.index(c) for c in COLUMNS}
    days: list[date] = []
    values: dict[str, list[float]] = {c: [] for c in COLUMNS[1:]}
    for offset, row in enumerate(rows[1:], start=start + 2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"inputs: {source} line {offset}"
        if len(row) < len(header):
            raise ValueError(f"{where}: {len(row)} values for {len(header)} columns")
        try:
            day = date.fromisoformat(row[at["date"]].strip())
        except ValueError:
            text = row[at["date"]]
            raise ValueError(f"{where}: date {text!r} is not a YYYY-MM-DD date") from None
        if days and day != days[-1] + timedelta(days=1):
            raise ValueError(
                f"{where}: {day} follows {days[-1]}; the weather needs one row per day, in order "
                "and without gaps"
            )
        days.append(day)
        for column in COLUMNS[1:]:
            values[column].append(_number(row[at[column]], column, where))
        tmin, tmax = values["tmin_c"][-1], values["tmax_c"][-1]
        if tmin > tmax:
            raise ValueError(f"{where}: tmin_c {tmin:g} is above tmax_c {tmax:g}")
        if values["precip_mm"][-1] < 0 or values["srad_mj_m2"][-1] < 0:
            raise ValueError(f"{where}: precip_mm and srad_mj_m2 cannot be negative")
    if len(days) < 30:
        raise ValueError(
            f"inputs: {source} has {len(days)} day(s) of weather; at least 30 are needed"
        )
    return FieldWeather(
        name=name,
        source=source,
        first=days[0],
        tmin=np.array(values["tmin_c"]),
        tmax=np.array(values["tmax_c"]),
        rain=np.array(values["precip_mm"]),
        srad=np.array(values["srad_mj_m2"]),
    )


def field_names(files: list[InputFile]) -> list[str]:
    """Each file's field: its name without the extension, or its path if two names clash."""
    stems = [PurePosixPath(f.name).stem for f in files]
    return [
        stem if stems.count(stem) == 1 else str(PurePosixPath(f.relative).with_suffix(""))
        for f, stem in zip(files, stems, strict=True)
    ]


def check_sowing(conf: YieldConf, fields: list[FieldWeather]) -> None:
    for field in fields:
        if not field.first <= conf.sowing_date < field.last:
            raise ValueError(
                f"conf.sowing_date: {conf.sowing_date} is outside the weather of field "
                f"{field.name} ({field.first} to {field.last}); choose a sowing date from "
                f"{field.first} to {field.last - timedelta(days=1)}"
            )


@routine(retries=1, retry_delay_seconds=1)
def read_weather(conf: YieldConf, files: list[InputFile]) -> list[FieldWeather]:
    """Read each field's daily weather and check that the sowing date lies within it."""
    csvs = sorted(
        (f for f in files if f.suffix == ".csv"), key=lambda f: (PurePosixPath(f.name).stem, f.uri)
    )
    if not csvs:
        raise ValueError("inputs: no .csv file among the selected files; select weather CSVs")
    fields = [
        parse_weather(name, f.relative, f.read_bytes().decode("utf-8-sig"))
        for f, name in zip(csvs, field_names(csvs), strict=True)
    ]
    check_sowing(conf, fields)
    for field in fields:
        print(
            f"read_weather: field {field.name}: {len(field.tmin)} days, {field.first} to "
            f"{field.last}, {field.rain.sum():.0f} mm of rain"
        )
    return fields


# -- the crop model ---------------------------------------------------------------------------


def perturbations(conf: YieldConf) -> Perturbations:
    """The ensemble's draws, from the seed alone: every field gets the same."""
    rng = np.random.default_rng(conf.seed)
    n = conf.ensemble_size
    return Perturbations(
        temperature_offset_c=rng.normal(0.0, 0.8, n),
        rain_factor=np.exp(rng.normal(0.0, 0.15, n)),
        rue_factor=np.clip(rng.normal(1.0, 0.08, n), 0.75, 1.25),
        harvest_index_factor=np.clip(rng.normal(1.0, 0.06, n), 0.8, 1.2),
        soil_water_factor=np.clip(rng.normal(1.0, 0.10, n), 0.7, 1.3),
    )


def reference_et(tmean: float | np.ndarray, srad: float) -> Any:
    """Reference evapotranspiration (mm/day), Hargreaves' formula with measured radiation."""
    return np.maximum(0.0135 * (tmean + 17.8) * srad / LATENT_HEAT_MJ_KG, 0.0)


def temperature_factor(tmean: np.ndarray, crop: CropParameters) -> np.ndarray:
    """Growth relative to the best, a trapezoid over the crop's cardinal temperatures."""
    low, high = crop.optimum_c
    rising = (tmean - crop.base_c) / (low - crop.base_c)
    falling = (crop.maximum_c - tmean) / (crop.maximum_c - high)
    return np.clip(np.minimum(rising, falling), 0.0, 1.0)


def potential_lai(progress: np.ndarray, crop: CropParameters) -> np.ndarray:
    """Unstressed LAI along the way from emergence (0) to flowering (1): an S-curve."""
    f = np.clip(progress, 0.0, 1.0)
    return np.asarray(0.05 + (crop.lai_max - 0.05) * f * f * (3 - 2 * f))


def irrigation_on(schedule: Irrigation | None, days_after_sowing: int) -> float:
    """Water given that day (mm): on the sowing day and every interval after."""
    if schedule is None or days_after_sowing < 0:
        return 0.0
    return schedule.amount_mm if days_after_sowing % schedule.interval_days == 0 else 0.0


def simulate_field(conf: YieldConf, weather: FieldWeather, draws: Perturbations) -> FieldResult:
    """Run every ensemble member over the field's weather, from its first day."""
    crop = CROPS[conf.crop]
    capacity_mm_m, runoff = SOILS[conf.soil]
    n, days = conf.ensemble_size, len(weather.tmin)
    sow = (conf.sowing_date - weather.first).days
    capacity = capacity_mm_m * crop.root_depth_m * draws.soil_water_factor
    water = capacity.copy()  # full after the winter
    gdd, lai, lai_at_flowering = np.zeros(n), np.zeros(n), np.zeros(n)
    biomass = np.zeros(n)  # g m-2
    flowering_day, maturity_day = np.full(n, -1), np.full(n, -1)
    rain_sum, irrigation_sum, et_sum, stress_days = (np.zeros(n) for _ in range(4))
    window_ks, window_days = np.zeros(n), np.zeros(n)
    soil_water, leaf_area = np.zeros((days, n)), np.zeros((days, n))
    sowing_to_flowering = crop.flowering_gdd - crop.emergence_gdd
    filling = crop.maturity_gdd - crop.flowering_gdd

    for day in range(days):
        tmean = (weather.tmin[day] + weather.tmax[day]) / 2 + draws.temperature_offset_c
        rain = weather.rain[day] * draws.rain_factor
        growing = (day >= sow) & (maturity_day < 0)
        irrigation = np.where(growing, irrigation_on(conf.irrigation, day - sow), 0.0)
        infiltration = rain - runoff * np.maximum(rain - RUNOFF_ABOVE_MM, 0.0) + irrigation
        water = np.minimum(water + infiltration, capacity)  # the rest drains below the roots

        # Phenology
        daily_gdd = np.clip(tmean - crop.base_c, 0.0, crop.cutoff_c - crop.base_c)
        thermal = np.where(growing, daily_gdd, 0.0)
        before = gdd.copy()
        gdd += thermal
        emerged = growing & (gdd >= crop.emergence_gdd)

        # Water stress (FAO-56): full supply until the depletion fraction is used up.
        ks = np.clip(water / ((1 - crop.depletion) * capacity), 0.0, 1.0)
        expansion = np.clip(water / ((1 - crop.depletion + 0.2) * capacity), 0.0, 1.0)

        # Canopy: growth to flowering, senescence to maturity.
        vegetative = emerged & (before < crop.flowering_gdd)
        grown = potential_lai((gdd - crop.emergence_gdd) / sowing_to_flowering, crop) - np.where(
            before >= crop.emergence_gdd,
            potential_lai((before - crop.emergence_gdd) / sowing_to_flowering, crop),
            0.0,
        )
        lai = np.where(vegetative, lai + grown * expansion, lai)
        flowers = growing & (before < crop.flowering_gdd) & (gdd >= crop.flowering_gdd)
        flowering_day = np.where(flowers, day, flowering_day)
        lai_at_flowering = np.where(flowers, lai, lai_at_flowering)
        senescing = growing & (before >= crop.flowering_gdd)
        loss = 0.8 * lai_at_flowering * thermal / filling * (2.0 - ks)
        lai = np.where(senescing, np.maximum(lai - loss, 0.0), lai)
        lai = np.where(growing, lai, 0.0)

        # Water use and growth
        intercepted = 1.0 - np.exp(-crop.extinction * lai)
        et0 = reference_et(tmean, weather.srad[day])
        transpiration = crop.crop_coefficient * intercepted * et0 * ks
        evaporation = SOIL_EVAPORATION * (1 - intercepted) * et0 * (water / capacity) ** 2
        used = np.minimum(transpiration + evaporation, water)
        water -= used
        biomass += np.where(
            emerged,
            crop.rue_g_mj
            * draws.rue_factor
            * weather.srad[day]
            * intercepted
            * ks
            * temperature_factor(tmean, crop),
            0.0,
        )
        near_flowering = emerged & (np.abs(gdd - crop.flowering_gdd) <= FLOWERING_WINDOW_GDD)
        window_ks += np.where(near_flowering, ks, 0.0)
        window_days += near_flowering
        stress_days += emerged & (ks < STRESS_DAY_KS)
        rain_sum += np.where(growing, rain, 0.0)
        irrigation_sum += irrigation
        et_sum += np.where(growing, used, 0.0)
        maturity_day = np.where(growing & (gdd >= crop.maturity_gdd), day, maturity_day)
        soil_water[day], leaf_area[day] = water / capacity, lai

    flowering_ks = np.where(window_days > 0, window_ks / np.maximum(window_days, 1), 1.0)
    grain_fill = np.clip((gdd - crop.flowering_gdd) / filling, 0.0, 1.0)
    harvest_index = (
        crop.harvest_index
        * draws.harvest_index_factor
        * (1 - HARVEST_INDEX_STRESS_SENSITIVITY * (1 - flowering_ks))
        * grain_fill
    )
    return FieldResult(
        name=weather.name,
        first=weather.first,
        yield_t_ha=biomass * harvest_index / 100.0,
        biomass_t_ha=biomass / 100.0,
        harvest_index=harvest_index,
        flowering_day=flowering_day,
        maturity_day=maturity_day,
        season_rain_mm=rain_sum,
        irrigation_mm=irrigation_sum,
        season_et_mm=et_sum,
        stress_days=stress_days,
        soil_water=soil_water,
        lai=leaf_area,
    )


@routine
def simulate(
    conf: YieldConf, fields: list[FieldWeather]
) -> tuple[Perturbations, list[FieldResult]]:
    """Run the ensemble on every field, with the same perturbations for all."""
    draws = perturbations(conf)
    results = [simulate_field(conf, field, draws) for field in fields]
    for result in results:
        p05, median, p95 = np.percentile(result.yield_t_ha, [5, 50, 95])
        print(
            f"simulate: {result.name}: {conf.crop.value} {median:.2f} t/ha "
            f"(5–95 %: {p05:.2f}–{p95:.2f}), {conf.ensemble_size} members"
        )
    return draws, results


# -- writing ----------------------------------------------------------------------------------


def day_of(result: FieldResult, days: np.ndarray) -> str:
    """The ensemble's median date among members that got there; empty if most did not."""
    reached = days[days >= 0]
    if 2 * len(reached) <= len(days):
        return ""
    return str(result.first + timedelta(days=int(np.quantile(reached, 0.5, method="lower"))))


def soil_text(conf: YieldConf) -> str:
    return conf.soil.value.replace("_", " ")


def irrigation_text(conf: YieldConf) -> str:
    if conf.irrigation is None:
        return "rain-fed"
    return f"{conf.irrigation.amount_mm:g} mm every {conf.irrigation.interval_days} days"


def yield_rows(conf: YieldConf, results: list[FieldResult]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        p05, median, p95 = np.percentile(r.yield_t_ha, [5, 50, 95])
        rows.append(
            {
                "field": r.name,
                "crop": conf.crop.value,
                "soil": conf.soil.value,
                "water": irrigation_text(conf),
                "yield_t_ha": round(float(median), 2),
                "yield_p05_t_ha": round(float(p05), 2),
                "yield_p95_t_ha": round(float(p95), 2),
                "biomass_t_ha": round(float(np.median(r.biomass_t_ha)), 2),
                "harvest_index": round(float(np.median(r.harvest_index)), 3),
                "sowing_date": str(conf.sowing_date),
                "flowering_date": day_of(r, r.flowering_day),
                "maturity_date": day_of(r, r.maturity_day),
                "matured_pct": round(100.0 * float(np.mean(r.maturity_day >= 0)), 1),
                "season_rain_mm": round(float(np.median(r.season_rain_mm)), 1),
                "irrigation_mm": round(float(np.median(r.irrigation_mm)), 1),
                "season_et_mm": round(float(np.median(r.season_et_mm)), 1),
                "water_stress_days": int(np.median(r.stress_days)),
            }
        )
    return rows


def ensemble_rows(draws: Perturbations, results: list[FieldResult]) -> list[dict[str, Any]]:
    return [
        {
            "field": r.name,
            "member": m + 1,
            "temperature_offset_c": round(float(draws.temperature_offset_c[m]), 3),
            "rain_factor": round(float(draws.rain_factor[m]), 3),
            "rue_factor": round(float(draws.rue_factor[m]), 3),
            "harvest_index_factor": round(float(draws.harvest_index_factor[m]), 3),
            "soil_water_factor": round(float(draws.soil_water_factor[m]), 3),
            "yield_t_ha": round(float(r.yield_t_ha[m]), 3),
            "maturity_date": str(r.first + timedelta(days=int(r.maturity_day[m])))
            if r.maturity_day[m] >= 0
            else "",
            "water_stress_days": int(r.stress_days[m]),
        }
        for r in results
        for m in range(len(r.yield_t_ha))
    ]


def csv_text(rows: list[dict[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def yield_png(conf: YieldConf, results: list[FieldResult]) -> bytes:
    """Yield per field (ensemble members, median and 5–95 % range) and the season's soil
    water and canopy (ensemble medians)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.6), width_ratios=[2, 3], constrained_layout=True
    )
    rng = np.random.default_rng(0)  # the dots' horizontal jitter, fixed so the image is too
    for i, r in enumerate(results):
        p05, median, p95 = np.percentile(r.yield_t_ha, [5, 50, 95])
        jitter = rng.uniform(-0.18, 0.18, len(r.yield_t_ha))
        left.scatter(i + jitter, r.yield_t_ha, s=8, alpha=0.35, color=f"C{i}", linewidths=0)
        left.errorbar(
            i, median, yerr=[[median - p05], [p95 - median]], fmt="o", color="k", capsize=6
        )
        sow = (conf.sowing_date - r.first).days
        matured = r.maturity_day[r.maturity_day >= 0]
        # To the last maturity, unless most members never got there (then to the weather's end).
        end = int(matured.max()) if 2 * len(matured) > len(r.maturity_day) else len(r.lai) - 1
        season = np.arange(sow, end + 1)
        when = [r.first + timedelta(days=int(d)) for d in season]
        right.plot(when, np.median(r.soil_water[season], axis=1), color=f"C{i}", label=r.name)
        right.plot(
            when, np.median(r.lai[season], axis=1) / CROPS[conf.crop].lai_max,
            color=f"C{i}", linestyle=":", linewidth=1,
        )  # fmt: skip
    left.set_xticks(range(len(results)), [r.name for r in results], rotation=20, ha="right")
    left.set_ylabel("yield (t/ha, dry matter)")
    left.set_ylim(bottom=0)
    left.set_title("Yield: ensemble members, median and 5–95 % range", fontsize=10)
    left.grid(axis="y", alpha=0.3)
    right.set_ylim(0, 1.05)
    right.set_ylabel("fraction")
    right.set_title(
        "Soil water (solid, of the available) and canopy (dotted, LAI of its maximum)", fontsize=10
    )
    right.legend(fontsize=8, loc="lower left")
    right.grid(alpha=0.3)
    figure.autofmt_xdate(rotation=20, ha="right", which="both")
    figure.suptitle(
        f"{conf.crop.value.title()} sown {conf.sowing_date} on {soil_text(conf)}, "
        f"{irrigation_text(conf)} · {conf.ensemble_size} members, seed {conf.seed}"
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def summary_markdown(conf: YieldConf, rows: list[dict[str, Any]]) -> str:
    crop = CROPS[conf.crop]
    capacity_mm_m, _ = SOILS[conf.soil]
    lines = [
        f"# Crop yield: {conf.crop.value}, sown {conf.sowing_date}",
        "",
        f"Soil **{soil_text(conf)}** ({capacity_mm_m:g} mm of available water "
        f"per metre, {capacity_mm_m * crop.root_depth_m:.0f} mm over the {crop.root_depth_m:g} m "
        f"root zone), **{irrigation_text(conf)}**; {conf.ensemble_size} ensemble members, "
        f"seed {conf.seed}. Yields are dry grain in t/ha: the ensemble median and its 5–95 % "
        "range.",
        "",
        "| field | yield (t/ha) | 5–95 % | flowering | maturity | season rain (mm) "
        "| irrigation (mm) | ET (mm) | water-stress days |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        maturity = r["maturity_date"] or f"not reached ({r['matured_pct']:g} % matured)"
        lines.append(
            f"| {r['field']} | **{r['yield_t_ha']:.2f}** | {r['yield_p05_t_ha']:.2f}–"
            f"{r['yield_p95_t_ha']:.2f} | {r['flowering_date'] or 'not reached'} | {maturity} "
            f"| {r['season_rain_mm']:.0f} | {r['irrigation_mm']:.0f} | {r['season_et_mm']:.0f} "
            f"| {r['water_stress_days']} |"
        )
    best = max(rows, key=lambda r: r["yield_t_ha"])
    worst = min(rows, key=lambda r: r["yield_t_ha"])
    lines += [
        "",
        f"Highest: **{best['field']}** ({best['yield_t_ha']:.2f} t/ha); lowest: "
        f"**{worst['field']}** ({worst['yield_t_ha']:.2f} t/ha, {worst['water_stress_days']} "
        "water-stress days).",
        "",
        "## Method",
        "",
        f"- Phenology: degree days above {crop.base_c:g} °C (capped at {crop.cutoff_c:g} °C): "
        f"emergence at {crop.emergence_gdd:g}, flowering at {crop.flowering_gdd:g}, maturity "
        f"at {crop.maturity_gdd:g} °C·d after sowing.",
        f"- Growth: {crop.rue_g_mj:g} g of dry matter per MJ of intercepted solar radiation "
        f"(canopy up to LAI {crop.lai_max:g}, k = {crop.extinction:g}), harvest index "
        f"{crop.harvest_index:g}, lowered by water stress around flowering.",
        f"- Water: a bucket over the root zone, full on the weather's first day; reference ET "
        f"by Hargreaves' radiation formula; growth and transpiration fall once "
        f"{100 * crop.depletion:g} % of the available water is used. A water-stress day is a "
        f"day the crop transpires less than {100 * STRESS_DAY_KS:g} % of its demand.",
        "- Ensemble: per member a temperature offset (σ 0.8 °C), a rain factor (σ 15 %), "
        "and factors on RUE (σ 8 %), harvest index (σ 6 %) and soil water capacity (σ 10 %); "
        "each member is in `ensemble.csv`.",
        "",
    ]
    return "\n".join(lines)


@routine
def write_outputs(
    conf: YieldConf, simulated: tuple[Perturbations, list[FieldResult]], output: Output
) -> dict[str, Any]:
    """Write the yield table, every member's yield, the plot and the summary."""
    draws, results = simulated
    rows = yield_rows(conf, results)
    files = {
        "yield.csv": csv_text(rows).encode(),
        "ensemble.csv": csv_text(ensemble_rows(draws, results)).encode(),
        "yield.png": yield_png(conf, results),
        "summary.md": summary_markdown(conf, rows).encode(),
    }
    for name, data in files.items():
        with output.open(name, "wb") as f:
            f.write(data)
    print(f"write_outputs: wrote {', '.join(files)} to {output.uri}")
    return {
        "output": output.uri,
        "files": sorted(files),
        "crop": conf.crop.value,
        "yield_t_ha": {r["field"]: r["yield_t_ha"] for r in rows},
    }


@jobflow(name="crop-yield")
def crop_yield(conf: YieldConf, inputs: Inputs, output: Output) -> dict[str, Any]:
    """Estimate each field's crop yield, with its uncertainty, from its daily weather."""
    fields = read_weather(conf, inputs.files())
    simulated = simulate(conf, fields)
    return write_outputs(conf, simulated, output)  # type: ignore[no-any-return]
