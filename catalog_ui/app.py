"""The catalog's entry script: who is signed in decides which pages exist.

Served by ``acc up`` (``streamlit run catalog_ui/app.py``). A shared link
(``?model=…&link=…``) signs its holder in as a guest of that model;
``&embed=true`` shows only the launch form and the run, for a widget in
another site.
"""

from __future__ import annotations

import streamlit as st

from accelerator_prefect.access import Principal
from accelerator_prefect.errors import AccessDenied
from catalog_ui import cookies
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
checked = False  # whether who is signed in was looked up in this draw already

# A browser that signed in before (a reload, a new tab, a shared run link) is still signed
# in while its session cookie holds, unless it signed out in this page's life.
saved = st.context.cookies.get(cookies.COOKIE)
if signed_in is None and saved and not link and not st.session_state.get(sessions.SIGNED_OUT):
    try:
        signed_in = sessions.resume(saved)
        checked = True
    except Exception as exc:  # the platform not answering: not the cookie's fault
        sessions.stop_with_a_page(exc, guest=False)
    if signed_in is None:  # expired, its token revoked, or signed out everywhere
        sessions.sign_out(why=sessions.SESSION_ENDED)

if link and model and (signed_in is None or signed_in.link != link):
    try:
        with st.spinner("Opening the shared model…"):
            kept = cookies.guest_cookie(link)
            saved_guest = st.context.cookies.get(kept) if kept else None
            signed_in = sessions.sign_in_with_link(model, link, saved_guest)
            checked = True
    except Exception as exc:
        sessions.stop_with_a_page(exc, guest=True)


# What the browser is to keep or drop (the routes of serve.py set the cookie). A new ticket
# is said on the next two draws: a draw cut short by a rerun can drop its script unrun, and
# storing the same ticket twice changes nothing.
def keep_ticket(key: str) -> None:
    """Have the browser keep the ticket waiting under ``key`` (said on two draws)."""
    pending: tuple[str, int] | None = st.session_state.pop(key, None)
    if pending:
        ticket, draws = pending
        if draws > 1:
            st.session_state[key] = (ticket, draws - 1)
        st.html(cookies.store_script(ticket), unsafe_allow_javascript=True, width="content")


keep_ticket(sessions.STORE_TICKET)
if st.session_state.pop(sessions.FORGET_COOKIE, False) and saved:
    st.html(cookies.forget_script(), unsafe_allow_javascript=True, width="content")


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

# Who is signed in is looked up once a draw (a link revoked, a token expired since); the
# sidebar and the page use what this found.
principal: Principal | None = None
if signed_in is not None:
    try:
        principal = signed_in.principal if checked else signed_in.check()
    except Exception as exc:
        if not isinstance(exc, AccessDenied) or signed_in.how == "link":
            sessions.stop_with_a_page(exc, guest=signed_in.how == "link")
        sessions.sign_out(why=sessions.TOKEN_ENDED)
        signed_in = None

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

if signed_in is not None and principal is not None and not embed:
    with st.sidebar:
        if principal.guest:
            st.caption(f"Guest of **{signed_in.model}** through a shared link")
        else:
            role = "operator" if principal.operator else "signed in"
            st.caption(f":material/person: **{principal.name}** · {role}")
            if principal.projects:
                st.caption("Projects: " + ", ".join(sorted(principal.projects)))
        out, everywhere = st.columns(2)
        leave = out.button("Sign out", icon=":material/logout:", key="sign-out")
        leave_all = signed_in.how in ("token", "cookie") and everywhere.button(
            "Everywhere",
            icon=":material/devices:",
            key="sign-out-everywhere",
            help="Sign out of every browser and device you signed in to.",
        )
        if leave or leave_all:
            oidc = signed_in.how == "oidc"
            sessions.sign_out(everywhere=bool(leave_all))
            st.query_params.clear()
            if oidc:
                st.logout()
            st.rerun()

try:
    current.run()
except Exception as exc:  # a failure no page said in its own words: a plain page, no crash
    sessions.stop_with_a_page(exc, guest=signed_in is not None and signed_in.how == "link")

# Which guest this browser is, kept once the page is drawn (below it, so a widget's layout
# does not move); a draw cut short keeps it for the next, and it is said on two draws.
keep_ticket(sessions.STORE_GUEST_TICKET)
