"""Who may see, run and publish what; tokens that must not work."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from accelerator_prefect import Accelerator, AccessDenied, InvalidInputs, NotFound
from accelerator_prefect.directory import GUEST_ENDED, INVALID_LINK, INVALID_TOKEN, create_link
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.settings import get_settings
from accelerator_prefect.transport import prefect_client
from tests.conftest import VIAS, ModelRepo
from tests.test_cli import acc_cli
from tests.test_launch import count_runs

pytestmark = pytest.mark.scale  # run on PostgreSQL too (make test-postgres)

SCOPES = ["private", "project", "public", "link"]


NOTE_FLOW = """
from pydantic import Field

from accelerator_prefect import Conf, Output, jobflow, routine


class NoteConf(Conf):
    text: str = Field(default="hello", max_length=40, description="What to write down.")


@routine
def write(conf: NoteConf, output: Output) -> None:
    print(f"writing {conf.text!r}")
    with output.open("note.txt", "w") as f:
        f.write(conf.text)


@jobflow(name="note")
def note(conf: NoteConf, output: Output) -> None:
    write(conf, output)
"""

NOTE_MANIFEST = """
name: {name}
title: Note ({scope})
version: {version}
jobflow: flows/note.py:note
owner: {owner}
project: demo
access:
  scope: {scope}
"""

GUESTS = ["guest-valid", "guest-revoked", "guest-none"]
PEOPLE = ["alice", "bob", "carol", "operator", *GUESTS]
ACTIONS = ["list", "schema", "launch", "read run", "read logs", "read outputs"]
# What each principal may do with a model of each scope owned by alice (author in
# demo): bob is a member of demo, carol of another project; a guest holds a link
# to the model. "read …" of someone else's run: alice's (only she and operators);
# each principal reads the run they launched themselves whenever they may launch.
SEE_AND_RUN = {
    "private": {"alice", "operator"},
    "project": {"alice", "bob", "operator", "guest-valid"},
    "public": {"alice", "bob", "carol", "operator", "guest-valid"},
    "link": {"alice", "operator", "guest-valid"},
}


def _note_model(
    acc: Accelerator, folder: Path, scope: str, owner: str, version: str = "1.0.0"
) -> str:
    name = f"note-{scope}-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(folder, name)
    repo.write("flows/note.py", NOTE_FLOW)
    repo.write(
        f"deployments/{name}.yaml",
        NOTE_MANIFEST.format(name=name, scope=scope, owner=owner, version=version),
    )
    repo.commit(f"{name} {version}")
    acc.publish(repo.manifest)
    return name


@pytest.fixture(scope="module")
def scoped(
    acc: Accelerator, team: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """One note model per scope, owned by alice in project demo: scope -> model name."""
    return {
        scope: _note_model(acc, tmp_path_factory.mktemp(scope), scope, team["alice-name"])
        for scope in SCOPES
    }


@pytest.fixture(scope="module")
def links(
    platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Per scope, a valid and a revoked link token, shared by alice."""

    async def stale_link(model: str) -> str:
        # A private model cannot be shared; this link is one left from before it was made
        # private, straight in the directory.
        async with prefect_client(platform.api_url) as client:
            _, token = await create_link(client, model, version=None, created_by="alice")
            return token

    tokens: dict[str, dict[str, str]] = {}
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        for scope, model in scoped.items():
            if scope == "private":
                tokens[scope] = {"valid": asyncio.run(stale_link(model))}
                tokens[scope]["revoked"] = asyncio.run(stale_link(model))
                alice.revoke_link(tokens[scope]["revoked"].split("_")[1])
                continue
            valid, revoked = alice.share_link(model), alice.share_link(model)
            alice.revoke_link(revoked.id)
            assert valid.url and valid.token and valid.url.endswith(f"link={valid.token}")
            tokens[scope] = {"valid": valid.url, "revoked": str(revoked.token)}
    return tokens


@pytest.fixture(scope="module", params=VIAS)
def via(request: pytest.FixtureRequest) -> str | None:
    """How principals reach the platform: in-process (``None``), or through a real portal
    (its URL), with the same rules."""
    return None if request.param == "python" else str(request.getfixturevalue("portal"))


def _connect(
    platform: PlatformInfo,
    team: dict[str, str],
    links: dict[str, dict[str, str]],
    who: str,
    scope: str,
    portal: str | None = None,
) -> Accelerator | None:
    """A client for ``who`` (through ``portal`` if given), or ``None`` when they cannot even
    connect."""
    where: dict[str, Any] = {"url": portal} if portal else {"api_url": platform.api_url}
    if who == "operator":
        operator = get_settings(home=platform.home).operator_token_file.read_text().strip()
        return Accelerator.connect(**where, token=operator if portal else None)
    if who in team:
        return Accelerator.connect(**where, token=team[who])
    link = {"guest-valid": links[scope]["valid"], "guest-revoked": links[scope]["revoked"]}
    try:
        return Accelerator.connect(**where, link=link.get(who, "https://catalog/?model=x"))
    except AccessDenied as refused:
        assert str(refused) == INVALID_LINK
        return None


def _reads(client: Accelerator, run_id: str) -> set[str]:
    """Which of read run / logs / outputs ``client`` may do on run ``run_id``."""
    try:
        handle = client.run(run_id)
    except NotFound:
        return set()
    done = set()
    if handle.state == "Completed":
        done.add("read run")
    if any("writing" in line for line in handle.logs()):
        done.add("read logs")
    if [o.path for o in handle.outputs()] == ["note.txt"]:
        done.add("read outputs")
    return done


@pytest.fixture(scope="module")
def matrix(
    platform: PlatformInfo,
    team: dict[str, str],
    scoped: dict[str, str],
    links: dict[str, dict[str, str]],
    via: str | None,
) -> dict[tuple[str, str], dict[str, set[str]]]:
    """Every scope x principal: what they did to the model, alice's run and their own run,
    in-process and again through the portal.

    Launches are real; every run launched is waited for before anything is read.
    """
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        owners_runs = {scope: alice.launch(model) for scope, model in scoped.items()}
        for run in owners_runs.values():
            assert run.wait(timeout=180) == "Completed", "\n".join(run.logs())
    results: dict[tuple[str, str], dict[str, set[str]]] = {}
    launched = {}
    for scope, model in scoped.items():
        for who in PEOPLE:
            client = _connect(platform, team, links, who, scope, via)
            done: dict[str, set[str]] = {"model": set(), "theirs": set(), "own": set()}
            results[scope, who] = done
            if client is None:
                continue
            if model in {m.name for m in client.catalog()}:
                done["model"].add("list")
            try:
                if client.get(model).latest.parameter_schema["properties"]["conf"]:
                    done["model"].add("schema")
            except NotFound:
                pass
            try:
                launched[scope, who] = (client, client.launch(model, {"text": who}))
                done["model"].add("launch")
            except NotFound:
                pass
            if who != "alice":
                done["theirs"] = _reads(client, str(owners_runs[scope].id))
    for (scope, who), (client, run) in launched.items():
        assert run.wait(timeout=240) == "Completed", (scope, who, "\n".join(run.logs()))
        results[scope, who]["own"] = _reads(client, str(run.id))
    return results


@pytest.mark.parametrize("who", PEOPLE)
@pytest.mark.parametrize("scope", SCOPES)
def test_each_scope_is_seen_run_and_read_by_exactly_whom_it_says(
    matrix: dict[tuple[str, str], dict[str, set[str]]], scope: str, who: str
) -> None:
    allowed = who in SEE_AND_RUN[scope]
    done = matrix[scope, who]
    assert done["model"] == ({"list", "schema", "launch"} if allowed else set())
    reads = {"read run", "read logs", "read outputs"}
    # Someone else's run (alice's) is read only by operators; alice reads her own.
    if who != "alice":
        assert done["theirs"] == (reads if who == "operator" else set())
    # Whoever may launch reads their own run: state, logs and outputs.
    assert done["own"] == (reads if allowed else set())


def test_hidden_models_are_not_found_exactly_like_missing_ones(
    platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str]
) -> None:
    with Accelerator.connect(platform.api_url, token=team["carol"]) as carol:
        for model in (scoped["private"], scoped["project"], scoped["link"], "no-such-model"):
            for probe in (carol.get, carol.launch):
                with pytest.raises(NotFound) as hidden:
                    probe(model)
                assert str(hidden.value) == (
                    f"model {model!r} not found (see `acc list` for the hosted models)"
                )


def test_a_hidden_model_costs_the_server_what_a_missing_one_does(
    platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str]
) -> None:
    """Looking up a model one may not see sends the same requests as looking up one that
    does not exist, and gets the same answers: the server filters by the tags the asker
    may see, so none of the hidden model's versions is read. (The timing itself is
    measured by `python -m benchmarks.hidden_models`.)"""
    # carol is in another project; bob is a member of the models' project, which opens
    # its project models to him, not its private or link ones.
    for who, hidden in (("carol", ("private", "project", "link")), ("bob", ("private", "link"))):
        with Accelerator.connect(platform.api_url, token=team[who]) as asker:
            missing = _exchanges(asker, "warm-up")  # the first lookup reads who is asking too
            missing = _exchanges(asker, f"missing-{uuid.uuid4().hex[:8]}")
            assert any("/deployments/filter" in path for _, path, _, _ in missing)
            for scope in hidden:
                assert _exchanges(asker, scoped[scope]) == missing, (who, scope)


def _exchanges(asker: Accelerator, model: str) -> list[tuple[str, str, int, int]]:
    """What ``asker``'s lookups of ``model`` (``get``, then ``launch``; each must find
    nothing) send to the server and get back: method, path, status and size, sorted."""
    seen: list[tuple[str, str, int, int]] = []

    async def record(response: Any) -> None:
        await response.aread()
        path = response.request.url.path.replace(model, "<model>")
        if path.endswith("/variables/filter"):
            return  # the project bindings: read again by age (10 s), not by model
        seen.append((response.request.method, path, response.status_code, len(response.content)))

    async def hook(client: Any) -> None:
        client._client.event_hooks["response"].append(record)

    async def unhook(client: Any) -> None:
        client._client.event_hooks["response"].remove(record)

    asker._call(hook)
    try:
        for probe in (asker.get, asker.launch):
            with pytest.raises(NotFound):
                probe(model)
    finally:
        asker._call(unhook)
    return sorted(seen)


def _client(platform: PlatformInfo, team: dict[str, str], who: str) -> Accelerator:
    if who == "operator":
        return Accelerator.connect(platform.api_url)
    return Accelerator.connect(platform.api_url, token=team[who])


def test_a_project_member_runs_a_project_model(
    platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str]
) -> None:
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        assert bob.user == team["bob-name"]
        run = bob.launch(scoped["project"], conf={"text": "hi"})
        assert run.wait(timeout=120) == "Completed", "\n".join(run.logs())
        assert run.info().tags["user"] == team["bob-name"]
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
        async with prefect_client(platform.api_url) as client:
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
            alice.projects,
            lambda: alice.bind_project("demo", "http://127.0.0.1:9/api"),
        ):
            with pytest.raises(AccessDenied, match="only an operator"):
                attempt()


def test_a_link_opens_one_model_until_revoked_and_a_pinned_link_one_version(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    model = _note_model(acc, tmp_path / "v1", "link", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        link = alice.share_link(model, version="1.0.0")
        assert [(x.id, x.version, x.active, x.token) for x in alice.links(model)] == [
            (link.id, "1.0.0", True, None)  # the token is shown once, never listed
        ]
        guest = Accelerator.connect(platform.api_url, link=str(link.url))
        assert guest.principal.guest
        assert [m.name for m in guest.catalog()] == [model]
        run = guest.launch(model, {"text": "from a guest"})
        assert run.wait(timeout=120) == "Completed"
        tags = run.info().tags
        assert tags["via"] == "link" and tags["link"] == link.id
        # Each guest run writes to a scratch folder of its own, in its guest's area.
        area = f"acc://links/{link.id}/{guest.guest_session.guest}/"
        assert guest.guest_session.area == area
        assert run.output_location == f"{area}runs/{run.id}/"
        assert [r.id for r in guest.runs()] == [str(run.id)]
        scratch = f"{area}runs/{run.id}/"
        assert [e.name for e in guest.storage.ls(scratch)] == ["note.txt", "provenance.json"]
        with pytest.raises(InvalidInputs, match="a guest's results go to a scratch folder"):
            guest.launch(model, output="acc://demo/elsewhere/")

        alice.revoke_link(link.id)
        # The very next request with the link is refused, whatever it asks.
        for attempt in (
            guest.catalog,
            lambda: guest.run(str(run.id)),
            lambda: run.state,
            lambda: guest.storage.ls(scratch),
        ):
            with pytest.raises(AccessDenied) as refused:
                attempt()
            assert str(refused.value) == GUEST_ENDED
        assert [x.active for x in alice.links(model)] == [False]
        with pytest.raises(AccessDenied, match="invalid, expired or revoked"):
            _ = Accelerator.connect(platform.api_url, link=str(link.url)).principal


def _put(storage: Any, data: bytes, uri: str) -> None:
    with storage.open(uri, "wb") as f:
        f.write(data)


def _read(storage: Any, uri: str) -> bytes:
    with storage.open(uri, "rb") as f:
        return bytes(f.read())


def test_two_guests_of_one_link_each_see_only_their_own_runs_and_files(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    """A widget on a public site: every visitor holds the same link. Each is a guest of
    their own; the link's owner sees all their runs."""
    model = _note_model(acc, tmp_path / "m", "link", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        link = alice.share_link(model)
    first = Accelerator.connect(platform.api_url, link=str(link.url))
    second = Accelerator.connect(platform.api_url, link=str(link.url))
    assert first.principal.guest and second.principal.guest
    assert first.principal.name != second.principal.name
    one, two = first.guest_session, second.guest_session
    assert one is not None and two is not None and one.area != two.area
    _put(first.storage, b"mine", f"{one.area}uploads/private.txt")
    run = first.launch(model, {"text": "visitor one"})
    assert run.wait(timeout=120) == "Completed"

    # The other visitor finds none of it: runs, the run by id, files, the link's folder.
    assert second.runs() == []
    with pytest.raises(NotFound):
        second.run(str(run.id))
    for path in (
        f"{one.area}uploads/private.txt",
        f"{one.area}runs/{run.id}/note.txt",
        f"acc://links/{link.id}/",
    ):
        with pytest.raises((AccessDenied, NotFound)):
            _read(second.storage, path) if path.endswith(".txt") else second.storage.ls(path)
    with pytest.raises((AccessDenied, InvalidInputs)):
        _put(second.storage, b"overwritten", f"{one.area}uploads/private.txt")
    with pytest.raises(InvalidInputs, match="inputs"):
        second.launch(model, inputs=[f"{one.area}uploads/private.txt"])
    assert _read(first.storage, f"{one.area}uploads/private.txt") == b"mine"

    # The same guest again, from its token (a reload, a new tab): its run is still there.
    again = Accelerator.connect(platform.api_url, link=one.token)
    assert again.principal.name == first.principal.name
    assert [r.id for r in again.runs()] == [str(run.id)]
    assert again.run(str(run.id)).outputs()
    # A guest token is not a link: it opens no guest session of its own.
    with pytest.raises(AccessDenied):
        again.exchange_link()

    # The link's owner sees every guest's runs.
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        assert str(run.id) in {r.id for r in alice.runs(model=model)}
        assert alice.run(str(run.id)).outputs()


def test_a_guest_session_ends_with_its_links_retention_and_its_area_is_removed(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from accelerator_prefect.directory import exchange_link

    model = _note_model(acc, tmp_path / "m", "link", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        link = alice.share_link(model, guest_days=2)
    assert link.guest_days == 2 and link.token

    async def session_begun(days_ago: float) -> str:
        async with prefect_client(platform.api_url) as client:
            at = datetime.now(UTC) - timedelta(days=days_ago)
            token, _, _ = await exchange_link(client, str(link.token), at=at)
            return token

    old, recent = asyncio.run(session_begun(3)), asyncio.run(session_begun(1))
    with pytest.raises(AccessDenied, match="guest session has ended"):
        _ = Accelerator.connect(platform.api_url, link=old).principal
    current = Accelerator.connect(platform.api_url, link=recent)
    area = f"acc://{current.principal.own_area}/"
    _put(current.storage, b"kept", f"{area}uploads/a.txt")
    stale = area.replace(recent.split("_")[2], old.split("_")[2])
    _put(acc.storage, b"expired", f"{stale}uploads/a.txt")  # as the guest had left it

    assert acc.sweep_guest_areas() == [stale]
    assert not acc.storage.exists(stale)
    assert _read(current.storage, f"{area}uploads/a.txt") == b"kept"
    # A forged guest token (another guest id, the signature of one that exists) opens nothing.
    parts = recent.split("_")
    forged = "_".join([*parts[:2], parts[2][:8] + "0" * 8, parts[3]])
    with pytest.raises(AccessDenied, match="guest session has ended"):
        _ = Accelerator.connect(platform.api_url, link=forged).principal


def test_a_link_pinned_to_a_version_opens_no_other(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    model = _note_model(acc, tmp_path / "m", "link", team["alice-name"])
    repo = ModelRepo(tmp_path / "m", model)
    repo.write(
        f"deployments/{model}.yaml",
        repo.manifest.read_text().replace("version: 1.0.0", "version: 2.0.0"),
    )
    repo.commit("2.0.0")
    acc.publish(repo.manifest)
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        pinned = alice.share_link(model, version="1.0.0")
        expired = alice.share_link(model, expires_in=timedelta(seconds=-1))
    guest = Accelerator.connect(platform.api_url, link=str(pinned.token))
    assert [v.version for v in guest.get(model).versions] == ["1.0.0"]
    # The catalog lists 2.0.0 to everyone else, and to the guest the one version they hold.
    assert [(m.name, m.latest.version) for m in guest.catalog()] == [(model, "1.0.0")]
    assert {m.name: m.latest.version for m in acc.catalog()}[model] == "2.0.0"
    with pytest.raises(NotFound, match=r"version '2\.0\.0' not found"):
        guest.launch(model, version="2.0.0")
    with pytest.raises(AccessDenied, match="invalid, expired or revoked"):
        Accelerator.connect(platform.api_url, link=str(expired.url))


def test_the_catalog_lists_each_model_at_the_newest_version_its_reader_may_see(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    """1.0.0 is public, 2.0.0 private: the owner is offered 2.0.0, everyone else 1.0.0,
    and 2.0.0 stays unknown to them."""
    model = _note_model(acc, tmp_path / "m", "public", team["alice-name"])
    repo = ModelRepo(tmp_path / "m", model)
    text = repo.manifest.read_text().replace("version: 1.0.0", "version: 2.0.0")
    repo.write(f"deployments/{model}.yaml", text.replace("scope: public", "scope: private"))
    repo.commit("2.0.0, private")
    acc.publish(repo.manifest)

    def listed(token: str) -> list[tuple[str, str]]:
        with Accelerator.connect(platform.api_url, token=token) as reader:
            return [(m.name, m.latest.version) for m in reader.catalog() if m.name == model]

    assert listed(team["alice"]) == [(model, "2.0.0")]
    assert listed(team["bob"]) == [(model, "1.0.0")]
    assert listed(team["carol"]) == [(model, "1.0.0")]
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        assert [v.version for v in bob.get(model).versions] == ["1.0.0"]

    # Archiving the public version takes the model out of the others' catalog.
    acc.archive(model, "1.0.0")
    assert listed(team["bob"]) == []
    assert listed(team["alice"]) == [(model, "2.0.0")]


def test_only_the_owner_or_an_operator_shares_and_never_a_private_model(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str]
) -> None:
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        with pytest.raises(AccessDenied, match="only its owner or an operator"):
            bob.share_link(scoped["project"])
        with pytest.raises(NotFound):
            bob.share_link(scoped["private"])  # he cannot even see it
        assert bob.links() == []
    with pytest.raises(AccessDenied, match="is private, so a link would open nothing"):
        acc.share_link(scoped["private"])
    assert acc.share_link(scoped["public"]).url


def test_inputs_and_outputs_stay_in_your_projects_and_your_own_area(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    model = _note_model(acc, tmp_path / "pub", "public", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["carol"]) as carol:
        # Not a member of demo: the default output moves to carol's own area.
        run = carol.launch(model, {"text": "mine"})
        assert run.output_location == (
            f"acc://users/{team['carol-name']}/results/{model}/1.0.0/{run.id}/"
        )
        before = count_runs(platform.api_url, f"{model}@1.0.0")
        for output in ("acc://demo/results/mine/", f"acc://users/{team['bob-name']}/x/"):
            with pytest.raises(InvalidInputs) as refused:
                carol.launch(model, output=output)
            assert refused.value.problems == [
                f"output.location: {output} is outside the storage you may use "
                f"(acc://elsewhere/, acc://users/{team['carol-name']}/)"
            ]
        assert count_runs(platform.api_url, f"{model}@1.0.0") == before
        # The same rule in storage itself, decided on the path alone.
        source = tmp_path / "data.csv"
        source.write_text("a,b\n1,2\n")
        with pytest.raises(AccessDenied, match="outside the storage you may use"):
            carol.storage.put(source, "acc://demo/incoming/")
        with pytest.raises(AccessDenied, match="outside the storage you may use"):
            carol.storage.ls("acc://demo/")
        own = f"acc://users/{team['carol-name']}/incoming/"
        assert [e.name for e in carol.storage.put(source, own)] == ["data.csv"]
        assert run.wait(timeout=120) == "Completed"
        assert [o.path for o in run.outputs()] == ["note.txt"]


def test_an_owner_sees_every_run_of_their_models_and_others_only_their_own(
    platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str]
) -> None:
    model = scoped["public"]
    with Accelerator.connect(platform.api_url, token=team["carol"]) as carol:
        mine = carol.launch(model, {"text": "carol"})
        assert mine.wait(timeout=120) == "Completed"
        assert {r.user for r in carol.runs(model)} == {team["carol-name"]}
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        runs = {r.id: r for r in alice.runs(model)}
        assert str(mine.id) in runs
        seen = runs[str(mine.id)]
        assert (seen.user, seen.version, seen.state) == (team["carol-name"], "1.0.0", "Completed")
        assert seen.duration is not None and seen.duration > 0
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        assert str(mine.id) not in {r.id for r in bob.runs(model)}


def test_the_storage_root_is_listed_by_use_but_never_read_or_removed(
    platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        assert {e.name for e in bob.storage.ls("acc://")} <= {"demo"}
        for attempt in (
            lambda: bob.storage.files("acc://"),
            lambda: bob.storage.get("acc://", tmp_path / "everything"),
            lambda: bob.storage.rm("acc://", recursive=True),
            lambda: bob.storage.info("acc://users"),
            lambda: bob.storage.exists(f"acc://users/{team['carol-name']}/"),
        ):
            with pytest.raises(AccessDenied, match="outside the storage you may use"):
                attempt()
        assert not (tmp_path / "everything").exists()


def test_a_model_name_belongs_to_its_owner_and_project(
    platform: PlatformInfo, team: dict[str, str], scoped: dict[str, str], tmp_path: Path
) -> None:
    """carol, an author elsewhere, cannot add a version to alice's model."""
    repo = ModelRepo(tmp_path / "takeover", scoped["public"])
    repo.write("flows/note.py", NOTE_FLOW)
    manifest = NOTE_MANIFEST.format(
        name=scoped["public"], scope="public", owner=team["carol-name"], version="9.0.0"
    )
    repo.write(f"deployments/{scoped['public']}.yaml", manifest.replace("demo", "elsewhere"))
    repo.commit("9.0.0")
    with (
        Accelerator.connect(platform.api_url, token=team["carol"]) as carol,
        pytest.raises(AccessDenied, match="already taken by another owner or project"),
    ):
        carol.publish(repo.manifest)
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        assert [v.version for v in bob.get(scoped["public"]).versions] == ["1.0.0"]


def test_a_cloud_url_into_storage_obeys_the_same_areas() -> None:
    from accelerator_prefect.access import Principal, Role
    from accelerator_prefect.launch import area_problems
    from accelerator_prefect.storage import AccFileSystem

    fs = AccFileSystem(root="s3://bucket/acc", storage_options={"anon": True})
    bob = Principal("bob", {"demo": Role.member})
    chosen = {
        "inputs": {
            "selected_files": [
                "s3://bucket/acc/users/carol/secret.csv",  # carol's area, by its S3 name
                "s3://bucket/acc/demo/ok.csv",  # his project: fine
                "s3://bucket/other/x.csv",  # outside storage: the mapping decides
            ]
        }
    }
    assert area_problems(bob, chosen, fs) == [
        "inputs.selected_files[0]: s3://bucket/acc/users/carol/secret.csv lies in acc:// "
        "storage outside what you may use (acc://demo/, acc://users/bob/)"
    ]
    # '..' climbing out of an area he may use, or out of a sample he may read, is nowhere
    # he may use: where it lands is the backend's to say.
    climbing = {"inputs": {"selected_files": ["s3://bucket/acc/demo/../users/carol/secret.csv"]}}
    assert len(area_problems(bob, climbing, fs)) == 1
    assert len(area_problems(bob, climbing, fs, samples=("demo/",))) == 1


def test_revoking_a_link_one_may_not_manage_answers_as_for_one_that_does_not_exist(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    """bob sees alice's model but does not manage it: revoking its link must not tell him
    that the id he tried exists."""
    model = _note_model(acc, tmp_path / "m", "project", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        link = alice.share_link(model)
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        assert model in {m.name for m in bob.catalog()}
        answers = []
        for link_id in (link.id, uuid.uuid4().hex[: len(link.id)]):
            with pytest.raises(NotFound) as refused:
                bob.revoke_link(link_id)
            answers.append(str(refused.value).replace(link_id, "<id>"))
    assert answers[0] == answers[1] == "link '<id>' not found"
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        assert [x.active for x in alice.links(model)] == [True]


def test_a_colleague_cannot_alter_or_reuse_an_ended_runs_outputs(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    """bob shares project demo with alice: her run's folder is in his area, yet what her
    run wrote stays as it wrote it, and his launch may not write into it."""
    from accelerator_prefect import InvalidInputs

    model = _note_model(acc, tmp_path / "m", "project", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        run = alice.launch(model, {"text": "hers"})
        assert run.wait(timeout=120) == "Completed"
        folder = run.output_location
    note = f"{folder}note.txt"
    refused = {
        # bob may not even read alice's run's folder; she may read it, not change it.
        "bob": "in the output folder of (an ended run|a run you may not read)",
        "alice": "in the output folder of an ended run",
    }
    for who, message in refused.items():
        with Accelerator.connect(platform.api_url, token=team[who]) as someone:
            storage = someone.storage
            for tamper in (
                lambda s=storage: s.open(note, "wb").close(),
                lambda s=storage: s.rm(note),
                lambda s=storage: s.rm(folder, recursive=True),
                lambda s=storage: s.rm(folder.rsplit("/", 2)[0] + "/", recursive=True),
                lambda s=storage: s.put(tmp_path / "m" / "flows" / "note.py", folder),
            ):
                with pytest.raises(AccessDenied, match=message):
                    tamper()
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        with pytest.raises(InvalidInputs, match="is in the output folder of another run"):
            bob.launch(model, {"text": "his"}, output=folder)
        bob.storage.open(f"{folder.rsplit('/', 2)[0]}/bobs.txt", "wb").close()  # beside: fine
    with acc.storage.open(note, "rb") as f:  # operators may still clean up
        assert f.read() == b"hers"
    # A run's folder is its own before its records are written too (while it runs): the
    # folder that names a run's id is refused, records or not.
    acc.storage.rm(folder + "provenance.json")
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        for chosen in (folder, folder + "inside/"):
            with pytest.raises(InvalidInputs, match="is in the output folder of another run"):
                bob.launch(model, {"text": "his"}, output=chosen)


def test_an_output_changed_after_its_run_is_shown_altered_and_never_served(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], portal: str, tmp_path: Path
) -> None:
    """Whoever can still write an ended run's folder (an operator, or code holding the
    storage's own keys) cannot pass a changed file off as the run's output: each listed
    file is checked against the hash in the run's provenance (its Prefect artifact, which
    no user can change), even when the change keeps the file's size."""
    import httpx

    from accelerator_prefect.errors import AlteredOutput

    model = _note_model(acc, tmp_path / "m", "project", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        run = alice.launch(model, {"text": "hers"})
        assert run.wait(timeout=120) == "Completed"
        assert [(o.path, o.altered) for o in run.outputs()] == [("note.txt", False)]
        folder = run.output_location
        assert folder is not None
        with acc.storage.open(folder + "note.txt", "wb") as f:
            f.write(b"HERS")  # the same size, other bytes
        with acc.storage.open(folder + "provenance.json", "rb") as f:
            copy = json.loads(f.read())
        for record in copy["outputs"]:  # the copy beside the outputs is made to agree
            record["sha256"] = hashlib.sha256(b"HERS").hexdigest()
        with acc.storage.open(folder + "provenance.json", "wb") as f:
            f.write(json.dumps(copy).encode())
        assert [(o.path, o.altered) for o in run.outputs()] == [("note.txt", True)]
        with pytest.raises(AlteredOutput, match=r"note\.txt was changed after run"):
            run.open_output("note.txt")
    headers = {"Authorization": f"Bearer {team['alice']}"}
    with httpx.Client(base_url=f"{portal}/api/v1", headers=headers, timeout=60) as http:
        listed = http.get(f"/runs/{run.id}/outputs")
        assert listed.status_code == 200
        assert [(f["path"], f["altered"]) for f in listed.json()["files"]] == [("note.txt", True)]
        download = http.get(f"/runs/{run.id}/outputs/note.txt")
        assert download.status_code == 409
        assert download.json()["type"] == "urn:acc:problem:output-altered"
        assert b"HERS" not in download.content


def test_a_colleague_cannot_read_a_runs_folder_list_it_or_feed_it_to_a_run(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], portal: str, tmp_path: Path
) -> None:
    """bob shares project demo with alice, so her run's folder lies in his area; but a run
    is read only by whoever launched it, its model's owner and operators, and its folder
    (named after it) with it: not read, not listed, not given to a run of his as input."""
    import httpx

    from accelerator_prefect import InvalidInputs

    model = _note_model(acc, tmp_path / "m", "project", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        run = alice.launch(model, {"text": "hers"})
        assert run.wait(timeout=120) == "Completed"
        folder = run.output_location
        assert folder is not None
        parent = folder.rstrip("/").rsplit("/", 1)[0] + "/"
        assert folder in [e.uri for e in alice.storage.ls(parent)]  # hers to read
        with alice.storage.open(folder + "note.txt") as f:
            assert f.read() == b"hers"
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        for name in ("note.txt", "provenance.json"):
            with pytest.raises(AccessDenied, match="output folder of a run you may not read"):
                bob.storage.open(folder + name)
        with pytest.raises(AccessDenied, match="a run you may not read"):
            bob.storage.ls(folder)
        assert folder not in [e.uri for e in bob.storage.ls(parent)]
        top = parent.rsplit("/", 3)[0] + "/"  # acc://demo/results/
        assert not any(e.uri.startswith(folder) for e in bob.storage.files(top))
        with pytest.raises(InvalidInputs, match="in the output folder of a run you may not read"):
            bob.launch(model, {"text": "his"}, inputs=[folder + "note.txt"])
        own = bob.launch(model, {"text": "his"})  # his own run's folder is his
        assert own.wait(timeout=120) == "Completed"
        with bob.storage.open(str(own.output_location) + "note.txt") as f:
            assert f.read() == b"his"
    headers = {"Authorization": f"Bearer {team['bob']}"}
    with httpx.Client(base_url=f"{portal}/api/v1", headers=headers, timeout=60) as http:
        listed = http.get("/storage", params={"path": parent})
        assert listed.status_code == 200
        assert folder not in [e["uri"] for e in listed.json()]
        read = http.get("/storage/file", params={"path": folder + "note.txt"})
        assert read.status_code == 403
        assert b"hers" not in read.content
    with acc.storage.open(folder + "note.txt") as f:  # operators read every run's
        assert f.read() == b"hers"


def test_an_owner_opens_every_version_of_a_model_at_once_and_nobody_else_may(
    platform: PlatformInfo, team: dict[str, str], tmp_path: Path, via: str | None
) -> None:
    """`acc access MODEL --scope project`: every version's scope changes, with who and when,
    nothing published again; a colleague and an outsider cannot change it (and the outsider
    cannot tell the model exists)."""
    alice_name = team["alice-name"]
    with _client(platform, team, "operator") as operator:
        name = _note_model(operator, tmp_path / "a", "private", alice_name)
    repo = ModelRepo(tmp_path / "a", name)
    repo.write(
        f"deployments/{name}.yaml",
        NOTE_MANIFEST.format(name=name, scope="private", owner=alice_name, version="1.1.0"),
    )
    repo.commit("1.1.0")
    with _client(platform, team, "operator") as operator:
        operator.publish(repo.manifest)
        commits = {v.version: v.record.commit for v in operator.get(name).versions}

    where: dict[str, Any] = {"url": via} if via else {"api_url": platform.api_url}
    with Accelerator.connect(**where, token=team["bob"]) as bob:
        with pytest.raises(NotFound):
            bob.get(name)
        with pytest.raises(NotFound):  # as for a model that does not exist
            bob.set_access(name, "public")
    with Accelerator.connect(**where, token=team["alice"]) as alice:
        with pytest.raises(Exception, match="scope: 'everyone' is not a scope"):
            alice.set_access(name, "everyone")
        opened = alice.set_access(name, "project")
        assert {v.version: v.record.scope.value for v in opened.versions} == {
            "1.0.0": "project",
            "1.1.0": "project",
        }
        assert {v.record.scope_changed_by for v in opened.versions} == {alice_name}
        deadline = time.monotonic() + 30  # the audit log is Prefect's event stream
        while not (changed := [e for e in alice.audit(name) if e.action == "access-changed"]):
            assert time.monotonic() < deadline, "the access change is not in the audit log"
            time.sleep(0.2)
        assert changed[0].actor == alice_name
        assert changed[0].details["scope"] == "project"

    with Accelerator.connect(**where, token=team["bob"]) as bob:
        seen = bob.get(name)
        # Same code: the versions were not published again.
        assert {v.version: v.record.commit for v in seen.versions} == commits
        run = bob.launch(name, version="1.0.0", conf={"text": "open"})
        assert run.wait(timeout=120) == "Completed"
        with pytest.raises(AccessDenied, match="only its owner or an operator"):
            bob.set_access(name, "public")
    with Accelerator.connect(**where, token=team["carol"]) as carol:
        with pytest.raises(NotFound):
            carol.get(name)
        with pytest.raises(NotFound):
            carol.set_access(name, "public")

    if via is None:  # the CLI, as the local operator
        code, out = acc_cli(platform, "access", name, "--scope", "private")
        assert code == 0 and f"{name} is private (set by operator" in out, out
        with (
            Accelerator.connect(platform.api_url, token=team["bob"]) as bob,
            pytest.raises(NotFound),
        ):
            bob.get(name)


def test_a_new_release_keeps_the_models_access_unless_its_manifest_changes_it(
    platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    alice_name = team["alice-name"]

    def release(version: str, scope: str) -> None:
        repo.write(
            f"deployments/{name}.yaml",
            NOTE_MANIFEST.format(name=name, scope=scope, owner=alice_name, version=version),
        )
        repo.commit(version)
        operator.publish(repo.manifest)

    def scopes() -> dict[str, str]:
        return {v.version: v.record.scope.value for v in operator.get(name).versions}

    with _client(platform, team, "operator") as operator:
        name = _note_model(operator, tmp_path / "m", "private", alice_name)
        repo = ModelRepo(tmp_path / "m", name)
        operator.set_access(name, "project")
        # The manifest still says private, as it did: the model stays as its owner set it.
        release("1.1.0", "private")
        assert scopes() == {"1.0.0": "project", "1.1.0": "project"}
        # A manifest that says something new applies to its own version (a release staged
        # privately, or opened wider, leaves the others as they are).
        release("1.2.0", "public")
        assert scopes() == {"1.0.0": "project", "1.1.0": "project", "1.2.0": "public"}
        operator.set_access(name, "private")  # and the model's access covers them all again
        assert set(scopes().values()) == {"private"}


def test_a_link_in_ones_own_run_folder_opens_no_colleagues_run(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], portal: str, tmp_path: Path
) -> None:
    """bob's run plants a symbolic link in its own output folder (a warm run may make links
    there), pointing at alice's run folder in their shared project: through it, bob reads,
    lists and launches with nothing of hers, in-process and over the portal, and his
    folder's listing does not show it."""
    import os

    import httpx

    model = _note_model(acc, tmp_path / "m", "project", team["alice-name"])
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        hers = alice.launch(model, {"text": "hers"})
        assert hers.wait(timeout=120) == "Completed"
    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        his = bob.launch(model, {"text": "his"})
        assert his.wait(timeout=120) == "Completed"
    theirs, own = str(hers.output_location), str(his.output_location)
    root = acc._core.storage_fs()._local_root
    assert root is not None, "the session's storage is a local folder"
    planted = Path(root) / own.removeprefix("acc://") / "peek"
    os.symlink(Path(root) / theirs.removeprefix("acc://"), planted, target_is_directory=True)

    with Accelerator.connect(platform.api_url, token=team["bob"]) as bob:
        for name in ("provenance.json", "note.txt"):
            with pytest.raises(AccessDenied, match="output folder of a run you may not read"):
                bob.storage.open(f"{own}peek/{name}").read()
        with pytest.raises(AccessDenied, match="output folder of a run you may not read"):
            bob.storage.ls(f"{own}peek/")
        assert "peek" not in [e.name for e in bob.storage.ls(own)]
        assert "note.txt" in [e.name for e in bob.storage.ls(own)]
        assert [e.uri for e in bob.storage.files(own)] == [f"{own}note.txt"]
        for inputs in ([f"{own}peek/note.txt"], [f"{own}peek/"]):
            with pytest.raises(InvalidInputs, match="into the output folder of another run"):
                bob.launch(model, {"text": "his"}, inputs=inputs)
    headers = {"Authorization": f"Bearer {team['bob']}"}
    with httpx.Client(base_url=f"{portal}/api/v1", headers=headers, timeout=60) as http:
        listed = http.get("/storage", params={"path": own})
        assert listed.status_code == 200
        assert f"{own}note.txt" in [e["uri"] for e in listed.json()]
        assert not any(e["uri"].startswith(f"{own}peek") for e in listed.json())
        read = http.get("/storage/file", params={"path": f"{own}peek/provenance.json"})
        assert read.status_code == 403
        assert b"hers" not in read.content
    with acc.storage.open(f"{theirs}note.txt") as f:  # her folder itself is as it was
        assert f.read() == b"hers"


def test_only_the_run_writes_in_its_folder_while_it_runs(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], portal: str, tmp_path: Path
) -> None:
    """alice's run of her own model sleeps: neither she (its launcher and its model's
    owner) nor anyone else but an operator writes in its output folder meanwhile,
    in-process or over the portal."""
    import httpx

    model = f"slow-note-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path / "m", model)
    slow = NOTE_FLOW.replace("from pydantic", "import time\n\nfrom pydantic").replace(
        "    write(conf, output)", "    write(conf, output)\n    time.sleep(300)"
    )
    repo.write("flows/note.py", slow)
    owner = team["alice-name"]
    manifest = NOTE_MANIFEST.format(name=model, scope="project", owner=owner, version="1.0.0")
    repo.write(f"deployments/{model}.yaml", manifest)
    repo.commit("slow note 1.0.0")
    acc.publish(repo.manifest)
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        run = alice.launch(model, {"text": "slow"})
        try:
            folder = str(run.output_location)
            with (
                pytest.raises(AccessDenied, match="which only the run writes"),
                alice.storage.open(f"{folder}planted.csv", "wb") as f,
            ):
                f.write(b"x\n")
            headers = {"Authorization": f"Bearer {team['alice']}"}
            with httpx.Client(base_url=f"{portal}/api/v1", headers=headers, timeout=60) as http:
                put = http.put(
                    "/storage/file", params={"path": f"{folder}planted.csv"}, content=b"x\n"
                )
                assert put.status_code == 403, put.text
            with acc.storage.open(f"{folder}operator.txt", "wb") as f:  # operators may
                f.write(b"by the operator\n")
            acc.storage.rm(f"{folder}operator.txt")
            assert not acc.storage.exists(f"{folder}planted.csv")
        finally:
            run.cancel()
