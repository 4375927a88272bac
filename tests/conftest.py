"""One real Prefect server and one real process worker for the whole test session.

The server runs on a free loopback port with its own home (PREFECT_HOME, SQLite,
acc:// storage) under a temporary folder, started and stopped the way `acc up`
and `acc down` do it.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from git import Repo

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import PlatformInfo, down, free_port, up

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformInfo]:
    home = tmp_path_factory.mktemp("acc-home")
    previous = os.environ.get("ACC_HOME")
    os.environ["ACC_HOME"] = str(home)  # this process reads acc:// outputs like the worker
    info, _ = up(home, port=free_port(), examples=[])
    yield info
    down(home)
    if previous is None:
        os.environ.pop("ACC_HOME", None)
    else:
        os.environ["ACC_HOME"] = previous


@pytest.fixture(scope="session")
def acc(platform: PlatformInfo) -> Iterator[Accelerator]:
    with Accelerator.connect(platform.api_url, user="operator") as client:
        yield client


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

    def commit(self, message: str = "update") -> str:
        self.repo.git.add(A=True)
        return self.repo.index.commit(message).hexsha


@pytest.fixture
def echo_repo(tmp_path: Path) -> ModelRepo:
    """A committed repository with an `echo-<random>` model at 1.0.0."""
    repo = ModelRepo(tmp_path / "models", f"echo-{uuid.uuid4().hex[:8]}").echo()
    repo.commit("echo 1.0.0")
    return repo
