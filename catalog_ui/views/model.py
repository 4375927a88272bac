"""One model: what it does, its versions, the launch form, and this user's recent runs.

The form is generated from the chosen version's parameter schema; the service
layer validates the launch with the same schema and refuses it whole, and its
problems are shown next to the fields they concern.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from accelerator_prefect.catalog import HostedVersion
from accelerator_prefect.errors import ValidationFailed
from accelerator_prefect.launch import default_output
from accelerator_prefect.validation import parameter_problems, property_schema
from catalog_ui import form
from catalog_ui.explorer import Explorer
from catalog_ui.parts import (
    embedded,
    first_line,
    go,
    require_session,
    runs_table,
    version_badges,
)
from catalog_ui.session import plain_error, reported

session = require_session()
acc, principal = session.acc, session.principal
name: str = st.query_params.get("model") or session.model or ""
if not name:
    st.info("Choose a model in the catalog first.")
    st.stop()

with reported("open this model"), st.spinner("Opening the model…"):
    hosted = session.cached(f"model:{name}", lambda: acc.get(name))
listed = hosted.listed()
if listed is None:
    st.warning(f"{name} takes no new runs: every version of it has been archived.")
    st.stop()
assert listed is not None

# Prefill from an earlier run ("run again with these settings"), once per visit.
earlier: dict[str, Any] = {}
from_run: str = st.query_params.get("from_run") or ""
if from_run:
    with reported("read the earlier run"):
        earlier = session.cached(f"params:{from_run}", lambda: acc.run(from_run).parameters, 300)
        earlier_version = session.cached(
            f"version:{from_run}", lambda: acc.run(from_run).summary().version, 300
        )

newest = listed.latest
choices = [newest, *(v for v in listed.versions if v is not newest)]


def label(version: HostedVersion) -> str:
    if version.status.value == "deprecated":
        instead = version.record.replaced_by
        return f"{version.version} — deprecated" + (f", use {instead}" if instead else "")
    return f"{version.version} — newest" if version is newest else version.version


wanted = st.query_params.get("version") or (earlier_version if from_run else None)
index = next((i for i, v in enumerate(choices) if v.version == wanted), 0)

if not embedded() and not principal.guest:
    st.page_link("views/catalog.py", label="All models", icon=":material/arrow_back:")
st.title(newest.title)
st.markdown(first_line(newest.description, limit=300))
top_left, top_right = st.columns([3, 1], vertical_alignment="bottom")
chosen: HostedVersion = top_right.selectbox(
    "Version", choices, index=index, format_func=label, key=f"version:{name}"
)
top_left.markdown(version_badges(chosen))
top_left.caption(
    f":material/person: {chosen.record.owner} · :material/folder: {chosen.record.project} · "
    f"published {chosen.record.published_at:%Y-%m-%d}"
)
if chosen.status.value == "deprecated":
    instead = chosen.record.replaced_by
    st.warning(
        f"Version {chosen.version} is deprecated"
        + (f": use version {instead} instead." if instead else ".")
        + " It still runs, but it will not be kept for ever.",
        icon=":material/warning:",
    )

tabs = ["Run it"] if embedded() else ["Run it", "About", "Your recent runs"]
run_tab, *rest = st.tabs(tabs)

if rest:
    with rest[0]:
        st.markdown(chosen.description or "No description yet.")
        if chosen.record.data:
            st.caption(
                "Reference data pinned by this version: "
                + ", ".join(f"`{d.path}`" for d in chosen.record.data)
            )
    with rest[1]:
        with reported("read your runs"):
            mine = session.cached(
                f"my-runs:{name}", lambda: acc.runs(name, user=principal.name, limit=10)
            )
        runs_table(mine, key=f"runs:{name}", show_model=False)

problems_key = f"problems:{name}:{chosen.version}"
schema = chosen.parameter_schema
parameters = schema.get("properties", {})
form_key = f"{name}:{chosen.version}:{from_run or ''}"
# The settings are checked as they are typed (the service's own check, with the same
# schema): their problems stand under their fields, and Launch waits until there are none.
live_key = f"live:{form_key}"
live: list[str] = st.session_state.get(live_key, [])
# The last refusal's problems; those about settings (a model's checks across settings and
# inputs: "select model_ssp126.nc …") stand under their fields until the settings change.
refused_before: list[str] = st.session_state.get(problems_key, [])
problems: list[str] = [*live, *(p for p in refused_before if p not in live)]

with run_tab:
    inputs: dict[str, list[str]] | None = None
    if "inputs" in parameters:
        st.subheader(":material/folder_open: Your inputs")
        explorer = Explorer(session, chosen.input_mapping, key=f"inputs:{form_key}")
        started = f"inputs:{form_key}:prefilled"
        if earlier and not st.session_state.get(started):
            chosen_before = earlier.get("inputs") or {}
            explorer.preselect(
                [
                    *chosen_before.get("selected_files", []),
                    *chosen_before.get("selected_folders", []),
                ]
            )
            st.session_state[started] = True
        inputs = explorer.draw([p for p in problems if p.startswith("inputs")])

    conf: Any = None
    if "conf" in parameters:
        st.subheader(":material/tune: Settings")
        conf_errors, _ = form.errors_by_field(problems, "conf")
        fields = form.form_fields(property_schema(schema, "conf"), schema)
        conf = form.render(
            fields, key=f"conf:{form_key}", initial=earlier.get("conf"), errors=conf_errors
        )
        now = [
            p
            for p in parameter_problems(schema, {"conf": conf if conf is not None else {}})
            if p.startswith("conf")
        ]
        if now != live:  # draw again, each problem under its field
            st.session_state[live_key] = now
            st.rerun()
        about_settings = [p for p in refused_before if p.startswith("conf")]
        if about_settings and conf != st.session_state.get(f"{problems_key}:conf"):
            st.session_state[problems_key] = [p for p in refused_before if p not in about_settings]
            st.rerun()

    output: str | None = None
    if "output" in parameters:
        st.subheader(":material/output: Results")
        suggested = default_output(chosen, principal) or ""
        output = st.text_input(
            "Results go to",
            value=suggested,
            key=f"output:{form_key}",
            disabled=principal.guest,
            help="An acc:// folder; {run_id} becomes the run's id. Results stay there after the "
            "run, for you to download or use as inputs elsewhere.",
        )
        for problem in (p for p in problems if p.startswith("output")):
            st.error(problem, icon=":material/error:")

    secrets: dict[str, str] = {}
    remember = False
    if chosen.secrets:
        st.subheader(":material/key: Credentials")
        st.caption(
            "Used only by this run and deleted when it ends; never stored with the run or shown "
            "in its logs."
        )
        for secret, spec in chosen.secrets.items():
            value = st.text_input(
                secret + (" *" if spec.required else ""),
                type="password",
                key=f"secret:{form_key}:{secret}",
                help=spec.description or None,
                placeholder="leave empty to use the one you asked us to remember",
            )
            if value:
                secrets[secret] = value
        if not principal.guest:
            remember = st.checkbox(
                "Remember these for me",
                key=f"remember:{form_key}",
                help="Kept in the platform's secret store for your next runs of this model; "
                "forget them with `acc secrets forget`.",
            )
        for problem in (p for p in problems if p.startswith("secrets")):
            st.error(problem, icon=":material/error:")

    others = [p for p in problems if not p.startswith(("conf", "inputs", "output", "secrets"))]
    for problem in others:
        st.error(problem)
    refused = [p for p in problems if p not in live]
    if refused:
        st.error(
            f"The run was not started: {len(refused)} thing(s) to fix, shown above.",
            icon=":material/block:",
        )
    if live:
        st.caption(
            f":material/block: Launch waits for {len(live)} setting(s) marked above "
            "to be set right."
        )

    if (
        st.button(
            "Launch",
            type="primary",
            icon=":material/rocket_launch:",
            key=f"launch:{form_key}",
            disabled=bool(live),
        )
        and not live
    ):  # (a press sent with the typing that made a setting wrong starts nothing)
        try:
            with st.spinner("Checking and launching…"):
                run = acc.launch(
                    name,
                    conf,
                    version=chosen.version,
                    inputs=inputs,
                    output=None if principal.guest else output,
                    secrets=secrets or None,
                    remember=remember,
                    via="link" if principal.guest else "catalog",
                )
        except ValidationFailed as exc:
            st.session_state[problems_key] = exc.problems
            st.session_state[f"{problems_key}:conf"] = conf
            st.rerun()
        except Exception as exc:
            st.error(f"The run was not started: {plain_error(exc)}")
        else:
            st.session_state.pop(problems_key, None)
            session.forget()
            go("run", run=str(run.id))
