"""The embedded platform behind ``acc up``: a Prefect server on SQLite, a process
work pool with a worker, local ``acc://`` storage and the bundled examples.

Everything lives under one home folder (``--home`` / ``ACC_HOME``). The running
platform is described in ``<home>/platform.json`` so a second ``acc up`` reuses
it and ``acc down`` stops it; that file is for this machine's CLI only, and no
worker reads it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import httpx
from pydantic import BaseModel, Field

from accelerator_prefect.errors import AcceleratorError, PlatformError
from accelerator_prefect.settings import get_settings

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from accelerator_prefect.client import Accelerator
    from accelerator_prefect.publish import PublishResult

RESULTS_BLOCK = "acc-results"
Report = Callable[[str], None]


class PlatformInfo(BaseModel):
    """A running embedded platform, as recorded in ``platform.json``."""

    home: Path
    api_url: str
    ui_url: str
    port: int
    server_pid: int
    worker_pid: int | None = None
    """The first worker (``worker_pids[0]``; the only one a platform of earlier releases
    records)."""
    worker_pids: list[int | None] = Field(default_factory=list)
    """Every worker ``acc up`` runs on the pool, in the order of their names (``#1``, ``#2``…)."""
    work_pool: str
    database: str = "SQLite"
    """What the Prefect server stores its data in, for people (no password)."""
    catalog_pid: int | None = None
    catalog_url: str | None = None
    portal_pid: int | None = None
    portal_url: str | None = None
    factor_service_pid: int | None = None
    factor_service_url: str | None = None

    def workers(self) -> list[int | None]:
        """The pids of the workers (``None`` where one is not started yet)."""
        return self.worker_pids or [self.worker_pid]


FACTOR_PORT = 8610
"""Where ``acc up`` serves the stand-in emission-factor service (the default of
``emissions-impact``'s ``service_url`` setting)."""


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0): reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


@functools.cache
def _http() -> httpx.Client:
    """One HTTP client for the health checks, which poll: each new client loads the
    system's certificate authorities again (~70 ms of CPU)."""
    return httpx.Client()


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return _http().get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def read_platform(home: Path) -> PlatformInfo | None:
    """The platform running under ``home``, or ``None`` if none is."""
    path = home / "platform.json"
    if not path.exists():
        return None
    try:
        info = PlatformInfo.model_validate_json(path.read_text())
    except ValueError:
        return None
    return info if _alive(info.server_pid) else None


def _write_platform(info: PlatformInfo) -> None:
    path = info.home / "platform.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(info.model_dump_json(indent=2))
    tmp.replace(path)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers themselves bind: connections of a stopped server lingering in
        # TIME_WAIT do not hold the port (a listening program still does).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port() -> int:
    """A port nothing listens on, outside the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` is also one it hands out as the source port
    of an outgoing connection: between choosing it and the server binding it, any client on
    the machine may take it. Ports below (or above) the ephemeral range are never taken so.
    """
    import random

    ephemeral = _ephemeral_ports()
    candidates: list[int] = [*range(10000, ephemeral.start), *range(ephemeral.stop, 65536)]
    for _ in range(200 if candidates else 0):
        port = random.choice(candidates)
        if _port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log written)"
    return "\n".join(f"    {line}" for line in text[-lines:])


def _prefect_bin() -> str:
    candidate = Path(sys.executable).parent / "prefect"
    return str(candidate) if candidate.exists() else "prefect"


def ensure_auth_string(home: Path) -> str:
    """The Prefect API's auth string of the platform under ``home``, made on first use and
    kept in the home, readable by its owner only (mode 0600)."""
    import secrets

    path = get_settings(home=home).auth_string_file
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


SERVICE_UNNEEDED = (
    "ACC_TOKEN",  # the CLI's own credential, and where it sends it
    "ACC_URL",
    "ACC_DATABASE_URL",  # the database's password: the Prefect server is given its own
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_PASSWORD",
    "PREFECT_SERVER_DATABASE_PASSWORD",
)
"""Credentials in ``acc up``'s own environment that no service it starts is given: a
worker passes its environment on to the runs it starts, so whatever a service holds
without needing it, authors' code may read."""


def _base_env(home: Path, api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_UNNEEDED}
    # The platform's services reach Prefect with its auth string; nothing else does.
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)
    env["PREFECT_API_AUTH_STRING"] = ensure_auth_string(home)
    env.update(
        {
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_COLORS": "false",
            "ACC_HOME": str(home),
        }
    )
    recorded = read_platform(home)
    for name, value in database_tuning(recorded.database if recorded else "SQLite").items():
        env.setdefault(name, value)  # an operator's own setting wins
    return env


def database_tuning(label: str) -> dict[str, str]:
    """The settings of the platform's services that follow the Prefect server's database
    (``label``, as :func:`database_label` wrote it in ``platform.json``):

    - SQLite takes one writer at a time: a client's launches write one at a time
      (``ACC_LAUNCH_CONCURRENCY=1``; four at once drew 13-27 times the refusals, B17),
      and a write SQLite could not lock in time (a 500) is tried again, as after a 503, by
      Prefect's clients (the worker's, the portal's, the catalog's and every run's);
    - PostgreSQL takes writes side by side: four launches of a client write at once, and a
      500 is an error like any other.

    Example:
        >>> database_tuning("PostgreSQL at db.example.org:5432/prefect")
        {'ACC_LAUNCH_CONCURRENCY': '4'}
    """
    if label.startswith("SQLite"):
        return {"ACC_LAUNCH_CONCURRENCY": "1", "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500"}
    return {"ACC_LAUNCH_CONCURRENCY": "4"}


TRUST_NOTICE = (
    "note: models' code runs as this user on this machine, with {access}, {home}; host "
    "only code you trust here (docs/operations.md, 'Whose code runs')"
)
"""What ``acc up`` says at every start: the embedded platform runs no model in a user
of its own, so it trusts its authors."""


def trust_notice(kind: str = "warm") -> str:
    """:data:`TRUST_NOTICE`, saying what runs reach of Prefect and of the platform's home
    on a worker of ``kind`` (``warm``, else Prefect's process worker, which keeps its runs
    from nothing)."""
    from accelerator_prefect import confine

    if kind != "warm":
        return TRUST_NOTICE.format(
            access=f"the worker's access to Prefect and to storage (the {kind} worker)",
            home="and its home within reach (only the warm worker keeps runs out of them)",
        )
    proxied = os.environ.get("ACC_WARM_PROXY", "true").strip().lower() not in _OFF
    access = (
        "only its own run's access to Prefect and to storage (a run-scoped proxy)"
        if proxied
        else "the worker's access to the platform (ACC_WARM_PROXY=false)"
    )
    if not confine.asked():
        home = "and its home within reach (ACC_WARM_CONFINE=false)"
    elif confine.abi() < 1:
        home = "and its home within reach (this kernel offers no Landlock to keep them out)"
    else:
        home = "kept out of its home's credentials (Landlock)"
    return TRUST_NOTICE.format(access=access, home=home)


_OFF = {"false", "0", "no", "off", "n", "f"}


PRIVATE_UMASK = 0o077
"""What the platform's processes create is their user's alone (0700 folders, 0600 files):
storage, results, logs and the database, on a host other people use too."""


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with _private(), log.open("ab") as out:
        return subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # stopped by us, in order, not by the terminal's Ctrl-C
            umask=PRIVATE_UMASK,
            # Interruptible whatever started `acc up`: a shell's background job ignores SIGINT,
            # and a Prefect worker stops on SIGTERM by interrupting itself, so one that
            # inherited the ignore ran on until it was killed.
            preexec_fn=_interruptible,
        )


def _interruptible() -> None:
    """In a child about to run a service: SIGINT does what it does by default again."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


P = ParamSpec("P")
R = TypeVar("R")


def _privately(function: Callable[P, R]) -> Callable[P, R]:
    """``function``, creating private files and folders while it runs (see ``_private``)."""

    @functools.wraps(function)
    def private(*args: P.args, **kwargs: P.kwargs) -> R:
        with _private():
            return function(*args, **kwargs)

    return private


@contextlib.contextmanager
def _private() -> Iterator[None]:
    """This process's own files created meanwhile are private too."""
    before = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(before)


def _wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: str,
    log: Path,
    deadline: float,
) -> None:
    """Wait until ``ready()``; if ``process`` exits first or ``deadline`` s pass, stop it and
    say why with the last lines of its ``log``."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise PlatformError(
                f"{what} exited with code {process.returncode} before it was ready; "
                f"the last lines of {log}:\n{_tail(log)}"
            )
        if ready():
            return
        time.sleep(0.25)
    stop_process(process.pid)
    raise PlatformError(
        f"{what} did not answer within {deadline:g} s; the last lines of {log}:\n{_tail(log)}"
    )


def database_label(url: str | None, home: Path | None = None) -> str:
    """What a database URL names, for people: ``PostgreSQL at db.example.org:5432/prefect``,
    never its user or password; ``SQLite`` (under ``home``) when ``url`` is ``None``.

    Example:
        >>> database_label("postgresql+asyncpg://prefect:pw@db.example.org:5432/prefect")
        'PostgreSQL at db.example.org:5432/prefect'
    """
    if url is None:
        return f"SQLite under {home}" if home else "SQLite"
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # a URL SQLAlchemy cannot read: say only its kind
        return "a database of its own"
    kind = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(
        parsed.get_backend_name(), parsed.get_backend_name()
    )
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
    return f"{kind} at {where}" if kind != "SQLite" else f"SQLite at {parsed.database}"


def _database_problem(url: str) -> str | None:
    """Why the Prefect server cannot use ``url``, or ``None``."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # its message may carry the password: never passed on
        return (
            "the database URL cannot be read: expected "
            "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    if parsed.drivername not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        return (
            f"the database URL's driver is {parsed.drivername!r}: the Prefect server needs "
            "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE (or sqlite+aiosqlite:///FILE)"
        )
    return None


def start_server(
    home: Path, port: int, deadline: float = 120.0, database: str | None = None
) -> int:
    """Start the Prefect server on ``database`` (a SQLAlchemy URL; SQLite under ``home``
    when ``None``) and wait until it answers; return its pid."""
    if not _port_free(port):
        raise PlatformError(
            f"port {port} on 127.0.0.1 is taken by another program; choose another with --port"
        )
    api_url = f"http://127.0.0.1:{port}/api"
    log = home / "logs" / "server.log"
    env = _base_env(home, api_url)
    if database is not None:
        problem = _database_problem(database)
        if problem:
            raise PlatformError(problem)
    if database is None:
        _seed_sqlite(home / "prefect" / "prefect.db")
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = (
        database or f"sqlite+aiosqlite:///{home / 'prefect' / 'prefect.db'}"
    )
    env["PREFECT_UI_API_URL"] = api_url
    env["PREFECT_SERVER_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"]
    process = _spawn(
        [_prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log
    )
    _wait_until_ready(
        process, lambda: healthy(api_url, timeout=1.0), "the Prefect server", log, deadline
    )
    return process.pid


_MIGRATE = (
    "import asyncio\n"
    "from prefect.server.database import provide_database_interface\n"
    "asyncio.run(provide_database_interface().create_db())\n"
)


def _seed_sqlite(db: Path) -> None:
    """A new home's SQLite database starts as a copy of an empty one that Prefect's
    migrations already made (:func:`migrated_sqlite`): a Prefect server migrating a new
    database spends ~8 s of CPU on it, at the first start of every home. Nothing happens
    when ``db`` exists, or when no copy can be made (the server then migrates it itself)."""
    if db.exists():
        return
    try:
        template = migrated_sqlite()
        partial = db.with_name(f".{db.name}.partial")
        with _private():
            db.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, partial)
        os.chmod(partial, 0o600)
        os.replace(partial, db)  # never a database that looks whole but is not
    except (OSError, subprocess.SubprocessError, sqlite3.Error):
        return


def migrated_sqlite() -> Path:
    """An empty SQLite database at the installed Prefect's newest migration, made once and
    kept in the user's cache (``$XDG_CACHE_HOME/accelerator-prefect``), one per Prefect
    release and set of migrations; made in a temporary file and renamed, so that processes
    making it at once each leave a whole one."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise OSError("prefect is not installed")
    migrations = Path(spec.origin).parent / "server/database/_migrations/versions/sqlite"
    names = sorted(p.name for p in migrations.glob("*.py"))
    if not names:
        raise OSError(f"no migrations in {migrations}")
    key = "\n".join([importlib.metadata.version("prefect"), *names])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "accelerator-prefect"
    template = cache / f"prefect-sqlite-{digest}.db"
    if template.is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _private(), tempfile.TemporaryDirectory(dir=cache, prefix=".making-") as work:
        made = Path(work) / "prefect.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env["PREFECT_HOME"] = work
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{made}"
        subprocess.run(
            [sys.executable, "-c", _MIGRATE],
            env=env,
            cwd=work,
            check=True,
            capture_output=True,
            timeout=600,
        )
        whole = Path(work) / "whole.db"
        with contextlib.closing(sqlite3.connect(made)) as connection:
            connection.execute("VACUUM INTO ?", (str(whole),))  # one file, no journal
        os.replace(whole, template)
    return template


def worker_name(home: Path, pool: str, kind: str, number: int = 1) -> str:
    """The name of the platform's ``number``-th worker of ``kind`` on ``pool``: the same at
    every start, so that a worker started again in place of a killed one knows the runs it
    held were its own (docs/operations.md, "Orphans")."""
    host = socket.gethostname()
    base = (
        f"acc-warm-{host}-{home.name}-{pool}"
        if kind == "warm"
        else f"acc-worker-{host}-{home.name}"
    )
    return base if number == 1 else f"{base}-{number}"


def start_worker(
    home: Path, api_url: str, pool: str, env: dict[str, str] | None = None, number: int = 1
) -> int:
    """Start a process worker polling ``pool`` every second; return its pid.

    ``env`` adds settings its runs inherit, e.g. ``ACC_STORAGE_URL``; ``number`` tells the
    platform's workers on one pool apart (their names and logs).
    """
    extra, env = env or {}, _base_env(home, api_url)
    env.update(extra)
    env.update(
        {
            # Poll every second: users should not wait for a polling interval.
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"local-file-system/{RESULTS_BLOCK}",
        }
    )
    process = _spawn(
        [
            _prefect_bin(),
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "process",
            "--name",
            worker_name(home, pool, "process", number),
        ],
        env,
        worker_log(home, pool, number),
    )
    return process.pid


def start_warm_worker(
    home: Path, api_url: str, pool: str, env: dict[str, str] | None = None, number: int = 1
) -> int:
    """Start a warm worker (type ``acc-warm``, :mod:`accelerator_prefect.worker`) on
    ``pool``; return its pid. It picks runs up from Prefect's event stream and polls every
    five seconds as the fallback.

    ``env`` adds settings its runs inherit, e.g. ``ACC_STORAGE_URL`` or ``ACC_WARM_LIMIT``.
    """
    extra, env = env or {}, _base_env(home, api_url)
    env.update(
        {
            "PREFECT_WORKER_QUERY_SECONDS": "5",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"local-file-system/{RESULTS_BLOCK}",
        }
    )
    env.update(extra)
    process = _spawn(
        [
            _prefect_bin(),
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "acc-warm",
            "--name",
            worker_name(home, pool, "warm", number),
        ],
        env,
        worker_log(home, pool, number),
    )
    return process.pid


def worker_log(home: Path, pool: str, number: int = 1) -> Path:
    """Where the ``number``-th worker of ``pool`` started by the platform writes its log."""
    return home / "logs" / (f"worker-{pool}.log" if number == 1 else f"worker-{pool}-{number}.log")


def start_pool_worker(
    home: Path,
    api_url: str,
    pool: str,
    kind: str,
    env: dict[str, str] | None = None,
    number: int = 1,
) -> int:
    """Start the ``number``-th worker of kind ``kind`` (``warm`` or ``process``) on ``pool``."""
    start = start_warm_worker if kind == "warm" else start_worker
    return start(home, api_url, pool, env, number)


def catalog_app() -> Path:
    """The Streamlit catalog's entry script."""
    import catalog_ui

    return Path(catalog_ui.__file__).parent / "app.py"


def catalog_server() -> Path:
    """What ``streamlit run`` serves: the catalog as an ``st.App``, with the routes that keep
    a signed-in browser signed in."""
    return catalog_app().with_name("serve.py")


def catalog_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return _http().get(f"{url}/_stcore/health", timeout=timeout).text.strip() == "ok"
    except httpx.HTTPError:
        return False


def start_catalog(home: Path, api_url: str, port: int, deadline: float = 60.0) -> tuple[int, str]:
    """Serve the Streamlit catalog on 127.0.0.1:``port``; return its pid and URL once it answers."""
    if not _port_free(port):
        raise PlatformError(
            f"port {port} on 127.0.0.1 is taken by another program; choose another with "
            "--catalog-port"
        )
    url = f"http://127.0.0.1:{port}"
    env = _base_env(home, api_url)  # it acts for whoever signs in, never for a token of its own
    env.update({"ACC_API_URL": api_url, "ACC_CATALOG_URL": url})
    log = home / "logs" / "catalog.log"
    process = _spawn(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(catalog_server()),
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--server.headless=true",
            "--server.fileWatcherType=none",
            "--browser.gatherUsageStats=false",
            "--client.showErrorDetails=none",
            "--client.toolbarMode=minimal",
            "--theme.base=light",
        ],
        env,
        log,
    )
    _wait_until_ready(
        process, lambda: catalog_healthy(url, timeout=1.0), "the catalog", log, deadline
    )
    return process.pid, url


def portal_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return _http().get(f"{url}/api/v1/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start_portal(
    home: Path,
    api_url: str,
    port: int,
    deadline: float = 60.0,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Serve the portal (uvicorn) on 127.0.0.1:``port``; return its pid and URL once it answers.

    ``env`` adds settings, e.g. ``ACC_PORTAL_RATE_PER_SECOND``.
    """
    if not _port_free(port):
        raise PlatformError(
            f"port {port} on 127.0.0.1 is taken by another program; choose another with "
            "--portal-port"
        )
    url = f"http://127.0.0.1:{port}"
    extra, env = env or {}, _base_env(home, api_url)
    env["ACC_API_URL"] = api_url  # it acts for each request's caller, with no token of its own
    env.update(extra)
    log = home / "logs" / "portal.log"
    process = _spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "accelerator_prefect.portal:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-server-header",
            "--log-level",
            "warning",
            # Requests held open (log streams, Prefer: wait) do not hold a stop: users'
            # clients ask again (log streams resume from Last-Event-ID).
            "--timeout-graceful-shutdown",
            "10",
        ],
        env,
        log,
    )
    _wait_until_ready(process, lambda: portal_healthy(url, 1.0), "the portal", log, deadline)
    return process.pid, url


def stop_process(pid: int | None, deadline: float = 15.0) -> None:
    """Stop a child and its process group: SIGTERM, then SIGKILL after ``deadline`` s."""
    stop_processes([pid], deadline)


def stop_processes(pids: Iterable[int | None], deadline: float = 15.0) -> None:
    """Stop children and their process groups all at once: SIGTERM to each, then SIGKILL to
    those still running after ``deadline`` s. Each takes the time its own shutdown takes,
    not the sum of all of theirs."""
    running = [pid for pid in pids if pid is not None and _alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        end = time.monotonic() + deadline
        while running and time.monotonic() < end:
            running = [pid for pid in running if _alive(pid)]
            if running:
                time.sleep(0.05)
        if not running:
            return


def _stop_all(info: PlatformInfo) -> None:
    """Stop every process of the platform ``info`` describes: the services and the workers
    together, the server they talk to last."""
    services = [info.factor_service_pid, info.portal_pid, info.catalog_pid]
    stop_processes([*services, *info.workers()])
    stop_process(info.server_pid)


async def _prepare(
    client: PrefectClient, home: Path, pool: str, kind: str, concurrency: int | None = None
) -> None:
    """Create the work pool for the worker of ``kind`` (at most ``concurrency`` runs at
    once: a burst of launches queues instead of starting a process each) and the result
    storage block."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.filesystems import LocalFileSystem

    template: dict[str, Any]
    if kind == "warm":
        from accelerator_prefect.worker import WORKER_TYPE, WarmWorker

        pool_type, template = WORKER_TYPE, WarmWorker.get_default_base_job_template()
        description = "Runs hosted models in processes forked from a warm parent (acc up)."
    else:
        from prefect.utilities.processutils import command_to_string, get_sys_executable
        from prefect.workers.process import ProcessWorker

        pool_type, template = "process", ProcessWorker.get_default_base_job_template()
        # Prefect's engine, with the run's limits (the manifest's `limits`) applied first.
        template["variables"]["properties"]["command"]["default"] = command_to_string(
            [get_sys_executable(), "-m", "accelerator_prefect.zygote", "--engine"]
        )
        description = "Runs hosted models as local processes (acc up)."
    try:
        existing = await client.read_work_pool(pool)
    except ObjectNotFound:
        await client.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type=pool_type,
                base_job_template=template,
                description=description,
                concurrency_limit=concurrency,
            )
        )
    else:
        if existing.type != pool_type:
            raise PlatformError(
                f"the work pool {pool!r} is of type {existing.type!r}, but a {kind} worker "
                f"needs one of type {pool_type!r}: name another pool with ACC_WORK_POOL"
            )
        if existing.concurrency_limit != concurrency:
            await client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=concurrency))
        kept = existing.base_job_template or {}
        brought = _brought_up_to_date(kept, template, kind)
        if brought != kept:
            await client.update_work_pool(pool, WorkPoolUpdate(base_job_template=brought))
    results = home / "results"
    results.mkdir(parents=True, exist_ok=True)
    await LocalFileSystem(basepath=str(results)).asave(RESULTS_BLOCK, overwrite=True, client=client)


def _brought_up_to_date(
    existing: dict[str, Any], default: dict[str, Any], kind: str
) -> dict[str, Any]:
    """A pool's job template made by an earlier release, with what this release's
    ``default`` adds: the variables and job configuration it lacks (what an operator
    changed is kept), and on a process pool the command that applies the runs' limits in
    place of Prefect's own (a pool made before it kept Prefect's, and its runs' limits
    would silently not hold)."""
    import copy

    brought = copy.deepcopy(existing)
    variables = brought.setdefault("variables", {})
    properties = variables.setdefault("properties", {})
    for name, spec in default.get("variables", {}).get("properties", {}).items():
        properties.setdefault(name, spec)
    configuration = brought.setdefault("job_configuration", {})
    for key, value in default.get("job_configuration", {}).items():
        configuration.setdefault(key, value)
    if kind != "warm":
        command = properties.get("command", {})
        if "accelerator_prefect.zygote" not in str(command.get("default") or ""):
            properties["command"] = default["variables"]["properties"]["command"]
    return brought


async def _adopt_versions(
    client: PrefectClient, home: Path, pool: str, kind: str, named: str | None
) -> tuple[str, list[str]]:
    """Move onto ``pool`` the hosted versions published to the platform's pool of the other
    kind of worker, which no worker serves once the platform runs this kind; the other
    pool's name and the versions moved (``model@version``).

    Until the warm worker became the default, ``acc up`` ran Prefect's process worker on
    ``acc-process``: a home made then keeps its versions there, and after an upgrade their
    runs would wait for a worker forever. Left where they are: versions whose manifest names
    its pool, every version when the settings name the pool (``ACC_WORK_POOL``), and those
    on a pool that a worker other than the platform's own is serving."""
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.exceptions import ObjectNotFound

    from accelerator_prefect.catalog import read_versions

    other_kind = "process" if kind == "warm" else "warm"
    other = f"acc-{other_kind}"
    if named is not None or pool == other:
        return other, []
    try:
        await client.read_work_pool(other)
    except ObjectNotFound:  # (its workers' listing answers a bare 404)
        return other, []
    workers = await client.read_workers_for_work_pool(other)
    # The platform's own workers of the other kind (stopped, though the server may still
    # count them online for a while) are told apart by their names.
    ours = {worker_name(home, other, other_kind, n) for n in range(1, 33)}
    if any(w.name not in ours and str(w.status).upper().endswith("ONLINE") for w in workers):
        return other, []
    moved = []
    for version in await read_versions(client):
        if version.work_pool != other or version.record.manifest.get("work_pool"):
            continue
        await client.update_deployment(version.deployment_id, DeploymentUpdate(work_pool_name=pool))
        moved.append(f"{version.name}@{version.version}")
    return other, moved


async def _ensure_operator(client: PrefectClient, token_file: Path) -> str | None:
    """Make sure the operator exists and has a token on this machine; a new token or None."""
    from accelerator_prefect.directory import UserRecord, create_token, read_user, save_user
    from accelerator_prefect.errors import NotFound

    try:
        await read_user(client, "operator")
    except NotFound:
        await save_user(client, UserRecord(name="operator", operator=True))
    if token_file.is_file():
        return None
    _, token = await create_token(client, "operator")
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    return token


async def _workers_online(client: PrefectClient, pool: str) -> set[str]:
    """The names of the workers online on ``pool``."""
    workers = await client.read_workers_for_work_pool(pool)
    return {w.name for w in workers if str(w.status).upper().endswith("ONLINE")}


@_privately  # what it creates (folders, logs, results) is its user's alone
def up(
    home: Path,
    *,
    port: int = 4200,
    pool: str | None = None,
    catalog_port: int | None = 8501,
    portal_port: int | None = 8600,
    factor_port: int | None = FACTOR_PORT,
    examples: list[Path] | None = None,
    report: Report = lambda _: None,
    deadline: float = 120.0,
    database: str | None = None,
    workers: int | None = None,
) -> tuple[PlatformInfo, list[PublishResult | AcceleratorError]]:
    """Start (or reuse) the embedded platform, publish the examples, serve the portal and
    the catalog (``portal_port`` / ``catalog_port`` ``None``: not that one). With the
    bundled examples, the emission-factor service ``emissions-impact`` reads from is
    served on ``factor_port`` (``None``: not served).

    The worker is the settings' ``worker`` (``ACC_WORKER``: ``warm`` unless told
    otherwise) on ``pool`` (the settings' pool when ``None``); ``workers`` of them
    (``ACC_WORKERS``, 1 when ``None``). The Prefect server keeps its data in ``database``
    (a ``postgresql+asyncpg://`` URL; ``ACC_DATABASE_URL``, else SQLite under ``home``)."""
    from accelerator_prefect.catalog import tag_members
    from accelerator_prefect.client import Accelerator, AsyncAccelerator

    home = home.expanduser().resolve()
    settings = get_settings(home=home)
    kind = settings.worker
    pool = pool or settings.pool
    workers = workers or settings.workers
    if database is None and settings.database_url is not None:
        database = settings.database_url.get_secret_value()
    (home / "storage").mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)  # its operator token, auth string, database and storage: the user's
    info = read_platform(home)
    started = False
    if info is not None and healthy(info.api_url):
        report(f"reusing the Prefect server at {info.api_url}")
    else:
        if info is not None:
            _stop_all(info)
        label = database_label(database, home)
        report(f"starting the Prefect server on 127.0.0.1:{port} ({label})")
        server_pid = start_server(home, port, deadline, database)
        started = True
        api_url = f"http://127.0.0.1:{port}/api"
        info = PlatformInfo(
            home=home,
            api_url=api_url,
            ui_url=api_url.removesuffix("/api"),
            port=port,
            server_pid=server_pid,
            work_pool=pool,
            database=label,
        )
        _write_platform(info)
    try:
        # The platform's own setup acts as its operator, vouched for by holding the auth string.
        service = AsyncAccelerator(info.api_url, settings=settings, trusted_user="operator")
        acc = Accelerator(service)
        report(f"preparing the work pool {pool!r} and result storage")
        acc._call(lambda c: _prepare(c, home, pool, kind, settings.work_pool_concurrency))
        other, moved = acc._call(lambda c: _adopt_versions(c, home, pool, kind, settings.work_pool))
        if moved:
            report(
                f"moved {len(moved)} version(s) from the pool {other!r}, which no worker serves "
                f"now, to {pool!r}: {', '.join(moved)}"
            )
        acc._call(tag_members)  # versions of an earlier release get this one's tags
        token_file = get_settings(home=home).operator_token_file
        token = acc._call(lambda c: _ensure_operator(c, token_file))
        if token is not None:
            report(f"created the operator; its token (kept for the local CLI) is {token}")
        pids = info.workers()
        pids = [*pids, *[None] * (workers - len(pids))]
        for number, pid in enumerate(pids, start=1):
            if number > workers:  # fewer asked for than running: the others stop
                stop_process(pid)
            elif not _alive(pid):
                report(f"starting {kind} worker #{number} on the pool {pool!r}")
                pids[number - 1] = start_pool_worker(home, info.api_url, pool, kind, number=number)
        info.worker_pids = pids[:workers]
        info.worker_pid = info.worker_pids[0]
        _write_platform(info)
        _wait_for_workers(acc, info, pool, deadline)
        report(trust_notice(kind))
        bundled_examples = examples is None
        if examples is None:
            examples = _prepare_examples(home, report)
        published = publish_examples(acc, examples, report)
        if (
            bundled_examples
            and examples
            and factor_port is not None
            and not _alive(info.factor_service_pid)
        ):
            _serve_factors(info, factor_port, report)
        acc.close()
        if portal_port is not None and not (
            _alive(info.portal_pid) and info.portal_url and portal_healthy(info.portal_url)
        ):
            report(f"serving the portal on 127.0.0.1:{portal_port}")
            info.portal_pid, info.portal_url = start_portal(home, info.api_url, portal_port)
            _write_platform(info)
        if catalog_port is not None and not (
            _alive(info.catalog_pid) and info.catalog_url and catalog_healthy(info.catalog_url)
        ):
            report(f"serving the catalog on 127.0.0.1:{catalog_port}")
            info.catalog_pid, info.catalog_url = start_catalog(home, info.api_url, catalog_port)
            _write_platform(info)
    except BaseException:
        if started:  # what this call started does not outlive its failure
            down(home)
        raise
    return info, published


def _prepare_examples(home: Path, report: Report) -> list[Path]:
    """The bundled examples' manifests, ready to publish: their repository up to date,
    their sample inputs in storage and their reference data in the DVC remote. Without the
    libraries they need, or on any failure to prepare them, none (and the report says why)."""
    from accelerator_prefect import bundled
    from accelerator_prefect.storage import AccFileSystem, Storage

    missing = bundled.missing_libraries()
    if missing:
        report(
            f"not publishing the example models: they need {', '.join(missing)}; install "
            f'them with pip install "{bundled.DISTRIBUTION}[{bundled.EXTRA}]"'
        )
        return []
    try:
        root = bundled.repository(home)
        storage = Storage(AccFileSystem.from_settings(get_settings(home=home)))
        copied = bundled.seed_example_data(storage, bundled.data_folder(root))
        report(f"sample inputs: {len(copied)} new file(s) under acc://<project>/examples/")
        manifests = bundled.manifests(root)
        bundled.seed_reference_data(
            manifests, get_settings(home=home).data_remote, report, root=root
        )
    except AcceleratorError as exc:
        report(f"not publishing the example models: {exc}")
        return []
    return manifests


def factor_service_key(home: Path) -> Path:
    """The file holding the key of the example emission-factor service (made once)."""
    import secrets

    path = home / "factor-service.key"
    if not path.exists():
        with _private():
            scratch = path.with_name(f".{path.name}.{os.getpid()}.part")
            scratch.write_text(secrets.token_urlsafe(24) + "\n")
            scratch.replace(path)
    return path


def _serve_factors(info: PlatformInfo, port: int, report: Report) -> None:
    """Serve the bundled stand-in emission-factor service on 127.0.0.1:``port``; a failure is
    reported (``emissions-impact`` then fails with a message saying it cannot reach it)."""
    from accelerator_prefect import bundled

    root = bundled.source()
    script = root / "examples" / "factor_service.py" if root else None
    if script is None or not script.is_file():
        return
    if not _port_free(port):
        report(
            f"not serving the example emission-factor service: port {port} on 127.0.0.1 is "
            "taken (choose another with --factor-port)"
        )
        return
    key = factor_service_key(info.home)
    log = info.home / "logs" / "factor-service.log"
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACC_", "PREFECT_"))}
    process = _spawn(
        [sys.executable, str(script), "--port", str(port), "--key-file", str(key)], env, log
    )
    try:
        _wait_until_ready(process, lambda: healthy(url, 1.0), "the factor service", log, 30)
    except PlatformError as exc:
        report(f"not serving the example emission-factor service: {exc}")
        return
    info.factor_service_pid, info.factor_service_url = process.pid, url
    _write_platform(info)
    report(
        f"serving the example emission-factor service on {url}; its key (emissions-impact's "
        f"FACTOR_API_KEY) is in {key}"
    )


def _wait_for_workers(acc: Accelerator, info: PlatformInfo, pool: str, deadline: float) -> None:
    """Wait until every worker of the platform's is online on ``pool``."""
    end = time.monotonic() + deadline
    kind = get_settings(home=info.home).worker
    names = {worker_name(info.home, pool, kind, n) for n in range(1, len(info.workers()) + 1)}
    while time.monotonic() < end:
        for number, pid in enumerate(info.workers(), start=1):
            if not _alive(pid):
                log = worker_log(info.home, pool, number)
                raise PlatformError(
                    f"worker #{number} exited; the last lines of {log}:\n{_tail(log)}"
                )
        if names <= acc._call(lambda c: _workers_online(c, pool)):
            return
        time.sleep(0.25)
    log = worker_log(info.home, pool)
    raise PlatformError(f"the workers did not come online within {deadline:g} s; see {log}")


def supervise(home: Path, report: Report = lambda _: None) -> list[int]:
    """Start again, under its own name, each worker of the platform under ``home`` that
    died (killed, out of memory); the numbers of those started. A worker started in place
    of a dead one marks Crashed the runs the dead one held (docs/operations.md, "Orphans").
    ``acc up`` calls it every second while it runs."""
    info = read_platform(home)
    if info is None:
        return []
    kind = get_settings(home=info.home).worker
    pids = info.workers()
    restarted = []
    for number, pid in enumerate(pids, start=1):
        if pid is not None and not _alive(pid):
            report(f"worker #{number} on the pool {info.work_pool!r} died; starting it again")
            with _private():
                pids[number - 1] = start_pool_worker(
                    info.home, info.api_url, info.work_pool, kind, number=number
                )
            restarted.append(number)
    if restarted:
        info.worker_pids = pids
        info.worker_pid = pids[0]
        _write_platform(info)
    return restarted


def publish_examples(
    acc: Accelerator, manifests: list[Path], report: Report
) -> list[PublishResult | AcceleratorError]:
    """Publish each manifest; a refusal is reported and does not stop the others."""
    results: list[PublishResult | AcceleratorError] = []
    for manifest in manifests:
        report(f"publishing {manifest.name}")
        try:
            results.append(acc.publish(manifest))
        except AcceleratorError as exc:
            results.append(exc)
    return results


def down(home: Path) -> bool:
    """Stop the platform under ``home``; ``False`` if none was running."""
    home = home.expanduser().resolve()
    path = home / "platform.json"
    if not path.exists():
        return False
    try:
        info = PlatformInfo.model_validate_json(path.read_text())
    except ValueError:
        path.unlink()
        return False
    running = _alive(info.server_pid) or any(_alive(pid) for pid in info.workers())
    _stop_all(info)
    path.unlink(missing_ok=True)
    return running


def platform_json(info: PlatformInfo) -> str:
    return json.dumps(info.model_dump(mode="json"), indent=2)
