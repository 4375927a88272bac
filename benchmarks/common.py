"""What every benchmark shares: the machine it ran on, summary statistics, result files.

A result is written twice: as JSON (every sample, for later comparison) and as a
Markdown page (the machine line and one table, for reading).

Example:
    >>> median([3.0, 1.0, 2.0]), percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50)
    (2.0, 3.0)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("accelerator-prefect", "prefect", "fsspec", "s3fs", "moto")
RESULTS = Path("benchmarks/results")
TRIVIAL_FLOW = """
{imports}from pydantic import Field

from accelerator_prefect import Conf, jobflow, routine


class AddConf(Conf):
    x: int = Field(default=1, description="A number.")


@routine
def add_one(x: int) -> int:
    return x + 1


@jobflow(name="{name}")
def trivial(conf: AddConf) -> int:
    return add_one(conf.x)
"""
"""The trivial hosted jobflow the latency benchmarks time (``{name}``: its flow's name;
``{imports}``: lines before the rest, e.g. a library its environment pins)."""


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first paragraph, and ``--out``."""
    parsed = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{module}", description=(doc or "").split("\n\n")[0]
    )
    parsed.add_argument(
        "--out", type=Path, default=RESULTS, help="folder of the JSON and Markdown results"
    )
    return parsed


def console() -> Any:
    """Rich's console for a benchmark's progress and table. Off a terminal (a log, CI)
    Rich would wrap the table at 80 columns; there it gets 160."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def command(
    argv: Sequence[str] | None,
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace, Any], Report],
) -> int:
    """A benchmark's command line: run it, write and show its report; 0 if every target
    was met."""
    args = parse_args(argv)
    shown = console()
    report = run(args, shown)
    report.finish(args.out, shown)
    return 0 if report.met else 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def describe_machine() -> dict[str, Any]:
    """CPU, RAM, OS, Python and the versions of the packages being measured."""
    ram = _ram_bytes()
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line saying where the figures come from."""
    packages = ", ".join(
        f"{name} {version}" for name, version in machine["packages"].items() if version
    )
    return (
        f"{machine['cpu']} x{machine['cpus']}, {machine['ram_gib']} GiB RAM, {machine['os']}, "
        f"Python {machine['python']}; {packages}"
    )


async def until_completed(
    client: Any, run_id: Any, deadline: float = 120.0, poll: float = 0.02
) -> None:
    """Read the flow run every ``poll`` seconds until it is Completed; raise if it ended
    otherwise or is still going after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        run = await client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            if not run.state.is_completed():
                raise RuntimeError(f"run {run_id} ended {run.state.name}: {run.state.message}")
            return
        await asyncio.sleep(poll)
    raise TimeoutError(f"run {run_id} did not complete within {deadline:g} s")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, interpolated linearly between samples (NumPy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


@dataclass
class Report:
    """One benchmark's results: a table for people, every sample for machines."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=describe_machine)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    met: bool = True  # every target met: the command exits 0

    def markdown(self) -> str:
        lines = [
            f"# {self.title}",
            "",
            f"Machine: {machine_line(self.machine)}",
            "",
            f"Run: {self.started.isoformat(timespec='seconds')}",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "started": self.started.isoformat(),
            "machine": self.machine,
            "table": {"columns": self.columns, "rows": self.rows},
            "notes": self.notes,
            **self.data,
        }

    def write(self, folder: Path) -> tuple[Path, Path]:
        """``<folder>/<name>.json`` and ``<folder>/<name>.md``."""
        folder.mkdir(parents=True, exist_ok=True)
        json_path = folder / f"{self.name}.json"
        markdown_path = folder / f"{self.name}.md"
        json_path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        markdown_path.write_text(self.markdown())
        return json_path, markdown_path

    def finish(self, folder: Path, console: Any) -> None:
        """Write the result files and show the table (and where the files went)."""
        json_path, markdown_path = self.write(folder)
        console.print(self.rich_table())
        console.print(f"Wrote {json_path} and {markdown_path}")

    def rich_table(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title, caption=machine_line(self.machine))
        for index, column in enumerate(self.columns):
            numeric = bool(self.rows) and all(_is_number(row[index]) for row in self.rows)
            table.add_column(column, justify="right" if numeric else "left")
        for row in self.rows:
            table.add_row(*row)
        return table


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
