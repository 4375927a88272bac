"""How a hosted model has been used: runs per version and per day, and how long a
version's runs usually take (what a waiting run's page says).

The server does the selecting: only the model's finished runs in the window
come back (tag, state-type and time filters), paged; nothing else is read.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

    from accelerator_prefect.runs import Phases

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
USUAL_RUNS = 20  # the recent completed runs a usual duration is taken from
USUAL_MIN_RUNS = 3  # fewer say too little to tell anyone how long to wait
USUAL_TTL_S = 20.0  # every page watching a run asks every second or two


@dataclass(frozen=True)
class UsageRow:
    """One version of a model on one day (UTC)."""

    version: str
    day: date
    runs: int  # finished runs
    users: int  # distinct users who launched them
    completed: int
    success_rate: float  # completed / runs
    median_seconds: float | None  # computing, of completed runs
    p95_seconds: float | None
    # Of the same runs (the newest PHASED_RUNS of the query): waiting for a worker, being
    # started by it, and from launch to end, all told (what the launcher waited).
    median_queued_seconds: float | None = None
    median_starting_seconds: float | None = None
    median_total_seconds: float | None = None


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


PHASED_RUNS = 500
"""How many of a usage query's newest completed runs have their phases read (one read of
each run's states)."""


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(flow_runs: list[FlowRun], phases: dict[Any, Phases] | None = None) -> list[UsageRow]:
    """Rows per (version, day), newest version and day first; ``phases`` by run id."""
    from accelerator_prefect.runs import run_tags

    phases = phases or {}

    groups: dict[tuple[str, date], list[FlowRun]] = {}
    for flow_run in flow_runs:
        when = flow_run.expected_start_time or flow_run.created
        if when is None:
            continue
        version = run_tags(flow_run).get("version", "")
        groups.setdefault((version, when.date()), []).append(flow_run)
    rows = []
    for (version, day), runs in groups.items():
        completed = [r for r in runs if r.state is not None and r.state.is_completed()]
        durations = [r.total_run_time.total_seconds() for r in completed]
        rows.append(
            UsageRow(
                version=version,
                day=day,
                runs=len(runs),
                users=len({run_tags(r).get("user") for r in runs}),
                completed=len(completed),
                success_rate=len(completed) / len(runs),
                median_seconds=statistics.median(durations) if durations else None,
                p95_seconds=percentile(durations, 0.95),
                median_queued_seconds=_median(
                    [phases[r.id].queued for r in completed if r.id in phases]
                ),
                median_starting_seconds=_median(
                    [phases[r.id].starting for r in completed if r.id in phases]
                ),
                median_total_seconds=_median(
                    [
                        (r.end_time - (r.created or r.end_time)).total_seconds()
                        for r in completed
                        if r.end_time is not None
                    ]
                ),
            )
        )
    return sorted(rows, key=lambda r: (_version_key(r.version), r.day), reverse=True)


def _version_key(version: str) -> Any:
    import semver

    try:
        return semver.Version.parse(version)
    except ValueError:
        return semver.Version(0)


async def read_usage(
    client: PrefectClient, model: str, since: datetime, until: datetime | None
) -> list[UsageRow]:
    """``model``'s usage rows, with the phases of its newest completed runs."""
    from accelerator_prefect.runs import read_phases

    flow_runs = await read_finished_runs(client, model, since, until)
    completed = [r for r in flow_runs if r.state is not None and r.state.is_completed()]
    completed.sort(key=lambda r: r.end_time or r.created or since, reverse=True)
    phased = completed[:PHASED_RUNS]
    phases = dict(zip([r.id for r in phased], await read_phases(client, phased), strict=True))
    return summarise(flow_runs, phases)


async def read_finished_runs(
    client: PrefectClient, model: str, since: datetime, until: datetime | None
) -> list[FlowRun]:
    """The finished runs of ``model`` expected to start in ``[since, until)``, paged."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    from accelerator_prefect.catalog import HOSTED_TAG, tag

    selection = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[HOSTED_TAG, tag("model", model)]),
        expected_start_time=FlowRunFilterExpectedStartTime(after_=since, before_=until),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in FINAL])),
    )
    found: list[FlowRun] = []
    offset, page = 0, 200
    while True:
        batch = await client.read_flow_runs(
            flow_run_filter=selection,
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=page,
            offset=offset,
        )
        found += batch
        if len(batch) < page:
            return found
        offset += page


_usual: dict[tuple[str, UUID], tuple[float, float | None]] = {}


async def usual_seconds(client: PrefectClient, deployment_id: UUID) -> float | None:
    """The median seconds from launch to end of the version's last :data:`USUAL_RUNS`
    completed runs; ``None`` with fewer than :data:`USUAL_MIN_RUNS` of them.

    One read of at most :data:`USUAL_RUNS` runs, remembered for :data:`USUAL_TTL_S` s
    per version.
    """
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    key = (str(client.api_url), deployment_id)
    remembered = _usual.get(key)
    if remembered is not None and time.monotonic() - remembered[0] < USUAL_TTL_S:
        return remembered[1]
    completed = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
        ),
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.END_TIME_DESC,
        limit=USUAL_RUNS,
    )
    spans = [
        (r.end_time - r.created).total_seconds()
        for r in completed
        if r.end_time is not None and r.created is not None
    ]
    usual = statistics.median(spans) if len(spans) >= USUAL_MIN_RUNS else None
    _usual[key] = (time.monotonic(), usual)
    return usual
