"""My runs: the history of what this user ran (and, for authors, every run of their
models), narrowed by model, state and time."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from catalog_ui.parts import require_session, runs_table
from catalog_ui.session import reported

WINDOWS = {
    "last 24 hours": timedelta(days=1),
    "last 7 days": timedelta(days=7),
    "last 30 days": timedelta(days=30),
    "all time": None,
}
STATES = ["Completed", "Failed", "Crashed", "Cancelled", "Running", "Pending", "Scheduled"]

session = require_session()
acc, principal = session.acc, session.principal

st.title("My runs")
st.caption(
    "Everything you ran"
    + (
        ", and every run of the models you own"
        if not principal.operator
        else "; as an operator, every run"
    )
    + ". Choose a run to see its results."
)

with reported("read the catalog"):
    models = session.cached("catalog", acc.catalog)

model_col, state_col, window_col, who_col = st.columns([3, 3, 2, 2])
model = model_col.selectbox(
    "Model",
    [None, *(m.name for m in models)],
    format_func=lambda m: m or "all models",
    key="mr-model",
)
states = state_col.multiselect("State", STATES, key="mr-states", placeholder="any state")
window = window_col.selectbox("When", list(WINDOWS), index=1, key="mr-window")
only_mine = who_col.toggle("Only runs I launched", value=True, key="mr-mine")

with reported("read your runs"), st.spinner("Reading runs…"):
    runs = acc.runs(
        model,
        user=principal.name if only_mine else None,
        state=states or None,
        since=WINDOWS[window],
        limit=200,
    )

if runs:
    done = sum(r.state == "Completed" for r in runs)
    a, b, c = st.columns(3)
    a.metric("Runs", len(runs))
    b.metric("Completed", done)
    c.metric("Failed", sum(r.state in {"Failed", "Crashed"} for r in runs))
runs_table(runs, key="my-runs-table")
