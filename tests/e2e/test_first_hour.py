"""An author's first hour, as docs/authors.md tells it, with the real `acc` CLI.

An operator, at the platform's machine (the session's platform and portal, started as `acc
up` starts them; `acc up` itself is tests/e2e/test_acc_up.py's), adds an author and a
colleague with `acc users add`. The author, in a folder of their own outside this checkout
and holding only the portal's address and a token, starts a repository with `acc init`,
runs its own test, commits, publishes it private, and opens it to the project with
`acc access`; the colleague, who could not see it until then, runs it and downloads what
it wrote.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from accelerator_prefect.platform import PlatformInfo
from tests.conftest import ROOT

ACC = str(Path(sys.executable).parent / "acc")
TOKEN = re.compile(r"acc_[A-Za-z0-9_-]+")
RUN_ID = re.compile(r"launched flood-frequency@0\.1\.0 run ([0-9a-f-]{36})")

# What a person's shell holds: none of this session's platform, Prefect or pytest settings.
BARE = {k: v for k, v in os.environ.items() if not k.startswith(("ACC_", "PREFECT_", "PYTEST_"))}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Dana",
    "GIT_AUTHOR_EMAIL": "dana@example.org",
    "GIT_COMMITTER_NAME": "Dana",
    "GIT_COMMITTER_EMAIL": "dana@example.org",
}


@dataclass
class Person:
    """Someone at their own shell: their folder, their environment."""

    folder: Path
    env: dict[str, str]
    portal: str = ""  # the portal's address, as `acc up` printed it

    def acc(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.run([ACC, *args], timeout=timeout)

    def run(
        self, argv: list[str], cwd: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env=self.env,
            cwd=cwd or self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def said(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stdout + result.stderr).split())


@pytest.fixture(scope="module")
def operator(
    platform: PlatformInfo, portal: str, tmp_path_factory: pytest.TempPathFactory
) -> Person:
    """The operator's shell on the platform's machine: the `acc` CLI on the platform's home,
    and the portal's address users are given."""
    folder = tmp_path_factory.mktemp("first-hour")
    person = Person(folder, {**BARE, "ACC_HOME": str(platform.home), "COLUMNS": "200"})
    person.portal = f"{portal}/api/v1"
    return person


def user(operator: Person, name: str, project: str) -> Person:
    """`acc users add NAME --project PROJECT`: a person holding the token it printed."""
    added = operator.acc("users", "add", name, "--project", project)
    assert added.returncode == 0, added.stdout + added.stderr
    assert f"token (shown once; give it to {name})" in said(added)
    token = TOKEN.findall(added.stdout)[-1]
    folder = operator.folder / name
    folder.mkdir()
    env = {
        **BARE,
        **GIT_IDENTITY,
        "ACC_HOME": str(folder / ".accelerator"),
        "ACC_URL": operator.portal,
        "ACC_TOKEN": token,
        "COLUMNS": "200",
    }
    return Person(folder, env)


def test_an_author_publishes_privately_and_opens_the_model_to_a_colleague(
    operator: Person,
) -> None:
    dana = user(operator, "dana", "hydrology:author")
    bob = user(operator, "bob", "hydrology")
    assert not dana.folder.is_relative_to(ROOT)

    # Each of them is who the operator made them, through the portal.
    whoami = dana.acc("whoami")
    assert whoami.returncode == 0, said(whoami)
    assert said(whoami).startswith("dana — user acting through the portal at")
    assert "hydrology │ author │ see, run and publish as owner dana" in whoami.stdout
    whoami = bob.acc("whoami")
    assert said(whoami).startswith("bob — user acting through the portal at")
    assert "hydrology │ member │ see and run" in whoami.stdout

    # acc init writes a repository whose own test passes, with the Python acc runs with.
    init = dana.acc("init", "flood-frequency", "--project", "hydrology")  # owner: ACC_TOKEN's
    assert init.returncode == 0, said(init)
    repo = dana.folder / "flood-frequency"
    manifest = (repo / "deployments" / "flood-frequency.yaml").read_text()
    assert "owner: dana" in manifest and "project: hydrology" in manifest
    assert re.search(r"^\s+scope: private\b", manifest, re.MULTILINE), manifest
    tested = dana.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], repo)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout

    # Commit, publish as herself, and put the sample where the manifest says it is.
    for argv in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "flood-frequency 0.1.0"]):
        done = dana.run(argv, repo)
        assert done.returncode == 0, done.stdout + done.stderr
    published = dana.run([ACC, "publish", "deployments/flood-frequency.yaml"], repo)
    assert published.returncode == 0, said(published)
    assert "published flood-frequency@0.1.0: created (commit" in published.stdout
    # The sample is not there yet: publishing says so, and how to put it there.
    assert "inputs.samples[0]: acc://hydrology/examples/flood-frequency/ is not in storage" in (
        said(published)
    )
    put = dana.run(
        [ACC, "put", "samples/observations.csv", "acc://hydrology/examples/flood-frequency/"],
        repo,
    )
    assert put.returncode == 0, said(put)
    shown = dana.acc("show", "flood-frequency")
    assert "owner dana · project hydrology · scope private" in said(shown)

    # Private: to the colleague, in the same project, the model does not exist.
    assert "flood-frequency" not in bob.acc("list").stdout
    for args in (
        ("show", "flood-frequency"),
        ("run", "flood-frequency", "-i", "acc://hydrology/examples/flood-frequency/", "--wait"),
    ):
        refused = bob.acc(*args)
        assert refused.returncode == 1
        assert "error: model 'flood-frequency' not found" in refused.stderr

    # One command opens every version to the project, with no release.
    opened = dana.acc("access", "flood-frequency", "--scope", "project")
    assert opened.returncode == 0, said(opened)
    assert said(opened).startswith("flood-frequency is project (set by dana,")
    assert "every version (0.1.0)" in said(opened)

    ran = bob.acc(
        *("run", "flood-frequency", "-c", "scale=2"),
        *("-i", "acc://hydrology/examples/flood-frequency/", "--wait"),
    )
    assert ran.returncode == 0, said(ran)
    found = RUN_ID.search(ran.stdout)
    assert found, ran.stdout
    run_id = found[1]
    assert "Completed" in ran.stdout and "summary.csv" in ran.stdout

    outputs = bob.acc("outputs", run_id)
    assert outputs.returncode == 0, said(outputs)
    assert "summary.csv" in outputs.stdout and "text/csv" in outputs.stdout
    where = f"acc://hydrology/results/flood-frequency/0.1.0/{run_id}/"
    got = bob.acc("get", where, "results/")
    assert got.returncode == 0, said(got)
    summary = (bob.folder / "results" / "summary.csv").read_text().splitlines()
    assert summary[0] == "file,rows,mean,min,max,above_threshold"
    assert summary[1:] == ["observations.csv,4,26.0,19.0,32.0,"]  # the sample, times 2
    assert (bob.folder / "results" / "provenance.json").is_file()

    # The author sees the colleague's run, how long it took, and the model's new scope.
    runs = dana.acc("runs", "flood-frequency")
    assert runs.returncode == 0, said(runs)
    assert run_id in runs.stdout and " bob " in runs.stdout and "Completed" in runs.stdout
    usage = dana.acc("usage", "flood-frequency")
    assert usage.returncode == 0, said(usage)
    assert "0.1.0" in usage.stdout and "100%" in usage.stdout
    assert "scope project" in said(dana.acc("show", "flood-frequency"))
