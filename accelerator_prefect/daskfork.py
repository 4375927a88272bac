"""A warm run's Dask workers, forked from a confined forker instead of spawned.

A run whose manifest chose ``task_runner: dask`` fans its routines out on a local Dask
cluster of its own. ``LocalCluster`` spawns each worker as a fresh Python, which spends
some 5 s of CPU importing Prefect, Dask and the product before its first routine: on two
cores that ate the gain of the second one (B18). Forking the run's own process instead is
not safe: by then it runs threads (Prefect's API client, its log handlers), and a lock
one of them holds at the fork stays held for good in the fork.

So a warm run forks a *forker* at its very start, while it runs no thread of its own
(:func:`accelerator_prefect.zygote._start_forker`). The forker waits until the run
confined itself, confines itself the same way (Landlock and rlimits), imports this module
(Dask and prefect-dask) once, and then forks one Dask worker per request. Each worker
starts with everything imported, dies with the forker, which dies with the run.

- :class:`ForkedCluster`: a ``LocalCluster`` (its scheduler in the run's process, TLS with
  credentials of its own) whose workers are :class:`ForkedWorker`.
- :class:`ForkedWorker`: a ``ProcessInterface`` whose ``start`` asks the run's forker for
  a worker, and whose ``close`` stops it.
- :func:`serve`: the forker's loop.

Example (in a warm run that chose Dask; :func:`~accelerator_prefect.jobflow.chosen_task_runner`
does this)::

    DaskTaskRunner(cluster_class=ForkedCluster, cluster_kwargs=dask_cluster_options({}))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Mapping
from typing import Any

import prefect_dask  # noqa: F401  (the forker imports it once: its workers find it imported)
from distributed import LocalCluster, Worker
from distributed.deploy.spec import ProcessInterface
from distributed.security import Security

from accelerator_prefect.zygote import (
    _drain_prefect_services,
    dask_forker,
    die_with_parent,
    fork_into,
    receive_frame,
    send_frame,
)

HONOURED = frozenset(
    {
        "n_workers",
        "threads_per_worker",
        "processes",
        "host",
        "scheduler_port",
        "dashboard_address",
        "worker_dashboard_address",
        "silence_logs",
        "security",
        "protocol",
        "interface",
        "local_directory",
        "memory_limit",
        "resources",
        "lifetime",
        "death_timeout",
    }
)
"""The ``LocalCluster`` options a :class:`ForkedCluster` takes; a run whose manifest gives
another (or ``processes: false``) gets a ``LocalCluster``."""
START_TIMEOUT = 120.0
"""Seconds a worker may take to start and join the run's scheduler."""
CLOSE_TIMEOUT = 10.0
"""Seconds a worker told to close may take before it is killed."""

_WORKERS_TLS = (
    "require_encryption",
    "tls_ca_file",
    "tls_worker_cert",
    "tls_worker_key",
    "tls_ciphers",
    "tls_min_version",
)
"""A worker's part of its cluster's ``Security``: the CA, its certificate and key (PEM
text for ``Security.temporary()``'s), the TLS settings."""

_ASKING = threading.Lock()  # one request at a time on the run's channel to its forker


def forkable(options: Mapping[str, Any]) -> bool:
    """Whether a :class:`ForkedCluster` starts the cluster these ``LocalCluster`` options
    (:func:`~accelerator_prefect.jobflow.dask_cluster_options`) ask for: worker processes,
    options of :data:`HONOURED` only, with values that go over a socket as JSON.

    Example:
        >>> forkable({"n_workers": 2, "processes": True, "security": True})
        True
        >>> forkable({"processes": False})
        False
    """
    if options.get("processes", True) is not True or not set(options) <= HONOURED:
        return False
    if options.get("security") not in (True, False, None):
        return False
    try:
        json.dumps(dict(options))
    except (TypeError, ValueError):
        return False
    return True


class ForkedCluster(LocalCluster):  # type: ignore[misc]
    """A run's local Dask cluster whose workers its forker forks (:class:`ForkedWorker`):
    the scheduler in the run's process, as ``LocalCluster``'s, with the same options."""

    def __init__(self, **options: Any) -> None:
        options["processes"] = True  # each worker a process of its own, forked
        super().__init__(worker_class=ForkedWorker, **options)  # type: ignore[no-untyped-call]


class ForkedWorker(ProcessInterface):  # type: ignore[misc]
    """One Dask worker of the run's cluster, a process its forker forks. ``start`` returns
    once the worker joined the scheduler; ``close`` tells it to close (it closes its end
    of their socket as it exits), and kills it if it has not within
    :data:`CLOSE_TIMEOUT`."""

    def __init__(self, scheduler: str, name: Any = None, **options: Any) -> None:
        super().__init__(scheduler=scheduler, name=name)  # type: ignore[no-untyped-call]
        self.scheduler = scheduler
        self.name = name
        self.options = options
        self.pid: int | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        forker = dask_forker()
        if forker is None:
            raise RuntimeError("this process has no Dask forker: start a LocalCluster instead")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _ASKING:
                send_frame(forker, self._request(), [theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise RuntimeError(f"the run's Dask forker is gone ({exc})") from None
        finally:
            theirs.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        try:
            said = await asyncio.wait_for(self._started(self._reader), START_TIMEOUT)
        except BaseException:
            await self._stop()
            raise
        self.address = said["address"]
        await super().start()  # type: ignore[no-untyped-call]

    def _request(self) -> dict[str, Any]:
        """What the forker needs to start this worker; the run's working folder and import
        path too, which a spawned worker would have taken from the run."""
        return {
            "scheduler": self.scheduler,
            "name": self.name,
            "options": _options_sent(self.options),
            "cwd": os.getcwd(),
            "path": list(sys.path),
        }

    async def _started(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        said: dict[str, Any] = {}
        while "address" not in said:
            line = await reader.readline()
            if not line:
                raise RuntimeError(f"Dask worker {self.name} ended before it joined the cluster")
            said.update(json.loads(line))
            if "pid" in said:
                self.pid = int(said["pid"])
            if "error" in said:
                raise RuntimeError(f"Dask worker {self.name} did not start: {said['error']}")
        return said

    async def close(self) -> None:
        await self._stop()
        await super().close()  # type: ignore[no-untyped-call]

    async def _stop(self) -> None:
        if self._writer is None or self._reader is None:
            return
        reader, writer, self._reader, self._writer = self._reader, self._writer, None, None
        with contextlib.suppress(OSError):
            writer.write_eof()  # the worker's cue to close
        try:
            await asyncio.wait_for(reader.read(), CLOSE_TIMEOUT)  # the end: its exit closes it
        except (TimeoutError, OSError):
            if self.pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.pid, signal.SIGKILL)
        finally:
            writer.close()


def _options_sent(options: Mapping[str, Any]) -> dict[str, Any]:
    """The worker's options as JSON: its ``Security`` as the worker's part of it (the
    cluster's CA and the worker's certificate and key, PEM text)."""
    sent = dict(options)
    security = sent.pop("security", None)
    if isinstance(security, Security):
        fields = {name: getattr(security, name) for name in _WORKERS_TLS}
        if fields["tls_min_version"] is not None:
            fields["tls_min_version"] = int(fields["tls_min_version"])
        sent["security"] = fields
    return sent


def _options_taken(sent: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(sent)
    security = dict(options.pop("security", None) or {})
    if security.get("tls_min_version") is not None:
        security["tls_min_version"] = ssl.TLSVersion(security["tls_min_version"])
    given = {k: v for k, v in security.items() if k in _WORKERS_TLS and v is not None}
    options["security"] = Security(**given)  # type: ignore[no-untyped-call]
    return options


# -- the forker --------------------------------------------------------------------------


def serve(channel: socket.socket) -> int:
    """The forker's loop (it is confined by now): fork a Dask worker for each request the
    run sends over ``channel``, each with its end of a socket of its own; reap them as
    they end; return once the run's end of ``channel`` closed."""
    forker = os.getpid()
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        request, fds = receive_frame(channel)
        if request is None:
            return 0
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue

        def worker(request: dict[str, Any] = request, fd: int = fds[0]) -> int:
            channel.close()
            return _work(request, fd, forker)

        fork_into(worker)
        os.close(fds[0])


def _reap(*_: Any) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _work(request: Mapping[str, Any], fd: int, forker: int) -> int:
    """A forked worker: run a ``distributed.Worker`` (no nanny) for the run's scheduler in
    an event loop of its own, until its cluster closes it or the run's end of ``fd``
    closes."""
    die_with_parent(forker)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # its routines wait for their own children
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)  # over the CPU-time limit: the kernel ends it
    control = socket.socket(fileno=fd)
    os.chdir(request["cwd"])
    sys.path[:] = request["path"]
    control.sendall(_line({"pid": os.getpid()}))
    try:
        asyncio.run(_run_worker(request, control))
    finally:
        _drain_prefect_services()  # the routines' last logs and events
    return 0


async def _run_worker(request: Mapping[str, Any], control: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=control)
    options = _options_taken(request["options"])
    if options.get("silence_logs"):  # as quiet as a LocalCluster's workers
        logging.getLogger("distributed").setLevel(options["silence_logs"])
    try:
        worker = await Worker(request["scheduler"], name=request["name"], **options)
    except Exception as exc:
        writer.write(_line({"error": f"{type(exc).__name__}: {exc}"}))
        await writer.drain()
        return
    writer.write(_line({"address": worker.address}))
    await writer.drain()
    told = asyncio.ensure_future(reader.read())  # returns when the run's end closes
    finished = asyncio.ensure_future(worker.finished())
    await asyncio.wait({told, finished}, return_when=asyncio.FIRST_COMPLETED)
    if not finished.done():
        await worker.close(reason="its cluster closed it")
    told.cancel()


def _line(message: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(message)).encode() + b"\n"
