"""Regenerate the sample daily weather the crop-yield model reads.

Four fields, one CSV each (the field's name is the file's name), a full year
(2023) of daily weather in four climates, so a yield run has contrasts to show:

=======================  ========  ==========================================================
file                     latitude  climate
=======================  ========  ==========================================================
oceanic_wet              44.0 °N   wet temperate (oceanic): mild, ~900 mm spread over the year
continental_humid        42.0 °N   humid continental: cold winter, hot summer, wet May–August
semiarid_dry             38.5 °N   semi-arid plains: ~420 mm, sunny, hot summer: water stress
subtropical_monsoon      30.0 °N   humid subtropical: warm, ~1,400 mm with a summer monsoon
=======================  ========  ==========================================================

Columns: ``date`` (ISO), ``tmin_c`` and ``tmax_c`` (°C), ``precip_mm`` (mm per
day) and ``srad_mj_m2`` (global solar radiation, MJ m⁻² per day), below
``#`` comment lines describing the field.

The weather is synthetic but shaped like the real thing: a seasonal cycle of
temperature with autocorrelated anomalies (AR(1)), a two-state Markov chain
for wet days with gamma-distributed amounts matching monthly totals, cooler and
less sunny wet days, and solar radiation as the top-of-atmosphere radiation
at the field's latitude (FAO-56) times an atmospheric transmissivity. Each
field is seeded from its name, so the output is byte-for-byte reproducible.

Run from the repository root::

    python examples/make_weather_data.py            # writes examples/data/agri/weather/
    python examples/make_weather_data.py --check    # fails if the files on disk differ
"""

from __future__ import annotations

import argparse
import io
import sys
import zlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "data" / "agri" / "weather"
YEAR = 2023
SOLAR_CONSTANT = 0.0820  # MJ m-2 min-1
MONTH_STARTS = np.cumsum([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30])


@dataclass(frozen=True)
class Climate:
    """A field's daily climate: temperature in °C, rain in mm, radiation by transmissivity."""

    description: str
    latitude: float
    mean_c: float  # annual mean of the daily mean temperature
    amplitude_c: float  # half the difference between the warmest and coldest day, on average
    anomaly_sd_c: float  # day-to-day anomalies (AR(1), lag-one correlation 0.7)
    diurnal_range_c: float  # tmax - tmin on a dry day
    rain_mm: tuple[float, ...]  # monthly totals, January to December
    wet_fraction: tuple[float, ...]  # fraction of wet days, by month
    transmissivity: float  # of a dry day; wet days let through about half as much


CLIMATES = {
    "oceanic_wet": Climate(
        "wet temperate (oceanic): mild winters, warm summers, rain all year",
        44.0,
        13.3,
        7.8,
        2.2,
        9.0,
        (85, 70, 70, 80, 80, 65, 55, 60, 70, 85, 95, 95),
        (0.50, 0.45, 0.45, 0.48, 0.45, 0.38, 0.30, 0.30, 0.35, 0.45, 0.50, 0.52),
        0.60,
    ),
    "continental_humid": Climate(
        "humid continental: cold winters, hot summers, rain peaking in May and June",
        42.0,
        9.5,
        14.5,
        3.2,
        11.0,
        (25, 28, 55, 90, 120, 125, 105, 100, 80, 65, 50, 35),
        (0.20, 0.22, 0.28, 0.33, 0.38, 0.36, 0.30, 0.28, 0.27, 0.25, 0.24, 0.22),
        0.62,
    ),
    "semiarid_dry": Climate(
        "semi-arid plains: sunny, hot summers, little rain (water stress without irrigation)",
        38.5,
        12.5,
        13.0,
        3.0,
        15.5,
        (10, 12, 28, 40, 62, 55, 50, 45, 28, 22, 14, 11),
        (0.08, 0.09, 0.12, 0.15, 0.19, 0.16, 0.14, 0.13, 0.10, 0.09, 0.08, 0.08),
        0.72,
    ),
    "subtropical_monsoon": Climate(
        "humid subtropical: warm, wet summer monsoon, mild dry-ish winters",
        30.0,
        19.5,
        8.5,
        1.8,
        8.0,
        (50, 60, 90, 120, 170, 230, 200, 180, 130, 80, 55, 45),
        (0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.50, 0.48, 0.40, 0.30, 0.25, 0.25),
        0.52,
    ),
}


def extraterrestrial_radiation(latitude: float, day_of_year: np.ndarray) -> np.ndarray:
    """Daily top-of-atmosphere radiation (MJ m⁻²) at ``latitude`` (FAO-56, eq. 21)."""
    phi = np.radians(latitude)
    angle = 2 * np.pi * day_of_year / 365
    distance = 1 + 0.033 * np.cos(angle)
    declination = 0.409 * np.sin(angle - 1.39)
    sunset = np.arccos(np.clip(-np.tan(phi) * np.tan(declination), -1.0, 1.0))
    return np.asarray(
        24
        * 60
        / np.pi
        * SOLAR_CONSTANT
        * distance
        * (
            sunset * np.sin(phi) * np.sin(declination)
            + np.cos(phi) * np.cos(declination) * np.sin(sunset)
        )
    )


def wet_days(rng: np.random.Generator, fraction: np.ndarray, persistence: float) -> np.ndarray:
    """A two-state Markov chain of wet days whose long-run wet fraction is ``fraction``."""
    wet = np.zeros(len(fraction), dtype=bool)
    draws = rng.random(len(fraction))
    for day, p in enumerate(fraction):
        after_wet = p + persistence * (1 - p)
        after_dry = p * (1 - persistence)
        wet[day] = draws[day] < (after_wet if day and wet[day - 1] else after_dry)
    return wet


def daily_weather(name: str, climate: Climate) -> dict[str, np.ndarray]:
    """One year of daily weather for the field ``name``."""
    rng = np.random.default_rng(zlib.crc32(f"agri-weather|{name}".encode()))
    days = 365
    doy = np.arange(1, days + 1)
    month = np.searchsorted(MONTH_STARTS, doy - 1, side="right") - 1
    lengths = np.diff(np.append(MONTH_STARTS, days))

    fraction = np.asarray(climate.wet_fraction)[month]
    wet = wet_days(rng, fraction, persistence=0.3)
    mean_wet_day = np.asarray(climate.rain_mm)[month] / (lengths[month] * fraction)
    shape = 0.8
    rain = np.where(wet, rng.gamma(shape, mean_wet_day / shape), 0.0)
    rain = np.where(rain < 0.2, 0.0, rain)  # below what a gauge reads
    rain *= sum(climate.rain_mm) / rain.sum()  # the year's total is the climate's

    anomaly = np.zeros(days)
    noise = rng.standard_normal(days) * climate.anomaly_sd_c * np.sqrt(1 - 0.7**2)
    for day in range(days):
        anomaly[day] = (0.7 * anomaly[day - 1] if day else 0.0) + noise[day]
    seasonal = climate.mean_c - climate.amplitude_c * np.cos(2 * np.pi * (doy - 20) / 365)
    tmean = seasonal + anomaly - 1.2 * wet
    diurnal = climate.diurnal_range_c * np.where(wet, 0.6, 1.0) + rng.normal(0, 1.2, days)
    diurnal = np.clip(diurnal, 2.0, None)

    transmissivity = climate.transmissivity * np.where(wet, 0.55, 1.0) + rng.normal(0, 0.05, days)
    srad = extraterrestrial_radiation(climate.latitude, doy) * np.clip(transmissivity, 0.12, 0.78)
    return {
        "tmin_c": tmean - diurnal / 2,
        "tmax_c": tmean + diurnal / 2,
        "precip_mm": rain,
        "srad_mj_m2": srad,
    }


def weather_csv(name: str, climate: Climate) -> bytes:
    """The field's weather as the CSV the crop-yield model reads."""
    series = daily_weather(name, climate)
    text = io.StringIO()
    text.write(f"# field: {name}\n")
    text.write(f"# climate: {climate.description}\n")
    text.write(f"# latitude: {climate.latitude:.1f}\n")
    text.write("# synthetic daily weather made by examples/make_weather_data.py\n")
    text.write("date,tmin_c,tmax_c,precip_mm,srad_mj_m2\n")
    first = date(YEAR, 1, 1)
    for day in range(len(series["tmin_c"])):
        text.write(
            f"{first + timedelta(days=day)},{series['tmin_c'][day]:.1f},"
            f"{series['tmax_c'][day]:.1f},{series['precip_mm'][day]:.1f},"
            f"{series['srad_mj_m2'][day]:.2f}\n"
        )
    return text.getvalue().encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=FOLDER, help="Folder to write into.")
    parser.add_argument("--check", action="store_true", help="Compare instead of writing.")
    args = parser.parse_args(argv)
    stale = []
    for name, climate in CLIMATES.items():
        data, path = weather_csv(name, climate), args.out / f"{name}.csv"
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(path.name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{path.name}  {len(data):,} bytes")
    if stale:
        print(f"out of date: {', '.join(stale)}; run this script to remake them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
