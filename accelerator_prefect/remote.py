"""The service over HTTP: what a user's client speaks to the portal.

:class:`PortalService` has the async methods of
:class:`~accelerator_prefect.client.AsyncAccelerator` that users hold, each one
request to the portal's ``/api/v1``; :class:`~accelerator_prefect.Accelerator`
and :class:`~accelerator_prefect.Run` sit on either without knowing which. A user
needs the portal's address and a token (or a link), nothing else: no Prefect API
address, no auth string, no storage credentials.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from accelerator_prefect import errors

if TYPE_CHECKING:
    from accelerator_prefect.access import Principal
    from accelerator_prefect.audit import AuditEntry
    from accelerator_prefect.catalog import HostedModel
    from accelerator_prefect.client import GuestSession, SharedLink
    from accelerator_prefect.manifest import Status
    from accelerator_prefect.outputs import OutputFile
    from accelerator_prefect.provenance import Provenance
    from accelerator_prefect.publish import PublishResult
    from accelerator_prefect.retention import AreaUsage
    from accelerator_prefect.runs import (
        RoutineProgress,
        RunFailure,
        RunInfo,
        RunQuery,
        RunSummary,
    )
    from accelerator_prefect.storage import Entry
    from accelerator_prefect.usage import UsageRow
    from accelerator_prefect.versions import VersionInfo

_ERRORS: dict[str, type[errors.AcceleratorError]] = {
    "not-found": errors.NotFound,
    "access-denied": errors.AccessDenied,
    "unauthenticated": errors.AccessDenied,
    "version-archived": errors.VersionArchived,
    "runtime-mismatch": errors.RuntimeMismatch,
    "output-altered": errors.AlteredOutput,
    "manifest-invalid": errors.ManifestError,
    "publish-refused": errors.PublishError,
    "run-timeout": errors.RunTimeout,
    "idempotency-key-reused": errors.IdempotencyConflict,
    "quota-exceeded": errors.QuotaExceeded,
    "storage-quota": errors.StorageQuotaExceeded,
    "too-large": errors.PublishError,
    "platform-unavailable": errors.PlatformError,
}


T = TypeVar("T")

RATE_RETRIES = 3  # times a request over the rate limit is sent again, after Retry-After


def _raise_for(response: httpx.Response) -> None:
    """The portal's problem+json as the error the in-process client raises."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    kind = str(body.get("type", "")).rsplit(":", 1)[-1]
    detail = str(body.get("detail") or response.reason_phrase)
    if kind == "validation-failed":
        problems = [
            f"{e['pointer']}: {e['detail']}" if e.get("pointer") else e["detail"]
            for e in body.get("errors", [])
        ]
        what = detail.split(" refused,", 1)[0] if " refused," in detail else "launch"
        first = problems[0] if problems else ""
        cls: type[errors.ValidationFailed] = errors.InvalidSecrets
        if any(p.startswith("conf") for p in problems):
            cls = errors.InvalidConf
        elif first.startswith(("inputs", "output")):
            cls = errors.InvalidInputs
        raise cls(problems, what=what)
    raise _ERRORS.get(kind, errors.AcceleratorError)(detail)


def _adapter(kind: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(kind)


class PortalService:
    """The service for one caller, over the portal's HTTP API."""

    def __init__(self, url: str, *, token: str | None = None, link: str | None = None) -> None:
        from accelerator_prefect.directory import link_token

        if token is None and link is None:
            raise errors.AccessDenied(
                "no credential: give your personal token (ACC_TOKEN, or token=…) or a shared link"
            )
        self.url = url.rstrip("/").removesuffix("/api/v1")
        self.api_url = self.url  # where runs are read: the portal
        self.ui_url = self.url
        credential = token if token is not None else link_token(link or "")
        if not credential:  # a link URL without its token: nothing to ask the portal
            from accelerator_prefect.directory import INVALID_LINK

            raise errors.AccessDenied(INVALID_LINK)
        self._headers = {"Authorization": f"Bearer {credential}"}
        self._http: httpx.AsyncClient | None = None
        self._principal: Principal | None = None
        # A shared link's own token opens one guest session, on the first call.
        self._link = credential if token is None and credential.startswith("accl_") else None
        self._exchanging = asyncio.Lock()
        self.guest_session: GuestSession | None = None
        self.followed_state: str | None = None  # how the run :meth:`follow_logs` read ended
        self._answered = False  # whether the portal ever answered this client

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=f"{self.url}/api/v1",
                headers=self._headers,
                timeout=httpx.Timeout(60.0, connect=10.0),
            )
        return self._http

    async def exchange_link(self) -> GuestSession:
        """A new guest session of the link this client was given (the portal's
        ``POST /guest-sessions``)."""
        from accelerator_prefect.client import GuestSession

        if self._link is None:
            raise errors.AccessDenied("only a shared link's own token is exchanged")
        headers = {"Authorization": f"Bearer {self._link}"}
        found = await self._call("POST", "/guest-sessions", headers=headers, exchanged=True)
        return _adapter(GuestSession).validate_python(found)  # type: ignore[no-any-return]

    async def _as_guest(self) -> None:
        """Holding a link's own token: act as a guest session of it, opened once."""
        if self._link is not None and self.guest_session is None:
            async with self._exchanging:  # one guest session per client, however many ask
                if self.guest_session is None:
                    self.guest_session = await self.exchange_link()
                    self._headers["Authorization"] = f"Bearer {self.guest_session.token}"
                    self.http().headers["Authorization"] = self._headers["Authorization"]

    async def _call(self, method: str, path: str, exchanged: bool = False, **kwargs: Any) -> Any:
        if not exchanged:
            await self._as_guest()
        streamed = hasattr(kwargs.get("content"), "__aiter__")  # cannot be sent twice
        headers = kwargs.get("headers") or {}
        # Sending it again does nothing twice: a read, or a launch with its Idempotency-Key.
        repeatable = method in ("GET", "HEAD") or "Idempotency-Key" in headers
        away = _Reconnecting(self.url)
        limited_times = 0
        while True:
            try:
                response = await self.http().request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                # Refused: the request never left, so it may go again whatever it was.
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                # A portal never reached is a wrong ACC_URL, said at once (as Prefect's
                # client does): waiting is for a portal that answered and went away.
                again = self._answered and not streamed and (repeatable or not sent)
                if not again or not await away.wait(exc):
                    raise away.error(exc) from None
                continue
            self._answered = True
            # The portal, or the platform behind it, is being restarted.
            restarting = response.status_code in _AWAY and repeatable and not streamed
            if restarting and await away.wait(
                response.status_code, response.headers.get("Retry-After")
            ):
                continue
            limited = response.status_code == 429 and "rate-limited" in response.text
            if not limited or limited_times == RATE_RETRIES or streamed:
                break
            # Over the rate limit: wait as long as the portal asks, a few times.
            limited_times += 1
            await asyncio.sleep(min(float(response.headers.get("Retry-After") or 1), 30.0))
        _raise_for(response)
        return response.json() if response.content else None

    async def follow_logs(self, run_id: str) -> AsyncIterator[str]:
        """The run's log lines as they come, from the first, until the run ends (the
        portal's server-sent events). A stream that breaks (the portal restarted, a proxy's
        timeout) is opened again with ``Last-Event-ID``: no line is missed, none repeated.
        The run's final state is :attr:`followed_state` afterwards."""
        await self._as_guest()
        last: str | None = None
        away = _Reconnecting(self.url)
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            try:
                async with self.http().stream(
                    "GET",
                    f"/runs/{run_id}/logs/stream",
                    headers=headers,
                    timeout=httpx.Timeout(60.0, connect=10.0, read=None),
                ) as response:
                    self._answered = True
                    if response.status_code in _AWAY and await away.wait(
                        response.status_code, response.headers.get("Retry-After")
                    ):
                        continue
                    if not response.is_success:
                        await response.aread()
                        _raise_for(response)
                    async for event in _events(response):
                        away = _Reconnecting(self.url)  # it answers: patience anew
                        if event.id is not None:
                            last = event.id
                        if event.name == "log":
                            yield str(json.loads(event.data))
                        elif event.name == "end":
                            self.followed_state = str(json.loads(event.data)["state"])
                            return
            except httpx.HTTPError as exc:
                if not self._answered or not await away.wait(exc):
                    raise away.error(exc) from None
                continue
            # The stream ended without its end event: the portal went away mid-stream.
            if not await away.wait("the stream ended early"):
                raise away.error("the stream ended early")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def not_here(*_: Any, **__: Any) -> Any:
            raise errors.AcceleratorError(
                f"{name.replace('_', ' ')}: not offered through the portal; an operator does "
                "it on the platform (acc … without ACC_URL)"
            )

        return not_here

    async def publish(
        self,
        manifest: str | Path,
        *,
        allow_dirty: bool = False,
        force: bool = False,
        repository: str | None = None,
    ) -> PublishResult:
        """Publish from the author's repository: a bundle of its HEAD commit (or, with
        ``repository``, that URL at HEAD), imported by the platform in a process of its own."""
        from accelerator_prefect.publish import publish_over_http

        return await publish_over_http(
            self._call, manifest, allow_dirty=allow_dirty, force=force, repository=repository
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- who, what -------------------------------------------------------------------------------

    async def principal(self) -> Principal:
        from accelerator_prefect.access import Principal, Role

        me = await self._call("GET", "/me")
        self._principal = Principal(
            name=me["name"],
            projects={k: Role(v) for k, v in me["projects"].items()},
            operator=me["operator"],
            guest=me["guest"],
        )
        return self._principal

    async def catalog(self) -> list[HostedModel]:
        from accelerator_prefect.catalog import HostedModel

        return list(_adapter(list[HostedModel]).validate_python(await self._call("GET", "/models")))

    async def get(self, model: str) -> HostedModel:
        from accelerator_prefect.catalog import HostedModel

        return HostedModel.model_validate(await self._call("GET", f"/models/{model}"))

    async def versions(self, model: str) -> list[VersionInfo]:
        from accelerator_prefect.versions import VersionInfo

        found = await self._call("GET", f"/models/{model}/versions")
        return list(_adapter(list[VersionInfo]).validate_python(found))

    async def set_status(
        self, model: str, version: str, status: Status, replaced_by: str | None = None
    ) -> Any:
        action = {"deprecated": "deprecate", "archived": "archive", "active": "restore"}
        body = {"replaced_by": replaced_by}
        await self._call(
            "POST", f"/models/{model}/versions/{version}/{action[str(status)]}", json=body
        )
        updated = await self.get(model)
        return next(v for v in updated.versions if v.version == version)

    async def set_access(self, model: str, scope: Any) -> HostedModel:
        from accelerator_prefect.catalog import HostedModel

        found = await self._call("PUT", f"/models/{model}/access", json={"scope": str(scope)})
        return HostedModel.model_validate(found)

    async def usage(
        self, model: str, since: datetime, until: datetime | None = None
    ) -> list[UsageRow]:
        from accelerator_prefect.usage import UsageRow

        params = {"since": since.isoformat()}
        if until is not None:
            params["until"] = until.isoformat()
        rows = await self._call("GET", f"/models/{model}/usage", params=params)
        return list(_adapter(list[UsageRow]).validate_python(rows))

    async def audit(self, model: str, limit: int = 500) -> list[AuditEntry]:
        from accelerator_prefect.audit import AuditEntry

        entries = await self._call("GET", f"/models/{model}/audit", params={"limit": limit})
        return list(_adapter(list[AuditEntry]).validate_python(entries))

    # -- launching -------------------------------------------------------------------------------

    async def launch(
        self,
        model: str,
        conf: Any = None,
        *,
        version: str | None = None,
        inputs: Any = None,
        output: Any = None,
        secrets: Mapping[str, Any] | None = None,
        remember: bool = False,
        via: str = "python",
        idempotency_key: str | None = None,
    ) -> tuple[str, str, str | None]:
        import uuid

        body = {
            "version": version,
            "conf": conf.model_dump(mode="json") if hasattr(conf, "model_dump") else conf,
            "inputs": inputs,
            "output": output,
            "secrets": dict(secrets) if secrets else None,  # checked by the service, as sent
            "remember": remember,
        }
        # A key of its own, so a request sent again after a lost answer makes no second run.
        key = idempotency_key or uuid.uuid4().hex
        run = await self._call(
            "POST", f"/models/{model}/launch", json=body, headers={"Idempotency-Key": key}
        )
        return run["id"], self.url, run.get("notice")

    async def forget_secrets(self, model: str) -> int:
        found = await self._call("DELETE", f"/models/{model}/secrets")
        return int(found["forgotten"])

    async def rerun(
        self, run_id: str, *, secrets: Mapping[str, Any] | None = None, via: str = "python"
    ) -> tuple[str, str, str | None]:
        body = {"secrets": dict(secrets) if secrets else None}
        run = await self._call("POST", f"/runs/{run_id}/rerun", json=body)
        return run["id"], self.url, run.get("notice")

    # -- runs ------------------------------------------------------------------------------------

    async def runs(self, query: RunQuery, limit: int = 200) -> list[RunSummary]:
        from accelerator_prefect.runs import RunSummary

        params: dict[str, Any] = {"limit": limit}
        for name in ("model", "version", "user"):
            if getattr(query, name):
                params[name] = getattr(query, name)
        if query.states:
            params["state"] = list(query.states)
        if query.since:
            params["since"] = query.since.isoformat()
        if query.until:
            params["until"] = query.until.isoformat()
        if query.phases:
            params["phases"] = "true"
        found = await self._call("GET", "/runs", params=params)
        return list(_adapter(list[RunSummary]).validate_python(found))

    async def visible_run(self, run_id: str, workspace: str | None = None) -> str:
        await self.run_info(run_id)
        return self.url

    def run_url(self, run_id: str, workspace: str | None = None) -> str:
        return f"{self.url}/api/v1/runs/{run_id}"

    def _info(self, body: dict[str, Any]) -> RunInfo:
        from accelerator_prefect.runs import RunInfo

        tags = {"model": body["model"], "version": body["version"], "user": body["user"]}
        tags["via"] = body["via"]
        return RunInfo(
            id=body["id"],
            name=body["name"],
            state=body["state"],
            state_type=body["state_type"],
            message=body.get("message"),
            created=_moment(body.get("created")),
            started=_moment(body.get("started")),
            ended=_moment(body.get("ended")),
            duration=body.get("duration"),
            parameters=body.get("parameters") or {},
            tags=tags,
            workspace=self.url,
        )

    async def run_info(self, run_id: str, workspace: str | None = None) -> RunInfo:
        return self._info(await self._call("GET", f"/runs/{run_id}"))

    async def wait_run(
        self, run_id: str, timeout: float | None, workspace: str | None = None
    ) -> RunInfo:
        """Held requests of up to a minute each (``Prefer: wait``) until final or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = 60.0 if deadline is None else max(0.0, min(60.0, deadline - loop.time()))
            body = await self._call(
                "GET",
                f"/runs/{run_id}",
                headers={"Prefer": f"wait={left:.1f}"},
                timeout=left + 30,
            )
            if body["final"]:
                return self._info(body)
            if deadline is not None and loop.time() >= deadline:
                raise errors.RunTimeout(
                    f"run {run_id} is still {body['state']} after {timeout:g} s"
                )

    async def cancel(self, run_id: str, workspace: str | None = None) -> RunInfo:
        return self._info(await self._call("POST", f"/runs/{run_id}/cancel"))

    async def run_logs(self, run_id: str, workspace: str | None = None) -> list[str]:
        return list(await self._call("GET", f"/runs/{run_id}/logs"))

    async def run_failure(self, run_id: str, workspace: str | None = None) -> RunFailure | None:
        from accelerator_prefect.runs import RunFailure

        body = await self._call("GET", f"/runs/{run_id}/failure")
        return RunFailure(**body) if body else None

    async def run_progress(self, run_id: str, workspace: str | None = None) -> RoutineProgress:
        from accelerator_prefect.runs import RoutineProgress

        return RoutineProgress(**await self._call("GET", f"/runs/{run_id}/progress"))

    async def run_result(self, run_id: str, workspace: str | None = None) -> Any:
        return await self._call("GET", f"/runs/{run_id}/result")

    async def run_provenance(self, run_id: str, workspace: str | None = None) -> Provenance:
        from accelerator_prefect.provenance import Provenance

        return Provenance.model_validate(await self._call("GET", f"/runs/{run_id}/provenance"))

    async def run_outputs(
        self, run_id: str, workspace: str | None = None
    ) -> tuple[list[OutputFile], bool]:
        from accelerator_prefect.outputs import OutputFile

        body = await self._call("GET", f"/runs/{run_id}/outputs")
        files = _adapter(list[OutputFile]).validate_python(body["files"])
        return list(files), bool(body["complete"])

    async def run_outputs_expired(self, run_id: str, workspace: str | None = None) -> str | None:
        body = await self._call("GET", f"/runs/{run_id}/outputs")
        expired = body.get("expired")
        return str(expired) if expired else None

    async def storage_usage(self) -> list[AreaUsage]:
        from accelerator_prefect.retention import AreaUsage

        return [AreaUsage(**u) for u in await self._call("GET", "/storage/usage")]

    async def open_output(self, run_id: str, path: str, workspace: str | None = None) -> Any:
        return await self._download(f"/runs/{run_id}/outputs/{path}", {})

    async def _download(self, path: str, params: dict[str, str]) -> io.BufferedReader:
        """A file the portal streams, read as it arrives (never held whole); seekable, as
        a file opened in-process is: a seek asks for the rest of the file from there."""
        await self._as_guest()

        async def from_byte(start: int) -> httpx.Response:
            headers = {"Range": f"bytes={start}-"} if start else None
            request = self.http().build_request("GET", path, params=params, headers=headers)
            try:
                response = await self.http().send(request, stream=True)
            except httpx.HTTPError as exc:
                raise errors.PlatformError(
                    f"the portal at {self.url} did not answer ({exc})"
                ) from None
            if not response.is_success:
                await response.aread()
                await response.aclose()
                _raise_for(response)
            return response

        response = await from_byte(0)
        loop = asyncio.get_running_loop()
        return io.BufferedReader(_Stream(response, loop, from_byte), buffer_size=1 << 20)

    # -- links -----------------------------------------------------------------------------------

    async def share_link(
        self,
        model: str,
        *,
        version: str | None = None,
        expires_in: timedelta | None = None,
        guest_days: int = 30,
    ) -> SharedLink:
        from accelerator_prefect.client import SharedLink

        days = expires_in.total_seconds() / 86400 if expires_in else None
        body = {"version": version, "expires_in_days": days, "guest_days": guest_days}
        found = await self._call("POST", f"/models/{model}/links", json=body)
        return _adapter(SharedLink).validate_python(found)  # type: ignore[no-any-return]

    async def links(self, model: str | None = None) -> list[SharedLink]:
        from accelerator_prefect.client import SharedLink

        found = await self._call("GET", "/links", params={"model": model} if model else None)
        return list(_adapter(list[SharedLink]).validate_python(found))

    async def revoke_link(self, link_id: str) -> SharedLink:
        from accelerator_prefect.client import SharedLink

        return _adapter(SharedLink).validate_python(  # type: ignore[no-any-return]
            await self._call("DELETE", f"/links/{link_id}")
        )

    # -- storage ---------------------------------------------------------------------------------

    async def ls(self, uri: str) -> list[Entry]:
        from accelerator_prefect.storage import Entry

        found = await self._call("GET", "/storage", params={"path": uri})
        return list(_adapter(list[Entry]).validate_python(found))

    async def upload(self, local: Path, uri: str) -> Entry:
        from accelerator_prefect.storage import Entry

        async def chunks() -> Any:
            with local.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, 1 << 20):
                    yield chunk

        # Announced, so the portal can refuse at once what the area's quota cannot hold.
        size = {"Content-Length": str(local.stat().st_size)}
        found = await self._call(
            "PUT", "/storage/file", params={"path": uri}, content=chunks(), headers=size
        )
        return _adapter(Entry).validate_python(found)  # type: ignore[no-any-return]

    async def download(self, uri: str) -> io.BufferedReader:
        return await self._download("/storage/file", {"path": uri})


_AWAY = {502, 503, 504}  # a gateway's or the portal's "not now": the platform restarting
RECONNECT_PATIENCE = 120.0  # seconds a client waits for a portal that went away
RECONNECT_FIRST_PAUSE = 0.25
RECONNECT_MAX_PAUSE = 5.0


class _Reconnecting:
    """How long a client has waited for the portal to come back, and how long to wait next:
    0.25 s, then twice as long each time up to 5 s (or the portal's ``Retry-After``), for
    :data:`RECONNECT_PATIENCE` s in all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.waited = 0.0
        self.pause = RECONNECT_FIRST_PAUSE

    async def wait(self, why: object, retry_after: str | None = None) -> bool:
        """Pause before trying again; ``False`` once patience is spent."""
        if self.waited >= RECONNECT_PATIENCE:
            return False
        pause = self.pause
        if retry_after and retry_after.strip().isdigit():
            pause = max(pause, min(float(retry_after), RECONNECT_MAX_PAUSE))
        await asyncio.sleep(pause)
        self.waited += pause
        self.pause = min(self.pause * 2, RECONNECT_MAX_PAUSE)
        return True

    def error(self, why: object) -> errors.PlatformError:
        cause = type(why).__name__ if isinstance(why, Exception) else str(why)
        waited = f" for {self.waited:.0f} s" if self.waited else ""
        return errors.PlatformError(
            f"the portal at {self.url} did not answer{waited} ({cause}); check ACC_URL, or "
            "try again later"
        )


@dataclass
class _Event:
    name: str = "message"
    data: str = ""
    id: str | None = None


async def _events(response: httpx.Response) -> AsyncIterator[_Event]:
    """The server-sent events of ``response`` (the fields this portal sends)."""
    event, data = _Event(), list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data or event.id is not None:
                event.data = "\n".join(data)
                yield event
            event, data = _Event(), list[str]()
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event.name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event.id = value


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class _Stream(io.RawIOBase):
    """A streamed HTTP response read synchronously from the facade's thread; a seek ends
    it and reads on with a new one from that byte (``from_byte``: an HTTP Range request)."""

    def __init__(
        self,
        response: httpx.Response,
        loop: asyncio.AbstractEventLoop,
        from_byte: Callable[[int], Coroutine[Any, Any, httpx.Response]],
    ) -> None:
        self._loop = loop
        self._from_byte = from_byte
        length = response.headers.get("Content-Length", "")
        self._size = int(length) if length.isdigit() else None
        self._position = 0
        self._response: httpx.Response | None = response
        self._left = b""
        self._iterator = response.aiter_raw()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._size is not None

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._size is None:
            raise io.UnsupportedOperation("seek: the portal did not say how large the file is")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        position = base + offset
        if position < 0:
            raise ValueError(f"seek to {position}: before the start of the file")
        if position != self._position:
            self._end_response()
            self._position, self._left = position, b""
        return position

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            if self._response is None:  # after a seek: the rest of the file from there
                if self._size is not None and self._position >= self._size:
                    return 0
                response = self._wait(self._from_byte(self._position))
                self._response, self._iterator = response, response.aiter_raw()
            chunk = self._wait(self._next())
            if chunk is None:
                return 0
            self._left = chunk
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        self._position += n
        return n

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _next(self) -> bytes | None:
        try:
            return await self._iterator.__anext__()
        except StopAsyncIteration:
            return None

    def _end_response(self) -> None:
        if self._response is not None:
            self._wait(self._response.aclose())
            self._response = None

    def close(self) -> None:
        if not self.closed:
            self._end_response()
        super().close()


class PortalStorage:
    """``acc://`` storage through the portal: list, upload and download, in your areas,
    with the same methods (and plans) as :class:`~accelerator_prefect.storage.Storage`."""

    def __init__(self, accelerator: Any, service: PortalService) -> None:
        self._acc = accelerator
        self._service = service

    def ls(self, uri: str = "acc://") -> list[Entry]:
        return self._acc._run(self._service.ls(uri))  # type: ignore[no-any-return]

    def files(self, uri: str) -> list[Entry]:
        """Every file under the folder ``uri``, its subfolders walked."""
        found, folders = [], [uri.rstrip("/") + "/"]
        while folders:
            for entry in self.ls(folders.pop()):
                if entry.is_folder:
                    folders.append(entry.uri.rstrip("/") + "/")
                else:
                    found.append(entry)
        return sorted(found, key=lambda e: e.uri)

    def info(self, uri: str) -> Entry:
        parent = uri.rstrip("/").rsplit("/", 1)[0] + "/"
        try:
            listed = self.ls(parent)
        except errors.AccessDenied:
            # A folder one may read inside one's parent may not (a model's sample inputs):
            # it is a folder if it lists itself.
            from accelerator_prefect.storage import Entry

            inside = self.ls(uri.rstrip("/") + "/")
            if [e.uri for e in inside] == [uri.rstrip("/")]:
                return inside[0]  # a file lists as itself
            return Entry(uri.rstrip("/") + "/", "folder", 0, None, None)
        for entry in listed:
            if entry.uri.rstrip("/") == uri.rstrip("/"):
                return entry
        raise errors.NotFound(f"{uri}: no such file or folder")

    def exists(self, uri: str) -> bool:
        try:
            self.info(uri)
        except errors.NotFound:
            return False
        return True

    def open(self, uri: str, mode: str = "rb", **kwargs: Any) -> Any:
        """A file to read, streamed: ``rb``, or ``r`` for text (``encoding`` as ``open``'s)."""
        if mode not in ("rb", "r"):
            raise errors.AcceleratorError(
                f"{uri}: through the portal, files open for reading (rb or r); write with put"
            )
        stream: io.BufferedReader = self._acc._run(self._service.download(uri))
        if mode == "r":
            return io.TextIOWrapper(stream, encoding=kwargs.get("encoding", "utf-8"))
        return stream

    def plan_put(self, local: str | Path, uri: str) -> list[tuple[Path, str]]:
        """The (local file, acc:// URI) pairs ``put`` would copy."""
        from accelerator_prefect.storage import check_path, put_pairs, refuse_dot_name

        source = Path(local)
        if not source.exists():
            raise errors.NotFound(f"{source}: no such local file or folder")
        folder = uri.endswith("/") or uri.rstrip("/").count("/") <= 2
        target = uri.rstrip("/") + "/" + source.name if folder else uri
        pairs = put_pairs(source, target)
        for _, each in pairs:  # every name, before anything is sent (the portal refuses each)
            refuse_dot_name(check_path(each))
        return pairs

    def put(
        self, local: str | Path, uri: str, progress: Callable[[int], None] | None = None
    ) -> list[Entry]:
        """Upload a local file or folder into ``uri`` (into it, if ``uri`` ends with /)."""
        done = []
        for source, target in self.plan_put(local, uri):
            done.append(self._acc._run(self._service.upload(source, target)))
            if progress is not None:
                progress(source.stat().st_size)
        return done

    def plan_get(self, uri: str, local: str | Path) -> list[tuple[Entry, Path]]:
        """The (acc:// file, local path) pairs ``get`` would copy."""
        entry = self.info(uri)
        destination = Path(local)
        if destination.is_dir() or str(local).endswith(os.sep):
            destination = destination / entry.name
        if not entry.is_folder:
            return [(entry, destination)]
        base = entry.uri.rstrip("/") + "/"
        return [(f, destination / f.uri[len(base) :]) for f in self.files(uri)]

    def get(
        self, uri: str, local: str | Path, progress: Callable[[int], None] | None = None
    ) -> list[Path]:
        """Download a file or folder; a local file appears only once complete."""
        from accelerator_prefect.storage import partial_name

        done = []
        for entry, target in self.plan_get(uri, local):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(partial_name(target.name))  # as long as any name
            try:
                with self.open(entry.uri) as source, partial.open("wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
            done.append(target)
        return done
