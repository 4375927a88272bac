"""The audit log: who published a model, shared and revoked its links, changed its
lifecycle, launched and cancelled its runs; as Prefect events, read by the model's owner
and operators (``acc audit``), refused to everyone else."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from accelerator_prefect import Accelerator, AccessDenied
from accelerator_prefect.audit import AuditEntry
from accelerator_prefect.manifest import Status
from accelerator_prefect.platform import PlatformInfo
from tests.test_access import _note_model
from tests.test_cli import acc_cli


def _until(read: Callable[[], list[AuditEntry]], done: Callable[[list[AuditEntry]], bool]) -> Any:
    """Events are stored a moment after they are sent: read until ``done`` (30 s)."""
    end = time.monotonic() + 30
    while True:
        entries = read()
        if done(entries) or time.monotonic() > end:
            return entries
        time.sleep(0.2)


def test_the_owner_reads_who_did_what_to_their_model_and_a_member_may_not(
    acc: Accelerator,
    platform: PlatformInfo,
    team: dict[str, str],
    tmp_path: Path,
) -> None:
    alice_name = team["alice-name"]
    model = _note_model(acc, tmp_path / "m", "project", alice_name)  # published by the operator
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        link = alice.share_link(model)
        alice.revoke_link(link.id)
        run = alice.launch(model, {"text": "audited"})
        assert run.wait(timeout=120) == "Completed"
        alice.deprecate(model, "1.0.0")
        wanted = {"published", "link-created", "link-revoked", "launched", "status-changed"}
        entries = _until(
            lambda: alice.audit(model), lambda found: wanted <= {e.action for e in found}
        )
    by_action = {e.action: e for e in entries}
    assert wanted <= set(by_action), [e.action for e in entries]
    assert by_action["published"].actor == "operator"
    assert by_action["published"].details["version"] == "1.0.0"
    assert by_action["published"].details["scope"] == "project"
    assert by_action["link-created"].actor == alice_name
    assert by_action["link-created"].details["link"] == link.id
    assert by_action["link-revoked"].details["link"] == link.id
    assert by_action["launched"].actor == alice_name
    assert by_action["launched"].details["run"] == str(run.id)
    assert by_action["status-changed"].details["status"] == Status.deprecated.value
    times = [e.occurred for e in entries]
    assert times == sorted(times, reverse=True)  # newest first

    # A member sees the model, not its audit log; the CLI shows it to operators.
    with (
        Accelerator.connect(platform.api_url, token=team["bob"]) as bob,
        pytest.raises(AccessDenied),
    ):
        bob.audit(model)
    code, output = acc_cli(platform, "audit", model)
    assert code == 0, output
    assert "link-created" in output and alice_name in output


def test_adding_users_and_tokens_is_recorded_as_prefect_events(
    acc: Accelerator,
    platform: PlatformInfo,
    team: dict[str, str],
) -> None:
    import asyncio

    from accelerator_prefect.transport import prefect_client

    bob = team["bob-name"]

    async def events() -> list[str]:
        async with prefect_client(platform.api_url) as client:
            response = await client.request(
                "POST",
                "/events/filter",
                json={
                    "filter": {
                        "any_resource": {"id": [f"acc.user.{bob}"]},
                        "event": {"prefix": ["acc.user."]},
                    },
                    "limit": 50,
                },
            )
            return [e["event"] for e in response.json()["events"]]

    acc.add_token(bob)
    end = time.monotonic() + 30
    while "acc.user.token-created" not in (found := asyncio.run(events())):
        assert time.monotonic() < end, found
        time.sleep(0.2)
    assert "acc.user.added" in found


def test_the_portals_audit_door_opens_for_the_owner_only(
    acc: Accelerator, portal: str, team: dict[str, str], tmp_path: Path
) -> None:
    """Raw HTTP on ``GET /api/v1/models/{model}/audit``: without a token, with a member's
    (who sees the model), with an outsider's (who does not), and with the owner's."""
    import httpx

    model = _note_model(acc, tmp_path / "m", "project", team["alice-name"])
    url = f"{portal}/api/v1/models/{model}/audit"

    def get(token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(url, headers=headers, timeout=30)

    assert get(None).status_code == 401
    assert get(team["bob"]).status_code == 403  # a member: sees it, does not manage it
    assert get(team["carol"]).status_code == 404  # another project: not there for them
    owner = _until(
        lambda: [AuditEntry.model_validate(e) for e in get(team["alice"]).json()],
        lambda found: "published" in {e.action for e in found},
    )
    assert [e.actor for e in owner if e.action == "published"] == ["operator"]


def test_who_cancelled_a_run_is_the_platforms_record(
    acc: Accelerator, platform: PlatformInfo, team: dict[str, str], tmp_path: Path
) -> None:
    """alice cancels her run of a model that sleeps: its audit log says she did, once; the
    run itself cannot say otherwise (tests/test_proxy.py knocks on that door)."""
    import uuid

    from tests.conftest import ModelRepo
    from tests.test_catalog_ui import SLEEPY_FLOW, SLEEPY_MANIFEST

    model = f"sleepy-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path / "m", model)
    repo.write("flows/sleepy.py", SLEEPY_FLOW)
    manifest = SLEEPY_MANIFEST.format(name=model)
    manifest = manifest.replace("owner: alice", f"owner: {team['alice-name']}")
    repo.write(f"deployments/{model}.yaml", manifest.replace("project: climate", "project: demo"))
    repo.commit("sleepy 1.0.0")
    acc.publish(repo.manifest)
    with Accelerator.connect(platform.api_url, token=team["alice"]) as alice:
        run = alice.launch(model, {"seconds": 300})
        run.cancel()
        assert run.wait(timeout=120) == "Cancelled"
        entries = _until(
            lambda: alice.audit(model), lambda found: "cancelled" in {e.action for e in found}
        )
    cancelled = [e for e in entries if e.action == "cancelled"]
    assert len(cancelled) == 1, entries
    assert cancelled[0].actor == team["alice-name"]
    assert cancelled[0].details["run"] == str(run.id)
    assert cancelled[0].details["version"] == "1.0.0"
