from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.utilities.callables import parameter_schema
from pydantic import Field

from accelerator_prefect import Conf, Output
from accelerator_prefect.validation import parameter_problems


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
