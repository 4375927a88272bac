"""Jobflow results: persisted as strict JSON, read back as data, never unpickled.

A jobflow's return value is what users read back (``run.result()``, the
portal, the catalog), in processes that must not run the author's code. So a
jobflow persists it with :func:`json_serializer` (Prefect serializer type
``acc-json``), which accepts JSON data only, and :func:`read_result` reads a
stored result with ``json.loads`` alone: a result stored any other way
(pickle, Prefect's own JSON with its ``__class__`` hooks, compressed …) is
refused, not decoded.

Example:
    >>> to_json_data({"region": "alps", "cells": (3, 4)})
    {'region': 'alps', 'cells': [3, 4]}
    >>> to_json_data({"years": {1995, 2050}})
    Traceback (most recent call last):
    ...
    accelerator_prefect.results.ResultNotJSON: result["years"]: values of type set ...
"""

from __future__ import annotations

import functools
import json
import math
from datetime import date, datetime, time
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel

from accelerator_prefect.errors import AcceleratorError

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.results import ResultRecordMetadata
    from prefect.serializers import Serializer

SERIALIZER_TYPE = "acc-json"
_ADVICE = (
    "return JSON data (numbers, text, lists, dicts) and write anything else to the output folder"
)


class ResultNotJSON(AcceleratorError, TypeError):
    """A jobflow returned something that is not JSON data."""


# -- writing ----------------------------------------------------------------------------------


def to_json_data(value: Any, path: str = "result") -> Any:
    """``value`` as plain JSON data, or :class:`ResultNotJSON` naming where it is not.

    Accepted: dicts with text keys, lists and tuples (as lists), text, integers,
    finite floats, booleans and ``None``; also pydantic models (their JSON dump),
    dates and times (ISO 8601 text), paths and UUIDs (text). Subclasses of the
    JSON types (``StrEnum``, ``IntEnum``, ``numpy.float64``) become the plain type.
    """
    return _convert(value, path, set())


def dump_json(value: Any) -> bytes:
    """``value`` as UTF-8 JSON bytes (:func:`to_json_data` says what is accepted).

    An exception is recorded as ``{"error": <type>, "message": <text>}``: that is
    how Prefect stores why a run failed, through the same serializer.
    """
    if isinstance(value, BaseException):
        data: Any = {"error": type(value).__name__, "message": str(value)}
    else:
        data = to_json_data(value)
    # ASCII: text with lone surrogates (undecodable file names) still encodes.
    return json.dumps(data, allow_nan=False, separators=(",", ":")).encode()


def json_serializer() -> Serializer[Any]:
    """The Prefect serializer a jobflow persists its result with (type ``acc-json``)."""
    return _serializer_class()()


def is_json_serializer(serializer: object) -> bool:
    """Whether ``serializer`` (an instance or a type name) is :func:`json_serializer`'s."""
    if isinstance(serializer, str):
        return serializer == SERIALIZER_TYPE
    return isinstance(serializer, _serializer_class())


@functools.cache
def _serializer_class() -> type[Serializer[Any]]:
    # Defined on first use: subclassing needs Prefect, which only a jobflow process
    # or a result reader has loaded (and both have, by then).
    from prefect.serializers import Serializer

    class JSONResultSerializer(Serializer):  # type: ignore[misc]  # Prefect is untyped here
        """Strict JSON: ``dumps`` refuses anything but JSON data; ``loads`` is ``json.loads``
        (no hook that imports a class a payload names)."""

        type: Literal["acc-json"] = "acc-json"

        def dumps(self, obj: Any) -> bytes:
            return dump_json(obj)

        def loads(self, blob: bytes) -> Any:
            return json.loads(blob)

    return JSONResultSerializer


def _convert(value: Any, path: str, seen: set[int]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ResultNotJSON(
                f"{path}: {value} is not a finite number (JSON has no NaN or infinity); "
                "return None for a missing value"
            )
        return float.__float__(value)
    if isinstance(value, dict | list | tuple):
        return _convert_container(value, path, seen)
    if isinstance(value, BaseModel):
        return _convert_model(value, path, seen)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, PurePath | UUID):
        return str(value)
    raise ResultNotJSON(f"{path}: {_refusal(value)}")


def _convert_container(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...], path: str, seen: set[int]
) -> Any:
    if id(value) in seen:
        raise ResultNotJSON(f"{path}: the value contains itself; return JSON data without cycles")
    seen.add(id(value))
    try:
        if isinstance(value, dict):
            converted: dict[str, Any] = {}
            for key, item in dict.items(value):
                if not isinstance(key, str):
                    raise ResultNotJSON(
                        f"{path}: keys must be text, got a key of type {type(key).__name__}"
                        f"{_shown(key)}; JSON objects have text keys"
                    )
                converted[str.__str__(key)] = _convert(item, f"{path}[{json.dumps(key)}]", seen)
            return converted
        return [_convert(item, f"{path}[{i}]", seen) for i, item in enumerate(value)]
    finally:
        seen.discard(id(value))


def _convert_model(value: BaseModel, path: str, seen: set[int]) -> Any:
    try:
        dumped = value.model_dump(mode="json")
    except Exception as exc:  # pydantic's error says which field could not be dumped
        raise ResultNotJSON(
            f"{path}: the {type(value).__name__} model cannot be dumped as JSON ({exc}); {_ADVICE}"
        ) from None
    return _convert(dumped, path, seen)


def _refusal(value: Any) -> str:
    kind = type(value)
    hint = ""
    if kind.__module__.split(".")[0] == "numpy":
        hint = " (numpy values: convert with .tolist(), float(x) or int(x))"
    return f"values of type {kind.__name__} cannot be returned by a jobflow{hint}; {_ADVICE}"


def _shown(key: Any) -> str:
    return f" ({key!r})" if isinstance(key, int | float | bool) or key is None else ""


# -- reading ----------------------------------------------------------------------------------


async def read_result(client: PrefectClient, flow_run: FlowRun) -> Any:
    """The jobflow's return value, as JSON data read from the result storage.

    Only a result stored by :func:`json_serializer` is read, and only with
    ``json.loads``; any other is refused with :class:`AcceleratorError`.
    """
    from prefect.results import ResultRecordMetadata

    state = flow_run.state
    if state is None or not state.is_final():
        raise AcceleratorError(f"run {flow_run.id} has not finished yet; wait() for it first")
    if not state.is_completed():
        raise AcceleratorError(f"run {flow_run.id} ended {state.name}: {state.message or ''}")
    metadata = state.data
    if metadata is None:
        return None  # the jobflow persisted nothing (persist_result=False)
    if not isinstance(metadata, ResultRecordMetadata):
        raise _unsafe(flow_run, "its state holds no result record")
    if metadata.serializer.type != SERIALIZER_TYPE:
        raise _unsafe(flow_run, f"it was stored with the {metadata.serializer.type!r} serializer")
    try:
        content = await _read_result_bytes(client, metadata)
    except FileNotFoundError:
        raise AcceleratorError(
            f"run {flow_run.id}: its result was not stored; the run's logs say why"
        ) from None
    return decode_result(content, str(flow_run.id))


def decode_result(content: bytes, run_id: str) -> Any:
    """The JSON value in a stored result: the serializer's bytes, as Prefect 3.9 writes a
    flow's result, or a whole result record (metadata and result) whose serializer is
    ``acc-json``. Anything else is refused; nothing is unpickled or imported.

    A jobflow whose return value itself has exactly a result record's shape
    (``metadata`` with a ``serializer``, and ``result`` text) is read as a record.
    """
    stored = _loads(content, run_id, "the result")
    if not _is_record(stored):
        return stored
    kind = stored["metadata"]["serializer"].get("type")
    if kind != SERIALIZER_TYPE:
        raise _unsafe(run_id, f"its result record names the {kind!r} serializer")
    if not isinstance(stored["result"], str):
        raise _unsafe(run_id, "its result record holds no JSON text")
    return _loads(stored["result"].encode(), run_id, "the result record's value")


def _is_record(stored: Any) -> bool:
    """Whether ``stored`` is a serialized Prefect ``ResultRecord`` (``ResultRecord.serialize``)."""
    if not (isinstance(stored, dict) and stored.keys() == {"metadata", "result"}):
        return False
    metadata = stored["metadata"]
    return (
        isinstance(metadata, dict)
        and "prefect_version" in metadata
        and isinstance(metadata.get("serializer"), dict)
    )


def _loads(content: bytes, run_id: str, what: str) -> Any:
    try:
        return json.loads(content, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _unsafe(run_id, f"{what} is not JSON") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unsafe(run: FlowRun | str, why: str) -> AcceleratorError:
    run_id = run if isinstance(run, str) else run.id
    return AcceleratorError(
        f"run {run_id}: the result was not stored as JSON ({why}) and cannot be read safely; "
        "launch the model again for a result stored as JSON"
    )


async def _read_result_bytes(client: PrefectClient, data: ResultRecordMetadata) -> bytes:
    from prefect.blocks.core import Block

    key = str(data.storage_key)
    if data.storage_block_id is None:
        from prefect.settings import get_current_settings

        return _inside(Path(get_current_settings().results.local_storage_path), key).read_bytes()
    document = await client.read_block_document(data.storage_block_id)
    if document.block_type and document.block_type.slug == "local-file-system":
        # Read the file directly: a block method call would emit a Prefect event
        # through the process-wide settings, which need not point at this server.
        base = Path(str(document.data.get("basepath") or "")).expanduser()
        return _inside(base, key).read_bytes()
    storage = Block._from_block_document(document)
    return await storage.read_path(key)  # type: ignore[attr-defined,no-any-return]


def _inside(base: Path, key: str) -> Path:
    """``base / key``, refused unless it stays inside ``base``: a run's state names the
    key, and this process must not read its other files for it."""
    root = base.resolve()
    target = (root / key).resolve()
    if not target.is_relative_to(root):
        raise AcceleratorError(f"result key {key!r} points outside the result storage")
    return target
