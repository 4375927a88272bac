"""The launch form: a conf schema becomes widgets, and the widgets a conf the service accepts.

Every construct of the corpus below is read with `form_fields`, drawn for real
in Streamlit's AppTest and driven like a user would; the value it returns is
checked with the service layer's own validator. A hypothesis property then
drives the same `render` through a fake `ui` whose widgets answer anything
Streamlit would let a user enter, and checks that every such value validates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from streamlit.testing.v1 import AppTest

from accelerator_prefect.validation import parameter_problems
from catalog_ui.form import NO_DEFAULT, Field, errors_by_field, form_fields, render

# ---------------------------------------------------------------- the corpus


def conf_root(conf: str, definitions: dict[str, Any], defs: str = "definitions") -> dict[str, Any]:
    """A parameter schema shaped like Prefect's: ``conf`` refers into the definitions."""
    return {
        "title": "Parameters",
        "type": "object",
        "properties": {"conf": {"$ref": f"#/{defs}/{conf}", "position": 0, "title": "conf"}},
        "required": ["conf"],
        defs: definitions,
    }


def simple_root(properties: dict[str, Any], required: list[str], **defs: Any) -> dict[str, Any]:
    conf = {
        "title": "Conf",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": required,
    }
    return conf_root("Conf", {"Conf": conf, **defs})


TEXT = simple_root(
    {
        "name": {
            "type": "string",
            "title": "Station name",
            "maxLength": 40,
            "description": "What the station is called.",
        },
        "notes": {"type": "string", "maxLength": 1000},
        "summary": {"type": "string", "format": "textarea"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{3}$", "minLength": 6},
        "contact": {"type": "string", "format": "email"},
    },
    ["name", "code"],
)

DATES = simple_root(
    {
        "day": {"type": "string", "format": "date", "default": "2020-05-17"},
        "moment": {"type": "string", "format": "date-time"},
        "until": {
            "anyOf": [{"type": "string", "format": "date"}, {"type": "null"}],
            "default": None,
            "title": "Until",
        },
        "since": {"type": "string", "format": "date"},
    },
    ["moment"],
)

NUMBERS = simple_root(
    {
        "count": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
        "open_count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
        "fives": {"type": "integer", "multipleOf": 5, "minimum": 3, "maximum": 42},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.5},
        "quarters": {"type": "number", "multipleOf": 0.25, "minimum": -1, "maximum": 2},
        "threshold": {"type": "number"},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
    },
    ["count", "open_count", "fives", "quarters"],
)

BOOLEANS = simple_root(
    {
        "flag": {"type": "boolean", "default": True},
        "strict": {"type": "boolean"},
        "maybe": {"type": "boolean"},
    },
    ["strict"],
)

CHOICES = conf_root(
    "Conf",
    {
        "Conf": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "colour": {"type": "string", "enum": ["red", "green", "blue"]},
                "letter": {
                    "oneOf": [{"const": "a", "title": "Alpha"}, {"const": "b", "title": "Beta"}]
                },
                "unit": {"$ref": "#/$defs/Unit", "default": "mm"},
                "backup_unit": {"anyOf": [{"$ref": "#/$defs/Unit"}, {"type": "null"}]},
                "level": {"type": "integer", "enum": [1, 2, 3], "default": 2},
            },
            "required": ["colour", "letter"],
        },
        "Unit": {"enum": ["mm", "in"], "title": "Unit", "type": "string"},
    },
    defs="$defs",
)

CONSTS = simple_root(
    {"version": {"const": "v1"}, "label": {"type": "string", "default": "x"}},
    ["version"],
)

SCALAR_LISTS = simple_root(
    {
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 10},
            "minItems": 1,
            "maxItems": 3,
            "uniqueItems": True,
        },
        "values": {"type": "array", "items": {"type": "number"}, "default": [1.5, 2.5]},
        "colours": {
            "type": "array",
            "items": {"enum": ["red", "green", "blue"]},
            "maxItems": 2,
            "uniqueItems": True,
        },
        "days": {"type": "array", "items": {"type": "string", "format": "date"}},
    },
    ["tags"],
)

OBJECT_LISTS = simple_root(
    {"layers": {"type": "array", "items": {"$ref": "#/definitions/Layer"}, "maxItems": 3}},
    [],
    Layer={
        "title": "Layer",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "depth": {"type": "number", "minimum": 0, "default": 1.0},
            "soil": {"enum": ["sand", "clay"], "default": "sand"},
            "note": {"type": "string"},
        },
        "required": ["depth"],
    },
)

NESTED = simple_root(
    {
        "site": {"allOf": [{"$ref": "#/definitions/Site"}], "description": "Where it is."},
        "extra": {"$ref": "#/definitions/Extra"},
    },
    ["site"],
    Site={
        "title": "Site",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "lon": {"type": "number", "minimum": -180, "maximum": 180},
        },
        "required": ["lat", "lon"],
    },
    Extra={
        "title": "Extra",
        "type": "object",
        "additionalProperties": False,
        "properties": {"note": {"type": "string", "minLength": 1}, "weight": {"type": "number"}},
        "required": ["note"],
    },
)

VARIANTS = simple_root(
    {
        "shape": {
            "oneOf": [{"$ref": "#/definitions/Circle"}, {"$ref": "#/definitions/Square"}],
            "default": {"kind": "circle", "radius": 2.0},
        },
        "amount": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]},
        "window": {
            "anyOf": [{"type": "integer"}, {"const": "auto"}, {"type": "null"}],
            "default": None,
        },
    },
    ["shape", "amount"],
    Circle={
        "title": "Circle",
        "type": "object",
        "additionalProperties": False,
        "properties": {"kind": {"const": "circle"}, "radius": {"type": "number", "minimum": 0}},
        "required": ["kind", "radius"],
    },
    Square={
        "title": "Square",
        "type": "object",
        "additionalProperties": False,
        "properties": {"kind": {"const": "square"}, "side": {"type": "integer", "minimum": 1}},
        "required": ["kind", "side"],
    },
)

FALLBACK = simple_root(
    {
        "blob": {"description": "Anything at all."},
        "mapping": {"type": "object", "additionalProperties": {"type": "integer"}},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
    },
    [],
)

# The real conf schemas of the bundled flows, as Prefect writes them:
#   parameter_schema(flow.fn).model_dump_for_openapi()   (inputs and output left out)
CLIMATE = conf_root(
    "DownscalingConf",
    {
        "DownscalingConf": {
            "additionalProperties": False,
            "description": "What to downscale, where, and how finely.",
            "properties": {
                "scenario": {
                    "$ref": "#/definitions/Scenario",
                    "description": "Emission scenario (SSP) of the projection.",
                },
                "target_region": {
                    "$ref": "#/definitions/Region",
                    "description": "Region to downscale.",
                },
                "base_year": {
                    "default": 1995,
                    "description": "Centre of the 30-year reference period the change is "
                    "measured against.",
                    "maximum": 2100,
                    "minimum": 1950,
                    "title": "Base Year",
                    "type": "integer",
                },
                "resolution_km": {
                    "default": 5.0,
                    "description": "Cell size of the fine grid, in kilometres.",
                    "maximum": 50.0,
                    "minimum": 1.0,
                    "title": "Resolution Km",
                    "type": "number",
                },
            },
            "required": ["scenario", "target_region"],
            "title": "DownscalingConf",
            "type": "object",
        },
        "Region": {
            "enum": ["alps", "pyrenees", "carpathians", "scandes"],
            "title": "Region",
            "type": "string",
        },
        "Scenario": {
            "enum": ["ssp126", "ssp245", "ssp370", "ssp585"],
            "title": "Scenario",
            "type": "string",
        },
    },
)


def _unit_rule(variable: str, units: list[str]) -> dict[str, Any]:
    return {
        "if": {"properties": {"variable": {"const": variable}}},
        "then": {"properties": {"unit": {"enum": units}}},
    }


HARMONIZATION_RULES = [
    {
        "pattern": "^(date|datum|day|time|timestamp|obs_?date|mess_?datum)$",
        "variable": "date",
        "unit": "auto",
    },
    {"pattern": "^(station|station_?id|stn|site)$", "variable": "station", "unit": "auto"},
    {
        "pattern": "^(tas|t2m|tmean|tavg|tmk|temp|temperature)([\\s_(\\[]|$)",
        "variable": "tas",
        "unit": "auto",
    },
    {
        "pattern": "^(pr|prcp|precip|precipitation|rr|rsk|rain|rainfall)([\\s_(\\[]|$)",
        "variable": "pr",
        "unit": "auto",
    },
]

HARMONIZATION = conf_root(
    "HarmonizationConf",
    {
        "ColumnRule": {
            "additionalProperties": False,
            "allOf": [
                _unit_rule("tas", ["auto", "C", "F", "K"]),
                _unit_rule("pr", ["auto", "mm", "in"]),
                _unit_rule("date", ["auto"]),
                _unit_rule("station", ["auto"]),
            ],
            "description": "Columns whose name matches ``pattern`` hold ``variable``, in ``unit``.",
            "properties": {
                "pattern": {
                    "description": "Regular expression searched for in the column name, "
                    "ignoring case.",
                    "format": "regex",
                    "maxLength": 200,
                    "minLength": 1,
                    "title": "Pattern",
                    "type": "string",
                },
                "variable": {
                    "$ref": "#/definitions/Variable",
                    "description": "What the column holds: date, station (id), tas (daily mean "
                    "temperature) or pr (daily precipitation).",
                },
                "unit": {
                    "$ref": "#/definitions/SourceUnit",
                    "default": "auto",
                    "description": "Unit of the column's values: C, F or K for tas, mm or in for "
                    "pr; auto reads it from the column name, e.g. 'Temp (F)' or 'precip_in', and "
                    "assumes C or mm otherwise.",
                },
            },
            "required": ["pattern", "variable"],
            "title": "ColumnRule",
            "type": "object",
        },
        "HarmonizationConf": {
            "additionalProperties": False,
            "description": "Target units, the period to keep, how to recognise columns, what is "
            "plausible.",
            "properties": {
                "tas_unit": {
                    "$ref": "#/definitions/TemperatureUnit",
                    "default": "C",
                    "description": "Unit of temperature in the harmonized table.",
                },
                "pr_unit": {
                    "$ref": "#/definitions/PrecipitationUnit",
                    "default": "mm",
                    "description": "Unit of precipitation in the harmonized table.",
                },
                "start_date": {
                    "anyOf": [{"format": "date", "type": "string"}, {"type": "null"}],
                    "default": None,
                    "description": "First day to keep; empty keeps everything from the start.",
                    "title": "Start Date",
                },
                "end_date": {
                    "anyOf": [{"format": "date", "type": "string"}, {"type": "null"}],
                    "default": None,
                    "description": "Last day to keep; empty keeps everything to the end. Before "
                    "the start date, no day is kept.",
                    "title": "End Date",
                },
                "column_rules": {
                    "default": HARMONIZATION_RULES,
                    "description": "Which column holds what, tried in order: the first rule "
                    "whose pattern matches a column name decides it. The defaults recognise "
                    "common names.",
                    "items": {"$ref": "#/definitions/ColumnRule"},
                    "maxItems": 50,
                    "minItems": 1,
                    "title": "Column Rules",
                    "type": "array",
                },
                "missing_values": {
                    "default": [],
                    "description": "Markers of missing values besides the built-in ones (empty, "
                    "NA, N/A, NaN, null, none, M, -, --, -999, -9999); compared ignoring case, "
                    "numbers by value.",
                    "items": {"type": "string"},
                    "maxItems": 50,
                    "title": "Missing Values",
                    "type": "array",
                },
                "tas_min_c": {
                    "default": -60.0,
                    "description": "Lowest plausible daily mean temperature, °C.",
                    "maximum": 0.0,
                    "minimum": -90.0,
                    "title": "Tas Min C",
                    "type": "number",
                },
                "tas_max_c": {
                    "default": 50.0,
                    "description": "Highest plausible daily mean temperature, °C.",
                    "exclusiveMinimum": 0.0,
                    "maximum": 70.0,
                    "title": "Tas Max C",
                    "type": "number",
                },
                "pr_max_mm": {
                    "default": 300.0,
                    "description": "Highest plausible daily precipitation, mm (below zero is "
                    "never plausible).",
                    "maximum": 2000.0,
                    "minimum": 1.0,
                    "title": "Pr Max Mm",
                    "type": "number",
                },
                "min_gap_days": {
                    "default": 2,
                    "description": "Report runs of at least this many days without data.",
                    "maximum": 366,
                    "minimum": 1,
                    "title": "Min Gap Days",
                    "type": "integer",
                },
            },
            "title": "HarmonizationConf",
            "type": "object",
        },
        "PrecipitationUnit": {"enum": ["mm", "in"], "title": "PrecipitationUnit", "type": "string"},
        "SourceUnit": {
            "enum": ["auto", "C", "F", "K", "mm", "in"],
            "title": "SourceUnit",
            "type": "string",
        },
        "TemperatureUnit": {"enum": ["C", "F", "K"], "title": "TemperatureUnit", "type": "string"},
        "Variable": {
            "enum": ["date", "station", "tas", "pr"],
            "title": "Variable",
            "type": "string",
        },
    },
)


def pipeline_root(file: str, *, draft: str = "07") -> dict[str, Any]:
    """An nf-core-style pipeline schema of tests/schemas/ as the ``conf`` of a parameter
    schema, as a draft-07 schema (``definitions``) or rewritten as a 2020-12 one (``$defs``)."""
    text = (Path(__file__).parent / "schemas" / file).read_text()
    if draft == "2020-12":
        text = text.replace('"definitions"', '"$defs"').replace("#/definitions/", "#/$defs/")
        text = text.replace("http://json-schema.org/draft-07/schema", DRAFT_2020_12)
    pipeline = json.loads(text)
    return {"title": "Parameters", "type": "object", "properties": {"conf": pipeline}}


DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# Flood frequency estimation, written as nf-core writes a pipeline's parameters: 12 groups
# (allOf over definitions, one of them a resource of its own with an $id and $defs), 104
# fields, hidden ones, help_text, patterns with errorMessage, file-path formats.
PIPELINE = pipeline_root("nf_floodfreq.json")
PIPELINE_2020 = pipeline_root("nf_floodfreq.json", draft="2020-12")

CORPUS: dict[str, dict[str, Any]] = {
    "text": TEXT,
    "dates": DATES,
    "numbers": NUMBERS,
    "booleans": BOOLEANS,
    "choices": CHOICES,
    "consts": CONSTS,
    "scalar lists": SCALAR_LISTS,
    "object lists": OBJECT_LISTS,
    "nested objects": NESTED,
    "variants": VARIANTS,
    "fallback": FALLBACK,
    "climate downscaling": CLIMATE,
    "data harmonization": HARMONIZATION,
    "nf-core pipeline (draft-07)": PIPELINE,
    "nf-core pipeline (2020-12)": PIPELINE_2020,
}


# ---------------------------------------------------------------- helpers


def conf_form(root: dict[str, Any]) -> Field:
    return form_fields(root["properties"]["conf"], root)


def fields_of(field: Field) -> dict[str, Field]:
    return {child.name or "": child for child in field.children}


def problems(root: dict[str, Any], conf: Any) -> list[str]:
    return parameter_problems(root, {"conf": conf})


def _form_app() -> None:
    import streamlit as st

    from catalog_ui.form import form_fields, render

    root = st.session_state["root"]
    field = form_fields(root["properties"]["conf"], root)
    st.session_state["value"] = render(
        field,
        key="form",
        initial=st.session_state.get("initial"),
        errors=st.session_state.get("errors"),
    )


def open_form(root: dict[str, Any], *, initial: Any = None, errors: Any = None) -> AppTest:
    """The form of `root` in a real Streamlit script run, as a user first sees it."""
    app = AppTest.from_function(_form_app, default_timeout=10)
    app.session_state["root"] = root
    if initial is not None:
        app.session_state["initial"] = initial
    if errors is not None:
        app.session_state["errors"] = errors
    return rerun(app)


def rerun(changed: Any) -> AppTest:
    """Run the script again, after a change to the app or to one of its widgets."""
    app: AppTest = changed.run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def value(app: AppTest) -> Any:
    return app.session_state["value"]


def shown(app: AppTest) -> list[tuple[str, str]]:
    """Every element drawn, in page order: (type, key) for widgets, (type, text) otherwise."""
    found: list[tuple[str, str]] = []

    def walk(node: Any) -> None:
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                walk(child)
            return
        key = getattr(node, "key", None)
        found.append((type(node).__name__, key if key is not None else str(node.value)))

    walk(app.main)
    return found


def element_after(app: AppTest, key: str) -> tuple[str, str]:
    elements = shown(app)
    place = next(i for i, (_, said) in enumerate(elements) if said == key)
    return elements[place + 1]


def block_holding(app: AppTest, key: str) -> Any:
    """The outermost block of the page that holds the widget `key`."""
    for block in app.main.children.values():
        if any(getattr(w, "key", None) == key for w in block):
            return block
    raise AssertionError(f"no block holds {key}")


# ---------------------------------------------------------------- constructs, drawn for real


def test_text_uses_text_input_or_text_area_and_enforces_max_length() -> None:
    form = fields_of(conf_form(TEXT))
    assert (form["name"].kind, form["name"].title, form["name"].max_length) == (
        "text",
        "Station name",
        40,
    )
    assert not form["name"].multiline
    assert form["notes"].multiline and form["summary"].multiline
    assert (form["code"].min_length, form["code"].required) == (6, True)

    app = open_form(TEXT)
    assert app.text_input(key="form.name").max_chars == 40
    assert app.text_input(key="form.name").help == "What the station is called."
    assert app.text_area(key="form.notes").max_chars == 1000
    app.text_input(key="form.name").input("Säntis")
    app.text_input(key="form.code").input("SAE001")
    app.text_area(key="form.summary").input("Two lines\nof text")
    conf = value(rerun(app))
    assert conf == {"name": "Säntis", "code": "SAE001", "summary": "Two lines\nof text"}
    assert problems(TEXT, conf) == []


def test_text_that_breaks_a_pattern_is_left_to_validation() -> None:
    app = open_form(TEXT)
    app.text_input(key="form.code").input("abc")
    conf = value(rerun(app))
    assert conf["code"] == "abc"
    assert [p.split(":")[0] for p in problems(TEXT, conf)] == ["conf.code", "conf.code"]


def test_dates_come_back_as_iso_text_and_empty_optional_dates_as_null_or_left_out() -> None:
    form = fields_of(conf_form(DATES))
    assert [form[n].kind for n in ("day", "moment", "until", "since")] == [
        "date",
        "datetime",
        "date",
        "date",
    ]
    assert (form["day"].default, form["until"].nullable, form["until"].default) == (
        "2020-05-17",
        True,
        NO_DEFAULT,
    )

    app = open_form(DATES)
    assert app.date_input(key="form.day").value == date(2020, 5, 17)
    assert app.date_input(key="form.until").value is None
    app.date_input(key="form.moment#date").set_value(date(2025, 1, 2))
    app.time_input(key="form.moment#time").set_value(time(3, 4))
    conf = value(rerun(app))
    assert conf == {"day": "2020-05-17", "moment": "2025-01-02T03:04:00Z", "until": None}
    assert problems(DATES, conf) == []

    app.date_input(key="form.until").set_value(date(2024, 12, 31))
    app.date_input(key="form.since").set_value(date(1961, 1, 1))
    conf = value(rerun(app))
    assert (conf["until"], conf["since"]) == ("2024-12-31", "1961-01-01")
    assert problems(DATES, conf) == []


def test_a_date_time_prefilled_in_another_zone_is_shown_and_returned_in_utc() -> None:
    app = open_form(DATES, initial={"moment": "2025-06-01T12:30:00+02:00"})
    assert app.date_input(key="form.moment#date").value == date(2025, 6, 1)
    assert app.time_input(key="form.moment#time").value == time(10, 30)
    assert value(app)["moment"] == "2025-06-01T10:30:00Z"


def test_numbers_honour_bounds_exclusive_bounds_and_multiples() -> None:
    form = fields_of(conf_form(NUMBERS))
    bounds = {name: (f.kind, f.minimum, f.maximum, f.step) for name, f in form.items()}
    assert bounds == {
        "count": ("integer", 1, 10, 1),
        "open_count": ("integer", 1, 9, 1),
        "fives": ("integer", 5, 40, 5),
        "ratio": ("number", 0.01, 1.0, 0.01),
        "quarters": ("number", -1.0, 2.0, 0.25),
        "threshold": ("number", None, None, 0.01),
        "limit": ("integer", None, None, 1),
    }

    app = open_form(NUMBERS)
    fives = app.number_input(key="form.fives")
    # The range is said in the label, not set on the widget: a browser holds back a
    # number typed out of a widget's bounds, and the form would keep the one before.
    assert (fives.min, fives.max, fives.step, fives.value) == (None, None, 5, 5)
    assert fives.label == "Fives * · 5–40"
    assert app.number_input(key="form.ratio").label == "Ratio · 0.01–1"
    assert app.number_input(key="form.threshold").label == "Threshold"
    assert app.number_input(key="form.count").value == 3
    assert app.number_input(key="form.threshold").value is None
    assert value(app) == {
        "count": 3,
        "open_count": 1,
        "fives": 5,
        "ratio": 0.5,
        "quarters": 0.0,
        "limit": None,
    }

    app.number_input(key="form.fives").set_value(15)
    app.number_input(key="form.ratio").set_value(0.3)
    app.number_input(key="form.quarters").set_value(0.1 * 3 * 2.5)  # 0.75, off by a rounding
    app.number_input(key="form.threshold").set_value(-4.5)
    app.number_input(key="form.limit").set_value(7)
    conf = value(rerun(app))
    assert conf == {
        "count": 3,
        "open_count": 1,
        "fives": 15,
        "ratio": 0.3,
        "quarters": 0.75,
        "threshold": -4.5,
        "limit": 7,
    }
    assert [type(conf[n]) for n in ("count", "ratio", "limit")] == [int, float, int]
    assert problems(NUMBERS, conf) == []

    # What is typed is what the form holds, in range or not: never moved to a bound or a
    # multiple. Validation says what is wrong with it.
    app.number_input(key="form.count").set_value(3000)
    app.number_input(key="form.fives").set_value(13)
    conf = value(rerun(app))
    assert (conf["count"], conf["fives"]) == (3000, 13)
    assert problems(NUMBERS, conf) == [
        "conf.count: 3000 is greater than the maximum of 10",
        "conf.fives: 13 is not a multiple of 5",
    ]


def test_booleans_are_toggles_and_an_optional_one_without_default_can_stay_unset() -> None:
    form = fields_of(conf_form(BOOLEANS))
    assert [form[n].kind for n in form] == ["boolean"] * 3

    app = open_form(BOOLEANS)
    assert (app.toggle(key="form.flag").value, app.toggle(key="form.strict").value) == (True, False)
    assert app.selectbox(key="form.maybe").options == ["Yes", "No"]
    assert value(app) == {"flag": True, "strict": False}

    app.toggle(key="form.strict").set_value(True)
    app.selectbox(key="form.maybe").set_value(False)
    conf = value(rerun(app))
    assert conf == {"flag": True, "strict": True, "maybe": False}
    assert problems(BOOLEANS, conf) == []


def test_enums_are_selectboxes_with_titles_and_pydantic_enums_resolve_through_refs() -> None:
    form = fields_of(conf_form(CHOICES))
    assert (form["letter"].options, form["letter"].option_titles) == (["a", "b"], ["Alpha", "Beta"])
    assert (form["unit"].kind, form["unit"].title, form["unit"].options) == (
        "choice",
        "Unit",
        ["mm", "in"],
    )
    assert (form["backup_unit"].nullable, form["backup_unit"].title) == (True, "Backup unit")
    assert form["level"].options == [1, 2, 3]

    app = open_form(CHOICES)
    assert app.selectbox(key="form.letter").options == ["Alpha", "Beta"]
    assert app.selectbox(key="form.backup_unit").value is None
    # Required choices without a default start empty: the person chooses, the form never does.
    assert app.selectbox(key="form.colour").value is None
    assert app.selectbox(key="form.colour").placeholder == "Choose…"
    assert value(app) == {"unit": "mm", "backup_unit": None, "level": 2}
    assert problems(CHOICES, value(app)) == [
        "conf.colour: required field is missing",
        "conf.letter: required field is missing",
    ]

    app.selectbox(key="form.colour").set_value("red")
    app.selectbox(key="form.letter").set_value("b")
    app.selectbox(key="form.unit").set_value("in")
    app.selectbox(key="form.backup_unit").set_value("mm")
    app.selectbox(key="form.level").set_value(3)
    conf = value(rerun(app))
    assert (conf["letter"], conf["unit"], conf["backup_unit"], conf["level"]) == (
        "b",
        "in",
        "mm",
        3,
    )
    assert problems(CHOICES, conf) == []


def test_a_const_field_is_not_shown_and_its_value_is_fixed() -> None:
    assert fields_of(conf_form(CONSTS))["version"].kind == "const"
    app = open_form(CONSTS)
    assert "form.version" not in {key for _, key in shown(app)}
    assert value(app) == {"version": "v1", "label": "x"}
    assert problems(CONSTS, value(app)) == []


def test_scalar_lists_add_and_remove_rows_within_min_and_max_items() -> None:
    form = fields_of(conf_form(SCALAR_LISTS))
    tags = form["tags"]
    assert (tags.kind, tags.min_items, tags.max_items, tags.unique_items) == ("list", 1, 3, True)
    assert tags.item is not None and (tags.item.kind, tags.item.max_length) == ("text", 10)
    assert (form["colours"].kind, form["colours"].options) == (
        "multichoice",
        ["red", "green", "blue"],
    )

    app = open_form(SCALAR_LISTS)
    assert app.button(key="form.tags[0]#remove").disabled  # at least one tag
    assert [n.value for n in app.number_input] == [1.5, 2.5]
    app.text_input(key="form.tags[0]").input("wet")
    rerun(app.button(key="form.tags#add").click())
    rerun(app.button(key="form.tags#add").click())
    assert app.button(key="form.tags#add").disabled  # three at most
    app.text_input(key="form.tags[1]").input("cold")
    app.text_input(key="form.tags[2]").input("windy")
    rerun(app.button(key="form.tags[1]#remove").click())
    assert value(app)["tags"] == ["wet", "windy"]
    assert app.text_input(key="form.tags[2]").label == "Tags 2"

    assert app.multiselect(key="form.colours").max_selections == 2
    app.multiselect(key="form.colours").set_value(["blue", "red"])
    rerun(app.button(key="form.values[0]#remove").click())
    rerun(app.button(key="form.days#add").click())
    app.date_input(key="form.days[0]").set_value(date(2000, 1, 1))
    conf = value(rerun(app))
    assert conf == {
        "tags": ["wet", "windy"],
        "values": [2.5],
        "colours": ["blue", "red"],
        "days": ["2000-01-01"],
    }
    assert problems(SCALAR_LISTS, conf) == []


def test_repeated_entries_in_a_unique_list_are_flagged_at_once() -> None:
    app = open_form(SCALAR_LISTS)
    app.text_input(key="form.tags[0]").input("wet")
    rerun(app.button(key="form.tags#add").click())
    app.text_input(key="form.tags[1]").input("wet")
    rerun(app)
    assert [w.value for w in app.warning] == ["Each entry must be different from the others."]


def test_object_lists_get_a_bordered_row_per_item_and_removing_one_keeps_the_others() -> None:
    layers = fields_of(conf_form(OBJECT_LISTS))["layers"]
    assert layers.item is not None
    assert (layers.item.kind, layers.item.title) == ("object", "Layer")
    assert [c.name for c in layers.item.children] == ["depth", "soil", "note"]

    app = open_form(OBJECT_LISTS)
    assert value(app) == {"layers": []}
    add = app.button(key="form.layers#add")
    assert add.label == "Add layer"
    rerun(add.click())
    rerun(app.button(key="form.layers#add").click())
    assert app.number_input(key="form.layers[1].depth").value == 1.0
    app.number_input(key="form.layers[0].depth").set_value(0.5)
    app.number_input(key="form.layers[1].depth").set_value(2.5)
    app.selectbox(key="form.layers[1].soil").set_value("clay")
    rerun(app.button(key="form.layers[0]#remove").click())
    conf = value(app)
    assert conf == {"layers": [{"depth": 2.5, "soil": "clay"}]}
    assert problems(OBJECT_LISTS, conf) == []
    assert block_holding(app, "form.layers[1].depth").proto.flex_container.border


def test_nested_objects_are_grouped_and_an_optional_group_is_filled_in_on_request() -> None:
    form = fields_of(conf_form(NESTED))
    assert (form["site"].kind, form["site"].help, form["site"].required) == (
        "object",
        "Where it is.",
        True,
    )
    assert [c.name for c in form["site"].children] == ["lat", "lon"]

    app = open_form(NESTED)
    assert ("Markdown", "**Site** \\*") in shown(app)
    assert value(app) == {"site": {"lat": 0.0, "lon": 0.0}}
    assert "form.extra.note" not in {key for _, key in shown(app)}

    app.number_input(key="form.site.lat").set_value(46.5)
    rerun(app.toggle(key="form.extra#on").set_value(True))
    app.text_input(key="form.extra.note").input("rooftop")
    conf = value(rerun(app))
    assert conf == {"site": {"lat": 46.5, "lon": 0.0}, "extra": {"note": "rooftop"}}
    assert problems(NESTED, conf) == []


def test_variants_offer_a_choice_of_kind_then_that_kinds_fields() -> None:
    form = fields_of(conf_form(VARIANTS))
    assert [v.title for v in form["shape"].variants] == ["Circle", "Square"]
    assert [v.kind for v in form["amount"].variants] == ["integer", "text"]
    assert (form["window"].nullable, [v.kind for v in form["window"].variants]) == (
        True,
        ["integer", "const"],
    )

    app = open_form(VARIANTS)
    assert app.selectbox(key="form.shape#variant").options == ["Circle", "Square"]
    assert app.selectbox(key="form.amount#variant").options == ["Whole number", "Text"]
    assert app.number_input(key="form.shape@0.radius").value == 2.0
    assert value(app) == {"shape": {"kind": "circle", "radius": 2.0}, "amount": 0, "window": None}

    rerun(app.selectbox(key="form.shape#variant").set_value(1))
    app.number_input(key="form.shape@1.side").set_value(4)
    rerun(app.selectbox(key="form.amount#variant").set_value(1))
    app.text_input(key="form.amount@1").input("plenty")
    rerun(app.selectbox(key="form.window#variant").set_value(1))
    conf = value(rerun(app))
    assert conf == {"shape": {"kind": "square", "side": 4}, "amount": "plenty", "window": "auto"}
    assert problems(VARIANTS, conf) == []


def test_unrecognised_schemas_fall_back_to_json_text_and_bad_json_is_shown_under_it() -> None:
    form = fields_of(conf_form(FALLBACK))
    assert [f.kind for f in form.values()] == ["json", "json", "json"]

    app = open_form(FALLBACK)
    assert value(app) == {}
    app.text_area(key="form.blob").input('{"a": [1, 2]}')
    app.text_area(key="form.pair").input("[1, 2")
    rerun(app)
    assert value(app) == {"blob": {"a": [1, 2]}}
    kind, said = element_after(app, "form.pair")
    assert kind == "Error" and said.startswith("This is not valid JSON")


def test_recursive_schemas_stop_at_a_json_field() -> None:
    root = simple_root(
        {"tree": {"$ref": "#/definitions/Node"}},
        [],
        Node={
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
            },
        },
    )
    tree = fields_of(conf_form(root))["tree"]
    children = fields_of(tree)["children"]
    assert children.item is not None and children.item.kind == "json"


def test_required_fields_are_marked_and_titles_fall_back_to_readable_names() -> None:
    app = open_form(CLIMATE)
    labels = {w.key: w.label for w in [*app.selectbox, *app.number_input]}
    assert labels == {
        "form.scenario": "Scenario *",
        "form.target_region": "Target region *",
        "form.base_year": "Base year · 1950–2100",
        "form.resolution_km": "Resolution km · 1–50",
    }
    assert app.number_input(key="form.base_year").help.startswith("Centre of the 30-year")


# ---------------------------------------------------------------- sections and the advanced fold

SECTIONED = simple_root(
    {
        "label": {"type": "string", "title": "Label"},  # in no section
        "scenario": {"enum": ["a", "b"], "x-section": "What to run"},
        "year": {"type": "integer", "default": 2000, "maximum": 2100, "x-section": "When"},
        "region": {"enum": ["x", "y"], "x-section": "What to run"},
        "seed": {"type": "integer", "default": 1, "maximum": 100, "x-advanced": True},
        "tolerance": {
            "type": "number",
            "default": 0.1,
            "x-section": "When",
            "x-advanced": True,
        },
    },
    ["scenario"],
)


def headings_and_keys(app: AppTest) -> list[str]:
    """The section headings and widget keys, in page order."""
    return [
        said
        for kind, said in shown(app)
        if said.startswith("form.") or (kind == "Markdown" and said.startswith("#### "))
    ]


def test_fields_stand_under_their_sections_in_the_order_the_sections_first_appear() -> None:
    form = fields_of(conf_form(SECTIONED))
    assert (form["tolerance"].section, form["tolerance"].advanced) == ("When", True)
    assert (form["label"].section, form["label"].advanced) == (None, False)

    app = open_form(SECTIONED)
    assert headings_and_keys(app) == [
        "form.label",
        "#### What to run",
        "form.scenario",
        "form.region",
        "#### When",
        "form.year",
        "form.tolerance",  # folded at the end of its section
        "form.seed",  # in no section: folded at the end of the form
    ]


def test_advanced_fields_are_folded_away_and_a_value_set_there_is_returned() -> None:
    app = open_form(SECTIONED)
    folds = list(app.expander)
    assert [f.label for f in folds] == ["Advanced settings", "Advanced settings"]
    assert not any(f.proto.expanded for f in folds)  # collapsed until opened
    assert [[w.key for w in f.number_input] for f in folds] == [["form.tolerance"], ["form.seed"]]

    app.selectbox(key="form.scenario").set_value("b")
    app.number_input(key="form.seed").set_value(42)
    conf = value(rerun(app))
    assert conf == {"scenario": "b", "year": 2000, "seed": 42, "tolerance": 0.1}
    assert problems(SECTIONED, conf) == []


def test_a_folded_field_that_needs_fixing_opens_its_fold_and_says_so() -> None:
    app = open_form(SECTIONED, errors={"seed": ["500 is greater than the maximum of 100"]})
    within_when, at_the_end = app.expander
    assert (within_when.label, within_when.proto.expanded) == ("Advanced settings", False)
    assert (at_the_end.label, at_the_end.proto.expanded) == ("Advanced settings · 1 to fix", True)
    assert [e.value for e in at_the_end.error] == ["500 is greater than the maximum of 100"]
    assert element_after(app, "form.seed") == ("Error", "500 is greater than the maximum of 100")


def test_an_advanced_group_holds_its_own_advanced_fields_without_a_fold_in_a_fold() -> None:
    root = simple_root(
        {
            "name": {"type": "string"},
            "tuning": {
                "type": "object",
                "x-advanced": True,
                "properties": {
                    "steps": {"type": "integer", "default": 3},
                    "jitter": {"type": "number", "default": 0.5, "x-advanced": True},
                },
                "required": ["steps"],
            },
        },
        ["name", "tuning"],
    )
    app = open_form(root)  # Streamlit refuses an expander inside an expander
    assert [f.label for f in app.expander] == ["Advanced settings"]
    assert {w.key for w in app.expander[0].number_input} == {
        "form.tuning.steps",
        "form.tuning.jitter",
    }
    assert value(app) == {"name": "", "tuning": {"steps": 3, "jitter": 0.5}}


def test_the_climate_examples_settings_come_in_sections_with_the_resolution_folded() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.climate_downscaling import climate_downscaling

    root = parameter_schema(climate_downscaling).model_dump_for_openapi()
    app = open_form(root)
    assert headings_and_keys(app) == [
        "#### What to downscale",
        "form.scenario",
        "form.target_region",
        "#### Period and grid",
        "form.base_year",
        "form.resolution_km",
    ]
    assert [w.key for w in app.expander[0].number_input] == ["form.resolution_km"]


# ---------------------------------------------------------------- an nf-core-style pipeline


def pipeline_groups(root: dict[str, Any]) -> list[dict[str, Any]]:
    """The pipeline's groups, in its allOf's order (a group with an $id referred to by it)."""
    pipeline = root["properties"]["conf"]
    groups = pipeline.get("definitions") or pipeline["$defs"]
    by_ref = {g.get("$id"): g for g in groups.values()} | {
        f"#/{'definitions' if 'definitions' in pipeline else '$defs'}/{name}": g
        for name, g in groups.items()
    }
    return [by_ref[part["$ref"]] for part in pipeline["allOf"]]


def pipeline_fields(root: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: sub for g in pipeline_groups(root) for n, sub in g["properties"].items()}


def test_the_pipeline_schema_has_the_shape_of_a_real_one() -> None:
    groups = pipeline_groups(PIPELINE)
    fields = pipeline_fields(PIPELINE)
    assert len(groups) == 12 and len(fields) > 100
    formats = {sub.get("format") for sub in fields.values()}
    assert {"file-path", "directory-path"} <= formats
    assert any("mimetype" in sub and "exists" in sub for sub in fields.values())
    assert sum(bool(sub.get("hidden")) for sub in fields.values()) >= 20
    kinds = {sub.get("type") for sub in fields.values()} | {
        "$ref" in sub for sub in fields.values()
    }
    assert {"string", "integer", "number", "boolean", True} <= kinds


@pytest.mark.parametrize("root", [PIPELINE, PIPELINE_2020], ids=["draft-07", "2020-12"])
def test_a_pipelines_groups_come_in_order_with_titles_and_descriptions_and_hidden_fields_folded(
    root: dict[str, Any],
) -> None:
    app = open_form(root)
    expected: list[str] = []
    for group in pipeline_groups(root):
        expected.append(f"#### {group['title']}")
        names = list(group["properties"])
        shown_first = [n for n in names if not group["properties"][n].get("hidden")]
        expected += [f"form.{n}" for n in shown_first]
        expected += [f"form.{n}" for n in names if n not in shown_first]  # in its fold
    assert headings_and_keys(app) == expected
    assert expected[:3] == ["#### Input/output options", "form.input", "form.outdir"]

    elements = shown(app)
    for group in pipeline_groups(root):
        heading = elements.index(("Markdown", f"#### {group['title']}"))
        assert elements[heading + 1] == ("Caption", group["description"])

    hidden_by_group = [
        {f"form.{n}" for n, sub in g["properties"].items() if sub.get("hidden")}
        for g in pipeline_groups(root)
    ]
    folds = list(app.expander)
    assert [f.label for f in folds] == ["Advanced settings"] * sum(map(bool, hidden_by_group))
    assert [{w.key for w in fold} - {None} for fold in folds] == [h for h in hidden_by_group if h]
    assert not any(f.proto.expanded for f in folds)


def test_a_pipelines_help_text_follows_its_description_in_the_fields_help() -> None:
    app = open_form(PIPELINE)
    sheet = pipeline_fields(PIPELINE)["input"]
    assert app.text_input(key="form.input").help == (
        f"{sheet['description']}\n\n{sheet['help_text']}"
    )
    assert app.text_input(key="form.outdir").help == "Folder the results are written to."


def test_a_pipelines_defaults_come_back_with_their_json_types() -> None:
    app = open_form(PIPELINE)
    conf = value(app)
    defaults = {
        n: sub["default"] for n, sub in pipeline_fields(PIPELINE).items() if "default" in sub
    }
    assert defaults["pot_events_per_year"] == 5 and defaults["max_missing_fraction"] == 0.1
    for name, default in defaults.items():
        assert (name, type(conf[name]), conf[name]) == (name, type(default), default)
    # JSON as the run receives it: a whole-number default of a number field stays "5".
    assert '"pot_events_per_year": 5,' in json.dumps(conf)
    assert '"flag_threshold": 30,' in json.dumps(conf)  # beside a $ref under a nested $id

    app.number_input(key="form.pot_events_per_year").set_value(7.0)
    app.number_input(key="form.climate_uplift").set_value(12.5)
    conf = value(rerun(app))
    assert (conf["pot_events_per_year"], conf["climate_uplift"]) == (7, 12.5)
    assert type(conf["pot_events_per_year"]) is int


def test_a_ref_under_a_nested_id_is_drawn_and_checked_as_the_validator_reads_it() -> None:
    """The quality group is a resource of its own: its "#/$defs/quality_score" is its own
    $defs, not the pipeline's."""
    threshold = fields_of(conf_form(PIPELINE))["phred_like_threshold"]
    assert (threshold.kind, threshold.minimum, threshold.maximum, threshold.default) == (
        "integer",
        0,
        60,
        20,
    )
    conf = {"input": "gauges.csv", "outdir": "results", "phred_like_threshold": 61}
    assert problems(PIPELINE, conf) == [
        "conf.phred_like_threshold: 61 is greater than the maximum of 60"
    ]


def test_a_pipelines_error_message_is_shown_under_its_field_with_the_value_given() -> None:
    conf = {"input": "my gauges.csv", "outdir": "results", "email": "", "max_memory": "lots"}
    lines = problems(PIPELINE, conf)
    assert lines == [
        'conf.email: "" is not an e-mail address',
        "conf.input: The sample sheet must be a .csv file path without spaces "
        "(given: my gauges.csv)",
        "conf.max_memory: lots is not an amount of memory, e.g. '8.GB'",
    ]
    by_field, _ = errors_by_field(lines)
    app = open_form(PIPELINE, initial=conf, errors=by_field)
    assert element_after(app, "form.input") == ("Error", by_field["input"][0])
    assert element_after(app, "form.email") == ("Error", '"" is not an e-mail address')
    (fold,) = [f for f in app.expander if f.label == "Advanced settings · 1 to fix"]
    assert fold.proto.expanded and "form.max_memory" in {w.key for w in fold}


# ---------------------------------------------------------------- the real conf schemas


def test_climate_downscaling_form_asks_for_its_choices_and_returns_what_was_entered() -> None:
    form = fields_of(conf_form(CLIMATE))
    assert form["scenario"].options == ["ssp126", "ssp245", "ssp370", "ssp585"]
    assert (form["base_year"].minimum, form["base_year"].maximum, form["base_year"].default) == (
        1950,
        2100,
        1995,
    )

    app = open_form(CLIMATE)
    assert value(app) == {"base_year": 1995, "resolution_km": 5.0}  # nothing chosen for them
    assert problems(CLIMATE, value(app)) == [
        "conf.scenario: required field is missing",
        "conf.target_region: required field is missing",
    ]
    app.selectbox(key="form.scenario").set_value("ssp370")
    app.selectbox(key="form.target_region").set_value("scandes")
    app.number_input(key="form.base_year").set_value(2050)
    app.number_input(key="form.resolution_km").set_value(12.5)
    conf = value(rerun(app))
    assert conf == {
        "scenario": "ssp370",
        "target_region": "scandes",
        "base_year": 2050,
        "resolution_km": 12.5,
    }
    assert problems(CLIMATE, conf) == []


def test_data_harmonization_form_starts_at_the_schema_defaults() -> None:
    form = fields_of(conf_form(HARMONIZATION))
    assert (form["start_date"].kind, form["start_date"].nullable) == ("date", True)
    rules = form["column_rules"]
    assert (rules.kind, rules.min_items, rules.max_items) == ("list", 1, 50)
    assert rules.item is not None and len(rules.item.rules) == 4
    assert (form["tas_max_c"].minimum, form["tas_max_c"].maximum) == (0.01, 70.0)

    app = open_form(HARMONIZATION)
    assert value(app) == {
        "tas_unit": "C",
        "pr_unit": "mm",
        "start_date": None,
        "end_date": None,
        "column_rules": HARMONIZATION_RULES,
        "missing_values": [],
        "tas_min_c": -60.0,
        "tas_max_c": 50.0,
        "pr_max_mm": 300.0,
        "min_gap_days": 2,
    }
    assert problems(HARMONIZATION, value(app)) == []


def test_unit_choices_follow_the_variable_chosen_in_the_same_row() -> None:
    app = open_form(HARMONIZATION)
    assert app.selectbox(key="form.column_rules[0].unit").options == ["auto"]
    assert app.selectbox(key="form.column_rules[2].unit").options == ["auto", "C", "F", "K"]
    rerun(app.selectbox(key="form.column_rules[0].variable").set_value("pr"))
    assert app.selectbox(key="form.column_rules[0].unit").options == ["auto", "mm", "in"]
    app.selectbox(key="form.column_rules[0].unit").set_value("in")
    rerun(app)
    rerun(app.selectbox(key="form.column_rules[0].variable").set_value("tas"))
    conf = value(app)
    assert conf["column_rules"][0]["unit"] == "auto"  # "in" is no unit of temperature
    assert problems(HARMONIZATION, conf) == []


def test_run_again_prefills_the_form_with_an_earlier_conf() -> None:
    earlier = {
        "tas_unit": "K",
        "pr_unit": "in",
        "start_date": "1991-01-01",
        "end_date": None,
        "column_rules": [
            {"pattern": "^t_?mean", "variable": "tas", "unit": "F"},
            {"pattern": "^rain", "variable": "pr", "unit": "auto"},
        ],
        "missing_values": ["-99", "x"],
        "tas_min_c": -40.0,
        "tas_max_c": 45.5,
        "pr_max_mm": 500.0,
        "min_gap_days": 7,
    }
    app = open_form(HARMONIZATION, initial=earlier)
    assert value(app) == earlier
    rerun(app.button(key="form.column_rules#add").click())
    assert value(app)["column_rules"][2] == {"pattern": "", "unit": "auto"}  # variable: chosen


def test_two_forms_with_different_keys_keep_separate_values() -> None:
    def app_with_two_forms() -> None:
        import streamlit as st

        from catalog_ui.form import form_fields, render

        root = st.session_state["root"]
        field = form_fields(root["properties"]["conf"], root)
        st.session_state["a"] = render(field, key="a")
        st.session_state["b"] = render(field, key="b")

    app = AppTest.from_function(app_with_two_forms, default_timeout=10)
    app.session_state["root"] = CLIMATE
    rerun(app)
    app.number_input(key="b.base_year").set_value(2000)
    rerun(app)
    assert (app.session_state["a"]["base_year"], app.session_state["b"]["base_year"]) == (
        1995,
        2000,
    )


# ---------------------------------------------------------------- validation messages


def test_validation_messages_show_under_the_field_they_are_about() -> None:
    conf = {"tas_max_c": -1.0, "column_rules": [{"pattern": ""}]}
    lines = [*problems(HARMONIZATION, conf), "inputs: no file selected"]
    by_field, others = errors_by_field(lines)
    assert set(by_field) == {"tas_max_c", "column_rules[0].pattern", "column_rules[0].variable"}
    assert others == ["inputs: no file selected"]

    app = open_form(HARMONIZATION, errors={**by_field, "gone[3]": ["no longer there"]})
    assert element_after(app, "form.tas_max_c") == ("Error", by_field["tas_max_c"][0])
    pattern_error = element_after(app, "form.column_rules[0].pattern")
    assert pattern_error == ("Error", by_field["column_rules[0].pattern"][0])
    variable_error = element_after(app, "form.column_rules[0].variable")
    assert variable_error == ("Error", "required field is missing")
    assert shown(app)[0] == ("Error", "gone[3]: no longer there")  # at the top


def test_errors_by_field_splits_lines_by_field_of_the_parameter() -> None:
    by_field, others = errors_by_field(
        [
            "conf.base_year: 3000 is greater than the maximum of 2100",
            "conf.column_rules[0].pattern: '' should be non-empty",
            "conf.base_year: 3000 is not a multiple of 7",
            "conf: required field is missing",
            "conf.x: unknown field (expected one of: a, b); "
            "conf.y: unknown field (expected one of: a, b)",
            "inputs.selected_files: required field is missing",
            "config.z: another parameter whose name starts like conf",
            "parameters: something general",
        ]
    )
    assert by_field == {
        "base_year": [
            "3000 is greater than the maximum of 2100",
            "3000 is not a multiple of 7",
        ],
        "column_rules[0].pattern": ["'' should be non-empty"],
        "": ["required field is missing"],
        "x": ["unknown field (expected one of: a, b)"],
        "y": ["unknown field (expected one of: a, b)"],
    }
    assert others == [
        "inputs.selected_files: required field is missing",
        "config.z: another parameter whose name starts like conf",
        "parameters: something general",
    ]
    assert errors_by_field(["inputs.a: x"], parameter="inputs") == ({"a": ["x"]}, [])


# ---------------------------------------------------------------- every value the form can produce

SAFE_INTEGER = 2**53 - 1
JSON_VALUES = hs.recursive(
    hs.none() | hs.booleans() | hs.integers(-1000, 1000) | hs.text(max_size=5),
    lambda inner: hs.lists(inner, max_size=3) | hs.dictionaries(hs.text(max_size=3), inner),
    max_leaves=5,
)


class Block:
    """A container, column or expander: what is drawn inside it changes nothing here."""

    def __enter__(self) -> Block:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class Page:
    """Streamlit's layout calls, which only arrange widgets, and its messages."""

    def __init__(self) -> None:
        self.session_state: dict[str, Any] = {}

    def container(self, **_: Any) -> Block:
        return Block()

    def expander(self, label: str, **_: Any) -> Block:
        return Block()

    def columns(self, spec: Any, **_: Any) -> list[Block]:
        return [Block() for _ in range(spec if isinstance(spec, int) else len(spec))]

    def error(self, body: str, **_: Any) -> None:
        assert body

    warning = caption = markdown = info = error


class HypothesisUI(Page):
    """Streamlit's widget calls, answered by hypothesis within each call's own limits.

    It refuses what Streamlit refuses (a duplicate key, a value outside
    min/max, mixed int and float arguments, a default that is not an option),
    so a form that would crash Streamlit fails here too. A pressed button runs
    its ``on_click`` at once, as Streamlit does before the next run.
    """

    def __init__(self, data: hs.DataObject) -> None:
        super().__init__()
        self.data = data
        self.keys: set[str] = set()

    def new_run(self) -> None:
        self.keys = set()

    def _widget(self, label: Any, key: Any) -> None:
        assert isinstance(label, str) and label.strip(), f"{key} has no visible label"
        assert isinstance(key, str) and key not in self.keys, f"duplicate widget key {key}"
        self.keys.add(key)

    def _answer(self, strategy: hs.SearchStrategy[Any], key: str, empty: bool = False) -> Any:
        return self.data.draw(hs.none() | strategy if empty else strategy, label=key)

    def text_input(
        self,
        label: str,
        value: str | None = "",
        max_chars: int | None = None,
        key: str = "",
        **_: Any,
    ) -> str:
        self._widget(label, key)
        assert value is None or max_chars is None or len(value) <= max_chars
        return str(self._answer(hs.text(max_size=60 if max_chars is None else max_chars), key))

    def text_area(
        self,
        label: str,
        value: str | None = "",
        max_chars: int | None = None,
        key: str = "",
        **_: Any,
    ) -> str:
        self._widget(label, key)
        longest = 60 if max_chars is None else max_chars
        typed = hs.text(max_size=longest) | JSON_VALUES.map(json.dumps).filter(
            lambda text: len(text) <= longest
        )
        return str(self._answer(typed, key))

    def number_input(
        self,
        label: str,
        min_value: Any = None,
        max_value: Any = None,
        value: Any = "min",
        step: float | None = None,
        key: str = "",
        **_: Any,
    ) -> float | None:
        self._widget(label, key)
        given = [n for n in (min_value, max_value, value, step) if n is not None and n != "min"]
        integer = all(type(n) is int for n in given)
        assert integer or all(type(n) is float for n in given), f"{key} mixes int and float"
        if value not in (None, "min"):
            assert min_value is None or min_value <= value, f"{key} starts below its minimum"
            assert max_value is None or value <= max_value, f"{key} starts above its maximum"
        numbers: hs.SearchStrategy[Any] = (
            hs.integers(
                -SAFE_INTEGER if min_value is None else min_value,
                SAFE_INTEGER if max_value is None else max_value,
            )
            if integer
            else hs.floats(min_value, max_value, allow_nan=False, allow_infinity=False)
        )
        answer: float | None = self._answer(numbers, key, empty=value is None)
        return answer

    def selectbox(
        self,
        label: str,
        options: Any,
        index: int | None = 0,
        format_func: Any = str,
        key: str = "",
        **_: Any,
    ) -> Any:
        self._widget(label, key)
        options = list(options)
        assert index is None or 0 <= index < len(options), f"{key} index out of range"
        assert all(isinstance(format_func(o), str) for o in options)
        picks = hs.sampled_from(options) if options else hs.none()
        return self._answer(picks, key, empty=index is None)

    radio = selectbox

    def multiselect(
        self,
        label: str,
        options: Any,
        default: Any = None,
        format_func: Any = str,
        max_selections: int | None = None,
        key: str = "",
        **_: Any,
    ) -> list[Any]:
        self._widget(label, key)
        options, default = list(options), list(default or [])
        assert all(d in options for d in default), f"{key} default is not among its options"
        assert max_selections is None or len(default) <= max_selections
        assert all(isinstance(format_func(o), str) for o in options)
        most = len(options) if max_selections is None else min(max_selections, len(options))
        positions = hs.lists(hs.integers(0, max(len(options) - 1, 0)), unique=True, max_size=most)
        return [options[i] for i in self._answer(positions, key)]

    def toggle(self, label: str, value: bool = False, key: str = "", **_: Any) -> bool:
        self._widget(label, key)
        assert isinstance(value, bool)
        return bool(self._answer(hs.booleans(), key))

    checkbox = toggle

    def date_input(
        self,
        label: str,
        value: Any = "today",
        min_value: date | None = None,
        max_value: date | None = None,
        key: str = "",
        **_: Any,
    ) -> date | None:
        self._widget(label, key)
        lowest, highest = min_value or date(1, 1, 1), max_value or date(9999, 12, 31)
        assert value is None or value == "today" or lowest <= value <= highest
        answer: date | None = self._answer(hs.dates(lowest, highest), key, empty=value is None)
        return answer

    def time_input(self, label: str, value: Any = "now", key: str = "", **_: Any) -> time | None:
        self._widget(label, key)
        assert value is None or value == "now" or isinstance(value, time)
        minutes = hs.times().map(lambda t: t.replace(second=0, microsecond=0))
        answer: time | None = self._answer(minutes, key, empty=value is None)
        return answer

    def button(
        self,
        label: str,
        key: str = "",
        on_click: Any = None,
        args: tuple[Any, ...] = (),
        disabled: bool = False,
        **_: Any,
    ) -> bool:
        self._widget(label, key)
        pressed = not disabled and bool(self._answer(hs.booleans(), key))
        if pressed and on_click is not None:
            on_click(*args)
        return pressed


class UntouchedUI(Page):
    """Widgets left as the form drew them: what "run again" shows before any change."""

    def text_input(self, label: str, value: str | None = "", **_: Any) -> str | None:
        return value

    text_area = text_input

    def number_input(self, label: str, min_value: Any = None, value: Any = "min", **_: Any) -> Any:
        return min_value if value == "min" else value

    def selectbox(self, label: str, options: Any, index: int | None = 0, **_: Any) -> Any:
        return None if index is None else list(options)[index]

    radio = selectbox

    def multiselect(self, label: str, options: Any, default: Any = None, **_: Any) -> list[Any]:
        return list(default or [])

    def toggle(self, label: str, value: bool = False, **_: Any) -> bool:
        return value

    checkbox = toggle

    def date_input(self, label: str, value: Any = "today", **_: Any) -> date | None:
        return date.today() if value == "today" else value  # type: ignore[no-any-return]

    def time_input(self, label: str, value: Any = "now", **_: Any) -> time | None:
        return time(0) if value == "now" else value  # type: ignore[no-any-return]

    def button(self, label: str, **_: Any) -> bool:
        return False


FREE_TEXT_EXCEPTION = """\
What a widget does not enforce, and so is left to validation (shown under the
field, and Launch waits until it is right):
- pattern, minLength and format (other than date and date-time, which have
  pickers) of a string typed into a text box;
- the range and multiple of a typed number (a browser would hold back a number
  typed out of a widget's bounds, and the form would keep the one before);
- a required choice without a default, which starts empty until chosen;
- anything about a value typed into a JSON text area (the fallback);
- uniqueItems of a list whose entries are typed row by row;
- minItems of a multi-select, which a user can always empty.
Every other error is a bug of the form."""

_TYPED_NUMBER = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def _template(parts: Iterable[Any]) -> str:
    """A path in `Field.path` form, any row as "[]": ``("a", 0, "b")`` -> ``a[].b``."""
    text = ""
    for part in parts:
        text += "[]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _json_paths(field: Field) -> set[str]:
    found = {field.path} if field.kind == "json" else set()
    for inner in [*field.children, *field.variants, *([field.item] if field.item else [])]:
        found |= _json_paths(inner)
    return found


def _is_choice(field: Field) -> bool:
    return field.kind == "choice" or any(_is_choice(v) for v in field.variants)


def _left_to_choose(error: ValidationError, root: dict[str, Any]) -> bool:
    """Whether ``error`` is about a required choice not chosen yet: missing from its object,
    or null in a row (an empty choice of a row is null)."""
    drawn = form_fields(error.schema, root)  # type: ignore[arg-type]
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return any(f.name == missing and _is_choice(f) for f in drawn.children)
    if error.instance is None and _is_choice(drawn):
        return True
    if error.validator in ("anyOf", "oneOf"):
        return any(_left_to_choose(e, root) for e in error.context or [])
    return False


def _excused(error: ValidationError, root: dict[str, Any], typed_json: set[str]) -> bool:
    if _left_to_choose(error, root):
        return True
    if error.validator in ("anyOf", "oneOf"):
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context or []:
            branches.setdefault(sub.schema_path[0], []).append(sub)
        return any(all(_excused(e, root, typed_json) for e in b) for b in branches.values())
    where = list(error.absolute_path)[1:]  # below "conf"
    if error.validator == "required":
        where.append(error.message.split("'")[1])
    path = _template(where)
    if any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in typed_json):
        return True
    drawn = form_fields(error.schema, root).kind  # type: ignore[arg-type]
    if error.validator in _TYPED_NUMBER:
        return drawn in ("integer", "number")
    if error.validator in ("pattern", "minLength", "format"):
        return drawn not in ("date", "datetime")  # typed, not picked
    if error.validator == "uniqueItems":
        return drawn == "list"
    if error.validator == "minItems":
        return drawn == "multichoice"
    return False


def assert_valid_but_for_free_text(root: dict[str, Any], field: Field, conf: Any) -> None:
    validator = Draft202012Validator(root, format_checker=FormatChecker())
    errors = list(validator.iter_errors({"conf": conf}))
    typed_json = _json_paths(field)
    bugs = [e for e in errors if not _excused(e, root, typed_json)]
    assert not bugs, (FREE_TEXT_EXCEPTION, conf, [f"{e.json_path}: {e.message}" for e in bugs])
    assert bool(errors) == bool(problems(root, conf))


def fill_in(root: dict[str, Any], data: hs.DataObject) -> tuple[Field, Any]:
    """A user's session on the form: a few runs, each with any widget values, the last one kept."""
    field = conf_form(root)
    ui = HypothesisUI(data)
    conf = None
    for _ in range(data.draw(hs.integers(1, 4), label="runs")):
        ui.new_run()
        conf = render(field, key="form", ui=ui)
    return field, conf


def kept(before: Any, after: Any) -> bool:
    """Whether `after` holds all of `before`; it may add fields `before` left to their defaults."""
    if isinstance(before, dict):
        return isinstance(after, dict) and all(
            name in after and kept(entry, after[name]) for name, entry in before.items()
        )
    if isinstance(before, list):
        return (
            isinstance(after, list) and len(before) == len(after) and all(map(kept, before, after))
        )
    return type(before) is type(after) and before == after


def assert_run_again_keeps(field: Field, conf: Any, root: dict[str, Any] | None = None) -> None:
    """Prefilled with `conf`, the untouched form gives `conf` back (with defaults filled in).

    A conf with a required choice not yet chosen never ran (it cannot be launched), so there
    is nothing to run again: given its ``root``, such a conf is passed over.
    """
    if root is not None:
        validator = Draft202012Validator(root, format_checker=FormatChecker())
        if any(_left_to_choose(e, root) for e in validator.iter_errors({"conf": conf})):
            return
    again = render(field, key="again", initial=conf, ui=UntouchedUI())
    assert kept(conf, again), (conf, again)
    assert render(field, key="again", initial=again, ui=UntouchedUI()) == again


PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", list(CORPUS))
@PROPERTY
@given(data=hs.data())
def test_every_value_the_form_can_produce_validates_but_for_free_text(
    name: str, data: hs.DataObject
) -> None:
    root = CORPUS[name]
    field, conf = fill_in(root, data)
    assert_valid_but_for_free_text(root, field, conf)
    assert_run_again_keeps(field, conf, root)


NAMES = ["alpha", "beta", "gamma_ray", "DeltaValue"]


@hs.composite
def number_schemas(draw: hs.DrawFn) -> dict[str, Any]:
    integer = draw(hs.booleans())
    multiple = draw(hs.sampled_from([None, 2, 5] if integer else [None, 0.5, 0.25]))
    low = draw(hs.integers(-1000, 1000))
    span = draw(hs.integers(math.ceil(3 * (multiple or 1)), 500))
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    if multiple:
        schema["multipleOf"] = multiple
    if draw(hs.booleans()):
        schema[draw(hs.sampled_from(["minimum", "exclusiveMinimum"]))] = low
    if draw(hs.booleans()):
        schema[draw(hs.sampled_from(["maximum", "exclusiveMaximum"]))] = low + span
    if draw(hs.booleans()):
        middle = low + span // 2
        schema["default"] = round(middle / multiple) * multiple if multiple else middle
    return schema


@hs.composite
def text_schemas(draw: hs.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    fmt = draw(hs.sampled_from([None, "date", "date-time", "textarea", "email"]))
    if fmt:
        schema["format"] = fmt
    if fmt in (None, "textarea") and draw(hs.booleans()):
        schema["maxLength"] = draw(hs.integers(1, 300))
    if fmt is None and draw(hs.booleans()):
        schema["pattern"] = "^[a-z]+$"
        schema["minLength"] = draw(hs.integers(0, 3))
    if draw(hs.booleans()):
        examples = {"date": "2020-01-01", "date-time": "2020-01-01T00:00:00Z"}
        schema["default"] = examples.get(str(fmt), "abc")[: schema.get("maxLength")]
    return schema


@hs.composite
def choice_schemas(draw: hs.DrawFn) -> dict[str, Any]:
    values = draw(hs.lists(hs.sampled_from(["a", "b", "c", 1, 2]), min_size=1, unique=True))
    schema: dict[str, Any] = (
        {"oneOf": [{"const": v, "title": f"Option {v}"} for v in values]}
        if draw(hs.booleans())
        else {"enum": values}
    )
    if draw(hs.booleans()):
        schema["default"] = draw(hs.sampled_from(values))
    return schema


SCALARS = hs.one_of(
    text_schemas(),
    number_schemas(),
    choice_schemas(),
    hs.fixed_dictionaries({"type": hs.just("boolean")}, optional={"default": hs.booleans()}),
    hs.builds(lambda v: {"const": v}, hs.sampled_from(["fixed", 3])),
)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}], "default": None}


@hs.composite
def object_schemas(draw: hs.DrawFn, inner: hs.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    names = draw(hs.lists(hs.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    properties = {name: draw(inner) for name in names}
    required = [name for name in names if draw(hs.booleans())]
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": required,
    }


@hs.composite
def array_schemas(draw: hs.DrawFn, inner: hs.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": draw(inner)}
    fewest = draw(hs.integers(0, 2))
    if fewest:
        schema["minItems"] = fewest
    if draw(hs.booleans()):
        schema["maxItems"] = fewest + draw(hs.integers(0, 3))
    if draw(hs.booleans()):
        schema["uniqueItems"] = True
    return schema


@hs.composite
def tagged_variants(draw: hs.DrawFn, inner: hs.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A pydantic-style tagged union: each variant's ``kind`` tells it apart."""
    variants = []
    for tag in ("first", "second"):
        variant = draw(object_schemas(inner))
        variant["properties"] = {"kind": {"const": tag}, **variant["properties"]}
        variant["required"] = ["kind", *variant["required"]]
        variant["title"] = f"{tag.title()} kind"
        variants.append(variant)
    return {"oneOf": variants}


SCHEMAS = hs.recursive(
    SCALARS,
    lambda inner: hs.one_of(
        object_schemas(inner),
        array_schemas(inner),
        tagged_variants(inner),
        hs.builds(lambda a, b: {"anyOf": [a, b]}, SCALARS, SCALARS),
        inner.map(_nullable),
        SCALARS.filter(lambda s: "type" in s).map(lambda s: {**s, "type": [s["type"], "null"]}),
    ),
    max_leaves=6,
)


def as_pydantic_writes_it(schema: Any, definitions: dict[str, Any], wrap: bool) -> Any:
    """`schema` with each object moved into `definitions` and referred to, in an allOf if `wrap`."""
    if not isinstance(schema, dict):
        return schema
    moved = dict(schema)
    if isinstance(moved.get("properties"), dict):
        moved["properties"] = {
            name: as_pydantic_writes_it(sub, definitions, wrap)
            for name, sub in moved["properties"].items()
        }
    if "items" in moved:
        moved["items"] = as_pydantic_writes_it(moved["items"], definitions, wrap)
    for word in ("anyOf", "oneOf"):
        if word in moved:
            moved[word] = [as_pydantic_writes_it(sub, definitions, wrap) for sub in moved[word]]
    if moved.get("type") != "object":
        return moved
    name = f"Model{len(definitions)}"
    definitions[name] = moved
    ref = {"$ref": f"#/definitions/{name}"}
    return {"allOf": [ref]} if wrap else ref


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=hs.data())
def test_every_value_a_generated_nested_form_can_produce_validates_but_for_free_text(
    data: hs.DataObject,
) -> None:
    conf = data.draw(object_schemas(SCHEMAS), label="conf schema")
    definitions: dict[str, Any] = {}
    if data.draw(hs.booleans(), label="objects as definitions"):
        wrap = data.draw(hs.booleans(), label="refs wrapped in allOf")
        properties = {
            name: as_pydantic_writes_it(sub, definitions, wrap)
            for name, sub in conf["properties"].items()
        }
        conf = {**conf, "properties": properties}
    root = conf_root("Conf", {"Conf": conf, **definitions})
    field, value = fill_in(root, data)
    assert_valid_but_for_free_text(root, field, value)
    assert_run_again_keeps(field, value, root)


KEYWORDS = [
    *("type", "properties", "items", "prefixItems", "additionalProperties", "required"),
    *("enum", "const", "anyOf", "oneOf", "allOf", "if", "then", "else", "$ref"),
    *("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    *("minLength", "maxLength", "pattern", "format", "minItems", "maxItems", "uniqueItems"),
    *("default", "title", "description"),
]
WORDS = [
    *("string", "integer", "number", "boolean", "array", "object", "null"),
    *("#/definitions/Conf", "#/definitions/Other", "#/$defs/Missing", "#", "https://x/y.json"),
    *("date", "date-time", "textarea", "email", ""),
]


def _keyword_values(inner: hs.SearchStrategy[Any]) -> hs.SearchStrategy[Any]:
    return hs.one_of(
        JSON_VALUES,
        hs.floats(allow_nan=False, allow_infinity=False),
        inner,
        hs.lists(inner, max_size=3),
        hs.dictionaries(hs.sampled_from(NAMES), inner, max_size=3),
        hs.sampled_from(WORDS),
        hs.lists(hs.sampled_from(WORDS[:7]), max_size=3),
    )


WILD_SCHEMAS: hs.SearchStrategy[Any] = hs.recursive(
    hs.builds(dict),
    lambda inner: hs.dictionaries(hs.sampled_from(KEYWORDS), _keyword_values(inner), max_size=5),
    max_leaves=10,
)


@PROPERTY
@given(data=hs.data())
def test_any_schema_at_all_draws_a_form_and_returns_json_without_crashing(
    data: hs.DataObject,
) -> None:
    conf, other = data.draw(WILD_SCHEMAS, label="conf"), data.draw(WILD_SCHEMAS, label="other")
    root = conf_root("Conf", {"Conf": conf, "Other": other})
    _, value = fill_in(root, data)
    json.dumps(value, allow_nan=False)


PIXEL = "http://127.0.0.1:9/pixel.png"
HOSTILE = f'![x]({PIXEL}) <img src="{PIXEL}">'
"""A model's words that would make a viewer's browser fetch a tracking pixel, in Markdown
and in HTML."""
MARKDOWN_KEYS = {"body", "label", "help", "caption"}


def markdown_shown(app: AppTest) -> list[str]:
    """Every text a page hands Streamlit to read as Markdown: the bodies of Markdown, titles,
    captions and alerts, every label (widgets, expanders, tabs, popovers, buttons), every
    help (tooltip) and image caption. Code, JSON and tables, and a widget's options and
    values, which Streamlit shows as plain text, are left out."""
    from google.protobuf.json_format import MessageToDict

    found: list[str] = []

    def strings(data: Any, key: str | None = None) -> None:
        if isinstance(data, dict):
            for inner, value in data.items():
                strings(value, inner)
        elif isinstance(data, list):
            for value in data:
                strings(value, key)
        elif isinstance(data, str) and key in MARKDOWN_KEYS:
            found.append(data)

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None and getattr(node, "type", None) != "json":
            strings(MessageToDict(proto))
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                walk(child)

    walk(app.main)
    walk(app.sidebar)
    return found


def loads_nothing(shown: list[str]) -> None:
    """No text a page renders as Markdown holds an image or an HTML tag: nothing in it can
    make the browser fetch anything from elsewhere."""
    loading = [text for text in shown if "![" in text or "<img" in text.lower()]
    assert not loading, loading


def test_author_markdown_loads_nothing_from_elsewhere() -> None:
    """A description, a field's help or a Markdown output with an image must not make the
    viewer's browser fetch it (a tracking pixel): each image is shown as a link, and HTML as
    text; titles and names are shown as written."""
    from catalog_ui.markdown import code, plain, safe_markdown

    pixel = "https://tracker.example/p.gif?who=me"
    text = f"Downscaling ![logo]({pixel}) and ![ref][p]\n\n[p]: {pixel}"
    shown = safe_markdown(text)
    assert "![" not in shown
    assert f"[image: logo]({pixel})" in shown and "[image: ref][p]" in shown
    assert safe_markdown(HOSTILE) == f'[image: x]({PIXEL}) &lt;img src="{PIXEL}">'
    said = safe_markdown("Set `<year>` in **bold**; see <https://example.org> <!-- x --></div>")
    assert said == "Set `<year>` in **bold**; see <https://example.org> &lt;!-- x -->&lt;/div>"
    assert plain(f"Rain *now* {HOSTILE}") == (
        f'Rain \\*now\\* !\\[x\\]({PIXEL}) &lt;img src="{PIXEL}"\\>'
    )
    assert plain("Base year (UTC) · 1950–2100") == "Base year (UTC) · 1950–2100"
    assert code("a`b") == "``a`b``" and code("![x](u)") == "`![x](u)`"
    schema = {
        "type": "object",
        "properties": {"x": {"type": "integer", "description": f"Step ![s]({pixel})"}},
    }
    (x,) = form_fields(schema, schema).children
    assert x.help == f"Step [image: s]({pixel})"


HOSTILE_FORM = simple_root(
    {
        "station": {
            "type": "string",
            "title": f"Station {HOSTILE}",
            "description": f"Where {HOSTILE}",
            "help_text": HOSTILE,
            "x-section": f"Place {HOSTILE}",
        },
        "depth": {"type": "number", "x-unit": HOSTILE, "minimum": 0},
        "site": {
            "type": "object",
            "title": f"Site {HOSTILE}",
            "description": HOSTILE,
            "properties": {"lat": {"type": "number", "title": f"Lat {HOSTILE}"}},
            "required": ["lat"],
        },
        "layers": {
            "type": "array",
            "title": f"Layers {HOSTILE}",
            "minItems": 1,
            "items": {
                "type": "object",
                "title": f"Layer {HOSTILE}",
                "properties": {"cm": {"type": "integer"}},
            },
        },
        "levels": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        "shape": {
            "title": f"Shape {HOSTILE}",
            "oneOf": [
                {"type": "integer", "title": f"Side {HOSTILE}"},
                {"type": "string", "title": f"Name {HOSTILE}"},
            ],
            "default": 3,
        },
    },
    ["station", "site"],
)


def test_a_models_words_in_its_form_are_shown_as_written_and_load_nothing() -> None:
    """Titles, units, sections, descriptions and a model's own messages reach labels,
    headings, tooltips and errors, which Streamlit reads as Markdown, images included."""
    app = open_form(HOSTILE_FORM, errors={"station": [f"not a station: {HOSTILE}"]})
    loads_nothing(markdown_shown(app))
    station = app.text_input(key="form.station")
    # Still the author's words, each character shown as written once rendered.
    assert station.label.startswith("Station ") and PIXEL in station.label
    assert station.label.endswith(" *")
    assert f"[image: x]({PIXEL})" in (station.help or "")
    assert PIXEL in app.number_input(key="form.depth").label
    said = [m.value for m in app.markdown]
    assert any(m.startswith("#### Place ") and PIXEL in m for m in said), said
    assert any(m.startswith("**Site ") and m.endswith("** \\*") for m in said), said
    assert any(m.startswith("**Layer ") for m in said), said  # the heading of a row
    assert any(e.value.startswith("not a station: [image: x]") for e in app.error)
    assert app.button(key="form.layers#add").label.startswith("Add layer ")
    assert app.number_input(key="form.levels[0]").label.startswith("Levels 1")
    assert app.number_input(key="form.shape@0").label.startswith("Shape ")
