"""How the catalog is served: ``app.py`` as an ``st.App``, with the two routes that keep a
signed-in browser signed in (see :mod:`catalog_ui.cookies`), and the one that sends all of
a run's outputs as one zip, for whoever that browser's session cookie names.

``streamlit run catalog_ui/serve.py`` serves it (``acc up`` does).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
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
    name: str | None = cookies.COOKIE
    if ticket.guest is not None:
        name = cookies.guest_cookie(ticket.guest.replace("accg_", "accl_", 1))
    if name is None:
        return _refused(400, "not a guest session of a link; open the link again")
    response.set_cookie(
        name,
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


def _opened(value: str | None, run_id: str) -> tuple[Any, Any, list[Any]] | int:
    """The client for the cookie's person, the run and its outputs, opened as that person
    (the service decides); else the status to answer: 401 without a session that holds,
    404 for a run that person may not read, exactly as for one that does not exist."""
    from accelerator_prefect.errors import NotFound
    from catalog_ui.session import client_for_cookie

    opened = client_for_cookie(value) if value else None
    if opened is None:
        return 401
    acc = opened[0]
    try:
        run = acc.run(run_id)
        return acc, run, run.outputs()
    except NotFound:
        acc.close()
        return 404
    except BaseException:
        acc.close()
        raise


async def outputs_zip(request: Request) -> Response:
    """Every output of a run, as one zip made while it is sent ("Download all")."""
    from accelerator_prefect.archive import outputs_zip as pieces
    from catalog_ui.session import plain_error

    run_id = request.path_params["run_id"]
    # Whoever this browser signed in as, then the guests it is of shared links.
    signed_in = request.cookies.get(cookies.COOKIE)
    held = [signed_in] if signed_in else []
    held += [v for k, v in request.cookies.items() if k.startswith(cookies.GUEST_COOKIE_PREFIX)]
    opened: tuple[Any, Any, list[Any]] | int = 401
    for value in held:
        try:
            found = await run_in_threadpool(_opened, value, run_id)
        except Exception as exc:  # the platform not answering, or worse: said, never a trace
            return _refused(503, plain_error(exc))
        opened = found if found != 401 else opened  # "no such run" outranks "sign in"
        if not isinstance(opened, int):
            break
    if opened == 401:
        return _refused(401, "sign in to the catalog first, then download again")
    if isinstance(opened, int):
        return _refused(404, "no such run")
    acc, run, files = opened

    def sent() -> Iterator[bytes]:
        try:
            yield from pieces(run, files)
        finally:
            acc.close()

    name = f"run-{run.id}-outputs.zip"
    return StreamingResponse(
        sent(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


app = st.App(
    str(Path(__file__).with_name("app.py")),
    routes=[
        Route(cookies.STORE_ROUTE, store, methods=["POST"]),
        Route(cookies.SIGN_OUT_ROUTE, sign_out, methods=["POST"]),
        Route(cookies.OUTPUTS_ROUTE, outputs_zip, methods=["GET"]),
    ],
)
