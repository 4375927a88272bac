"""``acc init``: a model's repository to start from.

It holds everything an author changes rather than writes: a jobflow with its ``Conf``,
the manifest (with the JSON Schema editors validate it against, as a file beside it, so
it works outside this project), a ``pyproject.toml`` where the model's libraries go, a
sample input, a test that runs the jobflow on a temporary Prefect server and a README
with the next steps. The model computes with the standard library only, so the test
runs anywhere the product is installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from accelerator_prefect.errors import AcceleratorError
from accelerator_prefect.manifest import SLUG


class ScaffoldError(AcceleratorError):
    """The repository cannot be written where asked."""


@dataclass(frozen=True)
class Model:
    """What ``acc init`` fills in."""

    name: str
    owner: str
    project: str
    title: str

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")


def check_names(model: Model) -> None:
    """Refuse names the manifest would refuse, naming each."""
    problems = [
        f"{field}: {value!r} is not a valid name; expected lowercase letters, digits and "
        "hyphens, starting with a letter or digit (e.g. crop-yield)"
        for field, value in (("name", model.name), ("owner", model.owner))
        if not re.match(SLUG, value)
    ]
    if not re.match(SLUG, model.project):
        problems.append(
            f"project: {model.project!r} is not a valid name; expected lowercase letters, "
            "digits and hyphens (e.g. agronomy)"
        )
    if problems:
        raise ScaffoldError("; ".join(problems))


def files(model: Model) -> dict[str, str]:
    """Path in the repository → content."""
    from accelerator_prefect.manifest import manifest_json_schema

    values = {
        "name": model.name,
        "module": model.module,
        "owner": model.owner,
        "project": model.project,
        "title": model.title,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }

    def fill(template: str) -> str:
        return Template(template).substitute(values).lstrip("\n")

    return {
        "pyproject.toml": fill(PYPROJECT),
        f"flows/{model.module}.py": fill(JOBFLOW),
        f"deployments/{model.name}.yaml": fill(MANIFEST),
        "deployments/manifest.schema.json": manifest_json_schema(),
        "samples/observations.csv": SAMPLE,
        f"tests/test_{model.module}.py": fill(TEST),
        "README.md": fill(README),
        ".gitignore": "__pycache__/\n.pytest_cache/\n.venv/\n",
    }


def write(folder: Path, model: Model) -> list[Path]:
    """Write the repository into ``folder`` (new, or empty but for a ``.git``), starting
    a git repository there unless it is inside one already; the files written."""
    check_names(model)
    if folder.exists() and not folder.is_dir():
        raise ScaffoldError(f"{folder} is a file; name a new or empty folder")
    if folder.exists() and any(p.name != ".git" for p in folder.iterdir()):
        raise ScaffoldError(f"{folder} is not empty; name a new or empty folder")
    written = []
    for relative, content in files(model).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if inside.returncode != 0:
        subprocess.run(["git", "init", "--quiet"], cwd=folder, check=True)
    return written


PYPROJECT = """
[project]
name = "$name"
version = "0.1.0"
description = "$title"
requires-python = ">=$python"
# The libraries the model computes with, e.g. ["pandas>=2.2", "xarray"]. Publishing
# locks them, and every run of a version uses exactly that lock (docs/authors.md,
# "Libraries"). Empty: the model runs with the platform's own libraries.
dependencies = []

[dependency-groups]
dev = ["pytest"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
"""

JOBFLOW = '''
"""$title: the mean and range of one column of each CSV table the user selects."""

import csv
import io
import statistics

from pydantic import Field

from accelerator_prefect import Conf, InputFile, Inputs, Output, jobflow, routine


class SummaryConf(Conf):
    """The form people fill in before a run: each field's description is its help."""

    column: str = Field(default="value", description="The column to summarise.")
    scale: float = Field(default=1.0, gt=0, description="Factor applied to every value.")
    threshold: float | None = Field(
        default=None, description="Count the values above it (empty: do not count)."
    )


@routine(retries=1)
def summarise(conf: SummaryConf, table: InputFile) -> dict:
    """One table's statistics; a routine is a Prefect task, shown as a step of the run."""
    rows = csv.DictReader(io.StringIO(table.read_text()))
    if rows.fieldnames is None or conf.column not in rows.fieldnames:
        raise ValueError(f"{table.name}: no column {conf.column!r} (it has {rows.fieldnames})")
    values = [float(row[conf.column]) * conf.scale for row in rows if row[conf.column]]
    if not values:
        raise ValueError(f"{table.name}: the column {conf.column!r} holds no values")
    above = sum(v > conf.threshold for v in values) if conf.threshold is not None else None
    return {
        "file": table.relative,
        "rows": len(values),
        "mean": round(statistics.fmean(values), 6),
        "min": min(values),
        "max": max(values),
        "above_threshold": above,
    }


@jobflow(name="$name")
def $module(conf: SummaryConf, inputs: Inputs, output: Output) -> dict:
    """Summarise each selected table into summary.csv; return the overall mean."""
    results = [summarise(conf, table) for table in inputs.files()]
    with output.open("summary.csv", "w") as f:  # appears only once complete
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    overall = statistics.fmean(r["mean"] for r in results)
    return {"tables": len(results), "overall_mean": round(overall, 6)}
'''

MANIFEST = """
# yaml-language-server: $$schema=./manifest.schema.json
name: $name
title: $title
description: |
  The mean, minimum and maximum of one column of each CSV table you select,
  each value multiplied by a factor. **You get** `summary.csv`, one row per table.
version: 0.1.0
jobflow: flows/$module.py:$module
owner: $owner
project: $project
access:
  scope: private          # private | project | public | link
inputs:
  min_files: 1
  max_files: 50
  accepted_types: [".csv"]
  sources: [storage]
  max_total_size: "100 MB"
  samples: ["acc://$project/examples/$name/"]
output:
  location: "acc://{project}/results/{model}/{version}/{run_id}/"
tags: [example]
"""

SAMPLE = "day,value\n2024-06-01,12.5\n2024-06-02,14.0\n2024-06-03,9.5\n2024-06-04,16.0\n"

TEST = '''
"""Runs the jobflow on a temporary Prefect server, with storage in a temporary folder:
what a run on the platform does, on this machine. `pytest` runs it."""

import shutil
from pathlib import Path

import pytest

SAMPLE = Path(__file__).parent.parent / "samples" / "observations.csv"


@pytest.fixture()
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """acc:// in a temporary folder, holding the sample as acc://$project/examples/."""
    root = tmp_path / "storage"
    (root / "$project" / "examples").mkdir(parents=True)
    shutil.copy(SAMPLE, root / "$project" / "examples" / SAMPLE.name)
    monkeypatch.setenv("ACC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ACC_STORAGE_URL", root.as_uri())
    return root


def test_the_jobflow_summarises_the_sample(storage: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from accelerator_prefect import Inputs, Output
    from flows.$module import SummaryConf, $module

    with prefect_test_harness(server_startup_timeout=180):  # a busy machine starts it slowly
        result = $module(
            conf=SummaryConf(scale=2.0, threshold=25),
            inputs=Inputs(selected_files=["acc://$project/examples/observations.csv"]),
            output=Output(location="acc://$project/results/local/"),
        )
    assert result == {"tables": 1, "overall_mean": 26.0}
    summary = (storage / "$project" / "results" / "local" / "summary.csv").read_text()
    assert summary.splitlines()[1] == "observations.csv,4,26.0,19.0,32.0,2"


def test_misspelt_conf_fields_are_refused() -> None:
    from flows.$module import SummaryConf

    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        SummaryConf.model_validate({"colum": "value"})
'''

README = """
# $title

A model hosted with accelerator-prefect: people run it from the catalog, with their own
tables and settings, on the platform's workers.

| file | what it is |
|---|---|
| `flows/$module.py` | the jobflow: its `Conf` is the run form, its routines the run's steps |
| `deployments/$name.yaml` | the manifest: name, version, owner, access, inputs |
| `deployments/manifest.schema.json` | lets your editor check the manifest |
| `pyproject.toml` | the libraries the model needs, in `dependencies` |
| `samples/observations.csv` | a sample input |
| `tests/test_$module.py` | runs the jobflow on this machine |

## Try it here

With the Python that has accelerator-prefect (the one `acc` runs with):

    python -m pip install pytest
    python -m pytest        # about half a minute: it starts a temporary Prefect server

## Publish it

Publishing needs an identity: an operator runs
`acc users add $owner --project $project:author` and gives you a token, which you keep
in `ACC_TOKEN` (with `ACC_URL`, the portal's address). `acc whoami` says who you
are. Then:

    git add -A && git commit -m "$name 0.1.0"
    acc publish deployments/$name.yaml
    acc put samples/observations.csv acc://$project/examples/$name/
    acc run $name --version 0.1.0 --input acc://$project/examples/$name/observations.csv

The model is `private` (you and operators only, not even your project's members) until
you open it: `acc access $name --scope project`, for every version at once. Each change of
code or form needs a new `version`; `docs/authors.md` of accelerator-prefect says more.
"""
