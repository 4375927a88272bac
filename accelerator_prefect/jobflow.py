"""``@routine`` and ``@jobflow``: Prefect tasks and flows with hosting conventions.

A jobflow takes only the reserved parameters ``conf`` (a pydantic model: the
configuration schema users fill in), ``inputs``, ``output`` and ``secrets``;
each is optional. Prefect derives the deployment's parameter schema from this
signature, so the run form, the server and the launcher all agree.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field

from accelerator_prefect import storage
from accelerator_prefect.errors import AcceleratorError

F = TypeVar("F", bound=Callable[..., Any])
RESERVED = ("conf", "inputs", "output", "secrets")


class Conf(BaseModel):
    """Base for a jobflow's configuration: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class Inputs(BaseModel):
    """What the launcher selected: ``acc://`` files and folders, or cloud URLs."""

    model_config = ConfigDict(extra="forbid")

    selected_files: list[str] = Field(default_factory=list, description="Selected files.")
    selected_folders: list[str] = Field(default_factory=list, description="Selected folders.")

    @property
    def paths(self) -> list[str]:
        return [*self.selected_files, *self.selected_folders]

    def files(self) -> Iterator[str]:
        """Every selected file, with folders expanded, as ``acc://`` URIs."""
        yield from self.selected_files
        for folder in self.selected_folders:
            fs, root = storage.resolve(folder)
            for path in sorted(fs.find(root)):
                yield folder.rstrip("/") + "/" + path[len(root.rstrip("/")) + 1 :]


class Output(BaseModel):
    """Where the run writes its results; ``{run_id}`` is filled in at run time."""

    model_config = ConfigDict(extra="forbid")

    location: str = Field(description="An acc:// folder the run writes into.")

    @property
    def uri(self) -> str:
        if "{run_id}" not in self.location:
            return self.location.rstrip("/") + "/"
        from prefect.runtime import flow_run

        return self.location.replace("{run_id}", str(flow_run.id or "local")).rstrip("/") + "/"

    def path(self, name: str) -> str:
        """The ``acc://`` URI of ``name`` inside the output location."""
        return self.uri + name.lstrip("/")

    def open(self, name: str, mode: str = "wb", **kwargs: Any) -> IO[Any]:
        """Open ``name`` inside the output location (folders are created)."""
        return storage.open_uri(self.path(name), mode, **kwargs)


class Secrets(BaseModel):
    """Names of the Secret blocks holding this run's credentials (never the values)."""

    model_config = ConfigDict(extra="forbid")

    blocks: dict[str, str] = Field(default_factory=dict, description="Secret name -> block name.")

    def get(self, name: str) -> str:
        """The value of secret ``name``, read from its Prefect Secret block."""
        if name not in self.blocks:
            raise AcceleratorError(f"secrets.{name}: no such secret was supplied for this run")
        from prefect.blocks.system import Secret

        return str(Secret.load(self.blocks[name]).get())


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
    if fn is None:
        return lambda f: task(f, **options)
    return task(fn, **options)


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


@overload
def jobflow(fn: F, /) -> Any: ...
@overload
def jobflow(fn: None = None, /, **options: Any) -> Callable[[F], Any]: ...
def jobflow(fn: F | None = None, /, **options: Any) -> Any:
    """Mark a function as a jobflow: a hostable Prefect flow made of routines.

    Results are persisted and ``print`` goes to the run's logs unless told
    otherwise; every other ``prefect.flow`` option is kept.

    Example:
        >>> class Settings(Conf):
        ...     level: int = 1
        >>> @jobflow
        ... def double(conf: Settings) -> int:
        ...     return conf.level * 2
    """
    from prefect import flow

    options = {"persist_result": True, "log_prints": True, **options}

    def decorate(f: F) -> Any:
        _check_signature(f)
        return flow(f, **options)

    return decorate if fn is None else decorate(fn)
