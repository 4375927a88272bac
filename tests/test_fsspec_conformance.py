"""``acc://`` against fsspec's own abstract test suite, on both backends.

fsspec ships the suite every filesystem should pass (``fsspec.tests.abstract``: copy,
get, put, open, pipe); its memory and local filesystems and s3fs run it by subclassing
the abstract classes with fixtures of their own, as here. The S3 backend declares what
object stores lack, as s3fs does: a folder exists only while a file is in it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from accelerator_prefect.storage import AccFileSystem
from tests.conftest import S3Server

PROJECT = "conformance"


class AccFixtures(AbstractFixtures):  # type: ignore[misc]
    """``acc://`` on a local folder and on a prefix of the session's moto bucket."""

    @pytest.fixture(params=["local", "s3"])
    def fs(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AccFileSystem]:
        if request.param == "local":
            yield AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
            return
        server: S3Server = request.getfixturevalue("s3_server")
        prefix = f"s3://{server.bucket}/conformance-{uuid.uuid4().hex[:10]}"
        yield AccFileSystem(root=prefix, storage_options=server.options)

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return lambda *parts: "/".join(parts)

    @pytest.fixture
    def fs_path(self) -> str:
        return PROJECT

    @pytest.fixture
    def supports_empty_directories(self, fs: AccFileSystem) -> bool:
        """Object stores keep no empty folders (s3fs declares the same)."""
        return not fs.is_object_store

    @pytest.fixture
    def local_path(self, tmp_path: Path) -> str:
        return str(tmp_path / "local")

    @pytest.fixture
    def local_join(self) -> Callable[..., str]:
        return os.path.join


class TestAccCopy(AbstractCopyTests, AccFixtures):  # type: ignore[misc]
    pass


class TestAccGet(AbstractGetTests, AccFixtures):  # type: ignore[misc]
    pass


class TestAccPut(AbstractPutTests, AccFixtures):  # type: ignore[misc]
    pass


class TestAccOpen(AbstractOpenTests, AccFixtures):  # type: ignore[misc]
    pass


class TestAccPipe(AbstractPipeTests, AccFixtures):  # type: ignore[misc]
    pass
