"""Completion webhooks: the rules a URL obeys, the signature receivers check, and delivery by
real dispatchers against the session's real Prefect server to a real loopback receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr, ValidationError

from accelerator_prefect import Accelerator
from accelerator_prefect.client import AsyncAccelerator
from accelerator_prefect.platform import PlatformInfo, free_port
from accelerator_prefect.settings import get_settings
from accelerator_prefect.webhooks import (
    CLAIM_TAG,
    DELIVERY_HEADER,
    EVENT,
    EVENT_HEADER,
    LIVE_TAG,
    SIGNATURE_HEADER,
    WebhookClaim,
    WebhookDispatcher,
    WebhookRecord,
    WebhookSettings,
    caller_secret,
    claim_name,
    platform_key,
    read_webhook,
    record_name,
    register,
    signature,
    verify,
    webhook_problems,
)
from tests.conftest import ModelRepo

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient


# -- a receiver ----------------------------------------------------------------------------------


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    answered: int


class Receiver:
    """A loopback HTTP server recording every request: it answers ``answers`` in turn, then 200."""

    def __init__(self, answers: Sequence[int] = ()) -> None:
        self._answers = list(answers)
        self._received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    status = receiver._answers.pop(0) if receiver._answers else 200
                    receiver._received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"{receiver.url}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start receivers: ``receivers(500)`` answers 500 once, then 200."""
    started: list[Receiver] = []

    def start(*answers: int) -> Receiver:
        started.append(Receiver(answers))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


# -- waiting, dispatching ------------------------------------------------------------------------


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 60.0
) -> None:
    """Wait for ``condition``, asking every 0.1 s, failing with ``what`` after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while not await condition():
        assert time.monotonic() < deadline, f"waited {deadline_s:g} s for {what}"
        await asyncio.sleep(0.1)


async def rounds(dispatchers: Sequence[WebhookDispatcher], count: int) -> None:
    """Wait until every dispatcher has done ``count`` more rounds."""
    targets = [(d, d.ticks + count) for d in dispatchers]

    async def done() -> bool:
        return all(d.ticks >= target for d, target in targets)

    await until(done, f"{count} more rounds")


@asynccontextmanager
async def dispatching(
    api_url: str, settings: WebhookSettings, count: int = 1, **tuning: Any
) -> AsyncIterator[tuple[list[WebhookDispatcher], PrefectClient]]:
    """``count`` dispatchers (as if in so many portals) sharing the platform's connection,
    and that connection; each is cancelled at the end and must stop."""
    platform = AsyncAccelerator(api_url, settings=get_settings())
    tuning = {"poll_s": 0.2, "first_retry_s": 0.1, "claim_ttl_s": 60.0, **tuning}
    dispatchers = [WebhookDispatcher(**tuning) for _ in range(count)]
    tasks = [asyncio.create_task(d.run_forever(platform, settings)) for d in dispatchers]
    try:
        yield dispatchers, await platform.client()
    finally:
        for task in tasks:
            task.cancel()
        _, running = await asyncio.wait(tasks, timeout=15)
        await platform.aclose()
        assert not running, "a dispatcher did not stop when cancelled"
    for task in tasks:
        assert task.cancelled()


async def ended_run(client: PrefectClient, state: str = "COMPLETED") -> str:
    """A real flow run created already ended (no worker runs it): what a dispatcher sees."""
    flow = await client.request("POST", "/flows/", json={"name": "acc-webhook-test"})
    created = await client.request(
        "POST",
        "/flow_runs/",
        json={
            "flow_id": flow.json()["id"],
            "state": {"type": state, "name": state.capitalize()},
            "tags": ["acc-webhook-test"],
        },
    )
    return str(created.json()["id"])


async def finished(client: PrefectClient, run_id: str, deadline_s: float = 60) -> WebhookRecord:
    """Run ``run_id``'s webhook record once delivered or given up."""
    record: WebhookRecord | None = None

    async def done() -> bool:
        nonlocal record
        record = await read_webhook(client, run_id)
        return record is not None and record.status != "pending"

    await until(done, f"the webhook of run {run_id} to finish", deadline_s)
    assert record is not None
    return record


async def claims_left(client: PrefectClient, run_id: str) -> list[str]:
    from accelerator_prefect.directory import read_named

    return [v["name"] for v in await read_named(client, "variables", claim_name(run_id, 0)[:-1])]


async def no_claims(client: PrefectClient, run_id: str) -> bool:
    return await claims_left(client, run_id) == []


def allowing(platform: PlatformInfo, *hosts: str) -> WebhookSettings:
    return WebhookSettings(home=platform.home, webhook_hosts=list(hosts))


# -- which URLs ----------------------------------------------------------------------------------

ALLOWED = ["127.0.0.1:8080", "Hooks.Example.org", "[::1]:9000"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "https://hooks.example.org/in?token=abc",
        "HTTPS://HOOKS.EXAMPLE.ORG:8443/",  # a host named alone admits any port
        "https://hooks.example.org./trailing-dot",
        "http://[::1]:9000/",
    ],
)
def test_a_webhook_to_a_host_the_operator_allows_is_accepted(url: str) -> None:
    assert webhook_problems(url, WebhookSettings(webhook_hosts=ALLOWED)) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8081/hook", "127.0.0.1:8081 is not a host"),
        ("http://localhost:8080/", "localhost:8080 is not a host"),
        ("http://127.1:8080/", "127.1:8080 is not a host"),  # another spelling of an address
        ("http://2130706433:8080/", "is not a host"),
        ("http://[::1]:9001/", "[::1]:9001 is not a host"),
        ("http://10.0.0.1/", "10.0.0.1:80 is not a host"),
        ("http://169.254.169.254/latest/meta-data/", "is not a host"),
        ("https://hooks.example.org.evil.test/", "is not a host"),
        ("ftp://hooks.example.org/", "expected an http:// or https:// URL"),
        ("file:///etc/passwd", "expected an http:// or https:// URL"),
        ("hooks.example.org/in", "expected an http:// or https:// URL"),
        ("http://user:pw@hooks.example.org/", "user name or password"),
        ("http://hooks.example.org\\@127.0.0.1:8080/", "backslashes"),
        ("http://hooks.example.org/a b", "spaces"),
        ("http://hooks.example.org:70000/", "port"),
        ("http:///only-a-path", "names no host"),
        ("", "expected an http:// or https:// URL"),
        (None, "expected an http:// or https:// URL"),
        ("https://hooks.example.org/" + "x" * 2000, "longer than 2000 characters"),
    ],
)
def test_a_webhook_anywhere_else_is_refused_naming_the_field(url: Any, expected: str) -> None:
    problems = webhook_problems(url, WebhookSettings(webhook_hosts=ALLOWED))
    assert len(problems) == 1, problems
    assert problems[0].startswith("webhook: ")
    assert expected in problems[0]


def test_no_webhook_is_sent_until_the_operator_allows_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACC_WEBHOOK_HOSTS", raising=False)
    (problem,) = webhook_problems("https://hooks.example.org/", WebhookSettings())
    assert "sends no webhooks" in problem and "operator must allow" in problem
    assert "ACC_WEBHOOK_HOSTS" in problem and problem.startswith("webhook: ")

    monkeypatch.setenv("ACC_WEBHOOK_HOSTS", '["hooks.example.org"]')
    assert webhook_problems("https://hooks.example.org/", WebhookSettings()) == []


@pytest.mark.parametrize("entry", ["http://hooks.example.org/", "a b", "host:port", "h:0", ""])
def test_an_allow_list_entry_that_is_no_host_is_refused_when_read(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("ACC_WEBHOOK_HOSTS", json.dumps([entry]))
    with pytest.raises(ValidationError, match="is not a host or host:port"):
        WebhookSettings()


# -- signatures ----------------------------------------------------------------------------------


def test_a_signature_holds_only_for_its_body_its_time_and_its_caller(tmp_path: Path) -> None:
    settings = WebhookSettings(home=tmp_path)
    alice, bob = caller_secret(settings, "alice"), caller_secret(settings, "bob")
    body = json.dumps({"event": EVENT, "run": {"id": str(uuid.uuid4())}}).encode()
    header = signature(body, alice)
    assert verify(body, header, alice)
    assert not verify(body + b" ", header, alice)  # a tampered body
    assert not verify(body.replace(b"run.finished", b"run.finishes"), header, alice)
    assert not verify(body, header, bob)  # another caller's secret
    now = int(time.time())
    assert not verify(body, signature(body, alice, now - 301), alice)  # too old: a replay
    assert not verify(body, signature(body, alice, now + 301), alice)
    assert verify(body, signature(body, alice, now - 200), alice)
    assert not verify(body, signature(body, alice, now - 200), alice, tolerance_s=100)
    moment, mac = header.split(",")
    assert moment.startswith("t=") and mac.startswith("v1=") and len(mac) == 3 + 64
    # A second v1 (a receiver handed two signatures) verifies when one of them holds.
    assert verify(body, f"{moment},v1={'0' * 64},{mac}", alice)
    for garbled in ("", "t=,v1=", mac, moment, "t=abc," + mac, f"{moment},v2={mac[3:]}"):
        assert not verify(body, garbled, alice), garbled


def test_each_caller_has_their_own_secret_derived_from_the_platform_key(tmp_path: Path) -> None:
    settings = WebhookSettings(home=tmp_path)
    secret = caller_secret(settings, "alice")
    key_file = tmp_path / "webhook-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip().encode()
    assert len(key) >= 32
    assert secret == hmac.new(key, b"alice", hashlib.sha256).hexdigest()
    assert caller_secret(WebhookSettings(home=tmp_path), "alice") == secret  # kept
    assert caller_secret(settings, "bob") != secret
    assert caller_secret(WebhookSettings(home=tmp_path / "elsewhere"), "alice") != secret

    shared = WebhookSettings(
        home=tmp_path / "portal-2", webhook_key=SecretStr("one-key-for-all-portals")
    )
    expected = hmac.new(b"one-key-for-all-portals", b"alice", hashlib.sha256).hexdigest()
    assert caller_secret(shared, "alice") == expected
    assert not (tmp_path / "portal-2" / "webhook-key").exists()


def test_portals_starting_at_once_keep_one_platform_key(tmp_path: Path) -> None:
    settings = WebhookSettings(home=tmp_path)
    keys: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: keys.append(platform_key(settings))) for _ in "x" * 8
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["webhook-key"]


# -- delivery against the real platform ----------------------------------------------------------


@pytest.fixture(scope="module")
def echo_model(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = f"echo-hook-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path_factory.mktemp("hooks") / "models", name).echo()
    repo.commit("echo")
    acc.publish(repo.manifest)
    return name


@pytest.fixture(scope="module")
def member(acc: Accelerator, platform: PlatformInfo) -> Iterator[tuple[str, Accelerator]]:
    """A member of the echo model's project, with an in-process client of their own."""
    name = f"hook-member-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(name, {"demo": "member"})
    with Accelerator.connect(platform.api_url, token=token) as client:
        yield name, client


def test_a_run_that_ends_is_announced_once_signed_after_a_failed_attempt(
    platform: PlatformInfo,
    echo_model: str,
    member: tuple[str, Accelerator],
    receivers: Callable[..., Receiver],
) -> None:
    name, client = member
    receiver = receivers(500)  # the first attempt fails
    settings = allowing(platform, receiver.host)
    url = f"{receiver.url}/hooks/acc?source=test"
    assert webhook_problems(url, settings) == []
    run = client.launch(echo_model, {"message": "webhook-conf-marker"})
    run_id = str(run.id)

    async def scenario() -> WebhookRecord:
        # Two dispatchers, as in two portals: both see the run end, one delivers.
        async with dispatching(platform.api_url, settings, count=2) as (dispatchers, prefect):
            registered = await register(prefect, run_id, url, name)
            assert registered.status == "pending"
            record = await finished(prefect, run_id, deadline_s=240)
            await until(lambda: no_claims(prefect, run_id), "the claims to be let go")
            await rounds(dispatchers, 3)  # time enough for a second delivery, were there one
            return record

    record = asyncio.run(scenario())
    assert record.status == "delivered", record
    assert (record.attempts, record.outcome) == (2, "HTTP 200")

    received = receiver.received
    assert [r.answered for r in received] == [500, 200]
    assert {r.path for r in received} == {"/hooks/acc?source=test"}
    assert {r.headers[DELIVERY_HEADER.lower()] for r in received} == {record.delivery}
    secret = caller_secret(settings, name)
    for request in received:
        assert request.headers[EVENT_HEADER.lower()] == EVENT
        assert request.headers["content-type"] == "application/json"
        assert verify(request.body, request.headers[SIGNATURE_HEADER.lower()], secret)
        assert not verify(
            request.body, request.headers[SIGNATURE_HEADER.lower()], caller_secret(settings, "x")
        )

    body = json.loads(received[-1].body)
    assert body["event"] == EVENT and body["delivery"] == record.delivery
    summary = body["run"]
    assert summary["id"] == run_id and summary["state"] == run.wait(timeout=60) == "Completed"
    assert (summary["model"], summary["version"], summary["user"]) == (echo_model, "1.0.0", name)
    assert summary["completed"] is True and summary["duration"] >= 0
    assert summary["created"] and summary["started"] and summary["ended"]
    assert summary["links"]["outputs"] == f"/api/v1/runs/{run_id}/outputs"
    assert summary["links"]["result"] == f"/api/v1/runs/{run_id}/result"
    text = received[-1].body.decode()
    assert "parameters" not in text and "webhook-conf-marker" not in text
    assert "secret" not in text and "block" not in text


def test_a_claim_left_by_a_portal_that_died_is_taken_over_once_stale(
    platform: PlatformInfo, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    settings = allowing(platform, receiver.host)

    async def scenario() -> WebhookRecord:
        from prefect.client.schemas.actions import VariableCreate, VariableUpdate

        async with dispatching(platform.api_url, settings, claim_ttl_s=30) as (
            dispatchers,
            prefect,
        ):
            run_id = await ended_run(prefect)
            first = claim_name(run_id, 0)
            held = WebhookClaim(owner="a-portal-that-died", renewed=datetime.now(UTC))
            await prefect.create_variable(
                VariableCreate(
                    name=first, value=held.model_dump(mode="json"), tags=[CLAIM_TAG, LIVE_TAG]
                )
            )
            await register(prefect, run_id, f"{receiver.url}/late", "alice")
            await rounds(dispatchers, 3)
            assert receiver.received == []  # a fresh claim is someone else's to deliver
            waiting = await read_webhook(prefect, run_id)
            assert waiting is not None and waiting.status == "pending"

            stale = held.model_copy(update={"renewed": datetime.now(UTC) - timedelta(hours=1)})
            await prefect.update_variable(
                VariableUpdate(name=first, value=stale.model_dump(mode="json"))
            )
            record = await finished(prefect, run_id)
            await until(lambda: no_claims(prefect, run_id), "the claims to be let go")
            return record

    record = asyncio.run(scenario())
    assert (record.status, record.attempts) == ("delivered", 1)
    assert [r.path for r in receiver.received] == ["/late"]


def test_a_claimer_that_was_taken_over_stops_sending(
    platform: PlatformInfo, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(*[500] * 100)  # never answers well
    settings = allowing(platform, receiver.host)

    async def scenario() -> None:
        from prefect.client.schemas.actions import VariableCreate

        async with dispatching(platform.api_url, settings, attempts=100) as (
            dispatchers,
            prefect,
        ):
            (dispatcher,) = dispatchers
            run_id = await ended_run(prefect)
            await register(prefect, run_id, receiver.url, "alice")

            async def trying() -> bool:
                return len(receiver.received) >= 2

            await until(trying, "the first attempts")
            # Another portal thought this one dead and took the delivery over.
            other = WebhookClaim(owner="another-portal", renewed=datetime.now(UTC))
            await prefect.create_variable(
                VariableCreate(
                    name=claim_name(run_id, 1),
                    value=other.model_dump(mode="json"),
                    tags=[CLAIM_TAG, LIVE_TAG],
                )
            )

            async def stopped() -> bool:
                return run_id not in dispatcher.delivering

            await until(stopped, "the claimer to stop")
            sent = len(receiver.received)
            await rounds(dispatchers, 3)
            assert len(receiver.received) == sent < 100
            record = await read_webhook(prefect, run_id)
            assert record is not None and record.status == "pending"  # the other's to finish
            await prefect.delete_variable_by_name(record_name(run_id))
            await prefect.delete_variable_by_name(claim_name(run_id, 1))

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("answers", "status", "outcome", "requests"),
    [
        ((500, 503, 502), "failed", "HTTP 502", 3),  # out of attempts
        ((429, 500), "delivered", "HTTP 200", 3),  # busy, then answered
        ((410,), "failed", "HTTP 410", 1),  # refused: not tried again
        ((302,), "failed", "HTTP 302", 1),  # a redirect is not followed
    ],
)
def test_a_delivery_is_tried_again_only_when_the_receiver_may_answer_later(
    platform: PlatformInfo,
    receivers: Callable[..., Receiver],
    answers: tuple[int, ...],
    status: str,
    outcome: str,
    requests: int,
) -> None:
    receiver = receivers(*answers)
    settings = allowing(platform, receiver.host)

    async def scenario() -> WebhookRecord:
        async with dispatching(platform.api_url, settings, attempts=3) as (_, prefect):
            run_id = await ended_run(prefect, "FAILED")
            await register(prefect, run_id, f"{receiver.url}/hook", "alice")
            return await finished(prefect, run_id)

    record = asyncio.run(scenario())
    assert (record.status, record.outcome, record.attempts) == (status, outcome, requests)
    assert [r.path for r in receiver.received] == ["/hook"] * requests
    assert json.loads(receiver.received[0].body)["run"]["state"] == "Failed"


def test_a_receiver_that_does_not_answer_is_given_up_after_the_last_attempt(
    platform: PlatformInfo,
) -> None:
    closed = free_port()  # nothing listens there
    settings = allowing(platform, f"127.0.0.1:{closed}")

    async def scenario() -> WebhookRecord:
        async with dispatching(platform.api_url, settings, attempts=2) as (_, prefect):
            run_id = await ended_run(prefect)
            await register(prefect, run_id, f"http://127.0.0.1:{closed}/", "alice")
            return await finished(prefect, run_id)

    record = asyncio.run(scenario())
    assert (record.status, record.attempts) == ("failed", 2)
    assert record.outcome == "ConnectError: no answer"


def test_a_host_no_longer_allowed_when_the_run_ends_is_not_sent_to(
    platform: PlatformInfo, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    assert webhook_problems(receiver.url, allowing(platform, receiver.host)) == []
    now = allowing(platform, "hooks.example.org")  # the operator changed the list since

    async def scenario() -> WebhookRecord:
        async with dispatching(platform.api_url, now) as (_, prefect):
            run_id = await ended_run(prefect)
            await register(prefect, run_id, receiver.url, "alice")
            return await finished(prefect, run_id)

    record = asyncio.run(scenario())
    assert (record.status, record.attempts) == ("failed", 0)
    assert record.outcome is not None and record.outcome.startswith("refused: webhook: ")
    assert receiver.received == []


def test_a_webhook_of_a_run_that_no_longer_exists_is_given_up_then_forgotten(
    platform: PlatformInfo, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    settings = allowing(platform, receiver.host)
    run_id = str(uuid.uuid4())

    async def scenario() -> None:
        from prefect.client.schemas.actions import VariableCreate

        async with dispatching(platform.api_url, settings) as (_, prefect):
            await register(prefect, run_id, receiver.url, "alice")
            record = await finished(prefect, run_id)
            assert (record.status, record.outcome) == ("failed", "the run no longer exists")
            # A claim its claimer did not live to let go of.
            dead = WebhookClaim(owner="gone", renewed=datetime.now(UTC) - timedelta(hours=1))
            await prefect.create_variable(
                VariableCreate(
                    name=claim_name(run_id, 7),
                    value=dead.model_dump(mode="json"),
                    tags=[CLAIM_TAG, LIVE_TAG],
                )
            )
        async with dispatching(platform.api_url, settings, keep_finished_s=0) as (_, prefect):

            async def forgotten() -> bool:
                gone = await read_webhook(prefect, run_id) is None
                return gone and await no_claims(prefect, run_id)

            await until(forgotten, "the finished record and the left claim to be deleted")

    asyncio.run(scenario())
    assert receiver.received == []


def test_registering_a_run_again_keeps_its_first_webhook(
    platform: PlatformInfo, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()

    async def scenario() -> None:
        from accelerator_prefect.transport import prefect_client

        async with prefect_client(platform.api_url) as prefect:
            run_id = await ended_run(prefect)
            first = await register(prefect, run_id, f"{receiver.url}/first", "alice")
            again = await register(prefect, run_id, f"{receiver.url}/second", "bob")
            assert again == first
            assert await read_webhook(prefect, run_id) == first
            with pytest.raises(ValueError, match="expected a flow run id"):
                await register(prefect, "not-a-run", receiver.url, "alice")
            await prefect.delete_variable_by_name(record_name(run_id))

    asyncio.run(scenario())


def test_a_record_that_cannot_be_read_holds_up_no_other(
    platform: PlatformInfo, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    settings = allowing(platform, receiver.host)

    async def scenario() -> WebhookRecord:
        from prefect.client.schemas.actions import VariableCreate

        async with dispatching(platform.api_url, settings) as (dispatchers, prefect):
            junk = record_name(str(uuid.uuid4()))
            await prefect.create_variable(
                VariableCreate(name=junk, value="not a record", tags=[LIVE_TAG])
            )
            try:
                run_id = await ended_run(prefect)
                await register(prefect, run_id, receiver.url, "alice")
                record = await finished(prefect, run_id)
                assert dispatchers[0].errors == 0
                return record
            finally:
                await prefect.delete_variable_by_name(junk)

    assert asyncio.run(scenario()).status == "delivered"
    assert len(receiver.received) == 1


def test_a_dispatcher_survives_an_api_it_cannot_reach_and_stops_when_cancelled(
    tmp_path: Path,
) -> None:
    settings = WebhookSettings(home=tmp_path, webhook_hosts=["hooks.example.org"])

    async def scenario() -> None:
        nowhere = f"http://127.0.0.1:{free_port()}/api"
        platform = AsyncAccelerator(nowhere, settings=get_settings(home=tmp_path))
        dispatcher = WebhookDispatcher(poll_s=0.05)
        task = asyncio.create_task(dispatcher.run_forever(platform, settings))

        async def failing_on() -> bool:
            assert not task.done(), "the dispatcher stopped on an error"
            return dispatcher.errors >= 3 and dispatcher.ticks >= 3

        await until(failing_on, "three failed rounds")
        task.cancel()
        await asyncio.wait([task], timeout=10)
        assert task.cancelled()
        await platform.aclose()

    asyncio.run(scenario())
    assert os.listdir(tmp_path) == ["webhook-key"]


def test_a_launch_through_the_portal_announces_its_end_to_the_named_webhook(
    platform: PlatformInfo,
    acc: Accelerator,
    echo_model: str,
    receivers: Callable[..., Receiver],
) -> None:
    """End to end: the portal checks the webhook at launch, its dispatcher POSTs the signed
    summary once the run ends (after one refused attempt), and the caller verifies it with
    the secret the portal gives them."""
    import json as json_module

    import httpx

    from accelerator_prefect.platform import free_port, start_portal, stop_process

    hook = receivers(500)
    name = f"hook-portal-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(name, {"demo": "member"})
    env = {"ACC_WEBHOOK_HOSTS": json_module.dumps([hook.host])}
    pid, portal = start_portal(platform.home, platform.api_url, free_port(), env=env)
    try:
        http = httpx.Client(
            base_url=f"{portal}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        refused = http.post(f"/models/{echo_model}/launch", json={"webhook": "http://10.0.0.1/x"})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["pointer"] == "webhook"
        launched = http.post(f"/models/{echo_model}/launch", json={"webhook": f"{hook.url}/in"})
        assert launched.status_code == 201, launched.text
        run_id = launched.json()["id"]
        deadline = time.monotonic() + 180
        while len([r for r in hook.received if r.answered == 200]) < 1:
            assert time.monotonic() < deadline, hook.received
            time.sleep(0.2)
        answer = http.get("/me/webhook-secret")
        assert answer.status_code == 200, answer.text
        secret = answer.json()["secret"]
        answered = [r for r in hook.received if r.answered == 200]
        assert [r.answered for r in hook.received] == [500, 200]
        body = answered[0].body
        assert verify(body, answered[0].headers["x-acc-signature"], secret)
        summary = json_module.loads(body)
        assert summary["run"]["id"] == run_id and summary["run"]["state"] == "Completed"
        assert "secrets" not in body.decode()
    finally:
        stop_process(pid)
