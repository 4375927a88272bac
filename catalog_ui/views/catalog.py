"""The catalog: every model this user may see, found by words, project, scope or tag.

Models of the user's own projects come first, then the public catalog (and,
for operators, every other project), each told apart.
"""

from __future__ import annotations

import streamlit as st

from accelerator_prefect.catalog import HostedModel
from catalog_ui.markdown import plain, safe_markdown
from catalog_ui.parts import first_line, go, require_session, version_badges
from catalog_ui.session import reported

session = require_session()
principal = session.principal

st.title("Model catalog")
st.caption("Hosted models you may run with your own data. Open one to see what it does.")

with reported("read the catalog"), st.spinner("Reading the catalog…"):
    models = session.cached("catalog", session.acc.catalog)


def words(model: HostedModel) -> str:
    v = model.latest
    return " ".join([model.name, v.title, v.description, *v.record.tags]).lower()


search, projects_col, scopes_col, tags_col = st.columns([3, 2, 2, 2])
query = search.text_input(
    "Search", placeholder="Search by name, description or tag", key="catalog-search"
)
projects = projects_col.multiselect(
    "Project",
    sorted({m.latest.record.project for m in models}),
    key="catalog-projects",
    placeholder="any project",
)
scopes = scopes_col.multiselect(
    "Scope",
    sorted({m.latest.record.scope.value for m in models}),
    key="catalog-scopes",
    placeholder="any scope",
)
tags = tags_col.multiselect(
    "Tag",
    sorted({t for m in models for t in m.latest.record.tags}),
    key="catalog-tags",
    placeholder="any tag",
)

shown = [
    m
    for m in models
    if all(w in words(m) for w in query.lower().split())
    and (not projects or m.latest.record.project in projects)
    and (not scopes or m.latest.record.scope.value in scopes)
    and (not tags or set(tags) & set(m.latest.record.tags))
]


def space(model: HostedModel) -> str:
    record = model.latest.record
    if record.owner == principal.name or principal.member_of(record.project):
        return "Your projects"
    if record.scope.value == "public":
        return "Public catalog"
    return "Other projects" if principal.operator else "Shared with you"


def card(model: HostedModel) -> None:
    v = model.latest
    with st.container(border=True, height="stretch"):
        st.markdown(f"#### {plain(v.title)}")
        st.markdown(version_badges(v))
        st.markdown(safe_markdown(first_line(v.description)) or "No description yet.")
        st.caption(f":material/person: {v.record.owner} · :material/folder: {v.record.project}")
        if v.record.tags:
            st.markdown(" ".join(f":gray-badge[{t}]" for t in v.record.tags))
        if st.button("Open", key=f"open-{model.name}", icon=":material/arrow_forward:"):
            go("model", model=model.name)


if not models:
    st.info(
        "No model is open to you yet. Ask a colleague to share one with you, or to add you "
        "to their project."
    )
elif not shown:
    st.info("No model matches your search. Clear the search or the filters to see them all.")

ORDER = ["Your projects", "Public catalog", "Shared with you", "Other projects"]
for title in ORDER:
    group = [m for m in shown if space(m) == title]
    if not group:
        continue
    st.subheader(f"{title} ({len(group)})")
    for start in range(0, len(group), 3):
        columns = st.columns(3)
        for column, model in zip(columns, group[start : start + 3], strict=False):
            with column:
                card(model)
