from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from accelerator_prefect import Accelerator, AccessDenied, ManifestError, PublishError
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.transport import prefect_client
from tests.conftest import ECHO_FLOW, ModelRepo


def read_deployment(api_url: str, name: str) -> object:
    async def read() -> object:
        async with prefect_client(api_url) as client:
            return await client.read_deployment_by_name(f"echo/{name}")

    return asyncio.run(read())


def test_publish_creates_a_versioned_pinned_deployment(
    acc: Accelerator, platform: PlatformInfo, echo_repo: ModelRepo
) -> None:
    result = acc.publish(echo_repo.manifest)
    assert result.status == "created"
    head = echo_repo.repo.head.commit.hexsha
    assert result.commit == head and result.dirty is False

    deployment = read_deployment(platform.api_url, f"{echo_repo.name}@1.0.0")
    assert deployment.version == "1.0.0"  # type: ignore[attr-defined]
    assert "Says **what you ask**" in deployment.description  # type: ignore[attr-defined]
    assert deployment.enforce_parameter_schema is True  # type: ignore[attr-defined]
    assert deployment.work_pool_name == platform.work_pool  # type: ignore[attr-defined]
    assert {
        "acc:hosted",
        f"acc:model:{echo_repo.name}",
        "acc:version:1.0.0",
        "acc:owner:alice",
        "acc:project:demo",
        "acc:scope:project",
        "acc:status:active",
        "test",
    } <= set(deployment.tags)  # type: ignore[attr-defined]
    checkout = deployment.pull_steps[0]["accelerator_prefect.steps.checkout"]  # type: ignore[attr-defined]
    assert checkout["commit"] == head
    conf = deployment.parameter_openapi_schema["definitions"]["EchoConf"]  # type: ignore[attr-defined]
    assert conf["properties"]["repeat"]["maximum"] == 10


def test_republishing_unchanged_is_a_no_op(
    acc: Accelerator, platform: PlatformInfo, echo_repo: ModelRepo
) -> None:
    acc.publish(echo_repo.manifest)
    before = read_deployment(platform.api_url, f"{echo_repo.name}@1.0.0")
    echo_repo.write("README.md", "docs only\n")  # a commit that does not touch the jobflow
    echo_repo.commit("docs")
    assert acc.publish(echo_repo.manifest).status == "unchanged"
    after = read_deployment(platform.api_url, f"{echo_repo.name}@1.0.0")
    assert after.updated == before.updated  # type: ignore[attr-defined]
    assert after.pull_steps == before.pull_steps  # type: ignore[attr-defined]


def test_changing_code_under_a_published_version_is_refused(
    acc: Accelerator, platform: PlatformInfo, echo_repo: ModelRepo
) -> None:
    first = acc.publish(echo_repo.manifest)
    echo_repo.echo(version="1.0.0", code_version="v2")
    echo_repo.commit("new behaviour, same version")
    with pytest.raises(PublishError, match=r"already published with other code .* bump `version`"):
        acc.publish(echo_repo.manifest)
    deployment = read_deployment(platform.api_url, f"{echo_repo.name}@1.0.0")
    pinned = deployment.pull_steps[0]["accelerator_prefect.steps.checkout"]["commit"]  # type: ignore[attr-defined]
    assert pinned == first.commit

    replaced = acc.publish(echo_repo.manifest, force=True)
    assert replaced.status == "replaced" and replaced.commit != first.commit


def test_metadata_changes_update_the_deployment_and_keep_the_code_pin(
    acc: Accelerator, platform: PlatformInfo, echo_repo: ModelRepo
) -> None:
    first = acc.publish(echo_repo.manifest)
    text = echo_repo.manifest.read_text().replace("scope: project", "scope: public")
    echo_repo.manifest.write_text(text.replace("louder.", "louder, for everyone."))
    echo_repo.commit("open it up")
    result = acc.publish(echo_repo.manifest)
    assert result.status == "updated" and result.commit == first.commit
    deployment = read_deployment(platform.api_url, f"{echo_repo.name}@1.0.0")
    assert "acc:scope:public" in deployment.tags  # type: ignore[attr-defined]
    assert "for everyone" in deployment.description  # type: ignore[attr-defined]


def test_dirty_work_tree_is_refused_unless_allowed_and_then_recorded(
    acc: Accelerator, platform: PlatformInfo, echo_repo: ModelRepo
) -> None:
    (echo_repo.path / "flows" / "echo.py").write_text(
        (echo_repo.path / "flows" / "echo.py").read_text() + "\n# tweak\n"
    )
    with pytest.raises(
        PublishError, match=r"(?s)uncommitted changes.*--allow-dirty.*M flows/echo.py"
    ):
        acc.publish(echo_repo.manifest)
    assert acc.catalog() is not None
    assert all(m.name != echo_repo.name for m in acc.catalog())

    result = acc.publish(echo_repo.manifest, allow_dirty=True)
    assert result.dirty is True
    deployment = read_deployment(platform.api_url, f"{echo_repo.name}@1.0.0")
    assert "acc:dirty" in deployment.tags  # type: ignore[attr-defined]
    assert acc.get(echo_repo.name).versions[0].record.dirty is True


def test_unknown_work_pool_is_refused_with_a_hint(acc: Accelerator, echo_repo: ModelRepo) -> None:
    echo_repo.manifest.write_text(echo_repo.manifest.read_text() + "work_pool: gpu-pool\n")
    echo_repo.commit("pool")
    with pytest.raises(PublishError, match=r"work_pool: 'gpu-pool' does not exist"):
        acc.publish(echo_repo.manifest)


def test_missing_jobflow_file_is_a_manifest_error(acc: Accelerator, echo_repo: ModelRepo) -> None:
    echo_repo.manifest.write_text(
        echo_repo.manifest.read_text().replace("flows/echo.py", "flows/missing.py")
    )
    echo_repo.commit("typo")
    with pytest.raises(ManifestError, match=r"jobflow: flows/missing.py does not exist"):
        acc.publish(echo_repo.manifest)


def test_publishing_outside_git_is_refused(
    acc: Accelerator, echo_repo: ModelRepo, tmp_path: Path
) -> None:
    manifest = tmp_path / "elsewhere" / "m.yaml"
    manifest.parent.mkdir()
    manifest.write_text(echo_repo.manifest.read_text())
    with pytest.raises(PublishError, match="not inside a git repository"):
        acc.publish(manifest)


def test_a_conf_of_conf_publishes_without_warnings(acc: Accelerator, echo_repo: ModelRepo) -> None:
    assert acc.publish(echo_repo.manifest).warnings == ()


def test_a_conf_accepting_unknown_fields_is_published_with_a_warning_saying_what_to_do(
    acc: Accelerator, echo_repo: ModelRepo
) -> None:
    loose = ECHO_FLOW.format(code_version="v1").replace(
        "from accelerator_prefect import Conf,",
        "from pydantic import BaseModel as Conf\nfrom accelerator_prefect import",
    )
    echo_repo.write("flows/echo.py", loose)
    echo_repo.commit("a conf of plain pydantic")
    result = acc.publish(echo_repo.manifest)
    assert result.status == "created"
    assert result.warnings == (
        "conf: EchoConf accepts unknown fields, so a misspelt setting is ignored and the run "
        "uses its default; derive it from accelerator_prefect.Conf or set "
        "model_config = ConfigDict(extra='forbid')",
    )
    assert acc.publish(echo_repo.manifest).warnings == result.warnings  # said every time


def _hold_name(acc: Accelerator, tmp_path: Path, name: str, scope: str) -> None:
    """alice's model ``name`` in project demo, published by an operator."""
    held = ModelRepo(tmp_path / f"held-{scope}", name).echo()
    held.manifest.write_text(held.manifest.read_text().replace("scope: project", f"scope: {scope}"))
    held.commit("held")
    acc.publish(held.manifest)


def _claim(platform: PlatformInfo, tmp_path: Path, name: str, token: str, who: str) -> str:
    """What ``who`` (an author in project elsewhere) is told publishing ``name``."""
    claim = ModelRepo(tmp_path / f"claim-{who}", name).echo(version="2.0.0")
    text = claim.manifest.read_text().replace("owner: alice", f"owner: {who}")
    claim.manifest.write_text(text.replace("project: demo", "project: elsewhere"))
    claim.commit("claim")
    with (
        Accelerator.connect(platform.api_url, token=token) as author,
        pytest.raises(AccessDenied) as refused,
    ):
        author.publish(claim.manifest)
    return str(refused.value)


def test_a_name_held_by_a_model_one_may_not_see_is_refused_without_a_word_about_it(
    acc: Accelerator, platform: PlatformInfo, tmp_path: Path
) -> None:
    name = f"held-{uuid.uuid4().hex[:8]}"
    _hold_name(acc, tmp_path, name, "private")
    who = f"erin-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(who, {"elsewhere": "author"})
    message = _claim(platform, tmp_path, name, token, who)
    assert message.endswith(f"the name {name!r} cannot be used: choose another")
    assert "alice" not in message and "demo" not in message and "taken" not in message
    assert [v.version for v in acc.get(name).versions] == ["1.0.0"]


def test_a_name_held_by_a_model_one_may_see_names_its_holder(
    acc: Accelerator, platform: PlatformInfo, tmp_path: Path
) -> None:
    name = f"held-{uuid.uuid4().hex[:8]}"
    _hold_name(acc, tmp_path, name, "public")
    who = f"fred-{uuid.uuid4().hex[:6]}"
    _, token = acc.add_user(who, {"elsewhere": "author"})
    message = _claim(platform, tmp_path, name, token, who)
    assert f"the model name {name!r} is already taken by another owner or project " in message
    assert "(alice, in project demo); choose another name" in message
