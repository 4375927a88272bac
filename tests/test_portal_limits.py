"""The portal's limits, each a setting, each tried: request rates per token, refused sign-ins
per address, runs at once per user, body and upload sizes, CORS, and the work pool's
concurrency. Their state lives in Prefect's database, shared by every portal process."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import PlatformInfo, free_port, start_portal, stop_process
from tests.test_portal import SECRET, _http
from tests.test_portal import people as people
from tests.test_portal import slow_model as slow_model

ORIGIN = "https://lab.example.org"
LIMITS = {
    "ACC_PORTAL_RATE_PER_SECOND": "0.5",
    "ACC_PORTAL_RATE_BURST": "4",
    "ACC_SIGNIN_FAILURES_PER_MINUTE": "3",
    "ACC_MAX_ACTIVE_RUNS_PER_USER": "1",
    "ACC_PORTAL_MAX_BODY_BYTES": "2000",
    "ACC_PORTAL_MAX_UPLOAD_BYTES": "3000",
    "ACC_PORTAL_CORS_ORIGINS": json.dumps([ORIGIN]),
}


@pytest.fixture(scope="module")
def strict(platform: PlatformInfo) -> Iterator[str]:
    """A second portal process on the same platform, with small limits."""
    pid, url = start_portal(platform.home, platform.api_url, free_port(), env=LIMITS)
    yield url
    stop_process(pid)


@pytest.fixture
def fresh(acc: Accelerator) -> str:
    """A token of a new user of no project: a rate limit of their own."""
    _, token = acc.add_user(f"fresh-{uuid.uuid4().hex[:6]}", {})
    return token


def test_a_token_past_its_rate_gets_429_with_retry_after(strict: str, fresh: str) -> None:
    http = _http(strict, fresh)
    answers = [http.get("/me") for _ in range(8)]
    codes = [a.status_code for a in answers]
    assert codes[:4] == [200] * 4, codes
    limited = [a for a in answers if a.status_code == 429]
    assert limited, codes
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].headers["content-type"].startswith("application/problem+json")


def test_one_tokens_limit_is_not_anothers(strict: str, acc: Accelerator) -> None:
    _, first = acc.add_user(f"first-{uuid.uuid4().hex[:6]}", {})
    _, second = acc.add_user(f"second-{uuid.uuid4().hex[:6]}", {})
    while _http(strict, first).get("/me").status_code != 429:
        pass  # bounded: the burst is 4
    assert _http(strict, second).get("/me").status_code == 200


def test_the_limit_is_shared_by_every_portal_process(
    strict: str, platform: PlatformInfo, fresh: str
) -> None:
    pid, other = start_portal(platform.home, platform.api_url, free_port(), env=LIMITS)
    try:
        codes = []
        for i in range(8):
            codes.append(_http(strict if i % 2 else other, fresh).get("/me").status_code)
        assert codes[:4] == [200] * 4 and 429 in codes[4:], codes
    finally:
        stop_process(pid)


def test_refused_credentials_are_slowed_down_per_address(strict: str) -> None:
    bad = "acc_" + uuid.uuid4().hex[:12] + "_" + "x" * 43
    codes = [_http(strict, bad).get("/me").status_code for _ in range(6)]
    assert codes[:3] == [401] * 3 and 429 in codes[3:], codes


def test_a_user_past_their_runs_at_once_is_refused_and_no_run_is_made(
    strict: str, people: dict[str, str], slow_model: str, acc: Accelerator
) -> None:
    # Runs of this user from other tests have ended; this one keeps working.
    user = Accelerator.connect(url=strict, token=people["author"])
    first = user.launch(slow_model, {"seconds": 120}, secrets={"API_KEY": SECRET})
    try:
        before = len(acc.runs(slow_model, limit=200))
        deadline = time.monotonic() + 30
        while True:  # past the rate limit of the strict portal, wait as it asks
            refused = _http(strict, people["author"]).post(
                f"/models/{slow_model}/launch", json={"secrets": {"API_KEY": SECRET}}
            )
            if refused.status_code != 429 or "quota" in refused.json()["type"]:
                break
            assert time.monotonic() < deadline
            time.sleep(float(refused.headers["Retry-After"]))
        assert refused.status_code == 429, refused.text
        assert "waiting or running" in refused.json()["detail"]
        assert "Retry-After" in refused.headers
        assert len(acc.runs(slow_model, limit=200)) == before
    finally:
        first.cancel()
        first.wait(timeout=120)


def test_bodies_and_uploads_past_their_size_are_refused_and_nothing_is_written(
    strict: str, people: dict[str, str], slow_model: str, acc: Accelerator
) -> None:
    http = _http(strict, people["member"])
    big = http.post(
        f"/models/{slow_model}/launch",
        json={"conf": {"note": "x" * 5000}, "secrets": {"API_KEY": SECRET}},
    )
    assert big.status_code == 413, big.text
    runs_before = len(acc.runs(slow_model, limit=200))

    def json_chunks() -> Iterator[bytes]:  # the same body with no length declared
        body = json.dumps({"conf": {"note": "x" * 5000}, "secrets": {"API_KEY": SECRET}})
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000].encode()

    # (sizes are checked before credentials: another token, so the member's rate holds)
    chunked = _http(strict, people["outsider"]).post(
        f"/models/{slow_model}/launch",
        content=json_chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413, chunked.text
    assert chunked.headers["content-type"] == "application/problem+json"
    assert len(acc.runs(slow_model, limit=200)) == runs_before
    target = f"acc://users/{people['member-name']}/limits/big.bin"
    upload = http.put("/storage/file", params={"path": target}, content=b"x" * 5000)
    assert upload.status_code == 413
    assert not acc.storage.exists(target)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b"y" * 1000

    streamed = http.put("/storage/file", params={"path": target}, content=chunks())
    assert streamed.status_code == 413
    assert not acc.storage.exists(target)


def test_cors_is_closed_by_default_and_open_to_named_origins(
    strict: str, platform: PlatformInfo
) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    allowed = httpx.options(f"{strict}/api/v1/models", headers=preflight, timeout=10)
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    other = {**preflight, "Origin": "https://evil.example.com"}
    refused = httpx.options(f"{strict}/api/v1/models", headers=other, timeout=10)
    assert "access-control-allow-origin" not in refused.headers
    pid, default = start_portal(platform.home, platform.api_url, free_port())
    try:
        closed = httpx.options(f"{default}/api/v1/models", headers=preflight, timeout=10)
        assert "access-control-allow-origin" not in closed.headers
    finally:
        stop_process(pid)


def test_the_work_pool_starts_a_bounded_number_of_runs_at_once(
    acc: Accelerator, platform: PlatformInfo
) -> None:
    pool = acc._call(lambda c: c.read_work_pool(platform.work_pool))
    assert pool.concurrency_limit == 4
