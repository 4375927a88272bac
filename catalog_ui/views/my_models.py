"""My models, for authors: versions and their status, deprecate / archive / restore,
scope, share links (create, copy, revoke, embed) and usage over time."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from accelerator_prefect.catalog import HostedModel
from accelerator_prefect.manifest import Status
from catalog_ui.parts import ago, go, require_session, scope_badge
from catalog_ui.session import halt, plain_error, reported

session = require_session()
acc, principal = session.acc, session.principal

st.title("My models")

with reported("read the catalog"), st.spinner("Reading your models…"):
    every = session.cached("catalog", acc.catalog)
mine = [m for m in every if principal.operator or m.latest.record.owner == principal.name]
if not mine:
    st.info(
        "You own no hosted model yet. Describe your model in a manifest "
        "(`deployments/<model>.yaml`) and publish it with `acc publish`; see the authors' guide."
    )
    halt()

name = st.selectbox(
    "Model",
    [m.name for m in mine],
    format_func=lambda n: next(m.latest.title for m in mine if m.name == n) + f"  ({n})",
    key="mm-model",
)
model: HostedModel = next(m for m in mine if m.name == name)
latest = model.latest
st.markdown(
    f"{scope_badge(latest.record.scope.value)} owned by **{latest.record.owner}** in project "
    f"**{latest.record.project}**"
)
if st.button("Open its page", icon=":material/open_in_new:", key="mm-open"):
    go("model", model=name)

versions_tab, links_tab, usage_tab = st.tabs(["Versions", "Share links", "Usage"])


def changed(message: str) -> None:
    session.forget()
    st.toast(message, icon=":material/check:")


with versions_tab:
    import pandas as pd

    with reported("read the versions"):
        infos = acc.versions(name)
    st.dataframe(
        pd.DataFrame(
            {
                "version": [i.version for i in infos],
                "status": [
                    i.status.value + (f" → {i.replaced_by}" if i.replaced_by else "") for i in infos
                ],
                "published": [i.published_at for i in infos],
                "by": [i.published_by for i in infos],
                "commit": [(i.commit or "")[:10] for i in infos],
                "runs": [i.runs for i in infos],
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "published": st.column_config.DatetimeColumn("published", format="YYYY-MM-DD HH:mm")
        },
    )
    st.caption(
        "Deprecated versions still run, with a warning naming their replacement. Archived "
        "versions leave the catalog and take no new runs; their runs and results stay."
    )
    pick, action, instead, go_col = st.columns([2, 2, 2, 1], vertical_alignment="bottom")
    version = pick.selectbox("Version", [i.version for i in infos], key="mm-version")
    status = action.selectbox("Make it", ["deprecated", "archived", "active"], key="mm-status")
    replacement = None
    if status == "deprecated":
        replacement = instead.selectbox(
            "Replaced by",
            [None, *(i.version for i in infos if i.version != version)],
            format_func=lambda v: v or "the next newer version",
            key="mm-replaced-by",
        )
    if go_col.button("Apply", type="primary", key="mm-apply"):
        try:
            with st.spinner("Saving…"):
                if status == "deprecated":
                    acc.deprecate(name, version, replaced_by=replacement)
                elif status == "archived":
                    acc.archive(name, version)
                else:
                    acc.restore(name, version)
        except Exception as exc:
            st.error(f"Not changed: {plain_error(exc)}")
        else:
            changed(f"{name} {version} is now {status}")
            st.rerun()
    st.markdown("**Who may see and run it**")
    scopes = {
        "private": "private: you (and operators)",
        "project": f"project: the members of {latest.record.project}",
        "link": "link: whoever holds a link you share",
        "public": "public: everyone signed in",
    }
    current = latest.record.scope.value
    who, apply_col = st.columns([4, 1], vertical_alignment="bottom")
    scope = who.selectbox(
        "Access",
        list(scopes),
        index=list(scopes).index(current),
        format_func=scopes.__getitem__,
        key="mm-scope",
        help="Every version at once, from now on; nothing is published again.",
    )
    if latest.record.scope_changed_by and latest.record.scope_changed_at:
        st.caption(
            f"Set to {current} by {latest.record.scope_changed_by} "
            f"{ago(latest.record.scope_changed_at)}."
        )
    if apply_col.button("Apply", key="mm-scope-apply", disabled=scope == current):
        try:
            with st.spinner("Saving…"):
                acc.set_access(name, scope)
        except Exception as exc:
            st.error(f"Not changed: {plain_error(exc)}")
        else:
            changed(f"{name} is now {scope}: every version")
            st.rerun()

with links_tab:
    st.caption(
        "A link opens this model to whoever holds it, without an account: they can run it "
        "and see their own runs, nothing else."
    )
    with st.form("mm-new-link", border=True):
        a, b = st.columns(2)
        link_version = a.selectbox(
            "Opens",
            [None, *(i.version for i in infos if i.status != Status.archived)],
            format_func=lambda v: f"only version {v}" if v else "every version",
        )
        days = b.number_input("Expires after (days, 0 = never)", min_value=0, value=30, step=1)
        create = st.form_submit_button("Create a link", type="primary", icon=":material/add_link:")
    if create:
        try:
            made = acc.share_link(
                name,
                version=link_version,
                expires_in=timedelta(days=int(days)) if days else None,
            )
        except Exception as exc:
            st.error(f"No link made: {plain_error(exc)}")
        else:
            st.session_state["mm-made-link"] = made
    shown = st.session_state.get("mm-made-link")
    if shown is not None and shown.model == name and shown.url:
        made = shown
        st.success("Link created. Copy it now: it is shown only once.")
        st.code(made.url, language=None)
        from accelerator_prefect.client import embed_snippet

        st.caption("To put the launch form into another web page, paste this where it should go:")
        st.code(embed_snippet(made.url, latest.title), language="html")
    with reported("read the links"):
        links = acc.links(name)
    for shared in links:
        text, when, revoke = st.columns([4, 3, 1], vertical_alignment="center")
        opens = f"version {shared.version}" if shared.version else "every version"
        text.markdown(
            f"`{shared.id}` · opens {opens}"
            + ("" if shared.active else " · :gray-badge[revoked or expired]")
        )
        when.caption(
            f"made by {shared.created_by} {ago(shared.created)}"
            + (f" · expires {shared.expires:%Y-%m-%d}" if shared.expires else " · never expires")
        )
        if shared.active and revoke.button("Revoke", key=f"revoke:{shared.id}"):
            try:
                acc.revoke_link(shared.id)
            except Exception as exc:
                st.error(f"Not revoked: {plain_error(exc)}")
            else:
                changed(f"link {shared.id} revoked")
                st.rerun()
    if not links:
        st.caption("No links yet.")

with usage_tab:
    import pandas as pd

    days_back = st.select_slider(
        "Over the last", [7, 30, 90, 365], value=30, format_func=lambda d: f"{d} days"
    )
    with reported("read the usage"), st.spinner("Counting runs…"):
        rows = acc.usage(name, since=timedelta(days=days_back))
    if not rows:
        st.caption("No finished runs in that time.")
    else:
        frame = pd.DataFrame(
            {
                "day": [pd.Timestamp(r.day) for r in rows],
                "version": [r.version for r in rows],
                "runs": [r.runs for r in rows],
                "users": [r.users for r in rows],
                "success rate": [r.success_rate for r in rows],
                "median (s)": [r.median_seconds for r in rows],
                "p95 (s)": [r.p95_seconds for r in rows],
            }
        )
        a, b, c = st.columns(3)
        a.metric("Runs", int(frame["runs"].sum()))
        b.metric("Versions used", frame["version"].nunique())
        c.metric(
            "Succeeded",
            f"{(frame['success rate'] * frame['runs']).sum() / frame['runs'].sum():.0%}",
        )
        st.markdown("**Runs per day, by version**")
        per_day = frame.pivot_table(index="day", columns="version", values="runs", aggfunc="sum")
        st.bar_chart(per_day.fillna(0))
        st.dataframe(frame, hide_index=True, width="stretch")
