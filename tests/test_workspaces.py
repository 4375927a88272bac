"""A project bound to its own Prefect API: one catalog, publish and runs on its server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

from accelerator_prefect import Accelerator, NotFound
from accelerator_prefect.platform import PlatformInfo, down, free_port, up
from accelerator_prefect.settings import get_settings
from accelerator_prefect.transport import prefect_client
from tests.conftest import ModelRepo


@pytest.fixture(scope="module")
def far_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformInfo]:
    """A second, separate Prefect server with its own worker: another workspace."""
    home = tmp_path_factory.mktemp("far-home")
    info, _ = up(home, port=free_port(), examples=[], catalog_port=None, portal_port=None)
    yield info
    down(home)


def _deployments(server: PlatformInfo, name: str) -> int:
    auth_string = get_settings(home=server.home).service_auth_string()

    async def count() -> int:
        async with prefect_client(server.api_url, auth_string=auth_string) as client:
            found = await client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
            )
            return len(found)

    return asyncio.run(count())


def test_a_project_bound_to_another_server_publishes_and_runs_there_in_one_catalog(
    acc: Accelerator,
    platform: PlatformInfo,
    far_server: PlatformInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    project, author, member, outsider = (f"{w}-{suffix}" for w in ("far", "dora", "erin", "finn"))
    # A client that read the bindings before the project was bound, and would keep them
    # for the whole test.
    monkeypatch.setattr("accelerator_prefect.client.BINDINGS_TTL", 3600.0)
    _, wren_token = acc.add_user(f"wren-{suffix}", {project: "member"})
    wren = Accelerator.connect(platform.api_url, token=wren_token)
    browser = Accelerator.connect(platform.api_url, token=wren_token)
    assert f"echo-far-{suffix}" not in {m.name for m in wren.catalog()}
    assert f"echo-far-{suffix}" not in {m.name for m in browser.catalog()}
    far_auth = get_settings(home=far_server.home).service_auth_string()
    acc.bind_project(project, far_server.api_url, credential=far_auth)
    _, dora_token = acc.add_user(author, {project: "author"})
    _, erin_token = acc.add_user(member, {project: "member"})
    _, finn_token = acc.add_user(outsider, {})

    repo = ModelRepo(tmp_path / "far", f"echo-far-{suffix}").echo()
    manifest = repo.manifest.read_text()
    manifest = manifest.replace("owner: alice", f"owner: {author}")
    repo.write(
        f"deployments/{repo.name}.yaml", manifest.replace("project: demo", f"project: {project}")
    )
    repo.commit("far 1.0.0")
    deployment = f"{repo.name}@1.0.0"
    with Accelerator.connect(platform.api_url, token=dora_token) as dora:
        assert dora.publish(repo.manifest).status == "created"
    # Published on the project's own server, not on the home one.
    assert _deployments(far_server, deployment) == 1
    assert _deployments(platform, deployment) == 0
    # Asked for by name, the model is looked for again in the workspaces bound since.
    with wren:
        assert wren.get(repo.name).latest.workspace == far_server.api_url
    # Once the bindings a client holds are old enough, its catalog lists the new workspace.
    monkeypatch.setattr("accelerator_prefect.client.BINDINGS_TTL", 0.0)
    with browser:
        listed = {m.name: m for m in browser.catalog()}
        assert listed[repo.name].latest.workspace == far_server.api_url

    with Accelerator.connect(platform.api_url, token=erin_token) as erin:
        listed = {m.name: m for m in erin.catalog()}
        assert listed[repo.name].latest.workspace == far_server.api_url
        run = erin.launch(repo.name, {"message": "far away"})
        assert run.workspace == far_server.api_url
        assert run.url.startswith(far_server.ui_url)
        assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
        assert any("shouting 'far away'" in line for line in run.logs())
        assert run.result()["text"] == "FAR AWAY"
        assert [r.id for r in erin.runs(repo.name)] == [str(run.id)]

    # Operators see both servers' models in one catalog, and the run by its id alone.
    names = {m.name for m in acc.catalog()}
    assert repo.name in names
    assert acc.run(str(run.id)).state == "Completed"
    # Access rules hold across workspaces: an outsider finds neither model nor run.
    with Accelerator.connect(platform.api_url, token=finn_token) as finn:
        assert repo.name not in {m.name for m in finn.catalog()}
        with pytest.raises(NotFound):
            finn.run(str(run.id))
        with pytest.raises(NotFound):
            finn.launch(repo.name)
