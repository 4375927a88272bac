"""``@routine`` and ``@jobflow``: Prefect tasks and flows with hosting conventions.

A jobflow takes only the reserved parameters ``conf`` (a pydantic model: the
configuration schema users fill in), ``inputs``, ``output`` and ``secrets``;
each is optional. Prefect derives the deployment's parameter schema from this
signature, so the run form, the server and the launcher all agree.
:func:`declared_routines` counts the routine calls a jobflow's source declares, read
without running it, so a run's page knows from the start how many routines it has.
"""

from __future__ import annotations

import ast
import functools
import inspect
import typing
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field

from accelerator_prefect.errors import AcceleratorError

if TYPE_CHECKING:
    from accelerator_prefect.mapping import InputFile

F = TypeVar("F", bound=Callable[..., Any])
RESERVED = ("conf", "inputs", "output", "secrets")


class Conf(BaseModel):
    """Base for a jobflow's configuration: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class Inputs(BaseModel):
    """What the launcher selected: ``acc://`` files and folders, or cloud URLs.

    Example:
        >>> @routine
        ... def count_rows(inputs: Inputs) -> int:
        ...     return sum(len(f.read_text().splitlines()) for f in inputs.files())
    """

    model_config = ConfigDict(extra="forbid")

    selected_files: list[str] = Field(default_factory=list, description="Selected files.")
    selected_folders: list[str] = Field(default_factory=list, description="Selected folders.")
    accepted_types: list[str] = Field(
        default_factory=list, description="Set from the model's input mapping at launch."
    )

    @property
    def paths(self) -> list[str]:
        """The selected URIs, files first, as the launcher gave them."""
        return [*self.selected_files, *self.selected_folders]

    def files(self) -> list[InputFile]:
        """Every selected file, folders expanded and filtered by the accepted types."""
        from accelerator_prefect.mapping import expand

        return expand(self.selected_files, self.selected_folders, self.accepted_types)


class Output(BaseModel):
    """Where the run writes its results; ``{run_id}`` is filled in at run time.

    Every file is written atomically: it appears under its name only once
    complete, so a run that fails never leaves a half-written file behind.

    Example:
        >>> with output.open("summary.csv", "w") as f:  # doctest: +SKIP
        ...     f.write("region,tas\\n")
        >>> frame.to_parquet(output.path("table.parquet"))  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid")

    location: str = Field(description="An acc:// folder the run writes into.")

    @property
    def uri(self) -> str:
        """The output folder of this run, ending with ``/``."""
        if "{run_id}" not in self.location:
            return self.location.rstrip("/") + "/"
        from prefect.runtime import flow_run

        return self.location.replace("{run_id}", str(flow_run.id or "local")).rstrip("/") + "/"

    def path(self, name: str) -> str:
        """The ``acc://`` URI of ``name`` inside the output location."""
        return self.uri + name.lstrip("/")

    def open(self, name: str, mode: str = "wb", **kwargs: Any) -> IO[Any]:
        """Open ``name`` inside the output location (folders are created)."""
        from accelerator_prefect.storage import Storage

        return Storage().open(self.path(name), mode, **kwargs)  # type: ignore[no-any-return]


class Secrets(BaseModel):
    """Names of the Secret blocks holding this run's credentials (never the values).

    Every value read is redacted from the run's logs and error messages.

    Example:
        >>> @routine
        ... def fetch(secrets: Secrets) -> None:
        ...     key = secrets.get("API_KEY")  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid")

    blocks: dict[str, str] = Field(default_factory=dict, description="Secret name -> block name.")

    def get(self, name: str) -> str:
        """The value of secret ``name``, read from its Prefect Secret block."""
        if name not in self.blocks:
            raise AcceleratorError(f"secrets.{name}: no such secret was supplied for this run")
        from prefect.blocks.system import Secret

        from accelerator_prefect import secrets

        value = str(Secret.load(self.blocks[name]).get())
        secrets.register(value)
        return value

    def load_all(self) -> None:
        """Read every value once, so each is redacted before any routine runs."""
        for name in self.blocks:
            self.get(name)


@overload
def routine(fn: F, /) -> Any: ...
@overload
def routine(fn: None = None, /, **options: Any) -> Callable[[F], Any]: ...
def routine(fn: F | None = None, /, **options: Any) -> Any:
    """Mark a function as a routine: one step of a jobflow (a Prefect task).

    Every ``prefect.task`` option is kept: ``retries``, ``retry_delay_seconds``,
    ``timeout_seconds``, ``cache_policy``, ``name``, ``tags`` … A routine's
    return value is handed to the next routine in memory and not persisted
    (hosted results go to the run's output location), unless a
    ``cache_policy`` or ``persist_result`` asks for it.

    Example:
        >>> @routine(retries=2, retry_delay_seconds=1)
        ... def preprocess(x: int) -> int:
        ...     return x + 1
    """
    from prefect import task

    if "cache_policy" not in options:
        options.setdefault("persist_result", False)
    if options.get("persist_result", True) and "result_serializer" not in options:
        from prefect.results import get_default_result_serializer

        # A task inherits its flow's serializer: a cached routine would be held to the
        # jobflow's JSON. Its results stay inside the worker, so keep Prefect's default.
        options["result_serializer"] = get_default_result_serializer()
    if fn is None:
        return lambda f: task(_scrubbing(f), **options)
    return task(_scrubbing(fn), **options)


class _Scrubbed:
    """Re-raises an exception leaving its block with secret values taken out of it."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        from accelerator_prefect.secrets import scrub

        if exc is not None and (clean := scrub(exc)) is not exc:
            raise clean from None


def _scrubbing(fn: F) -> F:
    """``fn``, with secret values taken out of any exception it raises (before Prefect
    turns the exception into a state message and a log line), whether it is a plain,
    async, generator or async generator function."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with _Scrubbed():
                return await fn(*args, **kwargs)

        return _with_signature(run_async, fn)  # type: ignore[no-any-return]

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def run_async_gen(*args: Any, **kwargs: Any) -> Any:
            with _Scrubbed():
                async for item in fn(*args, **kwargs):
                    yield item

        return _with_signature(run_async_gen, fn)  # type: ignore[no-any-return]

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def run_gen(*args: Any, **kwargs: Any) -> Any:
            with _Scrubbed():
                return (yield from fn(*args, **kwargs))

        return _with_signature(run_gen, fn)  # type: ignore[no-any-return]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _Scrubbed():
            return fn(*args, **kwargs)

    return _with_signature(run, fn)  # type: ignore[no-any-return]


def _check_signature(fn: Callable[..., Any]) -> None:
    signature = inspect.signature(fn)
    others = [name for name in signature.parameters if name not in RESERVED]
    if others:
        raise AcceleratorError(
            f"jobflow {fn.__name__}: parameter(s) {', '.join(others)} are not allowed; "
            f"a jobflow takes only {', '.join(RESERVED)} (put settings in the conf model)"
        )
    conf = signature.parameters.get("conf")
    if conf is not None:
        try:
            annotation = typing.get_type_hints(fn).get("conf", conf.annotation)
        except NameError:
            annotation = conf.annotation
        if isinstance(annotation, str):
            return  # a forward reference Prefect resolves later; nothing to check here
        if not (inspect.isclass(annotation) and issubclass(annotation, BaseModel)):
            raise AcceleratorError(
                f"jobflow {fn.__name__}: conf must be annotated with a pydantic model, "
                f"got {annotation!r}"
            )


def _reporting_outputs(fn: F) -> F:
    """``fn``, reporting what it wrote: a table artifact and the run's provenance when
    it succeeds; a ``_INCOMPLETE.json`` marker beside the partial outputs, and the
    provenance, when it fails."""
    from accelerator_prefect import outputs, provenance
    from accelerator_prefect.results import to_json_data
    from accelerator_prefect.secrets import scrub

    signature = inspect.signature(fn)

    def prepare(args: Any, kwargs: Any) -> tuple[dict[str, Any], Output | None]:
        """Read the run's secrets (so they are redacted from the start); find its output."""
        arguments = signature.bind_partial(*args, **kwargs).arguments
        if isinstance(arguments.get("secrets"), Secrets):
            arguments["secrets"].load_all()
        value = arguments.get("output")
        return arguments, value if isinstance(value, Output) else None

    def failed(arguments: dict[str, Any], output: Output | None, exc: BaseException) -> NoReturn:
        outputs.mark_incomplete(output, exc)
        if isinstance(exc, Exception):  # not when the process is being stopped
            provenance.record(fn, arguments, "Failed")
        clean = scrub(exc)
        if clean is exc:
            raise exc
        raise clean from None

    def succeeded(arguments: dict[str, Any], output: Output | None, result: Any) -> Any:
        outputs.report(output)
        provenance.record(fn, arguments, "Completed")
        return result

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            arguments, output = prepare(args, kwargs)
            try:
                result = await fn(*args, **kwargs)
                to_json_data(result)  # refused here, the run fails (Prefect would only warn)
                _no_secret_in(result)
            except BaseException as exc:
                failed(arguments, output, exc)
            return succeeded(arguments, output, result)

        return _with_signature(run_async, fn)  # type: ignore[no-any-return]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        arguments, output = prepare(args, kwargs)
        try:
            result = fn(*args, **kwargs)
            to_json_data(result)  # refused here, the run fails (Prefect would only warn)
            _no_secret_in(result)
        except BaseException as exc:
            failed(arguments, output, exc)
        return succeeded(arguments, output, result)

    return _with_signature(run, fn)  # type: ignore[no-any-return]


def _no_secret_in(result: Any) -> None:
    """Refuse the jobflow's return value if it carries a secret (it would be persisted
    and shown to whoever reads the run)."""
    from accelerator_prefect.secrets import contains_secret

    if contains_secret(result):
        raise AcceleratorError(
            "the jobflow returned a value holding one of its secrets; return results "
            "without credentials"
        )


def _with_signature(wrapper: Callable[..., Any], fn: Callable[..., Any]) -> Any:
    """Give ``wrapper`` the signature of ``fn`` with its annotations evaluated.

    Prefect resolves string annotations in the namespace of the function it
    calls; the wrapper lives here, not in the author's module, so it carries
    the evaluated types instead.
    """
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError:
        return wrapper
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
        ],
        return_annotation=hints.get("return", signature.return_annotation),
    )
    return wrapper


@overload
def jobflow(fn: F, /) -> Any: ...
@overload
def jobflow(fn: None = None, /, **options: Any) -> Callable[[F], Any]: ...
def jobflow(fn: F | None = None, /, **options: Any) -> Any:
    """Mark a function as a jobflow: a hostable Prefect flow made of routines.

    Its return value is persisted as JSON (:mod:`accelerator_prefect.results`):
    return numbers, text, lists, dicts or pydantic models, and write anything
    else to the output folder; a run returning something else fails, saying
    where in the value. ``print`` goes to the run's logs unless told otherwise;
    every other ``prefect.flow`` option is kept, except ``result_serializer``.

    Example:
        >>> class Settings(Conf):
        ...     level: int = 1
        >>> @jobflow
        ... def double(conf: Settings) -> int:
        ...     return conf.level * 2
    """
    from prefect import flow

    from accelerator_prefect.results import is_json_serializer, json_serializer

    options = {"persist_result": True, "log_prints": True, **options}

    def decorate(f: F) -> Any:
        _check_signature(f)
        chosen = options.get("result_serializer")
        if chosen is not None and not is_json_serializer(chosen):
            raise AcceleratorError(
                f"jobflow {f.__name__}: result_serializer={chosen!r} is not allowed; a "
                "jobflow's result is stored as JSON, so that users read it as data (return "
                "numbers, text, lists and dicts; write anything else to the output folder)"
            )
        hooks = {**options, "result_serializer": json_serializer()}
        if "secrets" in inspect.signature(f).parameters:
            from accelerator_prefect.secrets import delete_run_secrets

            # The run's own Secret blocks go once it ends, however it ends.
            for kind in ("on_completion", "on_failure", "on_cancellation", "on_crashed"):
                hooks[kind] = [*(hooks.get(kind) or []), delete_run_secrets]
        return flow(_reporting_outputs(f), **hooks)

    return decorate if fn is None else decorate(fn)


ROUTINE_DECORATORS = {"routine", "task"}  # ours, and Prefect's own


def declared_routines(source: str, function: str) -> int | None:
    """How many routine calls the jobflow ``function`` makes in ``source`` (its module's
    text), read without running it; ``None`` when none is found (or it cannot be read).

    A routine is a function of the same module decorated ``@routine`` or ``@task``; a call
    is ``r(…)``, ``r.submit(…)``, ``r.map(…)`` or ``r.with_options(…)(…)``. A call inside
    a loop, or a mapped routine, may run more often than that, never less.

    Example:
        >>> text = "@routine\\ndef a(): ...\\n@jobflow\\ndef f():\\n    a(); a.submit()"
        >>> declared_routines(text, "f")
        2
    """
    try:
        module = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    routines = {
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(_decorator_name(d) in ROUTINE_DECORATORS for d in node.decorator_list)
    }
    flow = next(
        (
            node
            for node in module.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
        ),
        None,
    )
    if flow is None or not routines:
        return None
    count = sum(_calls_routine(node, routines) for node in ast.walk(flow))
    return count or None


def _decorator_name(node: ast.expr) -> str | None:
    """``routine`` for ``@routine``, ``@routine(...)`` and ``@accelerator_prefect.routine``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _calls_routine(node: ast.AST, routines: set[str]) -> bool:
    if not isinstance(node, ast.Call):
        return False
    called = node.func
    if isinstance(called, ast.Call):  # r.with_options(...)(...)
        inner = called.func
        return (
            isinstance(inner, ast.Attribute)
            and inner.attr == "with_options"
            and isinstance(inner.value, ast.Name)
            and inner.value.id in routines
        )
    if isinstance(called, ast.Attribute):
        return (
            called.attr in ("submit", "map")
            and isinstance(called.value, ast.Name)
            and called.value.id in routines
        )
    return isinstance(called, ast.Name) and called.id in routines
