from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from prefect import flow
from prefect.utilities.callables import parameter_schema
from pydantic import Field

from accelerator_prefect import Conf, Output
from accelerator_prefect.errors import field_path
from accelerator_prefect.validation import field_schema, parameter_problems


class Settings(Conf):
    base_year: int = Field(default=1995, ge=1950, le=2100)
    name: str


@flow
def model(conf: Settings, output: Output) -> None:
    return None


SCHEMA: dict[str, Any] = parameter_schema(model).model_dump_for_openapi()


def test_valid_parameters_have_no_problems() -> None:
    assert (
        parameter_problems(SCHEMA, {"conf": {"name": "x"}, "output": {"location": "acc://p/"}})
        == []
    )


def test_every_problem_is_reported_with_its_field_path() -> None:
    problems = parameter_problems(
        SCHEMA, {"conf": {"base_year": 3000, "nmae": "x"}, "output": {"location": 5}, "extra": 1}
    )
    assert "conf.base_year: 3000 is greater than the maximum of 2100" in problems
    assert "conf.name: required field is missing" in problems
    assert any(
        p.startswith("conf.nmae: unknown field (expected one of: base_year, name)")
        for p in problems
    )
    assert "output.location: 5 is not of type 'string'" in problems
    assert "extra: unknown parameter (expected one of: conf, output)" in problems
    assert len(problems) == 5


def test_missing_top_level_parameter_is_named() -> None:
    assert parameter_problems(SCHEMA, {"conf": {"name": "x"}}) == [
        "output: required field is missing"
    ]


def test_an_optional_group_given_wrongly_is_told_what_is_wrong_inside_it() -> None:
    """`irrigation: Irrigation | None`: a group with a bad value names that value, not the
    null the group could also have been."""
    schema = {
        "type": "object",
        "properties": {
            "conf": {
                "type": "object",
                "properties": {
                    "irrigation": {"anyOf": [{"$ref": "#/$defs/Irrigation"}, {"type": "null"}]}
                },
            }
        },
        "$defs": {
            "Irrigation": {
                "type": "object",
                "properties": {"amount_mm": {"type": "number", "exclusiveMinimum": 0}},
            }
        },
    }
    assert parameter_problems(schema, {"conf": {"irrigation": {"amount_mm": -1}}}) == [
        "conf.irrigation.amount_mm: -1 is less than or equal to the minimum of 0"
    ]
    assert parameter_problems(schema, {"conf": {"irrigation": 5}}) == [
        "conf.irrigation: 5 is not of type 'object'"
    ]


# ---------------------------------------------------------------- a pipeline's own schema

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def pipeline_root(draft: str) -> dict[str, Any]:
    """The nf-core-style pipeline of tests/schemas/ as ``conf``, draft-07 or as 2020-12."""
    text = (Path(__file__).parent / "schemas" / "nf_floodfreq.json").read_text()
    if draft == "2020-12":
        text = text.replace('"definitions"', '"$defs"').replace("#/definitions/", "#/$defs/")
        text = text.replace("http://json-schema.org/draft-07/schema", DRAFT_2020_12)
    return {"type": "object", "properties": {"conf": json.loads(text)}, "required": ["conf"]}


GOOD = {"input": "gauges.csv", "outdir": "acc://floods/out"}
PARAMETER_SETS = [
    {"conf": GOOD},
    {"conf": {**GOOD, "pot_events_per_year": 5, "outlier_alpha": 0.5, "seed": 0}},
    {"conf": {**GOOD, "distribution": "gev", "max_memory": "8.GB", "max_time": "2.h"}},
    {"conf": {**GOOD, "phred_like_threshold": 60, "flag_threshold": 0, "email": "a@b.org"}},
    {"conf": {**GOOD, "return_periods": "2,10,100", "skip_plots": True, "gauge_ids": ""}},
    {"conf": {"outdir": "x"}},  # input missing
    {"conf": {**GOOD, "input": "gauges.txt"}},
    {"conf": {**GOOD, "phred_like_threshold": 61}},  # under the nested $id
    {"conf": {**GOOD, "flag_threshold": -1, "reference_year": 1900}},
    {"conf": {**GOOD, "outlier_alpha": 1, "confidence_level": 0.5}},  # exclusive bounds
    {"conf": {**GOOD, "mcmc_iterations": 1500, "mcmc_chains": 2.5}},
    {"conf": {**GOOD, "distribution": "weibull", "publish_dir_mode": "zip"}},
    {"conf": {**GOOD, "max_memory": "lots", "email_on_fail": "nobody", "skip_qc": "yes"}},
    {"conf": {**GOOD, "return_periods": "2, 10", "gauge_ids": "a,b"}},
    {"conf": "not an object"},
    {},
]


@pytest.mark.parametrize("draft", ["07", "2020-12"])
def test_the_validator_agrees_with_jsonschema_on_a_pipelines_parameters(draft: str) -> None:
    root = pipeline_root(draft)
    reference = Draft202012Validator(root, format_checker=FormatChecker())
    for parameters in PARAMETER_SETS:
        errors = list(reference.iter_errors(parameters))
        problems = parameter_problems(root, parameters)
        assert bool(problems) == bool(errors), (parameters, problems)
        assert len(problems) == len(errors), (parameters, problems)
        for error in errors:  # each problem is told under its field
            path = list(error.absolute_path)
            if error.validator == "required":
                path.append(error.message.split("'")[1])
            where = field_path(path) or "parameters"
            assert any(p.startswith(f"{where}: ") for p in problems), (where, problems)


def test_a_pipelines_error_messages_say_what_is_wrong_with_the_value_given() -> None:
    problems = parameter_problems(
        pipeline_root("07"),
        {"conf": {**GOOD, "input": "", "email": "me at home", "return_periods": "2, 10"}},
    )
    assert problems == [
        "conf.email: me at home is not an e-mail address",
        'conf.input: The sample sheet must be a .csv file path without spaces (given: "")',
        "conf.return_periods: 2, 10 is not a comma-separated list of whole years",
    ]


def test_an_error_message_may_be_one_per_keyword_and_name_a_missing_field() -> None:
    schema = {
        "type": "object",
        "properties": {
            "conf": {
                "type": "object",
                "required": ["site", "depth_m"],
                "errorMessage": {"required": {"site": "Name the site, e.g. 'Thames'"}},
                "properties": {
                    "site": {"type": "string"},
                    "depth_m": {
                        "type": "number",
                        "minimum": 0,
                        "errorMessage": {"minimum": "is above ground", "_": "is no depth"},
                    },
                    "label": {"type": "string", "errorMessage": "must be text"},
                },
            }
        },
    }
    assert parameter_problems(schema, {"conf": {"depth_m": -2, "label": 5}}) == [
        "conf.site: Name the site, e.g. 'Thames'",
        "conf.depth_m: -2 is above ground",
        "conf.label: 5 must be text",
    ]
    assert parameter_problems(schema, {"conf": {"site": "a"}}) == [
        "conf.depth_m: required field is missing"
    ]
    assert parameter_problems(schema, {"conf": {"site": "a", "depth_m": "deep"}}) == [
        "conf.depth_m: deep is no depth"
    ]


def test_a_reference_that_leads_nowhere_is_reported_not_raised_and_nothing_is_fetched() -> None:
    """A $ref under a schema with its own $id resolves inside that schema; one that is not
    there (here: the definitions sit beside it, not in it) is the schema's fault, said in
    words. A reference to elsewhere is never fetched."""
    schema = {
        "type": "object",
        "properties": {
            "conf": {
                "$id": "https://schemas.example.org/p.json",
                "type": "object",
                "properties": {"x": {"$ref": "#/definitions/x"}},
            },
            "other": {"$ref": "http://127.0.0.1:9/elsewhere.json"},
        },
        "definitions": {"x": {"type": "integer"}},
    }
    (line,) = parameter_problems(schema, {"conf": {"x": 1}})
    assert line.startswith("parameters: the model's schema refers to '#/definitions/x'")
    assert line.endswith("its author must fix the schema")
    (line,) = parameter_problems(schema, {"other": 1})
    assert "'http://127.0.0.1:9/elsewhere.json'" in line


def test_a_field_of_a_group_is_found_as_its_parameters_own() -> None:
    root = pipeline_root("07")
    assert field_schema(root, "conf", "phred_like_threshold")["maximum"] == 60
    assert field_schema(root, "conf", "input")["format"] == "file-path"
    assert field_schema(root, "conf", "nothing") == {}


def test_a_pattern_is_told_in_words_never_as_a_regular_expression() -> None:
    digits = "^\\d+$"
    schema = {
        "type": "object",
        "properties": {
            "conf": {
                "type": "object",
                "properties": {
                    "gauge": {
                        "type": "string",
                        "pattern": "^[A-Z]{2}-\\d{4}$",
                        "examples": ["DE-0042"],
                    },
                    "code": {"type": "string", "pattern": digits, "description": "Digits only."},
                },
            }
        },
    }
    assert parameter_problems(schema, {"conf": {"gauge": "x1", "code": "a"}}) == [
        'conf.code: "a" is not in the expected form (Digits only)',
        'conf.gauge: "x1" is not in the expected form, e.g. "DE-0042"',
    ]
