"""Sign in: a user name and personal token, or the organisation's identity provider."""

from __future__ import annotations

import streamlit as st

from catalog_ui import session as sessions
from catalog_ui.parts import AFTER_SIGN_IN

# Where the visitor was going (a bookmarked run or model), to go on there once signed in.
wanted = {k: st.query_params[k] for k in ("run", "model") if k in st.query_params}

_, middle, _ = st.columns([1, 2, 1])
with middle:
    st.title(":material/science: Model catalog")
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
        submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
    if submitted:
        try:
            with st.spinner("Checking your token…"):
                sessions.sign_in_with_token(user, token)
        except Exception as exc:
            st.error(f"Not signed in: {sessions.plain_error(exc)}")
        else:
            st.session_state[AFTER_SIGN_IN] = wanted
            st.rerun()
    st.caption(
        "Got a link to one model? Open the link itself: it signs you in as a guest of that model."
    )
