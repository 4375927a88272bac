"""The database door: the Prefect server's PostgreSQL, knocked on as an attacker on the
same host would, without its password; and its password, looked for where it must not be."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ON_POSTGRES
from tests.postgres import USER, postgres_server

pytestmark = pytest.mark.scale


async def _connect(**kwargs: object) -> str:
    """``"open"`` if PostgreSQL let this connection in, else the kind of its refusal."""
    try:
        connection = await asyncpg.connect(timeout=10, **kwargs)  # type: ignore[arg-type]
    except (asyncpg.PostgresError, OSError) as exc:
        return type(exc).__name__
    await connection.close()
    return "open"


def test_postgresql_lets_in_only_who_holds_its_password(tmp_path: Path) -> None:
    with postgres_server(tmp_path / "pg") as server:
        password = server.url.split(":", 2)[2].split("@", 1)[0]
        sockets = str(tmp_path / "pg" / "sockets")
        tcp = {"host": "127.0.0.1", "port": server.port, "database": "prefect"}
        local = {"host": sockets, "port": server.port, "database": "prefect"}

        async def knock() -> dict[str, str]:
            return {
                "tcp, no password": await _connect(user=USER, **tcp),
                "tcp, wrong password": await _connect(user=USER, password="prefect", **tcp),
                "tcp, superuser": await _connect(user="postgres", **tcp),
                "socket, no password": await _connect(user=USER, **local),
                "socket, superuser": await _connect(user="postgres", **local),
                "tcp, its password": await _connect(user=USER, password=password, **tcp),
            }

        found = asyncio.run(knock())
    assert found.pop("tcp, its password") == "open"
    refused = {
        "InvalidPasswordError",
        "InvalidAuthorizationSpecificationError",
        "ClientConfigurationError",
    }
    assert all(answer in refused for answer in found.values()), found


@pytest.mark.skipif(not ON_POSTGRES, reason="the session's platform keeps its data in SQLite")
def test_the_database_password_reaches_the_prefect_server_alone(platform: PlatformInfo) -> None:
    environ = Path(f"/proc/{platform.server_pid}/environ").read_bytes().split(b"\0")
    name = b"PREFECT_API_DATABASE_CONNECTION_URL="
    url = next(v.removeprefix(name) for v in environ if v.startswith(name))
    password = url.split(b":", 2)[2].split(b"@", 1)[0]
    assert len(password) >= 16
    assert password not in Path(f"/proc/{platform.server_pid}/cmdline").read_bytes()
    others = [platform.portal_pid, platform.catalog_pid, *platform.workers()]
    for pid in filter(None, others):
        for part in ("environ", "cmdline"):
            assert password not in Path(f"/proc/{pid}/{part}").read_bytes(), (pid, part)
    for path in platform.home.rglob("*"):
        if path.is_file() and "logs" not in path.parts:
            assert password not in path.read_bytes(), path
    for log in (platform.home / "logs").glob("*.log"):
        assert password not in log.read_bytes(), log


def test_the_services_tuning_follows_the_servers_database(platform: PlatformInfo) -> None:
    """SQLite takes one writer at a time, PostgreSQL many: the platform's services launch
    one write at a time and retry a write SQLite could not lock only on SQLite."""
    expected = (
        {"ACC_LAUNCH_CONCURRENCY": "4", "PREFECT_CLIENT_RETRY_EXTRA_CODES": None}
        if ON_POSTGRES
        else {"ACC_LAUNCH_CONCURRENCY": "1", "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500"}
    )
    services = [platform.portal_pid, platform.catalog_pid, *platform.workers()]
    assert any(services)
    for pid in filter(None, services):
        pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        environ = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        assert {name: environ.get(name) for name in expected} == expected, pid
