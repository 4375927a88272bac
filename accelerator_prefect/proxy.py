"""The run-scoped proxy: all of the Prefect API a warm run's own process reaches.

Prefect OSS has no scoped keys: whoever holds the API's auth string reads every
Secret block and may do anything. So a warm run is never given it. The warm worker
serves this proxy on loopback and hands each child, instead of the API's address
and auth string, the proxy's address and a token good for that one flow run
(``accr_<run id>_<signature>``, signed with a key the worker makes at start and never
writes down). The token stops when the child exits.

The proxy passes on, with the worker's own credential, only what concerns that run:

- reading its flow run, its deployment and its flow; changing its state and labels;
- its task runs (created for it, or first met in its events) and their states;
- its logs and artifacts (every record must name the run);
- the Secret blocks its launch named in its parameters (reading them, and deleting
  its own per-run blocks once it ends);
- events (``/events/in``): a frame is passed on only when its resource is the run or
  one of its task runs, and it relates no other flow run. Task states travel as
  events, so a frame about another run's task is dropped like a request.

Everything else is refused with 403, and said in the worker's log. Nothing of the
worker's credential reaches the child: not in its environment, not in an answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from accelerator_prefect.runstore import StorageScope

_log = logging.getLogger("accelerator_prefect.proxy")

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TOKEN = re.compile(rf"^accr_({_UUID})_([0-9a-f]{{16}})_([0-9a-f]{{32}})$")
_RUN_PREFIX = "acc-run-"  # the per-run Secret blocks a run deletes once it ends
_TASK_RUNS_PER_RUN = 100_000  # the task runs one run may bring into being through the proxy
_BODY_LIMIT = 64 << 20
_LINK_SECONDS = 600  # a run's signed URL for reading one of its inputs
_STORAGE_CALLS = 4  # storage calls of one run under way at once (the rest wait their turn)
_UPLOADS = 64  # files one run may be writing at once
_WRITE_PART = 8 << 20  # what the store's writer holds before it sends a part
# A server being restarted: a run's request waits for it this long (within the run's own
# client's 60 s timeout), asked again after 0.25 s, 0.5 s, … up to 5 s apart; then a 503
# sends the run's client into its own back-off (2, 4, … 32 s), so a run bears some two
# minutes without its server.
_UPSTREAM_PATIENCE = 40.0
_UPSTREAM_FIRST_PAUSE = 0.25
_UPSTREAM_MAX_PAUSE = 5.0
_EVENTS_PATIENCE = 300.0  # how long a run's events wait for the server before they are lost
# The backend's credentials, which a run reaching storage through the proxy never holds;
# its settings that are no secret (an endpoint, a region) stay.
_STORAGE_KEY = re.compile(
    r"^(AWS_(?!ENDPOINT_URL|REGION$|DEFAULT_REGION$)|GOOGLE_APPLICATION_CREDENTIALS$|"
    r"GCS_|FSSPEC_|AZURE_STORAGE_|AZURE_CLIENT_SECRET$|AZURE_CLIENT_CERTIFICATE|"
    r"AZURE_FEDERATED_TOKEN_FILE$)"
)
# The flow-run events a run's own process sends (the others are the server's to make).
_RUN_SENDS = frozenset(
    {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.pull-step.executed",
        "prefect.flow-run.pull-step.failed",
    }
)
# Where TLS finds the certificates it trusts: named like credentials, holding none.
TRUST_STORES = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PREFECT_API_SSL_CERT_FILE",
)

# Requests any run may make: they tell nothing about other runs.
_OPEN = {
    ("GET", "health"),
    ("GET", "ready"),
    ("GET", "hello"),
    ("GET", "admin/version"),
    ("GET", "csrf-token"),
}


@dataclass
class RunScope:
    """What one flow run may reach: itself, its deployment and flow, its task runs, and
    the Secret blocks named in its parameters."""

    run_id: str
    deployment_id: str | None
    flow_id: str | None
    secret_blocks: frozenset[str]
    work_queue_id: str | None = None
    work_pool_name: str | None = None
    storage: StorageScope | None = None
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))  # this admission's
    storage_turns: asyncio.Semaphore | None = None  # made on the proxy's loop
    task_runs: set[str] = field(default_factory=set)
    block_ids: set[str] = field(default_factory=set)  # ids of its blocks, as read


def scope_of(flow_run: Any, work_pool_name: str | None = None) -> RunScope:
    """The scope of ``flow_run`` (a Prefect ``FlowRun``), picked up from the work pool
    ``work_pool_name`` (which a run read before the server filled it in does not name)."""
    parameters = flow_run.parameters or {}
    blocks = (parameters.get("secrets") or {}).get("blocks") or {}
    return RunScope(
        run_id=str(flow_run.id),
        deployment_id=str(flow_run.deployment_id) if flow_run.deployment_id else None,
        flow_id=str(flow_run.flow_id) if flow_run.flow_id else None,
        secret_blocks=frozenset(str(name) for name in blocks.values()),
        work_queue_id=str(flow_run.work_queue_id) if flow_run.work_queue_id else None,
        work_pool_name=flow_run.work_pool_name or work_pool_name,
        storage=StorageScope.of(flow_run),
    )


class Refused(Exception):
    """A request or frame outside the run's scope."""


class Quiet(Refused):
    """A frame dropped as a matter of course: not worth a line in the worker's log."""


class Unavailable(Exception):
    """The Prefect server cannot be reached (stopped, being restarted)."""


class RunProxy:
    """The proxy, served on a loopback port from a thread of its own (see the module)."""

    def __init__(self, upstream: str, auth_string: str | None, storage: Any = None) -> None:
        """``storage``: the ``acc://`` filesystem (the worker's, with its keys) that runs
        reach through ``/storage`` instead of holding the keys (:mod:`.runstore`); ``None``
        where they need none (a local storage, confined around each run)."""
        self.upstream = upstream.rstrip("/")
        self._auth = auth_string
        self._storage = storage
        self._uploads: dict[str, tuple[str, Any]] = {}  # upload id -> (run id, writer)
        self._storage_pool: Any = None  # threads of their own: a run's storage never waits
        # on the API's, nor one run's on more than its share
        self._key = secrets.token_bytes(32)
        self._scopes: dict[str, RunScope] = {}
        self._task_owner: dict[str, str] = {}  # task run id -> the run that brought it in
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._http: Any = None
        self.url = ""

    # -- tokens and scopes ---------------------------------------------------------------------

    def _signature(self, run_id: str, nonce: str) -> str:
        signed = f"{run_id}:{nonce}".encode()
        return hmac.new(self._key, signed, hashlib.sha256).hexdigest()[:32]

    def admit(self, flow_run: Any, work_pool_name: str | None = None) -> str:
        """Let ``flow_run``'s process in; the token it is to present (as its auth string).
        Each admission has its own: a process left over from an earlier attempt of the
        same run gets nothing back when the run is admitted again."""
        scope = scope_of(flow_run, work_pool_name)
        with self._lock:
            self._scopes[scope.run_id] = scope
        signature = self._signature(scope.run_id, scope.nonce)
        return f"accr_{scope.run_id}_{scope.nonce}_{signature}"

    def environment_for(
        self,
        flow_run: Any,
        env: dict[str, str],
        work_pool_name: str | None = None,
        keep: Collection[str] = (),
    ) -> dict[str, str]:
        """``env`` as ``flow_run``'s process is to have it (picked up from the pool
        ``work_pool_name``): this proxy's address, and a token good for that run only as its
        auth string; every variable holding the worker's own auth string left out, and
        every other credential it inherits (:func:`~accelerator_prefect.zygote.credential_free`:
        tokens, keys, passwords, URLs with a password) but those named in ``keep`` (the
        ones the pool's or the deployment's job variables set on purpose) and the storage
        backend's. Those (``AWS_…`` and the like) are left out too, but those in ``keep``,
        when runs reach storage through the proxy."""
        from accelerator_prefect.zygote import credential_free

        auth = self._auth
        # Of what the run inherits from the worker, no credential but the storage backend's
        # (its own rule, below: a run's pull steps may fetch DVC data with them); what the
        # pool's or the deployment's job variables set, as set; where TLS finds certificates.
        inherited = credential_free({k: v for k, v in env.items() if k not in keep})
        backend = [k for k in env if _STORAGE_KEY.match(k)]
        trusted = {k: env[k] for k in (*TRUST_STORES, *backend, *keep) if k in env}
        scoped = {k: v for k, v in {**inherited, **trusted}.items() if not auth or auth not in v}
        scoped.pop("PREFECT_API_KEY", None)
        token = self.admit(flow_run, work_pool_name)
        scoped["PREFECT_API_URL"] = self.url
        scoped["PREFECT_API_AUTH_STRING"] = token
        if self._storage is not None:  # storage through /storage, with the same token
            from accelerator_prefect.storage import RUNSTORE

            for name in [n for n in scoped if _STORAGE_KEY.match(n) and n not in keep]:
                del scoped[name]
            scoped["ACC_STORAGE_URL"] = f"{RUNSTORE}://"
            storage = self.url.removesuffix("/api") + "/storage"
            scoped["ACC_STORAGE_OPTIONS"] = json.dumps({"url": storage, "token": token})
        return scoped

    def release(self, run_id: UUID | str) -> None:
        """The run's process has ended: its token opens nothing any more, and what it was
        still uploading never appears."""
        with self._lock:
            scope = self._scopes.pop(str(run_id), None)
            if scope is not None:
                for task_run in scope.task_runs:
                    self._task_owner.pop(task_run, None)
            left = [k for k, (owner, _) in self._uploads.items() if owner == str(run_id)]
            writers = [w for w in (self._uploads.pop(k)[1] for k in left) if w is not None]
        if writers:  # an object store's abort is a request: not on the caller's loop
            threading.Thread(target=_abort_all, args=(writers,), daemon=True).start()

    def _scope(self, token: str | None) -> RunScope | None:
        match = _TOKEN.match(token or "")
        if match is None or not hmac.compare_digest(self._signature(match[1], match[2]), match[3]):
            return None
        with self._lock:
            scope = self._scopes.get(match[1])
        return scope if scope is not None and scope.nonce == match[2] else None

    def _claim_task_run(self, scope: RunScope, task_run: str) -> None:
        """``task_run`` belongs to ``scope``'s run from now on, unless another run's."""
        with self._lock:
            owner = self._task_owner.setdefault(task_run, scope.run_id)
            if owner != scope.run_id:
                raise Refused(f"task run {task_run} is another run's")
            if task_run not in scope.task_runs:
                if len(scope.task_runs) >= _TASK_RUNS_PER_RUN:
                    raise Refused("too many task runs")
                scope.task_runs.add(task_run)

    # -- serving -------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free loopback port, from a thread of its own; the proxy's API URL."""
        import uvicorn

        # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each connection: without it a
        # response's head and body wait on the peer's delayed ACK (some 40 ms a request).
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws_max_size=16 << 20,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_until_complete(self._server.serve(sockets=[listening]))
            if self._http is not None:
                loop.run_until_complete(self._http.aclose())
            loop.close()

        self._thread = threading.Thread(target=serve, name="acc-run-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        self.url = f"http://127.0.0.1:{port}/api"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._storage_pool is not None:
            self._storage_pool.shutdown(wait=False, cancel_futures=True)

    def _client(self) -> Any:
        import httpx

        if self._http is None:
            headers = {}
            if self._auth:
                basic = base64.b64encode(self._auth.encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
            self._http = httpx.AsyncClient(
                base_url=self.upstream,
                headers=headers,
                timeout=httpx.Timeout(120.0, connect=10.0),
                limits=httpx.Limits(max_keepalive_connections=32),
            )
        return self._http

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route, WebSocketRoute

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        return Starlette(
            routes=[
                Route("/storage/{op:path}", self._storage_request, methods=methods),
                WebSocketRoute("/api/events/in", self._events_in),
                WebSocketRoute("/api/{path:path}", self._socket_refused),
                Route("/api/{path:path}", self._http_request, methods=methods),
            ]
        )

    # -- HTTP ----------------------------------------------------------------------------------

    async def _http_request(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        given = request.path_params["path"]  # forwarded as given: a trailing / matters
        path = given.strip("/")
        method = request.method
        scope = self._scope(_presented(request.headers.get("authorization")))
        if scope is None:
            if (method, path) in _OPEN:  # reads: no body to pass on
                return await self._forward(request, given, b"")
            return JSONResponse({"detail": "not this run's credential"}, status_code=401)
        body = await _body_within(request, _BODY_LIMIT)
        if body is None:
            return JSONResponse({"detail": "request too large"}, status_code=413)
        _log.debug("run %s: %s /%s", scope.run_id, method, path)
        try:
            check = self._rule(scope, method, path, body)
        except Refused as exc:
            _log.warning("run %s: refused %s /%s: %s", scope.run_id, method, path, exc)
            return JSONResponse({"detail": f"not this run's: {exc}"}, status_code=403)
        response = await self._forward(request, given, body)
        if check is not None and response.status_code < 300:
            try:
                await check(scope, response)
            except Refused as exc:
                _log.warning("run %s: withheld %s /%s: %s", scope.run_id, method, path, exc)
                return JSONResponse({"detail": f"not this run's: {exc}"}, status_code=403)
        return response

    async def _forward(self, request: Any, path: str, body: bytes) -> Any:
        from starlette.responses import JSONResponse, Response

        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in {"content-type", "accept", "x-prefect-api-version", "user-agent"}
        }
        query = request.url.query
        try:
            upstream = await self._upstream(
                request.method,
                f"/{path}" + (f"?{query}" if query else ""),
                content=body or None,
                headers=headers,
            )
        except Unavailable as exc:
            # A 503: the run's Prefect client backs off and sends it again, as it does
            # when the server itself says it is busy.
            return JSONResponse({"detail": str(exc)}, status_code=503)
        kept = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() in {"content-type", "x-prefect-api-version", "retry-after"}
        }
        return Response(upstream.content, status_code=upstream.status_code, headers=kept)

    async def _upstream(self, method: str, path: str, **kwargs: Any) -> Any:
        """The Prefect server's answer to one request; while it cannot be reached (being
        restarted), asked again with back-off for up to :data:`_UPSTREAM_PATIENCE` s.

        Only a refused connection is retried here: the request never left, so sending it
        again cannot do it twice. A connection lost mid-request is :class:`Unavailable` at
        once (the run's client decides, as it does after the server's own 503)."""
        import httpx

        waited, pause = 0.0, _UPSTREAM_FIRST_PAUSE
        while True:
            try:
                return await self._client().request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if waited >= _UPSTREAM_PATIENCE:
                    raise Unavailable(
                        f"the Prefect server did not answer for {waited:.0f} s"
                    ) from exc
            except httpx.TransportError as exc:
                raise Unavailable(
                    f"the Prefect server went away mid-request ({type(exc).__name__})"
                ) from exc
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, _UPSTREAM_MAX_PAUSE)

    def _rule(
        self, scope: RunScope, method: str, path: str, body: bytes
    ) -> Callable[[RunScope, Any], Awaitable[None]] | None:
        """Refuse what is not this run's; a check of the answer, where one is needed."""
        if (method, path) in _OPEN:
            return None
        parts = path.split("/")
        run = scope.run_id
        if parts[0] == "flow_runs" and len(parts) >= 2:
            if parts[1] != run:
                raise Refused("another flow run")
            if len(parts) == 2 and method == "GET":
                return None
            if len(parts) == 3 and parts[2] in {"set_state", "labels"}:
                return None
            if len(parts) == 2 and method == "PATCH":
                _only_fields(body, {"flow_version", "infrastructure_pid", "empirical_policy"})
                return None
            raise Refused(f"flow run action {'/'.join(parts[2:]) or method}")
        if parts[0] == "deployments" and len(parts) == 2 and method == "GET":
            if parts[1] != scope.deployment_id:
                raise Refused("another deployment")
            return None
        if parts[0] == "flows" and len(parts) == 2 and method == "GET":
            if parts[1] != scope.flow_id:
                raise Refused("another flow")
            return None
        if path == f"work_queues/{scope.work_queue_id}" and method == "GET":
            return None  # its queue (events name it among the run's related resources)
        if path == f"work_pools/{scope.work_pool_name}" and method == "GET":
            return _without_template  # its pool, for the same, without the job template
        if parts[0] == "task_runs":
            return self._task_run_rule(scope, method, parts, body)
        if path in ("logs", "artifacts") and method == "POST":
            for record in _records(body):  # each names the run (and maybe a task run of it)
                if str(record.get("flow_run_id")) != run:
                    raise Refused(f"{path} of another run")
                if record.get("task_run_id"):
                    self._claim_task_run(scope, str(record["task_run_id"]))
            return None
        if parts[0] == "block_types" and method == "GET":
            return self._block_rule(scope, parts)
        if parts[0] == "block_documents" and len(parts) == 2 and method == "DELETE":
            if parts[1] not in scope.block_ids:
                raise Refused("a block this run did not read")
            return None
        if parts[0] == "block_schemas" and method == "GET":
            return None  # schemas describe block types; they hold no values
        raise Refused("not among what a run may do")

    def _task_run_rule(
        self, scope: RunScope, method: str, parts: list[str], body: bytes
    ) -> Callable[[RunScope, Any], Awaitable[None]] | None:
        if len(parts) == 1 and method == "POST":  # a task run created for this run
            record = _one(body)
            if str(record.get("flow_run_id")) != scope.run_id:
                raise Refused("a task run of another flow run")
            if record.get("id"):
                self._claim_task_run(scope, str(record["id"]))

            async def claim(scope: RunScope, response: Any) -> None:
                created = json.loads(response.body or b"{}")
                self._claim_task_run(scope, str(created.get("id")))

            return claim
        if len(parts) >= 2 and parts[1] in scope.task_runs:
            if len(parts) == 2 and method == "GET":
                return None
            if len(parts) == 3 and parts[2] == "set_state" and method == "POST":
                return None
        raise Refused("another run's task run")

    def _block_rule(
        self, scope: RunScope, parts: list[str]
    ) -> Callable[[RunScope, Any], Awaitable[None]] | None:
        # block_types/slug/<slug>[/block_documents/name/<name>]
        if len(parts) == 3 and parts[1] == "slug":
            return None  # a block type: its schema, no values
        if len(parts) == 6 and parts[1] == "slug" and parts[3:5] == ["block_documents", "name"]:
            if parts[5] not in scope.secret_blocks:
                raise Refused(f"block {parts[5]!r} is not this run's")

            async def remember(scope: RunScope, response: Any) -> None:
                found = json.loads(response.body or b"{}")
                name = str(found.get("name"))
                if name in scope.secret_blocks and name.startswith(_RUN_PREFIX) and found.get("id"):
                    scope.block_ids.add(str(found["id"]))

            return remember
        raise Refused("blocks other than the run's own")

    # -- storage -------------------------------------------------------------------------------

    async def _storage_request(self, request: Any) -> Any:
        """A run's storage call (:mod:`.runstore`): its inputs to read, its output folder
        to read and write, nothing else."""
        from starlette.responses import JSONResponse

        from accelerator_prefect.storage import StoragePathError

        scope = self._scope(_presented(request.headers.get("authorization")))
        if scope is None or self._storage is None:
            return JSONResponse({"detail": "not this run's credential"}, status_code=401)
        op, method = request.path_params["op"].strip("/"), request.method
        try:
            return await self._storage_call(scope, op, method, request)
        except PermissionError as exc:
            _log.warning("run %s: refused storage %s %s: %s", scope.run_id, method, op, exc)
            return JSONResponse({"detail": str(exc)}, status_code=403)
        except StoragePathError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except FileNotFoundError as exc:
            return JSONResponse({"detail": f"{exc.filename or exc}: not found"}, status_code=404)
        except FileExistsError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)
        except OSError as exc:
            return JSONResponse({"detail": f"storage: {exc}"}, status_code=502)

    async def _io(self, scope: RunScope, call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """``call`` on the storage's threads, a few of one run's at a time."""
        if self._storage_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._storage_pool = ThreadPoolExecutor(16, thread_name_prefix="acc-run-storage")
        if scope.storage_turns is None:
            scope.storage_turns = asyncio.Semaphore(_STORAGE_CALLS)
        async with scope.storage_turns:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._storage_pool, lambda: call(*args, **kw))

    async def _storage_call(self, scope: RunScope, op: str, method: str, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        assert scope.storage is not None
        fs, query, area = self._storage, request.query_params, scope.storage
        path = str(query.get("path", ""))
        if (method, op) == ("GET", "info"):
            found = await self._io(scope, fs.info, area.check(path))
            return JSONResponse(_storage_entry(found))
        if (method, op) == ("GET", "ls"):
            found = await self._io(scope, fs.ls, area.check(path), detail=True)
            return JSONResponse([_storage_entry(e) for e in found if area.allows(str(e["name"]))])
        if (method, op) == ("GET", "link"):  # a URL good for reading this one object
            relative = area.check(path)
            try:
                url = await self._io(scope, fs.sign, relative, expiration=_LINK_SECONDS)
            except NotImplementedError:
                return JSONResponse({"detail": "this store signs no links"}, status_code=404)
            return JSONResponse({"url": url, "seconds": _LINK_SECONDS})
        if (method, op) == ("GET", "read"):
            try:
                start, end = int(query.get("start", 0)), int(query.get("end", 0))
            except ValueError:
                start, end = -1, -1
            if not 0 <= start <= end or end - start > _BODY_LIMIT:
                return JSONResponse({"detail": "a range of up to 64 MiB"}, status_code=400)
            data = await self._io(scope, fs.cat_file, area.check(path), start=start, end=end)
            return Response(data, media_type="application/octet-stream")
        if (method, op) == ("POST", "uploads"):
            return await self._upload_start(scope, area.check(path, write=True))
        if op.startswith("uploads/"):
            return await self._upload_step(scope, op.split("/")[1:], method, request)
        if (method, op) == ("DELETE", "file"):
            relative = area.check(path, write=True)
            if not await self._io(scope, fs.isdir, relative):
                await self._io(scope, fs.rm_file, relative)
            return Response(status_code=204)
        if (method, op) == ("POST", "copy"):
            source = area.check(str(query.get("source", "")))
            target = area.check(str(query.get("target", "")), write=True)
            await self._io(scope, fs.cp_file, source, target)
            return Response(status_code=204)
        raise PermissionError(f"{method} {op}: not a storage call a run may make")

    async def _upload_start(self, scope: RunScope, relative: str) -> Any:
        from starlette.responses import JSONResponse

        upload = secrets.token_hex(16)
        with self._lock:  # the slot is taken before the writer is made: no race past it
            if sum(1 for owner, _ in self._uploads.values() if owner == scope.run_id) >= _UPLOADS:
                raise PermissionError(f"a run may write {_UPLOADS} files at once at most")
            self._uploads[upload] = (scope.run_id, None)
        try:
            writer = await self._io(
                scope, self._storage.open_atomic, relative, block_size=_WRITE_PART
            )
        except BaseException:
            with self._lock:
                self._uploads.pop(upload, None)
            raise
        with self._lock:
            live = self._scopes.get(scope.run_id) is scope and upload in self._uploads
            if live:
                self._uploads[upload] = (scope.run_id, writer)
        if not live:  # the run ended meanwhile: nothing of it appears
            _abort_all([writer])
            raise PermissionError("the run has ended")
        return JSONResponse({"id": upload})

    async def _upload_step(
        self, scope: RunScope, parts: list[str], method: str, request: Any
    ) -> Any:
        from starlette.responses import JSONResponse, Response

        with self._lock:
            held = self._uploads.get(parts[0])
        if held is None or held[0] != scope.run_id or held[1] is None:
            raise PermissionError("not an upload of this run")
        writer = held[1]
        if method == "PUT" and len(parts) == 1:
            part = await _body_within(request, _BODY_LIMIT)
            if part is None:
                return JSONResponse({"detail": "a part of up to 64 MiB"}, status_code=413)
            await self._io(scope, writer.write, part)
            return Response(status_code=204)
        with self._lock:
            self._uploads.pop(parts[0], None)
        if method == "POST" and parts[1:] == ["commit"]:
            await self._io(scope, writer.close)  # the file appears, whole (or nothing does)
            return Response(status_code=204)
        await self._io(scope, writer.abort)  # DELETE: nothing appears
        return Response(status_code=204)

    # -- events --------------------------------------------------------------------------------

    async def _socket_refused(self, websocket: Any) -> None:
        await websocket.close(code=1008, reason="not open to runs")

    async def _events_in(self, websocket: Any) -> None:
        """The run's events, each checked, then passed on in batches over the worker's
        HTTP connection (``POST /events``): the run need not wait for a socket of the
        worker's to open before its first event is taken."""
        await websocket.accept(subprotocol="prefect")
        try:
            hello = await websocket.receive_json()
        except Exception:
            return
        scope = self._scope(str(hello.get("token") or "")) if isinstance(hello, dict) else None
        if scope is None or hello.get("type") != "auth":
            await websocket.close(code=1008, reason="not this run's credential")
            return
        await websocket.send_json({"type": "auth_success"})
        checked: asyncio.Queue[str | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send_events(scope, checked))
        try:
            while True:
                frame = await websocket.receive_text()
                try:
                    self._check_event(scope, json.loads(frame))
                except Quiet as exc:
                    _log.debug("run %s: dropped an event: %s", scope.run_id, exc)
                    continue
                except (Refused, ValueError, AttributeError, TypeError) as exc:
                    _log.warning("run %s: dropped an event: %s", scope.run_id, exc)
                    continue
                checked.put_nowait(frame)
        except Exception:  # the run closed its socket (or lost it): send what came
            pass
        finally:
            checked.put_nowait(None)
            await sender

    async def _send_events(self, scope: RunScope, checked: asyncio.Queue[str | None]) -> None:
        """Post the checked frames in order, as many at once as have come."""
        done = False
        while not done:
            batch = [await checked.get()]
            while not checked.empty() and len(batch) < 200:
                batch.append(checked.get_nowait())
            done = None in batch
            frames = [f for f in batch if f is not None]
            if not frames:
                continue
            body = ("[" + ",".join(frames) + "]").encode()
            await self._post_events(scope, body, len(frames))

    async def _post_events(self, scope: RunScope, body: bytes, count: int) -> None:
        """Post one batch of a run's events; while the server is away (or busy), again
        with back-off for up to :data:`_EVENTS_PATIENCE` s. Task runs' states travel as
        events: a batch dropped during a server restart would leave them unfinished."""
        waited, pause = 0.0, _UPSTREAM_FIRST_PAUSE
        while True:
            problem: object
            try:
                answer = await self._upstream(
                    "POST", "/events", content=body, headers={"content-type": "application/json"}
                )
            except Exception as exc:  # Unavailable, or anything else: said, and tried again
                problem = exc
            else:
                if answer.status_code < 300:
                    return
                problem = answer.status_code
                if answer.status_code < 500 and answer.status_code != 429:
                    _log.warning(
                        "run %s: the server refused %d event(s): %s", scope.run_id, count, problem
                    )
                    return
            if waited >= _EVENTS_PATIENCE:
                _log.warning("run %s: %d event(s) not sent: %s", scope.run_id, count, problem)
                return
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, _UPSTREAM_MAX_PAUSE)

    def _check_event(self, scope: RunScope, event: dict[str, Any]) -> None:
        """Pass an event about the run itself, or one of its task runs, that names no other
        flow run or task run among its related resources (the server files a task run's
        event under the flow run it relates to)."""
        flow_run = f"prefect.flow-run.{scope.run_id}"
        name = str(event.get("event", ""))
        resource = str((event.get("resource") or {}).get("prefect.resource.id", ""))
        related = [r for r in event.get("related") or [] if isinstance(r, dict)]
        if not name.startswith("prefect."):
            raise Refused(f"an event of the platform's or another kind: {name[:80]}")
        if name.startswith("prefect.flow-run.") and name not in _RUN_SENDS:
            # The server makes a flow run's state events itself; the audit log reads who
            # launched and cancelled a run from them.
            raise Refused(f"an event the server makes itself: {name[:80]}")
        for other in related:
            named = str(other.get("prefect.resource.id", ""))
            if named.startswith("prefect.flow-run.") and named != flow_run:
                raise Refused("an event relating another flow run")
            if named.startswith("prefect.task-run."):
                self._claim_task_run(scope, named.removeprefix("prefect.task-run."))
        if resource == flow_run:
            return
        if not any(r.get("prefect.resource.id") == flow_run for r in related):
            if name.startswith("prefect.block.") and resource.startswith("prefect.block-"):
                # A block loaded before the flow's context is set (the deployment's pull
                # steps): nothing says whose it is, and nothing in it is worth a warning.
                raise Quiet(f"a block event outside the run's context: {name[:80]}")
            raise Refused(f"an event about {resource[:80] or 'nothing'}, not this run's")
        if resource.startswith("prefect.task-run."):
            self._claim_task_run(scope, resource.removeprefix("prefect.task-run."))
            return
        if name.startswith(("prefect.block.", "prefect.artifact.")):
            return  # "this run loaded a block", "made an artifact": what it may do
        raise Refused(f"an event about {resource[:80]}")


def _storage_entry(info: dict[str, Any]) -> dict[str, Any]:
    """A storage entry as a run is told it: its name below the root, size, kind, time."""
    from accelerator_prefect.storage import _modified

    modified = _modified(info)
    return {
        "name": str(info["name"]),
        "size": int(info.get("size") or 0),
        "type": "directory" if info.get("type") == "directory" else "file",
        "mtime": modified.timestamp() if modified is not None else None,
    }


def _abort_all(writers: list[Any]) -> None:
    for writer in writers:
        with contextlib.suppress(Exception):
            writer.abort()


async def _body_within(request: Any, limit: int) -> bytes | None:
    """The request's body, or ``None`` once it is over ``limit`` bytes: read no further
    than that, whatever its length header says."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _without_template(scope: RunScope, response: Any) -> None:
    """A work pool as a run sees it: its name and ids, not the job template (which may
    hold the operator's variables)."""
    pool = json.loads(response.body or b"{}")
    pool["base_job_template"] = {}
    response.body = json.dumps(pool).encode()
    response.headers["content-length"] = str(len(response.body))


def _presented(header: str | None) -> str | None:
    """The token in an ``Authorization`` header: Basic (an auth string), or Bearer."""
    if not header:
        return None
    kind, _, value = header.partition(" ")
    if kind.lower() == "bearer":
        return value.strip()
    if kind.lower() == "basic":
        with contextlib.suppress(ValueError):
            return base64.b64decode(value.strip()).decode()
    return None


def _records(body: bytes) -> list[dict[str, Any]]:
    try:
        found = json.loads(body or b"[]")
    except ValueError as exc:
        raise Refused("not JSON") from exc
    found = found if isinstance(found, list) else [found]
    if not all(isinstance(r, dict) for r in found):
        raise Refused("not records")
    return found


def _one(body: bytes) -> dict[str, Any]:
    records = _records(body)
    if len(records) != 1:
        raise Refused("one record expected")
    return records[0]


def _only_fields(body: bytes, allowed: set[str]) -> None:
    record = _one(body)
    extra = {k for k, v in record.items() if v is not None} - allowed
    if extra:
        raise Refused(f"changing {', '.join(sorted(extra))}")
