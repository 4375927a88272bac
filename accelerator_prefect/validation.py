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
from referencing import Registry
from referencing.exceptions import PointerToNowhere, Unresolvable
from referencing.jsonschema import DRAFT202012

from accelerator_prefect.errors import field_path
from accelerator_prefect.manifest import PLACEHOLDER

if TYPE_CHECKING:
    from referencing._core import Resolver

    from accelerator_prefect.manifest import LaunchCheck

EXTENSION_KEY = "x-accelerator"
# A schema node may say in words what its pattern means (the ajv-errors convention).
MESSAGE_KEY = "errorMessage"


_MOST_SHOWN = 80  # characters of a value quoted in a message


def _root_resolver(schema: dict[str, Any]) -> Resolver[Any]:
    """References resolve as the validator resolves them (nearest ``$id``, ``$defs``,
    ``definitions``, JSON pointers); nothing is fetched from elsewhere."""
    return Registry().resolver_with_root(DRAFT202012.create_resource(schema))


def _entered(node: Any, resolver: Resolver[Any]) -> Resolver[Any]:
    """`resolver` inside `node`: a node with an ``$id`` of its own is a new base for its refs."""
    if not isinstance(node, dict) or not isinstance(node.get("$id"), str):
        return resolver
    try:
        return resolver.in_subresource(DRAFT202012.create_resource(node))
    except ValueError:  # an $id no URI reading makes sense of: the validator reports it
        return resolver


def _followed(node: Any, resolver: Resolver[Any]) -> tuple[dict[str, Any], Resolver[Any]]:
    """`node` with its ``$ref``s followed (keys beside a ``$ref`` win over its target's), and
    the resolver its own references resolve with. A reference that leads nowhere is dropped:
    :func:`parameter_problems` reports it."""
    if not isinstance(node, dict):
        return {}, resolver
    resolver = _entered(node, resolver)
    seen: set[int] = set()
    while isinstance(node.get("$ref"), str):
        rest = {k: v for k, v in node.items() if k != "$ref"}
        try:
            target = resolver.lookup(node["$ref"])
        except Unresolvable:
            return rest, resolver
        if not isinstance(target.contents, dict) or id(target.contents) in seen:
            return rest, resolver
        seen.add(id(target.contents))
        node, resolver = {**target.contents, **rest}, target.resolver
    return node, resolver


def _child(
    node: Any, resolver: Resolver[Any], name: str, depth: int = 0
) -> tuple[dict[str, Any], Resolver[Any]] | None:
    """The schema of property `name` of `node`, its own or one of its ``allOf`` parts'
    (nf-core groups its parameters so; pydantic wraps a described ``$ref`` in one)."""
    node, resolver = _followed(node, resolver)
    child = (
        node.get("properties", {}).get(name) if isinstance(node.get("properties"), dict) else None
    )
    if isinstance(child, dict):
        return _followed(child, resolver)
    parts = node.get("allOf")
    if depth > 32 or not isinstance(parts, list):  # an allOf that refers back to itself
        return None
    for part in parts:
        found = _child(part, resolver, name, depth + 1)
        if found is not None:
            return found
    return None


def _property_names(node: Any, resolver: Resolver[Any], depth: int = 0) -> list[str]:
    """The names of `node`'s properties, its own and its ``allOf`` parts', in order."""
    node, resolver = _followed(node, resolver)
    properties = node.get("properties")
    names = list(properties) if isinstance(properties, dict) else []
    parts = node.get("allOf")
    if depth <= 32 and isinstance(parts, list):
        for part in parts:
            names += _property_names(part, resolver, depth + 1)
    return list(dict.fromkeys(names))


def _shown(value: Any) -> str:
    """A value as a message quotes it: text as it is (quoted when empty or padded), anything
    else as JSON, cut short."""
    if isinstance(value, str) and value and value == value.strip():
        text = value
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _MOST_SHOWN else text[: _MOST_SHOWN - 1] + "…"


def _said(error: ValidationError) -> str | None:
    """What the schema says in words about this failure, in ajv-errors' ``errorMessage``:
    one text for any failure of the node's value, or one per keyword
    (``{"pattern": "…", "minimum": "…", "_": "any other"}``; ``required`` may name a text
    per field)."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    said = schema.get(MESSAGE_KEY)
    about_children = error.validator in ("required", "additionalProperties", "dependentRequired")
    if isinstance(said, dict):
        said = said.get(str(error.validator), None if about_children else said.get("_"))
        if isinstance(said, dict) and error.validator == "required":
            said = said.get(error.message.split("'")[1])
    elif about_children:
        return None  # a text for the node's value, not for its fields
    return said.strip() if isinstance(said, str) and said.strip() else None


def _in_words(where: str, said: str, value: Any) -> str:
    """``conf.input: samples.txt is not a CSV file`` for a text that goes on from the value;
    ``conf.input: The sample sheet must end in .csv (given: samples.txt)`` for a sentence."""
    if said[:1].islower():
        return f"{where}: {_shown(value)} {said}"
    return f"{where}: {said.rstrip('.')} (given: {_shown(value)})"


def _describe(schema: dict[str, Any], error: ValidationError) -> str:
    where = field_path(error.absolute_path)
    said = _said(error)
    if said and error.validator == "required":
        missing = error.message.split("'")[1]
        return f"{field_path([*error.absolute_path, missing])}: {said}"
    if said:
        return _in_words(where or "parameters", said, error.instance)
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
            return _describe(schema, best)
        return f"{where or 'parameters'}: {_message(best)}"
    return f"{where or 'parameters'}: {_message(error)}"


def _message(error: ValidationError) -> str:
    """jsonschema's message, but a pattern in words: the field's example or description
    (a regular expression, with its backslashes doubled, tells people nothing)."""
    if error.validator != "pattern":
        return str(error.message)
    field = error.schema if isinstance(error.schema, dict) else {}
    examples = field.get("examples") or ([field["example"]] if "example" in field else [])
    shown = json.dumps(error.instance, ensure_ascii=False)
    if examples:
        return f"{shown} is not in the expected form, e.g. {json.dumps(examples[0])}"
    if field.get("description"):
        return f"{shown} is not in the expected form ({field['description'].rstrip('.')})"
    return f"{shown} is not in the expected form (the pattern {error.validator_value})"


def parameter_problems(schema: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    """Every way ``parameters`` fails ``schema``, one readable line each (empty if valid).

    References resolve within the schema only (nothing is fetched from elsewhere); one
    that leads nowhere is reported as the schema's own fault, after the problems found
    before it.
    """
    clean = {k: v for k, v in schema.items() if k != EXTENSION_KEY}
    known = sorted(clean.get("properties", {}))
    problems = [
        f"{name}: unknown parameter (expected one of: {', '.join(known)})"
        for name in parameters
        if name not in known
    ]
    validator = Draft202012Validator(clean, format_checker=FormatChecker(), registry=Registry())
    errors: list[ValidationError] = []
    broken: str | None = None
    try:
        errors.extend(validator.iter_errors(parameters))
    except Unresolvable as error:
        cause = getattr(error, "_wrapped", error)  # jsonschema wraps referencing's error
        ref = getattr(cause, "ref", "")
        if isinstance(cause, PointerToNowhere):
            ref = f"#{ref}"  # the pointer, written as the $ref writes it
        broken = (
            f"parameters: the model's schema refers to {ref!r}, which is not in it, so the "
            "rest cannot be checked; its author must fix the schema"
        )
    errors.sort(key=lambda e: list(map(str, e.path)))
    problems += [_describe(clean, e) for e in errors]
    return problems + ([broken] if broken else [])


def property_schema(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema of top-level parameter ``name`` with its ``$ref`` resolved."""
    node = schema.get("properties", {}).get(name, {})
    return _followed(node, _root_resolver(schema))[0]


def grouped_fields(schema: dict[str, Any], parameter: str) -> dict[str, Any]:
    """``parameter``'s schema as one group: its fields and those of its ``allOf`` groups,
    in order, references resolved, and every group's required ones (for the conf of
    nf-core-style schemas, whose fields live in ``allOf`` groups)."""
    found = _child(schema, _root_resolver(schema), parameter)
    if found is None:
        return {}
    properties: dict[str, Any] = {}
    required: list[str] = []

    def gather(node: Any, resolver: Resolver[Any], depth: int) -> None:
        node, resolver = _followed(node, resolver)
        for name in node.get("properties") or {}:
            child = _child(node, resolver, name)
            if child is not None and name not in properties:
                properties[name] = dict(child[0])
        required.extend(n for n in node.get("required") or [] if isinstance(n, str))
        for part in node.get("allOf") or [] if depth <= 32 else []:
            gather(part, resolver, depth + 1)

    gather(*found, 0)
    return {"type": "object", "properties": properties, "required": list(dict.fromkeys(required))}


def field_schema(schema: dict[str, Any], parameter: str, field: str) -> dict[str, Any]:
    """The schema of ``parameter.field`` with references resolved (``{}`` if unknown); a
    field of an ``allOf`` group counts as its parameter's own."""
    return _setting_schema(schema, f"{parameter}.{field}") or {}


def _setting_schema(schema: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    """The schema of setting ``conf.a.b`` (references followed), or None if there is none."""
    node: Any = schema
    resolver = _root_resolver(schema)
    for name in dotted.split("."):
        found = _child(node, resolver, name)
        if found is None:
            return None
        node, resolver = found
    return dict(node)


def _known_settings(schema: dict[str, Any]) -> str:
    found = _child(schema, _root_resolver(schema), "conf")
    names = sorted(_property_names(*found)) if found else []
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
