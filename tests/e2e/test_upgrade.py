"""Upgrading: an installation made by the previous release keeps what it holds when the
new release starts on its home.

The previous release is the newest tag reachable from this checkout's HEAD that is not
HEAD itself, else (a checkout without tags) the newest release ``releases.txt`` records
before HEAD; ``ACC_UPGRADE_FROM`` names another tag or commit. Its code, checked out in
a folder of its own and run with this checkout's environment (the same locked libraries,
its package first on ``PYTHONPATH``), starts a platform with `acc up` on a fresh home and
fills it as people would: two users of a project, each with a token, a model published
twice, a link to it and a run that wrote outputs. `acc down` stops it. This checkout's
`acc up` then starts on the same home, and everything is there and works: the tokens
still authenticate through the portal, the link opens the model, both versions are
listed, the run is listed Completed with the same outputs (byte for byte) and
provenance, and a rerun of it completes on the new release.

The test runs from any earlier commit too (``ACC_UPGRADE_FROM``, back to the releases that
had the portal, links and versions): from one before the warm worker was the default,
`acc up` moves the versions off the process worker's pool, or they would never run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import free_port
from tests.conftest import ROOT, ModelRepo, acc_home

# What a shell on the platform's machine holds: none of this session's platform, Prefect
# or pytest settings, and no PYTHONPATH but the one a release is given.
BARE = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("ACC_", "PREFECT_", "PYTEST_")) and k != "PYTHONPATH"
}

# Run with the previous release's code: fills the platform under ACC_HOME as its users
# would, through its public Python API (the operator on the platform's machine, the users
# through the portal with their tokens), and prints what it made as JSON.
FILL = textwrap.dedent("""
    import hashlib, json, subprocess, sys
    from pathlib import Path

    from accelerator_prefect import Accelerator

    given = json.loads(sys.argv[1])
    repo, model = Path(given["repo"]), given["model"]
    made = {}
    with Accelerator.connect(given["api_url"]) as operator:  # the home's operator token
        _, alice_token = operator.add_user("alice", {"demo": "author"})
        _, bob_token = operator.add_user("bob", {"demo": "member"})
    made["tokens"] = {"alice": alice_token, "bob": bob_token}

    alice = Accelerator.connect(url=given["portal"], token=alice_token)
    bob = Accelerator.connect(url=given["portal"], token=bob_token)
    for sample in sorted(Path(given["inputs"]).iterdir()):
        alice.storage.put(sample, "acc://demo/upgrade/")
    first = alice.publish(repo / "deployments" / f"{model}.yaml")
    (repo / "deployments" / f"{model}.yaml").write_text(given["second_manifest"])
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "1.1.0"], check=True)
    second = alice.publish(repo / "deployments" / f"{model}.yaml")
    made["published"] = [str(first), str(second)]
    made["versions"] = [
        {"version": v.version, "commit": v.commit, "status": str(v.status)}
        for v in alice.versions(model)
    ]

    link = alice.share_link(model)
    made["link"] = {"id": link.id, "token": link.token}

    run = bob.launch(model, {}, version="1.0.0", inputs=["acc://demo/upgrade/"])
    made["run"] = {"id": str(run.id), "state": run.wait(timeout=120)}
    made["run"]["outputs"] = {}
    for f in run.outputs():
        digest = hashlib.sha256(run.open_output(f.path).read()).hexdigest()
        made["run"]["outputs"][f.path] = {"size": f.size, "sha256": digest}
    made["run"]["result"] = run.result()
    made["run"]["provenance"] = run.provenance().model_dump(mode="json")
    for client in (alice, bob):
        client.close()
    print(json.dumps(made))
""")

SECOND_MANIFEST_EXTRA = "tags: [upgrade, second]"
OUTPUTS = ("gauges.csv.rows.txt", "stations.csv.rows.txt", "summary.csv")  # the tables model's


@dataclass(frozen=True)
class Release:
    """A release of accelerator-prefect that can run here: its code's folder (``None``:
    this checkout's, as installed) and its ``acc`` entry point (``module:function``)."""

    name: str
    code: Path | None
    entry: str

    def env(self, home: Path) -> dict[str, str]:
        env = {**BARE, "ACC_HOME": str(home), "COLUMNS": "200"}
        if self.code is not None:
            env["PYTHONPATH"] = str(self.code)  # its package before the installed one
        return env

    def python(
        self, home: Path, cwd: Path, *args: str, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """``python ARGS`` with this release's code, in ``cwd`` (never this checkout: ``-c``
        and ``-m`` put the working folder first on the path)."""
        return subprocess.run(
            [sys.executable, *args],
            env=self.env(home),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def acc(
        self, home: Path, cwd: Path, *args: str, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """``acc ARGS``, as this release's entry point runs it."""
        module, _, function = self.entry.partition(":")
        call = f"import sys; sys.argv[0] = 'acc'; from {module} import {function}; {function}()"
        return self.python(home, cwd, "-c", call, *args, timeout=timeout)


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def previous_release() -> str:
    """The tag or commit to upgrade from: ``ACC_UPGRADE_FROM``, else the newest tag reachable
    from HEAD on another commit than HEAD's, else the newest recorded release before HEAD;
    skips when there is none to find."""
    if not (ROOT / ".git").exists():
        pytest.skip("upgrades are tested in a git checkout of the repository")
    if _git("rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("the checkout's history is shallow: the previous release is not in it")
    asked = os.environ.get("ACC_UPGRADE_FROM", "").strip()
    if asked:
        return asked
    head = _git("rev-parse", "HEAD")
    for start in ("HEAD", "HEAD^"):
        try:
            tag = _git("describe", "--tags", "--abbrev=0", start)
        except RuntimeError:
            break  # no tag reachable (or HEAD has no parent)
        if _git("rev-parse", f"{tag}^{{commit}}") != head:
            return tag
    for _tag, commit in recorded_releases():  # a checkout without tags
        if commit != head and _is_ancestor(commit, head):
            return commit
    pytest.skip("no release before HEAD in this checkout (set ACC_UPGRADE_FROM)")


def recorded_releases() -> list[tuple[str, str]]:
    """The releases listed in ``releases.txt`` beside this test, newest first: (tag,
    commit)."""
    lines = (Path(__file__).with_name("releases.txt")).read_text().splitlines()
    return [
        (parts[0], parts[1])
        for parts in (line.split() for line in lines if line.strip() and not line.startswith("#"))
    ]


def _is_ancestor(commit: str, head: str) -> bool:
    try:
        _git("merge-base", "--is-ancestor", commit, head)
    except RuntimeError:
        return False  # not an ancestor, or not in this history
    return True


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """The previous release, checked out in a clean folder of its own."""
    name = previous_release()
    folder = tmp_path_factory.mktemp("previous-release") / "code"
    _git("clone", "--shared", "-q", "--no-checkout", str(ROOT), str(folder))
    _git("checkout", "-q", "--detach", name, cwd=folder)
    scripts = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["scripts"]
    return Release(name, folder, scripts["acc"])


NEW = Release(
    "this checkout",
    None,
    tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["acc"],
)


@dataclass
class Installation:
    home: Path
    shell: Path  # where the operator's commands run
    repo: ModelRepo
    inputs: Path
    timings: dict[str, float]


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory, old: Release) -> Iterator[Installation]:
    """A fresh home; whichever release runs on it is stopped at the end."""
    folder = tmp_path_factory.mktemp("upgrade")
    shell = folder / "shell"
    shell.mkdir()
    inputs = folder / "inputs"
    inputs.mkdir()
    (inputs / "stations.csv").write_text("station,value\nA,1\nB,2\nC,3\n")
    (inputs / "gauges.csv").write_text("gauge,level\nX,0.5\n")
    repo = ModelRepo(folder / "models", f"tables-{uuid.uuid4().hex[:6]}").tables()
    repo.commit("tables 1.0.0")
    found = Installation(folder / "home", shell, repo, inputs, {})
    try:
        yield found
    finally:
        for release in (NEW, old):  # whichever started it; the other finds nothing
            release.acc(found.home, shell, "down", timeout=120)


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def _up(release: Release, place: Installation) -> tuple[dict[str, Any], str]:
    """`acc up --detach` with ``release`` on free ports: platform.json and what it printed."""
    # Without the examples no emission-factor service is served: no --factor-port (which
    # releases before it do not know).
    ports = {name: free_port() for name in ("port", "portal-port")}
    started = time.monotonic()
    done = release.acc(
        place.home,
        place.shell,
        *("up", "--detach", "--no-catalog", "--no-examples"),
        *(arg for name, port in ports.items() for arg in (f"--{name}", str(port))),
    )
    place.timings[f"acc up ({release.name})"] = time.monotonic() - started
    assert done.returncode == 0, _said(done)
    return json.loads((place.home / "platform.json").read_text()), done.stdout


def _down(release: Release, place: Installation) -> None:
    started = time.monotonic()
    done = release.acc(place.home, place.shell, "down", timeout=120)
    place.timings[f"acc down ({release.name})"] = time.monotonic() - started
    assert done.returncode == 0 and "stopped." in done.stdout, _said(done)


def _sha256(stream: Any) -> str:
    with stream as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_an_installation_of_the_previous_release_keeps_everything_on_upgrade(
    old: Release, installation: Installation
) -> None:
    place, model = installation, installation.repo.name

    # The previous release's code is what runs: its package, from its own checkout.
    where = old.python(
        place.home,
        place.shell,
        "-c",
        "import accelerator_prefect; print(accelerator_prefect.__file__)",
    )
    assert where.returncode == 0, _said(where)
    assert old.code is not None and Path(where.stdout.strip()).is_relative_to(old.code)

    # The previous release makes an installation and fills it.
    info, _ = _up(old, place)
    worker_env = Path(f"/proc/{info['worker_pid']}/environ")
    if worker_env.exists():  # its worker, which runs the models, runs its code too
        assert f"PYTHONPATH={old.code}".encode() in worker_env.read_bytes().split(b"\0")
    first = place.repo.manifest.read_text()
    assert "version: 1.0.0" in first
    second = first.replace("version: 1.0.0", "version: 1.1.0") + SECOND_MANIFEST_EXTRA + "\n"
    given = {
        "api_url": info["api_url"],
        "portal": info["portal_url"],
        "repo": str(place.repo.path),
        "model": model,
        "inputs": str(place.inputs),
        "second_manifest": second,
    }
    started = time.monotonic()
    filled = old.python(place.home, place.shell, "-c", FILL, json.dumps(given), timeout=300)
    place.timings["fill (previous release)"] = time.monotonic() - started
    assert filled.returncode == 0, _said(filled)
    made = json.loads(filled.stdout.strip().splitlines()[-1])
    assert made["run"]["state"] == "Completed", made["run"]
    assert set(made["run"]["outputs"]) == set(OUTPUTS), made["run"]["outputs"]
    assert sorted(v["version"] for v in made["versions"]) == ["1.0.0", "1.1.0"]
    _down(old, place)

    # This release starts on the same home.
    before = info
    info, said = _up(NEW, place)
    assert "created the operator" not in said  # the operator and its token were kept
    if (before["work_pool"], info["work_pool"]) == ("acc-process", "acc-warm"):
        # A release before the warm worker was the default: its versions join the warm pool.
        assert "moved 2 version(s) from the pool 'acc-process'" in " ".join(said.split()), said
    portal, api = info["portal_url"], f"{info['portal_url']}/api/v1"
    started = time.monotonic()

    # Users and their tokens authenticate through the portal, over plain HTTP too.
    tokens = made["tokens"]
    for name, role in (("alice", "author"), ("bob", "member")):
        me = httpx.get(f"{api}/me", headers={"Authorization": f"Bearer {tokens[name]}"})
        assert me.status_code == 200, me.text
        assert me.json()["name"] == name and me.json()["projects"] == {"demo": role}
    forged = httpx.get(f"{api}/me", headers={"Authorization": f"Bearer {tokens['bob']}x"})
    assert forged.status_code == 401
    with acc_home(place.home), Accelerator.connect(info["api_url"]) as operator:
        users = {u.name: u for u in operator.users()}
        assert {"operator", "alice", "bob"} <= set(users)
        assert users["alice"].projects == {"demo": "author"}
    alice = Accelerator.connect(url=portal, token=tokens["alice"])
    bob = Accelerator.connect(url=portal, token=tokens["bob"])
    assert alice.user == "alice" and bob.user == "bob"

    # Both versions are listed, from the commits they were published from.
    versions = {v.version: v for v in alice.versions(model)}
    assert set(versions) == {"1.0.0", "1.1.0"}
    for before in made["versions"]:
        assert versions[before["version"]].commit == before["commit"]
        assert str(versions[before["version"]].status) == before["status"]
    assert versions["1.0.0"].runs == 1
    assert bob.get(model).latest.version == "1.1.0"

    # The link is listed active and still opens the model, to a guest of its own.
    links = {link.id: link for link in alice.links(model)}
    assert links[made["link"]["id"]].active
    with Accelerator.connect(url=portal, link=made["link"]["token"]) as guest:
        assert guest.principal.guest
        assert guest.get(model).name == model

    # The run is listed as it ended, with the same outputs, byte for byte, and provenance.
    run_id = made["run"]["id"]
    listed = {r.id: r for r in bob.runs(model)}
    assert listed[run_id].state == "Completed" and listed[run_id].version == "1.0.0"
    assert listed[run_id].user == "bob"
    run = bob.run(run_id)
    outputs = {f.path: f for f in run.outputs()}
    assert set(outputs) == set(made["run"]["outputs"])
    for path, before in made["run"]["outputs"].items():
        assert not outputs[path].altered and outputs[path].size == before["size"], path
        assert _sha256(run.open_output(path)) == before["sha256"], path
    assert run.result() == made["run"]["result"]
    provenance = run.provenance().model_dump(mode="json")
    assert {k: provenance.get(k) for k in made["run"]["provenance"]} == made["run"]["provenance"]

    # A rerun of the old run completes on this release: the same version, code and inputs.
    again = bob.rerun(run_id)
    assert again.wait(timeout=120) == "Completed", again.logs()
    redone = again.provenance()
    assert (redone.version, redone.code.commit) == ("1.0.0", versions["1.0.0"].commit)
    assert [(i.uri, i.sha256) for i in redone.inputs] == [
        (i["uri"], i["sha256"]) for i in made["run"]["provenance"]["inputs"]
    ]
    for path in OUTPUTS:
        assert _sha256(again.open_output(path)) == made["run"]["outputs"][path]["sha256"]
    place.timings["checks and rerun (this checkout)"] = time.monotonic() - started
    for client in (alice, bob):
        client.close()
    _down(NEW, place)
    print("upgrade from", old.name, {k: f"{v:.1f} s" for k, v in place.timings.items()})
