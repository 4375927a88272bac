"""B13: runs in versions' own environments (issue 20) on the warm worker, against runs
with the platform's own libraries, in the same run.

One embedded platform (``acc up``'s warm worker, Prefect server on SQLite). A trivial
model whose repository declares a requirements.txt pinning a small library (termcolor),
published as one version per lock, and the same jobflow in a repository that declares
nothing (the platform's libraries). Launch → Completed, each run polled every 20 ms:

- **new environment, not on the worker**: a version whose environment was removed from
  the machine after publish, so that the run builds it (uv, from its lock and uv's
  cache), starts its warm parent, then runs;
- **first run after publish**: the environment is built (publish does it), its warm
  parent is not started yet;
- **warm, environment A / B**: later runs of two versions with different locks,
  alternating, each on its own warm parent;
- **warm, platform's libraries**: the version that declares nothing.

Target (issue 20): warm runs in an environment meet the warm worker's target, a median
of at most 0.5 s, once their warm parent is up.

    python -m benchmarks.environments --runs 20 --cold 3
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import (
    TRIVIAL_FLOW,
    Report,
    command,
    load_average,
    median,
    p95,
    until_completed,
)
from benchmarks.common import parser as common_parser

NAME = "environments"
TARGET_SECONDS = 0.5
MODEL = "bench-env"
PLAIN = "bench-plain"
# One lock per cold run: each is a termcolor release, a pure-Python wheel of a few kB.
COLD_PINS = ("2.1.0", "2.2.0", "2.0.1", "1.1.0", "2.3.0")
WARM_PINS = {"A": "2.4.0", "B": "2.5.0"}

MANIFEST = """
name: {name}
title: Trivial
version: {version}
jobflow: flows/trivial.py:trivial
owner: operator
project: bench
access:
  scope: project
"""

COLUMNS = ["Run", "Runs", "Median s", "p95 s", "Target", "Met?"]
SIDES = {
    "cold-build": "new environment, not on the worker: build + warm parent + run",
    "first": "first run after publish: warm parent started + run",
    "warm-A": "warm, environment A (termcolor 2.4.0)",
    "warm-B": "warm, environment B (termcolor 2.5.0)",
    "warm-platform": "warm, the platform's libraries (no environment declared)",
}


class _Repo:
    """A git repository of the trivial model, one commit per version."""

    def __init__(self, folder: Path, name: str) -> None:
        from git import Repo

        self.folder, self.name = folder, name
        self.repo = Repo.init(folder)
        with self.repo.config_writer() as config:
            config.set_value("user", "name", "Benchmark")
            config.set_value("user", "email", "bench@example.invalid")
        (folder / "flows").mkdir(parents=True)
        (folder / "deployments").mkdir()
        (folder / "flows" / "trivial.py").write_text(
            textwrap.dedent(
                TRIVIAL_FLOW.format(
                    name=name, imports="import termcolor\n" if name == MODEL else ""
                )
            ).lstrip()
        )

    def publish(self, acc: Any, version: str, pin: str | None) -> Any:
        if pin is not None:
            (self.folder / "requirements.txt").write_text(f"termcolor=={pin}\n")
        manifest = self.folder / "deployments" / f"{self.name}.yaml"
        manifest.write_text(textwrap.dedent(MANIFEST.format(name=self.name, version=version)))
        self.repo.git.add(A=True)
        self.repo.index.commit(version)
        acc.publish(manifest)
        (hosted,) = [v for v in acc.get(self.name).versions if v.version == version]
        return hosted.record


PHASES: dict[str, list[dict[str, float]]] = {}
"""Each timed run's phases (launch, pick-up, start, run), by side, as B11 splits them."""


def _timed(acc: Any, model: str, version: str, side: str | None = None) -> float:
    from benchmarks.warm_worker import _phases

    start = time.perf_counter()
    run = acc.launch(model, {"x": 1}, version=version)
    launched = time.perf_counter() - start
    acc._call(lambda client: until_completed(client, run.id, deadline=600))
    seconds = time.perf_counter() - start
    if side is not None:
        phases = acc._call(lambda client: _phases(client, run.id))
        PHASES.setdefault(side, []).append({"launch": launched, **phases})
    return seconds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--runs", type=int, default=20, help="timed warm runs per side")
    parser.add_argument(
        "--cold", type=int, default=3, help=f"cold runs of each kind (at most {len(COLD_PINS)})"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or not 1 <= args.cold <= len(COLD_PINS):
        parser.error(f"--runs must be at least 1, --cold between 1 and {len(COLD_PINS)}")
    return args


def run(args: argparse.Namespace, console: Console) -> Report:
    from accelerator_prefect import Accelerator
    from accelerator_prefect import environments as envs
    from accelerator_prefect.platform import down, free_port, up

    report = Report(NAME, "B13 — runs in a version's own environment (warm worker)", COLUMNS)
    workdir = Path(tempfile.mkdtemp(prefix="acc-bench-env-"))
    home = workdir / "home"
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    builds: list[float] = []
    try:
        with console.status("starting a platform (Prefect server on SQLite)…"):
            info, _ = up(home, port=free_port(), examples=[], catalog_port=None, portal_port=None)
        acc = Accelerator.connect(info.api_url, home=home, trusted_user="operator")
        model = _Repo(workdir / "model", MODEL)
        plain = _Repo(workdir / "plain", PLAIN)
        plain.publish(acc, "1.0.0", None)
        for index in range(args.cold):
            pin = COLD_PINS[index]
            with console.status(f"cold runs with termcolor {pin}…"):
                record = model.publish(acc, f"0.{index}.0", pin)
                shutil.rmtree(envs.folder(home, record.environment))  # not on this machine
                samples["cold-build"].append(_timed(acc, MODEL, f"0.{index}.0"))
                builds.append(_build_seconds(home, record))
        for side, pin in WARM_PINS.items():
            model.publish(acc, f"1.{ord(side) - ord('A')}.0", pin)
        versions = {
            "warm-A": (MODEL, "1.0.0"),
            "warm-B": (MODEL, "1.1.0"),
            "warm-platform": (PLAIN, "1.0.0"),
        }
        for side in ("warm-A", "warm-B"):  # built at publish; the first run starts its parent
            samples["first"].append(_timed(acc, *versions[side]))
        _timed(acc, *versions["warm-platform"])  # untimed: same as the others' first
        load_before = load_average()
        order = list(versions)
        for round_ in range(args.runs):
            for side in order if round_ % 2 == 0 else order[::-1]:
                console.print(f"[dim]run {round_ + 1}/{args.runs}: {side}")
                samples[side].append(_timed(acc, *versions[side], side=side))
        acc.close()
    finally:
        down(home)
        shutil.rmtree(workdir, ignore_errors=True)
    results = {
        side: {
            "seconds": [round(s, 3) for s in values],
            "median_s": round(median(values), 3),
            "p95_s": round(p95(values), 3),
        }
        for side, values in samples.items()
        if values
    }
    warm_envs = [results[s]["median_s"] for s in ("warm-A", "warm-B")]
    report.met = max(warm_envs) <= TARGET_SECONDS
    for side, result in results.items():
        targeted = side in ("warm-A", "warm-B")
        report.rows.append(
            [
                SIDES[side],
                str(len(result["seconds"])),
                f"{result['median_s']:.3f}",
                f"{result['p95_s']:.3f}",
                f"≤ {TARGET_SECONDS} s" if targeted else "—",
                ("yes" if result["median_s"] <= TARGET_SECONDS else "NO") if targeted else "—",
            ]
        )
    report.notes = [
        "Launch → Completed: from calling Accelerator.launch (operator, in-process client) "
        "until a read of the run shows Completed (polled every 20 ms).",
        f"Environment builds (uv venv + uv pip sync of the lock, {len(builds)} of them) took "
        f"a median {median(builds):.2f} s of the cold runs; uv's cache held the platform's "
        "own packages, which the locks prefer."
        if builds
        else "No build was timed.",
        "First runs: the first of versions A and B, each starting its warm parent.",
        "Warm runs alternate A, B and the platform's (ABC CBA …) on one warm worker keeping "
        "up to four warm parents.",
    ]
    report.data = {
        "config": {"runs": args.runs, "cold": args.cold, "target_s": TARGET_SECONDS},
        "load_average": {"before": load_before, "after": load_average()},
        "results": [
            {"side": s, "what": SIDES[s], **r, "phases": PHASES.get(s, [])}
            for s, r in results.items()
        ],
        "build_seconds": [round(b, 2) for b in builds],
    }
    return report


def _build_seconds(home: Path, record: Any) -> float:
    import json

    from accelerator_prefect import environments as envs

    ready = envs.folder(home, record.environment) / envs.READY_FILE
    return float(json.loads(ready.read_text())["seconds"])


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
