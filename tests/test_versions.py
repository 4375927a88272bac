"""Versions side by side, and their lifecycle: active → deprecated → archived → restored."""

from __future__ import annotations

import asyncio
import re
import uuid
import warnings
from collections.abc import Iterator

import pytest

from accelerator_prefect import Accelerator, AccessDenied, NotFound, VersionArchived
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.transport import prefect_client
from tests.conftest import ModelRepo, User
from tests.test_cli import acc_cli
from tests.test_launch import PORTAL_ONLY, connect_like, count_runs


@pytest.fixture(scope="module")
def tokens(acc: Accelerator) -> dict[str, str]:
    """alice owns the echo models (author in demo); bob is a member of demo; dave is not."""
    suffix = uuid.uuid4().hex[:6]
    _, alice = acc.add_user("alice", {"demo": "author"})
    _, bob = acc.add_user(f"bob-{suffix}", {"demo": "member"})
    _, dave = acc.add_user(f"dave-{suffix}", {"elsewhere": "author"})
    return {"alice": alice, "bob": bob, "dave": dave}


@pytest.fixture
def two_versions(acc: Accelerator, echo_repo: ModelRepo) -> Iterator[ModelRepo]:
    """echo at 1.0.0 (code v1) and 1.1.0 (code v2), both published."""
    acc.publish(echo_repo.manifest)
    echo_repo.echo(version="1.1.0", code_version="v2")
    echo_repo.commit("1.1.0")
    acc.publish(echo_repo.manifest)
    yield echo_repo


def deployment(api_url: str, model: str, version: str) -> object:
    async def read() -> object:
        async with prefect_client(api_url) as client:
            return await client.read_deployment_by_name(f"echo/{model}@{version}")

    return asyncio.run(read())


@PORTAL_ONLY  # in-process too: test_launch_takes_the_newest_version_unless_one_is_named
def test_publishing_the_next_version_never_changes_what_the_previous_one_runs(
    acc: Accelerator, echo_repo: ModelRepo, user: User
) -> None:
    first = acc.publish(echo_repo.manifest)
    echo_repo.echo(version="2.0.0", code_version="v2")
    second_commit = echo_repo.commit("2.0.0: new behaviour")
    second = acc.publish(echo_repo.manifest)
    assert first.commit != second.commit == second_commit

    # Both run after 2.0.0 is published, while the work tree holds 2.0.0's code.
    old, new = user.acc.launch(echo_repo.name, version="1.0.0"), user.acc.launch(echo_repo.name)
    assert old.wait(timeout=120) == "Completed" and new.wait(timeout=120) == "Completed"
    assert old.result()["code"] == "v1"
    assert new.result()["code"] == "v2"


def test_a_deprecated_version_still_runs_but_warns_and_names_its_replacement(
    acc: Accelerator, platform: PlatformInfo, two_versions: ModelRepo, user: User
) -> None:
    name = two_versions.name
    moved = acc.deprecate(name, "1.0.0")
    assert moved.status.value == "deprecated" and moved.record.replaced_by == "1.1.0"
    assert "acc:status:deprecated" in deployment(platform.api_url, name, "1.0.0").tags  # type: ignore[attr-defined]

    with pytest.warns(DeprecationWarning, match=rf"{name}@1.0.0 is deprecated: use version 1.1.0"):
        run = user.acc.launch(name, version="1.0.0")
    # A launch without a version takes the newest active one, and does not warn.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        newest = user.acc.launch(name)
    assert run.wait(timeout=120) == "Completed" and newest.wait(timeout=120) == "Completed"
    assert run.result()["code"] == "v1" and newest.result()["code"] == "v2"
    tags = set(_tags(platform, str(run.id)))
    assert {"acc:deprecated", "acc:replaced-by:1.1.0"} <= tags

    # The catalog lists the model at its newest active version; both versions stay readable;
    # republishing the manifest does not undo the deprecation.
    listed = next(m for m in user.acc.catalog() if m.name == name)
    assert [(v.version, v.status.value) for v in listed.versions] == [("1.1.0", "active")]
    assert [(v.version, v.status.value) for v in user.acc.get(name).versions] == [
        ("1.1.0", "active"),
        ("1.0.0", "deprecated"),
    ]
    two_versions.repo.git.checkout("HEAD~1")  # back at 1.0.0's commit
    assert acc.publish(two_versions.manifest).status in {"unchanged", "updated"}
    assert user.acc.get(name).versions[1].status.value == "deprecated"

    code, out = acc_cli(platform, "run", name, "--version", "1.0.0")
    assert code == 0, out
    assert f"warning: {name}@1.0.0 is deprecated: use version 1.1.0 instead" in out


def _tags(platform: PlatformInfo, run_id: str) -> list[str]:
    async def read() -> list[str]:
        async with prefect_client(platform.api_url) as client:
            return list((await client.read_flow_run(uuid.UUID(run_id))).tags)

    return asyncio.run(read())


def test_an_archived_version_is_hidden_refused_and_its_history_stays_readable(
    acc: Accelerator, platform: PlatformInfo, two_versions: ModelRepo, user: User
) -> None:
    name = two_versions.name
    earlier = user.acc.launch(name, version="1.0.0")
    assert earlier.wait(timeout=120) == "Completed"

    acc.archive(name, "1.0.0")
    assert deployment(platform.api_url, name, "1.0.0").paused is True  # type: ignore[attr-defined]
    listed = next(m for m in user.acc.catalog() if m.name == name)
    assert [v.version for v in listed.versions] == ["1.1.0"]
    assert [v.version for v in user.acc.get(name).versions] == ["1.1.0", "1.0.0"]

    before = count_runs(platform.api_url, f"{name}@1.0.0")
    with pytest.raises(VersionArchived) as refused:
        user.acc.launch(name, version="1.0.0")
    assert str(refused.value) == (
        f"{name}@1.0.0 is archived: it takes no new runs (its runs and outputs stay "
        "readable); launch version 1.1.0, the newest active one"
    )
    assert count_runs(platform.api_url, f"{name}@1.0.0") == before

    # Its history is still there.
    again = user.acc.run(str(earlier.id))
    assert again.state == "Completed" and again.result()["code"] == "v1"
    assert any("shouting" in line for line in again.logs())
    assert str(earlier.id) in {r.id for r in user.acc.runs(name)}

    # Archiving every version hides the model from the catalog.
    acc.archive(name, "1.1.0")
    assert name not in {m.name for m in user.acc.catalog()}

    acc.restore(name, "1.0.0")
    assert deployment(platform.api_url, name, "1.0.0").paused is False  # type: ignore[attr-defined]
    assert [m.latest.version for m in user.acc.catalog() if m.name == name] == ["1.0.0"]
    run = user.acc.launch(name)  # 1.0.0 is the only active version now
    assert run.wait(timeout=120) == "Completed" and run.result()["code"] == "v1"


def test_versions_lists_status_publication_commit_and_run_counts(
    acc: Accelerator, platform: PlatformInfo, two_versions: ModelRepo, user: User
) -> None:
    name = two_versions.name
    assert user.acc.launch(name).wait(timeout=120) == "Completed"
    acc.deprecate(name, "1.0.0")
    infos = user.acc.versions(name)
    assert [(i.version, i.status.value, i.replaced_by, i.runs) for i in infos] == [
        ("1.1.0", "active", None, 1),
        ("1.0.0", "deprecated", "1.1.0", 0),
    ]
    assert infos[0].commit == two_versions.repo.head.commit.hexsha

    code, out = acc_cli(platform, "versions", name)
    assert code == 0, out
    assert re.search(r"1\.1\.0\s+│\s+active\s+│.*│\s+" + infos[0].commit[:12] + r"\s+│\s+1", out)
    assert re.search(r"1\.0\.0\s+│\s+deprecated → 1\.1\.0\s+│", out)

    code, out = acc_cli(platform, "archive", name, "1.0.0")
    assert code == 0 and f"{name}@1.0.0 is now archived" in out
    code, out = acc_cli(platform, "run", name, "--version", "1.0.0")
    assert code == 1 and "is archived: it takes no new runs" in out
    code, out = acc_cli(platform, "restore", name, "1.0.0")
    assert code == 0 and f"{name}@1.0.0 is now active" in out
    code, out = acc_cli(platform, "deprecate", name, "1.0.0", "--replaced-by", "9.9.9")
    assert code == 1 and "version '9.9.9' not found (published: 1.1.0, 1.0.0)" in out


def test_only_the_owner_or_an_operator_moves_a_version(
    acc: Accelerator, two_versions: ModelRepo, tokens: dict[str, str], user: User
) -> None:
    name = two_versions.name
    # Neither an author of the project who does not own the model, nor a member.
    with pytest.raises(AccessDenied, match="only its owner or an operator"):
        user.acc.deprecate(name, "1.0.0")
    with pytest.raises(AccessDenied, match="only its owner or an operator"):
        user.acc.archive(name, "1.1.0")
    with connect_like(user, tokens["bob"]) as bob:
        with pytest.raises(AccessDenied, match="only its owner or an operator"):
            bob.deprecate(name, "1.0.0")
        with pytest.raises(AccessDenied):
            bob.archive(name, "1.1.0")
    with (
        connect_like(user, tokens["dave"]) as dave,
        pytest.raises(NotFound, match=f"model '{name}' not found"),
    ):
        dave.archive(name, "1.0.0")  # a project model is invisible outside the project
    with connect_like(user, tokens["alice"]) as alice:
        assert alice.deprecate(name, "1.0.0").status.value == "deprecated"
        assert alice.restore(name, "1.0.0").status.value == "active"
    assert [v.status.value for v in acc.get(name).versions] == ["active", "active"]
