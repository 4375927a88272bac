"""Run history with filters, and usage per version and day."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from accelerator_prefect import Accelerator, AccessDenied
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.usage import percentile
from tests.conftest import ModelRepo, User
from tests.test_cli import acc_cli
from tests.test_launch import connect_like

BOOM_FLOW = """
from accelerator_prefect import Conf, jobflow


class EchoConf(Conf):
    message: str = "hello"


@jobflow(name="echo")
def echo(conf: EchoConf) -> dict:
    if conf.message == "boom":
        raise RuntimeError("boom")
    return {"code": "v2", "text": conf.message}
"""


@pytest.fixture(scope="session")
def history(
    acc: Accelerator, platform: PlatformInfo, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """alice ran 1.0.0 twice; the operator ran 1.1.0 once well and once into a failure.

    Made once for the session: the tests reading it run with each ``user`` in turn, and
    pytest groups those by user across modules.
    """
    repo = ModelRepo(tmp_path_factory.mktemp("usage") / "models", f"echo-{uuid.uuid4().hex[:8]}")
    repo.echo()
    repo.commit("1.0.0")
    acc.publish(repo.manifest)
    repo.echo(version="1.1.0")
    repo.write("flows/echo.py", BOOM_FLOW)
    repo.commit("1.1.0")
    acc.publish(repo.manifest)
    started = datetime.now(UTC)
    _, token = acc.add_user("alice", {"demo": "author"})
    with Accelerator.connect(platform.api_url, token=token) as alice:
        runs = [alice.launch(repo.name, version="1.0.0") for _ in range(2)]
    runs += [acc.launch(repo.name, {"message": "fine"}), acc.launch(repo.name, {"message": "boom"})]
    assert [r.wait(timeout=120) for r in runs] == ["Completed", "Completed", "Completed", "Failed"]
    return {"model": repo.name, "runs": [str(r.id) for r in runs], "started": started}


@pytest.fixture
def alice(acc: Accelerator, user: User) -> Iterator[Accelerator]:
    """alice, who owns the model (an author in demo), reaching the platform as ``user`` does."""
    _, token = acc.add_user("alice", {"demo": "author"})
    with connect_like(user, token) as client:
        yield client


def test_runs_are_filtered_by_version_user_state_and_time(
    acc: Accelerator, platform: PlatformInfo, history: dict[str, object], alice: Accelerator
) -> None:
    model, ids, started = history["model"], history["runs"], history["started"]
    assert isinstance(model, str) and isinstance(ids, list) and isinstance(started, datetime)
    for reader in (acc, alice):  # an operator, and the owner: every run of the model
        assert {r.id for r in reader.runs(model)} == set(ids)
        assert {r.id for r in reader.runs(model, version="1.0.0")} == set(ids[:2])
        assert {r.id for r in reader.runs(model, user="alice")} == set(ids[:2])
        assert [r.id for r in reader.runs(model, state="Failed")] == [ids[3]]
        assert {r.id for r in reader.runs(model, state=["Completed"], version="1.1.0")} == {ids[2]}
        assert {r.id for r in reader.runs(model, since=timedelta(hours=1))} == set(ids)
        assert reader.runs(model, until=started - timedelta(seconds=1)) == []
        assert reader.runs(model, since=datetime.now(UTC) + timedelta(minutes=1)) == []

    code, out = acc_cli(platform, "runs", model, "--state", "failed", "--since", "1d")
    assert code == 0, out
    assert ids[3] in out and ids[0] not in out and "Failed" in out
    code, out = acc_cli(platform, "runs", model, "--by", "alice", "--version", "1.0.0")
    assert code == 0 and ids[0] in out and ids[1] in out and ids[2] not in out
    code, out = acc_cli(platform, "runs", model, "--since", "yesterday")
    assert code == 1 and "--since 'yesterday': expected how long ago (7d, 12h)" in out


def test_usage_per_version_and_day(
    acc: Accelerator, platform: PlatformInfo, history: dict[str, object], alice: Accelerator
) -> None:
    model, started = str(history["model"]), history["started"]
    assert isinstance(started, datetime)
    today = datetime.now(UTC).date()
    for reader in (acc, alice):  # an operator, and the owner
        rows = reader.usage(model)
        assert [(r.version, r.day, r.runs, r.users, r.completed, r.success_rate) for r in rows] == [
            ("1.1.0", today, 2, 1, 1, 0.5),
            ("1.0.0", today, 2, 1, 2, 1.0),
        ]
        for row in rows:
            assert row.median_seconds is not None and row.p95_seconds is not None
            assert 0 < row.median_seconds <= row.p95_seconds < 120
        assert reader.usage(model, since=datetime.now(UTC) + timedelta(minutes=1)) == []
        assert reader.usage(model, until=started - timedelta(seconds=1)) == []

    code, out = acc_cli(platform, "usage", model)
    assert code == 0, out
    assert re.search(rf"1\.1\.0\s+│\s+{today:%Y-%m-%d}\s+│\s+2\s+│\s+1\s+│\s+50%", out)
    assert re.search(rf"1\.0\.0\s+│\s+{today:%Y-%m-%d}\s+│\s+2\s+│\s+1\s+│\s+100%", out)


def test_runs_and_usage_tell_waiting_starting_and_computing_apart(
    acc: Accelerator, platform: PlatformInfo, history: dict[str, object], alice: Accelerator
) -> None:
    """What a launcher waits for is all counted: queued for a worker, being started, then
    computing; together they make the time from launch to end."""
    model = str(history["model"])
    for reader in (acc, alice):
        plain = reader.runs(model, state="Completed")
        assert plain and all(r.queued is None and r.starting is None for r in plain)
        for run in reader.runs(model, state="Completed", phases=True):
            assert run.queued is not None and run.starting is not None
            assert run.duration is not None and run.created and run.ended
            told = run.queued + run.starting + run.duration
            waited = (run.ended - run.created).total_seconds()
            assert run.queued >= 0 and run.starting >= 0 and told <= waited + 0.5
            assert told >= 0.5 * waited  # the phases are most of the wait, not a part of it
        for row in reader.usage(model):
            assert row.median_queued_seconds is not None
            assert row.median_starting_seconds is not None
            assert row.median_total_seconds is not None and row.median_seconds is not None
            assert row.median_total_seconds >= row.median_seconds

    code, out = acc_cli(platform, "runs", model, "--state", "completed")
    assert code == 0, out
    assert "queued" in out and "starting" in out and "computing" in out
    code, out = acc_cli(platform, "usage", model)
    assert code == 0 and "launch to end" in out, out


def test_usage_is_for_the_owner_and_operators(
    acc: Accelerator, history: dict[str, object], alice: Accelerator, user: User
) -> None:
    model = str(history["model"])
    assert sum(r.runs for r in alice.usage(model)) == 4
    # alice launched 1.0.0 and owns the model: she reads every run of it.
    assert len(alice.runs(model)) == 4
    # Neither an author of the project who does not own the model, nor a member of it.
    with pytest.raises(AccessDenied, match="only its owner or an operator"):
        user.acc.usage(model)
    assert user.acc.runs(model) == []  # an author too, of a model they do not own
    _, bob_token = acc.add_user(f"bob-{uuid.uuid4().hex[:6]}", {"demo": "member"})
    with connect_like(user, bob_token) as bob:
        with pytest.raises(AccessDenied, match="only its owner or an operator"):
            bob.usage(model)
        assert bob.runs(model) == []  # a member sees only the runs they launched


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([float(n) for n in range(1, 21)], 0.95) == 19.0
    assert percentile([float(n) for n in range(1, 101)], 0.5) == 50.0
