"""The launch form: a model's ``conf`` JSON Schema drawn as Streamlit widgets.

This module owns the translation between a JSON Schema node and a form:

- `form_fields` reads the schema into a `Field` tree (plain data, no Streamlit);
- `render` draws that tree and returns the JSON value its widgets hold now;
- `errors_by_field` sorts the service layer's validation lines by field, so
  `render` can show each one under the widget it is about.

A model arranges its form with two keys beside a field's schema: ``x-section``
(fields with the same section stand together under its heading, sections in
the order they first appear) and ``x-advanced: true`` (the field goes into a
collapsed "Advanced settings" fold at the end of its section, or of the form
for fields in no section; a fold holding a problem opens and says so).
Parameter schemas written as nf-core writes them arrange themselves the same
way: each titled ``allOf`` group (two or more of them) is a section, in the
groups' order, with its description under its heading; ``hidden: true`` folds
a field like ``x-advanced``; ``help_text`` follows the description in the
field's help. Numbers keep their JSON type: a default of 5 comes back as 5, a
default of 5.0 as 5.0, and a whole number typed into a field of any number is
sent as JSON reads it (5, not 5.0). A
compact form (``render(..., compact=True)``, for the catalog embedded in another
site) puts short fields side by side in twos, in their sections' order but without
the sections' headings.

The form enforces what widgets can (bounds, steps, options, lengths, row
counts, choices narrowed by ``if``/``then`` rules); what they cannot (patterns,
text formats, rules it does not understand) is left to
`accelerator_prefect.validation.parameter_problems`, whose lines come back
through ``errors``.

Example:
    >>> schema = {"type": "object", "properties": {"base_year": {"type": "integer",
    ...     "minimum": 1950, "maximum": 2100, "default": 1995}}, "required": ["base_year"]}
    >>> year = form_fields(schema, schema).children[0]
    >>> (year.kind, year.title, year.minimum, year.maximum, year.default)
    ('integer', 'Base year', 1950, 2100, 1995)
    >>> errors_by_field(["conf.base_year: 3000 is greater than the maximum of 2100"])
    ({'base_year': ['3000 is greater than the maximum of 2100']}, [])

In a Streamlit page::

    conf = render(form_fields(root["properties"]["conf"], root), key="launch")
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from referencing import Registry
from referencing.exceptions import Unresolvable

from catalog_ui.markdown import plain, safe_markdown

if TYPE_CHECKING:
    from referencing._core import Resolver

__all__ = ["NO_DEFAULT", "ChoiceRule", "Field", "Kind", "errors_by_field", "form_fields", "render"]

Kind = Literal[
    "text",  # text_input, or text_area for long text
    "date",  # date_input -> "YYYY-MM-DD"
    "datetime",  # date_input + time_input -> "YYYY-MM-DDTHH:MM:SSZ"
    "integer",  # number_input -> int
    "number",  # number_input -> float
    "boolean",  # toggle, or a Yes / No / not set selectbox
    "choice",  # selectbox over `options`
    "multichoice",  # multiselect over `options` (an array of enum items)
    "list",  # rows of `item`, with Add and Remove buttons
    "object",  # `children`, in a bordered container
    "variants",  # a selectbox choosing one of `variants`, then its widgets
    "const",  # no widget: the value is fixed
    "json",  # a text_area holding JSON, for anything else
]


class _Marker(Enum):
    NO_DEFAULT = "no default"
    EMPTY = "empty"


NO_DEFAULT = _Marker.NO_DEFAULT
"""`Field.default` when the schema gives none (a default of null counts as none)."""
# What a widget returns when the user left it empty: the field is then omitted,
# or null where the schema allows null.
_EMPTY = _Marker.EMPTY

# Widgets cannot go further than JavaScript numbers and dates can.
_SAFE_INTEGER = 2**53 - 1
_EARLIEST = date(1000, 1, 1)
_LATEST = date(9999, 12, 31)
_LONG_TEXT = 200  # characters; longer text gets a text_area
_KIND_WORDS: dict[str, str] = {
    "text": "Text",
    "date": "Date",
    "datetime": "Date and time",
    "integer": "Whole number",
    "number": "Number",
    "boolean": "Yes or no",
    "choice": "Choice",
    "multichoice": "Choices",
    "list": "List",
    "object": "Group",
    "variants": "Value",
    "const": "Fixed value",
    "json": "Value",
}
_GROUPS = ("object", "list", "variants")


@dataclasses.dataclass
class ChoiceRule:
    """One ``if``/``then``/``else`` of an object, as far as it narrows choices.

    The ``if`` holds when each property in ``when`` is absent or takes one of
    its values, and each property in ``needs`` is present (JSON Schema's
    reading). ``then`` and ``otherwise`` map a property to the values it may
    take when the ``if`` holds or does not.
    """

    when: dict[str, list[Any]]
    needs: list[str]
    then: dict[str, list[Any]]
    otherwise: dict[str, list[Any]]


@dataclasses.dataclass
class Field:
    """What the form shows for one schema node, and the limits its widget enforces."""

    path: str  # where the value sits under the form root; "[]" stands for any row
    kind: Kind
    title: str
    name: str | None = None  # the property name, for fields of an object
    help: str | None = None
    unit: str | None = None  # from the schema's "x-unit" (or "unit"), shown in the label
    section: str | None = None  # from "x-section", or its allOf group's title: its heading
    section_help: str | None = None  # the group's description, shown under its heading
    advanced: bool = False  # "x-advanced" or "hidden": folded away under "Advanced settings"
    required: bool = False
    nullable: bool = False
    default: Any = NO_DEFAULT
    # Numbers: inclusive widget bounds, exclusive ones already moved in by a step.
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    multiple_of: float | None = None
    # Text
    min_length: int = 0
    max_length: int | None = None
    multiline: bool = False
    # Choices
    options: list[Any] = dataclasses.field(default_factory=list)
    option_titles: list[str] = dataclasses.field(default_factory=list)
    # Lists
    min_items: int = 0
    max_items: int | None = None
    unique_items: bool = False
    item: Field | None = None
    # Objects and variants
    children: list[Field] = dataclasses.field(default_factory=list)
    rules: list[ChoiceRule] = dataclasses.field(default_factory=list)
    variants: list[Field] = dataclasses.field(default_factory=list)
    const: Any = None


# ---------------------------------------------------------------- reading the schema


class _Unusable(Exception):
    """A ``$ref`` that cannot be followed: unknown, external or recursive."""


class _Placed(NamedTuple):
    """A property brought in by an ``allOf`` part: where its ``$ref``s resolve, and the
    group (the part's title and description) it stands under."""

    node: Any
    resolver: Resolver[Any]
    section: str | None
    section_help: str | None


def form_fields(node: dict[str, Any], root: dict[str, Any]) -> Field:
    """The form for schema `node`, a part of `root`.

    `$ref`s resolve as the validator resolves them: against the nearest ``$id``
    above them (``root``'s own, or one inside it), into ``$defs``,
    ``definitions`` or any JSON pointer, and to any resource ``root`` holds
    under an ``$id``. Nothing is fetched from elsewhere.
    """
    from referencing.jsonschema import DRAFT202012

    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(root))
    return _build(node, resolver, path="", name=None, required=True, seen=frozenset())


def _entered(node: Any, resolver: Resolver[Any]) -> Resolver[Any]:
    """`resolver` inside `node`: a node with an ``$id`` of its own is a new base for its refs."""
    if not isinstance(node, dict) or not isinstance(node.get("$id"), str):
        return resolver
    from referencing.jsonschema import DRAFT202012

    try:
        return resolver.in_subresource(DRAFT202012.create_resource(node))
    except (TypeError, ValueError):
        return resolver  # an $id no URI reading makes sense of: the validator's to report


def _build(
    node: Any,
    resolver: Resolver[Any],
    *,
    path: str,
    name: str | None,
    required: bool,
    seen: frozenset[int],
    fallback: str | None = None,
) -> Field:
    group: _Placed | None = None
    if isinstance(node, _Placed):
        group, node, resolver = node, node.node, node.resolver
    own = node if isinstance(node, dict) else {}
    try:
        schema, nullable, resolver, seen = _normalised(own, _entered(own, resolver), seen)
    except _Unusable:
        schema, nullable = {}, False
    field = _build_kind(schema, resolver, path, seen)
    default = schema.get("default", NO_DEFAULT)
    title = _title(own, schema, name)
    if title is None:
        title = _KIND_WORDS[field.kind] if fallback is None else fallback
    if field.item is not None and not field.item.title:
        # Rows of an untitled item are named after the list: "Missing values 1".
        field = dataclasses.replace(field, item=dataclasses.replace(field.item, title=title))
    section = _text(own.get("x-section")) or _text(schema.get("x-section"))
    if section is None and group is not None:
        section = group.section
    return dataclasses.replace(
        field,
        name=name,
        title=title,
        help=_help(
            _text(own.get("description")) or _text(schema.get("description")),
            _text(own.get("help_text")) or _text(schema.get("help_text")),
        ),
        unit=_unit(own) or _unit(schema),
        section=section,
        section_help=group.section_help if group is not None and section == group.section else None,
        advanced=any(s.get(k) is True for s in (own, schema) for k in ("x-advanced", "hidden")),
        required=required,
        nullable=nullable,
        default=NO_DEFAULT if default is None else default,
    )


def _build_kind(
    schema: dict[str, Any], resolver: Resolver[Any], path: str, seen: frozenset[int]
) -> Field:
    if "const" in schema:
        return Field(path, "const", "", const=schema["const"])
    choices = _choices(schema)
    if choices is not None:
        return Field(path, "choice", "", options=choices[0], option_titles=choices[1])
    for word in ("oneOf", "anyOf"):
        if isinstance(schema.get(word), list) and schema[word]:
            return _variants_field(schema[word], resolver, path, seen)
    kind = _type_of(schema)
    if isinstance(kind, list):
        bare = {k: v for k, v in schema.items() if k not in ("type", "title", "default")}
        return _variants_field([{**bare, "type": t} for t in kind], resolver, path, seen)
    if kind == "string":
        return _string_field(schema, path)
    if kind in ("integer", "number"):
        return _number_field(schema, path, integer=kind == "integer")
    if kind == "boolean":
        return Field(path, "boolean", "")
    if kind == "array":
        return _array_field(schema, resolver, path, seen)
    if kind == "object":
        return _object_field(schema, resolver, path, seen)
    return Field(path, "json", "")


def _normalised(
    node: dict[str, Any], resolver: Resolver[Any], seen: frozenset[int]
) -> tuple[dict[str, Any], bool, Resolver[Any], frozenset[int]]:
    """`node` with references followed, ``allOf`` parts merged and null split off, and the
    resolver its own references resolve with."""
    schema, resolver, seen = _resolved(node, resolver, seen)
    schema, nullable = _without_null(schema)
    if "$ref" in schema or "allOf" in schema:
        schema, resolver, seen = _resolved(schema, resolver, seen)
    return schema, nullable, resolver, seen


def _resolved(
    node: dict[str, Any], resolver: Resolver[Any], seen: frozenset[int]
) -> tuple[dict[str, Any], Resolver[Any], frozenset[int]]:
    while "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str):
            raise _Unusable(ref)
        try:
            target = resolver.lookup(ref)
        except (Unresolvable, TypeError, ValueError) as error:
            raise _Unusable(ref) from error
        # The same part of the schema met again on the way down is a recursion.
        if not isinstance(target.contents, dict) or id(target.contents) in seen:
            raise _Unusable(ref)
        seen = seen | {id(target.contents)}
        resolver = target.resolver
        # Keys beside a $ref (title, description, default) describe this use of
        # the target, so they win over the target's own.
        node = {**target.contents, **{k: v for k, v in node.items() if k != "$ref"}}
    if isinstance(node.get("allOf"), list):
        node, seen = _merged_all_of(node, resolver, seen)
    return node, resolver, seen


def _merged_all_of(
    node: dict[str, Any], resolver: Resolver[Any], seen: frozenset[int]
) -> tuple[dict[str, Any], frozenset[int]]:
    """Merge the plain parts of ``allOf`` (pydantic wraps a ``$ref`` in one); keep the ``if``s.

    Two or more parts holding properties are groups (nf-core's parameter schemas): their
    fields come in the parts' order, each titled part a section under its title and
    description. The node's own keys win over its parts', an earlier part's over a later's.
    """
    own = {k: v for k, v in node.items() if k != "allOf"}
    parts: list[tuple[dict[str, Any], Resolver[Any]]] = []
    conditions = []
    for part in node["allOf"]:
        if not isinstance(part, dict) or "if" in part:
            conditions.append(part)
            continue
        part, part_resolver, seen = _resolved(part, _entered(part, resolver), seen)
        parts.append((part, part_resolver))
    grouped = sum(1 for part, _ in parts if _properties(part)) > 1
    merged: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for part, part_resolver in parts:
        heading = _section_of(part) if grouped else None
        words = _text(part.get("description")) if heading else None
        for name, sub in _properties(part).items():
            placed = sub if isinstance(sub, _Placed) else _Placed(sub, part_resolver, None, None)
            if heading and placed.section is None:
                placed = placed._replace(section=heading, section_help=_help(words))
            properties.setdefault(name, placed)
        required += _names(part.get("required"))
        if grouped:  # a group's title and description are its section's, not the object's
            part = {k: v for k, v in part.items() if k not in ("title", "description")}
        merged = {**part, **merged}
    merged.update(own)
    properties.update(_properties(own))
    if properties:
        merged["properties"] = properties
    required += _names(own.get("required"))
    if required:
        merged["required"] = list(dict.fromkeys(required))
    if conditions:
        merged["allOf"] = conditions
    return merged, seen


def _section_of(group: dict[str, Any]) -> str | None:
    title = _text(group.get("title"))
    if title is None:
        return None
    return _readable(title) if _is_identifier(title) else title


def _without_null(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Split "or null" off `schema`: pydantic writes ``date | None`` as anyOf [date, null]."""
    nullable = False
    types = schema.get("type")
    if types == "null" or types == ["null"]:
        return {**schema, "const": None}, False
    if isinstance(types, list) and "null" in types:
        rest = [t for t in types if t != "null"]
        schema, nullable = {**schema, "type": rest[0] if len(rest) == 1 else rest}, True
    enum = schema.get("enum")
    if isinstance(enum, list) and any(v is None for v in enum):
        if all(v is None for v in enum):
            return {**schema, "const": None}, False
        schema, nullable = {**schema, "enum": [v for v in enum if v is not None]}, True
    for word in ("anyOf", "oneOf"):
        options = schema.get(word)
        if not isinstance(options, list) or not options:
            continue
        rest = [o for o in options if not _is_null(o)]
        outer = {k: v for k, v in schema.items() if k != word}
        if not rest:
            return {**outer, "const": None}, False
        nullable = nullable or len(rest) < len(options)
        if len(rest) == 1 and isinstance(rest[0], dict) and "const" not in rest[0]:
            return {**rest[0], **outer}, nullable
        return {**outer, word: rest}, nullable
    return schema, nullable


def _is_null(option: Any) -> bool:
    return isinstance(option, dict) and (
        option.get("type") == "null" or ("const" in option and option["const"] is None)
    )


def _type_of(schema: dict[str, Any]) -> str | list[str] | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        names = list(dict.fromkeys(k for k in kind if isinstance(k, str)))
        if len(names) > 1:
            return names
        kind = names[0] if names else None
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _choices(schema: dict[str, Any]) -> tuple[list[Any], list[str]] | None:
    """Options and their titles: an ``enum``, or ``oneOf``/``anyOf`` of titled ``const``s."""
    if isinstance(schema.get("enum"), list):
        named = _enum_titles(schema)
        return _distinct([(v, named(i, v)) for i, v in enumerate(schema["enum"])])
    for word in ("oneOf", "anyOf"):
        options = schema.get(word)
        if not isinstance(options, list) or not options:
            continue
        if all(isinstance(o, dict) and "const" in o for o in options):
            titled = [
                (o["const"], str(o.get("title") or _option_text(o["const"]))) for o in options
            ]
            return _distinct(titled)
    return None


def _enum_titles(schema: dict[str, Any]) -> Callable[[int, Any], str]:
    """Titles of an enum's values a model gives beside it: ``x-enum-titles`` (value to title),
    or ``x-enum-names``/``enumNames`` (titles in the enum's order); else the value itself."""
    mapping = schema.get("x-enum-titles")
    listed = schema.get("x-enum-names", schema.get("enumNames"))

    def title(index: int, value: Any) -> str:
        if isinstance(mapping, dict) and _text(mapping.get(_option_text(value))):
            return str(mapping[_option_text(value)])
        if isinstance(listed, list) and index < len(listed) and _text(listed[index]):
            return str(listed[index])
        return _option_text(value)

    return title


def _distinct(titled: list[tuple[Any, str]]) -> tuple[list[Any], list[str]]:
    """Each option once (the first title wins): a repeated option could not be told apart."""
    values: list[Any] = []
    titles: list[str] = []
    for value, title in titled:
        if _position(values, value) is None:
            values.append(value)
            titles.append(title)
    return values, titles


def _option_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return json.dumps(value)


def _title(own: dict[str, Any], schema: dict[str, Any], name: str | None) -> str | None:
    """The field's title; a definition's title names a type, so a property uses its name."""
    given = _text(own.get("title")) or (None if name else _text(schema.get("title")))
    if given and name and given == name.replace("_", " ").title():
        given = None  # pydantic's title made from the name ("Resolution Km"): words instead
    if given:
        return (_readable(given) if _is_identifier(given) else given) or None
    if name:
        return _readable(name) or None
    return None


def _help(*texts: str | None) -> str | None:
    """A field's description and longer help (nf-core's ``help_text``), one paragraph
    each, as its help (Markdown, shown without images or HTML)."""
    text = "\n\n".join(t.strip() for t in texts if t)
    return safe_markdown(text) if text else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _unit(schema: dict[str, Any]) -> str | None:
    """The unit a model gives a value: ``"x-unit": "km"`` (or a plain ``"unit"`` key)."""
    return _text(schema.get("x-unit")) or _text(schema.get("unit"))


def _is_identifier(title: str) -> bool:
    """Whether a title is a name from code ("conf", "ColumnRule") rather than words ("pH")."""
    return bool(re.fullmatch(r"[a-z0-9]+|\w*_\w*|(?:[A-Z][a-z0-9]+){2,}", title))


def _readable(name: str) -> str:
    """``base_year`` -> "Base year", ``ColumnRule`` -> "Column rule", ``CO2_ppm`` -> "CO2 ppm"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-]+", " ", name)
    words = [w if w.isupper() and len(w) > 1 else w.lower() for w in spaced.split()]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _string_field(schema: dict[str, Any], path: str) -> Field:
    fmt = schema.get("format")
    if fmt == "date":
        return Field(path, "date", "")
    if fmt == "date-time":
        return Field(path, "datetime", "")
    max_length = _count(schema.get("maxLength"))
    return Field(
        path,
        "text",
        "",
        min_length=_count(schema.get("minLength")) or 0,
        max_length=max_length,
        multiline=fmt == "textarea" or (max_length or 0) > _LONG_TEXT,
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _number_field(schema: dict[str, Any], path: str, *, integer: bool) -> Field:
    multiple = _number(schema.get("multipleOf"))
    if multiple is not None and (multiple <= 0 or (integer and multiple != int(multiple))):
        multiple = None  # a whole-number widget cannot step by fractions: left to validation
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    step = multiple or (1 if integer else _float_step(low, high))
    lowest = _inner_bound(low, low_open, step, multiple, integer, up=True)
    highest = _inner_bound(high, high_open, step, multiple, integer, up=False)
    if lowest is not None and highest is not None and lowest > highest:
        highest = lowest  # the schema admits nothing a widget could offer: left to validation
    cast: Callable[[float], float] = int if integer else float
    return Field(
        path,
        "integer" if integer else "number",
        "",
        minimum=None if lowest is None else cast(lowest),
        maximum=None if highest is None else cast(highest),
        step=cast(step),
        multiple_of=None if multiple is None else cast(multiple),
    )


def _bound(
    schema: dict[str, Any], closed: str, opened: str, tighter: Callable[[float, float], float]
) -> tuple[float | None, bool]:
    """The tighter of a closed and an open bound, and whether it is open."""
    inclusive = _number(schema.get(closed))
    exclusive = _number(schema.get(opened))
    if schema.get(opened) is True:  # draft 4 wrote exclusiveMinimum as a flag
        inclusive, exclusive = None, inclusive
    if exclusive is None:
        return inclusive, False
    if inclusive is None or tighter(inclusive, exclusive) == exclusive:
        return exclusive, True
    return inclusive, False


def _float_step(low: float | None, high: float | None) -> float:
    if low is not None and high is not None and 0 < high - low < 1:
        return float(10 ** (math.floor(math.log10(high - low)) - 2))
    return 0.01  # Streamlit's own step for decimals


def _inner_bound(
    bound: float | None,
    is_open: bool,
    step: float,
    multiple: float | None,
    integer: bool,
    *,
    up: bool,
) -> float | None:
    """The last value a widget may offer on this side of `bound` (`up`: the lower side)."""
    if bound is None:
        return None
    value: float
    if multiple is not None and math.isfinite(bound / multiple):
        value = _first_whole(bound / multiple, is_open, up=up) * multiple
    elif integer:
        value = _first_whole(bound, is_open, up=up)
    else:
        value = bound + (step if up else -step) if is_open else bound
    if integer:
        return max(-_SAFE_INTEGER, min(_SAFE_INTEGER, int(value)))
    return float(value)


def _first_whole(bound: float, is_open: bool, *, up: bool) -> int:
    """The first whole number inside `bound`, going up from it or down from it."""
    if up:
        return math.floor(bound) + 1 if is_open else math.ceil(bound)
    return math.ceil(bound) - 1 if is_open else math.floor(bound)


def _array_field(
    schema: dict[str, Any], resolver: Resolver[Any], path: str, seen: frozenset[int]
) -> Field:
    items = schema.get("items")
    if not isinstance(items, dict):
        return Field(path, "json", "")  # tuples (prefixItems) and untyped lists
    item = _build(
        items, resolver, path=f"{path}[]", name=None, required=True, seen=seen, fallback=""
    )
    field = Field(
        path,
        "list",
        "",
        min_items=_count(schema.get("minItems")) or 0,
        max_items=_count(schema.get("maxItems")),
        unique_items=schema.get("uniqueItems") is True,
        item=item,
    )
    if item.kind == "choice" and not item.nullable:
        return dataclasses.replace(
            field, kind="multichoice", options=item.options, option_titles=item.option_titles
        )
    return field


def _object_field(
    schema: dict[str, Any], resolver: Resolver[Any], path: str, seen: frozenset[int]
) -> Field:
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return Field(path, "json", "")  # free-form mappings
    required = set(_names(schema.get("required")))
    children = [
        _build(
            sub,
            resolver,
            path=f"{path}.{name}" if path else name,
            name=name,
            required=name in required,
            seen=seen,
        )
        for name, sub in properties.items()
    ]
    parts = schema.get("allOf")
    conditions = [p for p in _listed(parts) if isinstance(p, dict) and "if" in p]
    if "if" in schema:
        conditions.append(schema)
    rules = [rule for rule in map(_choice_rule, conditions) if rule is not None]
    return Field(path, "object", "", children=children, rules=rules)


def _choice_rule(condition: dict[str, Any]) -> ChoiceRule | None:
    """Read an if/then/else whose ``if`` tests properties against constants."""
    test = condition.get("if")
    if not isinstance(test, dict) or set(test) - {"properties", "required"}:
        return None
    when = _allowed_values(_properties(test))
    if when is None:
        return None
    then = _allowed_values(_properties(condition.get("then")), partial=True) or {}
    otherwise = _allowed_values(_properties(condition.get("else")), partial=True) or {}
    return ChoiceRule(when, _names(test.get("required")), then, otherwise)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _names(value: Any) -> list[str]:
    """The property names in a ``required`` list (an ill-formed one names none)."""
    return [v for v in _listed(value) if isinstance(v, str)]


def _properties(node: Any) -> dict[str, Any]:
    properties = node.get("properties") if isinstance(node, dict) else None
    return properties if isinstance(properties, dict) else {}


def _allowed_values(
    properties: dict[str, Any], *, partial: bool = False
) -> dict[str, list[Any]] | None:
    """Property -> allowed values, from ``const`` and ``enum``; None if some say more."""
    allowed: dict[str, list[Any]] = {}
    for name, sub in properties.items():
        if isinstance(sub, dict) and "const" in sub:
            allowed[name] = [sub["const"]]
        elif isinstance(sub, dict) and isinstance(sub.get("enum"), list):
            allowed[name] = list(sub["enum"])
        elif not partial:
            return None
    return allowed


def _variants_field(
    options: list[Any], resolver: Resolver[Any], path: str, seen: frozenset[int]
) -> Field:
    variants = [
        _variant_titled(_build(option, resolver, path=path, name=None, required=True, seen=seen))
        for option in options
    ]
    return Field(path, "variants", "", variants=variants)


def _variant_titled(variant: Field) -> Field:
    """An untitled object variant is named by its constant, e.g. a ``kind: "circle"``."""
    if variant.title != _KIND_WORDS[variant.kind] or variant.kind != "object":
        return variant
    for child in variant.children:
        if child.kind == "const":
            return dataclasses.replace(variant, title=_option_text(child.const))
    return variant


# ---------------------------------------------------------------- drawing the form


class _Spot(NamedTuple):
    """Where a field is: its path in the value (``at``) and its widget key."""

    at: str
    key: str

    def child(self, name: str) -> _Spot:
        return _Spot(f"{self.at}.{name}" if self.at else name, f"{self.key}.{name}")

    def row(self, index: int, row_id: int) -> _Spot:
        # Keys follow the row's id, not its position, so removing a row does
        # not hand its neighbours' values to the rows after it.
        return _Spot(f"{self.at}[{index}]", f"{self.key}[{row_id}]")


@dataclasses.dataclass
class _Canvas:
    ui: Any
    errors: dict[str, list[str]]
    folded: bool = False  # drawing inside an "Advanced settings" fold (folds do not nest)
    compact: bool = False  # short fields side by side in twos, no section headings

    # A problem may quote the model's own words (its ``errorMessage``, a check's message).
    def show_errors(self, at: str) -> None:
        for message in self.errors.pop(at, []):
            self.ui.error(safe_markdown(message))

    def show_rest(self) -> None:
        """Messages about fields the form no longer shows (a removed row, an unknown field)."""
        for at, messages in sorted(self.errors.items()):
            for message in messages:
                self.ui.error(safe_markdown(f"{at}: {message}" if at else message))
        self.errors.clear()


def render(
    field: Field,
    *,
    key: str,
    initial: Any = None,
    errors: Mapping[str, Sequence[str]] | None = None,
    ui: Any = None,
    compact: bool = False,
) -> Any:
    """Draw the widgets and return the JSON-ready value they hold now.

    `ui` draws them: the `streamlit` module (the default, imported lazily) or
    anything with its widget functions. `key` prefixes every widget key
    (stable per field path, so values survive reruns and several forms can
    coexist). `initial` prefills (e.g. the conf of an earlier run, for "run
    again"); schema defaults otherwise. `errors` maps a field path relative to
    the form root (e.g. "base_year", "column_rules[0].pattern", "" for the
    root) to messages, shown right under that field's widget with ``ui.error``;
    messages about fields not shown go to the top of the form. `compact` draws
    short fields (one-line text, numbers, dates, choices, switches) side by side in
    twos, and leaves out the sections' headings: for a form in little room.

    An empty optional field is left out of its object, or null where the
    schema allows null.

    Widget keys are ``key`` followed by the field's path: ``launch.base_year``,
    ``launch.column_rules[0].pattern``, where ``[0]`` is the row's id (its
    position until a row above it is removed). Helpers add a suffix:
    ``#rows`` (the row ids, in ``ui.session_state``), ``#next``, ``#add``,
    ``[id]#remove``, ``#variant`` and ``@<n>`` (the chosen variant), ``#on``
    (an optional group), ``#date`` and ``#time`` (a date-time). Widgets take
    `initial` only when first drawn, so give each prefill its own `key`.
    """
    if ui is None:
        import streamlit

        ui = streamlit
    canvas = _Canvas(
        ui, {at: list(messages) for at, messages in (errors or {}).items()}, compact=compact
    )
    top = ui.container()
    start = NO_DEFAULT if initial is None else initial
    value = _draw(field, canvas, _Spot("", key), start, framed=False)
    with top:
        canvas.show_rest()
    return None if value is _EMPTY else value


def _draw(
    field: Field,
    canvas: _Canvas,
    spot: _Spot,
    given: Any,
    *,
    label: str | None = None,
    framed: bool = True,
) -> Any:
    start = field.default if given is NO_DEFAULT else given
    shown = label or _label(field)
    if field.kind == "object":
        return _draw_object(field, canvas, spot, start, shown, framed=framed)
    return _DRAWERS[field.kind](field, canvas, spot, start, shown)


def _label(field: Field) -> str:
    """ "Base year * · 1950–2100", "Resolution (km) · 1–50": the title, whether it is
    required, its unit and the range a number may take. Streamlit reads a label as
    Markdown (images too): the model's words in it are shown as written."""
    label = plain(field.title) + (f" ({plain(field.unit)})" if field.unit else "")
    if field.required and field.name is not None:
        label += " *"
    span = _span(field)
    return f"{label} · {span}" if span else label


def _span(field: Field) -> str | None:
    """The range of a number in words: "1950–2100", "at least 0", "at most 10"."""
    if field.kind not in ("integer", "number"):
        return None
    low, high = (_number_text(n) for n in (field.minimum, field.maximum))
    if low is not None and high is not None:
        return f"{low}–{high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}" if high is not None else None


def _number_text(number: float | None) -> str | None:
    if number is None:
        return None
    return str(int(number)) if number == int(number) else f"{number:g}"


def _may_be_empty(field: Field) -> bool:
    return field.nullable or not field.required


def _draw_text(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    text = start if isinstance(start, str) else ""
    widget = canvas.ui.text_area if field.multiline else canvas.ui.text_input
    value = widget(
        label,
        value=text[: field.max_length] if field.max_length is not None else text,
        max_chars=field.max_length,
        key=spot.key,
        help=field.help,
    )
    canvas.show_errors(spot.at)
    if not value and _blank_is_empty(field):
        return _EMPTY
    return value or ""


def _blank_is_empty(field: Field) -> bool:
    """Whether blank text means "not given" rather than the empty string."""
    if field.nullable:
        return True
    return not field.required and (field.min_length > 0 or field.default in (NO_DEFAULT, ""))


def _draw_date(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    day = _as_date(start)
    if day is None and not _may_be_empty(field):
        day = date.today()
    value = canvas.ui.date_input(
        label,
        value=day,
        min_value=_EARLIEST,
        max_value=_LATEST,
        format="YYYY-MM-DD",
        key=spot.key,
        help=field.help,
    )
    canvas.show_errors(spot.at)
    return _EMPTY if value is None else value.isoformat()


def _as_date(value: Any) -> date | None:
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        value = value.date()
    return value if isinstance(value, date) and _EARLIEST <= value <= _LATEST else None


def _draw_datetime(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    moment = _as_datetime(start)
    if moment is None and not _may_be_empty(field):
        moment = datetime.now(UTC).replace(second=0, microsecond=0)
    ui = canvas.ui
    day_column, time_column = ui.columns(2)
    with day_column:
        day = ui.date_input(
            label,
            value=moment.date() if moment else None,
            min_value=_EARLIEST,
            max_value=_LATEST,
            format="YYYY-MM-DD",
            key=f"{spot.key}#date",
            help=field.help,
        )
    with time_column:
        clock = ui.time_input(
            "Time (UTC)",
            value=moment.time() if moment else None,
            step=60,
            key=f"{spot.key}#time",
        )
    canvas.show_errors(spot.at)
    if day is None:
        return _EMPTY
    chosen = datetime.combine(day, clock or time(0), tzinfo=UTC)
    return chosen.isoformat().replace("+00:00", "Z")


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value if _EARLIEST <= value.date() <= _LATEST else None


def _draw_number(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    integer = field.kind == "integer"
    value = _as_number(start, field)
    if value is None and not _may_be_empty(field):
        value = _fitted(0, field)
    options: dict[str, Any] = {}
    if not integer:
        options["format"] = f"%.{_decimals(field.step or 0.01)}f"
    # No bounds on the widget: a browser holds back a number typed out of them, and the
    # run would start with the value before. What is typed is kept; the range is in the
    # label, and a value out of it is shown wrong under the field (launch waits for it).
    chosen = canvas.ui.number_input(
        label,
        value=value,
        step=field.step,
        key=spot.key,
        help=field.help,
        **options,
    )
    canvas.show_errors(spot.at)
    if chosen is None:
        return _EMPTY
    if _number(start) is not None and chosen == start:
        return start  # as given: a default of 5 stays 5, one of 5.0 stays 5.0
    return _as_typed(chosen, field)


def _as_typed(value: float, field: Field) -> float:
    """A typed number as JSON reads it, never moved: 5 is a whole number, in a field of any
    number too. Only a float's rounding error off a multiple is taken back (0.1 * 3 is
    0.30000000000000004, the user typed 0.3)."""
    if field.kind == "integer":
        return int(value)
    value = float(value)
    if field.multiple_of is not None and math.isfinite(value):
        on = _on_multiple(value, dataclasses.replace(field, minimum=None, maximum=None))
        if abs(on - value) <= 1e-9 * max(1.0, abs(value)):
            value = on
    if value.is_integer() and abs(value) <= _SAFE_INTEGER:
        return int(value)
    return value


def _as_number(value: Any, field: Field) -> float | None:
    """A default or earlier value as the widget starts with it: as given, never moved into
    range (the label says the range; validation says when it is out of it)."""
    number = _number(value)
    if number is None or (field.kind == "integer" and number != int(number)):
        return None
    if field.kind != "integer":
        return float(number)
    if abs(number) > _SAFE_INTEGER:
        return None  # beyond the whole numbers a browser can hold: the widget starts empty
    return int(number)


def _fitted(value: float, field: Field) -> float:
    """`value` as the field's type, within its bounds, on a multiple where it asks for one."""
    if field.kind == "integer":
        return _whole_fitted(int(value), field)
    if field.maximum is not None:
        value = min(value, field.maximum)
    if field.minimum is not None:
        value = max(value, field.minimum)
    if field.multiple_of is not None:
        value = _on_multiple(value, field)
    return float(value)


def _whole_fitted(value: int, field: Field) -> int:
    # Whole numbers in whole arithmetic: floats lose odd numbers beyond 2**53.
    lowest = -_SAFE_INTEGER if field.minimum is None else int(field.minimum)
    highest = _SAFE_INTEGER if field.maximum is None else int(field.maximum)
    value = min(max(value, lowest), highest)
    multiple = int(field.multiple_of or 1)
    steps = (value + multiple // 2) // multiple
    steps = min(max(steps, -(-lowest // multiple)), highest // multiple)
    return steps * multiple


def _on_multiple(value: float, field: Field) -> float:
    multiple = field.multiple_of or 1.0
    try:
        steps = round(value / multiple)
        if field.minimum is not None:
            steps = max(steps, math.ceil(field.minimum / multiple))
        if field.maximum is not None:
            steps = min(steps, math.floor(field.maximum / multiple))
    except (OverflowError, ValueError):
        return value  # beyond what a float can count in multiples: left to validation
    # 0.1 * 3 is not 0.3 in binary: offer the validator the product it accepts.
    candidates = (steps * multiple, float(Decimal(steps) * Decimal(str(multiple))))
    for candidate in candidates:
        ratio = candidate / multiple
        if ratio == int(ratio):
            return candidate
    return candidates[0]


def _decimals(step: float) -> int:
    exponent = Decimal(str(step)).normalize().as_tuple().exponent
    return min(max(-int(exponent), 2), 10)


def _draw_boolean(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    if _may_be_empty(field) and not isinstance(field.default, bool):
        # A toggle is always on or off; "not given" needs a third option.
        chosen = canvas.ui.selectbox(
            label,
            [True, False],
            index=None if not isinstance(start, bool) else (0 if start else 1),
            format_func=_option_text,
            key=spot.key,
            help=field.help,
            placeholder="Not set",
        )
        canvas.show_errors(spot.at)
        return _EMPTY if chosen is None else chosen
    value = canvas.ui.toggle(label, value=start is True, key=spot.key, help=field.help)
    canvas.show_errors(spot.at)
    return bool(value)


def _draw_choice(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    # A required choice without a default starts empty ("Choose…"): never a choice the
    # person did not make.
    chosen = canvas.ui.selectbox(
        label,
        field.options,
        index=_position(field.options, start),
        format_func=_titles_of(field),
        key=spot.key,
        help=field.help,
        placeholder="Choose…",
    )
    canvas.show_errors(spot.at)
    return _EMPTY if chosen is None else chosen


def _position(options: Sequence[Any], value: Any) -> int | None:
    # `True == 1` in Python, not in JSON: compare types too.
    for index, option in enumerate(options):
        if type(option) is type(value) and option == value:
            return index
    return None


def _titles_of(field: Field) -> Callable[[Any], str]:
    def title(option: Any) -> str:
        index = _position(field.options, option)
        return field.option_titles[index] if index is not None else _option_text(option)

    return title


def _draw_multichoice(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    picked = [_position(field.options, value) for value in start] if isinstance(start, list) else []
    chosen = [field.options[i] for i in dict.fromkeys(p for p in picked if p is not None)]
    most = field.max_items or None
    # Streamlit reads max_selections=0 as "no limit"; maxItems 0 leaves nothing to choose.
    options = [] if field.max_items == 0 else field.options
    values = canvas.ui.multiselect(
        label,
        options,
        default=chosen[:most] if options else [],
        format_func=_titles_of(field),
        max_selections=most,
        key=spot.key,
        help=field.help,
        placeholder="Choose options",
    )
    canvas.show_errors(spot.at)
    return _list_or_empty(field, list(values))


def _list_or_empty(field: Field, values: list[Any]) -> Any:
    if not values and (field.nullable or (not field.required and field.min_items > 0)):
        return _EMPTY
    return values


def _draw_const(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    canvas.show_errors(spot.at)
    return field.const


def _draw_json(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    shown = "" if start is NO_DEFAULT else json.dumps(start, indent=2, default=str)
    hint = 'Type a JSON value, e.g. 42, "text", [1, 2] or {"name": 1}.'
    text = canvas.ui.text_area(
        label, value=shown, key=spot.key, help=f"{field.help} {hint}" if field.help else hint
    )
    canvas.show_errors(spot.at)
    if not text or not text.strip():
        return _EMPTY
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        canvas.ui.error(f"This is not valid JSON: {error.msg} ({where}).")
    except ValueError as error:
        canvas.ui.error(f"This is not valid JSON: {error}.")
    return _EMPTY


# Python's json reads NaN, Infinity and 1e999, which JSON (and the validator) do not know.
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON knows")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large a number")
    return number


def _draw_variants(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    fitting = _fitting_variant(field.variants, start)
    index = 0 if fitting is None and not _may_be_empty(field) else fitting
    chosen = canvas.ui.selectbox(
        label,
        list(range(len(field.variants))),
        index=index,
        format_func=lambda i: field.variants[i].title,
        key=f"{spot.key}#variant",
        help=field.help,
        placeholder="Choose what to give",
    )
    canvas.show_errors(spot.at)
    if chosen is None:
        return _EMPTY
    variant = field.variants[chosen]
    # Each variant has its own keys: a widget never gets another variant's value.
    inner = _Spot(spot.at, f"{spot.key}@{chosen}")
    given = start if chosen == fitting else NO_DEFAULT
    if variant.kind not in _GROUPS:
        label = f"{plain(field.title)}: {plain(variant.title)}"
        return _draw(variant, canvas, inner, given, label=label)
    with canvas.ui.container(border=True):
        return _draw(variant, canvas, inner, given, label=plain(variant.title), framed=False)


def _fitting_variant(variants: Sequence[Field], value: Any) -> int | None:
    """The variant an initial value belongs to; 3 to a whole-number one before a decimal one."""
    fitting = [i for i, variant in enumerate(variants) if _fits(variant, value)]
    exact = [i for i in fitting if _same_number_type(variants[i], value)]
    return next(iter(exact or fitting), None)


def _same_number_type(field: Field, value: Any) -> bool:
    if field.kind == "integer":
        return isinstance(value, int)
    return field.kind != "number" or isinstance(value, float)


def _fits(field: Field, value: Any) -> bool:
    """Whether `value` (an initial value) belongs to variant `field`."""
    if value is NO_DEFAULT or value is None:
        return False
    match field.kind:
        case "const":
            return type(value) is type(field.const) and value == field.const
        case "choice":
            return _position(field.options, value) is not None
        case "text":
            longest = field.max_length
            return isinstance(value, str) and (longest is None or len(value) <= longest)
        case "date":
            return _as_date(value) is not None
        case "datetime":  # a bare date is a date, not midnight
            return _as_date(value) is None and _as_datetime(value) is not None
        case "integer" | "number":
            return bool(_as_number(value, field) == value)
        case "boolean":
            return isinstance(value, bool)
        case "list" | "multichoice":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict) and _object_fits(field, value)
        case "variants":
            return any(_fits(variant, value) for variant in field.variants)
    return True  # a JSON field takes anything


def _object_fits(field: Field, value: dict[str, Any]) -> bool:
    for child in field.children:
        if child.name not in value:
            if child.required:
                return False
        elif child.kind == "const" and not _fits(child, value[child.name]):
            return False
    return True


def _draw_object(
    field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str, *, framed: bool
) -> Any:
    given = start if isinstance(start, dict) else {}
    if not framed:
        canvas.show_errors(spot.at)
        return _draw_properties(field, canvas, spot, given)
    ui = canvas.ui
    with ui.container(border=True):
        if _may_be_empty(field) and field.default is NO_DEFAULT:
            # An optional group with no default is filled in only on request.
            wanted = ui.toggle(
                label, value=isinstance(start, dict), key=f"{spot.key}#on", help=field.help
            )
            canvas.show_errors(spot.at)
            if not wanted:
                return _EMPTY
        else:
            ui.markdown(_heading(label), help=field.help)
            canvas.show_errors(spot.at)
        return _draw_properties(field, canvas, spot, given)


def _draw_properties(
    field: Field, canvas: _Canvas, spot: _Spot, given: dict[str, Any]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    drawn: set[str] = set()

    def draw_one(child: Field) -> None:
        name = child.name or ""
        shown = _narrowed(child, field.rules, values, drawn)
        value = _draw(shown, canvas, spot.child(name), given.get(name, NO_DEFAULT))
        drawn.add(name)
        if value is not _EMPTY:
            values[name] = value
        elif child.nullable:
            values[name] = None

    def draw(children: Sequence[Field]) -> None:
        for row in _rows(children, 2 if canvas.compact else 1):
            if len(row) == 1:
                draw_one(row[0])
                continue
            outer = canvas.ui
            for child, column in zip(row, outer.columns(len(row), wrap=False), strict=True):
                canvas.ui = column  # the field, and its problems, in its column
                try:
                    draw_one(child)
                finally:
                    canvas.ui = outer

    unplaced: list[Field] = []  # advanced fields in no section: folded at the very end
    for section, children in _sections(field.children):
        folded = [c for c in children if c.advanced and not canvas.folded]
        if section is not None and not canvas.compact:
            canvas.ui.markdown(f"#### {plain(section)}")
            words = next((c.section_help for c in children if c.section_help), None)
            if words:
                canvas.ui.caption(words)
        draw([c for c in children if not (c.advanced and not canvas.folded)])
        if section is None:
            unplaced += folded
        else:
            _draw_fold(folded, canvas, spot, draw)
    _draw_fold(unplaced, canvas, spot, draw)
    return values


# Fields short enough to stand two in a row of a compact form.
_SHORT: frozenset[str] = frozenset({"text", "date", "integer", "number", "boolean", "choice"})


def _rows(children: Sequence[Field], width: int) -> list[list[Field]]:
    """`children` in rows of up to `width` short fields; any other field has a row of its own."""
    rows: list[list[Field]] = []
    for child in children:
        last = rows[-1] if rows else None
        if _short(child) and last is not None and len(last) < width and _short(last[-1]):
            last.append(child)
        else:
            rows.append([child])
    return rows


def _short(field: Field) -> bool:
    return field.kind in _SHORT and not field.multiline


def _sections(children: Sequence[Field]) -> list[tuple[str | None, list[Field]]]:
    """The fields by ``x-section``, sections in the order they first appear (fields in
    none form a group of their own, placed where the first of them is)."""
    grouped: dict[str | None, list[Field]] = {}
    for child in children:
        grouped.setdefault(child.section, []).append(child)
    return list(grouped.items())


def _draw_fold(
    children: Sequence[Field],
    canvas: _Canvas,
    spot: _Spot,
    draw: Callable[[Sequence[Field]], None],
) -> None:
    """Advanced fields in a collapsed fold, opened (and saying so) when one needs fixing."""
    if not children:
        return
    places = [spot.child(child.name or "").at for child in children]
    trouble = sum(
        len(messages)
        for at, messages in canvas.errors.items()
        if any(at == p or at.startswith((f"{p}.", f"{p}[")) for p in places)
    )
    label = "Advanced settings" + (f" · {trouble} to fix" if trouble else "")
    icon = ":material/error:" if trouble else ":material/tune:"
    with canvas.ui.expander(label, expanded=bool(trouble), icon=icon):
        canvas.folded = True
        try:
            draw(children)
        finally:
            canvas.folded = False


def _narrowed(
    child: Field, rules: Sequence[ChoiceRule], values: Mapping[str, Any], drawn: set[str]
) -> Field:
    """`child` with only the options the ``if``/``then`` rules allow, given the fields above it.

    Rules that test fields drawn below `child`, or that would leave no option,
    are left to validation.
    """
    if child.kind != "choice" or not rules:
        return child
    allowed: list[Any] | None = None
    for rule in rules:
        if not set(rule.when) | set(rule.needs) <= drawn:
            continue
        limits = rule.then if _holds(rule, values) else rule.otherwise
        limit = limits.get(child.name or "")
        if limit is not None:
            allowed = (
                limit
                if allowed is None
                else [v for v in allowed if _position(limit, v) is not None]
            )
    if allowed is None:
        return child
    keep = [i for i, option in enumerate(child.options) if _position(allowed, option) is not None]
    if not keep:
        return child
    return dataclasses.replace(
        child,
        options=[child.options[i] for i in keep],
        option_titles=[child.option_titles[i] for i in keep],
    )


def _holds(rule: ChoiceRule, values: Mapping[str, Any]) -> bool:
    if any(name not in values for name in rule.needs):
        return False
    return all(
        name not in values or _position(allowed, values[name]) is not None
        for name, allowed in rule.when.items()
    )


def _heading(label: str) -> str:
    """A group's label (its title already shown as written) in bold, its mark apart."""
    title, marked = (label[:-2], True) if label.endswith(" *") else (label, False)
    return f"**{title}**" + (" \\*" if marked else "")


def _draw_rows(field: Field, canvas: _Canvas, spot: _Spot, start: Any, label: str) -> Any:
    ui = canvas.ui
    item = field.item or Field(f"{field.path}[]", "json", field.title)
    ui.markdown(_heading(label), help=field.help)
    canvas.show_errors(spot.at)
    starts = start if isinstance(start, list) else []
    state = ui.session_state
    ids = _row_ids(state, spot.key, field, len(starts))
    values = []
    for index, row_id in enumerate(ids):
        row = spot.row(index, row_id)
        given = starts[row_id] if row_id < len(starts) else NO_DEFAULT
        removable = len(ids) > field.min_items
        value = _draw_row(
            item, canvas, row, given, index, removable, (state, spot.key, row_id, field.min_items)
        )
        values.append(None if value is _EMPTY else value)
    if field.unique_items and len({json.dumps(v, sort_keys=True) for v in values}) < len(values):
        ui.warning("Each entry must be different from the others.")
    full = field.max_items is not None and len(ids) >= field.max_items
    ui.button(
        f"Add {plain(_lowered(item.title))}" if item.kind in _GROUPS else "Add",
        key=f"{spot.key}#add",
        on_click=_add_row,
        args=(state, spot.key, field.max_items),
        disabled=full,
        help=f"At most {field.max_items} entries." if full else "Add an entry at the end.",
    )
    return _list_or_empty(field, values)


def _draw_row(
    item: Field,
    canvas: _Canvas,
    row: _Spot,
    given: Any,
    index: int,
    removable: bool,
    removal: tuple[Any, ...],  # the arguments of `_remove_row` for this row
) -> Any:
    ui = canvas.ui
    label = f"{plain(item.title)} {index + 1}"
    remove = {
        "key": f"{row.key}#remove",
        "on_click": _remove_row,
        "args": removal,
        "disabled": not removable,
        "help": "Remove this entry." if removable else "This list needs at least these entries.",
    }
    if item.kind not in _GROUPS:
        value_column, button_column = ui.columns([6, 1], vertical_alignment="bottom")
        with value_column:
            value = _draw(item, canvas, row, given, label=label)
        with button_column:
            ui.button("Remove", **remove)
        return value
    with ui.container(border=True):
        heading_column, button_column = ui.columns([6, 1], vertical_alignment="center")
        with heading_column:
            ui.markdown(_heading(label))
        with button_column:
            ui.button("Remove", **remove)
        return _draw(item, canvas, row, given, label=label, framed=False)


def _row_ids(state: MutableMapping[str, Any], key: str, field: Field, count: int) -> list[int]:
    """The ids of the rows shown, kept in session state so rows survive reruns."""
    if f"{key}#rows" not in state:
        count = max(count, field.min_items)
        if field.max_items is not None:
            count = min(count, field.max_items)
        state[f"{key}#rows"] = list(range(count))
        state[f"{key}#next"] = count
    return list(state[f"{key}#rows"])


def _add_row(state: MutableMapping[str, Any], key: str, max_items: int | None) -> None:
    ids = list(state[f"{key}#rows"])
    if max_items is None or len(ids) < max_items:
        state[f"{key}#rows"] = [*ids, state[f"{key}#next"]]
        state[f"{key}#next"] += 1


def _remove_row(state: MutableMapping[str, Any], key: str, row_id: int, min_items: int) -> None:
    ids = list(state[f"{key}#rows"])
    if len(ids) > min_items:
        state[f"{key}#rows"] = [i for i in ids if i != row_id]


def _lowered(title: str) -> str:
    first = title.split(" ", 1)[0]
    return title if first.isupper() and len(first) > 1 else title[:1].lower() + title[1:]


_DRAWERS: dict[str, Callable[[Field, _Canvas, _Spot, Any, str], Any]] = {
    "text": _draw_text,
    "date": _draw_date,
    "datetime": _draw_datetime,
    "integer": _draw_number,
    "number": _draw_number,
    "boolean": _draw_boolean,
    "choice": _draw_choice,
    "multichoice": _draw_multichoice,
    "list": _draw_rows,
    "variants": _draw_variants,
    "const": _draw_const,
    "json": _draw_json,
}


# ---------------------------------------------------------------- placing errors


def errors_by_field(
    problems: Iterable[str], parameter: str = "conf"
) -> tuple[dict[str, list[str]], list[str]]:
    """Sort validation lines by the field of `parameter` they are about.

    Lines like "conf.base_year: 3000 is greater than the maximum of 2100" or
    "conf.column_rules[0].pattern: ..." become
    ``({"base_year": ["3000 is greater ..."]}, [lines not about this parameter])``.
    """
    by_field: dict[str, list[str]] = {}
    others: list[str] = []
    # One line may report several unknown fields, joined by "; ".
    joined = re.compile(rf"; (?={re.escape(parameter)}[.\[:])")
    for line in problems:
        for part in joined.split(line):
            where, separator, message = part.partition(": ")
            if separator and _is_under(where, parameter):
                path = where[len(parameter) :].removeprefix(".")
                by_field.setdefault(path, []).append(message)
            else:
                others.append(part)
    return by_field, others


def _is_under(where: str, parameter: str) -> bool:
    return where == parameter or where.startswith((f"{parameter}.", f"{parameter}["))
