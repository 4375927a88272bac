"""Runs of hosted models: the ``Run`` handle, run listings and the reads behind them, and
what each reader is shown of a run's logs and failure (:func:`audience_of`): operators see
everything; others see the model's own lines and words, without the platform's lines,
tracebacks (the model's owner sees those, without the server's folders) or server paths."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from accelerator_prefect.errors import NotFound, RunTimeout

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

    from accelerator_prefect.access import Principal
    from accelerator_prefect.client import Accelerator
    from accelerator_prefect.outputs import OutputFile
    from accelerator_prefect.provenance import Provenance


async def read_run(client: PrefectClient, run_id: UUID | str) -> FlowRun:
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_flow_run(UUID(str(run_id)))
    except (ObjectNotFound, ValueError):
        raise NotFound(f"run {run_id!r} not found") from None


@dataclass(frozen=True)
class RunSummary:
    """One run as a history lists it: who ran which version, when, and how it went."""

    id: str
    name: str
    model: str
    version: str
    user: str
    via: str
    state: str
    created: datetime | None
    started: datetime | None
    ended: datetime | None
    duration: float | None  # seconds computing, once ended
    # Asked for with ``phases`` (they cost a read of each run's states): seconds waiting
    # for a worker, and from its taking the run to the run's start.
    queued: float | None = None
    starting: float | None = None

    @classmethod
    def of(cls, flow_run: FlowRun) -> RunSummary:
        return RunInfo.of(flow_run, "").summary()


@dataclass(frozen=True)
class Phases:
    """Where a run's time went, in seconds: waiting for a worker (``queued``, from its
    launch or its scheduled start if later), being started by it (``starting``: the
    model's code and environment readied) and running (``computing``)."""

    queued: float | None
    starting: float | None
    computing: float | None

    @classmethod
    def of(cls, flow_run: FlowRun, states: list[Any]) -> Phases:
        def first(kind: str) -> datetime | None:
            moments = [s.timestamp for s in states if s.type.value == kind and s.timestamp]
            return min(moments) if moments else None

        pending, running = first("PENDING"), first("RUNNING") or flow_run.start_time
        since = max(
            (m for m in (flow_run.created, flow_run.expected_start_time) if m is not None),
            default=None,
        )
        queued = (pending - since).total_seconds() if pending and since else None
        starting = (running - pending).total_seconds() if running and pending else None
        computing = flow_run.total_run_time.total_seconds() if flow_run.end_time else None
        return cls(
            queued=max(0.0, queued) if queued is not None else None,
            starting=max(0.0, starting) if starting is not None else None,
            computing=computing,
        )


PHASE_READS = 16  # state reads at once


async def read_phases(client: PrefectClient, flow_runs: list[FlowRun]) -> list[Phases]:
    """The phases of each of ``flow_runs`` (one read of its states each, a few at once)."""
    gate = asyncio.Semaphore(PHASE_READS)

    async def one(flow_run: FlowRun) -> Phases:
        async with gate:
            states = await client.read_flow_run_states(flow_run.id)
        return Phases.of(flow_run, list(states))

    return list(await asyncio.gather(*(one(r) for r in flow_runs)))


@dataclass(frozen=True)
class RunInfo:
    """One run as its handle reads it, in-process or through the portal."""

    id: str
    name: str
    state: str
    state_type: str  # Prefect's state type: SCHEDULED, RUNNING, COMPLETED, FAILED …
    message: str | None
    created: datetime | None
    started: datetime | None
    ended: datetime | None
    duration: float | None  # seconds of running, once ended
    parameters: dict[str, Any]
    tags: dict[str, str]
    workspace: str

    @property
    def final(self) -> bool:
        return self.state_type in FINAL_TYPES

    @property
    def completed(self) -> bool:
        return self.state_type == "COMPLETED"

    @classmethod
    def of(cls, flow_run: FlowRun, workspace: str) -> RunInfo:
        state = flow_run.state
        return cls(
            id=str(flow_run.id),
            name=str(flow_run.name),
            state=state.name if state else "Unknown",
            state_type=state.type.value if state else "PENDING",
            message=state.message if state else None,
            created=flow_run.created,
            started=flow_run.start_time,
            ended=flow_run.end_time,
            duration=flow_run.total_run_time.total_seconds() if flow_run.end_time else None,
            parameters=dict(flow_run.parameters),
            tags=run_tags(flow_run),
            workspace=workspace,
        )

    def summary(self) -> RunSummary:
        return RunSummary(
            id=self.id,
            name=self.name,
            model=self.tags.get("model", ""),
            version=self.tags.get("version", ""),
            user=self.tags.get("user", ""),
            via=self.tags.get("via", ""),
            state=self.state,
            created=self.created,
            started=self.started,
            ended=self.ended,
            duration=self.duration,
        )


FINAL_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def run_tags(flow_run: FlowRun) -> dict[str, str]:
    """A run's hosting tags: ``acc:user:alice`` -> ``{"user": "alice"}``."""
    return {
        t.split(":", 2)[1]: t.split(":", 2)[2]
        for t in flow_run.tags
        if t.startswith("acc:") and t.count(":") >= 2
    }


@dataclass(frozen=True)
class RunQuery:
    """Which runs to list; every field is a filter the server applies."""

    model: str | None = None
    version: str | None = None
    user: str | None = None
    states: tuple[str, ...] = ()  # state names, e.g. ("Completed", "Failed")
    since: datetime | None = None  # expected to start at or after
    until: datetime | None = None  # expected to start before
    phases: bool = False  # also read how long each waited, started and computed

    def flow_run_filter(self, any_tags: list[str] | None) -> Any:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterExpectedStartTime,
            FlowRunFilterState,
            FlowRunFilterStateName,
            FlowRunFilterTags,
        )

        from accelerator_prefect.catalog import HOSTED_TAG, tag

        wanted = {"model": self.model, "version": self.version, "user": self.user}
        all_tags = [HOSTED_TAG, *(tag(kind, value) for kind, value in wanted.items() if value)]
        window = None
        if self.since or self.until:
            window = FlowRunFilterExpectedStartTime(after_=self.since, before_=self.until)
        state = None
        if self.states:
            state = FlowRunFilterState(name=FlowRunFilterStateName(any_=list(self.states)))
        return FlowRunFilter(
            tags=FlowRunFilterTags(all_=all_tags, any_=any_tags),
            expected_start_time=window,
            state=state,
        )


def readable_tags(principal: Principal) -> list[str] | None:
    """The run tags narrowing a listing to what ``principal`` may read (``None``: all)."""
    from accelerator_prefect.catalog import tag

    if principal.operator:
        return None
    if principal.guest:  # their own runs, never the other guests' of their link
        return [tag("user", principal.name)]
    return [tag("user", principal.name), tag("owner", principal.name)]


async def read_runs(
    client: PrefectClient, principal: Principal, query: RunQuery, *, limit: int = 200
) -> list[RunSummary]:
    """The runs of hosted models ``principal`` may read, newest first.

    The server narrows by the query and by tags (launched by them, of models
    they own, through their link); :func:`~accelerator_prefect.access.may_read_run`
    then decides.
    """
    from prefect.client.schemas.sorting import FlowRunSort

    from accelerator_prefect.access import may_read_run

    flow_runs = await client.read_flow_runs(
        flow_run_filter=query.flow_run_filter(readable_tags(principal)),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=limit,
    )
    readable = [
        r
        for r in flow_runs
        if may_read_run(
            principal,
            launched_by=run_tags(r).get("user"),
            model_owner=run_tags(r).get("owner"),  # of the version it ran
            link_id=run_tags(r).get("link"),
        )
    ]
    if not query.phases:
        return [RunSummary.of(r) for r in readable]
    phases = await read_phases(client, readable)
    return [
        replace(RunSummary.of(r), queued=p.queued, starting=p.starting)
        for r, p in zip(readable, phases, strict=True)
    ]


@dataclass(frozen=True)
class RoutineProgress:
    """How far a run's routines have got: ``done`` of ``total``, and how long runs of its
    version usually take.

    ``total`` is the number of routine calls the version's jobflow declares (counted
    at publish), or the routines started so far when more ran (a routine mapped over
    inputs): it never shrinks while the run goes on. Versions published without that
    count take what the last completed run of the version ran.
    ``usual_seconds``: the median time from launch to end of the version's recent
    completed runs, when there are enough of them (see
    :func:`~accelerator_prefect.usage.usual_seconds`).
    """

    done: int
    running: int
    failed: int
    started: int
    total: int
    usual_seconds: float | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


async def _task_states(client: PrefectClient, run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    states: list[str] = []
    offset, page = 0, 200  # the server's largest page
    while True:
        batch = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
            limit=page,
            offset=offset,
        )
        states += [t.state.type.value if t.state else "PENDING" for t in batch]
        if len(batch) < page:
            return states
        offset += page


async def read_progress(client: PrefectClient, run_id: UUID) -> RoutineProgress:
    """The routines of run ``run_id`` done, running and failed, of how many."""
    from accelerator_prefect.usage import usual_seconds

    states, flow_run = await asyncio.gather(_task_states(client, run_id), read_run(client, run_id))
    expected, usual = 0, None
    if flow_run.deployment_id is not None:
        declared, usual = await asyncio.gather(
            declared_routines(client, flow_run.deployment_id),
            usual_seconds(client, flow_run.deployment_id),
        )
        expected = declared or await _last_run_routines(client, run_id, flow_run.deployment_id)
    return RoutineProgress(
        done=states.count("COMPLETED"),
        running=states.count("RUNNING"),
        failed=sum(s in {"FAILED", "CRASHED"} for s in states),
        started=len(states),
        total=max(expected, len(states)),
        usual_seconds=usual,
    )


async def declared_routines(client: PrefectClient, deployment_id: UUID) -> int | None:
    """The routine calls the version's jobflow declares, as its record keeps them
    (``None`` for versions published before the count was recorded)."""
    from prefect.exceptions import ObjectNotFound

    from accelerator_prefect.validation import EXTENSION_KEY

    try:
        deployment = await client.read_deployment(deployment_id)
    except ObjectNotFound:
        return None
    record = (deployment.parameter_openapi_schema or {}).get(EXTENSION_KEY) or {}
    count = record.get("routines") if isinstance(record, dict) else None
    return count if isinstance(count, int) and count > 0 else None


async def _last_run_routines(client: PrefectClient, run_id: UUID, deployment_id: UUID) -> int:
    """The routines the version's last completed run ran (0 when it has none)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    earlier = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(not_any_=[run_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
        ),
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.END_TIME_DESC,
        limit=1,
    )
    return len(await _task_states(client, earlier[0].id)) if earlier else 0


async def wait_for(
    client: PrefectClient, run_id: UUID | str, timeout: float | None, poll: float = 0.5
) -> FlowRun:
    """The run once it reaches a final state; :class:`RunTimeout` after ``timeout`` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        flow_run = await read_run(client, run_id)
        if flow_run.state is not None and flow_run.state.is_final():
            return flow_run
        if deadline is not None and time.monotonic() >= deadline:
            state = flow_run.state.name if flow_run.state else "unknown"
            raise RunTimeout(f"run {run_id} is still {state} after {timeout:g} s")
        await asyncio.sleep(poll)


@dataclass(frozen=True)
class LogLine:
    """One log line of a run, with the logger that wrote it."""

    time: datetime
    level: int
    logger: str  # e.g. prefect.task_runs (a routine's), prefect.flow_runs.worker (the worker's)
    source: str  # the routine that logged (its task run name), or ``jobflow``
    task_run: UUID | None
    message: str

    def text(self, message: str | None = None) -> str:
        """``HH:MM:SS LEVEL source │ message``."""
        said = self.message if message is None else message
        level = logging.getLevelName(self.level)
        return f"{self.time:%H:%M:%S} {level:<7} {self.source} │ {said}"


async def read_logs(client: PrefectClient, run_id: UUID | str) -> list[LogLine]:
    """The run's log lines, oldest first, each with its logger and level.

    The source is the routine that logged (its task run name) or ``jobflow``.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    records = await _read_log_records(client, run_id)
    names: dict[UUID, str] = {}
    if any(r.task_run_id for r in records):
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(run_id))]))
        )
        names = {t.id: t.name for t in task_runs}
    return [
        LogLine(
            time=r.timestamp,
            level=r.level,
            logger=r.name,
            source=(names.get(r.task_run_id, "routine") if r.task_run_id else "jobflow"),
            task_run=r.task_run_id,
            message=r.message,
        )
        for r in records
    ]


Audience = Literal["operator", "owner", "reader"]
"""Who reads a run: an operator, the owner of the model version it ran, or anyone else
who may read it (its launcher, a guest holding a link)."""


def audience_of(principal: Principal, tags: dict[str, str]) -> Audience:
    """What ``principal`` is to a run with hosting ``tags`` (see :data:`Audience`)."""
    if principal.operator:
        return "operator"
    if not principal.guest and tags.get("owner") == principal.name:
        return "owner"
    return "reader"


# The lines a run's own code writes; other ``prefect.*`` loggers are the worker's, the
# runner's and the infrastructure's.
MODEL_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
PLATFORM_LOGGERS = ("prefect", "accelerator_prefect", "py.warnings", "httpx", "uvicorn")
BEGINNING = "Beginning flow run"
TRACEBACK = "Traceback (most recent call last):"
# An absolute path of the server: after a space, quote or bracket, never inside a URL.
# A path from the server's root: after a space, a quote or a colon ("PATH:/opt/…"), never
# inside a URL ("acc://a/b": its slashes follow ':' then '/', which cannot start a path).
_SERVER_PATH = re.compile(r"(?<![\w/.~@-])/(?:[^\s/\"'(),;]+/)+[^\s/\"'(),;:]*")
_FILE_URL = re.compile(r"\bfile://(?=/)")  # file:///srv/… is the path /srv/…
_CHECKOUT = re.compile(r"/code/[0-9a-f]{16}/[0-9a-f]{40}/")  # see accelerator_prefect.steps


def shown_logs(lines: list[LogLine], audience: Audience) -> list[str]:
    """The log lines ``audience`` is shown, as text (see :data:`Audience`).

    Operators see every line as written. Everyone else sees the jobflow's and the
    routines' own lines and the model's own loggers: not the worker's, the runner's or
    the infrastructure's, not the code checkout before the jobflow begins (only its
    errors, which say why the run could not start), not deprecation warnings; with the
    server's folders taken out of file names. Only the model's owner sees tracebacks.
    Lines are only ever added as a run goes on, so a stream can send the new ones by
    position.
    """
    if audience == "operator":
        return [line.text() for line in lines]
    shown, begun = [], False
    for line in lines:
        begun = begun or (line.logger == "prefect.flow_runs" and line.message.startswith(BEGINNING))
        if _platform_line(line, begun):
            continue
        shown.append(line.text(plain(line.message, audience)))
    return shown


def _platform_line(line: LogLine, begun: bool) -> bool:
    """Whether ``line`` is the platform's, not the model's."""
    if line.logger not in MODEL_LOGGERS:
        if line.logger.startswith("accelerator_prefect") and line.level >= logging.ERROR:
            return False  # ours, written for users: why the version's code or data is not there
        return line.logger.split(".", 1)[0] in PLATFORM_LOGGERS
    if line.task_run is None and not begun and line.level < logging.ERROR:
        return True  # preparing: the pull steps checking out the version's code and data
    if line.level == logging.WARNING and "deprecat" in line.message.lower():
        return True
    # Once the jobflow began, the engine's closing report repeats its exception with the
    # engine's frames; before, it is how a failed checkout of the code or data is told.
    return begun and line.message.startswith("Engine execution exited with unexpected exception")


def plain(text: str, audience: Audience) -> str:
    """``text`` as ``audience`` is shown it: operators as written; the model's owner with
    file names instead of server paths; anyone else also without tracebacks."""
    if audience == "operator":
        return text
    if audience == "reader" and TRACEBACK in text:
        text = _without_traceback(text)
    return _SERVER_PATH.sub(lambda m: short_path(m.group(0)), _FILE_URL.sub("", text))


_RAISED = re.compile(r"[A-Za-z_][\w.]*(?::|$)")  # "ValueError: …", as a traceback ends


def _without_traceback(text: str) -> str:
    """``text`` with its traceback replaced by the exception it ends with, unless the
    text says that already (Prefect's "Task run failed with exception: ValueError(…)")."""
    head, _, trace = text.partition(TRACEBACK)
    lines = trace.splitlines()
    last = next((i for i in reversed(range(len(lines))) if _RAISED.match(lines[i])), None)
    raised = "\n".join(lines[last:]).strip() if last is not None else ""
    words = model_words(raised) or ""
    head = head.rstrip()
    if not words or words in head:
        return head
    return f"{head}\n{raised}" if head else raised


def short_path(path: str) -> str:
    """A server path as a file name its reader knows: the model's files relative to its
    code, packages' relative to where they are installed, anything else by its name."""
    checkout = _CHECKOUT.search(path)
    if checkout:
        return path[checkout.end() :]
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    if "/accelerator_prefect/" in path:
        return "accelerator_prefect/" + path.rsplit("/accelerator_prefect/", 1)[1]
    return path.rstrip("/").rsplit("/", 1)[-1] or "/"


@dataclass(frozen=True)
class RunFailure:
    """Why a run failed, as its reader is shown it.

    ``message``: the model's own words (the exception the failing routine, or the
    jobflow, raised), without Prefect's framing; ``routine``: the routine that
    raised, if one did; ``details``: the traceback, for the model's owner (file
    names without the server's folders) and operators only, else ``None``.
    """

    message: str
    routine: str | None = None
    details: str | None = None


def model_words(message: str | None) -> str | None:
    """A state message without Prefect's framing: ``Flow run encountered an exception:
    ValueError: no model run …`` -> ``no model run …``."""
    if not message:
        return None
    text = message.strip()
    for framing in ("Flow run encountered an exception", "Task run encountered an exception"):
        if text.startswith(framing):
            text = text[len(framing) :].lstrip(": ").strip()
    kind, colon, rest = text.partition(": ")
    if colon and kind.replace(".", "").replace("_", "").isalnum() and kind[:1].isupper():
        text = rest  # "ValueError: no model run …" -> "no model run …"
    return text or None


CRASHED = "The run's process stopped before it finished; launch it again, or ask an operator."


async def read_failure(
    client: PrefectClient, flow_run: FlowRun, audience: Audience
) -> RunFailure | None:
    """Why ``flow_run`` failed, as ``audience`` is shown it; ``None`` unless it failed."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import TaskRunSort

    state = flow_run.state
    if state is None or state.type not in (StateType.FAILED, StateType.CRASHED):
        return None
    failed = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
        task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED]))
        ),
        sort=TaskRunSort.END_TIME_DESC,
        limit=1,
    )
    routine = failed[0] if failed else None
    said = model_words(routine.state.message if routine and routine.state else None)
    said = said or model_words(state.message)
    if state.type == StateType.CRASHED and audience != "operator":
        said = CRASHED
    details = None
    if audience != "reader":
        details = await _traceback(client, flow_run.id, routine.id if routine else None)
    return RunFailure(
        message=plain(said or "the run failed without saying why", audience),
        routine=re.sub(r"-[0-9a-f]{3}$", "", routine.name) if routine else None,
        details=plain(details, audience) if details else None,
    )


async def _traceback(client: PrefectClient, run_id: UUID, task_run: UUID | None) -> str | None:
    """The traceback the failing routine (else the jobflow) logged last."""
    records = await _read_log_records(client, run_id)
    found = [r for r in records if TRACEBACK in r.message and r.level >= logging.ERROR]
    mine = [r for r in found if task_run is not None and r.task_run_id == task_run]
    chosen = (mine or found)[-1:]
    if not chosen:
        return None
    message: str = chosen[0].message
    return TRACEBACK + message.split(TRACEBACK, 1)[1]


async def _read_log_records(client: PrefectClient, run_id: UUID | str) -> list[Any]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    records: list[Any] = []
    offset, page = 0, 200
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(str(run_id))]))
    while True:
        batch = await client.read_logs(
            log_filter=log_filter, limit=page, offset=offset, sort=LogSort.TIMESTAMP_ASC
        )
        records += batch
        if len(batch) < page:
            return records
        offset += page


async def wait_for_final_logs(client: PrefectClient, run_id: UUID, deadline: float = 10.0) -> None:
    """Wait (bounded) until the run's closing log line has reached the server.

    The engine sets the final state before its log handler flushes, so logs
    read at that moment can miss the last lines.
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        records = await _read_log_records(client, run_id)
        if any(
            r.task_run_id is None and r.message.startswith("Finished in state") for r in records
        ):
            return
        await asyncio.sleep(0.2)


async def read_result(client: PrefectClient, flow_run: FlowRun) -> Any:
    """The jobflow's return value, as JSON data (see :mod:`accelerator_prefect.results`)."""
    from accelerator_prefect.results import read_result as read

    return await read(client, flow_run)


class Run:
    """A handle on one run of a hosted model, in-process or through the portal alike.

    Example:
        >>> run = acc.launch("climate-downscaling", conf={...})  # doctest: +SKIP
        >>> run.wait(timeout=120)  # doctest: +SKIP
        'Completed'
    """

    def __init__(
        self, accelerator: Accelerator, run_id: UUID | str, workspace: str | None = None
    ) -> None:
        self._acc = accelerator
        self.id = UUID(str(run_id))
        self.workspace = (
            workspace or accelerator.api_url
        )  # where it runs (a Prefect API, or the portal)

    def __repr__(self) -> str:
        return f"Run({str(self.id)!r})"

    def _ask(self, method: str, *args: Any) -> Any:
        """``method`` of the client's service, for this run (checked there on every call)."""
        call = getattr(self._acc._core, method)
        return self._acc._run(call(str(self.id), *args, workspace=self.workspace))

    def info(self) -> RunInfo:
        """The run now: state, times, parameters, tags."""
        info: RunInfo = self._ask("run_info")
        return info

    @property
    def name(self) -> str:
        return self.info().name

    @property
    def state(self) -> str:
        """The run's current state name, e.g. ``Scheduled``, ``Running``, ``Completed``."""
        return self.info().state

    @property
    def url(self) -> str:
        """Where to look at the run: its page in the Prefect UI (in-process), or its
        resource in the portal."""
        return str(self._acc._core.run_url(str(self.id), self.workspace))

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends; return its final state name."""
        info: RunInfo = self._ask("wait_run", timeout)
        return info.state

    def cancel(self) -> str:
        """Cancel the run (its launcher, its model's owner, operators): it ends Cancelled,
        its secrets are deleted and partial outputs are marked incomplete. Returns the
        state it is in now (``Cancelling`` until its process has stopped)."""
        info: RunInfo = self._ask("cancel")
        return info.state

    def logs(self) -> list[str]:
        """The run's log lines so far, oldest first, as you may see them: operators every
        line; others the jobflow's and routines' own lines, tracebacks only for the
        model's owner, and no server paths."""
        lines: list[str] = self._ask("run_logs")
        return lines

    def failure(self) -> RunFailure | None:
        """Why the run failed, in the model's own words (``None`` unless it failed); its
        traceback in ``details`` for the model's owner and operators only."""
        failure: RunFailure | None = self._ask("run_failure")
        return failure

    def outputs(self) -> list[OutputFile]:
        """The files the run wrote so far (path, size, media type).

        Every file listed is complete; :attr:`outputs_complete` says whether the
        run finished writing them all.
        """
        files, _ = self._ask("run_outputs")
        return list(files)

    def open_output(self, path: str) -> Any:
        """Open one of the run's output files for reading, ``path`` as :meth:`outputs` lists it.

        Example:
            >>> with run.open_output("summary.csv") as f:  # doctest: +SKIP
            ...     print(f.read().decode())
        """
        return self._ask("open_output", path)

    @property
    def output_location(self) -> str | None:
        """The ``acc://`` folder the run writes into."""
        from accelerator_prefect.outputs import run_folder

        return run_folder(self.info().parameters, self.id)

    @property
    def outputs_complete(self) -> bool:
        """Whether the run completed and left no ``_INCOMPLETE.json`` marker."""
        _, complete = self._ask("run_outputs")
        return bool(complete)

    @property
    def outputs_expired(self) -> str | None:
        """When and why retention deleted the run's output files, if it did (its
        provenance is kept; a rerun makes them anew)."""
        expired: str | None = self._ask("run_outputs_expired")
        return expired

    def progress(self) -> RoutineProgress:
        """How many of the run's routines are done, of how many (see :class:`RoutineProgress`)."""
        progress: RoutineProgress = self._ask("run_progress")
        return progress

    @property
    def started(self) -> datetime | None:
        """When the run started running (``None`` while it waits)."""
        return self.info().started

    def summary(self) -> RunSummary:
        """The run as a history lists it: model, version, who, state, times."""
        return self.info().summary()

    @property
    def parameters(self) -> dict[str, Any]:
        """What the run was launched with: conf, inputs, output (secrets only by block name)."""
        return dict(self.info().parameters)

    def result(self) -> Any:
        """The jobflow's return value, as JSON data (raises if the run did not complete)."""
        return self._ask("run_result")

    def provenance(self) -> Provenance:
        """What the run ran on: model, version, code commit, DVC data, conf, inputs and
        outputs with their hashes, packages, worker and times.

        Read from the run's provenance artifact in Prefect, which end users cannot
        change (``provenance.json`` beside the outputs is a copy for them to keep);
        :class:`NotFound` until the run has ended.
        """
        provenance: Provenance = self._ask("run_provenance")
        return provenance


async def runs_by_id(client: PrefectClient, run_ids: Iterable[str]) -> list[FlowRun]:
    """The runs on ``client``'s server among ``run_ids`` (ids of no run are left out)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = sorted({UUID(i) for i in run_ids})
    if not ids:
        return []
    found: list[FlowRun] = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
    )
    return found


async def hidden_runs(client: PrefectClient, principal: Principal, run_ids: list[str]) -> set[str]:
    """Of ``run_ids``, those of runs on ``client``'s server that ``principal`` may not read
    (see :func:`~accelerator_prefect.access.may_read_run`)."""
    found = await named_runs(client, principal, run_ids)
    return {run_id for run_id, hidden in found.items() if hidden}


async def named_runs(
    client: PrefectClient, principal: Principal, run_ids: list[str]
) -> dict[str, bool]:
    """Of ``run_ids``, those of runs on ``client``'s server, each with whether
    ``principal`` may not read it (ids of no run are left out)."""
    runs = await runs_by_id(client, run_ids)
    return {str(r.id): not (principal.operator or may_read_flow_run(principal, r)) for r in runs}


def may_read_flow_run(principal: Principal, flow_run: FlowRun) -> bool:
    """:func:`~accelerator_prefect.access.may_read_run` for a flow run, from its tags (its
    launcher, its link, and the owner of the version it ran, copied from its deployment)."""
    from accelerator_prefect.access import may_read_run

    tags = run_tags(flow_run)
    return may_read_run(
        principal,
        launched_by=tags.get("user"),
        model_owner=tags.get("owner"),
        link_id=tags.get("link"),
    )


async def read_provenance(client: PrefectClient, run_id: UUID) -> Provenance:
    """The provenance a run recorded as its artifact."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    from accelerator_prefect.provenance import Provenance

    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])),
        sort=ArtifactSort.CREATED_DESC,  # the last attempt's record
    )
    for artifact in artifacts:
        if (artifact.key or "").endswith("-provenance") and isinstance(artifact.data, str):
            return Provenance.from_markdown(artifact.data)
    raise NotFound(f"run {run_id} has no provenance yet: it is recorded when the run ends")
