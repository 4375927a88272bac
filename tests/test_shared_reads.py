"""Simultaneous launches share a read only if it had not begun when they asked: a launch
asked for after a read went out never gets that read's (possibly stale) answer."""

from __future__ import annotations

import asyncio

import pytest

from accelerator_prefect.client import _SharedReads
from accelerator_prefect.errors import AccessDenied


def test_callers_asking_together_send_one_read() -> None:
    sent = 0

    async def read() -> int:
        nonlocal sent
        sent += 1
        await asyncio.sleep(0)
        return sent

    async def main() -> list[int]:
        shared = _SharedReads()
        return await asyncio.gather(*(shared.read("principal", read) for _ in range(20)))

    assert asyncio.run(main()) == [1] * 20
    assert sent == 1


def test_a_caller_arriving_once_the_read_is_under_way_sends_its_own() -> None:
    answers = iter(["token valid", "token revoked"])

    async def main() -> tuple[str, str]:
        under_way, done = asyncio.Event(), asyncio.Event()

        async def read() -> str:
            answer = next(answers)
            under_way.set()
            await done.wait()
            return answer

        shared = _SharedReads()
        first = asyncio.ensure_future(shared.read("principal", read))
        await under_way.wait()  # the first read has gone out; the token is revoked now
        second = asyncio.ensure_future(shared.read("principal", read))
        await asyncio.sleep(0)
        done.set()
        return await first, await second

    assert asyncio.run(main()) == ("token valid", "token revoked")


def test_a_refusal_reaches_every_caller_that_shared_the_read() -> None:
    async def read() -> None:
        await asyncio.sleep(0)
        raise AccessDenied("invalid token")

    async def main() -> list[BaseException | None]:
        shared = _SharedReads()
        return await asyncio.gather(
            *(shared.read("principal", read) for _ in range(3)), return_exceptions=True
        )

    assert [str(e) for e in asyncio.run(main())] == ["invalid token"] * 3
    with pytest.raises(AccessDenied):
        asyncio.run(_SharedReads().read("principal", read))
