"""The warm worker's zygote: a parent interpreter that has Prefect, the product and the
common scientific stack imported, and forks one child per flow run.

The zygote holds no credentials: the warm worker starts it with an environment swept of
every secret (:func:`credential_free`), and it never reads what a run is given. For each
run the worker sends it one end of a fresh pipe; the zygote forks, and only the child
reads the pipe, which carries the run's whole environment (the Prefect auth string, the
storage keys…). The child then runs the flow run with Prefect's own engine, in a process
group and a working directory of its own, and exits.

The protocol, over a ``SOCK_SEQPACKET`` UNIX socket (one JSON message per packet):

- zygote → worker ``{"ready": pid}`` once its imports are done;
- worker → zygote ``{"fork": run_id}`` with the pipe's read end attached (``SCM_RIGHTS``);
- zygote → worker ``{"forked": run_id, "pid": pid}``, then ``{"exited": pid, "code": n,
  "cpu": seconds}`` when that child ends (``n`` as ``subprocess`` reports it: negative for
  a signal; ``cpu``: the processor time it used).

A run's limits (its manifest's ``limits``, else the platform's ``ACC_RUN_*``) come with
its environment. The child applies them to itself before the author's code is imported,
as rlimits the code cannot raise again: memory as ``RLIMIT_DATA`` (on top of what the
child holds from the warm parent), CPU time as ``RLIMIT_CPU``, output size as
``RLIMIT_FSIZE``; the worker keeps the time limit. A run over one ends Failed, its state
message naming the limit (:func:`over_limit`).

Run it as ``python -m accelerator_prefect.zygote <socket fd> <worker pid>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import json
import math
import os
import re
import selectors
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from accelerator_prefect.errors import AcceleratorError

PRELOAD = (
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.flows",
    "prefect.artifacts",
    "prefect.results",
    "prefect.deployments.steps",
    "prefect.logging.handlers",
    "prefect.events.worker",
    "prefect.client.orchestration",
    "prefect.utilities.visualization",
    "pydantic.v1",
    "anyio._backends._asyncio",
    "rich._emoji_codes",
    "accelerator_prefect",
    "accelerator_prefect.jobflow",
    "accelerator_prefect.steps",
    "accelerator_prefect.storage",
    "accelerator_prefect.outputs",
    "accelerator_prefect.provenance",
    "accelerator_prefect.runs",
    "accelerator_prefect.results",
    "accelerator_prefect.secrets",
    "encodings.idna",  # httpx's clients encode host names with it
    "numpy",
)
"""What every run finds imported; ``ACC_WARM_PRELOAD`` (comma-separated) adds more, and
``ACC_WARM_PRELOAD_DISTRIBUTIONS`` the modules of the named distributions (the direct
requirements of the environment the zygote runs in)."""

_SECRET_NAME = re.compile(r"AUTH|TOKEN|SECRET|PASSW|KEY|CREDENTIAL|SESSION|CERT", re.IGNORECASE)
_SECRET_NAMES = frozenset(
    {
        "ACC_STORAGE_OPTIONS",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    }
)
_USERINFO = re.compile(r"://[^/@\s]+@")
_MESSAGE_BYTES = 65536
PR_SET_PDEATHSIG = 1
CANCEL_SIGNAL = signal.SIGUSR1
"""Sent by the worker to a child just before the SIGTERM that cancels its run."""
TIMEOUT_SIGNAL = signal.SIGUSR2
"""Sent by the worker to a child whose run went over its time limit: the run ends Failed."""

LIMITS = ("timeout", "memory", "cpu_time", "output_size")
"""The manifest's ``limits`` fields, in the order messages list them."""
_LIMIT_WORDS = {
    "timeout": "time",
    "memory": "memory",
    "cpu_time": "CPU-time",
    "output_size": "output-size",
}
CPU_GRACE = 5
"""Seconds of processor time a run over its CPU time gets to end Failed (its engine
reports the state) before the kernel kills it."""


RUN_LIMITS_VARIABLE = "ACC_RUN_LIMITS"
"""The run's own limits, in its environment: publishing puts its manifest's there."""
_SIZES = ("memory", "output_size")


def run_limits(
    env: Mapping[str, str], warn: Callable[[str], object] | None = None
) -> dict[str, tuple[str, float]]:
    """A run's limits: name → (the value as written, in seconds or bytes). Its manifest's
    (``ACC_RUN_LIMITS`` in the run's environment ``env``), else the platform's defaults
    (``ACC_RUN_TIMEOUT``, ``ACC_RUN_MEMORY``, ``ACC_RUN_CPU_TIME``, ``ACC_RUN_OUTPUT_SIZE``
    where this process runs). A value that does not read is left out, and ``warn`` told."""
    from accelerator_prefect.manifest import parse_duration
    from accelerator_prefect.mapping import parse_size
    from accelerator_prefect.settings import get_settings

    settings = get_settings()
    defaults = {
        "timeout": settings.run_timeout,
        "memory": settings.run_memory,
        "cpu_time": settings.run_cpu_time,
        "output_size": settings.run_output_size,
    }
    try:
        declared = json.loads(env.get(RUN_LIMITS_VARIABLE) or "{}")
    except ValueError:
        declared = {}
    if not isinstance(declared, dict):
        declared = {}
    limits: dict[str, tuple[str, float]] = {}
    for name in LIMITS:
        value = declared.get(name) or defaults[name]
        if not value:
            continue
        text = str(value).strip()
        try:
            amount = parse_size(text) if name in _SIZES else parse_duration(text)
        except ValueError:
            if warn is not None:
                kind = "size such as '512 MB'" if name in _SIZES else "duration such as '30 min'"
                warn(f"limits.{name}: {text!r} is not a {kind}; the run has no such limit")
            continue
        if amount > 0:
            limits[name] = (text, float(amount))
    return limits


class RunLimitExceeded(AcceleratorError):
    """A run went over one of its limits (its manifest's ``limits``, or the platform's)."""


def over_limit(name: str, value: str) -> str:
    """What a run over its limit ``name`` (of ``value``, as written) is told, e.g. ``the run
    went over its memory limit of 256 MB (limits.memory)``."""
    said = f"the run went over its {_LIMIT_WORDS.get(name, name)} limit of {value} (limits.{name})"
    if name == "output_size":
        said += ": a file it wrote would have been larger; nothing of that file was kept"
    return said


def credential_free(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without anything that may be a credential: names that say so (``…TOKEN``,
    ``…AUTH…``, ``…KEY…``, ``…SECRET…``), option blobs that may carry keys, and URLs with a
    user and password in them. Dropping a harmless setting costs nothing: the child gets the
    worker's whole environment back."""
    return {
        name: value
        for name, value in env.items()
        if not _SECRET_NAME.search(name)
        and name not in _SECRET_NAMES
        and not _USERINFO.search(value)
    }


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent ends (``PR_SET_PDEATHSIG``),
    and end now if the parent already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    channel.send(json.dumps(message).encode())


def _preload() -> None:
    import importlib

    extra = [m.strip() for m in os.environ.get("ACC_WARM_PRELOAD", "").split(",") if m.strip()]
    for name in (*PRELOAD, *extra, *_modules_of(os.environ.get("ACC_WARM_PRELOAD_DISTRIBUTIONS"))):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name.split(".")[0]:  # a model's environment need not have numpy
                print(f"zygote: could not preload {name}: {exc}", file=sys.stderr)
        except Exception as exc:
            print(f"zygote: could not preload {name}: {exc}", file=sys.stderr)
    # Prefect loads its plugins' entry points (this worker among them, and with it
    # ``prefect.workers``) the first time a run resolves a block: once here, not per run.
    from prefect.plugins import load_prefect_collections

    load_prefect_collections()
    from accelerator_prefect.provenance import index_distributions

    index_distributions()  # each run's provenance lists package versions from it
    _share_ca_context()
    _build_models()
    _warm_logging()


def _modules_of(distributions: str | None) -> list[str]:
    """The module each named distribution is imported as (a model environment's direct
    requirements), to import in the zygote: the one named like the distribution, else its
    only public top-level module. Others (``pylab`` beside ``matplotlib``) are left out:
    importing them may do more than define things."""
    from accelerator_prefect.environments import normalised_name as key

    wanted = {key(d.strip()) for d in (distributions or "").split(",") if d.strip()}
    if not wanted:
        return []
    from importlib import metadata

    modules: dict[str, list[str]] = {}
    for module, owners in metadata.packages_distributions().items():
        for owner in owners:
            if key(owner) in wanted and not module.startswith("_"):
                modules.setdefault(key(owner), []).append(module)
    chosen = []
    for dist, names in modules.items():
        named = [m for m in names if key(m) == dist]
        chosen += named or (names if len(names) == 1 else [])
    return sorted(chosen)


def _build_models() -> None:
    """Build the schemas of the API's models now: pydantic builds a deferred one on its
    first use, which would be in every child (reading the run, the deployment…)."""
    import importlib

    from pydantic import BaseModel

    for name in (
        "prefect.client.schemas.objects",
        "prefect.client.schemas.responses",
        "prefect.client.schemas.actions",
        "prefect.events.schemas.events",
    ):
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel):
                with contextlib.suppress(Exception):
                    value.model_rebuild()


def _warm_logging() -> None:
    """Log one line through Prefect's console handler: its first record pays rich's
    rendering set-up and the ABC and typing caches logging uses, once here."""
    from prefect.logging import get_logger

    get_logger("accelerator.zygote").info("Warm zygote ready (pid %s)", os.getpid())


def _share_ca_context() -> None:
    """Build the TLS context of certifi's CA bundle once, for every client of every run.

    Prefect's and httpx's clients each parse the bundle anew (``ssl.create_default_context
    (cafile=…)``, some 20 ms each, several clients per run). The bundle is public data; a
    child only ever shares the context between its own clients, all with the same
    settings.
    """
    import ssl

    import certifi

    original, bundle = ssl.create_default_context, certifi.where()
    shared = original(cafile=bundle)

    def create_default_context(
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: str | bytes | None = None,
    ) -> ssl.SSLContext:
        if purpose == ssl.Purpose.SERVER_AUTH and cafile == bundle and not capath and not cadata:
            return shared
        return original(purpose, cafile=cafile, capath=capath, cadata=cadata)

    ssl.create_default_context = create_default_context  # type: ignore[assignment]


class Zygote:
    """The fork loop: reads fork requests, reaps children, reports both to the worker."""

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.children: set[int] = set()
        self.runs: dict[int, str] = {}  # child → its run's id
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
        signal.signal(signal.SIGTERM, lambda *_: self._stop())
        self.selector.register(self.channel, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        _send(self.channel, {"ready": os.getpid()})
        while True:
            for key, _ in self.selector.select():
                if key.fileobj == self.wake_r:
                    os.read(self.wake_r, 512)
                    self._reap()
                else:
                    self._receive()

    def _receive(self) -> None:
        message, fds, _, _ = socket.recv_fds(self.channel, _MESSAGE_BYTES, 1)
        if not message:  # the worker is gone
            self._stop()
        request = json.loads(message)
        if "fork" not in request or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return
        self._fork(str(request["fork"]), fds[0])

    def _fork(self, run_id: str, secrets_fd: int) -> None:
        _keep_allowed()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._become_child()
            run_child(secrets_fd, parent)
        os.close(secrets_fd)
        self.children.add(pid)
        self.runs[pid] = run_id
        _send(self.channel, {"forked": run_id, "pid": pid})

    def _become_child(self) -> None:
        """Drop what belongs to the zygote: its socket, its signal plumbing."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        self.selector.close()
        self.channel.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            _drop_empty_result_folder(self.runs.pop(pid, ""))
            code = os.waitstatus_to_exitcode(status)
            cpu = round(usage.ru_utime + usage.ru_stime, 3)  # the worker tells a CPU-limit kill
            _send(self.channel, {"exited": pid, "code": code, "cpu": cpu})

    def _stop(self) -> None:
        """Children end with their zygote: each run's whole process group is killed."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        os._exit(0)


def run_child(secrets_fd: int, zygote: int) -> None:
    """The forked child: take the run's environment from the pipe, run the flow run with
    Prefect's engine in a fresh working directory, exit with 0 once it reached a final
    state (whatever it is) and non-zero only if the engine itself broke."""
    code = 1
    try:
        os.setpgid(0, 0)
        die_with_parent(zygote)
        signal.signal(CANCEL_SIGNAL, _cancel_intent)
        signal.signal(TIMEOUT_SIGNAL, _over_time)
        with os.fdopen(secrets_fd, "rb") as pipe:
            given = json.loads(pipe.read())
        code = _run(given)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the child must never fall back into the zygote's loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _cancel_intent(*_: Any) -> None:
    """The worker is cancelling this run (a SIGTERM follows): tell Prefect's engine, so
    that it ends the run Cancelled rather than Crashed, as a runner's cancel does."""
    from prefect._internal import control_listener

    control_listener._set_intent("cancel")


def _run(given: dict[str, Any]) -> int:
    """Run the flow run with what the worker gave: its environment (``env``), the folder
    its working folder goes in (``working_dir``), its limits (``limits``: name → [value
    as written, seconds or bytes]), and what the worker already read for it
    (``deployment``, ``result_storage``)."""
    import shutil
    import tempfile
    from uuid import UUID

    _LIMITS.update({k: (str(v[0]), float(v[1])) for k, v in (given.get("limits") or {}).items()})
    env: dict[str, str] = given["env"]
    os.environ.clear()
    os.environ.update(env)
    # In the zygote's own folder (which the confinement allows) unless the pool says where.
    run_id = env["PREFECT__FLOW_RUN_ID"]  # in its name, so the worker finds what is left
    scratch = tempfile.mkdtemp(
        prefix=f"acc-run-{run_id}-", dir=given.get("working_dir") or os.getcwd()
    )
    os.chdir(scratch)
    # The run's temporary files go to its scratch folder, which stays its own once confined.
    os.environ["TMPDIR"] = tempfile.tempdir = scratch
    if dask_chosen(env):
        _start_forker()  # now, while this process runs no thread of its own
    try:
        _refresh_prefect_settings()
        _results_in_run_folder(run_id)
        _limit_messages()
        _preset_result_storage(given.get("result_storage"))
        return _engine(UUID(run_id), given.get("deployment"))
    finally:
        _drain_prefect_services()
        shutil.rmtree(scratch, ignore_errors=True)


# -- the run's limits ------------------------------------------------------------------

_LIMITS: dict[str, tuple[str, float]] = {}
"""This child's limits: name → (the value as written, in seconds or bytes)."""
_OVER: list[str] = []
"""What this child was told when it went over a limit (once: the kernel repeats SIGXCPU)."""


def _over_time(*_: Any) -> None:
    """The worker's deadline passed: end the run Failed, from wherever its code is."""
    _raise_over("timeout")


def _over_cpu(*_: Any) -> None:
    _raise_over("cpu_time")


def _raise_over(name: str) -> None:
    if _OVER:
        return  # already on its way out
    said = over_limit(name, _LIMITS.get(name, ("its limit", 0.0))[0])
    _OVER.append(said)
    raise RunLimitExceeded(said)


def _limit() -> None:
    """Apply the run's memory, CPU-time and output-size limits to this child, before the
    author's code is imported: rlimits it cannot raise again (the CPU one leaves the
    grace in which the run ends Failed, then the kernel kills it)."""
    import resource

    if "memory" in _LIMITS:
        # On top of what the child holds from the warm parent (Prefect, numpy…: some
        # 150 MB of data), so that the limit is what the run's own code may allocate.
        # RLIMIT_DATA, not RLIMIT_AS: it counts the writable memory a process made, not
        # the address space threads and malloc's arenas reserve without using.
        data = _held("VmData") + int(_LIMITS["memory"][1])
        _set_limit(resource.RLIMIT_DATA, data, data)
    if "cpu_time" in _LIMITS:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + _LIMITS["cpu_time"][1])
        signal.signal(signal.SIGXCPU, _over_cpu)
        _set_limit(resource.RLIMIT_CPU, soft, soft + CPU_GRACE)
    if "output_size" in _LIMITS:
        # Python ignores SIGXFSZ: a write past it fails with EFBIG, which the run reports.
        size = int(_LIMITS["output_size"][1])
        _set_limit(resource.RLIMIT_FSIZE, size, size)


def _held(field: str) -> int:
    """A size (bytes) from this process's ``/proc/self/status``, e.g. ``VmData``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _set_limit(which: int, soft: int, hard: int) -> None:
    """Lower a resource's limits to ``soft`` and ``hard``, never above the host's own."""
    import resource

    _, host = resource.getrlimit(which)
    if host != resource.RLIM_INFINITY:
        soft, hard = min(soft, host), min(hard, host)
    resource.setrlimit(which, (soft, hard))


def limit_said(exc: BaseException | None) -> str | None:
    """What a run whose code raised ``exc`` is told if a limit of its caused it: a memory
    error under a memory limit, a file too large under an output-size limit (or what the
    child's own signal raised); ``None`` otherwise. Looks through the causes too."""
    for _ in range(8):
        if exc is None:
            return None
        if isinstance(exc, RunLimitExceeded):
            return str(exc)
        if _out_of_memory(exc) and "memory" in _LIMITS:
            return over_limit("memory", _LIMITS["memory"][0])
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG and "output_size" in _LIMITS:
            return over_limit("output_size", _LIMITS["output_size"][0])
        exc = exc.__cause__ or exc.__context__
    return None


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: a ``MemoryError``, or a thread that could not
    start (its stack is memory too)."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)


def _limit_messages() -> None:
    """Make the Failed state of a run (and of its routine) over a limit say so in plain
    words, instead of Prefect's ``MemoryError: Unable to allocate…`` or ``OSError: [Errno
    27] File too large``: users read the state message. The exception itself is kept as
    the state's data, for operators."""
    if not _LIMITS:
        return
    import prefect.flow_engine
    import prefect.task_engine

    original = prefect.flow_engine.exception_to_failed_state
    original_sync = prefect.task_engine.exception_to_failed_state_sync

    async def exception_to_failed_state(
        exc: BaseException | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        state = await original(exc, *args, **kwargs)
        said = limit_said(exc or sys.exc_info()[1])
        if said is not None:
            state.message = said
        return state

    def exception_to_failed_state_sync(
        exc: BaseException | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        state = original_sync(exc, *args, **kwargs)
        said = limit_said(exc or sys.exc_info()[1])
        if said is not None:
            state.message = said
        return state

    prefect.flow_engine.exception_to_failed_state = exception_to_failed_state  # type: ignore[assignment]
    prefect.task_engine.exception_to_failed_state = exception_to_failed_state  # type: ignore[assignment]
    prefect.task_engine.exception_to_failed_state_sync = exception_to_failed_state_sync  # type: ignore[assignment]


# -- confinement -----------------------------------------------------------------------

_RULESET: int | str | None = None
"""The confinement every child takes (a Landlock ruleset's descriptor), made once by the
zygote; or why there is none (``None``: not asked for, ``ACC_WARM_CONFINE=false``)."""
_STORAGE: tuple[str, list[int]] | None = None
"""The local storage root, and handles on everything beside the way to it: each child
confines itself to its inputs and its output folder in there (none for an object store,
whose keys the run holds: the run-scoped proxy's part)."""
_ALLOWED: dict[str, tuple[int, int]] = {}
"""Folders the ruleset allows whole, where runs work (the zygote's own, the code cache),
with the (device, inode) allowed: a rule holds the folder it was made for, so one
removed and made again (the code cache, cleared by an operator) is allowed anew."""
_READ_ONLY: set[str] = set()
"""Of :data:`_ALLOWED`, the folders runs only read: the code cache, the environments,
the DVC remote (what a run wrote there would run in other runs)."""
_OWN: dict[str, tuple[str, list[int]]] = {}
"""Folders of which a run reaches only its own part, each with handles on everything
beside the way to it: ``results`` (the run's result folder, written) and ``code`` (its
own checkout, read)."""


def _prepare_confinement() -> None:
    """Make the children's confinement (:mod:`accelerator_prefect.confine`): the platform's
    home out of reach but for what a run needs, and this zygote's folder, where each run's
    scratch folder goes."""
    global _RULESET, _STORAGE
    from pathlib import Path

    from accelerator_prefect import confine

    if not confine.asked():
        return
    from accelerator_prefect.settings import get_settings

    home = get_settings().home
    try:
        fd = confine.ruleset(home, needs=())  # the folders runs need: _keep_allowed's
    except confine.Unavailable as exc:
        _RULESET = str(exc)
        print(f"zygote: runs are not confined to what they need: {exc}", file=sys.stderr)
        return
    from accelerator_prefect.steps import _cache_root

    _RULESET = fd
    root = get_settings().storage_root
    if root.startswith("file://"):
        from urllib.parse import unquote, urlparse

        local = Path(unquote(urlparse(root).path)).resolve()
        local.mkdir(parents=True, exist_ok=True)
        _STORAGE = (str(local), confine.open_around(local))
    made = {Path.cwd(), _cache_root(), home / "results"}  # runs work there: made if gone
    for folder in [*made, *(home / n for n in confine.RUN_NEEDS)]:
        if folder in made or folder.is_dir():
            _ALLOWED[str(folder.resolve())] = (0, 0)
    _READ_ONLY.update(
        str(f.resolve()) for f in [_cache_root(), *(home / n for n in confine.RUN_READS)]
    )
    _keep_allowed()
    for name, folder in (("results", home / "results"), ("code", _cache_root())):
        _OWN[name] = (str(folder.resolve()), confine.open_around(folder))


def _keep_allowed() -> None:
    """Before each fork: allow the folders runs work in as they now are (made again if
    they went, allowed anew if they were made again since)."""
    if not isinstance(_RULESET, int):
        return
    from pathlib import Path

    from accelerator_prefect import confine

    for folder, held in _ALLOWED.items():
        try:
            if held == (0, 0) or not os.path.exists(folder):
                Path(folder).mkdir(parents=True, exist_ok=True)
            found = os.stat(folder)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) != held:
            rights = confine.READ_ONLY if folder in _READ_ONLY else None
            confine.allow(_RULESET, Path(folder), rights=rights)
            _ALLOWED[folder] = (found.st_dev, found.st_ino)


def _confine(flow_run: Any) -> None:
    """Confine this child with the zygote's ruleset, and its working folder: its scratch
    folder, or the code it runs (a checkout in the platform's code cache, to read, or an
    author's working tree for a version published with uncommitted code); then to its
    own result folder and its own checkout (:func:`_confine_own`); then, in a local
    storage, to the run's inputs (to read) and its output folder."""
    if not isinstance(_RULESET, int):
        return
    import tempfile
    from pathlib import Path

    from accelerator_prefect import confine

    try:
        for folder in {str(Path.cwd().resolve()), tempfile.gettempdir()}:
            if not any(folder == a or folder.startswith(a + os.sep) for a in _ALLOWED):
                confine.allow(_RULESET, Path(folder))  # rare: a pool's or a dirty version's
        confine.restrict(_RULESET)
        _confine_own(flow_run)
        _confine_storage(flow_run)
    except confine.Unavailable as exc:
        print(f"zygote: the run is not confined to what it needs: {exc}", file=sys.stderr)
    finally:
        os.close(_RULESET)


def _confine_own(flow_run: Any) -> None:
    """Further layers, one per folder of :data:`_OWN`: of the result folder only the
    run's own (``results/<run id>/``, made now; its Prefect result goes there,
    :func:`_results_in_run_folder`), of the code cache only the run's own checkout (to
    read); the others' results and code are out of its reach, everything else as the
    first layer left it."""
    import tempfile
    from pathlib import Path

    from accelerator_prefect import confine

    cwd = Path.cwd().resolve()
    for name, (folder, around) in _OWN.items():
        own: Path | None
        if name == "results":
            own = Path(folder, str(flow_run.id))
            own.mkdir(parents=True, exist_ok=True)
        else:
            own = cwd if cwd.is_relative_to(folder) else None
        fd = confine.new_ruleset()
        try:
            for opened in around:
                confine.allow_opened(fd, opened)
            # What the first layer allows anew (the other of the two made again), by path.
            for other in {*_ALLOWED, str(cwd), tempfile.gettempdir()}:
                inside = other == folder or other.startswith(folder + os.sep)
                if not (inside or folder.startswith(other + os.sep)):
                    confine.allow(fd, Path(other))
            if own is not None:
                confine.allow(fd, own, rights=None if name == "results" else confine.READ_ONLY)
            confine.restrict(fd)
        finally:
            os.close(fd)


def _drop_empty_result_folder(run_id: str) -> None:
    """Once a run's process ended, remove its result folder if it stored nothing there
    (the run itself may not: it reaches nothing beside its folder)."""
    if "results" in _OWN and run_id:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(_OWN["results"][0], run_id))


def _confine_storage(flow_run: Any) -> None:
    """A last layer: in the local storage, only the run's ``acc://`` inputs (to read)
    and its output folder (made now); everything else as the layers before left it."""
    if _STORAGE is None:
        return
    import tempfile
    from pathlib import Path

    from accelerator_prefect import confine
    from accelerator_prefect.outputs import run_folder
    from accelerator_prefect.storage import PREFIX, check_path

    root, around = _STORAGE
    parameters = flow_run.parameters or {}
    inputs = parameters.get("inputs") or {}
    readable = [
        uri
        for key in ("selected_files", "selected_folders")
        for uri in inputs.get(key) or []
        if isinstance(uri, str) and uri.startswith(PREFIX)
    ]
    output = run_folder(parameters, flow_run.id)
    fd = confine.new_ruleset()
    try:
        for opened in around:
            confine.allow_opened(fd, opened)
        # What the first layer allows anew (a code cache made again), but the storage.
        for folder in {*_ALLOWED, str(Path.cwd().resolve()), tempfile.gettempdir()}:
            if not (folder == root or root.startswith(folder + os.sep)):
                confine.allow(fd, Path(folder))
        for uri in readable:
            confine.allow(fd, Path(root, check_path(uri)), rights=confine.READ_ONLY)
        if output is not None and output.startswith(PREFIX):
            written = Path(root, check_path(output))
            written.mkdir(parents=True, exist_ok=True)
            confine.allow(fd, written)
        confine.restrict(fd)
    finally:
        os.close(fd)


def _refresh_prefect_settings() -> None:
    """Prefect read its settings when the zygote imported it, without credentials: read
    them again from the run's environment. The flow run's heartbeat stays off: it would
    hold the run's end by up to a second, and the worker watches its children itself."""
    import prefect.context

    prefect.context.refresh_global_settings_context()
    prefect.context.GLOBAL_SETTINGS_CONTEXT.settings.flows.heartbeat_frequency = None
    _no_suspension_observer()
    _queued_pull_step_events()


def run_result_key(run_id: str, key: str) -> str:
    """Where a warm run keeps the result Prefect would keep at ``key`` (its jobflow's, a
    persisted or cached routine's): ``<run id>/<key>``, in the run's own folder of the
    result storage.

    Example:
        >>> run_result_key("5c0f", "9e41ab")
        '5c0f/9e41ab'
    """
    if key.startswith(f"{run_id}/") or os.path.isabs(key):
        return key
    return f"{run_id}/{key}"


def _results_in_run_folder(run_id: str) -> None:
    """Keep every result this process stores or looks up in a folder of the run's own in
    the result storage (:func:`run_result_key`): the only part of a local one the run
    may write (:func:`_confine_own`). A result is read by the key its run's state names,
    so the results of runs from before (flat keys) read as ever. A routine cached by its
    cache policy is cached within its run (across runs, one run's cache would be another
    run's to read and change). A routine run in another process (a Dask worker) caches
    nothing outside its run's folder: Prefect logs why, and its value is used as ever."""
    from prefect.results import ResultStore

    create = ResultStore.create_result_record

    def create_result_record(
        self: ResultStore, obj: Any, key: str | None = None, expiration: Any = None
    ) -> Any:
        return create(self, obj, run_result_key(run_id, key or self.storage_key_fn()), expiration)

    def by_run_key(method: Callable[..., Any]) -> Callable[..., Any]:
        def keyed(self: ResultStore, key: str, *args: Any, **kwargs: Any) -> Any:
            return method(self, run_result_key(run_id, key), *args, **kwargs)

        return keyed

    ResultStore.create_result_record = create_result_record  # type: ignore[method-assign]
    for name in ("_exists", "_aexists", "_read", "_aread"):
        setattr(ResultStore, name, by_run_key(getattr(ResultStore, name)))


def _preset_result_storage(given: dict[str, Any] | None) -> None:
    """Put the default result-storage block the worker read into Prefect's cache of
    default storages, if the run's own setting names that block; else Prefect reads it."""
    if not given:
        return
    from prefect import results
    from prefect.blocks.core import Block
    from prefect.client.schemas.objects import BlockDocument
    from prefect.settings import get_current_settings

    settings = get_current_settings().results
    if settings.default_storage_block != given.get("slug"):
        return
    with contextlib.suppress(Exception):  # Prefect's own read is the fallback
        block = Block._from_block_document(BlockDocument.model_validate(given["document"]))
        key = (str(settings.default_storage_block), str(settings.local_storage_path), "None")
        results._default_storages[key] = block


def _no_suspension_observer() -> None:
    """Prefect watches every deployment's run for a Suspended event from outside: a
    thread with its own event loop and websocket, waited for at the start and joined at
    the end of each run. Hosted jobflows are never suspended from outside (they are
    cancelled, which the worker handles), so the child does without it."""
    import prefect.flow_engine

    prefect.flow_engine.observe_flow_run_suspension = (  # type: ignore[attr-defined]
        lambda *_args, **_kwargs: contextlib.nullcontext()
    )


def _queued_pull_step_events() -> None:
    """Prefect sends each pull step's event (``prefect.flow-run.pull-step.executed``…)
    over a websocket it opens for that one event: a connection and a server-version
    check per step, some 20 ms each before the run may start. The child sends the same
    events through Prefect's background events worker, which it drains before exiting."""
    from prefect.deployments.steps import core
    from prefect.events import emit_event

    if not hasattr(core, "_emit_pull_step_event"):
        return

    async def emit(
        serialized_step: dict[str, Any],
        *,
        event_type: str,
        deployment: Any = None,
        flow_run: Any = None,
        logger: Any = None,
    ) -> None:
        flow_run_id = flow_run.id if flow_run is not None else os.getenv("PREFECT__FLOW_RUN_ID")
        if not flow_run_id:
            return
        related = (
            [
                {
                    "prefect.resource.id": f"prefect.deployment.{deployment.id}",
                    "prefect.resource.role": "deployment",
                }
            ]
            if deployment is not None
            else []
        )
        emit_event(
            event=event_type,
            resource={"prefect.resource.id": f"prefect.flow-run.{flow_run_id}"},
            related=related,
            payload=serialized_step,
        )

    core._emit_pull_step_event = emit


def _engine(flow_run_id: Any, deployment: Any = None) -> int:
    """What ``python -m prefect.engine`` does, in this process."""
    from prefect.engine import _drive_run_flow_result, handle_engine_signals
    from prefect.flow_engine import flow_run_logger, load_flow, load_flow_run, run_flow

    with handle_engine_signals(flow_run_id):
        flow_run = load_flow_run(flow_run_id=flow_run_id)
        run_logger = flow_run_logger(flow_run=flow_run)
        try:
            if not deployment and flow_run.deployment_id is not None:
                deployment = _read_deployment(flow_run.deployment_id)
            if deployment:
                flow = _load_flow(flow_run, deployment)
            else:
                _confine(flow_run)
                _limit()
                _release_forker(flow_run, confined=True)
                flow = load_flow(flow_run)
        except Exception:
            run_logger.error(
                "Unexpected exception encountered when trying to load flow", exc_info=True
            )
            raise
        result = run_flow(flow, flow_run=flow_run, error_logger=run_logger)
        _drive_run_flow_result(flow, result)
    return 0


def _read_deployment(deployment_id: Any) -> dict[str, Any]:
    """The run's deployment, where the worker could not read it: its pull steps (the
    checkout) must run before the run confines itself, which keeps it from writing
    the code cache."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment: dict[str, Any] = client.read_deployment(deployment_id).model_dump(mode="json")
    return deployment


def _load_flow(flow_run: Any, data: dict[str, Any]) -> Any:
    """Prefect's ``load_flow_from_flow_run`` for the deployment the worker read while
    submitting the run (one round trip fewer): its pull steps (the ``checkout`` of the
    pinned commit), then its entrypoint, imported from the checkout. Deployments of
    another shape go through Prefect's own loader."""
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.deployments.steps.core import StepExecutionError, run_steps
    from prefect.flow_engine import flow_run_logger, load_flow
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.asyncutils import run_coro_as_sync

    from accelerator_prefect.provenance import remember_deployment

    deployment = DeploymentResponse.model_validate(data)
    remember_deployment(deployment)  # the run's provenance record need not read it again
    entrypoint = deployment.entrypoint or ""
    if not deployment.pull_steps or ":" not in entrypoint:
        _limit()  # before Prefect's own loader: its pull steps, then the code
        _release_forker(flow_run, confined=False)
        return load_flow(flow_run)
    run_logger = flow_run_logger(flow_run)
    run_logger.info("Running %d deployment pull step(s)", len(deployment.pull_steps))
    try:
        output = run_coro_as_sync(
            run_steps(
                deployment.pull_steps,
                print_function=run_logger.info,
                deployment=deployment,
                flow_run=flow_run,
                logger=run_logger,
            )
        )
    except StepExecutionError as exc:
        run_logger.error(str(exc.__cause__ or exc))
        raise
    if output and output.get("directory"):
        os.chdir(output["directory"])
    # The pull steps (the platform's: the code's checkout) are done; the author's code,
    # from its import on, runs confined.
    _confine(flow_run)
    _limit()
    _release_forker(flow_run, confined=True)
    return load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)


# -- the Dask forker ---------------------------------------------------------------------

_FORKER: socket.socket | None = None
"""In a run whose manifest chose ``task_runner: dask``: its channel to its Dask forker
(:func:`_start_forker`); ``None`` in every other process."""


def dask_forker() -> socket.socket | None:
    """This run's channel to its Dask forker, if it has one (a warm run that chose Dask):
    :mod:`accelerator_prefect.daskfork` starts the run's Dask workers through it."""
    return _FORKER


def dask_chosen(env: Mapping[str, str]) -> bool:
    """Whether the run's environment ``env`` chooses ``task_runner: dask`` (what
    :func:`~accelerator_prefect.jobflow.chosen_task_runner` reads, without importing it)."""
    from accelerator_prefect.jobflow import TASK_RUNNER_VARIABLE

    try:
        chosen = json.loads(env.get(TASK_RUNNER_VARIABLE) or "{}")
    except ValueError:
        return False
    return isinstance(chosen, dict) and chosen.get("kind") == "dask"


def send_frame(channel: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """Send ``message`` as JSON in one length-prefixed frame over the stream ``channel``,
    with ``fds`` attached to its first byte. A stream, not the zygote's packets: the run's
    parameters and import path, which the forker is sent, have no size bound that one
    packet is sure to hold (a packet is at most the socket's buffer, 208 KiB by default)."""
    data = json.dumps(message).encode()
    frame = len(data).to_bytes(4, "big") + data
    sent = socket.send_fds(channel, [frame], list(fds)) if fds else channel.send(frame)
    channel.sendall(frame[sent:])


def receive_frame(channel: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next frame :func:`send_frame` sent over ``channel`` and the descriptors that
    came with it; ``(None, [])`` once the other end closed it."""
    header, fds, _, _ = socket.recv_fds(channel, 4, 4)
    while header and len(header) < 4:
        more = channel.recv(4 - len(header))
        if not more:
            break
        header += more
    if len(header) < 4:
        for fd in fds:
            os.close(fd)
        return None, []
    size, data = int.from_bytes(header, "big"), b""
    while len(data) < size:
        chunk = channel.recv(min(size - len(data), 1 << 20))
        if not chunk:
            return None, fds
        data += chunk
    return json.loads(data), fds


def fork_into(body: Callable[[], int]) -> int:
    """Fork; return the child's pid here, and in the child run ``body`` and exit with the
    code it returns (1 if it raised, its traceback on stderr): a forked child never falls
    back into its parent's code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _start_forker() -> None:
    """Fork the run's Dask forker, at the run's very start: this process has Prefect, the
    product and numpy imported and runs no thread of its own yet, so the forker may fork
    again safely (a process that runs threads may not: a lock another thread holds stays
    held for good in the fork). The forker waits until this run confined itself
    (:func:`_release_forker`), confines itself the same way, and only then forks the
    run's Dask workers (:mod:`accelerator_prefect.daskfork`). It dies with this process,
    and its workers with it."""
    global _FORKER
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent = os.getpid()

    def forker() -> int:
        ours.close()
        return _forker(theirs, parent)

    fork_into(forker)
    theirs.close()
    _FORKER = ours
    if __name__ == "__main__":  # the zygote runs as ``-m``: others import another copy
        from accelerator_prefect import zygote

        zygote._FORKER = ours


def _release_forker(flow_run: Any, *, confined: bool) -> None:
    """Tell the forker this run confined itself (``confined``: with :func:`_confine`, else
    only :func:`_limit`), in which working folder and for which run: the forker does the
    same before it forks any worker. Before the author's code is imported, as JSON: the
    forker reads it unconfined."""
    if _FORKER is None:
        return
    said = {
        "id": str(flow_run.id),
        "parameters": json.loads(json.dumps(flow_run.parameters or {}, default=str)),
        "cwd": os.getcwd(),
        "confined": confined,
    }
    with contextlib.suppress(OSError):  # a forker gone: the run's cluster will say so
        send_frame(_FORKER, said)


def _forker(channel: socket.socket, run: int) -> int:
    """The forker's life: wait for the run to be confined, confine itself alike, then
    serve the run's requests for Dask workers until the run's end of ``channel`` closes."""
    import types
    from uuid import UUID

    die_with_parent(run)
    # The run's cancel and time limit are the run's to handle; SIGTERM (the run's process
    # group's) ends the forker and its workers at once.
    for sig in (CANCEL_SIGNAL, TIMEOUT_SIGNAL):
        signal.signal(sig, signal.SIG_IGN)
    released, fds = receive_frame(channel)
    for fd in fds:
        os.close(fd)
    if released is None:
        return 0
    os.chdir(released["cwd"])
    flow_run = types.SimpleNamespace(id=UUID(released["id"]), parameters=released["parameters"])
    if released["confined"]:
        _confine(flow_run)
    # Dask and prefect-dask, imported once here, confined: each worker finds them imported
    # and, as a warm run does, counts them as its start rather than its memory.
    from accelerator_prefect import daskfork

    _limit()
    # A worker's routines run with the run's settings and keep their results in the run's
    # own folder, as the run's do.
    _refresh_prefect_settings()
    _results_in_run_folder(str(flow_run.id))
    _limit_messages()
    return daskfork.serve(channel)


def _drain_prefect_services() -> None:
    """Send the run's last logs and events before the child exits without the interpreter's
    own shutdown (which would run the zygote's exit handlers too)."""
    from prefect._internal.concurrency.services import QueueService

    with contextlib.suppress(Exception):
        QueueService.drain_all(timeout=5)


def run_engine() -> None:
    """``python -m accelerator_prefect.zygote --engine``: what ``python -m prefect.engine``
    does, with the run's limits applied to this process first. The command of a run on a
    pool of Prefect's own workers (process, Docker, Kubernetes: the pool's ``command``),
    which know nothing of limits. The time limit is kept by a thread of its own."""
    import importlib
    import runpy
    import threading
    import warnings

    # What a warm run finds imported counts as the run's start, not as its memory, here as
    # there: the limit is what the author's code allocates either way.
    for name in PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    from prefect.plugins import load_prefect_collections

    load_prefect_collections()
    _LIMITS.update(run_limits(os.environ, lambda text: print(f"acc: {text}", file=sys.stderr)))
    signal.signal(TIMEOUT_SIGNAL, _over_time)
    _limit_messages()
    _limit()
    if "timeout" in _LIMITS:
        threading.Thread(target=_keep_time, args=(_LIMITS["timeout"],), daemon=True).start()
    sys.argv = ["prefect.engine"]
    # Imported already (by the engines): run again as the main module, as `-m` would.
    warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules", RuntimeWarning)
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


def _keep_time(limit: tuple[str, float], grace: float = 5.0, allowance: float = 120.0) -> None:
    """The time limit of a run on Prefect's own workers, from its start (Running), as the
    warm worker counts it: at the deadline, tell the run (its engine ends it Failed); if
    it is still going ``grace`` seconds later (in native code), end it Failed from here
    and kill this process."""
    import datetime
    import time
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    run_id = UUID(os.environ["PREFECT__FLOW_RUN_ID"])
    began = time.monotonic()
    with get_client(sync_client=True) as client:
        running = 0.0
        while time.monotonic() < began + allowance:
            with contextlib.suppress(Exception):
                start = client.read_flow_run(run_id).start_time
                if start is not None:
                    now = datetime.datetime.now(datetime.UTC)
                    running = max(0.0, (now - start).total_seconds())
                    break
            time.sleep(0.5)
        time.sleep(max(0.0, limit[1] - running))
        os.kill(os.getpid(), TIMEOUT_SIGNAL)
        time.sleep(grace)
        with contextlib.suppress(Exception):
            client.set_flow_run_state(
                run_id, Failed(message=over_limit("timeout", limit[0])), force=True
            )
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--engine"]:
        run_engine()
        return
    fd, worker = int(args[0]), int(args[1])
    die_with_parent(worker)
    channel = socket.socket(fileno=fd)
    _preload()
    _prepare_confinement()
    # What the zygote imported is never freed: the children's full collections need not
    # walk it (a gen-2 pass over the preloaded stack stalls a run ~0.1 s), and their pages
    # stay shared with the parent.
    gc.collect()
    gc.freeze()
    Zygote(channel).serve()


if __name__ == "__main__":
    main()
