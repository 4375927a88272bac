"""Retention and storage quotas, on the session's platform: what a sweep deletes, what it
keeps and records; what a full area refuses, and who is told what."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from accelerator_prefect import Accelerator, AcceleratorError
from accelerator_prefect.errors import StorageQuotaExceeded, ValidationFailed
from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ModelRepo
from tests.test_cli import acc_cli
from tests.test_faults import until
from tests.test_launch import count_runs

pytestmark = pytest.mark.scale

WRITER_FLOW = """
import json

from accelerator_prefect import Conf, Output, jobflow


class WriterConf(Conf):
    label: str = "x"
    spoof: bool = False


@jobflow(name="writer")
def writer(conf: WriterConf, output: Output) -> dict:
    with output.open("table.csv", "w") as f:
        f.write("label,value\\n" + conf.label + ",1\\n")
    with output.open("parts/detail.txt", "w") as f:
        f.write("detail of " + conf.label)
    if conf.spoof:  # an author pretending retention deleted what the run wrote
        from prefect.runtime import flow_run

        fake = {"run": str(flow_run.id), "deleted": "2020-01-01T00:00:00+00:00",
                "files": 9, "bytes": 9, "reason": "a message of the author's"}
        with output.open("_EXPIRED.json", "w") as f:
            f.write(json.dumps(fake))
    return {"label": conf.label}
"""

WRITER_MANIFEST = """
name: {name}
title: Writer
version: 1.0.0
jobflow: flows/writer.py:writer
owner: operator
project: {project}
access:
  scope: project
"""


def writer_model(acc: Accelerator, folder: Path, project: str) -> str:
    name = f"writer-{uuid.uuid4().hex[:8]}"
    repo = ModelRepo(folder / name, name)
    repo.write("flows/writer.py", WRITER_FLOW)
    repo.write(f"deployments/{name}.yaml", WRITER_MANIFEST.format(name=name, project=project))
    repo.commit("writer")
    acc.publish(repo.manifest)
    return name


def project_name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:6]}"


def local_path(acc: Accelerator, uri: str) -> Path:
    root = acc._core.storage_fs()._local_root
    assert root is not None, "the session's storage is a local folder"
    return Path(root) / uri.removeprefix("acc://")


def test_outputs_past_their_projects_retention_go_with_a_record_and_provenance_stays(
    platform: PlatformInfo, acc: Accelerator, portal: str, tmp_path: Path
) -> None:
    brief, long = project_name("brief"), project_name("long")
    acc.set_policy(brief, keep_outputs="1 s")
    acc.set_policy(long, keep_outputs="30 d")
    name = f"ret-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(name, {brief: "member", long: "member"})
    short_model = writer_model(acc, tmp_path, brief)
    kept_model = writer_model(acc, tmp_path, long)
    shared, used = (f"acc://{brief}/{what}-{uuid.uuid4().hex[:6]}/" for what in ("s", "u"))
    with acc.storage.open(used + "notes.txt", "wb") as f:
        f.write(b"a colleague's notes")
    with Accelerator.connect(platform.api_url, token=token) as user:
        # A folder holding others' files is no run's to write (nor its retention's to empty).
        with pytest.raises(ValidationFailed, match="already holds files"):
            user.launch(short_model, conf={"label": "used"}, output=used)
        gone = user.launch(short_model, conf={"label": "gone"})
        kept = user.launch(kept_model, conf={"label": "kept", "spoof": True})
        beside = user.launch(short_model, conf={"label": "beside"}, output=shared)
        assert gone.wait(timeout=120) == "Completed"
        assert kept.wait(timeout=120) == "Completed"
        assert beside.wait(timeout=120) == "Completed"
        with acc.storage.open(shared + "notes.txt", "wb") as f:
            f.write(b"an operator's note, put there after the run")
        written = {f.path for f in gone.outputs()}
        assert written == {"table.csv", "parts/detail.txt"}
        hashes = {f.uri: f.sha256 for f in gone.provenance().outputs}

        # The sweep deletes the brief project's outputs once its run ended over 1 s ago.
        deleted: set[str | None] = set()

        def swept() -> bool:
            deleted.update(d.run for d in acc.sweep())
            return {str(gone.id), str(beside.id)} <= deleted

        until(swept, 60, "the outputs of the run past its retention deleted")
        assert gone.outputs() == []
        said = gone.outputs_expired
        assert said is not None and "2 output file(s)" in said and "1 s" in said, said
        assert brief in said
        # The run's history and provenance stay; its folder keeps only the records.
        assert gone.info().state == "Completed"
        assert {f.uri: f.sha256 for f in gone.provenance().outputs} == hashes
        folder = local_path(acc, str(gone.output_location))
        assert sorted(p.name for p in folder.iterdir()) == ["_EXPIRED.json", "provenance.json"]
        # Only what the run wrote went: not a file put beside it afterwards.
        left = beside.outputs()  # what is left is not the run's: shown altered
        assert [(f.path, f.altered) for f in left] == [("notes.txt", True)]
        assert beside.outputs_expired is not None
        assert acc.storage.exists(shared + "notes.txt")
        # The other project keeps its outputs for 30 days: nothing of them went, and what
        # its author wrote as _EXPIRED.json is not taken for the platform's word.
        assert {f.path for f in kept.outputs()} == {"table.csv", "parts/detail.txt"}
        assert kept.outputs_expired is None
        with kept.open_output("table.csv") as f:
            assert f.read() == b"label,value\nkept,1\n"

        # Users through the portal are told the same, in the same words.
        with Accelerator.connect(url=portal, token=token) as remote:
            far = remote.run(str(gone.id))
            assert far.outputs() == [] and far.outputs_expired == said

        # A rerun makes the outputs anew.
        again = user.rerun(str(gone.id))
        assert again.wait(timeout=120) == "Completed"
        assert {f.path for f in again.outputs()} == written

    # Recorded: in the model's audit log and in the operators' record of sweeps.
    def audited() -> dict[str, Any]:
        entries = [e for e in acc.audit(short_model) if e.action == "outputs-deleted"]
        return {e.details["run"]: e.details for e in entries} if len(entries) >= 2 else {}

    logged = until(audited, 30, "the deletions in the model's audit log")
    assert set(logged) == {str(gone.id), str(beside.id)}  # once each
    assert logged[str(gone.id)]["files"] == 2
    records = [
        json.loads(p.read_text())
        for p in local_path(acc, "acc://.platform/retention").glob("*.json")
    ]
    listed = [d for r in records for d in r["deleted"] if d.get("run") == str(gone.id)]
    assert len(listed) == 1 and listed[0]["kind"] == "outputs" and listed[0]["files"] == 2
    # The next sweep does not judge the same run again.
    assert not {str(gone.id), str(beside.id)} & {d.run for d in acc.sweep()}


def test_uploads_older_than_their_retention_go_and_newer_ones_stay(
    platform: PlatformInfo, acc: Accelerator
) -> None:
    project = project_name("uploads")
    acc.set_policy(project, keep_uploads="1 d")
    old, new = f"acc://{project}/uploads/old.csv", f"acc://{project}/uploads/sub/new.csv"
    elsewhere = f"acc://{project}/data/old.csv"  # not an upload: kept whatever its age
    for uri in (old, new, elsewhere):
        with acc.storage.open(uri, "wb") as f:
            f.write(b"a,b\n1,2\n")
    two_days_ago = time.time() - 2 * 86400
    for uri in (old, elsewhere):
        os.utime(local_path(acc, uri), (two_days_ago, two_days_ago))

    planned = [d for d in acc.sweep(dry_run=True) if project in d.uri]
    assert [(d.kind, d.uri) for d in planned] == [("upload", old)]
    assert acc.storage.exists(old), "a dry run deletes nothing"

    done = [d for d in acc.sweep() if project in d.uri]
    assert [(d.kind, d.uri) for d in done] == [("upload", old)]
    assert "1 d" in done[0].reason
    assert not acc.storage.exists(old)
    assert acc.storage.exists(new) and acc.storage.exists(elsewhere)

    # The CLI says what would go, in a table; nothing is left to go here.
    code, out = acc_cli(platform, "sweep", "--dry-run")
    assert code == 0, out
    assert old not in out


def test_a_full_area_refuses_uploads_and_launches_and_says_whose_quota(
    platform: PlatformInfo, acc: Accelerator, portal: str, tmp_path: Path
) -> None:
    project = project_name("quota")
    acc.set_policy(project, quota="1 KB")
    model = writer_model(acc, tmp_path, project)
    name = f"quota-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(name, {project: "member"})
    local = tmp_path / "600.csv"
    local.write_bytes(b"x" * 600)
    with Accelerator.connect(platform.api_url, token=token) as user:
        user.storage.put(local, f"acc://{project}/in/")  # 600 B of 1 KB
        with pytest.raises(StorageQuotaExceeded) as refused:
            user.storage.put(local, f"acc://{project}/more/")  # would be 1.2 KB
        said = str(refused.value)
        assert f"the project {project}" in said and "1 KB" in said and "600 B stored" in said
        assert not acc.storage.exists(f"acc://{project}/more/600.csv")

        # Through the portal, an upload announcing its size is refused before it is read.
        response = httpx.put(
            f"{portal}/api/v1/storage/file",
            params={"path": f"acc://{project}/more/600.csv"},
            content=b"y" * 600,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 507, response.text
        assert response.json()["type"] == "urn:acc:problem:storage-quota"
        assert f"the project {project}" in response.json()["detail"]
        assert not acc.storage.exists(f"acc://{project}/more/600.csv")

        # Sent without its size, it is cut off where the quota would be passed.
        def body() -> Iterator[bytes]:
            yield b"z" * 300
            yield b"z" * 300

        chunked = httpx.put(
            f"{portal}/api/v1/storage/file",
            params={"path": f"acc://{project}/more/chunked.csv"},
            content=body(),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert chunked.status_code == 507, chunked.text
        assert not acc.storage.exists(f"acc://{project}/more/chunked.csv")

        # Operators are not held: they fill the area; then even a small write is refused.
        acc.storage.put(local, f"acc://{project}/operator/")
        with (
            pytest.raises(StorageQuotaExceeded),
            user.storage.open(f"acc://{project}/tiny.txt", "wb") as f,
        ):
            f.write(b"1")
        usage = {u.area: u for u in user.storage_usage()}
        assert usage[f"acc://{project}/"].full and usage[f"acc://{project}/"].used == 1200

        # A launch whose outputs would go to the full area is refused, and makes no run.
        with pytest.raises(ValidationFailed) as launch:
            user.launch(model, conf={"label": "full"})
        assert any(
            p.startswith("output.location:") and f"the project {project}" in p
            for p in launch.value.problems
        ), launch.value.problems
        assert count_runs(platform.api_url, f"{model}@1.0.0") == 0

    # A user's own quota holds their own area.
    acc.set_user_quota(name, "500 B")
    with Accelerator.connect(url=portal, token=token) as remote:
        with pytest.raises(StorageQuotaExceeded) as own:
            remote.storage.put(local, f"acc://users/{name}/")
        assert f"{name}'s own area" in str(own.value) and "500 B" in str(own.value)


def test_retention_and_quotas_refuse_what_is_not_a_duration_or_a_size(
    platform: PlatformInfo, acc: Accelerator
) -> None:
    with pytest.raises(ValueError, match="keep_outputs"):
        acc.set_policy("somewhere", keep_outputs="3 weeks")
    with pytest.raises(ValueError, match="above 0"):
        acc.set_policy("somewhere", keep_outputs="0 s")
    # Only what is given changes; "default" hands one value back to the platform.
    project = project_name("merge")
    acc.set_policy(project, keep_outputs="90 d", quota="2 GB")
    acc.set_policy(project, keep_uploads="7 d")
    acc.set_policy(project, quota="default")
    (policy,) = [p for p in acc.policies() if p.name == project]
    assert (policy.keep_outputs, policy.keep_uploads, policy.quota) == ("90 d", "7 d", None)
    with pytest.raises((ValueError, AcceleratorError), match="quota"):
        acc.set_user_quota("operator", "lots")
    code, out = acc_cli(platform, "projects", "policy", "somewhere", "--quota", "big")
    assert code == 1
    assert "quota" in out and "expected a size" in out and "Traceback" not in out
    code, out = acc_cli(platform, "projects", "policy")
    assert code == 0 and "keeps outputs" in out
