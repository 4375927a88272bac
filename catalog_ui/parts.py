"""Pieces several catalog pages share: the signed-in check, badges, times and sizes,
and the links between pages (a page's address says what it shows, so it can be
bookmarked and shared)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from catalog_ui.session import Session, current, halt

if TYPE_CHECKING:
    from accelerator_prefect.catalog import HostedVersion
    from accelerator_prefect.runs import RoutineProgress

PAGES = {
    "sign_in": "views/sign_in.py",
    "catalog": "views/catalog.py",
    "model": "views/model.py",
    "run": "views/run.py",
    "my_runs": "views/my_runs.py",
    "my_models": "views/my_models.py",
}
# Where each page is served, for links in tables: ``run?run=<id>``.
URL_PATHS = {
    "sign_in": "sign-in",
    "catalog": "catalog",
    "model": "model",
    "run": "run",
    "my_runs": "my-runs",
    "my_models": "my-models",
}
SCOPE_BADGES = {
    "public": ("Public", "green", ":material/public:"),
    "project": ("Project", "blue", ":material/group:"),
    "link": ("By link", "orange", ":material/link:"),
    "private": ("Private", "gray", ":material/lock:"),
}
STATE_COLOURS = {
    "Completed": "green",
    "Failed": "red",
    "Crashed": "red",
    "Cancelled": "gray",
    "Cancelling": "gray",
    "Running": "blue",
    "Pending": "orange",
    "Scheduled": "orange",
    "Late": "orange",
}


def require_session() -> Session:
    """The signed-in session; else the sign-in form, after which the same page (with the
    same address, e.g. a bookmarked run) shows."""
    session = current()
    if session is None:
        sign_in_form()
        halt()
    return session


def sign_in_form() -> None:
    """Sign in with a user name and personal token, or the organisation's identity provider."""
    import streamlit as st

    from catalog_ui import session as sessions

    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title(":material/science: Model catalog")
        ended = st.session_state.get(sessions.ENDED)
        if ended:
            st.warning(ended, icon=":material/logout:")
        st.write(
            "Run the models your colleagues host, with your own data and settings. "
            "Sign in to see the models open to you."
        )
        if sessions.oidc_configured():
            if st.button("Sign in with your organisation", type="primary", icon=":material/key:"):
                st.login()
            st.divider()
            st.caption("Or with a personal token:")
        with st.form("sign-in", border=True):
            user = st.text_input("User name", key="sign-in-user", autocomplete="username")
            token = st.text_input(
                "Token",
                type="password",
                key="sign-in-token",
                help="Your personal token, acc_… — your operator gives it to you "
                "(`acc users add` or `acc users token`).",
            )
            remember = st.checkbox(
                "Remember me on this device",
                key="sign-in-remember",
                help="Stay signed in here for 30 days. Without it, you stay signed in until you "
                "close the browser (at most 12 hours).",
            )
            submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
        if submitted:
            try:
                with st.spinner("Checking your token…"):
                    sessions.sign_in_with_token(user, token, remember=remember)
            except Exception as exc:
                st.error(f"Not signed in: {sessions.plain_error(exc)}")
            else:
                st.rerun()
        st.caption(
            "Got a link to one model? Open the link itself: it signs you in as a guest of "
            "that model."
        )


def embedded() -> bool:
    """Whether the page is shown as a widget inside another site (``?embed=true``, which
    Streamlit keeps to itself: it hides its own menu then, and across page switches)."""
    import streamlit as st

    return bool(st.context.is_embedded)


def go(page: str, **params: str) -> None:
    """Open another page of the catalog, keeping the link (Streamlit keeps ``embed``)."""
    import streamlit as st

    keep = {k: st.query_params[k] for k in ("link",) if k in st.query_params}
    if "link" in keep:
        keep["model"] = st.query_params.get("model", "")
    st.switch_page(PAGES[page], query_params={**keep, **params})


def link(page: str, **params: str) -> str:
    """A relative address of ``page`` showing ``params``, for link columns in tables."""
    from urllib.parse import urlencode

    return f"{URL_PATHS[page]}?{urlencode(params)}"


def scope_badge(scope: str) -> str:
    label, colour, icon = SCOPE_BADGES.get(scope, (scope, "gray", ""))
    return f":{colour}-badge[{icon} {label}]"


def version_badges(version: HostedVersion) -> str:
    """Markdown badges for a version: its scope, number and, when so, deprecation."""
    badges = [scope_badge(version.record.scope.value), f":violet-badge[v{version.version}]"]
    if version.status.value == "deprecated":
        badges.append(":orange-badge[:material/warning: Deprecated]")
    if version.semver.prerelease:
        badges.append(":gray-badge[pre-release]")
    return " ".join(badges)


def state_badge(state: str) -> str:
    return f":{STATE_COLOURS.get(state, 'gray')}-badge[{state}]"


def first_line(markdown: str, limit: int = 160) -> str:
    """The opening sentence of a Markdown description, as plain text."""
    import re

    text = " ".join(markdown.strip().split("\n\n", 1)[0].split())
    text = re.sub(r"[*_`#>]|\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def human_size(size: float) -> str:
    from accelerator_prefect.mapping import human_size as size_text

    return size_text(size)


def elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def ago(moment: datetime | None) -> str:
    """``moment`` as people say it: "3 min ago", "yesterday 14:05", "2026-11-02"."""
    if moment is None:
        return "–"
    delta = (datetime.now(UTC) - moment).total_seconds()
    if delta < 60:
        return "just now"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    if delta < 86400:
        return f"{int(delta // 3600)} h ago"
    return f"{moment:%Y-%m-%d %H:%M}"


def runs_table(runs: list[Any], *, key: str, show_model: bool = True) -> None:
    """A history of runs; choosing a row opens that run's page (in this tab, so the
    sign-in holds)."""
    import pandas as pd
    import streamlit as st

    if not runs:
        st.caption("No runs yet.")
        return
    frame = pd.DataFrame(
        {
            "model": [r.model for r in runs],
            "version": [r.version for r in runs],
            "state": [r.state for r in runs],
            "started": [r.started or r.created for r in runs],
            "took": [elapsed(r.duration) for r in runs],
            "by": [r.user for r in runs],
            "via": [r.via for r in runs],
            "run": [r.name for r in runs],
        }
    )
    if not show_model:
        frame = frame.drop(columns=["model"])
    st.caption("Choose a run to open it.")
    picked = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        key=key,
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
        },
    )
    rows = picked.selection.rows if picked is not None else []  # type: ignore[attr-defined]
    if rows:
        go("run", run=runs[rows[0]].id)


def outputs_zip_url(run_id: str) -> str:
    """Where run ``run_id``'s outputs are served as one zip (see ``serve.py``), relative
    to the catalog's pages."""
    from urllib.parse import quote

    from catalog_ui.cookies import OUTPUTS_ROUTE

    return OUTPUTS_ROUTE.lstrip("/").replace("{run_id}", quote(run_id, safe=""))


def download_all_button(run_id: str) -> None:
    """ "Download all (zip)": every output of run ``run_id`` in one zip, made as it is sent.

    The browser fetches it from the catalog's own route with its session cookie, so the
    button is drawn only for a session that has one (signed in with a token); the route
    opens the run as that person, exactly as the run page does.
    """
    import streamlit as st

    session = current()
    if session is None or session.how not in ("token", "cookie"):
        return
    st.link_button(
        "Download all (zip)",
        outputs_zip_url(run_id),
        icon=":material/folder_zip:",
        help="Every file of this run in one zip.",
    )


ENVIRONMENT_LOG = "Preparing the model's environment"
"""How the worker's log says it is building the version's environment before the run."""


def phase(state: str, progress: RoutineProgress, building: bool = False) -> str:
    """What the run is doing, in words: queued, preparing (its environment, when the worker
    is ``building`` it), running routine k of n, ended; while it waits or runs, how long
    runs of its version usually take, when known."""
    usually = (
        f" · usually about {elapsed(progress.usual_seconds)} from launch to end"
        if progress.usual_seconds is not None
        else ""
    )
    if state == "Scheduled":
        return f"Queued: waiting for a worker to take it…{usually}"
    if state == "Pending":
        if building:
            return "Preparing the model's environment (its libraries), once for all its runs…"
        return f"Preparing the model…{usually}"
    if state == "Running":
        if not progress.started:
            return f"Running…{usually}"
        k = min(progress.done + 1, progress.total) if progress.total else progress.done + 1
        of = f" of {progress.total}" if progress.total else ""
        return f"Running routine {k}{of}…{usually}"
    return {"Cancelling": "Cancelling…", "Completed": "Completed"}.get(state, state)
