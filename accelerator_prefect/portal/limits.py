"""Rate limits of the portal, kept where every portal process sees them: Prefect's global
concurrency limits in rate mode (slots decay at the allowed rate), not one process's memory.

Each token or link gets a limit of its own, made on its first request; an address that
presents refused credentials too often waits too. A caller over a limit is answered 429
with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING

from accelerator_prefect.errors import AcceleratorError

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient


class RateLimited(AcceleratorError):
    """Too many requests; ``retry_after`` says how many seconds to wait."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, round(retry_after))


def limit_name(kind: str, who: str) -> str:
    """The limit of one caller: its kind and a digest (no credential ever names a limit)."""
    return f"acc-rate-{kind}-{hashlib.sha256(who.encode()).hexdigest()[:20]}"


async def take(client: PrefectClient, name: str, per_second: float, burst: int, what: str) -> None:
    """Take one slot of the rate limit ``name`` (made on first use), or :class:`RateLimited`."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    if per_second <= 0:
        return
    # A limit's size is part of its name: portals with other settings keep limits apart.
    name = f"{name}-b{burst}-r{round(per_second * 1000)}"
    from prefect.exceptions import PrefectHTTPStatusError

    for _ in range(2):
        try:
            response = await client.increment_concurrency_slots([name], 1, "rate_limit")
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            retry = float(exc.response.headers.get("Retry-After") or 1 / per_second)
            raise RateLimited(f"too many requests {what}; try again in a moment", retry) from None
        if response.json():
            return
        # No such limit yet (the server answers with no limit acquired): make it.
        limit = GlobalConcurrencyLimitCreate(
            name=name, limit=burst, slot_decay_per_second=per_second
        )
        with contextlib.suppress(ObjectAlreadyExists):  # another request made it first
            await client.create_global_concurrency_limit(limit)
    raise RateLimited(f"too many requests {what}; try again in a moment", 1 / per_second)
