"""The portal's FastAPI application: ``/api/v1``, its OpenAPI document and docs page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from accelerator_prefect.errors import QuotaExceeded
from accelerator_prefect.settings import Settings, get_settings

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
        webhooks = asyncio.create_task(
            WebhookDispatcher().run_forever(platform, settings), name="acc-webhooks"
        )
        try:
            yield
        finally:
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

    @app.middleware("http")
    async def body_limit(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        declared = request.headers.get("content-length", "")
        is_upload = request.url.path in (f"{PREFIX}/storage/file", f"{PREFIX}/publish")
        if not is_upload and declared.isdigit() and int(declared) > settings.portal_max_body_bytes:
            return problems.problem(
                413,
                "Request too large",
                f"request bodies are limited to {settings.portal_max_body_bytes:,} bytes",
                "too-large",
            )
        return await call_next(request)

    @app.get(f"{PREFIX}/health", tags=["portal"], summary="Whether the portal answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("accelerator-prefect")
    except PackageNotFoundError:
        return "0"
