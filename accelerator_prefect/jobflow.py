"""``@routine`` and ``@jobflow``: Prefect tasks and flows with hosting conventions.

A jobflow takes only the reserved parameters ``conf`` (a pydantic model: the
configuration schema users fill in), ``inputs``, ``output`` and ``secrets``;
each is optional. Prefect derives the deployment's parameter schema from this
signature, so the run form, the server and the launcher all agree.
:func:`declared_routines` counts the routine calls a jobflow's source declares, read
without running it, so a run's page knows from the start how many routines it has.

A manifest's ``task_runner: dask`` reaches the run as ``ACC_TASK_RUNNER`` in its
environment (put there by publishing); a jobflow imported in such a run fans its routines
out on a local Dask cluster of its own (:func:`chosen_task_runner`). Dask is imported only
then.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import os
import typing
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field

from accelerator_prefect.errors import AcceleratorError

if TYPE_CHECKING:
    from accelerator_prefect.mapping import InputFile

F = TypeVar("F", bound=Callable[..., Any])
RESERVED = ("conf", "inputs", "output", "secrets")

TASK_RUNNER_VARIABLE = "ACC_TASK_RUNNER"
"""The run's task runner, the manifest's ``task_runner`` as JSON ``{kind, options}``: in
the run's environment when the manifest chooses one (publishing's job variables)."""
DASK_MISSING = (
    "task_runner: dask needs prefect-dask in the model's environment: add prefect-dask to "
    "its requirements (or install accelerator-prefect[dask])"
)


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
        _SECRETS_KNOWN.add(_this_run())


_SECRETS_KNOWN: set[str | None] = set()
"""The runs whose secret values this process knows (and so redacts)."""


def _this_run() -> str | None:
    """The id of the flow run this process works for (in a Dask worker too: Prefect gives
    each routine its run's context), ``None`` outside one."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


def _know_run_secrets() -> None:
    """In a process of the run's other than the jobflow's (a Dask worker running a
    routine), read the run's secret values once, so that they are redacted from this
    process's logs and exceptions too: a routine may be handed a value the jobflow read."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    run = str(context.flow_run.id)
    if run in _SECRETS_KNOWN:
        return
    given = (context.flow_run.parameters or {}).get("secrets")
    if isinstance(given, Secrets):
        given = given.model_dump()
    if isinstance(given, dict) and given.get("blocks"):
        Secrets.model_validate(given).load_all()
    _SECRETS_KNOWN.add(run)


async def _know_run_secrets_async() -> None:
    """:func:`_know_run_secrets` from a coroutine (Prefect's block reads are synchronous
    only outside an event loop)."""
    if _this_run() in _SECRETS_KNOWN:
        return
    import asyncio

    await asyncio.to_thread(_know_run_secrets)


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
                await _know_run_secrets_async()
                return await fn(*args, **kwargs)

        return _with_signature(run_async, fn)  # type: ignore[no-any-return]

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def run_async_gen(*args: Any, **kwargs: Any) -> Any:
            with _Scrubbed():
                await _know_run_secrets_async()
                async for item in fn(*args, **kwargs):
                    yield item

        return _with_signature(run_async_gen, fn)  # type: ignore[no-any-return]

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def run_gen(*args: Any, **kwargs: Any) -> Any:
            with _Scrubbed():
                _know_run_secrets()
                return (yield from fn(*args, **kwargs))

        return _with_signature(run_gen, fn)  # type: ignore[no-any-return]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _Scrubbed():
            _know_run_secrets()
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


def _reporting_outputs(fn: F, refused: AcceleratorError | None = None) -> F:
    """``fn``, reporting what it wrote: a table artifact and the run's provenance when
    it succeeds; a ``_INCOMPLETE.json`` marker beside the partial outputs, and the
    provenance, when it fails. With ``refused``, the run fails at its start with it (what
    the run needs is missing)."""
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
                if refused is not None:
                    raise refused
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
            if refused is not None:
                raise refused
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
        refused = None
        try:
            runner = chosen_task_runner()
        except AcceleratorError as exc:
            runner, refused = None, exc  # the run fails saying so, rather than not loading
        if runner is not None:
            hooks["task_runner"] = runner  # the manifest's choice, over the code's
        return flow(_reporting_outputs(f, refused), **hooks)

    return decorate if fn is None else decorate(fn)


def chosen_task_runner(environment: typing.Mapping[str, str] | None = None) -> Any:
    """The task runner the run's manifest chose (``ACC_TASK_RUNNER`` in ``environment``,
    the process's own by default): ``None`` for Prefect's own (threads), else a
    ``DaskTaskRunner`` starting a local cluster for the run (:func:`dask_cluster_options`):
    in a warm run, its workers forked from the run's forker
    (:class:`~accelerator_prefect.daskfork.ForkedCluster`), else spawned (``LocalCluster``).

    Read when the jobflow is decorated, which in a run is when its module is imported:
    after the worker gave the process the run's environment (the warm worker's child, a
    process worker's fresh Python, or a model environment's interpreter alike).

    Raises :class:`AcceleratorError` when the choice cannot be read or prefect-dask is
    not installed.

    Example:
        >>> chosen_task_runner({}) is None
        True
    """
    given = (os.environ if environment is None else environment).get(TASK_RUNNER_VARIABLE)
    if not given:
        return None
    try:
        chosen = json.loads(given)
        kind, options = chosen.get("kind", "threads"), dict(chosen.get("options") or {})
    except (ValueError, AttributeError, TypeError):
        raise AcceleratorError(
            f"task_runner: {TASK_RUNNER_VARIABLE} is not the JSON publishing writes "
            '(e.g. {"kind": "dask", "options": {}}); publish the version again'
        ) from None
    if kind == "threads":
        return None
    if kind != "dask":
        raise AcceleratorError(f"task_runner.kind: {kind!r} is not one of threads, dask")
    try:
        from prefect_dask.task_runners import DaskTaskRunner
    except ImportError:
        raise AcceleratorError(DASK_MISSING) from None
    _serializer_by_reference()
    cluster = dask_cluster_options(options)
    if environment is None and _forks_dask_workers(cluster):
        from accelerator_prefect.daskfork import ForkedCluster

        return DaskTaskRunner(cluster_class=ForkedCluster, cluster_kwargs=cluster)
    return DaskTaskRunner(cluster_kwargs=cluster)


def _forks_dask_workers(cluster: typing.Mapping[str, Any]) -> bool:
    """Whether this process's run starts its Dask workers by forking them from its forker
    (:mod:`accelerator_prefect.daskfork`: a warm run that chose Dask has one), rather than
    spawning fresh Pythons (``LocalCluster``): where it has one and ``cluster`` asks for
    nothing a forked worker cannot honour."""
    from accelerator_prefect.zygote import dask_forker

    if dask_forker() is None:
        return False
    from accelerator_prefect.daskfork import forkable

    return forkable(cluster)


def _serializer_by_reference() -> None:
    """Send the jobflow's JSON result serializer to Dask's processes as a call to
    :func:`~accelerator_prefect.results.json_serializer`, not as its class: the class is
    made in a function, so cloudpickle would rebuild it field by field, and Prefect's
    registry of serializer types refuses a class without its type yet. (Each routine
    runs in a Dask worker with the jobflow in its context.)"""
    import copyreg

    from accelerator_prefect.results import _serializer_class, json_serializer

    copyreg.pickle(_serializer_class(), lambda _: (json_serializer, ()))


def dask_cluster_options(options: typing.Mapping[str, Any]) -> dict[str, Any]:
    """The local Dask cluster's options for a run: the manifest's ``options`` over these
    defaults, made for routines that compute in Python (and hold the GIL while they do):

    - ``processes: true``, ``threads_per_worker: 1``: a worker process per routine at a
      time, each with its own interpreter;
    - ``n_workers``: as many as the CPUs this process may use;
    - ``dashboard_address: null``: no dashboard served (nobody could reach it safely);
    - ``local_directory``: the run's temporary folder (its scratch, which the warm
      worker's confinement allows and removes when the run ends);
    - ``security: true``: the scheduler and workers speak TLS with credentials made for
      this cluster, so that another process on the machine cannot submit work to the
      run's workers (which act with the run's token).

    Example:
        >>> dask_cluster_options({"n_workers": 2})["threads_per_worker"]
        1
    """
    import tempfile

    defaults: dict[str, Any] = {
        "processes": True,
        "n_workers": len(os.sched_getaffinity(0)),
        "threads_per_worker": 1,
        "dashboard_address": None,
        "local_directory": tempfile.gettempdir(),
        "security": True,
    }
    return {**defaults, **options}


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
