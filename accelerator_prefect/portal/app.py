"""The portal's FastAPI application: ``/api/v1``, its OpenAPI document and docs page."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response

from accelerator_prefect.errors import QuotaExceeded
from accelerator_prefect.settings import Settings, get_settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, api_url: str | None = None) -> FastAPI:
    """The portal for the platform ``settings`` describe (the environment's by default).

    It reaches Prefect with the platform's auth string and storage with its credentials;
    each request acts for the token or link it carries, and for nobody else.
    """
    from fastapi.middleware.cors import CORSMiddleware

    from accelerator_prefect import __name__ as package
    from accelerator_prefect.portal import (
        limits,
        links,
        models,
        problems,
        publish,
        runs,
        storage,
    )

    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio
        import contextlib

        from accelerator_prefect.client import AsyncAccelerator, resolve_api_url
        from accelerator_prefect.webhooks import WebhookDispatcher, check_webhook_hosts

        check_webhook_hosts(settings.webhook_hosts)  # a malformed entry stops the portal here
        platform = AsyncAccelerator(resolve_api_url(settings, api_url), settings=settings)
        await platform.client()
        platform.storage_fs()
        app.state.platform = platform
        app.state.stopping = asyncio.Event()
        restore = _on_stop(app.state.stopping.set)
        # A portal that may send no webhook (no allowed hosts) dispatches none: the
        # deliveries other portals took stay theirs.
        webhooks = (
            asyncio.create_task(
                WebhookDispatcher().run_forever(platform, settings), name="acc-webhooks"
            )
            if settings.webhook_hosts
            else None
        )
        try:
            yield
        finally:
            restore()
            if webhooks is not None:
                webhooks.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await webhooks
            await platform.aclose()

    app = FastAPI(
        title="accelerator-prefect portal",
        summary="Run hosted scientific models: find them, launch them, follow and fetch "
        "their runs, with a personal token or a shared link.",
        version=_version(package),
        lifespan=lifespan,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    problems.install(app)

    @app.exception_handler(QuotaExceeded)
    async def _quota(_: Request, exc: QuotaExceeded) -> Response:
        return problems.problem(
            429, "Too many runs at once", str(exc), "quota-exceeded", retry_after=10
        )

    @app.exception_handler(limits.RateLimited)
    async def _rate_limited(_: Request, exc: limits.RateLimited) -> Response:
        return problems.problem(
            429, "Too many requests", str(exc), "rate-limited", retry_after=exc.retry_after
        )

    for module in (models, runs, links, storage, publish):
        app.include_router(module.router, prefix=PREFIX)
    if settings.portal_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.portal_cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Prefer", "Range"],
            expose_headers=["Location", "Preference-Applied", "Content-Range", "Retry-After"],
        )

    # Uploads count their own bytes as they stream (storage, publish); every other body is
    # refused past the limit, declared or not.
    exempt = {f"{PREFIX}/storage/file", f"{PREFIX}/publish"}
    app.add_middleware(BodyLimit, limit=settings.portal_max_body_bytes, exempt=exempt)

    @app.get(f"{PREFIX}/health", tags=["portal"], summary="Whether the portal answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _on_stop(stop: Callable[[], None]) -> Callable[[], None]:
    """Call ``stop`` on this loop when the server is told to stop (SIGTERM, SIGINT), before
    the server's own handler; what puts the handlers back.

    Log streams end then (their clients reconnect with ``Last-Event-ID``, to this portal's
    successor): a stream left open would hold the server's graceful shutdown until its run
    ended."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(sig: int, frame: Any) -> None:
        loop.call_soon_threadsafe(stop)
        before = previous.get(sig)
        if callable(before):
            before(sig, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (an app served in a test's thread)
            return lambda: None

    def restore() -> None:
        for sig, before in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, before)

    return restore


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("accelerator-prefect")
    except PackageNotFoundError:
        return "0"


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, before the route reads it.

    A declared ``Content-Length`` over the limit is refused at once. A body sent in chunks,
    with no length declared, is read up to the limit and handed on, or refused once it
    passes it. A plain ASGI middleware: it adds no task or stream to a request, as
    Starlette's ``BaseHTTPMiddleware`` would.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: Collection[str]) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(scope, receive, send)
            else:  # the server stops a body at its declared length
                await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no body at all
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        from accelerator_prefect.portal import problems

        refusal = problems.problem(
            413,
            "Request too large",
            f"request bodies are limited to {self.limit:,} bytes",
            "too-large",
        )
        await refusal(scope, receive, send)
