"""`acc init`: the repository an author starts from runs its own test on this machine, and
publishes and runs on the session's real platform as its README says."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from git import Repo

from accelerator_prefect import Accelerator
from accelerator_prefect.errors import InvalidConf
from accelerator_prefect.manifest import load_manifest, manifest_json_schema
from accelerator_prefect.platform import PlatformInfo
from tests.test_cli import acc_cli


def _init(platform: PlatformInfo, folder: Path, name: str, *extra: str) -> tuple[int, str]:
    return acc_cli(
        platform,
        "init",
        name,
        "--dir",
        str(folder),
        "--project",
        "demo",
        "--owner",
        "alice",
        *extra,
    )


def test_acc_init_writes_a_repository_whose_own_test_passes(
    platform: PlatformInfo, tmp_path: Path
) -> None:
    folder = tmp_path / "flood-frequency"
    code, output = _init(platform, folder, "flood-frequency", "--title", "Flood frequency")
    assert code == 0, output
    assert "flows/flood_frequency.py" in output and "pytest" in output
    manifest = load_manifest(folder / "deployments" / "flood-frequency.yaml")
    assert (manifest.name, manifest.owner, manifest.project) == ("flood-frequency", "alice", "demo")
    assert manifest.title == "Flood frequency"
    # The manifest's $schema names a file beside it, which the repository holds.
    text = (folder / "deployments" / "flood-frequency.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=./manifest.schema.json\n")
    schema = (folder / "deployments" / "manifest.schema.json").read_text()
    assert json.loads(schema) == json.loads(manifest_json_schema())
    assert (folder / ".git").is_dir()
    assert "dependencies = []" in (folder / "pyproject.toml").read_text()

    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 passed" in ran.stdout


def test_acc_init_refuses_a_folder_with_files_and_names_a_bad_name(
    platform: PlatformInfo, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, output = _init(platform, tmp_path, "fine-name")
    assert code == 1
    assert "is not empty" in output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # nothing written

    code, output = _init(platform, tmp_path / "new", "Flood_Model")
    assert code == 1
    assert "name: 'Flood_Model' is not a valid name" in output
    assert not (tmp_path / "new").exists()


def test_a_scaffolded_model_publishes_and_runs_as_its_readme_says(
    platform: PlatformInfo, acc: Accelerator, tmp_path: Path
) -> None:
    name = f"starter-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    code, output = _init(platform, folder, name)
    assert code == 0, output
    repo = Repo(folder)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Alice")
        config.set_value("user", "email", "alice@example.invalid")
    repo.git.add(A=True)
    repo.index.commit(f"{name} 0.1.0")

    code, output = acc_cli(platform, "publish", str(folder / "deployments" / f"{name}.yaml"))
    assert code == 0, output
    (version,) = acc.get(name).versions
    assert version.record.environment is None  # no libraries declared: the platform's own
    examples = f"acc://demo/examples/{name}/"
    code, output = acc_cli(platform, "put", str(folder / "samples" / "observations.csv"), examples)
    assert code == 0, output

    run = acc.launch(
        name,
        {"scale": 2.0, "threshold": 25},
        version="0.1.0",
        inputs=[examples + "observations.csv"],
    )
    assert run.wait(timeout=180) == "Completed", run.logs()
    assert run.result() == {"tables": 1, "overall_mean": 26.0}
    (summary,) = [f for f in run.outputs() if f.path == "summary.csv"]
    assert summary.size > 0

    with pytest.raises(InvalidConf, match="colum"):  # a misspelt field, refused at launch
        acc.launch(name, {"colum": "value"}, version="0.1.0", inputs=[examples])
