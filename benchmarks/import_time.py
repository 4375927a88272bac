"""B7: how long a jobflow process takes to import ``accelerator_prefect``, against Prefect.

Every sample is a fresh interpreter (so nothing is already imported) that times its
own import statement with ``time.perf_counter``; the wall time of the whole process,
minus that of an empty interpreter measured in the same round, is kept as a cross-check.
Four cases, plus the empty interpreter:

- ``import prefect``: the baseline;
- ``from accelerator_prefect import Conf, Inputs, Output, jobflow, routine``: the
  names a jobflow module imports;
- a jobflow module: those names, a ``Conf``, one ``@routine`` and one ``@jobflow``
  taking ``conf``, ``inputs`` and ``output`` — what a worker's flow run loads before
  it runs anything;
- the same module written with bare ``prefect.task`` / ``prefect.flow`` and a pydantic
  model: what the module would cost without this package.

Rounds run every case once, the order reversed from one round to the next (ABCD DCBA
…), after one untimed warm-up round (bytecode caches, the page cache). The targets:
our import at most 10% over ``import prefect``, and the jobflow module at most 10%
over the bare-Prefect module. The warm-up round also lists ``sys.modules``: a jobflow
process must not load streamlit, dvc, s3fs, pandas or GitPython.

Run it:

    python -m benchmarks.import_time --rounds 20

Results land in ``benchmarks/results/import_time.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.common import Report, load_average, median, p95
from benchmarks.common import console as common_console
from benchmarks.common import parser as common_parser

NAME = "import_time"
TARGET_RATIO = 1.10
# Packages only the platform side (catalog, data versioning, cloud storage) needs.
HEAVY = ("streamlit", "dvc", "s3fs", "pandas", "git", "dask", "distributed", "prefect_dask")

JOBFLOW_MODULE = """
from accelerator_prefect import Conf, Inputs, Output, jobflow, routine


class Settings(Conf):
    level: int = 1


@routine
def step(x: int) -> int:
    return x + 1


@jobflow
def bench(conf: Settings, inputs: Inputs, output: Output) -> int:
    return step(conf.level)
"""

PREFECT_MODULE = """
from prefect import flow, task
from pydantic import BaseModel


class Settings(BaseModel):
    level: int = 1


@task
def step(x: int) -> int:
    return x + 1


@flow
def bench(conf: Settings) -> int:
    return step(conf.level)
"""


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    code: str


CASES = (
    Case("empty", "empty interpreter", "pass"),
    Case("prefect", "import prefect", "import prefect"),
    Case(
        "accelerator_prefect",
        "from accelerator_prefect import Conf, Inputs, Output, jobflow, routine",
        "from accelerator_prefect import Conf, Inputs, Output, jobflow, routine",
    ),
    Case("jobflow_module", "jobflow module (@routine + @jobflow)", "import bench_jobflow"),
    Case("prefect_module", "same module, bare @task + @flow", "import bench_prefect_flow"),
)
BY_KEY = {case.key: case for case in CASES}
# (ours, baseline, held to the target?)
COMPARISONS = (
    ("accelerator_prefect", "prefect", True),
    ("jobflow_module", "prefect_module", True),
    ("jobflow_module", "prefect", False),
    ("prefect_module", "prefect", False),
)

# The child times only the statement under test, then reports (and lists its modules).
CHILD = """\
import time
_start = time.perf_counter()
{code}
_seconds = time.perf_counter() - _start
import json, sys
print(json.dumps({{"seconds": _seconds, "modules": sorted(sys.modules) if {list_modules} else []}}))
"""


@dataclass(frozen=True)
class Sample:
    seconds: float  # the import statement, timed inside the child
    wall_seconds: float  # the whole child process, timed from outside
    modules: list[str]


def child_env(home: Path) -> dict[str, str]:
    """The environment of every child: its own Prefect home, this repository importable."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (str(home), root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PREFECT_HOME": str(home / "prefect"), "PYTHONPATH": path}


def run_case(case: Case, workdir: Path, env: dict[str, str], list_modules: bool = False) -> Sample:
    code = CHILD.format(code=case.code, list_modules=list_modules)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{case.label}: the child exited with {done.returncode}:\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Sample(float(report["seconds"]), wall, list(report["modules"]))


def importtime_profile(case: Case, workdir: Path, env: dict[str, str]) -> dict[str, int]:
    """``python -X importtime``: each module the case imports and its own time in µs."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", case.code],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    modules: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|", 2)
        modules[name.strip()] = int(self_us)
    return modules


def order(round_: int) -> tuple[Case, ...]:
    """ABCD, DCBA, ABCD, …: interleaved, alternating the direction."""
    return CASES if round_ % 2 == 0 else CASES[::-1]


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.seconds.append(sample.seconds)
        self.wall_seconds.append(sample.wall_seconds)

    def summary(self, empty_wall: float) -> dict[str, Any]:
        return {
            "seconds": [round(s, 5) for s in self.seconds],
            "wall_seconds": [round(s, 5) for s in self.wall_seconds],
            "median_ms": round(median(self.seconds) * 1000, 1),
            "p95_ms": round(p95(self.seconds) * 1000, 1),
            "median_wall_minus_empty_ms": round((median(self.wall_seconds) - empty_wall) * 1000, 1),
        }


def compare(ours: str, baseline: str, targeted: bool, summaries: dict[str, Any]) -> dict[str, Any]:
    a, b = summaries[ours], summaries[baseline]
    ratio = a["median_ms"] / b["median_ms"]
    wall_ratio = a["median_wall_minus_empty_ms"] / max(b["median_wall_minus_empty_ms"], 1e-9)
    return {
        "what": ours,
        "baseline": baseline,
        "ratio": round(ratio, 3),
        "wall_ratio": round(wall_ratio, 3),
        "target": TARGET_RATIO if targeted else None,
        "met": ratio <= TARGET_RATIO if targeted else None,
    }


def heavy_in(modules: list[str]) -> list[str]:
    return sorted({m.split(".", 1)[0] for m in modules} & set(HEAVY))


def extra_modules(ours: dict[str, int], baseline: dict[str, int], top: int = 10) -> dict[str, Any]:
    """What the jobflow module imports that the bare-Prefect one does not, the slowest of
    those, and each module's own body (where the decorators run)."""
    bodies = {"bench_jobflow", "bench_prefect_flow"}
    extra = {name: us for name, us in ours.items() if name not in baseline and name not in bodies}
    slowest = sorted(extra.items(), key=lambda item: item[1], reverse=True)[:top]
    return {
        "count": len(extra),
        "self_ms": round(sum(extra.values()) / 1000, 1),
        "slowest": [{"module": name, "self_ms": round(us / 1000, 1)} for name, us in slowest],
        "module_body_self_ms": {
            "jobflow_module": round(ours.get("bench_jobflow", 0) / 1000, 1),
            "prefect_module": round(baseline.get("bench_prefect_flow", 0) / 1000, 1),
        },
    }


# --- reporting ----------------------------------------------------------------------------

COLUMNS = [
    "What",
    "Baseline",
    "Baseline median ms",
    "Baseline p95 ms",
    "Median ms",
    "p95 ms",
    "Ratio",
    "Target",
    "Met?",
    "Wall ratio (process − empty)",
]


def table_row(comparison: dict[str, Any], summaries: dict[str, Any]) -> list[str]:
    ours, base = summaries[comparison["what"]], summaries[comparison["baseline"]]
    target = comparison["target"]
    return [
        BY_KEY[comparison["what"]].label,
        BY_KEY[comparison["baseline"]].label,
        f"{base['median_ms']:.1f}",
        f"{base['p95_ms']:.1f}",
        f"{ours['median_ms']:.1f}",
        f"{ours['p95_ms']:.1f}",
        f"{comparison['ratio']:.3f}",
        f"≤ {target:.2f}" if target else "(for reference)",
        ("yes" if comparison["met"] else "NO") if target else "—",
        f"{comparison['wall_ratio']:.3f}",
    ]


NOTES = [
    "Each sample is a fresh `python -c` process timing its own import statement "
    "(time.perf_counter around it); the interpreter's start-up is the same for all cases "
    "and left out.",
    "Wall ratio: the same comparison on the wall time of the whole process minus the median "
    "of an empty interpreter measured in the same rounds (a cross-check; it includes "
    "interpreter shutdown).",
    "Rounds run every case once, the direction alternating (ABCD DCBA …), after one untimed "
    "warm-up round. Ratio = median / baseline median; target ≤ 1.10 where one is given.",
    "A jobflow module is what a worker's flow run imports before running: defining a routine "
    "and a jobflow makes Prefect load its flow and task engines, which `import prefect` "
    "alone does not; the bare-Prefect module shows that share.",
]


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser("import_time", __doc__)
    parser.add_argument("--rounds", type=int, default=20, help="timed runs of each case")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def run(args: argparse.Namespace, console: Console) -> Report:
    report = Report(NAME, "B7 — import time of accelerator_prefect vs prefect", COLUMNS)
    load_before = load_average()
    samples = {case.key: Samples() for case in CASES}
    with (
        tempfile.TemporaryDirectory(prefix="acc-b7-") as tmp,
        Progress(
            TextColumn("{task.description:<44}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        workdir = Path(tmp)
        (workdir / "bench_jobflow.py").write_text(JOBFLOW_MODULE)
        (workdir / "bench_prefect_flow.py").write_text(PREFECT_MODULE)
        env = child_env(workdir)
        task = progress.add_task("warm-up", total=(args.rounds + 1) * len(CASES) + 3)
        loaded = {}
        for case in CASES:  # warm-up: caches filled, modules listed, nothing kept
            progress.update(task, description=f"{case.key} (warm-up)")
            loaded[case.key] = run_case(case, workdir, env, list_modules=True).modules
            progress.advance(task)
        for round_ in range(args.rounds):
            for case in order(round_):
                progress.update(task, description=case.key)
                samples[case.key].add(run_case(case, workdir, env))
                progress.advance(task)
        profiles = {}
        for key in ("prefect", "jobflow_module", "prefect_module"):
            progress.update(task, description=f"{key} (-X importtime)")
            profiles[key] = importtime_profile(BY_KEY[key], workdir, env)
            progress.advance(task)
    empty_wall = median(samples["empty"].wall_seconds)
    summaries = {key: s.summary(empty_wall) for key, s in samples.items() if key != "empty"}
    comparisons = [compare(ours, base, targeted, summaries) for ours, base, targeted in COMPARISONS]
    heavy = {key: heavy_in(modules) for key, modules in loaded.items()}
    extra = extra_modules(profiles["jobflow_module"], profiles["prefect_module"])
    report.rows = [table_row(c, summaries) for c in comparisons]
    report.notes = [*NOTES, heavy_note(heavy), extra_note(extra)]
    report.data = {
        "config": {
            "rounds": args.rounds,
            "warmup_rounds": 1,
            "target_ratio": TARGET_RATIO,
            "order": "interleaved, alternating direction: ABCD DCBA ...",
            "cases": {case.key: case.code for case in CASES},
            "jobflow_module": JOBFLOW_MODULE,
            "prefect_module": PREFECT_MODULE,
        },
        "load_average": {"before": load_before, "after": load_average()},
        "empty_interpreter": {
            "wall_seconds": [round(s, 5) for s in samples["empty"].wall_seconds],
            "median_wall_ms": round(empty_wall * 1000, 1),
        },
        "cases": summaries,
        "comparisons": comparisons,
        "heavy_packages": {"checked": list(HEAVY), "loaded": heavy},
        "jobflow_module_extra_imports": extra,
        "accelerator_modules": {
            key: [m for m in modules if m.split(".", 1)[0] == "accelerator_prefect"]
            for key, modules in loaded.items()
        },
    }
    return report


def heavy_note(heavy: dict[str, list[str]]) -> str:
    found = {key: names for key, names in heavy.items() if names}
    if not found:
        return f"No case loads any of {', '.join(HEAVY)} (checked in sys.modules)."
    listed = "; ".join(f"{key}: {', '.join(names)}" for key, names in found.items())
    return f"Heavy packages loaded — {listed}."


def extra_note(extra: dict[str, Any]) -> str:
    slowest = ", ".join(f"{m['module']} {m['self_ms']} ms" for m in extra["slowest"][:5])
    bodies = extra["module_body_self_ms"]
    return (
        f"-X importtime (one run each, times inflated by the profiling): the jobflow module "
        f"imports {extra['count']} module(s) the bare-Prefect module does not, "
        f"{extra['self_ms']} ms of their own time (slowest: {slowest}); the module bodies "
        f"(decorators) take {bodies['jobflow_module']} ms and {bodies['prefect_module']} ms."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = common_console()
    report = run(args, console)
    json_path, markdown_path = report.write(args.out)
    console.print(report.rich_table())
    for note in report.notes[-2:]:
        console.print(note)
    console.print(f"Wrote {json_path} and {markdown_path}")
    met = all(c["met"] for c in report.data["comparisons"] if c["target"] is not None)
    clean = not any(report.data["heavy_packages"]["loaded"].values())
    return 0 if met and clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
