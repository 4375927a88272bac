"""Credentials a hosted model needs: values live only in Prefect Secret blocks.

At launch each value the caller supplies goes into a Secret block made for that
launch (``acc-run-<launch>-<name>``), or into the caller's saved block for that
model (``acc-saved-<user>-<model>-<name>``) when they ask to be remembered. The
flow run's parameters carry only block *names*. Per-run blocks are deleted when
the run reaches a final state (flow hooks), and :func:`sweep` removes any a
crashed run left behind.

Inside the run, every value read is registered for redaction: log records and
exceptions (so state messages too) show ``***`` in its place, even when a
routine prints the value by mistake.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets as _random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from accelerator_prefect.manifest import SecretSpec

RUN_PREFIX = "acc-run-"
SAVED_PREFIX = "acc-saved-"
LAUNCH_TAG = "acc:launch:"
MASK = "***"
# A launch whose run never got created leaves nothing after this long.
SWEEP_GRACE = timedelta(minutes=10)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())


def new_launch_id() -> str:
    """An id tying a launch's secret blocks to its flow run (tag ``acc:launch:<id>``)."""
    return _random.token_hex(8)


def run_block(launch_id: str, name: str) -> str:
    return f"{RUN_PREFIX}{launch_id}-{_slug(name)}"


def _saved_prefix(user: str, model: str) -> str:
    # Lengths first, so no user/model pair can be read as another.
    return f"{SAVED_PREFIX}{len(user)}-{user}-{len(model)}-{model}-"


def saved_block(user: str, model: str, name: str) -> str:
    return _saved_prefix(user, model) + _slug(name)


def plain(value: Any) -> str | None:
    """A supplied secret value as text, or ``None`` if it is not text."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value if isinstance(value, str) else None


def secret_problems(
    specs: Mapping[str, SecretSpec], values: Mapping[str, Any], saved: set[str]
) -> list[str]:
    """Every way the supplied secrets fail the model's secrets schema (never a value)."""
    problems = []
    known = ", ".join(sorted(specs)) or "none"
    for name, value in values.items():
        if not re.match(r"^[A-Z][A-Z0-9_]*$", str(name)):
            # Not shown: a value typed where the name belongs must not be echoed.
            problems.append(f"secrets: a name that is not UPPER_SNAKE_CASE was given ({known})")
        elif name not in specs:
            problems.append(f"secrets.{name}: this model takes no such secret (it takes: {known})")
        elif plain(value) is None:
            problems.append(f"secrets.{name}: expected text, got {type(value).__name__}")
        elif not plain(value):
            problems.append(f"secrets.{name}: is empty")
    for name, spec in specs.items():
        if spec.required and name not in values and name not in saved:
            what = f" ({spec.description})" if spec.description else ""
            problems.append(f"secrets.{name}: required secret{what} is missing")
    return problems


async def _secret_type(client: PrefectClient) -> tuple[Any, Any]:
    block_type = await client.read_block_type_by_slug("secret")
    schema = await client.get_most_recent_block_schema_for_block_type(block_type.id)
    return block_type, schema


async def _find(client: PrefectClient, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_block_document_by_name(name, "secret", include_secrets=False)
    except ObjectNotFound:
        return None


async def existing(client: PrefectClient, names: list[str]) -> set[str]:
    """Which of the block ``names`` exist."""
    return {name for name in names if await _find(client, name) is not None}


async def store(client: PrefectClient, values: Mapping[str, str]) -> list[str]:
    """Write each value into the Secret block named by its key (replacing one there)."""
    from prefect.client.schemas.actions import BlockDocumentCreate, BlockDocumentUpdate

    block_type, schema = await _secret_type(client)
    written = []
    for name, value in values.items():
        found = await _find(client, name)
        if found is None:
            await client.create_block_document(
                BlockDocumentCreate(
                    name=name,
                    data={"value": value},
                    block_type_id=block_type.id,
                    block_schema_id=schema.id,
                )
            )
        else:
            await client.update_block_document(
                found.id, BlockDocumentUpdate(data={"value": value}, merge_existing_data=False)
            )
        written.append(name)
    return written


async def delete(client: PrefectClient, names: list[str]) -> int:
    """Delete the Secret blocks named (those already gone are skipped)."""
    from prefect.exceptions import ObjectNotFound

    deleted = 0
    for name in names:
        found = await _find(client, name)
        if found is None:
            continue
        try:
            await client.delete_block_document(found.id)
            deleted += 1
        except ObjectNotFound:
            pass
    return deleted


async def _blocks_named(client: PrefectClient, prefix: str) -> list[dict[str, Any]]:
    from accelerator_prefect.directory import read_named

    return await read_named(client, "block_documents", prefix, include_secrets=False)


async def forget(client: PrefectClient, user: str, model: str) -> int:
    """Delete every secret ``user`` asked to be remembered for ``model``."""
    prefix = _saved_prefix(user, model)
    return await delete(client, [b["name"] for b in await _blocks_named(client, prefix)])


async def sweep(client: PrefectClient, grace: timedelta = SWEEP_GRACE) -> int:
    """Delete per-run Secret blocks whose run has ended (or never started).

    Runs normally delete their own blocks when they end; this catches runs that
    crashed too hard to do so. Returns how many blocks were deleted.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    blocks = await _blocks_named(client, RUN_PREFIX)
    by_launch: dict[str, list[dict[str, Any]]] = {}
    for block in blocks:
        launch_id = str(block["name"])[len(RUN_PREFIX) :].split("-", 1)[0]
        by_launch.setdefault(launch_id, []).append(block)
    now = datetime.now(UTC)
    doomed: list[str] = []
    for launch_id, found in by_launch.items():
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[LAUNCH_TAG + launch_id])),
            limit=1,
        )
        if runs:
            ended = runs[0].state is not None and runs[0].state.is_final()
        else:
            created = min(datetime.fromisoformat(str(b["created"])) for b in found)
            ended = now - created > grace
        if ended:
            doomed += [str(b["name"]) for b in found]
    return await delete(client, doomed)


# -- inside a run ------------------------------------------------------------------------------

_VALUES: set[str] = set()


def _forms(value: str) -> set[str]:
    """``value`` as it may show up in text: itself, escaped as ``repr`` and JSON write
    it, and each line of a multi-line value (a PEM key, a JSON credential)."""
    import json

    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    forms |= {line.strip() for line in value.splitlines() if len(line.strip()) >= 8}
    return {f for f in forms if f}


def register(value: str) -> None:
    """Redact ``value`` from this process's logs and exceptions from now on."""
    if value and value not in _VALUES:
        _VALUES.update(_forms(value))
        _install_filter()


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    for value in sorted(_VALUES, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def _redact_any(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple):
        return tuple(_redact_any(v) for v in value)
    if isinstance(value, list):
        return [_redact_any(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_any(v) for k, v in value.items()}
    return value


class RedactSecrets(logging.Filter):
    """Replaces registered secret values in a log record, its arguments and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _VALUES:
            return True
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactSecrets()


_FACTORY_INSTALLED = False


def _install_filter() -> None:
    """Redact every log record as it is made (whatever handler later gets it), and
    put the filter on every handler there is, for records made before; redact raw writes
    to stdout and stderr (and so warnings), and artifacts."""
    global _FACTORY_INSTALLED
    if not _FACTORY_INSTALLED:
        make = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _install_streams()
        _install_artifact_redaction()
        _FACTORY_INSTALLED = True
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


class _RedactingStream:
    """``sys.stdout`` or ``sys.stderr`` with registered values masked in what is written
    to it (raw writes and warnings, which bypass logging)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: Any) -> Any:
        return self._stream.write(redact(text) if isinstance(text, str) else text)

    def writelines(self, lines: Any) -> None:
        self._stream.writelines(redact(x) if isinstance(x, str) else x for x in lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _install_streams() -> None:
    import sys

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _RedactingStream):
            setattr(sys, name, _RedactingStream(stream))


_ARTIFACT_FIELDS = ("key", "description", "data", "metadata_")


def _redacted_artifact(artifact: Any) -> Any:
    """An artifact to create or update with every registered value masked in its key,
    description, data and metadata (the event Prefect emits for it is made from it)."""
    if not _VALUES:
        return artifact
    changed = {}
    for name in _ARTIFACT_FIELDS:
        if name not in artifact.model_fields_set:
            continue
        value = getattr(artifact, name)
        masked = _redact_any(value)
        if name == "key" and isinstance(masked, str):
            masked = masked.replace(MASK, "redacted")  # keys allow lowercase and dashes only
        if masked != value:
            changed[name] = masked
    return artifact.model_copy(update=changed) if changed else artifact


def _install_artifact_redaction() -> None:
    """Mask registered values in every artifact this process creates or updates, through
    either of Prefect's clients."""
    from prefect.client.orchestration._artifacts import client as artifacts

    def redacted(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The call's arguments with its artifact (named ``artifact``, or the last one:
        ``create_artifact(artifact)``, ``update_artifact(artifact_id, artifact)``) redacted."""
        if "artifact" in kwargs:
            kwargs["artifact"] = _redacted_artifact(kwargs["artifact"])
            return args
        return (*args[:-1], _redacted_artifact(args[-1]))

    def redacting(original: Any) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return original(self, *redacted(args, kwargs), **kwargs)

        return method

    def redacting_async(original: Any) -> Any:
        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await original(self, *redacted(args, kwargs), **kwargs)

        return method

    for cls, wrap in (
        (artifacts.ArtifactClient, redacting),
        (artifacts.ArtifactAsyncClient, redacting_async),
    ):
        if getattr(cls, "_acc_redacting", False):
            continue
        cls.create_artifact = wrap(cls.create_artifact)
        cls.update_artifact = wrap(cls.update_artifact)
        cls._acc_redacting = True


def contains_secret(value: Any) -> bool:
    """Whether ``value`` holds a registered secret: in its text, or anywhere in its
    pickle (attributes included), as a persisted result or exception would."""
    if not _VALUES:
        return False
    import pickle

    try:
        text = f"{value!s} {value!r} {vars(value)!r}" if hasattr(value, "__dict__") else ""
        text = text or f"{value!s} {value!r}"
    except Exception:
        text = ""
    if any(secret in text for secret in _VALUES):
        return True
    try:
        blob = pickle.dumps(value)
    except Exception:
        return False
    return any(secret.encode() in blob for secret in _VALUES)


def _leaks(exc: BaseException) -> bool:
    notes = " ".join(getattr(exc, "__notes__", []))
    return any(value in notes for value in _VALUES) or contains_secret(exc)


def scrub(exc: BaseException) -> BaseException:
    """``exc`` with secret values removed from its message (and its causes').

    The exception is changed in place when its message comes from its
    arguments; otherwise a plain :class:`AcceleratorError` carrying the
    redacted message is returned to raise instead.
    """
    if not _VALUES:
        return exc
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        with contextlib.suppress(AttributeError, TypeError):
            current.args = _redact_any(current.args)
        for attribute in ("strerror", "filename", "filename2", "msg", "reason"):
            value = getattr(current, attribute, None)
            if isinstance(value, str):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(current, attribute, redact(value))
        if hasattr(current, "__notes__"):
            current.__notes__ = [redact(str(n)) for n in current.__notes__]
        current = current.__cause__ or current.__context__
    if not _leaks(exc):
        return exc
    from accelerator_prefect.errors import AcceleratorError

    return AcceleratorError(redact(f"{type(exc).__name__}: {exc}"))


async def delete_run_secrets(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook: delete this run's own Secret blocks once it reaches a final state."""
    from prefect.client.orchestration import get_client

    blocks = ((flow_run.parameters or {}).get("secrets") or {}).get("blocks") or {}
    names = [str(n) for n in blocks.values() if str(n).startswith(RUN_PREFIX)]
    if names:
        async with get_client() as client:
            await delete(client, names)
