"""One real Prefect server and one real worker for the whole test session.

The server runs on a free loopback port with its own home (PREFECT_HOME, SQLite,
acc:// storage) under a temporary folder, started and stopped the way `acc up`
and `acc down` do it. With ``ACC_TEST_DATABASE=postgresql`` (`make test-postgres`) it
keeps its data in a PostgreSQL server of the session's own instead, and so does every
platform a test starts through the ``databases`` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from git import Repo

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import (
    PlatformInfo,
    down,
    free_port,
    start_portal,
    stop_process,
    up,
)
from accelerator_prefect.storage import AccFileSystem

ROOT = Path(__file__).resolve().parents[1]

# pytest-xdist's workers start with COLUMNS=80, and Rich fixes a console's width when it
# is made (the CLI's, at import) if COLUMNS is set: the CLI tests set their own width.
os.environ.pop("COLUMNS", None)

ECHO_FLOW = """
from pydantic import Field

from accelerator_prefect import Conf, jobflow, routine

CODE_VERSION = "{code_version}"


class EchoConf(Conf):
    message: str = Field(default="hello", description="What to say.")
    repeat: int = Field(default=1, ge=1, le=10, description="How many times.")


@routine(retries=1)
def shout(conf: EchoConf) -> str:
    print(f"shouting {{conf.message!r}} x{{conf.repeat}}")
    return " ".join([conf.message.upper()] * conf.repeat)


@jobflow(name="echo")
def echo(conf: EchoConf) -> dict:
    return {{"code": CODE_VERSION, "text": shout(conf)}}
"""

ECHO_MANIFEST = """
name: {name}
title: Echo
description: |
  Says **what you ask**, louder.
version: {version}
jobflow: flows/echo.py:echo
owner: alice
project: demo
access:
  scope: project
tags: [test]
"""


@dataclass(frozen=True)
class S3Server:
    """moto in server mode: a real S3 HTTP endpoint on loopback."""

    endpoint: str
    bucket: str

    @property
    def options(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint}

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server process; its credentials and endpoint are in this process's
    environment, so the platform's worker (started later) inherits them too."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not _answers(endpoint):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"moto did not answer: {log.read_text()}"
        time.sleep(0.1)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            # moto is a local S3 stand-in: admit exactly its host:port for cloud inputs
            "ACC_CLOUD_HOSTS": json.dumps([f"127.0.0.1:{port}"]),
        }
    )
    server = S3Server(endpoint, "acc-test")
    server.filesystem().mkdir(server.bucket)
    yield server
    process.terminate()
    process.wait(timeout=10)


TABLES_FLOW = """
import os
import signal

from pydantic import Field

from accelerator_prefect import Conf, Inputs, Output, jobflow, routine


class TablesConf(Conf):
    fail_after: int = Field(default=0, ge=0, description="Fail after this many files (0: never).")
    crash: bool = Field(default=False, description="Die mid-write, as a killed process does.")


@routine
def count_rows(inputs: Inputs) -> dict[str, int]:
    rows = {{}}
    for f in inputs.files():
        with f.open("r") as stream:
            rows[f.relative] = sum(1 for _ in stream) - 1
    print(f"counted the rows of {{len(rows)}} file(s)")
    return rows


@routine
def write(conf: TablesConf, rows: dict[str, int], output: Output) -> None:
    for done, (name, count) in enumerate(sorted(rows.items()), 1):
        with output.open(name.replace("/", "_") + ".rows.txt", "w") as f:
            f.write(str(count))
        if done == conf.fail_after:
            raise RuntimeError("failing on purpose")
    if conf.crash:
        f = output.open("big.bin", "wb")
        f.write(b"x" * 1_000_000)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    with output.open("summary.csv", "w") as f:
        f.write("file,rows\\n" + "".join(f"{{k}},{{v}}\\n" for k, v in sorted(rows.items())))


@jobflow(name="tables")
def tables(conf: TablesConf, inputs: Inputs, output: Output) -> dict[str, int]:
    rows = count_rows(inputs)
    write(conf, rows, output)
    return rows
"""

TABLES_MANIFEST = """
name: {name}
title: Tables
version: {version}
jobflow: flows/tables.py:tables
owner: alice
project: demo
access:
  scope: project
inputs:
  min_files: 1
  max_files: 3
  accepted_types: [".csv"]
  sources: [{sources}]
  max_total_size: "1 KB"
{extra}
"""


@contextmanager
def pool_on_s3(
    platform: PlatformInfo, s3_server: S3Server, kind: str
) -> Iterator[tuple[Accelerator, str, str]]:
    """A work pool whose worker (``warm`` or ``process``) keeps acc:// in a fresh prefix of
    the S3 bucket, configured only through its environment (ACC_STORAGE_URL and
    ACC_STORAGE_OPTIONS, as on another machine); the operator's client on that storage,
    the pool's name and the prefix. The worker stops on exit."""
    from accelerator_prefect.client import AsyncAccelerator
    from accelerator_prefect.platform import _prepare, start_pool_worker, stop_process
    from accelerator_prefect.settings import Settings

    prefix = f"s3://{s3_server.bucket}/{kind}-{uuid.uuid4().hex[:6]}"
    settings = Settings(home=platform.home, storage_url=prefix, storage_options=s3_server.options)
    pool = f"acc-s3-{uuid.uuid4().hex[:6]}"
    client = Accelerator(
        AsyncAccelerator(platform.api_url, settings=settings, trusted_user="operator")
    )
    client._call(lambda c: _prepare(c, platform.home, pool, kind))
    env = {"ACC_STORAGE_URL": prefix, "ACC_STORAGE_OPTIONS": json.dumps(s3_server.options)}
    worker = start_pool_worker(platform.home, platform.api_url, pool, kind, env)
    try:
        yield client, pool, prefix
    finally:
        stop_process(worker)
        client.close()


ON_POSTGRES = os.environ.get("ACC_TEST_DATABASE", "sqlite").strip().lower() == "postgresql"
"""Whether the session's platforms keep their data in PostgreSQL (else SQLite)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "scale: the platform's scale-relevant paths (launch, access, bursts, faults, the "
        "portal); `make test-postgres` runs them on PostgreSQL too",
    )
    config.addinivalue_line(
        "markers",
        "benchmark: the benchmarks' smoke tests (every test of tests/test_benchmarks*.py: each "
        "benchmark end to end at a tiny size); `make test` runs them beside the groups",
    )
    config.addinivalue_line(
        "markers",
        "computes: a scale test whose time goes into a real model's own computing; the scale "
        "set on PostgreSQL leaves it out (the lighter launch tests do the same database work)",
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    """The tests of ``tests/test_benchmarks*.py`` are marked ``benchmark``."""
    if item.path.name.startswith("test_benchmarks"):
        item.add_marker(pytest.mark.benchmark)


# The longest modules, longest first (their seconds in a fresh clone's `make test` on 2
# cores, from its --durations=0; the benchmarks' smoke tests run beside the groups). In
# `make test`'s groups (`--dist loadfile --no-loadscope-reorder`) a group takes the next
# module whenever it is free: these go first, and the last modules either group takes are
# short, so neither waits long for the other at the end. pytest-xdist's own order (most
# tests first) put one-test modules of three or four minutes last. The modules that run
# `acc up` with the example models go first of all: they are done before the benchmarks'
# smoke tests start beside the groups. The other modules keep pytest-xdist's order.
LONGEST_FIRST = (
    "tests/e2e/test_wheel.py",  # ~450 s
    "tests/e2e/test_catalog_browser.py",  # ~420 s
    "tests/e2e/test_acc_up.py",  # ~220 s
    "tests/test_environments.py",  # ~300 s
    "tests/test_worker.py",  # ~300 s
    "tests/test_faults.py",  # ~130 s
    "tests/test_workers.py",  # ~115 s
    "tests/test_access.py",  # ~115 s
    "tests/test_launch.py",  # ~110 s
    "tests/e2e/test_catalog_errors.py",  # ~105 s (without the example models)
    "tests/e2e/test_embedding.py",  # ~100 s
    "tests/e2e/test_upgrade.py",  # ~100 s
    "tests/test_limits.py",  # ~95 s
    "tests/test_mapping.py",  # ~75 s
    "tests/test_catalog_ui.py",  # ~75 s
    "tests/e2e/test_first_hour.py",  # ~75 s (on the session platform)
    "tests/test_transfer.py",  # ~70 s
    "tests/test_publish_portal.py",  # ~70 s
    "tests/test_portal_schema.py",  # ~70 s
    "tests/test_fsspec_conformance.py",  # ~65 s
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist group, the modules of ``LONGEST_FIRST`` first, in its order; the
    others after, most tests first (pytest-xdist's own order). A module's tests keep their
    order. Elsewhere (one process) nothing changes."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    rank = {module: index for index, module in enumerate(LONGEST_FIRST)}
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for index, item in enumerate(items):
        module = item.nodeid.split("::")[0]
        first.setdefault(module, index)
        count[module] = count.get(module, 0) + 1

    def order(item: pytest.Item) -> tuple[int, int, int]:
        module = item.nodeid.split("::")[0]
        if module in rank:
            return (0, rank[module], 0)
        return (1, -count[module], first[module])

    items.sort(key=order)  # stable: within a module, the order pytest gave


@pytest.fixture(autouse=True)
def _main_module_kept() -> Iterator[None]:
    """Each test ends with the process's ``__main__`` it began with: Streamlit's AppTest runs
    a page as ``__main__`` and leaves it there, and a later test in the same process that
    spawns Python processes (Dask's nanny) would have each child run that page again."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str | None]]:
    """``databases(name)``: the database URL for a new platform, a fresh database of its
    own on the session's PostgreSQL server; ``None`` (SQLite in the platform's home)
    unless the session runs on PostgreSQL."""
    if not ON_POSTGRES:
        yield lambda _name: None
        return
    from tests.postgres import postgres_server

    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield lambda name: server.fresh_database(f"{name}_{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="session")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
    s3_server: S3Server,
    databases: Callable[[str], str | None],
) -> Iterator[PlatformInfo]:
    home = tmp_path_factory.mktemp("acc-home")
    with acc_home(home):
        info, _ = up(
            home,
            port=free_port(),
            examples=[],
            catalog_port=None,
            portal_port=None,
            database=databases("platform"),
        )
        yield info
        down(home)


@contextmanager
def acc_home(home: Path) -> Iterator[None]:
    """``ACC_HOME`` is ``home`` in this process while in the block (it reads acc:// outputs
    like the platform's worker), and what it was before afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACC_HOME", str(home))
        yield


@pytest.fixture(params=["local", "s3"])
def acc_fs(request: pytest.FixtureRequest, tmp_path: Path) -> AccFileSystem:
    """acc:// storage on each backend: a local folder, and a prefix in a moto bucket."""
    if request.param == "local":
        return AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
    server: S3Server = request.getfixturevalue("s3_server")
    prefix = f"s3://{server.bucket}/{uuid.uuid4().hex[:10]}"
    return AccFileSystem(root=prefix, storage_options=server.options)


@pytest.fixture(scope="session")
def acc(platform: PlatformInfo) -> Iterator[Accelerator]:
    """The operator's client, in-process: straight to the Prefect API, as the platform's own
    services and its operators have it."""
    with Accelerator.connect(platform.api_url) as client:
        yield client


@pytest.fixture(scope="session")
def portal(platform: PlatformInfo) -> Iterator[str]:
    """The portal (its URL), served for the session's platform with the shipped settings."""
    pid, url = start_portal(platform.home, platform.api_url, free_port())
    yield url
    stop_process(pid)


@dataclass(frozen=True)
class User:
    """A user of the platform who is not an operator: ``name``, holding ``token``, and their
    client ``acc`` reaching the platform ``via`` the portal or in-process."""

    name: str
    token: str
    via: str
    acc: Accelerator


# On PostgreSQL, through the portal only: its requests run the in-process client's code
# (the same reads and writes to the same database), so the in-process pass would repeat
# them; on SQLite, both.
VIAS = ["portal"] if ON_POSTGRES else ["python", "portal"]


@pytest.fixture(scope="session", params=VIAS)
def user(
    request: pytest.FixtureRequest, platform: PlatformInfo, acc: Accelerator
) -> Iterator[User]:
    """An author in project ``demo`` (where the test models live), with a personal token.

    Each test taking it runs twice: with the client in-process (``python``: straight to the
    Prefect API, as the platform's services have it) and over HTTP through the portal
    (``portal``: as every user has it; ``Accelerator.connect(url=…, token=…)``), the same
    methods and the same rules.
    """
    name = f"user-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(name, {"demo": "author"})
    if request.param == "portal":
        client = Accelerator.connect(url=request.getfixturevalue("portal"), token=token)
    else:
        client = Accelerator.connect(platform.api_url, token=token)
    with client:
        yield User(name, token, request.param, client)


class ModelRepo:
    """A real git repository holding one hosted model, as an author keeps it."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.repo = Repo.init(path)
        with self.repo.config_writer() as config:
            config.set_value("user", "name", "Test Author")
            config.set_value("user", "email", "author@example.invalid")

    @property
    def manifest(self) -> Path:
        return self.path / "deployments" / f"{self.name}.yaml"

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())

    def echo(self, version: str = "1.0.0", code_version: str = "v1") -> ModelRepo:
        self.write("flows/echo.py", ECHO_FLOW.format(code_version=code_version))
        self.write(
            f"deployments/{self.name}.yaml", ECHO_MANIFEST.format(name=self.name, version=version)
        )
        return self

    def tables(
        self, version: str = "1.0.0", sources: str = "storage", extra: str = ""
    ) -> ModelRepo:
        """A model counting the rows of the CSV files it is given, writing one file each."""
        self.write("flows/tables.py", TABLES_FLOW.format())
        self.write(
            f"deployments/{self.name}.yaml",
            TABLES_MANIFEST.format(name=self.name, version=version, sources=sources, extra=extra),
        )
        return self

    def commit(self, message: str = "update") -> str:
        self.repo.git.add(A=True)
        return self.repo.index.commit(message).hexsha


@pytest.fixture
def echo_repo(tmp_path: Path) -> ModelRepo:
    """A committed repository with an `echo-<random>` model at 1.0.0."""
    repo = ModelRepo(tmp_path / "models", f"echo-{uuid.uuid4().hex[:8]}").echo()
    repo.commit("echo 1.0.0")
    return repo


@pytest.fixture(scope="module")
def team(acc: Accelerator) -> dict[str, str]:
    """Tokens of alice (author in demo), bob (member of demo), carol (in another project)."""
    suffix = uuid.uuid4().hex[:6]
    names = {"alice": f"alice-{suffix}", "bob": f"bob-{suffix}", "carol": f"carol-{suffix}"}
    tokens = {}
    for who, projects in (
        ("alice", {"demo": "author"}),
        ("bob", {"demo": "member"}),
        ("carol", {"elsewhere": "author"}),
    ):
        _, tokens[who] = acc.add_user(names[who], projects)
    return {**tokens, **{f"{who}-name": name for who, name in names.items()}}
