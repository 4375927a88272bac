"""The package as someone who installs it with pip gets it: the wheel built from this
repository, installed into a fresh virtual environment outside the checkout, then
`acc up --detach` and a launch there.

First without the `examples` extra (the platform comes up without the example models and
says what to install), then, on the same home, with it: `acc up` again publishes every
bundled model, from a git repository of the platform's own whose commit is a function of
the examples' content.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from accelerator_prefect import bundled
from accelerator_prefect.platform import free_port
from tests.conftest import ROOT

PYTHON = sys.executable


def run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def must(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A virtual environment outside the checkout with the wheel installed by pip, its
    versions held to the lock file's (as the README's pip line would resolve them today)."""
    work = tmp_path_factory.mktemp("pip-user")
    dist = work / "dist"
    must(run([PYTHON, "-m", "uv", "build", "--wheel", "-o", str(dist)], cwd=ROOT))
    (wheel,) = dist.glob("accelerator_prefect-*.whl")
    constraints = work / "constraints.txt"
    export = ["export", "--frozen", "--no-dev", "--extra", "examples", "--no-emit-project"]
    must(run([PYTHON, "-m", "uv", *export, "--no-hashes", "-o", str(constraints)], cwd=ROOT))
    venv = work / "venv"
    must(run([PYTHON, "-m", "venv", str(venv)], cwd=work))
    # pip byte-compiles what it installs, as for a user: every process started from the
    # environment (the server, the worker, each CLI call) then reads compiled modules.
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    pip += ["-c", str(constraints)]
    must(run([*pip, str(wheel)], cwd=work))
    return {"work": work, "venv": venv, "wheel": wheel}


def _env(home: Path) -> dict[str, str]:
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("ACC_", "PREFECT_"))}
    bare.pop("PYTHONPATH", None)
    return {**bare, "ACC_HOME": str(home), "COLUMNS": "200", "VIRTUAL_ENV": ""}


def acc(installed: dict[str, Path], home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        [str(installed["venv"] / "bin" / "acc"), *args], cwd=installed["work"], env=_env(home)
    )


def up_args() -> list[str]:
    return [
        *("up", "--detach", "--port", str(free_port()), "--no-catalog"),
        *("--portal-port", str(free_port()), "--factor-port", str(free_port())),
    ]


@pytest.fixture(scope="module")
def home(installed: dict[str, Path]) -> Iterator[Path]:
    """The user's home: the platform the first test brings up serves the second too, as it
    would the user who reads what to install, installs it, and runs `acc up` again."""
    home = installed["work"] / "home"
    yield home
    acc(installed, home, "down")


def test_without_the_examples_extra_acc_up_comes_up_and_says_what_to_install(
    installed: dict[str, Path], home: Path
) -> None:
    result = acc(installed, home, *up_args())
    out = " ".join(must(result).split())
    assert "not publishing the example models: they need" in out
    assert 'pip install "accelerator-prefect[examples]"' in out
    assert "published" not in out.replace("not publishing", "")
    listed = must(acc(installed, home, "list"))
    assert "climate-downscaling" not in listed


def test_the_wheel_with_its_examples_publishes_every_model_and_runs_one(
    installed: dict[str, Path], home: Path
) -> None:
    venv_python = str(installed["venv"] / "bin" / "python")
    wheel = f"{installed['wheel']}[examples]"
    must(run([venv_python, "-m", "pip", "install", "--quiet", wheel], cwd=installed["work"]))
    running = home / "platform.json"
    before = json.loads(running.read_text()) if running.exists() else None

    out = must(acc(installed, home, *up_args()))
    names = sorted(p.stem for p in bundled.manifests(ROOT))
    assert len(names) >= 2
    for name in names:
        assert f"published {name}@" in out, out
    if before is not None:  # the first test's platform: the same server serves them now
        assert json.loads(running.read_text())["server_pid"] == before["server_pid"]

    # Published from the platform's own repository, at a commit of the examples' content:
    # the files the wheel carries.
    shipped = installed["work"] / "shipped"
    with zipfile.ZipFile(installed["wheel"]) as archive:
        archive.extractall(shipped)
    content = bundled.content_hash(bundled._files(shipped / bundled.INSTALLED))
    examples = home / "examples"
    commit = must(run(["git", "-C", str(examples), "rev-parse", "HEAD"], cwd=examples))
    message = must(run(["git", "-C", str(examples), "log", "-1", "--format=%B"], cwd=examples))
    assert f"content sha256 {content}" in message
    shown = must(acc(installed, home, "show", "data-harmonization"))
    assert commit.strip()[:12] in shown

    launched = acc(
        installed,
        home,
        *("run", "data-harmonization", "-i", "acc://meteo/examples/stations/", "--wait"),
    )
    assert "Completed" in must(launched), launched.stdout
    run_id = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", launched.stdout)
    assert run_id, launched.stdout
    record = json.loads(must(acc(installed, home, "provenance", run_id.group(0))))
    assert record["code"]["commit"] == commit.strip()
