"""Validate launch parameters against a version's parameter schema.

The same JSON Schema that Prefect enforces server-side, checked first and in
full: every problem is reported at once, each with its field path, e.g.
``conf.base_year: 3000 is greater than the maximum of 2100``.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from accelerator_prefect.errors import field_path

EXTENSION_KEY = "x-accelerator"
# A schema node may say in words what its pattern means (the ajv-errors convention).
MESSAGE_KEY = "errorMessage"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref", "")
    if ref.startswith("#/"):
        target: Any = schema
        for key in ref[2:].split("/"):
            target = target[key]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _describe(schema: dict[str, Any], error: ValidationError) -> str:
    where = field_path(error.absolute_path)
    said = error.schema.get(MESSAGE_KEY) if isinstance(error.schema, dict) else None
    if said:
        shown = error.instance if isinstance(error.instance, str) else repr(error.instance)
        return f"{where or 'parameters'}: {shown} {said}"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return f"{field_path([*error.absolute_path, missing])}: required field is missing"
    if error.validator == "additionalProperties":
        properties = sorted(error.schema.get("properties", {}))  # type: ignore[union-attr]
        extra = sorted(set(error.instance) - set(properties))
        expected = ", ".join(properties) or "no fields"
        return "; ".join(
            f"{field_path([*error.absolute_path, name])}: unknown field "
            f"(expected one of: {expected})"
            for name in extra
        )
    if error.validator in {"anyOf", "oneOf"} and error.context:
        best = min(error.context, key=lambda e: len(list(e.relative_path)))
        return f"{where or 'parameters'}: {best.message}"
    return f"{where or 'parameters'}: {error.message}"


def parameter_problems(schema: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    """Every way ``parameters`` fails ``schema``, one readable line each (empty if valid)."""
    clean = {k: v for k, v in schema.items() if k != EXTENSION_KEY}
    known = sorted(clean.get("properties", {}))
    problems = [
        f"{name}: unknown parameter (expected one of: {', '.join(known)})"
        for name in parameters
        if name not in known
    ]
    validator = Draft202012Validator(clean, format_checker=FormatChecker())
    errors = sorted(validator.iter_errors(parameters), key=lambda e: list(map(str, e.path)))
    problems += [_describe(clean, e) for e in errors]
    return problems


def property_schema(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema of top-level parameter ``name`` with its ``$ref`` resolved."""
    node = schema.get("properties", {}).get(name, {})
    return _resolve(schema, node)


def field_schema(schema: dict[str, Any], parameter: str, field: str) -> dict[str, Any]:
    """The schema of ``parameter.field`` with references resolved (``{}`` if unknown)."""
    node = property_schema(schema, parameter).get("properties", {}).get(field, {})
    return _resolve(schema, node)
