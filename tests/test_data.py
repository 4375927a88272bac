"""Reference data with DVC: each version pins its data, on an S3 remote (moto) too."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import pytest
from dvc.repo import Repo as DvcRepo

from accelerator_prefect import Accelerator, PublishError
from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ModelRepo, S3Server, User

CALIBRATED_FLOW = """
from pathlib import Path

from accelerator_prefect import jobflow

FACTOR = Path(__file__).resolve().parents[1] / "ref" / "factor.txt"


@jobflow(name="calibrated")
def calibrated() -> str:
    return FACTOR.read_text().strip()
"""

MANIFEST = """
name: {name}
title: Calibrated
version: {version}
jobflow: flows/calibrated.py:calibrated
owner: alice
project: demo
access:
  scope: project
data: [ref/factor.txt]
"""


class DataRepo(ModelRepo):
    """A model repository whose jobflow reads a DVC-tracked file, kept on an S3 remote."""

    def __init__(self, path: Path, name: str, s3: S3Server) -> None:
        super().__init__(path, name)
        self.remote_url = f"s3://{s3.bucket}/dvc-{uuid.uuid4().hex[:8]}"
        DvcRepo.init(str(path))
        config = path / ".dvc" / "config"
        config.write_text(
            "[core]\n    remote = team\n    analytics = false\n"
            "['remote \"team\"']\n"
            f"    url = {self.remote_url}\n    endpointurl = {s3.endpoint}\n"
        )
        self.write("flows/calibrated.py", CALIBRATED_FLOW)

    def version(self, version: str, factor: str) -> str:
        """Track ``factor`` as the reference data of ``version`` (not pushed, not committed)."""
        self.write("ref/factor.txt", factor + "\n")
        with DvcRepo(str(self.path)) as dvc:
            dvc.add(str(self.path / "ref" / "factor.txt"))
        self.write(
            f"deployments/{self.name}.yaml", MANIFEST.format(name=self.name, version=version)
        )
        return hashlib.md5((factor + "\n").encode(), usedforsecurity=False).hexdigest()

    def push(self) -> None:
        with DvcRepo(str(self.path)) as dvc:
            dvc.push()

    def object_key(self, md5: str) -> str:
        return f"{self.remote_url}/files/md5/{md5[:2]}/{md5[2:]}"


@pytest.fixture
def data_repo(tmp_path: Path, s3_server: S3Server) -> DataRepo:
    return DataRepo(tmp_path / "models", f"calibrated-{uuid.uuid4().hex[:8]}", s3_server)


def test_a_version_pins_its_dvc_data_on_s3_and_later_pushes_do_not_change_it(
    acc: Accelerator,
    user: User,
    platform: PlatformInfo,
    data_repo: DataRepo,
    s3_server: S3Server,
) -> None:
    md5_v1 = data_repo.version("1.0.0", "1.5")
    data_repo.commit("1.0.0 with factor 1.5")

    # Not pushed yet: the version could never be run again, so it is not published.
    with pytest.raises(PublishError, match=r"data: ref/factor.txt not in the DVC remote s3://"):
        acc.publish(data_repo.manifest)
    data_repo.push()
    acc.publish(data_repo.manifest)
    record = user.acc.get(data_repo.name).versions[0].record
    assert [(d.path, d.md5) for d in record.data] == [("ref/factor.txt", md5_v1)]
    assert record.data_remote is not None
    assert record.data_remote.url == data_repo.remote_url
    assert record.data_remote.options == {"endpointurl": s3_server.endpoint}  # no credentials

    # New data pushed to the same path: 1.0.0 keeps its own, even fetched afresh.
    md5_v2 = data_repo.version("1.0.0", "2.5")
    data_repo.push()
    data_repo.commit("factor 2.5 under the same version")
    with pytest.raises(PublishError, match=r"already published with other data"):
        acc.publish(data_repo.manifest)
    # Published as the next version, the new data runs side by side with the old.
    data_repo.write(
        f"deployments/{data_repo.name}.yaml", MANIFEST.format(name=data_repo.name, version="1.1.0")
    )
    data_repo.commit("1.1.0")
    acc.publish(data_repo.manifest)
    shutil.rmtree(platform.home / "code")  # the worker's checkouts: the runs fetch afresh

    first = user.acc.launch(data_repo.name, version="1.0.0")
    newer = user.acc.launch(data_repo.name)
    assert first.wait(timeout=120) == "Completed", "\n".join(first.logs())
    assert first.result() == "1.5"
    assert [(d.path, d.md5) for d in first.provenance().data] == [("ref/factor.txt", md5_v1)]
    assert newer.wait(timeout=120) == "Completed"
    assert newer.result() == "2.5"
    assert user.acc.diff(str(first.id), str(newer.id)).data[0].model_dump() == {
        "what": "ref/factor.txt",
        "a": md5_v1,
        "b": md5_v2,
    }


def test_data_changed_in_the_remote_is_refused_before_the_jobflow_runs(
    acc: Accelerator, user: User, data_repo: DataRepo, s3_server: S3Server
) -> None:
    md5 = data_repo.version("1.0.0", "3.5")
    data_repo.commit("1.0.0")
    data_repo.push()
    acc.publish(data_repo.manifest)
    # Someone overwrites the object in the remote with other bytes.
    with s3_server.filesystem().open(data_repo.object_key(md5), "wb") as f:
        f.write(b"9.9\n")
    run = user.acc.launch(data_repo.name)
    assert run.wait(timeout=120) == "Failed"
    logs = "\n".join(run.logs())
    assert "cannot fetch ref/factor.txt from the DVC remote" in logs
    assert "does not match its hash" in logs


def test_a_path_dvc_does_not_track_is_refused(acc: Accelerator, data_repo: DataRepo) -> None:
    data_repo.version("1.0.0", "1.0")
    data_repo.write(
        f"deployments/{data_repo.name}.yaml",
        MANIFEST.format(name=data_repo.name, version="1.0.0").replace(
            "ref/factor.txt", "ref/missing.csv"
        ),
    )
    data_repo.commit("1.0.0")
    with pytest.raises(
        PublishError, match=r"data: ref/missing.csv is not tracked by DVC at commit"
    ):
        acc.publish(data_repo.manifest)
