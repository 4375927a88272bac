"""How the catalog is served: ``app.py`` as an ``st.App``, with the two routes that keep a
signed-in browser signed in (see :mod:`catalog_ui.cookies`).

``streamlit run catalog_ui/serve.py`` serves it (``acc up`` does).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from catalog_ui import cookies

MAX_TICKET = 4096  # bytes


def _same_origin(request: Request) -> bool:
    """Whether the request comes from a page of this catalog (a browser always says where a
    ``fetch`` POST comes from): another site cannot plant or drop a session."""
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    return origin is not None and host is not None and origin.split("://", 1)[-1] == host


def _refused(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


async def store(request: Request) -> Response:
    """Keep a ticket the sign-in page has just issued as this browser's session cookie."""
    if not _same_origin(request):
        return _refused(403, "sessions are kept only for the catalog's own pages")
    body = await request.body()
    try:
        ticket = cookies.read(body[:MAX_TICKET].decode("utf-8", "replace"), cookies.FRESH_SECONDS)
    except RuntimeError:  # no key to check it with: this catalog keeps no sessions
        return _refused(503, "this catalog does not keep sessions; sign in on each visit")
    if ticket is None or len(body) > MAX_TICKET:
        return _refused(400, "not a fresh sign-in; sign in again")
    response = Response(status_code=204)
    response.set_cookie(
        cookies.COOKIE,
        body.decode(),
        max_age=ticket.lifetime if ticket.remember else None,  # else: until the browser closes
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def sign_out(request: Request) -> Response:
    """Drop this browser's session cookie."""
    if not _same_origin(request):
        return _refused(403, "only the catalog's own pages sign out")
    response = Response(status_code=204)
    response.delete_cookie(cookies.COOKIE, path="/", httponly=True, samesite="lax")
    return response


app = st.App(
    str(Path(__file__).with_name("app.py")),
    routes=[
        Route(cookies.STORE_ROUTE, store, methods=["POST"]),
        Route(cookies.SIGN_OUT_ROUTE, sign_out, methods=["POST"]),
    ],
)
