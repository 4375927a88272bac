"""Completion webhooks: a launch names a URL, and the run's summary is POSTed there once it ends.

What lives where:

- a record per run in a Prefect Variable, ``acc-webhook-<run id>``: the URL, who
  asked (their name signs the delivery), the delivery's id and, once it is over,
  how it went (``delivered`` or ``failed``). Written at launch by :func:`register`,
  never in the run's parameters (the deployment's parameter schema is enforced, and
  the run's code has no business with it);
- who is delivering it, in ``acc-webhook-claim-<run id>-<n>``: creating a Variable is
  unique in Prefect's database, so of several portal processes exactly one wins
  claim ``n``. A claimer renews its claim before every attempt; a claim left
  unrenewed for longer than ``claim_ttl_s`` (its process died) is taken over by
  creating claim ``n + 1``, and the old claimer, should it wake, sees the newer claim
  and stops.

The rules a URL obeys (:func:`webhook_problems`, at launch and again before every
attempt): ``http`` or ``https``, no user name or password, and a host the operator
allows in ``ACC_WEBHOOK_HOSTS`` (a JSON list of ``host`` or ``host:port``, matched
exactly, case aside; ``host`` admits any port, ``host:443`` also ``https://host/``).
Nothing else is ever sent to, so a loopback or private address is reached only when
the operator names it (or names a host of theirs that resolves to it); another
spelling of an address (``127.1``, ``2130706433``) is another host. No redirect is
followed, no proxy or ``.netrc`` of the portal's machine is used: the receiver is the
URL the caller gave.

A delivery is signed for its caller: ``X-Acc-Signature: t=<unix time>,v1=<hex>``,
the HMAC-SHA256 of ``f"{t}.{body}"`` under the caller's own secret
(:func:`caller_secret`: the HMAC-SHA256 of their name under the platform's webhook
key). The timestamp lets a receiver refuse replays, and :func:`verify` checks both.
``X-Acc-Delivery`` is the same on every attempt (and after a takeover): a receiver
that sees it twice has seen the same event twice.

Example (a receiver):
    >>> from accelerator_prefect.webhooks import verify
    >>> def receive(body: bytes, headers: dict[str, str]) -> None:  # doctest: +SKIP
    ...     if not verify(body, headers["X-Acc-Signature"], MY_WEBHOOK_SECRET):
    ...         raise PermissionError("not from the platform")
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from accelerator_prefect.settings import _default_home

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

    from accelerator_prefect.client import AsyncAccelerator

log = logging.getLogger(__name__)

RECORD_PREFIX = "acc-webhook-"
CLAIM_PREFIX = "acc-webhook-claim-"
RECORD_TAG = "acc:webhook"
CLAIM_TAG = "acc:webhook-claim"
# Pending records and claims carry LIVE_TAG, finished records DONE_TAG: a round reads
# only what is live, however many finished records are kept.
LIVE_TAG = "acc:webhook-live"
DONE_TAG = "acc:webhook-done"
KEY_FILE = "webhook-key"

EVENT = "run.finished"
SIGNATURE_HEADER = "X-Acc-Signature"
EVENT_HEADER = "X-Acc-Event"
DELIVERY_HEADER = "X-Acc-Delivery"

MAX_URL_LENGTH = 2000  # a record is a Prefect Variable: 5,000 characters of JSON at most
API = "/api/v1"  # the portal's prefix (portal.app.PREFIX; the portal imports this module)

__all__ = [
    "DELIVERY_HEADER",
    "EVENT",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "WebhookConfig",
    "WebhookDispatcher",
    "WebhookRecord",
    "WebhookSettings",
    "body_of",
    "caller_secret",
    "check_webhook_hosts",
    "platform_key",
    "read_webhook",
    "register",
    "signature",
    "summary",
    "verify",
    "webhook_problems",
]


# -- settings ------------------------------------------------------------------------------------


class WebhookConfig(Protocol):
    """What webhooks read of an installation's settings: ``Settings``, or
    :class:`WebhookSettings` until ``Settings`` has the webhook fields."""

    @property
    def home(self) -> Path: ...

    @property
    def webhook_hosts(self) -> list[str]: ...

    @property
    def webhook_key(self) -> SecretStr | None: ...


def check_webhook_hosts(value: list[str]) -> list[str]:
    """``ACC_WEBHOOK_HOSTS`` as given, once every entry is a ``host`` or ``host:port``."""
    for entry in value:
        _host_entry(entry)
    return value


class WebhookSettings(BaseSettings):
    """The webhook settings of one installation, from ``ACC_*`` environment variables.

    Example:
        >>> WebhookSettings(webhook_hosts=["hooks.example.org"]).webhook_hosts
        ['hooks.example.org']
    """

    model_config = SettingsConfigDict(env_prefix="ACC_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="The platform's home folder.")
    webhook_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts completion webhooks may be sent to, as JSON, e.g. "
        '["hooks.example.org", "127.0.0.1:8080"]: `host` (any port) or `host:port`, matched '
        "exactly, case aside. None by default: no webhooks.",
    )
    webhook_key: SecretStr | None = Field(
        default=None,
        description="The key each caller's webhook signing secret is derived from; when "
        "unset, a key made on first use and kept in the home (`webhook-key`, mode 0600). "
        "Set it when portals run on several machines.",
    )

    _hosts = field_validator("webhook_hosts")(check_webhook_hosts)


# -- the rules a URL obeys -----------------------------------------------------------------------


def _bare(host: str) -> str:
    """A host as compared: lower case, no brackets, no trailing dot."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def _host_entry(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    text = entry.strip()
    try:
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(rest)
            port = int(rest[1:]) if rest else None
        elif text.count(":") == 1:
            host, port_text = text.split(":")
            port = int(port_text)
        else:
            host, port = text, None
    except ValueError:
        host, port = "", None
    bad_port = port is not None and not 0 < port < 65536
    if not _bare(host) or any(c in host for c in "/@ ?#\\") or bad_port:
        raise ValueError(f"webhook_hosts: {entry!r} is not a host or host:port (ACC_WEBHOOK_HOSTS)")
    return _bare(host), port


def _allowed(hosts: Iterable[str], host: str, port: int) -> bool:
    entries = {_host_entry(entry) for entry in hosts}
    return (host, None) in entries or (host, port) in entries


def webhook_problems(url: Any, settings: WebhookConfig) -> list[str]:
    """What is wrong with ``url`` as a webhook, one line each (none: it may be sent to).

    Example:
        >>> webhook_problems("ftp://hooks.example.org/x", WebhookSettings(webhook_hosts=[]))
        ['webhook: expected an http:// or https:// URL']
    """
    if not isinstance(url, str) or not url.strip():
        return ["webhook: expected an http:// or https:// URL"]
    if len(url) > MAX_URL_LENGTH:
        return [f"webhook: longer than {MAX_URL_LENGTH} characters"]
    if any(c.isspace() or not c.isprintable() or c == "\\" for c in url):
        return ["webhook: spaces, backslashes and control characters are not allowed in the URL"]
    try:
        # Parsed as the request will be sent: the host checked is the host reached.
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        return ["webhook: not a URL with a valid host and port"]
    if parts.scheme not in {"http", "https"}:
        return ["webhook: expected an http:// or https:// URL"]
    if not parts.host:
        return ["webhook: the URL names no host"]
    if parts.port is not None and not 0 < parts.port < 65536:
        return ["webhook: the port is not a number from 1 to 65535"]
    if parts.userinfo:
        return [
            "webhook: a user name or password in the URL is not accepted; check the "
            f"{SIGNATURE_HEADER} header instead"
        ]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = _bare(parts.host)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if not settings.webhook_hosts:
        return [
            "webhook: this platform sends no webhooks yet; the operator must allow the "
            f"receiver's host ({shown}) in ACC_WEBHOOK_HOSTS"
        ]
    if not _allowed(settings.webhook_hosts, host, port):
        return [
            f"webhook: {shown} is not a host webhooks may be sent to; the operator must "
            "allow it in ACC_WEBHOOK_HOSTS"
        ]
    return []


# -- signing -------------------------------------------------------------------------------------


def platform_key(settings: WebhookConfig) -> bytes:
    """The key callers' secrets derive from: ``ACC_WEBHOOK_KEY``, else the home's
    ``webhook-key`` file, made on first use, readable by its owner only (mode 0600)."""
    if settings.webhook_key is not None and settings.webhook_key.get_secret_value():
        return settings.webhook_key.get_secret_value().encode()
    path = settings.home / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            return existing.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under another name, then linked in: a second process starting at the
    # same moment reads either nothing or the whole key, and only one key is ever kept.
    draft = path.with_name(f".{KEY_FILE}.{uuid.uuid4().hex}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def _derive(key: bytes, caller: str) -> str:
    return hmac.new(key, caller.encode(), hashlib.sha256).hexdigest()


def caller_secret(settings: WebhookConfig, name: str) -> str:
    """The secret ``name``'s webhooks are signed with: theirs alone, the same on every
    portal that shares the platform's key (a new key gives everyone a new secret)."""
    return _derive(platform_key(settings), name)


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``X-Acc-Signature`` header of ``body``: ``t=<unix time>,v1=<hex hmac>``."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},v1={_mac(secret, moment, body)}"


def verify(
    body: bytes, header: str, secret: str, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """Whether ``header`` (``X-Acc-Signature``) signs ``body`` with ``secret``, made at most
    ``tolerance_s`` seconds from ``now``: a receiver's check, in constant time.

    Example:
        >>> verify(b"{}", signature(b"{}", "s3cret"), "s3cret")
        True
        >>> verify(b"{ }", signature(b"{}", "s3cret"), "s3cret")
        False
    """
    moment, macs = None, []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            moment = int(value)
        elif name == "v1":
            macs.append(value)
    if moment is None or not macs:
        return False
    if abs((time.time() if now is None else now) - moment) > tolerance_s:
        return False
    expected = _mac(secret, moment, body)
    return any(hmac.compare_digest(expected, mac) for mac in macs)


# -- the records ---------------------------------------------------------------------------------


class WebhookRecord(BaseModel):
    """One run's webhook, as a Prefect Variable keeps it."""

    run_id: str
    url: str
    caller: str
    created: datetime
    delivery: str = Field(description="X-Acc-Delivery: the same on every attempt.")
    workspace: str | None = Field(default=None, description="The run's Prefect API, if not ours.")
    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: int = 0
    outcome: str | None = Field(default=None, description="How the last attempt went.")
    finished: datetime | None = None


class WebhookClaim(BaseModel):
    """Who is delivering a run's webhook, and when they last said so."""

    owner: str
    renewed: datetime


def record_name(run_id: str) -> str:
    return f"{RECORD_PREFIX}{run_id}"


def claim_name(run_id: str, generation: int) -> str:
    return f"{CLAIM_PREFIX}{run_id}-{generation}"


def _run_uuid(run_id: uuid.UUID | str) -> str:
    try:
        return str(uuid.UUID(str(run_id)))
    except ValueError:
        raise ValueError(f"run {run_id!r}: expected a flow run id (a UUID)") from None


async def _create(client: PrefectClient, name: str, value: dict[str, Any], tags: list[str]) -> bool:
    """Create Variable ``name``; ``False`` if it exists already (then nothing is written)."""
    from prefect.client.schemas.actions import VariableCreate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        await client.create_variable(VariableCreate(name=name, value=value, tags=tags))
    except ObjectAlreadyExists:
        return False
    return True


async def _update(
    client: PrefectClient, name: str, value: dict[str, Any], tags: list[str] | None = None
) -> None:
    from prefect.client.schemas.actions import VariableUpdate

    update = VariableUpdate(name=name, value=value)
    if tags is not None:
        update.tags = tags
    await client.update_variable(update)


async def _delete(client: PrefectClient, names: Iterable[str]) -> None:
    from prefect.exceptions import ObjectNotFound

    for name in names:
        with contextlib.suppress(ObjectNotFound):
            await client.delete_variable_by_name(name)


async def register(
    client: PrefectClient,
    run_id: uuid.UUID | str,
    url: str,
    caller: str,
    *,
    workspace: str | None = None,
) -> WebhookRecord:
    """Remember to POST run ``run_id``'s summary to ``url`` for ``caller`` once it ends.

    ``client`` reaches the platform's own Prefect API (where the directory lives);
    ``workspace`` is the API URL of the run's workspace, when it lives elsewhere.
    Registering a run again (a launch repeated with its ``Idempotency-Key``) keeps
    the first record, so a run is announced once. Check ``url`` with
    :func:`webhook_problems` first.
    """
    record = WebhookRecord(
        run_id=_run_uuid(run_id),
        url=url,
        caller=caller,
        created=datetime.now(UTC),
        delivery=str(uuid.uuid4()),
        workspace=workspace,
    )
    value = record.model_dump(mode="json")
    if await _create(client, record_name(record.run_id), value, [RECORD_TAG, LIVE_TAG]):
        return record
    return await read_webhook(client, record.run_id) or record


async def read_webhook(client: PrefectClient, run_id: uuid.UUID | str) -> WebhookRecord | None:
    """Run ``run_id``'s webhook record, if it has one."""
    variable = await client.read_variable_by_name(record_name(_run_uuid(run_id)))
    return None if variable is None else WebhookRecord.model_validate(variable.value)


@dataclass(frozen=True)
class _Found:
    """Webhook records and claims, as one read of the Variables finds them."""

    records: dict[str, WebhookRecord]
    claims: dict[str, dict[int, WebhookClaim]]
    unreadable: list[str]


def _claim_key(name: str) -> tuple[str, int] | None:
    run_id, _, generation = name.removeprefix(CLAIM_PREFIX).rpartition("-")
    if not generation.isdigit():
        return None
    return run_id, int(generation)


async def _read_tagged(client: PrefectClient, tag: str) -> _Found:
    """Every webhook record and claim tagged ``tag``, read page by page."""
    items: list[dict[str, Any]] = []
    offset, page = 0, 200
    while True:
        response = await client.request(
            "POST",
            "/variables/filter",
            json={
                "variables": {"name": {"like_": RECORD_PREFIX}, "tags": {"all_": [tag]}},
                "offset": offset,
                "limit": page,
            },
        )
        batch = response.json()
        items += [item for item in batch if str(item["name"]).startswith(RECORD_PREFIX)]
        if len(batch) < page:
            break
        offset += page
    found = _Found({}, {}, [])
    for item in items:
        name, value = str(item["name"]), item["value"]
        try:
            if name.startswith(CLAIM_PREFIX):
                key = _claim_key(name)
                if key is not None:
                    found.claims.setdefault(key[0], {})[key[1]] = WebhookClaim.model_validate(value)
            else:
                record = WebhookRecord.model_validate(value)
                if record_name(record.run_id) == name:
                    found.records[record.run_id] = record
        except ValidationError:
            found.unreadable.append(name)
    return found


# -- the body ------------------------------------------------------------------------------------


def summary(flow_run: FlowRun, delivery: str) -> dict[str, Any]:
    """What a webhook says of a run that ended: who ran which version, how it went, when,
    and where its outputs and result are. Never its parameters (nor so the names of its
    secret blocks), never a state message (authors' code writes those)."""
    from accelerator_prefect.runs import RunInfo

    info = RunInfo.of(flow_run, "")
    tags, run = info.tags, f"{API}/runs/{info.id}"

    def moment(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "event": EVENT,
        "delivery": delivery,
        "run": {
            "id": info.id,
            "name": info.name,
            "model": tags.get("model", ""),
            "version": tags.get("version", ""),
            "user": tags.get("user", ""),
            "via": tags.get("via", ""),
            "state": info.state,
            "state_type": info.state_type,
            "completed": info.completed,
            "created": moment(info.created),
            "started": moment(info.started),
            "ended": moment(info.ended),
            "duration": info.duration,
            "links": {
                "run": run,
                "outputs": f"{run}/outputs",
                "result": f"{run}/result",
                "logs": f"{run}/logs",
                "provenance": f"{run}/provenance",
            },
        },
    }


def body_of(flow_run: FlowRun, delivery: str) -> bytes:
    """The JSON body POSTed for ``flow_run`` (the bytes the signature covers)."""
    return json.dumps(summary(flow_run, delivery), separators=(",", ":")).encode()


# -- delivery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Session:
    platform: AsyncAccelerator
    settings: WebhookConfig
    http: httpx.AsyncClient
    key: bytes


@dataclass(frozen=True)
class _Attempt:
    delivered: bool
    retry: bool
    outcome: str


class WebhookDispatcher:
    """Delivers the webhooks of runs that ended, once each, from however many portals.

    The portal runs one in its lifespan::

        task = asyncio.create_task(WebhookDispatcher().run_forever(platform, settings))
        ...
        task.cancel()

    Every ``poll_s`` it reads the pending records and the claims (one request), the
    states of their runs (one request per workspace), claims each run that ended and
    delivers it in a task of its own: up to ``attempts`` POSTs, ``timeout_s`` each,
    ``first_retry_s`` apart and doubling, tried again after a network error, a 5xx or
    a 429. Finished records are kept ``keep_finished_s`` (looked at every
    ``tidy_every_s``), then deleted.
    """

    def __init__(
        self,
        *,
        attempts: int = 6,
        first_retry_s: float = 1.0,
        timeout_s: float = 10.0,
        poll_s: float = 1.0,
        claim_ttl_s: float = 300.0,
        keep_finished_s: float = 86400.0,
        tidy_every_s: float = 60.0,
        concurrency: int = 8,
    ) -> None:
        self.attempts = attempts
        self.first_retry_s = first_retry_s
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.claim_ttl_s = claim_ttl_s
        self.keep_finished_s = keep_finished_s
        self.tidy_every_s = tidy_every_s
        self.concurrency = concurrency
        self.owner = uuid.uuid4().hex  # this dispatcher, in the claims it makes
        self.ticks = 0  # rounds done (failed ones too): what tests wait on
        self.errors = 0  # rounds failed
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._reported: set[str] = set()
        self._tidied = float("-inf")

    @property
    def delivering(self) -> set[str]:
        """The runs whose webhooks this dispatcher is delivering now."""
        return set(self._busy)

    async def run_forever(self, platform: AsyncAccelerator, settings: WebhookConfig) -> None:
        """Deliver until cancelled; a failed round is logged and the next one goes on.

        On cancellation the deliveries under way stop and give up their claims, so
        another portal takes them over at once.
        """
        key: bytes | None = None
        # No proxy, no .netrc: the request goes to the URL the caller gave, and carries
        # nothing of this machine's.
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s), follow_redirects=False, trust_env=False
        )
        failing = False
        try:
            while True:
                try:
                    if key is None:
                        key = await asyncio.to_thread(platform_key, settings)
                    await self.tick(_Session(platform, settings, http, key))
                except Exception:
                    self.errors += 1
                    if not failing:  # once, not every second while Prefect is away
                        log.exception("webhooks: a round failed; trying again every round")
                    failing = True
                else:
                    if failing:
                        log.warning("webhooks: rounds succeed again")
                    failing = False
                self.ticks += 1
                await asyncio.sleep(self.poll_s)
        finally:
            busy = list(self._busy.values())
            for task in busy:
                task.cancel()
            await asyncio.gather(*busy, return_exceptions=True)
            await http.aclose()

    async def tick(self, session: _Session) -> None:
        """One round: find the runs that ended, claim and start their deliveries; tidy."""
        client = await session.platform.client()
        found = await _read_tagged(client, LIVE_TAG)
        for name in found.unreadable:
            if name not in self._reported:
                self._reported.add(name)
                log.warning("webhooks: Variable %s is not a webhook record; left alone", name)
        now = datetime.now(UTC)
        await self._let_go_of_orphans(client, found, now)
        pending = [
            r
            for r in found.records.values()
            if r.status == "pending" and r.run_id not in self._busy
        ]
        runs = await self._read_runs(session.platform, pending) if pending else {}
        for record in pending:
            if record.run_id not in runs:
                continue  # its workspace did not answer: next round
            flow_run = runs[record.run_id]
            if flow_run is not None and not _final(flow_run):
                continue
            if len(self._busy) >= self.concurrency:
                break
            generation = self._next_claim(found.claims.get(record.run_id, {}), now)
            if generation is None:
                continue  # someone else is on it
            name = claim_name(record.run_id, generation)
            claim = WebhookClaim(owner=self.owner, renewed=now).model_dump(mode="json")
            if not await _create(client, name, claim, [CLAIM_TAG, LIVE_TAG]):
                continue  # another portal won it
            self._busy[record.run_id] = asyncio.create_task(
                self._deliver(session, record, flow_run, generation),
                name=f"acc-webhook-{record.run_id}",
            )
        if time.monotonic() - self._tidied >= self.tidy_every_s:
            await self._tidy(client)
            self._tidied = time.monotonic()

    def _next_claim(self, claims: dict[int, WebhookClaim], now: datetime) -> int | None:
        """The claim to make: the first, one past a claim left to go stale, or none."""
        if not claims:
            return 0
        newest = max(claims)
        if now - claims[newest].renewed > timedelta(seconds=self.claim_ttl_s):
            return newest + 1
        return None

    async def _let_go_of_orphans(self, client: PrefectClient, found: _Found, now: datetime) -> None:
        """Delete stale claims on runs with no pending record: left by a claimer that
        finished the record but died before letting go of its claims."""
        stale = timedelta(seconds=self.claim_ttl_s)
        for run_id, claims in found.claims.items():
            if run_id in found.records or run_id in self._busy:
                continue
            old = [g for g, claim in claims.items() if now - claim.renewed > stale]
            await _delete(client, [claim_name(run_id, g) for g in old])

    async def _tidy(self, client: PrefectClient) -> None:
        """Delete the records finished more than ``keep_finished_s`` ago."""
        horizon = datetime.now(UTC) - timedelta(seconds=self.keep_finished_s)
        done = await _read_tagged(client, DONE_TAG)
        old = [r for r in done.records.values() if r.finished and r.finished <= horizon]
        await _delete(client, [record_name(r.run_id) for r in old])

    async def _read_runs(
        self, platform: AsyncAccelerator, records: list[WebhookRecord]
    ) -> dict[str, FlowRun | None]:
        """The runs of ``records``, by id: ``None`` for one its workspace does not hold;
        absent when its workspace could not be read (asked again next round)."""
        by_space: dict[str, list[str]] = {}
        for record in records:
            url = (record.workspace or platform.api_url).rstrip("/")
            by_space.setdefault(url, []).append(record.run_id)
        found: dict[str, FlowRun | None] = {}
        for url, ids in by_space.items():
            try:
                client = await self._workspace(platform, url)
                if client is None:  # its project was unbound: nobody reads the run any more
                    found.update(dict.fromkeys(ids))
                    continue
                for start in range(0, len(ids), 200):
                    chunk = ids[start : start + 200]
                    found.update(await _final_states(client, chunk))
            except Exception:
                log.exception("webhooks: the runs in %s could not be read", url)
        return found

    @staticmethod
    async def _workspace(platform: AsyncAccelerator, url: str) -> PrefectClient | None:
        """The client of workspace ``url``; bound projects are read only when a run is there
        (one broken binding holds up no other webhook)."""
        if url == platform.api_url:
            return await platform.client()
        return (await platform.workspaces()).get(url)

    async def _deliver(
        self,
        session: _Session,
        record: WebhookRecord,
        flow_run: FlowRun | None,
        generation: int,
    ) -> None:
        """Deliver one run's webhook under claim ``generation``, then record how it went."""
        client = await session.platform.client()
        mine = claim_name(record.run_id, generation)
        try:
            current = await read_webhook(client, record.run_id)
            if current is None or current.status != "pending":
                # Finished by a claimer who let go of its claim before this one was made.
                await _delete(client, [mine])
                return
            outcome: _Attempt | None = _Attempt(False, False, "the run no longer exists")
            tried = 0
            if flow_run is not None:
                outcome, tried = await self._attempts(
                    session, client, current, flow_run, generation
                )
            if outcome is None:
                return  # another portal took the delivery over
            await self._finish(client, current, outcome, tried, generation)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_delete(client, [mine]), 5)
            raise
        except Exception:
            # The claim stays: once stale, another round (here or elsewhere) takes it over.
            log.exception("webhooks: delivering run %s failed", record.run_id)
        finally:
            self._busy.pop(record.run_id, None)

    async def _attempts(
        self,
        session: _Session,
        client: PrefectClient,
        record: WebhookRecord,
        flow_run: FlowRun,
        generation: int,
    ) -> tuple[_Attempt | None, int]:
        """POST until delivered, refused or out of attempts; ``None`` if the claim was lost."""
        body = body_of(flow_run, record.delivery)
        secret = _derive(session.key, record.caller)
        attempt, delay = _Attempt(False, False, "not attempted"), self.first_retry_s
        for tried in range(1, self.attempts + 1):
            if tried > 1:
                await asyncio.sleep(delay)
                delay *= 2
            if not await self._still_mine(client, record.run_id, generation):
                log.warning("webhooks: run %s was taken over by another portal", record.run_id)
                return None, tried - 1
            problems = webhook_problems(record.url, session.settings)
            if problems:  # the allow-list changed since the launch
                return _Attempt(False, False, f"refused: {problems[0]}"), tried - 1
            attempt = await self._post(session.http, record, body, secret)
            if attempt.delivered or not attempt.retry:
                return attempt, tried
            log.info("webhooks: run %s, attempt %d: %s", record.run_id, tried, attempt.outcome)
        return attempt, self.attempts

    async def _still_mine(self, client: PrefectClient, run_id: str, generation: int) -> bool:
        """Whether claim ``generation`` is still the run's newest; if so, renew it."""
        from accelerator_prefect.directory import read_named

        held = {
            key[1]
            for item in await read_named(client, "variables", CLAIM_PREFIX + run_id)
            if (key := _claim_key(str(item["name"]))) is not None and key[0] == run_id
        }
        if generation not in held or max(held) > generation:
            return False
        renewed = WebhookClaim(owner=self.owner, renewed=datetime.now(UTC))
        await _update(client, claim_name(run_id, generation), renewed.model_dump(mode="json"))
        return True

    async def _post(
        self, http: httpx.AsyncClient, record: WebhookRecord, body: bytes, secret: str
    ) -> _Attempt:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "accelerator-prefect-webhooks",
            SIGNATURE_HEADER: signature(body, secret),
            EVENT_HEADER: EVENT,
            DELIVERY_HEADER: record.delivery,
        }
        try:
            # Streamed and closed unread: what a receiver answers is not ours to load.
            async with http.stream("POST", record.url, content=body, headers=headers) as response:
                status = response.status_code
        except httpx.TransportError as exc:
            return _Attempt(False, True, f"{type(exc).__name__}: no answer")
        outcome = f"HTTP {status}"
        if 200 <= status < 300:
            return _Attempt(True, False, outcome)
        return _Attempt(False, status == 429 or status >= 500, outcome)

    async def _finish(
        self,
        client: PrefectClient,
        record: WebhookRecord,
        attempt: _Attempt,
        tried: int,
        generation: int,
    ) -> None:
        """Record how the delivery went, then let go of every claim on it (in this order:
        a claim made after this one was deleted finds the record finished)."""
        done = record.model_copy(
            update={
                "status": "delivered" if attempt.delivered else "failed",
                "attempts": tried,
                "outcome": attempt.outcome,
                "finished": datetime.now(UTC),
            }
        )
        name, value = record_name(record.run_id), done.model_dump(mode="json")
        await _update(client, name, value, [RECORD_TAG, DONE_TAG])
        level = logging.INFO if attempt.delivered else logging.WARNING
        log.log(level, "webhooks: run %s %s (%s)", record.run_id, done.status, attempt.outcome)
        await _delete(client, [claim_name(record.run_id, g) for g in range(generation + 1)])


async def _final_states(client: PrefectClient, ids: list[str]) -> dict[str, FlowRun | None]:
    """Runs ``ids`` as one request reads them: ``None`` for a run that does not exist."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(i) for i in ids])),
        limit=len(ids),
    )
    found: dict[str, FlowRun | None] = dict.fromkeys(ids)
    found.update({str(r.id): r for r in flow_runs})
    return found


def _final(flow_run: FlowRun) -> bool:
    from accelerator_prefect.runs import FINAL_TYPES

    return flow_run.state is not None and flow_run.state.type.value in FINAL_TYPES
