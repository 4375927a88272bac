"""Regenerate the sample weather-station tables the data-harmonization model reads.

Five stations, written the way five different networks would deliver them, so
the harmonization has real work to do:

=========================  ==========  =====================================================
file                       layout      what differs
=========================  ==========  =====================================================
DE-HPB_hohenpeissenberg    ``;`` CSV   Latin-1, decimal commas, ``%d.%m.%Y``, -999, °C
US-BOU_boulder             ``,`` CSV   ``%m/%d/%Y``, °F and inches, ``M``, extra Tmax/Tmin
FI-SOD_sodankyla           TSV         ISO timestamps, Kelvin, ``NA``, a 12-day outage
CH-SAE_saentis             XLSX        Excel dates, metadata row, empty cells and ``-``
ES-MAD_madrid_retiro       ``,`` TXT   ``%d/%m/%Y``, no metadata but the file name, ``-``
=========================  ==========  =====================================================

The weather is synthetic (a seasonal cycle with autocorrelated anomalies and a
two-state Markov chain for wet days, seeded per station); the faults listed in
``FAULTS`` are placed on purpose, so a harmonization run has known answers.
Output is byte-for-byte reproducible, the XLSX included.

Run from the repository root::

    python examples/make_station_data.py            # writes examples/data/meteo/stations/
    python examples/make_station_data.py --check    # fails if the files on disk differ
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "data" / "meteo" / "stations"
FIXED_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Climate:
    """Daily climate of a station: temperature in °C, precipitation in mm."""

    mean_c: float
    amplitude_c: float
    anomaly_sd_c: float
    wet_fraction: float
    wet_day_mm: float


@dataclass
class Series:
    days: list[date]
    tas_c: np.ndarray
    pr_mm: np.ndarray
    tmax_c: np.ndarray
    tmin_c: np.ndarray


CLIMATES = {
    "DE-HPB": Climate(7.4, 9.0, 3.2, 0.50, 4.6),
    "US-BOU": Climate(11.2, 11.0, 4.4, 0.20, 5.2),
    "FI-SOD": Climate(-0.4, 14.0, 4.6, 0.48, 2.4),
    "CH-SAE": Climate(-1.6, 7.5, 3.8, 0.58, 7.4),
    "ES-MAD": Climate(15.2, 9.4, 2.4, 0.16, 5.0),
}

# The deliberate faults, by station: what the harmonization must find.
FAULTS = {
    "DE-HPB": [
        "-999 for temperature on 8 days and for precipitation on 5 days",
        "tmean 85,3 on 2022-08-09 (impossible)",
        "2022-03-15 delivered twice, identical",
    ],
    "US-BOU": [
        "M for temperature on 6 days and for precipitation on 4 days",
        "precip_in -0.50 on 2023-05-20 (negative)",
        "2023-07-04 delivered twice, with different values",
        "the date 02/30/2023 (no such day)",
    ],
    "FI-SOD": [
        "NA for temperature on 5 days and for precipitation on 3 days",
        "T2M_K 0.00 on 2022-12-06 (absolute zero)",
        "precip_mm 612.0 on 2023-03-02 (not a daily amount)",
        "no rows from 2023-01-10 to 2023-01-21 (a 12-day outage)",
    ],
    "CH-SAE": [
        "empty cells for temperature on 4 days, '-' for precipitation on 6 days",
        "precip_mm 999.9 on 2023-11-14 (a logger's overflow value)",
    ],
    "ES-MAD": [
        "'-' and empty fields on 7 days",
        "tavg 'err' on 2022-09-12 (not a number)",
        "tavg 61.5 on 2023-07-18 (beyond any record)",
        "the date 31/02/2023 (no such day)",
    ],
}


def seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def weather(station: str, start: date, end: date) -> Series:
    """A plausible daily series for ``station`` from ``start`` to ``end`` inclusive."""
    climate = CLIMATES[station]
    rng = np.random.default_rng(seed("stations", station))
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    doy = np.array([d.timetuple().tm_yday for d in days], dtype=float)
    seasonal = climate.mean_c - climate.amplitude_c * np.cos(2 * np.pi * (doy - 20) / 365.25)
    phi = 0.7
    shocks = rng.normal(0.0, climate.anomaly_sd_c * np.sqrt(1 - phi**2), len(days))
    anomaly = np.zeros(len(days))
    for i in range(1, len(days)):
        anomaly[i] = phi * anomaly[i - 1] + shocks[i]
    tas = seasonal + anomaly
    # Wet days persist: P(wet | wet) = 0.65, P(wet | dry) set for the climate's wet fraction.
    p11 = 0.65
    p01 = climate.wet_fraction * (1 - p11) / (1 - climate.wet_fraction)
    wet = np.zeros(len(days), dtype=bool)
    draws = rng.random(len(days))
    for i in range(1, len(days)):
        wet[i] = draws[i] < (p11 if wet[i - 1] else p01)
    amounts = rng.gamma(0.8, climate.wet_day_mm / 0.8, len(days))
    pr = np.where(wet, np.maximum(amounts, 0.1), 0.0)
    spread = rng.uniform(3.0, 8.0, len(days))
    return Series(days, tas, pr, tas + spread, tas - spread)


def fmt(value: float, decimals: int, comma: bool = False) -> str:
    text = f"{value:.{decimals}f}"
    return text.replace(".", ",") if comma else text


def every(days: list[date], count: int, offset: int) -> set[date]:
    """``count`` days spread over ``days``, deterministic."""
    step = len(days) // count
    return {days[offset + i * step] for i in range(count)}


def hohenpeissenberg() -> bytes:
    s = weather("DE-HPB", date(2022, 1, 1), date(2023, 6, 30))
    no_tas, no_pr = every(s.days, 8, 11), every(s.days, 5, 40)
    lines = [
        "# Station: DE-HPB; Name: Hohenpeißenberg; Höhe: 977 m; Quelle: synthetisches Beispiel",
        "datum;tmean;RR_mm",
    ]
    for i, day in enumerate(s.days):
        tas = "-999" if day in no_tas else fmt(s.tas_c[i], 1, comma=True)
        pr = "-999" if day in no_pr else fmt(s.pr_mm[i], 1, comma=True)
        if day == date(2022, 8, 9):
            tas = "85,3"
        row = f"{day:%d.%m.%Y};{tas};{pr}"
        lines.append(row)
        if day == date(2022, 3, 15):
            lines.append(row)
    return ("\n".join(lines) + "\n").encode("latin-1")


def boulder() -> bytes:
    s = weather("US-BOU", date(2023, 1, 1), date(2023, 12, 31))
    no_tas, no_pr = every(s.days, 6, 20), every(s.days, 4, 50)
    lines = [
        "# station_id=US-BOU; name=Boulder, CO; elevation_m=1671",
        "Date,Temp (F),Tmax (F),Tmin (F),precip_in",
    ]

    def f(celsius: float) -> str:
        return fmt(celsius * 9 / 5 + 32, 1)

    for i, day in enumerate(s.days):
        tas = "M" if day in no_tas else f(s.tas_c[i])
        pr = "M" if day in no_pr else fmt(s.pr_mm[i] / 25.4, 2)
        if day == date(2023, 5, 20):
            pr = "-0.50"
        lines.append(f"{day:%m/%d/%Y},{tas},{f(s.tmax_c[i])},{f(s.tmin_c[i])},{pr}")
        if day == date(2023, 7, 4):
            lines.append(f"{day:%m/%d/%Y},{f(s.tas_c[i] + 4.0)},,,0.00")
        if day == date(2023, 2, 28):
            lines.append("02/30/2023,41.0,50.2,33.1,0.00")
    return ("\n".join(lines) + "\n").encode()


def sodankyla() -> bytes:
    s = weather("FI-SOD", date(2022, 7, 1), date(2023, 6, 30))
    no_tas, no_pr = every(s.days, 5, 3), every(s.days, 3, 30)
    outage = {date(2023, 1, 10) + timedelta(days=i) for i in range(12)}
    lines = ["time\tT2M_K\tprecip_mm"]
    for i, day in enumerate(s.days):
        if day in outage:
            continue
        tas = "NA" if day in no_tas else fmt(s.tas_c[i] + 273.15, 2)
        pr = "NA" if day in no_pr else fmt(s.pr_mm[i], 1)
        if day == date(2022, 12, 6):
            tas = "0.00"
        if day == date(2023, 3, 2):
            pr = "612.0"
        lines.append(f"{day:%Y-%m-%d}T06:00:00Z\t{tas}\t{pr}")
    return ("\n".join(lines) + "\n").encode()


def saentis() -> bytes:
    from openpyxl import Workbook

    s = weather("CH-SAE", date(2023, 1, 1), date(2023, 12, 31))
    no_tas, no_pr = every(s.days, 4, 7), every(s.days, 6, 25)
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "daily"
    sheet.append(["# station: CH-SAE; name: Säntis; elevation_m: 2502"])
    sheet.append(["obs_date", "temperature_c", "precip_mm"])
    for i, day in enumerate(s.days):
        tas: float | str | None = None if day in no_tas else round(float(s.tas_c[i]), 1)
        pr: float | str | None = "-" if day in no_pr else round(float(s.pr_mm[i]), 1)
        if day == date(2023, 11, 14):
            pr = 999.9
        sheet.append([day, tas, pr])
        sheet.cell(row=sheet.max_row, column=1).number_format = "yyyy-mm-dd"
    workbook.properties.creator = "make_station_data.py"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return reproducible_zip(buffer.getvalue())


def reproducible_zip(data: bytes) -> bytes:
    """``data`` (a zip) with fixed member times and document timestamps."""
    source = zipfile.ZipFile(io.BytesIO(data))
    target = io.BytesIO()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                content = re.sub(
                    rb"(<dcterms:(created|modified)[^>]*>)[^<]*",
                    rb"\g<1>2024-01-01T00:00:00Z",
                    content,
                )
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(fixed, content)
    return target.getvalue()


def madrid() -> bytes:
    s = weather("ES-MAD", date(2022, 1, 1), date(2023, 12, 31))
    blanks = sorted(every(s.days, 7, 15))
    lines = ["date,tavg,rain"]
    for i, day in enumerate(s.days):
        tas, pr = fmt(s.tas_c[i], 1), fmt(s.pr_mm[i], 1)
        if day in blanks:
            # Alternate which field is blank, and how.
            k = blanks.index(day)
            tas, pr = (("-", pr), (tas, ""), ("", "-"))[k % 3]
        if day == date(2022, 9, 12):
            tas = "err"
        if day == date(2023, 7, 18):
            tas = "61.5"
        lines.append(f"{day:%d/%m/%Y},{tas},{pr}")
        if day == date(2023, 2, 28):
            lines.append("31/02/2023,9.0,0.0")
    return ("\n".join(lines) + "\n").encode()


FILES: dict[str, Callable[[], bytes]] = {
    "DE-HPB_hohenpeissenberg.csv": hohenpeissenberg,
    "US-BOU_boulder.csv": boulder,
    "FI-SOD_sodankyla.tsv": sodankyla,
    "CH-SAE_saentis.xlsx": saentis,
    "ES-MAD_madrid_retiro.txt": madrid,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=FOLDER, help="Folder to write into.")
    parser.add_argument("--check", action="store_true", help="Compare instead of writing.")
    args = parser.parse_args(argv)
    stale = []
    for name, make in FILES.items():
        data, path = make(), args.out / name
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{path}  {len(data):,} bytes")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
