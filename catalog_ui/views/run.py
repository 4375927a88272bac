"""One run: live state, elapsed time, routines done, how long such runs usually take, logs as
they come, and a way to cancel it; a failed run leads with the model's own words (its
traceback behind "Details", for those the service gives it to); then the outputs with
previews and downloads, the provenance, and "run again"."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Literal, TypeVar, cast

import streamlit as st

from accelerator_prefect.catalog import HostedModel
from accelerator_prefect.runs import RunFailure
from catalog_ui import previews
from catalog_ui.markdown import plain, safe_markdown
from catalog_ui.parts import (
    ENVIRONMENT_LOG,
    download_all_button,
    elapsed,
    embedded,
    go,
    human_size,
    phase,
    require_session,
    state_badge,
)
from catalog_ui.session import halt, plain_error, reported

FINAL = {"Completed", "Failed", "Crashed", "Cancelled"}
CANCELLED = {"Cancelling", "Cancelled"}
REFRESH_SECONDS = 1.5
QUICK_SECONDS = 0.25
"""How often the page reads the run's state in its first QUICK_FOR seconds: a run on a
warm worker often ends within a second, and should be seen to end then."""
QUICK_FOR = 10.0
LOG_LINES = 300

session = require_session()
acc, principal = session.acc, session.principal
run_id = st.query_params.get("run")
if not run_id:
    st.info("Open a run from your runs or launch one from a model's page.")
    halt()
assert run_id is not None
CANCEL_REFUSED = f"cancel-refused:{run_id}"

# Just launched from this session: it is queued, said before the first read comes back.
early = st.empty()
if st.session_state.pop(f"launched:{run_id}", None):
    early.status("Queued: waiting for a worker to take it…", state="running")
with reported("open this run"):
    run = acc.run(run_id)
    first = run.summary()
early.empty()

if principal.guest:
    if st.button("Back to the model", icon=":material/arrow_back:", type="tertiary"):
        go("model")
elif not embedded():
    st.page_link("views/my_runs.py", label="My runs", icon=":material/arrow_back:")
hosted: HostedModel | None
try:
    hosted = session.cached(f"model:{first.model}", lambda: acc.get(first.model))
except Exception:  # the model went out of sight (archived, unshared): its run still reads
    hosted = None
title = plain(hosted.latest.title) if hosted is not None else first.model
its_version = next(
    (v for v in (hosted.versions if hosted is not None else []) if v.version == first.version),
    None,
)
short_name = plain(first.name.rsplit(" · ", 1)[-1])
if embedded():  # a widget in another site: one line
    st.markdown(f"#### {title} · {first.version} · run {short_name}")
else:
    st.title(f"{title} · {first.version}")
    st.caption(
        f"Run **{short_name}** · launched by {first.user} via {first.via}"
        + (f" · {first.created:%Y-%m-%d %H:%M} UTC" if first.created else "")
    )


def failure_box(failure: RunFailure) -> None:
    """The model's own words first; its traceback behind "Details" when the service gave
    it (to the model's owner and operators only). Both are the model's: its Markdown is
    shown without images or HTML, its routine's name as written."""
    st.error(f"The run failed: {safe_markdown(failure.message)}", icon=":material/error:")
    if failure.routine:
        st.caption(f"Said by the model's routine **{plain(failure.routine)}**.")
    if failure.details:
        with st.expander("Details"):
            st.code(failure.details, language=None)


T = TypeVar("T")


def fresh(name: str, read: Callable[[], T], state: str) -> T:
    """``read()``, or what it gave less than REFRESH_SECONDS ago while the run was in the
    same state: the quick looks after Launch read the run's state, not all of it."""
    key = f"{name}:{run_id}"
    kept = st.session_state.get(key)
    now = time.monotonic()
    if kept is not None and kept[0] == state and now - kept[1] < REFRESH_SECONDS:
        return cast(T, kept[2])
    value = read()
    st.session_state[key] = (state, now, value)
    return value


def since(moment: datetime | None) -> float | None:
    return None if moment is None else (datetime.now(UTC) - moment).total_seconds()


def status_box() -> str:
    """The run's phase, its time since Launch, and its routines; returns the state name."""
    summary = run.summary()
    state = summary.state
    launched = summary.created or summary.started
    if launched is None:
        since_launch = None
    else:
        end = summary.ended or datetime.now(UTC)
        since_launch = max(0.0, (end - launched).total_seconds())
    progress = fresh("progress", run.progress, state)
    failure = run.failure() if state in FINAL - {"Completed", "Cancelled"} else None
    if failure is not None:
        failure_box(failure)
    box: Literal["running", "complete", "error"] = (
        "complete" if state == "Completed" else "error" if state in FINAL else "running"
    )
    # Not used as a context manager: leaving one marks the box complete.
    building = state == "Pending" and any(
        ENVIRONMENT_LOG in line for line in fresh("logs", run.logs, state)
    )
    status = st.status(phase(state, progress, building), state=box, expanded=True)
    a, b, c = status.columns(3)
    a.markdown("**State**")
    a.markdown(state_badge(state))
    if state in FINAL:
        b.metric("Took", elapsed(since_launch), help="From Launch to the run's end.")
    else:
        b.metric("Since launch", elapsed(since_launch))
    c.metric("Routines done", f"{progress.done} of {progress.total}" if progress.total else "–")
    if progress.total and state not in FINAL:
        status.progress(min(progress.fraction, 1.0))
    if state == "Completed":
        computing = f"{elapsed(summary.duration)} of computing, " if summary.duration else ""
        status.success(f"Done: {computing}{elapsed(since_launch)} in all.", icon=":material/check:")
    elif state in CANCELLED:
        # Routines stopped by the cancel end Crashed: that is the cancel, not a failure.
        status.caption(
            "Stopping the run's process; the run ends Cancelled in a moment."
            if state == "Cancelling"
            else "Cancelled: its routines were stopped where they were."
        )
    elif state in FINAL and failure is None:
        status.error("The run failed; the logs below say why.", icon=":material/error:")
    elif progress.failed and state not in FINAL:
        status.warning(f"{progress.failed} routine(s) failed so far; the logs below say why.")
    return state


def cancel() -> None:
    """Ask the service to cancel the run; it decides who may (its launcher, its model's
    owner, operators). A refusal is kept to be said on the page."""
    try:
        run.cancel()
    except Exception as exc:
        st.session_state[CANCEL_REFUSED] = plain_error(exc)
    else:
        st.session_state.pop(CANCEL_REFUSED, None)
        session.forget()


def cancel_button(state: str) -> None:
    """The "Cancel run" button while the run may still be stopped (not once stopping or ended)."""
    if state in FINAL or state in CANCELLED:
        return
    st.button(
        "Cancel run",
        icon=":material/cancel:",
        key="cancel-run",
        on_click=cancel,
        help="Stop this run now. Files it wrote so far stay, marked incomplete.",
    )


def logs_box(state: str) -> None:
    lines = fresh("logs", run.logs, state)
    with st.expander(f"Logs ({len(lines)} lines)", expanded=state not in FINAL):
        shown = lines[-LOG_LINES:]
        if len(lines) > LOG_LINES:
            st.caption(f"The last {LOG_LINES} lines.")
        st.code("\n".join(shown) or "No log lines yet.", language=None)


def live() -> None:
    refused = st.session_state.get(CANCEL_REFUSED)
    if refused:
        st.error(f"Not cancelled: {refused}")
    with reported("read the run"):
        state = status_box()
        cancel_button(state)
        logs_box(state)
    if state in FINAL and st.session_state.get(f"seen-final:{run_id}") is None:
        st.session_state[f"seen-final:{run_id}"] = time.time()
        st.rerun(scope="app")  # draw the outputs below
    if every == QUICK_SECONDS and (since(first.created) or 0.0) >= QUICK_FOR:
        st.rerun(scope="app")  # look less often from now on


final = first.state in FINAL  # read as this draw began: an ended run stays ended
age = since(first.created)
every = QUICK_SECONDS if not final and age is not None and age < QUICK_FOR else REFRESH_SECONDS
if final:
    st.session_state.setdefault(f"seen-final:{run_id}", time.time())
    live()
else:
    st.fragment(live, run_every=every)()
    halt()

# -- the run has ended ---------------------------------------------------------------------

state = first.state
if principal.operator and not embedded():
    st.link_button("Open in the Prefect UI", run.url, icon=":material/open_in_new:")

st.subheader(":material/inventory: Outputs")
with reported("list the outputs"):
    files = run.outputs()
    complete = run.outputs_complete
    expired = None if files else run.outputs_expired
if files:
    download_all_button(str(run.id))
if expired:
    st.info(expired, icon=":material/auto_delete:")
elif not files:
    st.caption("This run wrote no files.")
elif not complete:
    st.warning(
        "The run did not finish: these are the files it wrote before it stopped, and they may "
        "not be a full result."
    )


def reader(path: str) -> bytes:
    with run.open_output(path) as f:
        data: bytes = f.read()
    return data


# Images and tables first, open and previewed; other previews are made only when asked for.
FIRST = {"image": 0, "table": 1}
files.sort(key=lambda f: (FIRST.get(previews.kind_of(f.path) or "", 2), f.path))
for file in files:
    kind = previews.kind_of(file.path)
    eager = kind in FIRST
    # The model's code names its files: shown as written, never read as Markdown.
    title = f"{plain(file.path)} · {human_size(file.size)}"
    title += " · altered" if file.altered else ""
    with st.expander(title, expanded=eager or file.altered):
        if file.altered:
            st.warning(
                "This file was changed after the run wrote it: it no longer holds the run's "
                "result, so it is neither previewed nor offered for download.",
                icon=":material/gpp_bad:",
            )
            continue
        st.download_button(
            "Download",
            data=partial(reader, file.path),  # read only when asked for
            file_name=file.path.rsplit("/", 1)[-1],
            mime=file.media_type,
            key=f"download:{file.path}",
            icon=":material/download:",
            on_click="ignore",
        )
        if kind is None:
            st.caption("No preview for this kind of file; download it to open it.")
        elif file.size > previews.PREVIEW_LIMIT:
            st.caption(f"Too large to preview here ({human_size(file.size)}); download it.")
        elif eager or st.toggle("Preview", key=f"preview:{file.path}"):
            try:
                columns = its_version.output_mapping.columns_of(file.path) if its_version else {}
                previews.show(file.path, reader(file.path), columns=columns)
            except Exception as exc:
                st.info(f"No preview: {plain_error(exc)} Download the file to open it.")

with st.expander(":material/fingerprint: Provenance: what this run ran on"):
    try:
        record = run.provenance()
    except Exception as exc:
        st.caption(plain_error(exc))
    else:
        # The record quotes the model's repository, data and environment paths.
        if principal.operator:
            st.markdown(safe_markdown(record.markdown()))
        else:  # the record as its people read it: no paths or hosts of the platform's own
            table = "\n".join(f"| {k} | {v} |" for k, v in record.rows(operator=False))
            st.markdown(safe_markdown(f"| | |\n|---|---|\n{table}"))
            st.caption("Settings")
            st.json(record.conf, expanded=False)
            if record.inputs:
                st.caption("Inputs, with their content's fingerprint (sha256)")
                st.dataframe(
                    [{"file": f.uri, "sha256": f.sha256, "size": f.size} for f in record.inputs],
                    hide_index=True,
                )

if state in FINAL:
    st.divider()
    again, _ = st.columns([1, 3])
    if again.button("Run again with these settings", icon=":material/replay:", key="again"):
        go("model", model=first.model, version=first.version, from_run=str(run.id))
