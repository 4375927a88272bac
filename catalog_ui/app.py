"""The catalog's entry script: who is signed in decides which pages exist.

Served by ``acc up`` (``streamlit run catalog_ui/app.py``). A shared link
(``?model=…&link=…``) signs its holder in as a guest of that model;
``&embed=true`` shows only the launch form and the run, for a widget in
another site.
"""

from __future__ import annotations

import streamlit as st

from catalog_ui import session as sessions
from catalog_ui.parts import PAGES, URL_PATHS, embedded

st.set_page_config(
    page_title="Model catalog",
    page_icon=":material/science:",
    layout="wide",
    initial_sidebar_state="auto",
)

params = st.query_params
embed = embedded()
link, model = params.get("link"), params.get("model")
signed_in = sessions.current()

if link and model and (signed_in is None or signed_in.link != link):
    try:
        with st.spinner("Opening the shared model…"):
            signed_in = sessions.sign_in_with_link(model, link)
    except Exception as exc:
        st.error(
            f"This link does not open anything: {sessions.plain_error(exc)} "
            "Ask whoever shared it for a new one."
        )
        st.stop()


def page(
    name: str, title: str, icon: str, *, default: bool = False, hidden: bool = False
) -> st.Page:
    return st.Page(
        PAGES[name],
        title=title,
        icon=icon,
        url_path=URL_PATHS[name],
        default=default,
        visibility="hidden" if hidden else "visible",
    )


if signed_in is None and sessions.oidc_configured() and st.user.is_logged_in:
    try:
        signed_in = sessions.sign_in_with_oidc(st.user.to_dict())
    except Exception as exc:
        st.error(f"Could not sign you in: {sessions.plain_error(exc)}")

if signed_in is None:
    # Every address answers with the sign-in form, then shows what it names.
    pages: list[st.Page] | dict[str, list[st.Page]] = [
        page("sign_in", "Sign in", ":material/login:", default=True),
        *(page(n, n, ":material/lock:", hidden=True) for n in PAGES if n != "sign_in"),
    ]
elif signed_in.guest:
    pages = [
        page("model", "Model", ":material/science:", default=True),
        page("run", "Run", ":material/play_circle:", hidden=True),
    ]
else:
    pages = {
        "Find and run": [
            page("catalog", "Catalog", ":material/apps:", default=True),
            page("model", "Model", ":material/science:", hidden=True),
            page("run", "Run", ":material/play_circle:", hidden=True),
            page("sign_in", "Sign in", ":material/login:", hidden=True),
        ],
        "Yours": [
            page("my_runs", "My runs", ":material/history:"),
            page("my_models", "My models", ":material/inventory_2:"),
        ],
    }

current = st.navigation(pages, position="hidden" if embed or signed_in is None else "sidebar")

if signed_in is not None and not embed:
    with st.sidebar:
        principal = signed_in.principal
        if principal.guest:
            st.caption(f"Guest of **{signed_in.model}** through a shared link")
        else:
            role = "operator" if principal.operator else "signed in"
            st.caption(f":material/person: **{principal.name}** · {role}")
            if principal.projects:
                st.caption("Projects: " + ", ".join(sorted(principal.projects)))
        if st.button("Sign out", icon=":material/logout:", key="sign-out"):
            oidc = signed_in.how == "oidc"
            sessions.sign_out()
            st.query_params.clear()
            if oidc:
                st.logout()
            st.rerun()

current.run()
