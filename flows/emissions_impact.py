"""Emissions of a regional scenario and the ground-level concentrations its stacks cause.

Four routines, as an environmental-impact screening is done:

1. ``read_activities``: the scenario's activity per sector (fuel burned, vehicle-km,
   cultivated land …): the rows of the selected activity CSVs, or, when none is selected,
   the table in the conf.
2. ``fetch_factors``: the emission-factor table the conf names, from an emission-factor
   service that answers only to its API key (the ``FACTOR_API_KEY`` secret; the
   stand-in service is ``examples/factor_service.py``). Each factor comes with its unit
   (``kg/TJ``, ``g/vkm``, ``lb/MMBtu`` …).
3. ``project_emissions``: emissions = activity × factor, per sector, pollutant and year,
   in tonnes, each sector's activity growing by its rate, compounded from the start year.
4. ``disperse``: the start year's emissions of one pollutant from the stack sectors
   (power and industry by default), released as one continuous point source, spread
   downwind with a Gaussian plume: ground-level concentration

       C(x, y) = Q / (π u σy σz) · exp(−y² / 2σy²) · exp(−H² / 2σz²)

   (reflection at the ground included) for a source rate Q, a wind speed u at the
   effective stack height H, and Briggs' (1973) dispersion coefficients σy(x), σz(x) for
   the Pasquill-Gifford stability class, open country or urban.

``write_outputs`` then writes ``emissions.csv`` (year × sector × pollutant, tonnes),
``emissions.png``, ``plume_centreline.csv`` (the concentration along the plume's axis for
every stability class), ``concentration_map.png`` and ``report.md``.

An activity CSV has one row per activity, with the columns ``sector``, ``activity`` and
``unit`` (others, such as a ``note``, are ignored; lines starting with ``#`` are
comments)::

    sector,activity,unit,note
    power,6000,GWh,fuel input of the two coal and gas plants
    transport,4200,Mvkm,road traffic
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from accelerator_prefect import Conf, InputFile, Inputs, Output, Secrets, jobflow, routine

KEY_NAME = "FACTOR_API_KEY"
KEY_HEADER = "X-API-Key"
SECONDS_PER_YEAR = 365.25 * 86400.0
MAX_GRID_SIDE = 1001
PROFILE_STEP_M = 50.0  # plume_centreline.csv
PEAK_STEP_M = 5.0  # where the peak is looked for
PEAK_RANGE_M = 50_000.0


class Sector(StrEnum):
    power = "power"
    industry = "industry"
    transport = "transport"
    residential = "residential"
    agriculture = "agriculture"


class Pollutant(StrEnum):
    CO2 = "CO2"
    NOx = "NOx"
    SO2 = "SO2"
    PM25 = "PM2.5"


class ActivityUnit(StrEnum):
    GJ = "GJ"
    TJ = "TJ"
    PJ = "PJ"
    MWh = "MWh"
    GWh = "GWh"
    MMBtu = "MMBtu"
    vkm = "vkm"
    Mvkm = "Mvkm"
    vmi = "vmi"
    Mvmi = "Mvmi"
    ha = "ha"
    kha = "kha"
    acre = "acre"
    km2 = "km2"


class FactorTableName(StrEnum):
    eea_2023 = "eea-2023"
    epa_ap42 = "epa-ap42"


class StabilityClass(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"


class Surroundings(StrEnum):
    rural = "rural"
    urban = "urban"


# Each activity unit as (what it measures, how many of that measure's base unit it is):
# energy in GJ, distance in vehicle-km, land in hectares.
ACTIVITY_UNITS: dict[str, tuple[str, float]] = {
    "GJ": ("energy", 1.0),
    "TJ": ("energy", 1e3),
    "PJ": ("energy", 1e6),
    "MWh": ("energy", 3.6),
    "GWh": ("energy", 3600.0),
    "MMBtu": ("energy", 1.055056),
    "vkm": ("distance", 1.0),
    "Mvkm": ("distance", 1e6),
    "vmi": ("distance", 1.609344),
    "Mvmi": ("distance", 1.609344e6),
    "ha": ("land", 1.0),
    "kha": ("land", 1e3),
    "acre": ("land", 0.40468564224),
    "km2": ("land", 100.0),
}
TONNES_PER: dict[str, float] = {"g": 1e-6, "kg": 1e-3, "t": 1.0, "lb": 0.45359237e-3}

SECTOR_TITLES: dict[str, Any] = {
    "power": "Power and heat plants",
    "industry": "Industry",
    "transport": "Road transport",
    "residential": "Residential heating",
    "agriculture": "Agriculture",
}
STABILITY_TITLES: dict[str, Any] = {
    "A": "A · very unstable (strong sun, light wind)",
    "B": "B · moderately unstable",
    "C": "C · slightly unstable",
    "D": "D · neutral (overcast, or windy)",
    "E": "E · slightly stable (night, light wind)",
    "F": "F · moderately stable (clear night, light wind)",
}

# Briggs (1973) dispersion coefficients, x in metres: σ = a·x·(1 + b·x)^p.
# Per class, (a, b, p) for σy, then for σz.
BRIGGS: dict[Surroundings, dict[str, tuple[tuple[float, float, float], ...]]] = {
    Surroundings.rural: {
        "A": ((0.22, 1e-4, -0.5), (0.20, 0.0, 1.0)),
        "B": ((0.16, 1e-4, -0.5), (0.12, 0.0, 1.0)),
        "C": ((0.11, 1e-4, -0.5), (0.08, 2e-4, -0.5)),
        "D": ((0.08, 1e-4, -0.5), (0.06, 1.5e-3, -0.5)),
        "E": ((0.06, 1e-4, -0.5), (0.03, 3e-4, -1.0)),
        "F": ((0.04, 1e-4, -0.5), (0.016, 3e-4, -1.0)),
    },
    Surroundings.urban: {
        "A": ((0.32, 4e-4, -0.5), (0.24, 1e-3, 0.5)),
        "B": ((0.32, 4e-4, -0.5), (0.24, 1e-3, 0.5)),
        "C": ((0.22, 4e-4, -0.5), (0.20, 0.0, 1.0)),
        "D": ((0.16, 4e-4, -0.5), (0.14, 3e-4, -0.5)),
        "E": ((0.11, 4e-4, -0.5), (0.08, 1.5e-3, -0.5)),
        "F": ((0.11, 4e-4, -0.5), (0.08, 1.5e-3, -0.5)),
    },
}


class Activity(Conf):
    """One activity of the scenario: how much of a sector's activity, in which unit."""

    sector: Sector = Field(
        description="The emitting sector.",
        json_schema_extra={"x-enum-titles": SECTOR_TITLES},
    )
    activity: float = Field(
        ge=0.0,
        le=1e15,
        description="How much activity in the start year: fuel burned (power, industry, "
        "residential), vehicle distance (transport) or cultivated land (agriculture).",
    )
    unit: ActivityUnit = Field(
        description="Unit of the activity: energy (GJ, TJ, PJ, MWh, GWh, MMBtu), vehicle "
        "distance (vkm, Mvkm = million vkm, vmi = vehicle-miles, Mvmi) or land (ha, kha, "
        "acre, km2); it must measure what the factor table counts for the sector.",
    )


class SectorGrowth(Conf):
    """Yearly change of each sector's activity, compounded from the start year."""

    power: float = Field(default=-2.0, ge=-50.0, le=50.0, json_schema_extra={"x-unit": "%/yr"})
    industry: float = Field(default=0.5, ge=-50.0, le=50.0, json_schema_extra={"x-unit": "%/yr"})
    transport: float = Field(default=1.0, ge=-50.0, le=50.0, json_schema_extra={"x-unit": "%/yr"})
    residential: float = Field(
        default=-1.0, ge=-50.0, le=50.0, json_schema_extra={"x-unit": "%/yr"}
    )
    agriculture: float = Field(default=0.0, ge=-50.0, le=50.0, json_schema_extra={"x-unit": "%/yr"})


DEFAULT_ACTIVITIES = [
    Activity(sector=Sector.power, activity=20_000, unit=ActivityUnit.TJ),
    Activity(sector=Sector.industry, activity=8_000, unit=ActivityUnit.TJ),
    Activity(sector=Sector.transport, activity=3_500, unit=ActivityUnit.Mvkm),
    Activity(sector=Sector.residential, activity=9_000, unit=ActivityUnit.TJ),
    Activity(sector=Sector.agriculture, activity=45, unit=ActivityUnit.kha),
]


class EmissionsConf(Conf):
    """The scenario, the factor table, and the weather and stack of the dispersion."""

    activities: list[Activity] = Field(
        default=DEFAULT_ACTIVITIES,
        min_length=1,
        max_length=100,
        description="The scenario: each sector's activity in the start year (a sector may "
        "have several rows, e.g. one per fuel, which add up). Selected activity CSVs replace "
        "this table.",
        json_schema_extra={"x-section": "Scenario"},
    )
    factor_table: FactorTableName = Field(
        default=FactorTableName.eea_2023,
        description="Which emission factors the service gives the activities.",
        json_schema_extra={
            "x-section": "Scenario",
            "x-enum-titles": {
                "eea-2023": "EEA/EMEP guidebook 2023 (Europe)",
                "epa-ap42": "US EPA AP-42 (United States)",
            },
        },
    )
    start_year: int = Field(
        default=2025,
        ge=2000,
        le=2100,
        description="First year of the projection: the year of the activities.",
        json_schema_extra={"x-section": "Scenario"},
    )
    end_year: int = Field(
        default=2050,
        ge=2000,
        le=2100,
        description="Last year of the projection, not before the start year.",
        json_schema_extra={"x-section": "Scenario"},
    )
    growth_pct: SectorGrowth = Field(
        default_factory=SectorGrowth,
        title="Growth per sector",
        description="Yearly change of each sector's activity, in percent, compounded from "
        "the start year (−2 shrinks it by 2 % a year).",
        json_schema_extra={"x-section": "Scenario"},
    )
    plume_pollutant: Pollutant = Field(
        default=Pollutant.NOx,
        title="Pollutant",
        description="The pollutant whose ground-level concentration is mapped.",
        json_schema_extra={"x-section": "Dispersion"},
    )
    plume_sectors: list[Sector] = Field(
        default=[Sector.power, Sector.industry],
        min_length=1,
        title="Stack sectors",
        description="The sectors released from the stack, as one continuous source emitting "
        "their start-year total.",
        json_schema_extra={"x-section": "Dispersion"},
    )
    stability_class: StabilityClass = Field(
        default=StabilityClass.D,
        description="Pasquill-Gifford stability class of the atmosphere: A mixes most, F least.",
        json_schema_extra={"x-section": "Dispersion", "x-enum-titles": STABILITY_TITLES},
    )
    wind_speed_m_s: float = Field(
        default=5.0,
        ge=1.0,
        le=30.0,
        title="Wind speed",
        description="Mean wind speed at the stack's height (a Gaussian plume needs wind: "
        "at least 1 m/s).",
        json_schema_extra={"x-section": "Dispersion", "x-unit": "m/s"},
    )
    wind_from_deg: float = Field(
        default=270.0,
        ge=0.0,
        lt=360.0,
        title="Wind direction",
        description="Where the wind comes from, clockwise from north (270: a westerly wind, "
        "the plume goes east).",
        json_schema_extra={"x-section": "Dispersion", "x-unit": "°"},
    )
    stack_height_m: float = Field(
        default=120.0,
        ge=1.0,
        le=1000.0,
        title="Effective stack height",
        description="The stack's height plus the plume's rise above it.",
        json_schema_extra={"x-section": "Dispersion", "x-unit": "m"},
    )
    surroundings: Surroundings = Field(
        default=Surroundings.rural,
        description="Open country or a city around the stack: a city's roughness spreads "
        "the plume faster (Briggs' urban coefficients).",
        json_schema_extra={
            "x-section": "Dispersion",
            "x-advanced": True,
            "x-enum-titles": {"rural": "Open country", "urban": "Urban"},
        },
    )
    grid_half_width_km: float = Field(
        default=10.0,
        ge=1.0,
        le=50.0,
        title="Map half-width",
        description="The map reaches this far from the stack on every side.",
        json_schema_extra={"x-section": "Dispersion", "x-unit": "km", "x-advanced": True},
    )
    grid_resolution_m: float = Field(
        default=100.0,
        ge=10.0,
        le=5000.0,
        title="Map resolution",
        description=f"Cell size of the map (at most {MAX_GRID_SIDE} cells on a side).",
        json_schema_extra={"x-section": "Dispersion", "x-unit": "m", "x-advanced": True},
    )
    service_url: str = Field(
        default="http://127.0.0.1:8610",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        max_length=200,
        title="Emission-factor service",
        description="Address of the emission-factor service the FACTOR_API_KEY is for.",
        json_schema_extra={"x-section": "Service", "x-advanced": True},
    )


# -- the factor table, as the service gives it ------------------------------------------------


class Factor(BaseModel):
    value: float = Field(ge=0.0)
    unit: str


class SectorFactors(BaseModel):
    activity: str = ""
    activity_unit: str
    factors: dict[str, Factor]


class FactorTable(BaseModel):
    id: str
    title: str
    sectors: dict[str, SectorFactors]


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityRow:
    sector: Sector
    activity: float
    unit: str
    where: str  # "conf.activities[2]" or "activities/energy.csv, line 4", for messages


def parse_activity_csv(name: str, text: str) -> tuple[list[ActivityRow], list[str]]:
    """The activity rows of one CSV, and the problems found in it (one line each)."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    lines = [(n, line) for n, line in lines if not line.lstrip().startswith("#")]
    if not lines:
        return [], [f"{name}: no header row (expected the columns sector, activity, unit)"]
    # Comma-separated, or semicolon or tab as some spreadsheets write it.
    delimiter = max(",;\t", key=lines[0][1].count)
    rows = list(csv.reader((line for _, line in lines), delimiter=delimiter))
    header = [cell.strip().lower() for cell in rows[0]]
    missing = [c for c in ("sector", "activity", "unit") if c not in header]
    if missing:
        found = ", ".join(header) or "none"
        return [], [f"{name}: no column {', '.join(missing)} (found: {found})"]
    at = {c: header.index(c) for c in ("sector", "activity", "unit")}
    found_rows, problems = [], []
    for (number, _), cells in zip(lines[1:], rows[1:], strict=True):
        where = f"{name}, line {number}"
        cells = [cell.strip() for cell in cells] + [""] * len(header)
        sector, value, unit = cells[at["sector"]], cells[at["activity"]], cells[at["unit"]]
        problem = check_row(sector, value, unit)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        found_rows.append(ActivityRow(Sector(sector.lower()), float(value), unit, where))
    if not found_rows and not problems:
        problems.append(f"{name}: a header but no activity rows")
    return found_rows, problems


def check_row(sector: str, value: str, unit: str) -> str | None:
    """What is wrong with one CSV row, or None."""
    if sector.lower() not in Sector.__members__:
        return f"sector {sector!r} is not one of {', '.join(Sector)}"
    try:
        number = float(value)
    except ValueError:
        return f"activity {value!r} is not a number"
    if not math.isfinite(number) or number < 0:
        return f"activity {value} is not a number of zero or more"
    if unit not in ACTIVITY_UNITS:
        return f"unit {unit!r} is not one of {', '.join(ACTIVITY_UNITS)}"
    return None


@routine
def read_activities(conf: EmissionsConf, files: list[InputFile]) -> list[ActivityRow]:
    """The scenario's activities: from the selected CSVs if any, else the conf's table."""
    if conf.end_year < conf.start_year:
        raise ValueError(
            f"conf.end_year: {conf.end_year} is before the start year {conf.start_year}; "
            "choose an end year at or after the start year"
        )
    if not files:
        rows = [
            ActivityRow(a.sector, a.activity, a.unit.value, f"conf.activities[{i}]")
            for i, a in enumerate(conf.activities)
        ]
        print(f"read_activities: {len(rows)} activities from the conf (no CSV selected)")
        return rows
    rows, problems = [], []
    for f in sorted(files, key=lambda f: f.relative):
        found, wrong = parse_activity_csv(f.relative, f.read_bytes().decode("utf-8-sig"))
        rows += found
        problems += wrong
    if problems:
        more = len(problems) - 10
        shown = "; ".join(problems[:10]) + (f"; and {more} more" if more > 0 else "")
        raise ValueError(f"inputs: the activity CSVs cannot be read: {shown}")
    print(f"read_activities: {len(rows)} activities from {len(files)} CSV file(s)")
    return rows


# -- the emission-factor service --------------------------------------------------------------


class ServiceRefused(PermissionError):
    """The emission-factor service refused the API key."""


@routine
def fetch_factors(conf: EmissionsConf, secrets: Secrets) -> FactorTable:
    """The conf's emission-factor table, from the service, with the FACTOR_API_KEY."""
    import httpx

    base = conf.service_url.rstrip("/")
    url = f"{base}/tables/{conf.factor_table.value}"
    key = secrets.get(KEY_NAME)
    transport = httpx.HTTPTransport(retries=2)  # a refused connection is tried again
    try:
        with httpx.Client(transport=transport, timeout=20.0) as client:
            response = client.get(url, headers={KEY_HEADER: key})
    except httpx.HTTPError as exc:
        raise ConnectionError(
            f"conf.service_url: the emission-factor service at {base} cannot be reached "
            f"({type(exc).__name__}); check the address, or ask the platform's operator "
            "whether the service runs"
        ) from None
    if response.status_code in (401, 403):
        raise ServiceRefused(f"the emission-factor service refused the key: check {KEY_NAME}")
    if response.status_code == 404:
        raise ValueError(
            f"conf.factor_table: the emission-factor service at {base} has no table "
            f"{conf.factor_table.value!r}"
        )
    if response.status_code != 200:
        raise ConnectionError(
            f"the emission-factor service at {base} answered {response.status_code} "
            f"{response.reason_phrase}; try again later"
        )
    try:
        table = FactorTable.model_validate_json(response.content)
    except ValidationError as exc:
        raise ValueError(
            f"the emission-factor service at {base} sent a table this model cannot read "
            f"({exc.error_count()} problem(s), e.g. {exc.errors()[0]['msg']})"
        ) from None
    print(f"fetch_factors: {table.id} ({table.title}), {len(table.sectors)} sectors")
    return table


# -- emissions --------------------------------------------------------------------------------


@dataclass
class Emissions:
    years: np.ndarray  # (year,)
    sectors: list[Sector]  # the sectors of the scenario, in Sector's order
    pollutants: list[Pollutant]
    tonnes: np.ndarray  # (year, sector, pollutant)
    activity: dict[Sector, str]  # each sector's start-year activity, in the table's unit


def tonnes_per_activity(factor: Factor, activity_unit: str, where: str) -> float:
    """A factor ``<mass>/<activity unit>`` as tonnes per base unit of its activity."""
    mass, slash, per = factor.unit.partition("/")
    if not slash or mass not in TONNES_PER or per not in ACTIVITY_UNITS:
        raise ValueError(f"{where}: factor unit {factor.unit!r} cannot be read")
    if per != activity_unit:
        raise ValueError(f"{where}: factor unit {factor.unit!r} is not per {activity_unit}")
    return factor.value * TONNES_PER[mass] / ACTIVITY_UNITS[per][1]


def start_activity(rows: list[ActivityRow], table: FactorTable) -> dict[Sector, float]:
    """Each sector's start-year activity in its measure's base unit (GJ, vkm, ha)."""
    totals: dict[Sector, float] = {}
    for row in rows:
        factors = table.sectors.get(row.sector.value)
        if factors is None:
            raise ValueError(
                f"{row.where}: the {table.id} table has no factors for sector {row.sector.value}"
            )
        wanted, _ = ACTIVITY_UNITS[factors.activity_unit]
        measure, scale = ACTIVITY_UNITS[row.unit]
        if measure != wanted:
            units = ", ".join(u for u, (m, _) in ACTIVITY_UNITS.items() if m == wanted)
            raise ValueError(
                f"{row.where}: {row.unit} measures {measure}, but the {table.id} table counts "
                f"{row.sector.value} as {factors.activity} ({wanted}); give it in {units}"
            )
        totals[row.sector] = totals.get(row.sector, 0.0) + row.activity * scale
    return totals


def shown_activity(base: float, table_unit: str) -> str:
    """An activity in base units, for people: in the table's unit, or millions of it for
    vehicle distances ("4,580 Mvkm")."""
    unit = {"vkm": "Mvkm", "vmi": "Mvmi"}.get(table_unit, table_unit)
    value = base / ACTIVITY_UNITS[unit][1]
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.3g} {unit}"


@routine
def project_emissions(
    conf: EmissionsConf, rows: list[ActivityRow], table: FactorTable
) -> Emissions:
    """Emissions per year, sector and pollutant (t): activity × factor, activity growing."""
    activity = start_activity(rows, table)
    sectors = [s for s in Sector if s in activity]
    pollutants = list(Pollutant)
    years = np.arange(conf.start_year, conf.end_year + 1)
    tonnes = np.zeros((len(years), len(sectors), len(pollutants)))
    for i, sector in enumerate(sectors):
        rate = getattr(conf.growth_pct, sector.value) / 100.0
        grown = activity[sector] * (1.0 + rate) ** (years - conf.start_year)
        factors = table.sectors[sector.value]
        for j, pollutant in enumerate(pollutants):
            factor = factors.factors.get(pollutant.value)
            where = f"the {table.id} table, {sector.value} {pollutant.value}"
            if factor is None:
                continue  # the table gives none: counted as zero, and said in the report
            tonnes[:, i, j] = grown * tonnes_per_activity(factor, factors.activity_unit, where)
    shown = {s: shown_activity(activity[s], table.sectors[s.value].activity_unit) for s in sectors}
    total = tonnes[0].sum(axis=0)
    print(
        f"project_emissions: {len(sectors)} sectors, {years[0]}–{years[-1]}; start year "
        + ", ".join(f"{p.value} {t:,.1f} t" for p, t in zip(pollutants, total, strict=True))
    )
    return Emissions(years, sectors, pollutants, tonnes, shown)


# -- dispersion -------------------------------------------------------------------------------


def sigmas(
    x: np.ndarray, stability: str, surroundings: Surroundings
) -> tuple[np.ndarray, np.ndarray]:
    """Briggs' σy and σz (m) at downwind distances ``x`` (m, > 0)."""
    (ay, by, py), (az, bz, pz) = BRIGGS[surroundings][stability]
    sigma_y = ay * x * (1.0 + by * x) ** py
    sigma_z = az * x if bz == 0.0 else az * x * (1.0 + bz * x) ** pz
    return sigma_y, sigma_z


def ground_concentration(
    x: np.ndarray,
    y: np.ndarray,
    rate_ug_s: float,
    conf: EmissionsConf,
    stability: str | None = None,
) -> np.ndarray:
    """Ground-level concentration (µg/m³) at downwind ``x`` and crosswind ``y`` (m); zero
    upwind and at the stack."""
    downwind = x > 0.0
    safe = np.where(downwind, x, 1.0)
    sigma_y, sigma_z = sigmas(safe, stability or conf.stability_class.value, conf.surroundings)
    height = conf.stack_height_m
    value = (
        rate_ug_s
        / (math.pi * conf.wind_speed_m_s * sigma_y * sigma_z)
        * np.exp(-(y**2) / (2.0 * sigma_y**2))
        * np.exp(-(height**2) / (2.0 * sigma_z**2))
    )
    return np.where(downwind, value, 0.0)


@dataclass
class Plume:
    pollutant: Pollutant
    year: int
    tonnes: float  # a year's emission from the stack
    rate_g_s: float
    east_m: np.ndarray  # (column,)
    north_m: np.ndarray  # (row,)
    concentration: np.ndarray  # (row, column) µg/m³, the conf's stability class
    profile_m: np.ndarray  # centreline distances
    profiles: dict[str, np.ndarray]  # stability class -> centreline µg/m³
    peaks: dict[str, tuple[float, float]]  # stability class -> (distance m, µg/m³)


@routine
def disperse(conf: EmissionsConf, emissions: Emissions) -> Plume:
    """Ground-level concentrations of the stack sectors' start-year emissions."""
    side = round(2 * conf.grid_half_width_km * 1000.0 / conf.grid_resolution_m) + 1
    if side > MAX_GRID_SIDE:
        raise ValueError(
            f"conf.grid_resolution_m: {conf.grid_resolution_m:g} m makes a map of {side} cells "
            f"on a side over {conf.grid_half_width_km:g} km each way; at most {MAX_GRID_SIDE}: "
            "choose coarser cells or a smaller map"
        )
    column = emissions.pollutants.index(conf.plume_pollutant)
    stack = [i for i, s in enumerate(emissions.sectors) if s in conf.plume_sectors]
    tonnes = float(emissions.tonnes[0, stack, column].sum())
    rate_ug_s = tonnes * 1e12 / SECONDS_PER_YEAR
    half = (side - 1) / 2 * conf.grid_resolution_m
    axis = np.linspace(-half, half, side)
    east, north = np.meshgrid(axis, axis)  # rows run south to north
    wind_to = math.radians(conf.wind_from_deg + 180.0)
    along = (math.sin(wind_to), math.cos(wind_to))  # (east, north) of the plume's axis
    x = east * along[0] + north * along[1]
    y = -east * along[1] + north * along[0]
    concentration = ground_concentration(x, y, rate_ug_s, conf)
    profile_m = np.arange(1, round(half / PROFILE_STEP_M) + 1) * PROFILE_STEP_M
    fine = np.arange(1, round(PEAK_RANGE_M / PEAK_STEP_M) + 1) * PEAK_STEP_M
    profiles, peaks = {}, {}
    for stability in StabilityClass:
        profiles[stability.value] = ground_concentration(
            profile_m, np.zeros_like(profile_m), rate_ug_s, conf, stability.value
        )
        line = ground_concentration(fine, np.zeros_like(fine), rate_ug_s, conf, stability.value)
        at = int(np.argmax(line))
        peaks[stability.value] = (float(fine[at]), float(line[at]))
    distance, peak = peaks[conf.stability_class.value]
    print(
        f"disperse: {conf.plume_pollutant.value} {tonnes:,.1f} t/yr ({rate_ug_s / 1e6:.2f} g/s) "
        f"from {', '.join(s.value for s in conf.plume_sectors)}; class "
        f"{conf.stability_class.value}: peak {peak:.4g} µg/m³ at {distance:,.0f} m downwind"
    )
    return Plume(
        conf.plume_pollutant,
        int(emissions.years[0]),
        tonnes,
        rate_ug_s / 1e6,
        axis,
        axis,
        concentration,
        profile_m,
        profiles,
        peaks,
    )


# -- writing ----------------------------------------------------------------------------------


def number(value: float) -> str:
    """A number as a CSV cell: exact to 10 significant digits, no exponent for plain sizes."""
    return f"{value:.10g}"


def emissions_csv(emissions: Emissions) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["year", "sector", "pollutant", "emissions_t"])
    for y, year in enumerate(emissions.years):
        for s, sector in enumerate(emissions.sectors):
            for p, pollutant in enumerate(emissions.pollutants):
                value = number(float(emissions.tonnes[y, s, p]))
                writer.writerow([int(year), sector.value, pollutant.value, value])
    return text.getvalue()


def centreline_csv(plume: Plume) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["distance_m", *(f"class_{c}_ug_m3" for c in plume.profiles)])
    for i, distance in enumerate(plume.profile_m):
        # Below a millionth of a µg/m³ is nothing: written as 0, not as 1e-192.
        row = [float(line[i]) for line in plume.profiles.values()]
        values = [f"{v:.6g}" if v >= 1e-6 else "0" for v in row]
        writer.writerow([f"{distance:g}", *values])
    return text.getvalue()


def markdown_table(rows: Iterable[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def amount(tonnes: float) -> str:
    """Tonnes, or kilotonnes from 100 kt: readable at any size."""
    return f"{tonnes / 1e3:,.1f} kt" if tonnes >= 1e5 else f"{tonnes:,.1f} t"


def report(
    conf: EmissionsConf,
    rows: list[ActivityRow],
    table: FactorTable,
    emissions: Emissions,
    plume: Plume,
    source: str,
) -> str:
    """The run's summary as Markdown."""
    first, last = int(emissions.years[0]), int(emissions.years[-1])
    pollutants = [p.value for p in emissions.pollutants]
    totals = emissions.tonnes.sum(axis=(0, 1))
    at_start, at_end = emissions.tonnes[0].sum(axis=0), emissions.tonnes[-1].sum(axis=0)
    distance, peak = plume.peaks[conf.stability_class.value]
    surroundings = "open country" if conf.surroundings == Surroundings.rural else "urban"
    parts = [
        "# Emissions and air-quality impact",
        "",
        f"{len(emissions.sectors)} sector(s), {first}–{last} ({len(emissions.years)} years), "
        f"activities from {source}; emission factors: **{table.title}** (`{table.id}`).",
        "",
        "## Totals",
        "",
        markdown_table(
            [
                [p, amount(float(a)), amount(float(b)), amount(float(t))]
                for p, a, b, t in zip(pollutants, at_start, at_end, totals, strict=True)
            ],
            ["pollutant", str(first), str(last), f"{first}–{last} total"],
        ),
        "",
        f"## By sector in {first}",
        "",
        markdown_table(
            [
                [
                    SECTOR_TITLES[s.value],
                    emissions.activity[s],
                    f"{getattr(conf.growth_pct, s.value):+g} %/yr",
                    *(amount(float(v)) for v in emissions.tonnes[0, i]),
                ]
                for i, s in enumerate(emissions.sectors)
            ],
            ["sector", "activity", "growth", *pollutants],
        ),
        "",
        "## Ground-level concentration",
        "",
        f"{plume.pollutant.value} from {', '.join(s.value for s in conf.plume_sectors)}: "
        f"{amount(plume.tonnes)} in {plume.year}, released continuously at "
        f"{plume.rate_g_s:,.2f} g/s from an effective height of {conf.stack_height_m:g} m, "
        f"wind {conf.wind_speed_m_s:g} m/s from {conf.wind_from_deg:g}°, {surroundings}. "
        f"With stability class **{STABILITY_TITLES[conf.stability_class.value]}** the "
        f"concentration peaks at **{peak:,.4g} µg/m³, {distance:,.0f} m downwind**.",
        "",
        markdown_table(
            [
                [
                    STABILITY_TITLES[c],
                    f"{d:,.0f} m" if d < PEAK_RANGE_M else f"beyond {PEAK_RANGE_M / 1e3:g} km",
                    f"{v:,.4g}",
                ]
                for c, (d, v) in plume.peaks.items()
            ],
            ["stability class", "peak distance", "peak µg/m³"],
        ),
        "",
        "A Gaussian plume with Briggs' dispersion coefficients: a screening estimate of a "
        "steady hour with this weather, not an annual mean.",
        "",
        "## Files",
        "",
        "- `emissions.csv`: emissions per year, sector and pollutant, in tonnes",
        "- `emissions.png`: the same, stacked by sector",
        "- `plume_centreline.csv`: concentration along the plume's axis for every class",
        "- `concentration_map.png`: the ground-level concentration around the stack",
        "",
    ]
    missing = [
        f"{s.value} {p.value}"
        for s in emissions.sectors
        for p in emissions.pollutants
        if p.value not in table.sectors[s.value].factors
    ]
    if missing:
        parts += [f"The table gives no factor for {', '.join(missing)}: counted as zero.", ""]
    return "\n".join(parts)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(figure: Any) -> bytes:
    """The figure as PNG, the same bytes for the same figure (no software or date stamp)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    _pyplot().close(figure)
    return buffer.getvalue()


def emissions_png(emissions: Emissions) -> bytes:
    plt = _pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, constrained_layout=True)
    years = emissions.years
    for ax, (p, pollutant) in zip(axes.flat, enumerate(emissions.pollutants), strict=True):
        scale, unit = (1e3, "kt") if pollutant == Pollutant.CO2 else (1.0, "t")
        layers = [emissions.tonnes[:, s, p] / scale for s in range(len(emissions.sectors))]
        labels = [SECTOR_TITLES[s.value] for s in emissions.sectors]
        ax.stackplot(years, layers, labels=labels, alpha=0.85)
        ax.set_title(f"{pollutant.value} ({unit} per year)")
        ax.grid(alpha=0.3)
        ax.set_xlim(years[0], max(years[-1], years[0] + 1))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    figure.suptitle(f"Emissions by sector, {years[0]}–{years[-1]}")
    return png_bytes(figure)


def concentration_png(conf: EmissionsConf, plume: Plume) -> bytes:
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    km_east, km_north = plume.east_m / 1e3, plume.north_m / 1e3
    figure, ax = plt.subplots(figsize=(8, 7), constrained_layout=True)
    top = float(plume.concentration.max())
    if top > 0:
        norm = LogNorm(vmin=top / 1e3, vmax=top)
        shown = np.ma.masked_less(plume.concentration, top / 1e3)
        image = ax.pcolormesh(km_east, km_north, shown, norm=norm, cmap="magma_r", shading="auto")
        levels = [top * f for f in (0.01, 0.1, 0.5)]
        ax.contour(
            km_east, km_north, plume.concentration, levels=levels, colors="k", linewidths=0.5
        )
        figure.colorbar(image, ax=ax, label=f"{plume.pollutant.value} (µg/m³)", shrink=0.85)
    else:
        ax.text(0.5, 0.5, "no emission from the stack sectors", ha="center", transform=ax.transAxes)
    ax.plot([0], [0], marker="^", color="tab:blue", markersize=9, label="stack")
    to = math.radians(conf.wind_from_deg + 180.0)
    # The wind's arrow, centred in the top left corner whatever its direction.
    width = float(km_east[-1])
    centre, half = (-0.75 * width, 0.75 * width), 0.1 * width
    tail = (centre[0] - half * math.sin(to), centre[1] - half * math.cos(to))
    head = (centre[0] + half * math.sin(to), centre[1] + half * math.cos(to))
    ax.annotate("", xy=head, xytext=tail, arrowprops={"arrowstyle": "->", "color": "tab:blue"})
    ax.text(centre[0], centre[1] - 1.6 * half, "wind", color="tab:blue", ha="center", va="top")
    distance, peak = plume.peaks[conf.stability_class.value]
    if peak > 0 and distance <= km_east[-1] * 1e3:
        ax.plot(
            [distance / 1e3 * math.sin(to)],
            [distance / 1e3 * math.cos(to)],
            marker="x",
            color="tab:cyan",
            markersize=9,
            linestyle="none",
            label="peak",
        )
    ax.set_title(
        f"Ground-level {plume.pollutant.value}, class {conf.stability_class.value}, "
        f"{conf.wind_speed_m_s:g} m/s · peak {peak:.3g} µg/m³ at {distance / 1e3:.2f} km"
    )
    ax.set_xlabel("east of the stack (km)")
    ax.set_ylabel("north of the stack (km)")
    ax.set_aspect("equal")
    ax.legend(loc="lower left")
    return png_bytes(figure)


@routine
def write_outputs(
    conf: EmissionsConf,
    rows: list[ActivityRow],
    table: FactorTable,
    emissions: Emissions,
    plume: Plume,
    source: str,
    output: Output,
) -> dict[str, Any]:
    """Write the emissions table and chart, the plume's centreline, map and the report."""
    files = {
        "emissions.csv": emissions_csv(emissions).encode(),
        "emissions.png": emissions_png(emissions),
        "plume_centreline.csv": centreline_csv(plume).encode(),
        "concentration_map.png": concentration_png(conf, plume),
        "report.md": report(conf, rows, table, emissions, plume, source).encode(),
    }
    for name, data in files.items():
        with output.open(name, "wb") as f:
            f.write(data)
    print(f"write_outputs: wrote {', '.join(files)} to {output.uri}")
    totals = emissions.tonnes.sum(axis=(0, 1))
    distance, peak = plume.peaks[conf.stability_class.value]
    return {
        "output": output.uri,
        "files": sorted(files),
        "factor_table": table.id,
        "years": [int(emissions.years[0]), int(emissions.years[-1])],
        "sectors": [s.value for s in emissions.sectors],
        "total_t": {
            p.value: round(float(t), 3) for p, t in zip(emissions.pollutants, totals, strict=True)
        },
        "peak": {"distance_m": distance, "ug_m3": round(peak, 4)},
    }


@jobflow(name="emissions-impact")
def emissions_impact(
    conf: EmissionsConf, inputs: Inputs, output: Output, secrets: Secrets
) -> dict[str, Any]:
    """Project a scenario's emissions and map the ground-level concentration of its stacks."""
    files = inputs.files()
    rows = read_activities(conf, files)
    table = fetch_factors(conf, secrets)
    emissions = project_emissions(conf, rows, table)
    plume = disperse(conf, emissions)
    names = ", ".join(f"`{f.relative}`" for f in sorted(files, key=lambda f: f.relative))
    source = f"the selected CSV files ({names})" if files else "the conf's table"
    return write_outputs(conf, rows, table, emissions, plume, source, output)  # type: ignore[no-any-return]
