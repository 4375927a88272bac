"""Harmonize heterogeneous weather-station tables into one validated daily dataset.

Station networks deliver the same two quantities — daily mean air temperature
(``tas``) and daily precipitation (``pr``) — in as many shapes as there are
networks: comma, semicolon or tab separated, Excel workbooks, columns called
``Temp (F)``, ``T2M_K`` or ``tmean``, dates written ``2023-01-31``,
``31.01.2023`` or ``01/31/2023``, gaps marked ``-999``, ``NA`` or ``M``.
Four routines turn a folder of them into one table:

1. ``read_tables``: read each file as text cells: delimited text (the
   delimiter detected from the header line; UTF-8, else Windows-1252) or the
   first sheet of a workbook. The station's id and name come from a
   ``# key: value`` comment above the header, else from the file name
   (``<ID>_<name>.csv``).
2. ``harmonize``: map columns onto ``date``, ``station``, ``tas`` and ``pr``
   with the configured rules (the first rule whose pattern matches a column
   name wins); read each column's unit from its name (``(F)``, ``_K``,
   ``_in``, ``_mm`` …) or assume °C and mm; parse dates with the format that
   reads most of the column; turn missing-value markers into gaps; accept
   decimal commas; convert to the target units.
3. ``validate``: drop rows whose date cannot be read, that fall outside the
   period, or that repeat a date already seen for the station (the first one
   is kept); blank out values beyond the plausible ranges; count missing
   values and list runs of missing days.
4. ``write_outputs``: write the harmonized table (Parquet), one quality row
   per station (CSV), a Markdown data-quality report and a PNG of the series.

The harmonized table has one row per station and day::

    station, station_name, date, tas_<unit>, pr_<unit>, tas_flag, pr_flag, source

where ``<unit>`` is the target unit in lower case (``tas_c``, ``pr_mm`` …) and
a flag is ``ok``, ``missing`` (a marker, an empty cell, or no such column),
``invalid`` (not a number) or ``out_of_range``; a value that is not ``ok`` is
empty.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, field_validator, model_validator

from accelerator_prefect import Conf, Inputs, Output, jobflow, routine

if TYPE_CHECKING:
    from accelerator_prefect.mapping import InputFile

DELIMITERS = (",", ";", "\t", "|")
DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y", "%d/%m/%Y", "%Y/%m/%d", "%d-%m-%Y", "%Y%m%d")
# A clock time after the date ("2023-01-31T06:00:00Z", "31.01.2023 12:00") is dropped:
# the tables hold daily values.
TIME_OF_DAY = re.compile(r"[T\s]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|UTC|[+-]\d{2}:?\d{2})?$")
DECIMAL_COMMA = re.compile(r"^([+-]?\d+),(\d+)$")
MISSING_MARKERS = ("", "na", "n/a", "nan", "null", "none", "m", "-", "--", "-999", "-9999")
STATION_KEYS = ("station_id", "station", "id", "stn", "wmo_id")
NAME_KEYS = ("station_name", "name")
FLAGS = ("ok", "missing", "invalid", "out_of_range")
MM_PER_INCH = 25.4
EXAMPLES = 5


class TemperatureUnit(StrEnum):
    C = "C"
    F = "F"
    K = "K"


class PrecipitationUnit(StrEnum):
    mm = "mm"
    inch = "in"


class Variable(StrEnum):
    date = "date"
    station = "station"
    tas = "tas"
    pr = "pr"


class SourceUnit(StrEnum):
    auto = "auto"
    C = "C"
    F = "F"
    K = "K"
    mm = "mm"
    inch = "in"


UNITS_OF = {
    Variable.tas: [SourceUnit.auto, SourceUnit.C, SourceUnit.F, SourceUnit.K],
    Variable.pr: [SourceUnit.auto, SourceUnit.mm, SourceUnit.inch],
    Variable.date: [SourceUnit.auto],
    Variable.station: [SourceUnit.auto],
}
UNIT_LABEL = {"C": "°C", "F": "°F", "K": "K", "mm": "mm", "in": "in"}

# The units each variable allows, in the schema too, so a launch is refused before it runs.
_UNIT_FITS_VARIABLE: list[Any] = [
    {
        "if": {"properties": {"variable": {"const": variable.value}}},
        "then": {"properties": {"unit": {"enum": [u.value for u in units]}}},
    }
    for variable, units in UNITS_OF.items()
]


class ColumnRule(Conf):
    """Columns whose name matches ``pattern`` hold ``variable``, in ``unit``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": _UNIT_FITS_VARIABLE})

    pattern: str = Field(
        min_length=1,
        max_length=200,
        description="Regular expression searched for in the column name, ignoring case.",
        json_schema_extra={"format": "regex"},
    )
    variable: Variable = Field(
        description="What the column holds: date, station (id), tas (daily mean temperature) "
        "or pr (daily precipitation)."
    )
    unit: SourceUnit = Field(
        default=SourceUnit.auto,
        description="Unit of the column's values: C, F or K for tas, mm or in for pr; auto reads "
        "it from the column name, e.g. 'Temp (F)' or 'precip_in', and assumes C or mm otherwise.",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _unit_fits_variable(self) -> ColumnRule:
        if self.unit not in UNITS_OF[self.variable]:
            allowed = ", ".join(u.value for u in UNITS_OF[self.variable])
            raise ValueError(
                f"unit {self.unit.value} does not fit {self.variable.value} ({allowed})"
            )
        return self


# A name followed by a separator, a unit in brackets, or nothing: "Temp (F)", "T2M_K",
# "precip_in", "RR_mm" and "rain" match; "tmax", "pressure" and "rainy_days" do not.
_END = r"([\s_(\[]|$)"
DEFAULT_RULES = [
    ColumnRule(
        pattern=r"^(date|datum|day|time|timestamp|obs_?date|mess_?datum)$", variable=Variable.date
    ),
    ColumnRule(pattern=r"^(station|station_?id|stn|site)$", variable=Variable.station),
    ColumnRule(pattern=rf"^(tas|t2m|tmean|tavg|tmk|temp|temperature){_END}", variable=Variable.tas),
    ColumnRule(
        pattern=rf"^(pr|prcp|precip|precipitation|rr|rsk|rain|rainfall){_END}", variable=Variable.pr
    ),
]


class HarmonizationConf(Conf):
    """Target units, the period to keep, how to recognise columns, what is plausible."""

    tas_unit: TemperatureUnit = Field(
        default=TemperatureUnit.C, description="Unit of temperature in the harmonized table."
    )
    pr_unit: PrecipitationUnit = Field(
        default=PrecipitationUnit.mm, description="Unit of precipitation in the harmonized table."
    )
    start_date: date | None = Field(
        default=None, description="First day to keep; empty keeps everything from the start."
    )
    end_date: date | None = Field(
        default=None,
        description="Last day to keep; empty keeps everything to the end. Before the start "
        "date, no day is kept.",
    )
    column_rules: list[ColumnRule] = Field(
        default=DEFAULT_RULES,
        min_length=1,
        max_length=50,
        description="Which column holds what, tried in order: the first rule whose pattern "
        "matches a column name decides it. The defaults recognise common names.",
    )
    missing_values: list[str] = Field(
        default=[],
        max_length=50,
        description="Markers of missing values besides the built-in ones (empty, NA, N/A, NaN, "
        "null, none, M, -, --, -999, -9999); compared ignoring case, numbers by value.",
    )
    # The two bounds cannot cross (at most 0 °C, above 0 °C): the schema alone keeps them
    # ordered, so a launch is checked in full before it is dispatched.
    tas_min_c: float = Field(
        default=-60.0, ge=-90.0, le=0.0, description="Lowest plausible daily mean temperature, °C."
    )
    tas_max_c: float = Field(
        default=50.0, gt=0.0, le=70.0, description="Highest plausible daily mean temperature, °C."
    )
    pr_max_mm: float = Field(
        default=300.0,
        ge=1.0,
        le=2000.0,
        description="Highest plausible daily precipitation, mm (below zero is never plausible).",
    )
    min_gap_days: int = Field(
        default=2, ge=1, le=366, description="Report runs of at least this many days without data."
    )


# -- reading ----------------------------------------------------------------------------------


@dataclass
class SourceTable:
    """One file as read: every cell a stripped string, the header as written."""

    file: str  # the path below the selected folder
    station: str
    station_name: str
    metadata: dict[str, str]
    layout: str  # e.g. "';'-separated text (UTF-8)"
    cells: pd.DataFrame
    lines: list[int]  # the line (or sheet row) of each row of ``cells``
    malformed: int = 0  # rows with more fields than the header, left out


@dataclass
class Skipped:
    file: str
    reason: str


@dataclass
class Tables:
    tables: list[SourceTable]
    skipped: list[Skipped]
    files: int


def decode(data: bytes) -> tuple[str, str]:
    """The text of ``data`` and its encoding: UTF-8 (with or without BOM), else Windows-1252."""
    try:
        return data.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "Latin-1"


def detect_delimiter(header: str, sample: list[str], suffix: str) -> str | None:
    """The delimiter splitting ``header`` into most fields, if the sample rows agree."""
    if suffix == ".tsv":
        return "\t"
    best, best_score = None, (0, 0)
    for delimiter in DELIMITERS:
        fields = header.count(delimiter)
        if fields == 0:
            continue
        agreeing = sum(line.count(delimiter) >= fields for line in sample)
        if (agreeing, fields) > best_score:
            best, best_score = delimiter, (agreeing, fields)
    return best


def parse_metadata(comments: list[str]) -> dict[str, str]:
    """``# station: DE-HPB; name: Hohenpeißenberg`` -> ``{"station": "DE-HPB", ...}``."""
    metadata = {}
    for comment in comments:
        for part in comment.lstrip("#").split(";"):
            match = re.match(r"\s*([^:=]+?)\s*[:=]\s*(.+?)\s*$", part)
            if match:
                metadata[match.group(1).lower().replace(" ", "_")] = match.group(2)
    return metadata


def station_from(name: str, metadata: dict[str, str]) -> tuple[str, str]:
    """Station id and name: from the comment metadata, else from ``<ID>_<name>.<ext>``."""
    stem = PurePosixPath(name).stem
    match = re.match(r"^([A-Za-z0-9-]+)_(.+)$", stem)
    file_id, file_name = (
        (match.group(1), match.group(2).replace("_", " ").title()) if match else (stem, stem)
    )
    station = next((metadata[k] for k in STATION_KEYS if metadata.get(k)), file_id)
    label = next((metadata[k] for k in NAME_KEYS if metadata.get(k)), file_name)
    return station, label


def split_comments(rows: list[list[str]]) -> tuple[list[str], int]:
    """The leading comment rows (``#`` …) and the index of the header row after them."""
    comments = []
    for index, row in enumerate(rows):
        first = next((cell for cell in row if cell), "")
        if first.startswith("#"):
            comments.append(" ".join(cell for cell in row if cell))
        elif first:
            return comments, index
    return comments, len(rows)


def text_rows(data: bytes, suffix: str) -> tuple[list[list[str]], str]:
    """The rows of a delimited text file, and how it was laid out."""
    text, encoding = decode(data)
    lines = text.splitlines()
    content = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not content:
        return [], f"empty text ({encoding})"
    delimiter = detect_delimiter(content[0], content[1:50], suffix)
    if delimiter is None:
        return [], f"text without a delimiter ({encoding})"
    rows = []
    for line in lines:
        if line.lstrip().startswith("#"):
            rows.append([line.strip()])
        else:
            rows.append(next(csv.reader([line], delimiter=delimiter), []))
    shown = {"\t": "tab"}.get(delimiter, f"'{delimiter}'")
    return rows, f"{shown}-separated text ({encoding})"


def cell_text(value: Any) -> str:
    """A workbook cell as the text a CSV would hold; a date cell as an ISO date."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, datetime):  # pandas' Timestamp included
        return value.isoformat(sep=" ") if value.time() != time(0) else f"{value:%Y-%m-%d}"
    return str(value).strip()


def workbook_rows(stream: Any) -> tuple[list[list[str]], str]:
    """The rows of a workbook's first sheet, cells as text (dates as ISO dates)."""
    workbook = pd.ExcelFile(stream)
    sheet = workbook.sheet_names[0]
    frame = workbook.parse(sheet, header=None, dtype=object)
    rows = [[cell_text(v) for v in row] for row in frame.itertuples(index=False)]
    return rows, f"Excel workbook, sheet '{sheet}'"


def unique_names(cells: list[str]) -> list[str]:
    """Column names as written; blank ones numbered, repeated ones suffixed ``_2``, ``_3`` …"""
    names: list[str] = []
    for index, cell in enumerate(cells):
        name = cell.strip() or f"column_{index + 1}"
        suffix, candidate = 2, name
        while candidate in names:
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        names.append(candidate)
    return names


def table_from_rows(file: str, rows: list[list[str]], layout: str) -> SourceTable | Skipped:
    comments, header_at = split_comments(rows)
    if header_at >= len(rows):
        return Skipped(file, f"no header row and no data ({layout})")
    header = unique_names(rows[header_at])
    width, body, lines, malformed = len(header), [], [], 0
    for number, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) > width and any(cells[width:]):
            malformed += 1
            continue
        body.append((cells + [""] * width)[:width])
        lines.append(number)
    if not body:
        return Skipped(file, f"a header but no data rows ({layout})")
    metadata = parse_metadata(comments)
    station, name = station_from(file, metadata)
    cells = pd.DataFrame(body, columns=pd.Index(header), dtype=str)
    return SourceTable(file, station, name, metadata, layout, cells, lines, malformed)


def read_table(source: InputFile) -> SourceTable | Skipped:
    """One selected file as a :class:`SourceTable`, or why it cannot be one."""
    file = source.relative
    data = source.read_bytes()  # a storage error fails the routine, which retries
    try:
        if source.suffix in {".xlsx", ".xlsm"}:
            rows, layout = workbook_rows(io.BytesIO(data))
        else:
            rows, layout = text_rows(data, source.suffix)
    except (ValueError, KeyError, csv.Error, zipfile.BadZipFile) as exc:
        # A damaged file is reported, and the other files are still harmonized.
        return Skipped(file, f"cannot be read: {type(exc).__name__}: {exc}")
    if not rows:
        return Skipped(file, f"no table found ({layout})")
    return table_from_rows(file, rows, layout)


@routine(retries=1, retry_delay_seconds=1)
def read_tables(files: list[InputFile]) -> Tables:
    """Read every selected file as a table of text cells with its station."""
    tables: list[SourceTable] = []
    skipped: list[Skipped] = []
    for source in files:
        result = read_table(source)
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            tables.append(result)
    rows = sum(len(t.cells) for t in tables)
    print(
        f"read_tables: {len(tables)} of {len(files)} file(s) read, {rows} data rows, "
        f"{len({t.station for t in tables})} station(s)"
        + (f"; skipped {', '.join(s.file for s in skipped)}" if skipped else "")
    )
    return Tables(tables, skipped, len(files))


# -- harmonizing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnMatch:
    """A column recognised as one variable, and where its unit came from."""

    variable: Variable
    column: str
    unit: str  # C, F, K, mm or in; "" for date and station
    unit_from: str  # "rule", "name" or "assumed"

    def describe(self) -> str:
        if not self.unit:
            return f"`{self.column}` → {self.variable.value}"
        how = {"rule": "set by a rule", "name": "from the name", "assumed": "assumed"}
        return (
            f"`{self.column}` → {self.variable.value} "
            f"({UNIT_LABEL[self.unit]}, {how[self.unit_from]})"
        )


@dataclass
class FileReport:
    """How one file was understood."""

    file: str
    stations: list[str]
    layout: str
    rows: int
    malformed: int
    matches: dict[Variable, ColumnMatch]
    ignored: list[str]
    date_format: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Harmonized:
    """All rows of all files in the target units, before validation."""

    rows: pd.DataFrame
    files: list[FileReport]
    skipped: list[Skipped]
    names: dict[str, str]  # station id -> name
    input_files: int


# Unit hints in a column name: "(F)", "[K]", "_c", "°F", "degC", "kelvin", "_in", "(mm)" …
_OPEN, _CLOSE = r"(\(|\[|_|\s|°|deg)", r"(\)|\]|$)"
UNIT_HINTS = {
    Variable.tas: [
        (rf"{_OPEN}f{_CLOSE}|fahrenheit", "F"),
        (rf"{_OPEN}k{_CLOSE}|kelvin", "K"),
        (rf"{_OPEN}c{_CLOSE}|celsius", "C"),
    ],
    Variable.pr: [(rf"{_OPEN}(in|inch|inches){_CLOSE}", "in"), (rf"{_OPEN}mm{_CLOSE}", "mm")],
}
ASSUMED_UNIT = {Variable.tas: "C", Variable.pr: "mm"}


def unit_of(column: str, rule: ColumnRule) -> tuple[str, str]:
    """The unit of a matched column and where it came from (rule, name or assumed)."""
    if rule.variable not in UNIT_HINTS:
        return "", ""
    if rule.unit != SourceUnit.auto:
        return rule.unit.value, "rule"
    for pattern, unit in UNIT_HINTS[rule.variable]:
        if re.search(pattern, column.lower()):
            return unit, "name"
    return ASSUMED_UNIT[rule.variable], "assumed"


def match_columns(
    columns: list[str], rules: list[ColumnRule]
) -> tuple[dict[Variable, ColumnMatch], list[str]]:
    """The column of each variable (the first matching column wins) and the other columns."""
    matches: dict[Variable, ColumnMatch] = {}
    ignored = []
    for column in columns:
        rule = next((r for r in rules if re.search(r.pattern, column, re.IGNORECASE)), None)
        if rule is None or rule.variable in matches:
            ignored.append(column)
            continue
        unit, unit_from = unit_of(column, rule)
        matches[rule.variable] = ColumnMatch(rule.variable, column, unit, unit_from)
    return matches, ignored


def parse_dates(values: pd.Series) -> tuple[pd.Series, str]:
    """Dates from text, with the format in ``DATE_FORMATS`` that reads most values.

    On a tie (``03/04/2023`` reads both ways) the earlier format wins, so a column
    of only such dates is read month first; a single later day fixes that.
    """
    text = values.astype(str).str.strip().str.replace(TIME_OF_DAY, "", regex=True)
    best, best_format = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]"), ""
    for candidate in DATE_FORMATS:
        parsed = pd.to_datetime(text, format=candidate, errors="coerce")
        if parsed.notna().sum() > best.notna().sum():
            best, best_format = parsed, candidate
    return best, best_format


def parse_numbers(values: pd.Series, markers: list[str]) -> tuple[pd.Series, pd.Series]:
    """Numbers from text, and each value's flag: ok, missing (a marker) or invalid."""
    text = values.astype(str).str.strip()
    words = {m.strip().lower() for m in markers}
    numeric = {float(m) for m in words if re.fullmatch(r"[+-]?\d+(\.\d+)?", m)}
    text = text.str.replace(DECIMAL_COMMA, r"\1.\2", regex=True)
    numbers = pd.to_numeric(text, errors="coerce")
    missing = text.str.lower().isin(words) | numbers.isin(numeric)
    invalid = numbers.isna() & ~missing
    flags = pd.Series("ok", index=values.index, dtype=object)
    flags[missing] = "missing"
    flags[invalid] = "invalid"
    return numbers.where(flags == "ok"), flags


Values = TypeVar("Values", float, pd.Series)


def convert_temperature(values: Values, source: str, target: str) -> Values:
    """Temperature from ``source`` to ``target`` unit (C, F or K)."""
    celsius = {"C": values, "F": (values - 32) * 5 / 9, "K": values - 273.15}[source]
    return {"C": celsius, "F": celsius * 9 / 5 + 32, "K": celsius + 273.15}[target]


def convert_precipitation(values: Values, source: str, target: str) -> Values:
    """Precipitation from ``source`` to ``target`` unit (mm or in)."""
    mm = values * MM_PER_INCH if source == "in" else values
    return mm / MM_PER_INCH if target == "in" else mm


def unit_notes(match: ColumnMatch, values: pd.Series) -> list[str]:
    """Warnings when an assumed °C column holds values that look like °F or K."""
    if match.variable != Variable.tas or match.unit_from != "assumed" or values.isna().all():
        return []
    median = float(values.median())
    for unit, threshold in (("K", 150.0), ("°F", 40.0)):
        if median > threshold:
            return [
                f"`{match.column}` has a median of {median:.1f}, which looks like {unit}, not °C; "
                "add a column rule with its unit"
            ]
    return []


def harmonize_table(
    table: SourceTable, conf: HarmonizationConf, markers: list[str]
) -> tuple[pd.DataFrame, FileReport] | Skipped:
    """One table's rows on the common schema, in the target units."""
    matches, ignored = match_columns(list(table.cells.columns), conf.column_rules)
    if Variable.date not in matches:
        columns = ", ".join(f"'{c}'" for c in table.cells.columns)
        return Skipped(table.file, f"no date column among {columns}; add a column rule")
    if Variable.tas not in matches and Variable.pr not in matches:
        columns = ", ".join(f"'{c}'" for c in table.cells.columns)
        return Skipped(table.file, f"no temperature or precipitation column among {columns}")
    cells = table.cells
    dates, date_format = parse_dates(cells[matches[Variable.date].column])
    rows = pd.DataFrame(
        {
            "station": table.station,
            "source": table.file,
            "line": table.lines,
            "date_text": cells[matches[Variable.date].column].to_numpy(),
            "date": dates.to_numpy(),
        },
        index=cells.index,
    )
    if Variable.station in matches:
        ids = cells[matches[Variable.station].column]
        rows["station"] = ids.where(ids != "", table.station)
    notes = []
    targets = {Variable.tas: conf.tas_unit.value, Variable.pr: conf.pr_unit.value}
    convert = {Variable.tas: convert_temperature, Variable.pr: convert_precipitation}
    for variable in (Variable.tas, Variable.pr):
        name = variable.value
        if variable not in matches:
            rows[name], rows[f"{name}_flag"], rows[f"{name}_text"] = np.nan, "missing", ""
            notes.append(f"no {name} column; all {name} values are missing")
            continue
        match = matches[variable]
        values, flags = parse_numbers(cells[match.column], markers)
        notes += unit_notes(match, values)
        rows[name] = convert[variable](values, match.unit, targets[variable])
        rows[f"{name}_flag"] = flags
        rows[f"{name}_text"] = cells[match.column].to_numpy()
    report = FileReport(
        file=table.file,
        stations=sorted(rows["station"].unique()),
        layout=table.layout,
        rows=len(cells),
        malformed=table.malformed,
        matches=matches,
        ignored=ignored,
        date_format=date_format,
        notes=notes,
    )
    return rows, report


@routine
def harmonize(conf: HarmonizationConf, tables: Tables) -> Harmonized:
    """Map every table onto the common schema and the target units."""
    markers = [*MISSING_MARKERS, *conf.missing_values]
    frames, reports, skipped = [], [], list(tables.skipped)
    names: dict[str, str] = {}
    for table in tables.tables:
        result = harmonize_table(table, conf, markers)
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        frames.append(result[0])
        reports.append(result[1])
        names.setdefault(table.station, table.station_name)
    if not frames:
        reasons = "; ".join(f"{s.file}: {s.reason}" for s in skipped) or "no files were selected"
        raise ValueError(f"inputs: none of the selected files holds a station table ({reasons})")
    rows = pd.concat(frames, ignore_index=True)
    for station in rows["station"].unique():
        names.setdefault(str(station), str(station))
    assumed = [m for f in reports for m in f.matches.values() if m.unit_from == "assumed"]
    print(
        f"harmonize: {len(rows)} rows from {len(reports)} file(s) in tas "
        f"{UNIT_LABEL[conf.tas_unit.value]} and pr {UNIT_LABEL[conf.pr_unit.value]}; "
        f"{len(assumed)} column(s) without a unit in the name, assumed °C or mm"
    )
    return Harmonized(rows, reports, skipped, names, tables.files)


# -- validating -------------------------------------------------------------------------------


@dataclass
class Validated:
    """The harmonized table, one quality row per station, and the issues found."""

    table: pd.DataFrame
    quality: pd.DataFrame
    issues: dict[str, list[str]]
    files: list[FileReport]
    skipped: list[Skipped]
    input_files: int
    rows_read: int


def examples(items: list[str]) -> str:
    shown = ", ".join(items[:EXAMPLES])
    return shown + (f" … and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else "")


def gaps(days: pd.Series, min_days: int) -> list[tuple[date, date]]:
    """Runs of at least ``min_days`` consecutive days missing between the first and last day."""
    if days.empty:
        return []
    present = pd.DatetimeIndex(days.unique()).sort_values()
    absent = pd.date_range(present[0], present[-1], freq="D").difference(present).to_series()
    if absent.empty:
        return []
    run = (absent.diff() != pd.Timedelta(days=1)).cumsum()
    spans = absent.groupby(run).agg(["min", "max", "size"])
    return [
        (a.date(), b.date()) for a, b, size in spans.itertuples(index=False) if size >= min_days
    ]


def flag_out_of_range(rows: pd.DataFrame, conf: HarmonizationConf) -> pd.DataFrame:
    """``rows`` with values beyond the plausible ranges flagged and blanked."""
    rows = rows.copy()
    tas_unit, pr_unit = conf.tas_unit.value, conf.pr_unit.value
    low = convert_temperature(conf.tas_min_c, "C", tas_unit)
    high = convert_temperature(conf.tas_max_c, "C", tas_unit)
    pr_high = convert_precipitation(conf.pr_max_mm, "mm", pr_unit)
    bad = {
        "tas": (rows["tas"] < low) | (rows["tas"] > high),
        "pr": (rows["pr"] < 0) | (rows["pr"] > pr_high),
    }
    for name, mask in bad.items():
        rows[f"{name}_raw"] = rows[name]
        rows.loc[mask, f"{name}_flag"] = "out_of_range"
        rows.loc[mask, name] = np.nan
    return rows


def row_issues(read: pd.DataFrame) -> list[str]:
    """What was dropped from one station's rows: unreadable dates, the period, duplicates."""
    issues = []
    bad_dates = read[read["date"].isna()]
    if len(bad_dates):
        listed = [f"'{r.date_text}' ({r.source} line {r.line})" for r in bad_dates.itertuples()]
        issues.append(
            f"{len(bad_dates)} row(s) with an unreadable date dropped: {examples(listed)}"
        )
    if outside := int(read["outside"].sum()):
        issues.append(f"{outside} row(s) outside the chosen period dropped")
    duplicates = read[read["duplicate"]]
    if len(duplicates):
        listed = [
            f"{r.date:%Y-%m-%d}" + (" (different values)" if r.conflicting else " (identical)")
            for r in duplicates.itertuples()
        ]
        issues.append(
            f"{len(duplicates)} repeated date(s) dropped, the first row kept: {examples(listed)}"
        )
    return issues


def value_issues(kept: pd.DataFrame, name: str, unit: str) -> list[str]:
    """The flagged values of variable ``name`` (tas or pr) of one station."""
    issues = []
    flags, text, raw = kept[f"{name}_flag"], kept[f"{name}_text"], kept[f"{name}_raw"]
    wrong = kept[flags == "out_of_range"]
    if len(wrong):
        listed = [
            f"{day:%Y-%m-%d} '{text[i]}' (= {raw[i]:.2f} {unit})"
            for i, day in wrong["date"].items()
        ]
        issues.append(
            f"{len(wrong)} {name} value(s) beyond the plausible range blanked: {examples(listed)}"
        )
    invalid = kept[flags == "invalid"]
    if len(invalid):
        listed = [
            f"{r.date:%Y-%m-%d} '{text[r.Index]}' ({r.source} line {r.line})"
            for r in invalid.itertuples()
        ]
        issues.append(f"{len(invalid)} {name} value(s) not a number: {examples(listed)}")
    missing = text[flags == "missing"]
    if len(missing):
        shown = ", ".join(f"'{m}'" if m else "empty" for m in sorted(missing.unique()))
        issues.append(f"{len(missing)} {name} value(s) missing ({shown})")
    return issues


def quality_row(
    station: str, read: pd.DataFrame, kept: pd.DataFrame, runs: list[tuple[date, date]]
) -> dict[str, Any]:
    """One station's line of ``quality.csv``."""
    first, last = (kept["date"].min(), kept["date"].max()) if len(kept) else (None, None)
    span = (last - first).days + 1 if first is not None and last is not None else 0

    def missing_pct(name: str) -> float:
        valid = int((kept[f"{name}_flag"] == "ok").sum())
        return round(100.0 * (span - valid) / span, 1) if span else 100.0

    def count(name: str, flag: str) -> int:
        return int((kept[f"{name}_flag"] == flag).sum())

    return {
        "station": station,
        "rows_read": len(read),
        "rows_kept": len(kept),
        "unreadable_dates": int(read["date"].isna().sum()),
        "outside_period": int(read["outside"].sum()),
        "duplicates_dropped": int(read["duplicate"].sum()),
        "duplicates_conflicting": int(read["conflicting"].sum()),
        "tas_missing_pct": missing_pct("tas"),
        "pr_missing_pct": missing_pct("pr"),
        "tas_out_of_range": count("tas", "out_of_range"),
        "pr_out_of_range": count("pr", "out_of_range"),
        "invalid_values": count("tas", "invalid") + count("pr", "invalid"),
        "missing_days": span - kept["date"].nunique(),
        "gaps": len(runs),
        "longest_gap_days": max(((b - a).days + 1 for a, b in runs), default=0),
        "first_date": first.date() if first is not None else None,
        "last_date": last.date() if last is not None else None,
    }


def mark_rows(rows: pd.DataFrame, conf: HarmonizationConf) -> pd.DataFrame:
    """``rows`` with ``outside`` (the period) and ``duplicate`` / ``conflicting`` marked."""
    rows = rows.copy()
    start = pd.Timestamp(conf.start_date) if conf.start_date else None
    end = pd.Timestamp(conf.end_date) if conf.end_date else None
    dated = rows["date"].notna()
    rows["outside"] = dated & (
        (rows["date"] < start if start is not None else False)
        | (rows["date"] > end if end is not None else False)
    )
    candidates = dated & ~rows["outside"]
    keys = ["station", "date"]
    rows["duplicate"] = False
    rows.loc[candidates, "duplicate"] = rows[candidates].duplicated(keys, keep="first")
    repeats = rows[rows["duplicate"]]
    firsts = rows[candidates & ~rows["duplicate"]].set_index(keys)[["tas", "pr"]]
    first_values = firsts.reindex(pd.MultiIndex.from_frame(repeats[keys]))
    same = np.isclose(repeats["tas"], first_values["tas"], equal_nan=True) & np.isclose(
        repeats["pr"], first_values["pr"], equal_nan=True
    )
    rows["conflicting"] = False
    rows.loc[repeats.index, "conflicting"] = ~same
    return rows


@routine
def validate(conf: HarmonizationConf, harmonized: Harmonized) -> Validated:
    """Drop unreadable, out-of-period and duplicate rows; flag implausible values; find gaps."""
    rows = mark_rows(harmonized.rows, conf)
    keep = rows["date"].notna() & ~rows["outside"] & ~rows["duplicate"]
    kept = flag_out_of_range(rows[keep], conf)
    units = {"tas": UNIT_LABEL[conf.tas_unit.value], "pr": UNIT_LABEL[conf.pr_unit.value]}
    quality_rows, issues = [], {}
    for station in sorted(rows["station"].unique()):
        read, mine = rows[rows["station"] == station], kept[kept["station"] == station]
        runs = gaps(mine["date"], conf.min_gap_days)
        found = row_issues(read)
        for name, unit in units.items():
            found += value_issues(mine, name, unit)
        if runs:
            listed = [f"{a} – {b} ({(b - a).days + 1} days)" for a, b in runs]
            found.append(f"{len(runs)} gap(s) of {conf.min_gap_days}+ days: {examples(listed)}")
        quality = quality_row(station, read, mine, runs)
        reports = [f for f in harmonized.files if station in f.stations]
        quality.update(file_columns(harmonized.names.get(station, station), reports))
        quality_rows.append(quality)
        issues[station] = found
    quality_frame = pd.DataFrame(quality_rows)
    table = final_table(kept, harmonized.names, conf)
    print(
        f"validate: kept {len(table)} of {len(rows)} rows "
        f"({int(rows['outside'].sum())} outside the period); "
        f"{int(quality_frame['unreadable_dates'].sum())} unreadable date(s), "
        f"{int(quality_frame['duplicates_dropped'].sum())} duplicate(s), "
        f"{int(quality_frame[['tas_out_of_range', 'pr_out_of_range']].sum().sum())} "
        f"value(s) out of range, {int(quality_frame['gaps'].sum())} gap(s)"
    )
    return Validated(
        table,
        quality_frame,
        issues,
        harmonized.files,
        harmonized.skipped,
        harmonized.input_files,
        len(rows),
    )


def file_columns(name: str, reports: list[FileReport]) -> dict[str, Any]:
    """The quality columns saying where a station's data came from and how it was read."""

    def column(variable: Variable) -> str:
        found = [r.matches[variable] for r in reports if variable in r.matches]
        return "; ".join(sorted({m.column for m in found}))

    def unit(variable: Variable) -> str:
        found = [r.matches[variable] for r in reports if variable in r.matches]
        return "; ".join(sorted({f"{m.unit} ({m.unit_from})" for m in found}))

    return {
        "station_name": name,
        "source_files": "; ".join(r.file for r in reports),
        "layout": "; ".join(r.layout for r in reports),
        "date_column": column(Variable.date),
        "date_format": "; ".join(sorted({r.date_format for r in reports})),
        "tas_column": column(Variable.tas),
        "tas_source_unit": unit(Variable.tas),
        "pr_column": column(Variable.pr),
        "pr_source_unit": unit(Variable.pr),
    }


def final_table(kept: pd.DataFrame, names: dict[str, str], conf: HarmonizationConf) -> pd.DataFrame:
    """The harmonized table on its published schema, sorted by station and date."""
    tas, pr = f"tas_{conf.tas_unit.value.lower()}", f"pr_{conf.pr_unit.value.lower()}"
    ordered = kept.sort_values(["station", "date"], kind="stable")
    table = pd.DataFrame(
        {
            "station": ordered["station"].astype(str),
            "station_name": ordered["station"].map(names).astype(str),
            "date": ordered["date"].dt.date,
            tas: ordered["tas"].round(2),
            pr: ordered["pr"].round(3 if conf.pr_unit == PrecipitationUnit.inch else 2),
            "tas_flag": pd.Categorical(ordered["tas_flag"], categories=FLAGS),
            "pr_flag": pd.Categorical(ordered["pr_flag"], categories=FLAGS),
            "source": ordered["source"].astype(str),
        }
    )
    return table.reset_index(drop=True)


# -- writing ----------------------------------------------------------------------------------


def markdown_table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def period_text(conf: HarmonizationConf) -> str:
    if conf.start_date and conf.end_date:
        empty = " — an empty period: the start is after the end" * (conf.start_date > conf.end_date)
        return f"{conf.start_date} to {conf.end_date}{empty}"
    if conf.start_date or conf.end_date:
        return f"from {conf.start_date}" if conf.start_date else f"up to {conf.end_date}"
    return "all dates"


def quality_report(conf: HarmonizationConf, checked: Validated, output_uri: str) -> str:
    """The data-quality report as Markdown."""
    q = checked.quality
    tas_label, pr_label = UNIT_LABEL[conf.tas_unit.value], UNIT_LABEL[conf.pr_unit.value]
    period = period_text(conf)
    parts = [
        "# Data-quality report: weather-station harmonization",
        "",
        f"{len(q)} station(s) from {len(checked.files)} of {checked.input_files} file(s); "
        f"**{len(checked.table)} of {checked.rows_read} rows kept** ({period}). "
        f"Temperature (`tas`, daily mean) in {tas_label}, precipitation (`pr`, daily total) "
        f"in {pr_label}. Results in `{output_uri}`.",
        "",
        "## Stations",
        "",
        markdown_table(
            [
                [
                    f"**{r.station}** {r.station_name}",
                    f"{r.first_date} – {r.last_date}" if r.rows_kept else "no rows kept",
                    r.rows_read,
                    r.rows_kept,
                    f"{r.tas_missing_pct:.1f} %",
                    f"{r.pr_missing_pct:.1f} %",
                    r.tas_out_of_range + r.pr_out_of_range,
                    r.duplicates_dropped,
                    r.unreadable_dates,
                    f"{r.missing_days} ({r.gaps})",
                ]
                for r in q.itertuples()
            ],
            [
                "station",
                "period",
                "rows read",
                "rows kept",
                "tas missing",
                "pr missing",
                "out of range",
                "duplicates",
                "bad dates",
                "days absent (gaps)",
            ],
        ),
        "",
        "*Missing* counts every day from a station's first to its last day without a valid "
        "value: marked missing, not a number, out of range, or no row at all.",
        "",
        "## Issues and sources by station",
    ]
    for r in q.itertuples():
        parts += ["", f"### {r.station} · {r.station_name}", ""]
        for report in (f for f in checked.files if r.station in f.stations):
            columns = ", ".join(m.describe() for m in report.matches.values())
            ignored = ", ".join(f"`{c}`" for c in report.ignored) or "none"
            parts.append(
                f"- `{report.file}`: {report.layout}, {report.rows} rows, dates as "
                f"`{report.date_format or 'unreadable'}`; {columns}; ignored: {ignored}"
            )
            if report.malformed:
                parts.append(f"  - {report.malformed} row(s) with too many fields left out")
            parts += [f"  - {note}" for note in report.notes]
        found = checked.issues.get(r.station, [])
        parts += [f"- {issue}" for issue in found] or ["- no issues found"]
    if checked.skipped:
        parts += ["", "## Files not used", ""]
        parts += [f"- `{s.file}`: {s.reason}" for s in checked.skipped]
    parts += [
        "",
        "## Settings",
        "",
        markdown_table(
            [
                ["target units", f"tas {tas_label}, pr {pr_label}"],
                ["period", period],
                ["plausible tas", f"{conf.tas_min_c:g} to {conf.tas_max_c:g} °C"],
                ["plausible pr", f"0 to {conf.pr_max_mm:g} mm per day"],
                ["gaps listed from", f"{conf.min_gap_days} days"],
                [
                    "extra missing markers",
                    ", ".join(f"`{m}`" for m in conf.missing_values) or "none",
                ],
                [
                    "column rules",
                    "; ".join(
                        f"`{rule.pattern}` → {rule.variable.value}"
                        + (f" ({rule.unit.value})" if rule.unit != SourceUnit.auto else "")
                        for rule in conf.column_rules
                    ),
                ],
            ],
            ["setting", "value"],
        ),
        "",
    ]
    return "\n".join(parts)


def timeseries_png(conf: HarmonizationConf, table: pd.DataFrame) -> bytes:
    """Daily temperature and monthly precipitation per station, gaps left open."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tas, pr = table.columns[3], table.columns[4]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, height_ratios=[3, 2], constrained_layout=True
    )
    for station, rows in table.groupby("station", sort=True):
        series = rows.assign(date=pd.to_datetime(rows["date"])).set_index("date")
        daily = series[tas].asfreq("D")  # absent days become gaps in the line
        label = f"{station} {rows['station_name'].iloc[0]}"
        (line,) = top.plot(daily.index, daily.to_numpy(), linewidth=0.8, label=label)
        monthly = series[pr].resample("MS").sum(min_count=20)
        bottom.plot(
            monthly.index + pd.Timedelta(days=14),
            monthly.to_numpy(),
            marker="o",
            markersize=3,
            linewidth=1,
            color=line.get_color(),
        )
    top.set_ylabel(f"daily mean temperature ({UNIT_LABEL[conf.tas_unit.value]})")
    if table.empty:
        top.text(0.5, 0.5, "no rows kept", ha="center", va="center", transform=top.transAxes)
    else:
        figure.legend(loc="outside lower center", ncols=min(5, table["station"].nunique()))
    top.grid(alpha=0.3)
    bottom.set_ylabel(f"monthly total ({UNIT_LABEL[conf.pr_unit.value]})")
    bottom.set_title("precipitation, months with 20 or more valid days", fontsize=9)
    bottom.grid(alpha=0.3)
    figure.suptitle(f"Harmonized station series · {table['station'].nunique()} stations")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


@routine
def write_outputs(conf: HarmonizationConf, checked: Validated, output: Output) -> dict[str, Any]:
    """Write the harmonized table, the quality table and report, and the plot."""
    checked.table.to_parquet(output.path("harmonized.parquet"), index=False)
    columns = ["station", "station_name", "source_files", "rows_read", "rows_kept"]
    quality = checked.quality[columns + [c for c in checked.quality if c not in columns]]
    with output.open("quality.csv", "w", newline="") as f:
        quality.to_csv(f, index=False)
    with output.open("quality_report.md", "w") as f:
        f.write(quality_report(conf, checked, output.uri))
    with output.open("timeseries.png", "wb") as f:
        f.write(timeseries_png(conf, checked.table))
    files = ["harmonized.parquet", "quality.csv", "quality_report.md", "timeseries.png"]
    print(f"write_outputs: wrote {', '.join(files)} to {output.uri}")
    return {
        "output": output.uri,
        "files": sorted(files),
        "stations": checked.quality["station"].tolist(),
        "rows_read": checked.rows_read,
        "rows": len(checked.table),
        "issues": sum(len(found) for found in checked.issues.values()),
        "skipped_files": [s.file for s in checked.skipped],
        "units": {"tas": conf.tas_unit.value, "pr": conf.pr_unit.value},
    }


@jobflow(name="data-harmonization")
def data_harmonization(conf: HarmonizationConf, inputs: Inputs, output: Output) -> dict[str, Any]:
    """Harmonize a folder of weather-station tables into one validated daily dataset."""
    tables = read_tables(inputs.files())
    harmonized = harmonize(conf, tables)
    checked = validate(conf, harmonized)
    return write_outputs(conf, checked, output)  # type: ignore[no-any-return]
