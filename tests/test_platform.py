from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from accelerator_prefect import Accelerator, PlatformError
from accelerator_prefect.platform import PlatformInfo, free_port, start_server


def test_a_server_that_cannot_start_is_explained_with_its_log(tmp_path: Path) -> None:
    # The server's home is a file, so it cannot create its database there.
    (tmp_path / "prefect").write_text("not a folder")
    with pytest.raises(PlatformError) as error:
        start_server(tmp_path, free_port(), deadline=120)
    message = str(error.value)
    assert "the Prefect server exited with code" in message
    assert "server.log" in message
    assert len(message.splitlines()) > 2  # the last lines of the log follow


def test_a_new_homes_database_is_a_private_copy_at_prefects_newest_migration(
    tmp_path: Path,
) -> None:
    """A new home starts from an empty database Prefect's migrations already made (its
    server would otherwise migrate one at every first start); a home's own database is
    never replaced."""
    import re
    import sqlite3

    import prefect

    from accelerator_prefect.platform import _seed_sqlite

    db = tmp_path / "prefect" / "prefect.db"
    _seed_sqlite(db)
    assert db.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in db.parent.iterdir()] == ["prefect.db"]  # no partial file left
    versions = Path(prefect.__file__).parent / "server/database/_migrations/versions/sqlite"
    revisions, downs = set(), set()
    for migration in versions.glob("*.py"):
        text = migration.read_text()
        revisions |= set(re.findall(r'^revision = "(\w+)"', text, re.M))
        downs |= set(re.findall(r'^down_revision = "(\w+)"', text, re.M))
    (newest,) = revisions - downs
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (newest,)
        ]
        assert connection.execute("SELECT count(*) FROM flow_run").fetchone() == (0,)
        connection.execute("CREATE TABLE mine (x)")
    _seed_sqlite(db)
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT name FROM sqlite_master WHERE name = 'mine'").fetchone()


def test_the_platforms_home_and_what_its_processes_create_are_private(
    platform: object, acc: object
) -> None:
    """On a host other people use, nothing of the platform is theirs to read: the home is
    0700, and its database, logs and a run's outputs are its user's alone."""
    from accelerator_prefect import Accelerator
    from accelerator_prefect.platform import PlatformInfo

    assert isinstance(platform, PlatformInfo) and isinstance(acc, Accelerator)
    home = platform.home
    assert home.stat().st_mode & 0o777 == 0o700
    created = [
        *sorted((home / "logs").glob("*.log")),
        *sorted((home / "prefect").glob("*.db")),
        home / "storage",
        home / "logs",
        home / "results",
    ]
    assert len(created) >= 3
    for path in created:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name}: {oct(path.stat().st_mode)}"


def test_acc_up_brings_a_pool_made_by_an_earlier_release_up_to_date(
    platform: PlatformInfo, acc: Accelerator
) -> None:
    """A process pool made before its command applied the runs' limits, and before a
    variable this release uses, gets both from `acc up`; what its operator changed stays."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    from accelerator_prefect.platform import _prepare

    pool = f"acc-old-{uuid.uuid4().hex[:6]}"
    old = ProcessWorker.get_default_base_job_template()  # Prefect's own command
    del old["variables"]["properties"]["env"]  # a variable an earlier release lacked
    del old["job_configuration"]["env"]
    old["variables"]["properties"]["stream_output"]["default"] = False  # the operator's
    made = WorkPoolCreate(name=pool, type="process", base_job_template=old)
    acc._call(lambda c: c.create_work_pool(made))

    acc._call(lambda c: _prepare(c, platform.home, pool, "process"))
    template = acc._call(lambda c: c.read_work_pool(pool)).base_job_template
    properties = template["variables"]["properties"]
    assert "accelerator_prefect.zygote --engine" in properties["command"]["default"]
    assert "env" in properties and template["job_configuration"]["env"] == "{{ env }}"
    assert properties["stream_output"]["default"] is False
    acc._call(lambda c: _prepare(c, platform.home, pool, "process"))  # once up to date: kept
    assert acc._call(lambda c: c.read_work_pool(pool)).base_job_template == template


def test_a_start_that_fails_half_way_leaves_nothing_running(tmp_path: Path) -> None:
    """`acc up` whose portal cannot be served (its port taken) says so, and stops the
    server and the worker it had started: no process outlives the failure."""
    import socket

    from accelerator_prefect.platform import down, read_platform, up

    home, port = tmp_path / "home", free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        portal_port = taken.getsockname()[1]
        with pytest.raises(PlatformError, match=f"port {portal_port} .* --portal-port"):
            up(home, port=port, examples=[], catalog_port=None, portal_port=portal_port)
    assert read_platform(home) is None
    left = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _mentions(p, str(home))]
    assert left == [], "processes of the failed start are still running"
    assert not down(home)


def _mentions(process: Path, text: str) -> bool:
    """Whether the process's command line or environment names ``text``."""
    try:
        seen = [(process / part).read_bytes() for part in ("cmdline", "environ")]
    except OSError:
        return False
    return any(text.encode() in found for found in seen)


def test_acc_up_says_that_prefects_process_worker_keeps_runs_from_nothing() -> None:
    """With ``ACC_WORKER=process`` runs hold the worker's access and reach its home: the
    notice at every start says so, not what only the warm worker does."""
    from accelerator_prefect.platform import trust_notice

    said = trust_notice("process")
    assert "the worker's access to Prefect and to storage (the process worker)" in said
    assert "its home within reach" in said and "host only code you trust" in said
    assert "run-scoped proxy" not in said and "Landlock" not in said
    assert "run-scoped proxy" in trust_notice("warm")
