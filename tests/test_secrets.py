"""Secrets: values live only in Secret blocks, and nothing Prefect shows ever holds one."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from typer.testing import CliRunner

from accelerator_prefect import Accelerator, InvalidConf, InvalidSecrets, Run
from accelerator_prefect import secrets as run_secrets
from accelerator_prefect.cli import app
from accelerator_prefect.platform import PlatformInfo
from accelerator_prefect.transport import prefect_client
from tests.conftest import ModelRepo, User
from tests.test_launch import count_runs

KEYED_FLOW = """
import hashlib
import logging
import os
import signal
import sys
import warnings

from prefect.artifacts import create_markdown_artifact

from pydantic import Field

from accelerator_prefect import Conf, Output, Secrets, jobflow, routine


class KeyConf(Conf):
    fail: bool = Field(default=False, description="Fail, naming the key (a careless author).")
    crash: bool = Field(default=False, description="Die as a killed process does.")


@routine
def use_key(conf: KeyConf, secrets: Secrets, output: Output) -> str:
    key = secrets.get("API_KEY")
    print(f"using the key {{key}}")
    logging.getLogger("prefect.task_runs").warning("key=%s", key)
    # Careless ways past logging: an artifact, raw writes, a warning.
    create_markdown_artifact(
        f"the key is {{key}}", key=f"made-with-{{key}}", description=f"made with {{key}}"
    )
    sys.stdout.write(f"raw {{key}}\\n")
    sys.stderr.write(f"raw error {{key}}\\n")
    warnings.warn(f"deprecated key {{key}}", stacklevel=1)
    with output.open("digest.txt", "w") as f:
        f.write(hashlib.sha256(key.encode()).hexdigest())
    if conf.crash:
        os.kill(os.getpid(), signal.SIGKILL)
    if conf.fail:
        try:
            raise KeyError(key)
        except KeyError as exc:
            raise RuntimeError(f"the service refused the key {{key}}") from exc
    return "done"


@jobflow(name="keyed")
def keyed(conf: KeyConf, secrets: Secrets, output: Output) -> str:
    print("starting with", secrets.get("API_KEY"))
    return use_key(conf, secrets, output)
"""

KEYED_MANIFEST = """
name: {name}
title: Keyed
version: 1.0.0
jobflow: flows/keyed.py:keyed
owner: alice
project: demo
access:
  scope: project
secrets:
  API_KEY:
    description: Key of the data service
    required: true
  OPTIONAL_TOKEN:
    description: Only for the premium feed
    required: false
"""


def _publish_keyed(acc: Accelerator, folder: Path) -> str:
    """A keyed model at 1.0.0, published from a new repository in ``folder``."""
    name = f"keyed-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(folder, name)
    repo.write("flows/keyed.py", KEYED_FLOW.format())
    repo.write(f"deployments/{name}.yaml", KEYED_MANIFEST.format(name=name))
    repo.commit("keyed 1.0.0")
    acc.publish(repo.manifest)
    return name


# Published once for the session: this module's tests run in a group for each `user`.
@pytest.fixture(scope="session")
def keyed(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _publish_keyed(acc, tmp_path_factory.mktemp("keyed"))


@pytest.fixture(scope="session")
def keyed_to_remember(acc: Accelerator, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another keyed model, for the secrets a test has remembered (no other test sees them)."""
    return _publish_keyed(acc, tmp_path_factory.mktemp("keyed"))


def _secret() -> str:
    return "sk-" + uuid.uuid4().hex + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class KeyedRuns:
    """Runs one user launched at once (they run side by side). Of ``keyed``: ``leaking``
    fails leaking ``key`` everywhere it can (launched at ``since``), ``killed`` is killed.
    Of ``keyed_to_remember``: ``first`` had ``remembered`` kept, ``again`` was given none."""

    key: str
    since: datetime
    leaking: Run
    killed: Run
    remembered: str
    first: Run
    again: Run


@pytest.fixture(scope="module")
def keyed_runs(user: User, keyed: str, keyed_to_remember: str) -> KeyedRuns:
    key, since, remembered = _secret(), datetime.now(UTC), _secret()
    leaking = user.acc.launch(keyed, {"fail": True}, secrets={"API_KEY": key})
    killed = user.acc.launch(keyed, {"crash": True}, secrets={"API_KEY": _secret()})
    model = keyed_to_remember
    first = user.acc.launch(model, secrets={"API_KEY": remembered}, remember=True)
    again = user.acc.launch(model)  # no secret given: the remembered one is used
    return KeyedRuns(key, since, leaking, killed, remembered, first, again)


async def _run_blocks(api_url: str) -> list[str]:
    async with prefect_client(api_url) as client:
        return [b["name"] for b in await run_secrets._blocks_named(client, run_secrets.RUN_PREFIX)]


def _everything_prefect_shows(api_url: str, run_id: str, since: datetime) -> str:
    """Every record the Prefect API holds about a run, as one text."""

    async def read() -> str:
        async with prefect_client(api_url) as client:
            run = uuid.UUID(run_id)
            flow_run = await client.read_flow_run(run)
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run]))
            )
            states = await client.read_flow_run_states(run)
            task_states = [s for t in task_runs for s in await client.read_task_run_states(t.id)]
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run])), limit=200
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run]))
            )
            events = await _events(client, run, since)
            records: list[Any] = [flow_run, *task_runs, *states, *task_states, *logs, *artifacts]
            dumped = [r.model_dump(mode="json") for r in records]
            return json.dumps(dumped) + events

    return asyncio.run(read())


async def _events(client: PrefectClient, run: uuid.UUID, since: datetime) -> str:
    """The run's events, once its final state's event has arrived (they come later)."""
    deadline = time.monotonic() + 30
    while True:
        response = await client.request(
            "POST",
            "/events/filter",
            json={
                "filter": {
                    "occurred": {"since": since.isoformat()},
                    "any_resource": {"id": [f"prefect.flow-run.{run}"]},
                },
                "limit": 50,
            },
        )
        pages = [response.text]
        while next_page := response.json().get("next_page"):
            response = await client._client.get(next_page)
            pages.append(response.text)
        if '"prefect.flow-run.Failed"' in "".join(pages):
            return "".join(pages)
        assert time.monotonic() < deadline, "the run's Failed event never arrived"
        await asyncio.sleep(0.5)


def test_a_secret_appears_nowhere_prefect_shows_even_when_the_routine_leaks_it(
    platform: PlatformInfo, user: User, keyed_runs: KeyedRuns
) -> None:
    key, since, run = keyed_runs.key, keyed_runs.since, keyed_runs.leaking
    assert run.wait(timeout=120) == "Failed"

    # The routine really had the key: the digest it wrote is of the key given.
    digest = [o for o in run.outputs() if o.path == "digest.txt"]
    assert digest and user.acc.storage.open(digest[0].uri, "rb").read().decode() == (
        hashlib.sha256(key.encode()).hexdigest()
    )
    everything = _everything_prefect_shows(platform.api_url, str(run.id), since)
    assert key not in everything
    assert key[3:20] not in everything  # not even in part
    assert "the key is ***" in everything and "made with ***" in everything  # the artifact
    assert "made-with-redacted" in everything  # its key too, which allows no '*'
    # What was printed and raised is there, with the value masked.
    logs = "\n".join(run.logs())
    assert "using the key ***" in logs
    assert "key=***" in logs
    assert "the service refused the key ***" in logs
    assert "the service refused the key ***" in str(run.info().message)
    # The run was given a block name, and the block went when the run ended.
    blocks = run.parameters["secrets"]["blocks"]
    assert blocks["API_KEY"].startswith(run_secrets.RUN_PREFIX)
    assert blocks["API_KEY"] not in asyncio.run(_run_blocks(platform.api_url))
    # The worker's own log (its console) holds no value either.
    for log in (platform.home / "logs").glob("*.log"):
        assert key not in log.read_text(errors="replace"), log.name


def test_the_secrets_of_a_killed_run_are_deleted_when_it_is_marked_crashed(
    platform: PlatformInfo, keyed_runs: KeyedRuns
) -> None:
    # Before the test comparing all run blocks: this one goes a while after its run ends.
    run = keyed_runs.killed
    assert run.wait(timeout=120) == "Crashed"
    block = run.parameters["secrets"]["blocks"]["API_KEY"]
    deadline = time.monotonic() + 30  # the worker runs the crash hooks after the state
    while block in asyncio.run(_run_blocks(platform.api_url)):
        assert time.monotonic() < deadline, f"{block} outlived its crashed run"
        time.sleep(0.2)


def test_the_cli_reads_secrets_without_echo_and_never_prints_them(
    platform: PlatformInfo, keyed: str
) -> None:
    key = _secret()
    result = CliRunner().invoke(
        app,
        ["--api-url", platform.api_url, "run", keyed, "--secret", "API_KEY", "--wait"],
        input=key + "\n",
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output
    assert "using the key ***" in result.output
    assert key not in result.output

    os.environ["ACC_SECRET_API_KEY"] = key
    try:
        result = CliRunner().invoke(
            app,
            ["--api-url", platform.api_url, "run", keyed, "-s", "API_KEY", "-c", "fail=maybe"],
            env={"COLUMNS": "200"},
        )
    finally:
        del os.environ["ACC_SECRET_API_KEY"]
    assert result.exit_code == 2
    assert "conf.fail" in result.output and key not in result.output

    shown = CliRunner().invoke(
        app, ["--api-url", platform.api_url, "show", keyed], env={"COLUMNS": "200"}
    )
    assert shown.exit_code == 0, shown.output
    assert re.search(r"API_KEY\s+│\s+yes\s+│\s+Key of the data service", shown.output)
    assert re.search(r"OPTIONAL_TOKEN\s+│\s+no\s+│\s+Only for the premium feed", shown.output)


def test_missing_unknown_and_malformed_secrets_are_refused_before_anything_runs(
    platform: PlatformInfo, user: User, keyed: str
) -> None:
    before = count_runs(platform.api_url, f"{keyed}@1.0.0")
    blocks = asyncio.run(_run_blocks(platform.api_url))
    unknown = (
        "secrets.API_KEYS: this model takes no such secret (it takes: API_KEY, OPTIONAL_TOKEN)"
    )
    missing = "secrets.API_KEY: required secret (Key of the data service) is missing"
    with pytest.raises(InvalidSecrets) as refused:
        user.acc.launch(keyed, secrets={"API_KEYS": "typo-value-123", "OPTIONAL_TOKEN": 42})
    assert refused.value.problems == [
        unknown,
        "secrets.OPTIONAL_TOKEN: expected text, got int",
        missing,
    ]
    assert "typo-value-123" not in str(refused.value)
    with pytest.raises(InvalidSecrets) as refused:
        user.acc.launch(keyed, secrets={"API_KEYS": "typo-value-123"})
    assert refused.value.problems == [unknown, missing]
    assert "typo-value-123" not in str(refused.value)
    # Bad conf with a good secret: refused, and the secret is neither stored nor shown.
    key = _secret()
    with pytest.raises(InvalidConf) as bad_conf:
        user.acc.launch(keyed, {"fail": "sometimes"}, secrets={"API_KEY": key})
    assert key not in str(bad_conf.value)
    assert count_runs(platform.api_url, f"{keyed}@1.0.0") == before
    # No secret block was made for a refused launch. Another test's run may still be ending
    # in the same session: its block, present before, may be swept by now.
    assert set(asyncio.run(_run_blocks(platform.api_url))) <= set(blocks)


def test_a_remembered_secret_serves_the_next_runs_until_forgotten(
    platform: PlatformInfo, user: User, keyed_to_remember: str, keyed_runs: KeyedRuns
) -> None:
    first, again = keyed_runs.first, keyed_runs.again
    saved = first.parameters["secrets"]["blocks"]["API_KEY"]
    assert saved.startswith(run_secrets.SAVED_PREFIX)
    assert first.wait(timeout=120) == "Completed", "\n".join(first.logs())
    assert again.wait(timeout=120) == "Completed", "\n".join(again.logs())
    assert again.parameters["secrets"]["blocks"]["API_KEY"] == saved
    digest = next(o for o in again.outputs() if o.path == "digest.txt")
    read = user.acc.storage.open(digest.uri, "rb").read().decode()
    assert read == hashlib.sha256(keyed_runs.remembered.encode()).hexdigest()

    assert user.acc.forget_secrets(keyed_to_remember) == 1
    with pytest.raises(InvalidSecrets, match=r"secrets\.API_KEY: required secret"):
        user.acc.launch(keyed_to_remember)


def test_a_sweep_removes_secrets_left_by_runs_that_ended_without_running(
    platform: PlatformInfo, acc: Accelerator, user: User, tmp_path: Path
) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.states import Cancelled

    pool = f"idle-{uuid.uuid4().hex[:6]}"  # no worker ever polls it
    name = f"keyed-{uuid.uuid4().hex[:6]}"
    repo = ModelRepo(tmp_path / "m", name)
    repo.write("flows/keyed.py", KEYED_FLOW.format())
    repo.write(
        f"deployments/{name}.yaml", KEYED_MANIFEST.format(name=name) + f"work_pool: {pool}\n"
    )
    repo.commit("keyed on an idle pool")

    async def create_pool() -> None:
        async with prefect_client(platform.api_url) as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))

    asyncio.run(create_pool())
    acc.publish(repo.manifest)
    run = user.acc.launch(name, secrets={"API_KEY": _secret()})
    block = run.parameters["secrets"]["blocks"]["API_KEY"]
    acc.sweep_secrets()
    assert block in asyncio.run(_run_blocks(platform.api_url))  # still waiting to run: kept

    async def cancel_and_leave_a_stray() -> None:
        async with prefect_client(platform.api_url) as client:
            await client.set_flow_run_state(run.id, Cancelled(), force=True)
            # A launch that stored its secret and died before creating its run.
            await run_secrets.store(client, {run_secrets.run_block("0" * 16, "API_KEY"): "x1"})
            await run_secrets.sweep(client, grace=timedelta(0))

    asyncio.run(cancel_and_leave_a_stray())
    remaining = asyncio.run(_run_blocks(platform.api_url))
    assert block not in remaining
    assert run_secrets.run_block("0" * 16, "API_KEY") not in remaining


def test_redaction_covers_log_arguments_tracebacks_and_exception_chains() -> None:
    key = "redact-me-" + uuid.uuid4().hex
    run_secrets.register(key)
    try:
        records: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(self.format(record))

        handler = Keep()
        logger = logging.getLogger(f"test.redaction.{uuid.uuid4().hex}")
        logger.addHandler(handler)
        run_secrets._install_filter()
        try:
            raise ValueError(f"bad {key}")
        except ValueError:
            logger.exception("failed with %s", key)
        assert records and key not in records[0] and "failed with ***" in records[0]
        assert "ValueError: bad ***" in records[0]

        try:
            try:
                raise KeyError(key)
            except KeyError as inner:
                raise OSError(2, f"no such thing {key}", f"/data/{key}") from inner
        except OSError as exc:
            clean = run_secrets.scrub(exc)
        assert key not in str(clean) and key not in repr(clean.__cause__)

        class Stubborn(Exception):
            def __str__(self) -> str:
                return f"computed {key}"

        replaced = run_secrets.scrub(Stubborn())
        assert str(replaced) == "Stubborn: computed ***"
    finally:
        run_secrets._VALUES.discard(key)


def test_the_jobflow_must_take_the_secrets_its_manifest_declares(
    acc: Accelerator, tmp_path: Path
) -> None:
    from accelerator_prefect import ManifestError

    repo = ModelRepo(tmp_path / "m", f"echo-{uuid.uuid4().hex[:6]}").echo()
    repo.write(
        f"deployments/{repo.name}.yaml",
        repo.manifest.read_text() + "secrets:\n  API_KEY: {description: key}\n",
    )
    repo.commit("declares a secret")
    with pytest.raises(ManifestError, match="takes no `secrets` parameter"):
        acc.publish(repo.manifest)


def test_escaped_forms_late_handlers_and_exception_attributes_are_covered_too() -> None:
    key = 'pem-"line-one\nline-two-' + uuid.uuid4().hex
    run_secrets.register(key)
    try:
        records: list[str] = []

        class Late(logging.Handler):  # added after the secret was registered
            def emit(self, record: logging.LogRecord) -> None:
                records.append(self.format(record))

        logger = logging.getLogger(f"test.late.{uuid.uuid4().hex}")
        logger.addHandler(Late())
        logger.warning("as repr %r and as json %s", key, json.dumps({"k": key}))
        assert records and "line-one" not in records[0] and "line-two" not in records[0]

        class ApiError(Exception):
            def __init__(self, message: str, key: str) -> None:
                super().__init__(message)
                self.key = key  # kept aside, where scrubbing the message cannot reach

        clean = run_secrets.scrub(ApiError("the service said no", key))
        assert not isinstance(clean, ApiError) and str(clean) == "ApiError: the service said no"
        assert run_secrets.contains_secret({"token": key}) and not run_secrets.contains_secret(1)
    finally:
        run_secrets._VALUES.difference_update(run_secrets._forms(key))


def test_a_value_typed_where_a_secret_name_belongs_is_not_echoed(
    platform: PlatformInfo, user: User, keyed: str
) -> None:
    value = "typed-by-mistake-" + uuid.uuid4().hex
    result = CliRunner().invoke(
        app,
        ["--api-url", platform.api_url, "run", keyed, "--secret", f"API_KEY={value}"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1 and "--secret takes a NAME only" in result.output
    assert value not in result.output
    with pytest.raises(InvalidSecrets) as refused:
        user.acc.launch(keyed, secrets={f"API_KEY={value}": "x"})
    assert value not in str(refused.value)


def test_a_generator_routines_exception_loses_the_secret_like_any_routines() -> None:
    """A routine written as a generator (sync or async) raises through the same scrubbing
    as a plain one: its message becomes the run's failure, which others read."""
    from accelerator_prefect.jobflow import _scrubbing

    key = "gen-" + uuid.uuid4().hex
    run_secrets.register(key)
    try:

        def rows(n: int) -> Any:
            yield n
            raise ValueError(f"auth failed for {key}")

        async def pages(n: int) -> Any:
            yield n
            raise ValueError(f"auth failed for {key}")

        with pytest.raises(ValueError) as caught:
            assert list(_scrubbing(rows)(1)) == [1]
        assert key not in str(caught.value) and "auth failed for ***" in str(caught.value)

        async def drain() -> list[int]:
            return [n async for n in _scrubbing(pages)(2)]

        with pytest.raises(ValueError) as caught_async:
            asyncio.run(drain())
        assert key not in str(caught_async.value)
    finally:
        run_secrets._VALUES.difference_update(run_secrets._forms(key))
