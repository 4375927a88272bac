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
from catalog_ui.markdown import code, plain, safe_markdown
from catalog_ui.parts import (
    embedded,
    first_line,
    go,
    require_session,
    runs_table,
    version_badges,
)
from catalog_ui.session import halt, plain_error, reported, way_back

session = require_session()
acc, principal = session.acc, session.principal
name: str = st.query_params.get("model") or session.model or ""
if not name:
    st.info("Choose a model in the catalog first.")
    way_back()
    halt()

with reported("open this model"), st.spinner("Opening the model…"):
    hosted = session.cached(f"model:{name}", lambda: acc.get(name))
listed = hosted.listed()
if listed is None:
    st.warning(f"{name} takes no new runs: every version of it has been archived.")
    way_back()
    halt()
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
MISSING = ": required field is missing"  # the end of the validator's line for an unset field
SHORT_LINE = 90  # characters of a description's first sentence a widget's header shows
choices = [newest, *(v for v in listed.versions if v is not newest)]


def label(version: HostedVersion) -> str:
    if version.status.value == "deprecated":
        instead = version.record.replaced_by
        return f"{version.version} — deprecated" + (f", use {instead}" if instead else "")
    return f"{version.version} — newest" if version is newest else version.version


wanted = st.query_params.get("version") or (earlier_version if from_run else None)
index = next((i for i, v in enumerate(choices) if v.version == wanted), 0)
compact = embedded()


def about(version: HostedVersion) -> None:
    """What the model does, in full, and which version this is."""
    st.markdown(safe_markdown(version.description) or "No description yet.")
    who = "" if principal.guest else f"by {version.record.owner} · "
    st.caption(f"Version {version.version} · {who}published {version.record.published_at:%Y-%m-%d}")
    if version.record.data:
        st.caption(
            "Reference data pinned by this version: "
            + ", ".join(code(d.path) for d in version.record.data)
        )


def compact_header() -> HostedVersion:
    """One line for a widget in another site: the title, and "About" for the rest. A
    guest runs the version the link names (or asked for), else the newest: no picker."""
    title, more = st.columns([4, 1], vertical_alignment="center", wrap=False)
    title.markdown(f"#### {plain(newest.title)}")
    chosen = choices[index]
    if not principal.guest:
        chosen = title.selectbox(
            "Version", choices, index=index, format_func=label, key=f"version:{name}"
        )
    with more.popover("About", icon=":material/info:", width="stretch"):
        about(chosen)
    short = first_line(newest.description, limit=300)
    if short and len(short) <= SHORT_LINE:
        st.caption(safe_markdown(short))
    return chosen


def full_header() -> HostedVersion:
    """The title, the description's first lines, the version (chosen here unless a guest
    holds the link) and who published it."""
    if not principal.guest:
        st.page_link("views/catalog.py", label="All models", icon=":material/arrow_back:")
    st.title(plain(newest.title))
    st.markdown(safe_markdown(first_line(newest.description, limit=300)))
    top_left, top_right = st.columns([3, 1], vertical_alignment="bottom")
    chosen = choices[index]
    if not principal.guest:
        chosen = top_right.selectbox(
            "Version", choices, index=index, format_func=label, key=f"version:{name}"
        )
        top_left.markdown(version_badges(chosen))
    top_left.caption(
        f":material/person: {chosen.record.owner} · :material/folder: {chosen.record.project} · "
        f"version {chosen.version}, published {chosen.record.published_at:%Y-%m-%d}"
    )
    return chosen


chosen = compact_header() if compact else full_header()
if chosen.status.value == "deprecated":
    instead = chosen.record.replaced_by
    st.warning(
        f"Version {chosen.version} is deprecated"
        + (f": use version {instead} instead." if instead else ".")
        + " It still runs, but it will not be kept for ever.",
        icon=":material/warning:",
    )

if compact:
    run_tab = st.container()
else:
    run_tab, about_tab, runs_tab = st.tabs(["Run it", "About", "Your recent runs"])
    with about_tab:
        about(chosen)
    with runs_tab:
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
# In a widget, a required setting not chosen yet is named beside Launch rather than marked
# in red under its field before the person had a chance to choose it.
unchosen = [p for p in live if p.endswith(MISSING)] if compact else []
problems: list[str] = [
    *(p for p in live if p not in unchosen),
    *(p for p in refused_before if p not in live),
]
fields: form.Field | None = None


def waiting_words() -> str | None:
    """Why Launch waits, if it does: the settings still to choose, and how many to fix."""
    if not live:
        return None
    titles = {c.name: c.title for c in fields.children} if fields is not None else {}
    named = [
        plain(titles.get(path, path))
        for path in (p.removesuffix(MISSING).removeprefix("conf.") for p in unchosen)
    ]
    rest = len(live) - len(unchosen)
    if not named:
        return f":material/block: Launch waits for {rest} setting(s) marked above to be set right."
    also = f", and {rest} setting(s) marked above to be set right" if rest else ""
    return f":material/block: Launch waits for you to choose {', '.join(named)}{also}."


def part(title: str, icon: str) -> None:
    """A part of the form's heading: in small type in a widget."""
    if compact:
        st.markdown(f"**{icon} {title}**")
    else:
        st.subheader(f"{icon} {title}")


with run_tab:
    inputs: dict[str, list[str]] | None = None
    if "inputs" in parameters:
        part("Your inputs", ":material/folder_open:")
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
        inputs = explorer.draw([p for p in problems if p.startswith("inputs")], compact=compact)

    conf: Any = None
    if "conf" in parameters:
        part("Settings", ":material/tune:")
        conf_errors, _ = form.errors_by_field(problems, "conf")
        fields = form.form_fields(property_schema(schema, "conf"), schema)
        conf = form.render(
            fields,
            key=f"conf:{form_key}",
            initial=earlier.get("conf"),
            errors=conf_errors,
            compact=compact,
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
    # A guest's results go to the link's own folder: nothing to choose, so a widget says nothing.
    if "output" in parameters and not (compact and principal.guest):
        part("Results", ":material/output:")
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
            st.error(safe_markdown(problem), icon=":material/error:")

    secrets: dict[str, str] = {}
    remember = False
    if chosen.secrets:
        part("Credentials", ":material/key:")
        st.caption(
            "Used only by this run and deleted when it ends; never stored with the run or shown "
            "in its logs."
        )
        for secret, spec in chosen.secrets.items():
            value = st.text_input(
                secret + (" *" if spec.required else ""),
                type="password",
                key=f"secret:{form_key}:{secret}",
                help=safe_markdown(spec.description) or None,
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
            st.error(safe_markdown(problem), icon=":material/error:")

    others = [p for p in problems if not p.startswith(("conf", "inputs", "output", "secrets"))]
    for problem in others:  # a model's own checks say these in its author's words
        st.error(safe_markdown(problem))
    refused = [p for p in problems if p not in live]
    if refused:
        st.error(
            f"The run was not started: {len(refused)} thing(s) to fix, shown above.",
            icon=":material/block:",
        )
    waits = waiting_words()
    if compact:  # Launch, and why it waits beside it
        at_launch, beside = st.columns([1, 2], vertical_alignment="center", wrap=False)
        if waits:
            beside.caption(waits)
    else:
        if waits:
            st.caption(waits)
        at_launch = st.container()

    if (
        at_launch.button(
            "Launch",
            type="primary",
            icon=":material/rocket_launch:",
            key=f"launch:{form_key}",
            disabled=bool(live),
        )
        and not live
    ):  # (a press sent with the typing that made a setting wrong starts nothing)
        # Said at once, before the launch's round trip: the run page follows when it is made.
        starting = st.status("Starting…", state="running")
        try:
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
            starting.update(label="Not started", state="error")
            st.error(f"The run was not started: {plain_error(exc)}")
        else:
            st.session_state.pop(problems_key, None)
            session.forget(keep_models=True)
            st.session_state[f"launched:{run.id}"] = True  # the run page says so at once
            go("run", run=str(run.id))
