"""Runs of hosted models: the ``Run`` handle, run listings and the reads behind them."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
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
    duration: float | None  # seconds, once ended

    @classmethod
    def of(cls, flow_run: FlowRun) -> RunSummary:
        return RunInfo.of(flow_run, "").summary()


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
    if principal.guest:
        return [tag("link", g.link_id) for g in principal.links]
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
    return [
        RunSummary.of(r)
        for r in flow_runs
        if may_read_run(
            principal,
            launched_by=run_tags(r).get("user"),
            model_owner=run_tags(r).get("owner"),  # of the version it ran
            link_id=run_tags(r).get("link"),
        )
    ]


@dataclass(frozen=True)
class RoutineProgress:
    """How far a run's routines have got: ``done`` of ``total``.

    ``total`` is what the last completed run of the same version ran (a jobflow
    of fixed shape runs as many again), or the routines started so far when that
    is more, or when the version has no completed run yet.
    """

    done: int
    running: int
    failed: int
    started: int
    total: int

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

    states = await _task_states(client, run_id)
    flow_run = await read_run(client, run_id)
    expected = 0
    if flow_run.deployment_id is not None:
        earlier = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(not_any_=[run_id]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
            ),
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[flow_run.deployment_id])
            ),
            sort=FlowRunSort.END_TIME_DESC,
            limit=1,
        )
        if earlier:
            expected = len(await _task_states(client, earlier[0].id))
    done = states.count("COMPLETED")
    return RoutineProgress(
        done=done,
        running=states.count("RUNNING"),
        failed=sum(s in {"FAILED", "CRASHED"} for s in states),
        started=len(states),
        total=max(expected, len(states)),
    )


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


async def read_logs(client: PrefectClient, run_id: UUID | str) -> list[str]:
    """The run's log lines, oldest first, as ``HH:MM:SS LEVEL source │ message``.

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
        f"{r.timestamp:%H:%M:%S} {logging.getLevelName(r.level):<7} "
        f"{names.get(r.task_run_id, 'routine') if r.task_run_id else 'jobflow'} │ {r.message}"
        for r in records
    ]


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
        """The run's log lines so far, oldest first."""
        lines: list[str] = self._ask("run_logs")
        return lines

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
