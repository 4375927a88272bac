"""The product's connection to a Prefect API: Prefect's client, retrying busy writes quickly.

On SQLite (the embedded default) a write that meets another one is refused at
once: the server answers 503, and Prefect's client tries again after 2, then 4,
8 … seconds. Such a collision is over in milliseconds, so the product's clients
try again after ~10 ms, doubling up to six times, and only then leave the rest
to Prefect's own back-off. The server rolled the refused write back, so trying
it again is what Prefect's client does anyway, only sooner.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

FIRST_RETRY_S = 0.01
RETRIES = 6  # ~10 + 20 + … + 320 ms: 0.6 s, then Prefect's 2 s back-off


class BusyRetry(httpx.AsyncBaseTransport):
    """An HTTP transport that sends a request again, soon, when the server is busy (503)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        delay = FIRST_RETRY_S
        for _ in range(RETRIES):
            response = await self._inner.handle_async_request(request)
            # A Retry-After is a server (or proxy) asking for a pause: Prefect honours it.
            if response.status_code != 503 or "retry-after" in response.headers:
                return response
            await response.aclose()
            await asyncio.sleep(delay * random.uniform(1.0, 1.5))
            delay *= 2
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def prefect_client(
    api_url: str, api_key: str | None = None, *, auth_string: str | None = None
) -> PrefectClient:
    """A Prefect client for ``api_url`` whose busy writes are retried within milliseconds.

    It sends the Prefect API's auth string: ``auth_string``, else the platform's own
    (:meth:`~accelerator_prefect.settings.Settings.service_auth_string`); ``""`` sends
    none (another workspace's API, reached with its ``api_key``). Connection limits
    are Prefect's own (16 connections, 8 kept alive for 25 s).
    """
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import PREFECT_API_ENABLE_HTTP2

    from accelerator_prefect.settings import get_settings

    inner = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=25),
        http2=PREFECT_API_ENABLE_HTTP2.value(),
    )
    if auth_string is None and api_key is None:
        auth_string = get_settings().service_auth_string()
    return PrefectClient(
        api_url,
        api_key=api_key,
        auth_string=auth_string or None,
        httpx_settings={"transport": BusyRetry(inner)},
    )
