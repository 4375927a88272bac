"""``/runs``: my runs, one run (optionally waited for), cancel, rerun, logs (and their live
stream), why it failed, progress, result, provenance, outputs (downloads with HTTP Range)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from accelerator_prefect.client import AsyncAccelerator
from accelerator_prefect.errors import RunTimeout
from accelerator_prefect.portal.deps import Acc
from accelerator_prefect.portal.problems import problem, responses
from accelerator_prefect.portal.schemas import OutputsOut, RerunRequest, RunOut
from accelerator_prefect.provenance import Provenance
from accelerator_prefect.runs import RoutineProgress, RunFailure, RunInfo, RunQuery, RunSummary

router = APIRouter(tags=["runs"])

MAX_WAIT_S = 300.0  # the longest a `Prefer: wait=N` request is held
RECONNECT_MS = 1000  # the `retry:` a log stream asks of a client that loses it
CHUNK = 1 << 20

READ = responses(401, 404, 422, 429, 503)
"""What a route reading one run may answer besides its own 200."""

_BYTES = {"schema": {"type": "string", "format": "binary"}}


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """One kind of server-sent event: its name, and its data as JSON matching ``data``."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }


def _numbered(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with an ``id``: its line's number, which a client sends back as
    ``Last-Event-ID`` to go on after it."""
    number = {"type": "string", "pattern": "^[0-9]+$", "description": "The line's number."}
    return {
        **event,
        "required": [*event["required"], "id"],
        "properties": {**event["properties"], "id": number},
    }


LOG_EVENT = {
    "oneOf": [
        _numbered(_event("log", {"type": "string", "description": "One log line."})),
        _event(
            "end",
            {
                "type": "object",
                "required": ["state"],
                "properties": {"state": {"type": "string", "description": "The final state."}},
            },
        ),
    ]
}
"""Each event of a run's log stream (``/runs/{run_id}/logs/stream``)."""


def file_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A download's answers: the file (its own media type), one byte range of it, and
    problem+json for ``statuses`` (416 when the range asked for is not in the file)."""
    problems = responses(*statuses, 416)
    problems[416]["headers"] = {
        "Content-Range": {"description": "`bytes */<size>`", "schema": {"type": "string"}}
    }
    return {
        200: {"description": "The whole file", "content": {"*/*": _BYTES}},
        206: {"description": "The byte range asked for", "content": {"*/*": _BYTES}},
        **problems,
    }


def wait_seconds(prefer: str | None) -> float | None:
    """``Prefer: wait=N`` (RFC 7240) as seconds, at most :data:`MAX_WAIT_S`."""
    match = re.search(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)", prefer or "")
    return min(float(match.group(1)), MAX_WAIT_S) if match else None


def run_as_out(info: RunInfo) -> RunOut:
    """The run as the portal answers it: its summary, and what only its handle shows."""
    return RunOut(
        **dataclasses.asdict(info.summary()),
        state_type=info.state_type,
        message=info.message,
        final=info.final,
        completed=info.completed,
        parameters=info.parameters,
    )


async def run_out(
    acc: AsyncAccelerator,
    run_id: str,
    workspace: str | None,
    wait: float | None,
    response: Response,
) -> RunOut:
    """The run now, or once final if ``wait`` seconds are asked for and suffice."""
    if wait is None:
        return run_as_out(await acc.run_info(run_id, workspace))
    response.headers["Preference-Applied"] = f"wait={wait:g}"
    try:
        return run_as_out(await acc.wait_run(run_id, wait, workspace))
    except RunTimeout:
        return run_as_out(await acc.run_info(run_id, workspace))


@router.get(
    "/runs",
    response_model=list[RunSummary],
    summary="The runs you may read",
    responses=responses(401, 404, 422, 429, 503),
)
async def list_runs(
    acc: Acc,
    model: str | None = None,
    version: str | None = None,
    user: str | None = None,
    state: Annotated[list[str] | None, Query(description="State names, e.g. Failed.")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 200,
    phases: Annotated[
        bool, Query(description="Also how long each run was queued and starting.")
    ] = False,
) -> list[RunSummary]:
    query = RunQuery(
        model=model,
        version=version,
        user=user,
        states=tuple(state or ()),
        since=since,
        until=until,
        phases=phases,
    )
    return await acc.runs(query, limit)


@router.get(
    "/runs/{run_id}", response_model=RunOut, summary="One run (Prefer: wait=N)", responses=READ
)
async def get_run(
    run_id: str, acc: Acc, response: Response, prefer: Annotated[str | None, Header()] = None
) -> RunOut:
    return await run_out(acc, run_id, None, wait_seconds(prefer), response)


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunOut,
    summary="Cancel a run (its launcher, its model's owner, operators)",
    responses=responses(401, 403, 404, 422, 429, 503),
)
async def cancel(run_id: str, acc: Acc) -> RunOut:
    return run_as_out(await acc.cancel(run_id))


@router.post(
    "/runs/{run_id}/rerun",
    response_model=RunOut,
    status_code=201,
    summary="Launch a run's version again with its conf and inputs",
    responses=responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def rerun(
    run_id: str,
    acc: Acc,
    response: Response,
    body: RerunRequest | None = None,
    prefer: Annotated[str | None, Header()] = None,
) -> RunOut:
    new_id, workspace, notice = await acc.rerun(
        run_id, secrets=body.secrets if body else None, via="portal"
    )
    out = await run_out(acc, new_id, workspace, wait_seconds(prefer), response)
    return out.model_copy(update={"notice": notice})


@router.get(
    "/runs/{run_id}/progress",
    response_model=RoutineProgress,
    summary="How far its routines are",
    responses=READ,
)
async def progress(run_id: str, acc: Acc) -> RoutineProgress:
    return await acc.run_progress(run_id)


@router.get(
    "/runs/{run_id}/failure",
    response_model=RunFailure | None,
    summary="Why it failed: the model's words (null unless it failed)",
    description="The traceback (`details`) is given to the model's owner and operators only.",
    responses=READ,
)
async def failure(run_id: str, acc: Acc) -> RunFailure | None:
    return await acc.run_failure(run_id)


@router.get("/runs/{run_id}/result", summary="The jobflow's return value (JSON)", responses=READ)
async def result(run_id: str, acc: Acc) -> Any:
    return await acc.run_result(run_id)


@router.get(
    "/runs/{run_id}/provenance",
    response_model=Provenance,
    summary="What ran, from which code, on what",
    responses=READ,
)
async def provenance(run_id: str, acc: Acc) -> Provenance:
    return await acc.run_provenance(run_id)


@router.get(
    "/runs/{run_id}/logs",
    response_model=list[str],
    summary="The log lines so far (operators: every line; others: the model's own)",
    responses=READ,
)
async def logs(run_id: str, acc: Acc) -> list[str]:
    return await acc.run_logs(run_id)


@router.get(
    "/runs/{run_id}/logs/stream",
    summary="The log lines as server-sent events, ending when the run does",
    description="`event: log` carries one log line (a JSON string) and, as its `id`, the "
    "line's number; `event: end` closes the stream with the run's final state "
    '(`{"state": "Completed"}`). A client that loses the stream reconnects with '
    "`Last-Event-ID: <the last id it received>` and gets the lines after it, none twice.",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The events, until the run ends",
            "content": {"text/event-stream": {"itemSchema": LOG_EVENT}},
        },
        **READ,
    },
)
async def stream_logs(
    run_id: str,
    acc: Acc,
    request: Request,
    last_event_id: Annotated[
        str | None,
        Header(
            description="The `id` of the last event received: the stream goes on after it "
            "(as a browser's EventSource sends it when it reconnects)."
        ),
    ] = None,
) -> StreamingResponse:
    await acc.run_info(run_id)  # not readable: 404 before the stream begins
    return StreamingResponse(
        _log_events(acc, run_id, request, _resumed_from(last_event_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resumed_from(last_event_id: str | None) -> int:
    """How many lines a reconnecting client has had: a log event's ``id`` is its line's
    number (1 for the first); anything else starts from the beginning."""
    value = (last_event_id or "").strip()
    return int(value) if value.isdigit() and len(value) < 10 else 0


async def _log_events(
    acc: AsyncAccelerator, run_id: str, request: Request, sent: int = 0
) -> AsyncIterator[str]:
    """The run's log lines from line ``sent + 1`` on, each with its number as ``id``, so a
    client that loses the stream (the portal restarted, a proxy timed out) reconnects with
    ``Last-Event-ID`` and misses no line and sees none twice."""
    poll, deadline = 0.5, time.monotonic() + 24 * 3600
    stopping: asyncio.Event = getattr(request.app.state, "stopping", None) or asyncio.Event()
    yield f"retry: {RECONNECT_MS}\n\n"  # how soon an EventSource is to reconnect
    while time.monotonic() < deadline and not await request.is_disconnected():
        info = await acc.run_info(run_id)  # asked again: a revoked credential ends the stream
        if info.final:
            info = await acc.wait_run(run_id, 0)  # its closing lines in
        lines = await acc.run_logs(run_id)
        for number, line in enumerate(lines[sent:], sent + 1):
            yield f"id: {number}\nevent: log\ndata: {json.dumps(line)}\n\n"
        sent = max(sent, len(lines))
        if info.final:
            yield f"event: end\ndata: {json.dumps({'state': info.state})}\n\n"
            return
        # The portal stopping ends the stream (without an end event): the client resumes
        # from its last id with the portal that comes next.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), poll)
        if stopping.is_set():
            return


@router.get(
    "/runs/{run_id}/outputs",
    response_model=OutputsOut,
    summary="The files a run wrote",
    responses=READ,
)
async def outputs(run_id: str, acc: Acc) -> OutputsOut:
    (files, complete), expired = await asyncio.gather(
        acc.run_outputs(run_id), acc.run_outputs_expired(run_id)
    )
    return OutputsOut(complete=complete, files=files, expired=expired)


@router.get(
    "/runs/{run_id}/outputs/{path:path}",
    summary="Download one output file (HTTP Range supported)",
    response_class=StreamingResponse,
    responses=file_responses(400, 401, 404, 409, 422, 429, 503),
)
async def download_output(
    run_id: str, path: str, acc: Acc, range: Annotated[str | None, Header()] = None
) -> Response:
    from accelerator_prefect.storage import media_type

    # Refuses escapes; 404 when not an output file.
    handle, size = await acc.open_output_sized(run_id, path)
    return ranged(handle, size, media_type(path), path.rsplit("/", 1)[-1], range)


def ranged(handle: Any, size: int, kind: str, filename: str, header: str | None) -> Response:
    """Stream ``handle`` (``size`` bytes), or the one byte range ``header`` asks for."""
    from urllib.parse import quote

    start, end, status = 0, size - 1, 200
    if header:
        match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
        if match is None or match.groups() == ("", ""):
            handle.close()
            return _unsatisfiable(header, size)
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:
            start, end = max(size - int(last), 0), size - 1
        if start > end or start >= size:
            handle.close()
            return _unsatisfiable(header, size)
        status = 206
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(max(end - start + 1, 0)),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        _chunks(handle, start, end - start + 1),
        status_code=status,
        headers=headers,
        media_type=kind,
    )


def _unsatisfiable(header: str, size: int) -> Response:
    answer = problem(
        416,
        "Range not satisfiable",
        f"Range: {header.strip()[:100]!r} is not one byte range within the file's {size:,} "
        "bytes (expected bytes=first-last, bytes=first- or bytes=-suffix)",
        "range-not-satisfiable",
    )
    answer.headers["Content-Range"] = f"bytes */{size}"
    return answer


async def _chunks(handle: Any, start: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes of ``handle`` from ``start``, a chunk at a time (never all at once)."""
    try:
        if start:
            await asyncio.to_thread(handle.seek, start)
        left = length
        while left > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()
