"""The warm worker: a Prefect worker type of the product's own (``acc-warm``) that starts
each flow run in a child forked from a warm parent (:mod:`accelerator_prefect.zygote`)
instead of a fresh Python, and picks runs up from Prefect's event stream.

- **Warm start.** The zygote has Prefect, the product and numpy imported; a run pays
  neither the interpreter's start nor these imports. The child still imports the
  jobflow from its version's pinned code (the deployment's ``checkout`` pull step).
- **Credentials.** The zygote starts without any credential in its environment; the
  worker hands each child its run's environment (the auth string, storage keys…) over a
  pipe that only the child reads.
- **Pick-up.** A ``prefect.flow-run.Scheduled`` event of the pool starts the run at
  once; polling (``PREFECT_WORKER_QUERY_SECONDS``) stays as the fallback. Prefect
  enforces the pool's concurrency limit only in its polling query, so the worker checks
  it, and its own limit, itself before taking a run from an event.
- **Supervision.** A child that dies is marked Crashed as soon as the zygote reaps it;
  children die with the zygote, which dies with the worker (``PR_SET_PDEATHSIG``); a
  Cancelling run's process group is killed and the run marked Cancelled.
- **Limits.** Each run gets its manifest's ``limits`` (``ACC_RUN_LIMITS`` in its
  environment), else the platform's defaults (``ACC_RUN_TIMEOUT``, ``ACC_RUN_MEMORY``,
  ``ACC_RUN_CPU_TIME``, ``ACC_RUN_OUTPUT_SIZE`` in the worker's). The child applies memory,
  CPU time and output size to itself (:mod:`accelerator_prefect.zygote`); the worker keeps
  the time: at the deadline the run is told to end, then its process group is stopped.
  A run over a limit ends Failed, its message naming the limit.

Start one with ``prefect worker start --type acc-warm --pool <pool>``; create its pool
with ``prefect work-pool create --type acc-warm <pool>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

import anyio
import anyio.abc
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseVariables,
    BaseWorker,
    BaseWorkerResult,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from accelerator_prefect.environments import EnvironmentRecord, of_deployment
from accelerator_prefect.errors import AcceleratorError
from accelerator_prefect.zygote import (
    CANCEL_SIGNAL,
    CPU_GRACE,
    TIMEOUT_SIGNAL,
    credential_free,
    over_limit,
    run_limits,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.events import Event

    from accelerator_prefect.proxy import RunProxy

WORKER_TYPE = "acc-warm"
_MESSAGE_BYTES = 65536
_CACHED_CONFIGURATIONS = 256
HOST_LABEL = "acc.warm.host"
"""The flow-run label naming the host whose warm worker runs it (to find orphans)."""

_DEPLOYMENT: contextvars.ContextVar[DeploymentResponse | None] = contextvars.ContextVar(
    "acc_warm_deployment", default=None
)
"""The deployment the worker read while submitting a run, handed on to the job
configuration's resolution (a task's context is copied into the tasks it starts)."""

_RESULT_STORAGE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "acc_warm_result_storage", default=None
)
"""The default result-storage block the worker read while submitting a run, for its child."""


class WarmWorkerSettings(BaseSettings):
    """The warm worker's own settings (``ACC_WARM_*``)."""

    model_config = SettingsConfigDict(env_prefix="ACC_WARM_", extra="ignore")

    limit: int = Field(
        default=8, ge=1, description="Flow runs one warm worker runs at once, at most."
    )
    start_deadline: float = Field(
        default=120.0, gt=0, description="Seconds the zygote may take to import its stack."
    )
    cancel_grace: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a cancelled run gets after SIGTERM before its group is killed.",
    )
    events: bool = Field(
        default=True, description="Pick runs up from Prefect's event stream (else poll only)."
    )
    proxy: bool = Field(
        default=True,
        description="Runs reach Prefect through the worker's run-scoped proxy, with a token "
        "good for their own run only, never with the API's auth string.",
    )
    environments: int = Field(
        default=4,
        ge=1,
        description="Warm parents kept at once, one per environment (the platform's own "
        "counts); over it, the least recently used idle one stops.",
    )


class WarmJobConfiguration(BaseJobConfiguration):  # type: ignore[misc]  # Prefect is untyped here
    """What the worker needs to start one flow run: its environment and working folder."""

    working_dir: Path | None = Field(
        default=None,
        title="Working Directory",
        description="Folder under which each run gets a fresh working folder of its own.",
    )

    _resolved: ClassVar[dict[str, tuple[WarmJobConfiguration, Flow]]] = {}
    _environment: ClassVar[dict[str, str] | None] = None

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        """The worker's Prefect settings as variables, computed once: they do not change
        while it runs, and dumping them costs some 15 ms a run."""
        if cls._environment is None:
            cls._environment = dict(super()._base_environment())
        return dict(cls._environment)

    @classmethod
    async def resolve_for_flow_run(
        cls,
        flow_run: FlowRun,
        *,
        client: PrefectClient,
        work_pool: WorkPool,
        worker_name: str,
        worker_id: UUID | None = None,
        deployment: DeploymentResponse | None = None,
    ) -> WarmJobConfiguration:
        """Prefect's resolution, done once per deployment version rather than per run.

        The template merged with the deployment's and the run's job variables, and the
        run's flow, are cached under the deployment's id and update time, the run's job
        variables and the pool's template; only the per-run part (its environment, its
        labels) is prepared each time. A template that reads blocks or variables is
        resolved every time, as they may change without the deployment changing.
        """
        deployment = deployment or _DEPLOYMENT.get()
        key = _configuration_key(flow_run, deployment, work_pool)
        if deployment is None or key is None:
            return await super().resolve_for_flow_run(  # type: ignore[no-any-return]
                flow_run,
                client=client,
                work_pool=work_pool,
                worker_name=worker_name,
                worker_id=worker_id,
                deployment=deployment,
            )
        cached = cls._resolved.get(key)
        if cached is None:
            flow = await client.read_flow(flow_run.flow_id)
            job_variables = {**(deployment.job_variables or {})}
            if isinstance(job_variables.get("env"), dict):
                job_variables["env"] = {
                    **job_variables["env"],
                    **(flow_run.job_variables or {}).get("env", {}),
                }
            job_variables.update(
                {k: v for k, v in (flow_run.job_variables or {}).items() if k != "env"}
            )
            base = await cls.from_template_and_values(
                base_job_template=work_pool.base_job_template, values=job_variables, client=client
            )
            if len(cls._resolved) >= _CACHED_CONFIGURATIONS:
                cls._resolved.clear()
            cached = cls._resolved[key] = (base, flow)
        base, flow = cached
        configuration: WarmJobConfiguration = base.model_copy(deep=True)
        configuration.prepare_for_flow_run(
            flow_run=flow_run,
            deployment=deployment,
            flow=flow,
            work_pool=work_pool,
            worker_name=worker_name,
            worker_id=worker_id,
        )
        return configuration


def _configuration_key(
    flow_run: FlowRun, deployment: DeploymentResponse | None, work_pool: WorkPool
) -> str | None:
    """The cache key of a run's resolved job configuration; None when it must not be
    cached (no deployment, or a template that reads blocks or variables)."""
    if deployment is None:
        return None
    key = json.dumps(
        [
            str(deployment.id),
            str(deployment.updated),
            deployment.job_variables,
            flow_run.job_variables,
            str(flow_run.flow_id),
            work_pool.base_job_template,
        ],
        sort_keys=True,
        default=str,
    )
    return None if "{{ prefect." in key or "{{prefect." in key else key


class WarmVariables(BaseVariables):  # type: ignore[misc]  # Prefect is untyped here
    """The pool's job variables (what a deployment may override)."""

    working_dir: Path | None = Field(
        default=None,
        title="Working Directory",
        description="Folder under which each run gets a fresh working folder of its own.",
    )


class WarmWorkerResult(BaseWorkerResult):  # type: ignore[misc]  # Prefect is untyped here
    """How a child ended: its exit code (negative: the signal that ended it)."""


class Zygote:
    """The worker's handle on its zygote process: start it, ask it to fork, learn of exits."""

    def __init__(
        self, process: subprocess.Popen[bytes], channel: socket.socket, workdir: Path
    ) -> None:
        self.process = process
        self.channel = channel
        self.workdir = workdir  # its own folder, where its runs' scratch folders go
        self.pid = process.pid
        self._forked: dict[str, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self.cpu: dict[int, float] = {}  # processor seconds of each child that ended

    @classmethod
    async def start(
        cls, deadline: float, python: str = sys.executable, preload: Sequence[str] = ()
    ) -> Zygote:
        """Start a zygote on ``python`` (an environment's interpreter, or the worker's own),
        importing the distributions ``preload`` names besides the usual stack."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        workdir = Path(tempfile.mkdtemp(prefix="acc-zygote-"))
        env = credential_free(os.environ)
        if preload:
            env["ACC_WARM_PRELOAD_DISTRIBUTIONS"] = ",".join(preload)
        process = subprocess.Popen(
            [
                python,
                "-P",  # the worker's folder is not on the path: the environment's code is
                "-m",
                "accelerator_prefect.zygote",
                str(theirs.fileno()),
                str(os.getpid()),
            ],
            env=env,
            pass_fds=[theirs.fileno()],
            cwd=workdir,  # no .env or prefect.toml of the worker's folder is read
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        ours.setblocking(False)
        zygote = cls(process, ours, workdir)
        loop = asyncio.get_running_loop()
        ready = await asyncio.wait_for(loop.sock_recv(ours, _MESSAGE_BYTES), deadline)
        if not ready or "ready" not in json.loads(ready):
            raise RuntimeError(f"the zygote exited before it was ready (code {process.poll()})")
        loop.add_reader(ours.fileno(), zygote._on_message)
        return zygote

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def busy(self) -> bool:
        """Whether any child of it is still running."""
        return bool(self._exits) or bool(self._forked)

    def rss_kib(self) -> int | None:
        """The zygote's resident memory (KiB), from ``/proc``."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)
        return int(match[1]) if match else None

    def _on_message(self) -> None:
        try:
            data = self.channel.recv(_MESSAGE_BYTES)
        except BlockingIOError:
            return
        if not data:  # the zygote died: every child of it died with it
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
            for future in [*self._forked.values(), *self._exits.values()]:
                if not future.done():
                    future.set_exception(RuntimeError("the zygote exited"))
            return
        message = json.loads(data)
        if "forked" in message:
            pid = int(message["pid"])
            self._exits[pid] = asyncio.get_running_loop().create_future()
            forked = self._forked.pop(str(message["forked"]), None)
            if forked is not None and not forked.done():
                forked.set_result(pid)
        elif "exited" in message:
            self.cpu[int(message["exited"])] = float(message.get("cpu") or 0.0)
            exited = self._exits.pop(int(message["exited"]), None)
            if exited is not None and not exited.done():
                exited.set_result(int(message["code"]))

    async def fork(self, run_id: UUID, given: dict[str, Any]) -> tuple[int, asyncio.Future[int]]:
        """Fork a child for ``run_id`` and hand it ``given`` (its environment) over a pipe
        only the child reads; return its pid and a future of its exit code."""
        key = str(run_id)
        forked = asyncio.get_running_loop().create_future()
        self._forked[key] = forked
        read_end, write_end = os.pipe()
        try:
            socket.send_fds(self.channel, [json.dumps({"fork": key}).encode()], [read_end])
        finally:
            os.close(read_end)
        try:
            pid = await asyncio.wait_for(forked, 30)
        except BaseException:
            os.close(write_end)
            raise
        exited = self._exits[pid]
        payload = json.dumps(given).encode()
        await asyncio.to_thread(_write_all, write_end, payload)
        return pid, exited

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
        self.channel.close()  # the zygote kills its children and exits on EOF
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self.alive:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def sweep(self, run_id: UUID, working_dir: str | None) -> None:
        """Remove what is left of ``run_id``'s scratch folder: the child removes it as it
        ends, but not when it was killed (cancelled, or out of its time)."""
        for left in Path(working_dir or self.workdir).glob(f"acc-run-{run_id}-*"):
            shutil.rmtree(left, ignore_errors=True)


def _distributions(requirements: Sequence[str]) -> list[str]:
    """The distribution names of requirement strings (``numpy>=2``, ``foo[bar]==1``…)."""
    from accelerator_prefect.environments import requirement_name

    return [n for n in map(requirement_name, requirements) if n]


def _write_all(fd: int, payload: bytes) -> None:
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(payload)


class WarmWorker(BaseWorker[WarmJobConfiguration, WarmVariables, WarmWorkerResult]):  # type: ignore[misc]  # Prefect is untyped here
    """Runs hosted models' flow runs in children forked from a warm, credential-free parent.

    Example:
        prefect work-pool create --type acc-warm models
        prefect worker start --type acc-warm --pool models
    """

    type = WORKER_TYPE
    job_configuration = WarmJobConfiguration
    job_configuration_variables = WarmVariables
    _description = (
        "Runs flow runs of hosted models in processes forked from a warm parent with Prefect "
        "and the scientific stack already imported; picks runs up from the event stream."
    )
    _display_name = "Accelerator warm worker"
    _documentation_url = "https://docs.prefect.io/v3/deploy/infrastructure-concepts/workers"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.settings = WarmWorkerSettings()
        if kwargs.get("limit") is None:
            kwargs["limit"] = self.settings.limit
        super().__init__(*args, **kwargs)
        # One zygote per environment ("" for the worker's own), least recently used first.
        self._zygotes: OrderedDict[str, Zygote] = OrderedDict()
        self._zygote_lock = asyncio.Lock()
        self._environments_home: Path | None = None
        self._children: dict[UUID, int] = {}
        self._cancelled: set[UUID] = set()
        self._cancel_on_start: set[UUID] = set()
        self._queue_limits: dict[UUID, int] = {}
        self._watching = False
        self._swept_orphans = False
        self._proxy: RunProxy | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def setup(self) -> None:
        # The proxy and the warm parent first, one after the other, and only then Prefect's
        # set-up, which starts taking runs: a run picked up while they were still starting
        # would race them for the zygote.
        if self.settings.proxy:
            from prefect.settings import get_current_settings

            from accelerator_prefect.proxy import RunProxy
            from accelerator_prefect.settings import get_settings
            from accelerator_prefect.storage import AccFileSystem

            api = get_current_settings().api
            auth = api.auth_string.get_secret_value() if api.auth_string else None
            settings = get_settings()
            # A local storage is confined around each run; an object store's keys stay here.
            local = settings.storage_root.startswith("file://")
            # Its own instance, listing nothing from a cache: files appear in the store
            # from elsewhere (the portal, other workers) while the worker lives on.
            fresh = {"skip_instance_cache": True, "use_listings_cache": False}
            options = {**settings.storage_options, **fresh}
            storage = None if local else AccFileSystem(settings.storage_root, options)
            self._proxy = RunProxy(str(api.url), auth, storage)
            self._proxy.start()  # nothing else runs on this loop yet
        await self._ensure_zygote()
        await super().setup()

    async def teardown(self, *exc_info: Any) -> None:
        zygotes, self._zygotes = list(self._zygotes.values()), OrderedDict()
        for zygote in zygotes:
            zygote.stop()
        for flow_run_id in list(self._children):
            await self._crash(flow_run_id, "The warm worker stopped while the run was running.")
        await super().teardown(*exc_info)
        if self._proxy is not None:
            await asyncio.to_thread(self._proxy.stop)

    async def _ensure_zygote(
        self, environment: EnvironmentRecord | None = None, python: str | None = None
    ) -> Zygote:
        """The warm parent of ``environment`` (whose interpreter is ``python``), or of the
        worker's own interpreter; started if there is none, the least recently used idle
        one stopped when there are more than ``ACC_WARM_ENVIRONMENTS``."""
        key = environment.hash if environment is not None else ""
        async with self._zygote_lock:
            zygote = self._zygotes.get(key)
            if zygote is None or not zygote.alive:
                preload = _distributions(environment.requirements) if environment else ()
                zygote = await Zygote.start(
                    self.settings.start_deadline, python or sys.executable, preload
                )
                self._zygotes[key] = zygote
                self._logger.info(
                    "Warm zygote started (pid %s) for %s; warm parents hold %s KiB",
                    zygote.pid,
                    f"environment {key[:12]}" if key else "the worker's own environment",
                    self._zygotes_rss(),
                )
            self._zygotes.move_to_end(key)
            self._evict_zygotes()
            return zygote

    def _evict_zygotes(self) -> None:
        """Stop least recently used idle zygotes while there are more than the cap."""
        for key in list(self._zygotes):
            if len(self._zygotes) <= self.settings.environments:
                return
            zygote = self._zygotes[key]
            if key == next(reversed(self._zygotes)) or zygote.busy:
                continue
            rss = zygote.rss_kib()
            del self._zygotes[key]
            zygote.stop()
            self._logger.info(
                "Stopped the warm zygote of %s (least recently used, %s KiB)",
                f"environment {key[:12]}" if key else "the worker's own environment",
                rss,
            )

    def _zygotes_rss(self) -> int:
        return sum(z.rss_kib() or 0 for z in self._zygotes.values())

    def _home(self) -> Path:
        """The platform home whose ``environments`` folder this worker uses (read once)."""
        if self._environments_home is None:
            from accelerator_prefect.settings import get_settings

            self._environments_home = get_settings().home
        return self._environments_home

    def zygotes(self) -> dict[str, int]:
        """Environment hash ("" for the worker's own) → pid of its warm parent, least
        recently used first."""
        return {key: z.pid for key, z in self._zygotes.items()}

    async def _initialize_after_sync(self) -> None:
        await super()._initialize_after_sync()
        if self._work_pool is not None and not self._swept_orphans:
            self._swept_orphans = True
            self._runs_task_group_start(self._crash_orphans)
        if self._work_pool is not None and not self._watching and self.settings.events:
            self._watching = True
            await self._read_queue_limits()
            scope = anyio.CancelScope()
            self._scheduled_task_scopes.add(scope)
            assert self._runs_task_group is not None
            self._runs_task_group.start_soon(self._watch_events, scope)

    # -- running a flow run ----------------------------------------------------------

    async def run(
        self,
        flow_run: FlowRun,
        configuration: WarmJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> WarmWorkerResult:
        deployment = _DEPLOYMENT.get()
        try:
            environment = of_deployment(deployment)
            python = await self._prepare_environment(flow_run, environment)
        except AcceleratorError as exc:
            message = f"The model's environment could not be prepared: {exc}"
            self.get_flow_run_logger(flow_run).error(message)
            await self._propose_crashed_state(flow_run, message)
            if task_status is not None:
                task_status.started(0)
            return WarmWorkerResult(status_code=0, identifier="")
        zygote = await self._ensure_zygote(environment, python)
        own = {k: v for k, v in configuration.env.items() if v is not None}
        env = {**os.environ, **own}
        if self._proxy is not None:  # the run reaches Prefect (and an object store) through it
            env = self._proxy.environment_for(flow_run, env, self._work_pool_name, keep=own)
        working_dir = str(configuration.working_dir) if configuration.working_dir else None
        limits = run_limits(own, self.get_flow_run_logger(flow_run).warning)
        given: dict[str, Any] = {"env": env, "working_dir": working_dir, "limits": limits}
        if deployment is not None:  # the child need not read it again
            given["deployment"] = deployment.model_dump(mode="json")
        given["result_storage"] = _RESULT_STORAGE.get()
        try:
            pid, exited = await zygote.fork(flow_run.id, given)
        except BaseException:
            if self._proxy is not None:  # no process of it holds the token
                self._proxy.release(flow_run.id)
            raise
        self._children[flow_run.id] = pid
        if flow_run.id in self._cancel_on_start:  # cancelled while it was being submitted
            self._cancel_on_start.discard(flow_run.id)
            self._runs_task_group_start(lambda: self._cancel_run(flow_run.id))
        if task_status is not None:
            task_status.started(pid)
        timed_out = False
        try:
            if "timeout" in limits and not await self._ends_in_time(
                flow_run.id, exited, limits["timeout"][1]
            ):
                timed_out = True
                code = await self._stop_over_time(flow_run, pid, exited, limits["timeout"][0])
            else:
                code = await exited
        except RuntimeError:
            code = -int(signal.SIGKILL)
        finally:
            self._children.pop(flow_run.id, None)
            if self._proxy is not None:
                self._proxy.release(flow_run.id)
            zygote.sweep(flow_run.id, working_dir)
        over = _over_which(code, zygote.cpu.pop(pid, 0.0), limits, timed_out)
        if flow_run.id in self._cancelled:
            self._cancelled.discard(flow_run.id)
            code = 0  # ended on purpose; the run is already Cancelled
        elif over is not None:
            await self._fail_over_limit(flow_run, over)
            code = 0  # ended by its limit; the run is Failed, not Crashed
        elif code != 0:  # Prefect marks it Crashed once this returns
            await self._clean_up_after(flow_run, "Crashed")
        self._runs_task_group_start(self._poll_now)
        return WarmWorkerResult(status_code=code, identifier=str(pid))

    async def _ends_in_time(
        self, flow_run_id: UUID, exited: asyncio.Future[int], timeout: float
    ) -> bool:
        """Wait for the run's process to end within ``timeout`` seconds of the run's start
        (its Running state: its code checked out and imported, however long the machine
        took to get there); ``False`` once that deadline passed. A run not Running
        ``START_ALLOWANCE`` seconds after its process began has its time counted anyway."""
        loop = asyncio.get_running_loop()
        forked = loop.time()
        deadline = forked + timeout
        while True:
            await asyncio.wait({exited}, timeout=max(0.0, deadline - loop.time()))
            if exited.done():
                return True
            running = await self._running_for(flow_run_id)
            if running is None and loop.time() < forked + START_ALLOWANCE:
                deadline = loop.time() + 0.5  # not Running yet: look again shortly
                continue
            if running is None:
                running = loop.time() - forked
            if running >= timeout:
                return False
            deadline = loop.time() + timeout - running

    async def _running_for(self, flow_run_id: UUID) -> float | None:
        """Seconds since the run entered Running (``None``: not yet, or unknown now)."""
        try:
            flow_run = await self.client.read_flow_run(flow_run_id)
        except Exception:
            return None
        if flow_run.start_time is None:
            return None
        now = datetime.datetime.now(datetime.UTC)
        return max(0.0, float((now - flow_run.start_time).total_seconds()))

    async def _stop_over_time(
        self, flow_run: FlowRun, pid: int, exited: asyncio.Future[int], limit: str
    ) -> int:
        """The run went over its time limit (``limit``, as written): tell its process, whose
        engine ends the run Failed (its outputs marked incomplete, its secrets deleted); if
        it has not ended after the grace period (stuck in native code, or deaf to the
        signal), end the run Failed here and stop its process group as a cancellation does
        (SIGTERM, SIGKILL after the grace period). Whatever the run started goes with it.
        Its exit code."""
        grace = self.settings.cancel_grace
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, TIMEOUT_SIGNAL)
        await asyncio.wait({exited}, timeout=max(grace, 1.0))
        if not exited.done():
            # Failed first, and the run's token at the proxy opens nothing any more: the
            # engine's Crashed on SIGTERM never reaches the server (it would take it).
            with contextlib.suppress(Exception):
                await self._fail_over_limit(flow_run, over_limit("timeout", limit))
            if self._proxy is not None:
                self._proxy.release(flow_run.id)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            await asyncio.wait({exited}, timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the run's own processes, left behind or not
        return await exited

    async def _fail_over_limit(self, flow_run: FlowRun, message: str) -> None:
        """End a run that went over a limit Failed with ``message``, unless its own engine
        already ended it (Failed, saying why; or Completed just in time); and clean up
        after it as after a crash: its secret blocks, its partial outputs."""
        from prefect.states import Failed

        current = await self.client.read_flow_run(flow_run.id)
        state = current.state
        if state is not None and state.is_completed():
            return
        await self._clean_up_after(current, message)  # its engine may not have got so far
        if state is not None and state.is_failed():
            return
        await self.client.set_flow_run_state(flow_run.id, Failed(message=message), force=True)
        self.get_flow_run_logger(flow_run).error("Flow run %s: %s", flow_run.id, message)

    async def _prepare_environment(
        self, flow_run: FlowRun, environment: EnvironmentRecord | None
    ) -> str | None:
        """The interpreter of the run's environment, built first if this machine lacks it
        (the run's log says so); ``None`` for a version that declares none."""
        if environment is None:
            return None
        from accelerator_prefect import environments

        home = self._home()
        if environments.ready(home, environment):  # the usual case: nothing to wait for
            return str(environments.interpreter(environments.folder(home, environment)))
        logger = self.get_flow_run_logger(flow_run)

        def report(text: str) -> None:
            logger.info(text[:1].upper() + text[1:] + "…")

        return str(await asyncio.to_thread(environments.ensure, home, environment, report))

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """Prefect's submission with fewer round trips to the server before the fork: the
        deployment is read once, alongside the Pending proposal, and handed on to the job
        configuration's (cached) resolution; the run's pid is recorded after it started."""
        from prefect.exceptions import ObjectNotFound

        deployment, pending, storage = await asyncio.gather(
            self._read_deployment(flow_run),
            self._propose_pending_state(flow_run),
            self._read_result_storage(),
            return_exceptions=True,
        )
        started: int | Exception | None = None
        try:
            if isinstance(deployment, ObjectNotFound):
                await self._mark_flow_run_as_cancelled(
                    flow_run,
                    state_updates={
                        "message": f"Deployment {flow_run.deployment_id} no longer exists, "
                        "cancelled run."
                    },
                )
                return
            if isinstance(deployment, BaseException):
                deployment = None  # the resolution reads it again, the Prefect way
            if pending is not True:
                return
            _DEPLOYMENT.set(deployment)  # this task's context: copied into the run's task
            _RESULT_STORAGE.set(storage if isinstance(storage, dict) else None)
            assert self._runs_task_group is not None
            started = await self._runs_task_group.start(
                self._submit_run_and_capture_errors, flow_run
            )
            if started and not isinstance(started, Exception):
                self._runs_task_group_start(lambda: self._record_pid(flow_run, started))
                self.get_flow_run_logger(flow_run).info(
                    "Flow run '%s' submitted to infrastructure", flow_run.name
                )
        finally:
            if not started or isinstance(started, Exception):
                self._release_limit_slot(flow_run.id)
            self._submitting_flow_run_ids.discard(flow_run.id)
            if self._cancelling_observer is not None:
                self._cancelling_observer.remove_in_flight_flow_run_id(flow_run.id)

    async def _read_deployment(self, flow_run: FlowRun) -> DeploymentResponse | None:
        if flow_run.deployment_id is None:
            return None
        deployment: DeploymentResponse = await self.client.read_deployment(flow_run.deployment_id)
        return deployment

    async def _read_result_storage(self) -> dict[str, Any] | None:
        """The default result-storage block (``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``)
        that a run's engine reads before it starts, read here beside the Pending
        proposal and handed to the child with its environment: one round trip fewer
        before the run. The child uses it only if its own setting names the same block."""
        from prefect.settings import PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK

        slug = PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK.value()
        if not slug or "/" not in slug:
            return None
        block_type, name = slug.split("/", 1)
        document = await self.client.read_block_document_by_name(
            name=name, block_type_slug=block_type, include_secrets=True
        )
        schema = document.block_schema
        if schema is not None and (schema.fields or {}).get("secret_fields"):
            return None  # it holds credentials: a run reads it itself, as its scope allows
        return {"slug": slug, "document": document.model_dump(mode="json")}

    async def _record_pid(self, flow_run: FlowRun, pid: int) -> None:
        try:
            await self.client.update_flow_run(flow_run_id=flow_run.id, infrastructure_pid=str(pid))
        except Exception:
            self.get_flow_run_logger(flow_run).exception(
                "Could not record the run's process id; the run may not be cancellable."
            )

    async def _propose_submitting_state(self, flow_run: FlowRun) -> None:
        """Skipped: the run is Pending already, and a second Pending state (Submitting)
        costs a round trip through the server's orchestration before every fork."""

    async def _give_worker_labels_to_flow_run(self, flow_run_id: UUID) -> None:
        """Prefect's worker labels and this host's name, which let a later worker find the
        run if this one dies: set in the background (the run need not wait for them, and
        beside the Pending proposal they would wait on the database's write lock), and
        tried again while the server is busy."""

        async def label() -> None:
            labels = {
                "prefect.worker.name": self.name,
                "prefect.worker.type": self.type,
                "prefect.work-pool.name": self.work_pool.name,
                "prefect.work-pool.id": str(self.work_pool.id),
                HOST_LABEL: socket.gethostname(),
            }
            for wait in (0.5, 1, 2, 4, 8, None):
                try:
                    await self.client.update_flow_run_labels(flow_run_id, labels)
                    return
                except Exception as exc:
                    if wait is None:
                        self._logger.warning(
                            "Could not label run %s with this worker (%s): if the worker "
                            "dies while it runs, no later worker finds it",
                            flow_run_id,
                            exc,
                        )
                        return
                    await anyio.sleep(wait)

        self._runs_task_group_start(label)

    def _runs_task_group_start(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Start ``fn`` beside the runs. It must never end the worker: an error in it (a
        run deleted between its event and its read, the server away for a moment) is
        logged, and polling or the next event tries again."""

        async def guarded() -> None:
            try:
                await fn()
            except Exception:
                self._logger.exception("A background step of the warm worker failed")

        if self._runs_task_group is not None:
            self._runs_task_group.start_soon(guarded)

    async def _poll_now(self) -> None:
        """A slot came free: look for a waiting run now, not at the next poll."""
        with contextlib.suppress(Exception):
            await self.get_and_submit_flow_runs()

    async def _crash(self, flow_run_id: UUID, message: str) -> None:
        with contextlib.suppress(Exception):
            flow_run = await self.client.read_flow_run(flow_run_id)
            await self._clean_up_after(flow_run, "Crashed")
            await self._propose_crashed_state(flow_run, message)

    async def _clean_up_after(self, flow_run: FlowRun, why: str) -> None:
        """What a run does for itself when it ends, for one whose process died first: its
        per-run secret blocks are deleted, its partial outputs marked incomplete."""
        from accelerator_prefect import secrets
        from accelerator_prefect.outputs import mark_folder_incomplete, run_folder
        from accelerator_prefect.storage import Storage

        parameters = dict(flow_run.parameters or {})
        blocks = (parameters.get("secrets") or {}).get("blocks") or {}
        names = [str(n) for n in blocks.values() if str(n).startswith(secrets.RUN_PREFIX)]
        try:
            if names:
                await secrets.delete(self.client, names)
            folder = run_folder(parameters, flow_run.id)
            if folder is not None:
                await asyncio.to_thread(mark_folder_incomplete, folder, Storage(), why)
        except Exception as exc:  # the periodic secret sweep is the fallback
            self._logger.warning(
                "Could not clean up after flow run '%s': %s", flow_run.id, type(exc).__name__
            )

    # -- runs left behind by a worker that died ----------------------------------------

    async def _crash_orphans(self) -> None:
        """Mark Crashed the runs of this pool that a warm worker had in flight and that
        no live process holds any more. Prefect's open-source server never does: they
        would stay Running for ever."""
        in_flight = await self.client.read_flow_runs(**self._in_flight_filters())
        workers = {
            w.name: w for w in await self.client.read_workers_for_work_pool(self.work_pool.name)
        }
        for flow_run in in_flight:
            if flow_run.id in self._children or flow_run.id in self._submitting_flow_run_ids:
                continue
            if self._orphaned(flow_run, workers):
                await self._clean_up_after(flow_run, "Crashed")
                await self._propose_crashed_state(
                    flow_run,
                    "Crashed: the warm worker that ran it stopped, and no process holds it "
                    "any more.",
                )

    def _orphaned(self, flow_run: FlowRun, workers: dict[str, Any]) -> bool:
        """Whether the warm worker that held ``flow_run`` is gone: it had this worker's
        name (this is its successor), or it ran on this host and the run's process is
        gone, or the pool's record of it says it is offline."""
        labels = dict(flow_run.labels or {})
        holder = labels.get("prefect.worker.name")
        if labels.get("prefect.worker.type") != WORKER_TYPE or not holder:
            return False
        if holder == self.name:
            return True
        pid = str(flow_run.infrastructure_pid or "")
        if labels.get(HOST_LABEL) == socket.gethostname() and pid.isdigit():
            return not _process_alive(int(pid))
        worker = workers.get(str(holder))
        return worker is None or str(worker.status).upper().endswith("OFFLINE")

    # -- cancellation ----------------------------------------------------------------

    async def _cancel_run(self, flow_run_id: UUID) -> None:
        pid = self._children.get(flow_run_id)
        if pid is None:
            await super()._cancel_run(flow_run_id)
            return
        self._cancelled.add(flow_run_id)
        await self._stop_group(pid)
        flow_run = await self.client.read_flow_run(flow_run_id)
        await self._mark_flow_run_as_cancelled(
            flow_run, state_updates={"message": "Cancelled: the run's process was stopped."}
        )
        self.get_flow_run_logger(flow_run).info("Cancelled flow run '%s'", flow_run_id)

    async def _stop_group(self, pid: int) -> None:
        """SIGTERM the run's process group, SIGKILL it after the grace period. The child
        is told first that it is a cancellation (it ends Cancelled, not Crashed); a
        signal of lower number is handled first when both are pending."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, CANCEL_SIGNAL)
            os.killpg(pid, signal.SIGTERM)
        end = anyio.current_time() + self.settings.cancel_grace
        while pid in self._children.values() and anyio.current_time() < end:
            await anyio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        submitted: list[FlowRun] = await super().get_and_submit_flow_runs()
        await self._cancel_cancelling_children()
        await self._read_queue_limits()
        return submitted

    async def _read_queue_limits(self) -> None:
        """The concurrency limits of the pool's work queues, read at each poll, for the
        pick-up from events (Prefect enforces them only in its polling query)."""
        if self._work_pool is None:
            return
        with contextlib.suppress(Exception):  # kept as they were until the next poll
            queues = await self.client.read_work_queues(work_pool_name=self.work_pool.name)
            self._queue_limits = {
                q.id: q.concurrency_limit for q in queues if q.concurrency_limit is not None
            }

    async def _cancel_cancelling_children(self) -> None:
        """The polling fallback for cancellation: runs of ours that are Cancelling."""
        if not self._children:
            return
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            FlowRunFilterState,
            FlowRunFilterStateName,
        )

        runs = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=list(self._children)),
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Cancelling"])),
            )
        )
        for flow_run in runs:
            if flow_run.id not in self._cancelled:
                self._runs_task_group_start(functools.partial(self._cancel_run, flow_run.id))

    # -- pick-up from the event stream -----------------------------------------------

    async def _watch_events(self, scope: anyio.CancelScope) -> None:
        """Scheduled and Cancelling events of this pool's runs, for as long as the worker
        runs; a broken stream is retried, and polling covers the gap."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import (
            EventAnyResourceFilter,
            EventFilter,
            EventNameFilter,
            EventOccurredFilter,
        )

        with scope:
            while True:
                event_filter = EventFilter(
                    occurred=EventOccurredFilter(
                        since=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
                    ),
                    event=EventNameFilter(
                        name=["prefect.flow-run.Scheduled", "prefect.flow-run.Cancelling"]
                    ),
                    any_resource=EventAnyResourceFilter(
                        id=[f"prefect.work-pool.{self.work_pool.id}"]
                    ),
                )
                try:
                    async with get_events_subscriber(
                        filter=event_filter, reconnection_attempts=2
                    ) as subscriber:
                        self._logger.info("Watching the event stream for scheduled runs")
                        async for event in subscriber:
                            self._on_event(event)
                except Exception as exc:
                    self._logger.warning(
                        "The event stream is unavailable (%s); polling every %s s instead "
                        "until it is back",
                        exc,
                        _query_seconds(),
                    )
                await anyio.sleep(5)

    def _on_event(self, event: Event) -> None:
        flow_run_id = _flow_run_id(event.resource.id)
        if flow_run_id is None:
            return
        if event.event.endswith(".Cancelling"):
            if flow_run_id in self._children and flow_run_id not in self._cancelled:
                self._runs_task_group_start(lambda: self._cancel_run(flow_run_id))
            elif flow_run_id in self._submitting_flow_run_ids:  # Pending: not forked yet
                self._cancel_on_start.add(flow_run_id)
            return
        self._runs_task_group_start(lambda: self._pick_up(flow_run_id))

    async def _pick_up(self, flow_run_id: UUID) -> None:
        """Start a run announced by an event, if it is due and a slot is free (the pool's
        and this worker's); else leave it Scheduled for polling to find."""
        from prefect.client.schemas.responses import WorkerFlowRunResponse
        from prefect.exceptions import ObjectNotFound

        if flow_run_id in self._submitting_flow_run_ids or flow_run_id in self._children:
            return
        room = asyncio.ensure_future(self._pool_has_room())  # beside the run's read
        room.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        try:
            for delay in (0.0, 0.1, 0.5):  # the event may come before its run can be read
                await anyio.sleep(delay)
                try:
                    flow_run = await self.client.read_flow_run(flow_run_id)
                    break
                except ObjectNotFound:
                    continue
            else:
                return  # deleted since: nothing to run
            if not self._is_due(flow_run) or not await room:
                return
        finally:
            room.cancel()
        if not await self._queue_has_room(flow_run.work_queue_id):
            return
        assert flow_run.work_queue_id is not None
        if self._work_queues and flow_run.work_queue_name not in self._work_queues:
            return
        await self._submit_scheduled_flow_runs(
            [
                WorkerFlowRunResponse(
                    work_pool_id=self.work_pool.id,
                    work_queue_id=flow_run.work_queue_id,
                    flow_run=flow_run,
                )
            ]
        )

    def _is_due(self, flow_run: FlowRun) -> bool:
        state = flow_run.state
        if state is None or not state.is_scheduled() or flow_run.work_queue_id is None:
            return False
        if self.work_pool.is_paused:
            return False
        due = flow_run.next_scheduled_start_time or flow_run.expected_start_time
        horizon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=self._prefetch_seconds
        )
        return due is None or due <= horizon

    async def _pool_has_room(self) -> bool:
        """Whether the pool's concurrency limit leaves a slot (the polling query's rule)."""
        limit = self.work_pool.concurrency_limit
        if limit is None:
            return True
        active = await self.client.count_flow_runs(**self._in_flight_filters())
        return bool(active < limit)

    async def _queue_has_room(self, queue_id: UUID | None) -> bool:
        """Whether the run's work queue, if it has a concurrency limit, has a slot."""
        limit = self._queue_limits.get(queue_id) if queue_id is not None else None
        if limit is None:
            return True
        from prefect.client.schemas.filters import WorkQueueFilter, WorkQueueFilterId

        active = await self.client.count_flow_runs(
            flow_run_filter=self._in_flight_filters()["flow_run_filter"],
            work_queue_filter=WorkQueueFilter(id=WorkQueueFilterId(any_=[queue_id])),
        )
        return bool(active < limit)

    def _in_flight_filters(self) -> dict[str, Any]:
        """The filters of this pool's runs in flight: Pending, Running or Cancelling."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            WorkPoolFilter,
            WorkPoolFilterName,
        )
        from prefect.client.schemas.objects import StateType

        states = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
        return {
            "flow_run_filter": FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
            ),
            "work_pool_filter": WorkPoolFilter(name=WorkPoolFilterName(any_=[self.work_pool.name])),
        }


START_ALLOWANCE = 120.0
"""Seconds a run's process may take to reach Running before its time limit counts anyway."""


def _over_which(
    code: int, cpu: float, limits: dict[str, tuple[str, float]], timed_out: bool
) -> str | None:
    """What a run whose process ended with ``code`` after ``cpu`` processor seconds is
    told, if it ended by one of its ``limits``: its time (the worker stopped it), or its
    CPU time (SIGXCPU, or the kernel's SIGKILL at the hard limit, past the grace after
    the limit); ``None`` otherwise."""
    if timed_out and "timeout" in limits:
        return over_limit("timeout", limits["timeout"][0])
    if "cpu_time" in limits and (
        code == -int(signal.SIGXCPU)
        or (code == -int(signal.SIGKILL) and cpu >= limits["cpu_time"][1] + CPU_GRACE)
    ):
        return over_limit("cpu_time", limits["cpu_time"][0])
    if "output_size" in limits and code == -int(signal.SIGXFSZ):
        return over_limit("output_size", limits["output_size"][0])
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flow_run_id(resource_id: str) -> UUID | None:
    prefix = "prefect.flow-run."
    if not resource_id.startswith(prefix):
        return None
    try:
        return UUID(resource_id.removeprefix(prefix))
    except ValueError:
        return None


def _query_seconds() -> float:
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS

    return float(PREFECT_WORKER_QUERY_SECONDS.value())
