"""Who may see, run and publish what; tokens that must not work."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import PrefectClient

from accelerator_prefect import Accelerator, AccessDenied, InvalidConf, NotFound
from accelerator_prefect.directory import INVALID_TOKEN
from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ModelRepo
from tests.test_launch import count_runs

SCOPES = ["private", "project", "public", "link"]
# Who sees (and may run) a model of each scope, owned by alice in project demo.
ALLOWED = {
    "private": {"alice", "operator"},
    "project": {"alice", "bob", "operator"},
    "public": {"alice", "bob", "carol", "operator"},
    "link": {"alice", "operator"},
}


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


@pytest.fixture(scope="module")
def scoped(
    acc: Accelerator, team: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """One echo model per scope, owned by alice in project demo: scope -> model name."""
    models = {}
    for scope in SCOPES:
        name = f"echo-{scope}-{uuid.uuid4().hex[:6]}"
        repo = ModelRepo(tmp_path_factory.mktemp(scope), name).echo()
        manifest = repo.manifest.read_text().replace("owner: alice", f"owner: {team['alice-name']}")
        repo.write(
            f"deployments/{name}.yaml", manifest.replace("scope: project", f"scope: {scope}")
        )
        repo.commit(f"{name} 1.0.0")
        acc.publish(repo.manifest)
        models[scope] = name
    return models


def _client(platform: PlatformInfo, team: dict[str, str], who: str) -> Accelerator:
    if who == "operator":
        return Accelerator.connect(platform.api_url, user="operator")
    return Accelerator.connect(platform.api_url, token=team[who])


@pytest.mark.parametrize("who", ["alice", "bob", "carol", "operator"])
def test_each_scope_is_seen_and_run_by_exactly_whom_it_says(
    platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str], who: str
) -> None:
    with _client(platform, team, who) as client:
        listed = {m.name for m in client.catalog()}
        for scope, model in scoped.items():
            allowed = who in ALLOWED[scope]
            assert (model in listed) is allowed, (scope, who)
            before = count_runs(platform.api_url, f"{model}@1.0.0")
            if allowed:
                assert client.get(model).latest.parameter_schema["properties"]["conf"]
                # Visible, so the launch reaches validation (refused: nothing runs).
                with pytest.raises(InvalidConf):
                    client.launch(model, conf={"repeat": 99})
            else:
                # Invisible: the same answer as a model that does not exist.
                for probe in (client.get, client.launch):
                    with pytest.raises(NotFound) as hidden:
                        probe(model)
                    assert str(hidden.value) == (
                        f"model {model!r} not found (see `acc list` for the hosted models)"
                    )
            assert count_runs(platform.api_url, f"{model}@1.0.0") == before


def test_a_project_member_runs_a_project_model(
    platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str]
) -> None:
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        assert bob.user == team["bob-name"]
        run = bob.launch(scoped["project"], conf={"message": "hi"})
        assert run.wait(timeout=120) == "Completed", "\n".join(run.logs())
        assert f"acc:user:{team['bob-name']}" in run._flow_run().tags
        assert bob.run(str(run.id)).logs()

    # The launcher, the model's owner and operators read the run; nobody else finds it.
    for who, sees in (("alice", True), ("carol", False), ("operator", True)):
        with _client(platform, team, who) as client:
            if sees:
                assert client.run(str(run.id)).state == "Completed"
            else:
                with pytest.raises(NotFound, match="not found"):
                    client.run(str(run.id))


def test_only_authors_publish_their_own_models_into_their_projects(
    platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    repo = ModelRepo(tmp_path / "m", f"echo-{uuid.uuid4().hex[:6]}").echo()
    repo.write(
        f"deployments/{repo.name}.yaml",
        repo.manifest.read_text().replace("owner: alice", f"owner: {team['alice-name']}"),
    )
    repo.commit("1.0.0")
    for who in ("bob", "carol"):  # a member, and an author of another project
        with (
            Accelerator.connect(platform.api_url, token=team[who]) as client,
            pytest.raises(AccessDenied, match="may not publish"),
        ):
            client.publish(repo.manifest)
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        assert alice.publish(repo.manifest).status == "created"


def test_bad_tokens_are_all_refused_the_same_way(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str]
) -> None:
    alice = team["alice"]
    _, id_part, secret = alice.split("_", 2)
    expired = acc.add_token(team["alice-name"], expires_in=timedelta(seconds=-1))
    revoked = acc.add_token(team["alice-name"])
    acc.revoke_token(revoked.split("_")[1])
    other_secret = team["bob"].split("_", 2)[2]
    for bad in (
        "acc_000000000000_" + "x" * 43,  # unknown
        f"acc_{id_part}_" + ("A" if secret[0] != "A" else "B") + secret[1:],  # wrong secret
        alice[:-1],  # truncated
        f"acc_{id_part}_{other_secret}",  # another user's secret on alice's id
        expired,
        revoked,
        "",
        "not a token",
    ):
        with pytest.raises(AccessDenied) as refused:
            Accelerator.connect(platform.api_url, token=bad)
        assert str(refused.value) == INVALID_TOKEN
    with Accelerator.connect(platform.api_url, token=alice) as ok:
        assert ok.user == team["alice-name"]


def test_tokens_are_stored_only_as_salted_hashes(
    platform: PlatformInfo, team: dict[str, str]
) -> None:
    async def everything() -> str:
        async with PrefectClient(platform.api_url) as client:
            return json.dumps([v.model_dump(mode="json") for v in await client.read_variables()])

    stored = asyncio.run(everything())
    for who in ("alice", "bob", "carol"):
        assert team[who].split("_", 2)[2] not in stored
        assert team[who] not in stored


def test_only_operators_manage_users(platform: PlatformInfo, team: dict[str, str]) -> None:
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        for attempt in (
            lambda: alice.add_user("mallory", {"demo": "author"}, operator=True),
            alice.users,
            lambda: alice.add_token(team["bob-name"]),
        ):
            with pytest.raises(AccessDenied, match="only an operator"):
                attempt()
