"""A PostgreSQL server of the test session's own, for the Prefect server to keep its data in.

Debian's ``postgresql`` (``.ci/run`` installs it), started on a loopback port in a temporary
data folder, with a password of its own. PostgreSQL refuses to run as root: as root, the
server runs as the unprivileged ``postgres`` user the package creates (or ``nobody``).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from accelerator_prefect import platform
from accelerator_prefect.platform import free_port

DATABASE = "prefect"
USER = "prefect"


@dataclass(frozen=True)
class Postgres:
    """A running server: its port and the URL of the ``prefect`` database on it."""

    port: int
    url: str

    def fresh_database(self, name: str) -> str:
        """The URL of a new, empty database ``name`` on this server, at Prefect's newest
        migration: a copy of a template database migrated once per server (a Prefect
        server migrating a new database itself spends seconds of CPU at each start)."""
        if self.port not in _MIGRATED:
            _sql(self, f'CREATE DATABASE "{TEMPLATE}" OWNER {USER}')
            with tempfile.TemporaryDirectory() as prefect_home:
                subprocess.run(
                    [sys.executable, "-c", platform._MIGRATE],
                    env={
                        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
                        "PREFECT_HOME": prefect_home,
                        "PREFECT_API_DATABASE_CONNECTION_URL": self._url_of(TEMPLATE),
                    },
                    check=True,
                    capture_output=True,
                    timeout=600,
                )
            _MIGRATED.add(self.port)
        _sql(self, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}" OWNER {USER}')
        return self._url_of(name)

    def _url_of(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{name}"


TEMPLATE = "acc_migrated"
_MIGRATED: set[int] = set()
"""The ports of the servers whose template database is migrated."""


def binaries() -> Path | None:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``), or ``None``."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _as_user() -> str | None:
    """The user the server runs as when this process is root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and no unprivileged user to run PostgreSQL as")


def _run(args: list[str], user: str | None, **kwargs: object) -> None:
    subprocess.run(
        args,
        check=True,
        capture_output=True,
        user=user,
        cwd="/",
        timeout=120,
        **kwargs,  # type: ignore[arg-type]
    )


def _sql(server: Postgres, statement: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        url = server.url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@contextmanager
def postgres_server(folder: Path, durable: bool = False) -> Iterator[Postgres]:
    """Start PostgreSQL with its data in ``folder`` (made here), on a free loopback port;
    stop it on exit. Unless ``durable``, it does not wait for the disk (tests throw their
    data away; a benchmark measuring what an installation would see asks for ``durable``)."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    user = _as_user()
    folder.mkdir(parents=True, exist_ok=True)
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    password = secrets.token_urlsafe(16)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (folder, sockets, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        # The server's user must reach its folder through the test session's temporary ones.
        for parent in folder.parents:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    _run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        ],
        user,
    )
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    log = str(folder / "log")
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start"], user)
    server = Postgres(port, f"postgresql+asyncpg://{USER}:{password}@127.0.0.1:{port}/{DATABASE}")
    try:
        admin = Postgres(port, server.url.rsplit("/", 1)[0] + "/postgres")
        _sql(admin, f"CREATE DATABASE {DATABASE} OWNER {USER}")
        yield server
    finally:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            user=user,
            cwd="/",
            timeout=60,
            check=False,
        )
