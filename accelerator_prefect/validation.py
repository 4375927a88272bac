"""Validate launch parameters against a version's parameter schema and its checks.

The same JSON Schema that Prefect enforces server-side, checked first and in
full: every problem is reported at once, each with its field path, e.g.
``conf.base_year: 3000 is greater than the maximum of 2100``.

A manifest's ``checks`` (rules across settings and inputs, e.g. "the
scenario's file is among the inputs") are checked here too: against the
schema when a version is published (:func:`check_declaration_problems`), and
against a launch's settings and input files (:func:`failed_checks`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from fnmatch import translate
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from accelerator_prefect.errors import field_path
from accelerator_prefect.manifest import PLACEHOLDER

if TYPE_CHECKING:
    from accelerator_prefect.manifest import LaunchCheck

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
        # What is wrong is said by the branches the value's type fits: for an optional group
        # given as an object, the object's own problem, not "is not of type 'null'".
        branches: dict[Any, list[ValidationError]] = {}
        for inner in error.context:
            branches.setdefault(inner.relative_schema_path[0], []).append(inner)
        fitting = [
            inner
            for errors in branches.values()
            if not any(e.validator == "type" and not e.relative_path for e in errors)
            for inner in errors
        ]
        best = min(fitting or error.context, key=lambda e: len(list(e.relative_path)))
        if best.relative_path:
            return f"{field_path(best.absolute_path)}: {best.message}"
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


def _setting_schema(schema: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    """The schema of setting ``conf.a.b`` (references followed), or None if there is none."""
    node: dict[str, Any] = schema
    for name in dotted.split("."):
        node = _resolve(schema, node)
        for part in node.get("allOf", []):  # pydantic wraps a described $ref in one
            if isinstance(part, dict):
                node = {**_resolve(schema, part), **node}
        child = node.get("properties", {}).get(name)
        if not isinstance(child, dict):
            return None
        node = child
    return _resolve(schema, node)


def _known_settings(schema: dict[str, Any]) -> str:
    names = sorted(property_schema(schema, "conf").get("properties", {}))
    return ", ".join(f"conf.{n}" for n in names) or "none"


def check_declaration_problems(checks: Sequence[LaunchCheck], schema: dict[str, Any]) -> list[str]:
    """What a manifest's ``checks`` name that its jobflow does not take, one line each,
    e.g. ``checks[0].inputs_include: {conf.scenaro} names no setting of the jobflow``."""
    problems = []
    takes_inputs = "inputs" in schema.get("properties", {})
    for index, check in enumerate(checks):
        where = f"checks[{index}]"
        if not takes_inputs:
            problems.append(
                f"{where}.inputs_include: the jobflow takes no `inputs` parameter to check"
            )
        if check.field != "inputs" and _setting_schema(schema, check.field) is None:
            problems.append(
                f"{where}.field: {check.field} is no setting of the jobflow "
                f"(its settings: {_known_settings(schema)})"
            )
        for key in ("inputs_include", "message"):
            for name in dict.fromkeys(PLACEHOLDER.findall(getattr(check, key))):
                if _setting_schema(schema, name) is None:
                    problems.append(
                        f"{where}.{key}: {{{name}}} names no setting of the jobflow "
                        f"(its settings: {_known_settings(schema)})"
                    )
    return problems


def _setting_text(conf: Any, dotted: str) -> str | None:
    """The value of ``conf.a.b`` as text, or None when it is not a plain value
    (missing or malformed settings are the schema's to report)."""
    value = conf
    for name in dotted.split(".")[1:]:
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def _filled(template: str, values: dict[str, str], escape: bool) -> str:
    def fill(match: re.Match[str]) -> str:
        text = values[match.group(1)]
        # A setting's value is matched as written, never as a pattern: "*" matches "*".
        return re.sub(r"([*?\[])", r"[\1]", text) if escape else text

    return PLACEHOLDER.sub(fill, template)


def failed_checks(checks: Sequence[LaunchCheck], conf: Any, file_names: Iterable[str]) -> list[str]:
    """The launch problems of ``checks`` for settings ``conf`` and the names of the input
    files (folders expanded), one line each under the check's field, e.g.
    ``conf.scenario: Select model_ssp126.nc among your inputs.``

    A check whose settings are missing or not plain values is skipped: the schema
    reports those.
    """
    names = list(file_names)
    problems = []
    for check in checks:
        values = {name: _setting_text(conf, name) for name in check.settings}
        if any(v is None for v in values.values()):
            continue
        given = {k: v for k, v in values.items() if v is not None}
        pattern = _filled(check.inputs_include, given, escape=True)
        # No file name is longer than 255 characters: a longer pattern matches none, and is
        # not compiled (fnmatch's own cache would keep every such pattern a caller sends).
        if len(pattern) <= 1024:
            matches = re.compile(translate(pattern)).fullmatch
            if any(matches(name) for name in names):
                continue
        wanted = _filled(check.inputs_include, given, escape=False)
        message = _filled(check.message, given, escape=False) or (
            f"Select a file named {wanted} among your inputs."
        )
        problems.append(f"{check.field}: {message}")
    return problems
