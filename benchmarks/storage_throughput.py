"""B4: ``acc://`` read and write throughput against the raw fsspec backend it wraps.

Each backend (a local folder, S3 served by moto) is measured through
:class:`~accelerator_prefect.storage.AccFileSystem` and through the fsspec
filesystem underneath it, in the same folder, with the same data and chunk size:

- ``write``: stream the payload in 8 MiB chunks into a new file;
- ``read``: stream a file back in 8 MiB chunks;
- ``put`` / ``get``: the user-facing copy, ``Storage.put`` / ``Storage.get`` of a
  local file against the backend's own ``put_file`` / ``get_file``.

Runs of acc and raw are interleaved, the side that goes first alternating from one
round to the next (AB BA AB …), so drift hits both equally; untimed warm-up rounds
come first (the first gigabyte written after a pause is slow for reasons of the
kernel and of moto, not of acc).
The target is acc's median throughput at least 95% of raw's.

Run it:

    python -m benchmarks.storage_throughput --size-mb 1024 --repeat 3 --warmup 1

Results land in ``benchmarks/results/storage_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import httpx
from fsspec.spec import AbstractFileSystem
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from accelerator_prefect.storage import CHUNK, PREFIX, AccFileSystem, Storage
from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser

NAME = "storage_throughput"
MB = 2**20
TARGET_RATIO = 0.95
SIDES = ("acc", "raw")
OPERATIONS = ("write", "read", "put", "get")
BACKENDS = ("local", "s3")
BUCKET = "acc-bench"
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Backend:
    """One storage backend, reachable both through ``acc://`` and directly."""

    name: str
    acc: AccFileSystem
    raw: AbstractFileSystem
    size: int
    workdir: Path

    def path(self, side: str, relative: str) -> tuple[AbstractFileSystem, str]:
        """The filesystem and path of ``relative`` (under the acc root) for one side."""
        if side == "acc":
            return self.acc, PREFIX + relative
        return self.raw, f"{self.acc.path}{self.raw.sep}{relative}"

    def remove(self, relative: str) -> None:
        fs, path = self.path("raw", relative)
        fs.rm_file(path)


def payload(size: int, seed: int = 4) -> Iterator[memoryview]:
    """``size`` bytes in chunks of ``CHUNK``, all slices of one random chunk (memory stays flat)."""
    chunk = memoryview(random.Random(seed).randbytes(CHUNK))
    for start in range(0, size, CHUNK):
        yield chunk[: min(CHUNK, size - start)]


def write_stream(fs: AbstractFileSystem, path: str, size: int) -> int:
    with fs.open(path, "wb") as f:
        for piece in payload(size):
            f.write(piece)
    return size


def read_stream(fs: AbstractFileSystem, path: str) -> int:
    total = 0
    with fs.open(path, "rb") as f:
        while piece := f.read(CHUNK):
            total += len(piece)
    return total


# --- the four operations: each prepares, then returns a run and a teardown ------------------


@dataclass(frozen=True)
class Timing:
    seconds: float
    # CPU time of this whole process (all threads, fsspec's IO loop included): the
    # client's own work, which the S3 server's noise does not reach.
    cpu_seconds: float
    moved: int


def timed(action: Callable[[], int]) -> Timing:
    cpu, start = time.process_time(), time.perf_counter()
    moved = action()
    return Timing(time.perf_counter() - start, time.process_time() - cpu, moved)


# One run, given the side ("acc" or "raw") and a label unique to the run.
Run = Callable[[str, str], Timing]


def measure_write(backend: Backend) -> tuple[Run, Callable[[], None]]:
    def run(side: str, label: str) -> Timing:
        relative = f"bench/write-{side}-{label}.bin"
        fs, path = backend.path(side, relative)
        timing = timed(lambda: write_stream(fs, path, backend.size))
        backend.remove(relative)
        return timing

    return run, lambda: None


def measure_read(backend: Backend) -> tuple[Run, Callable[[], None]]:
    relative = "bench/read.bin"
    write_stream(*backend.path("raw", relative), backend.size)

    def run(side: str, label: str) -> Timing:
        return timed(lambda: read_stream(*backend.path(side, relative)))

    return run, lambda: backend.remove(relative)


def measure_put(backend: Backend) -> tuple[Run, Callable[[], None]]:
    source = backend.workdir / f"put-source-{backend.name}.bin"
    with source.open("wb") as f:
        for piece in payload(backend.size):
            f.write(piece)
    storage = Storage(backend.acc)

    def put(side: str, path: str) -> int:
        if side == "acc":
            storage.put(source, path)
        else:
            backend.raw.put_file(str(source), path)
        return source.stat().st_size

    def run(side: str, label: str) -> Timing:
        relative = f"bench/put-{side}-{label}.bin"
        timing = timed(lambda: put(side, backend.path(side, relative)[1]))
        backend.remove(relative)
        return timing

    return run, source.unlink


def measure_get(backend: Backend) -> tuple[Run, Callable[[], None]]:
    relative = "bench/get.bin"
    write_stream(*backend.path("raw", relative), backend.size)
    storage = Storage(backend.acc)

    def get(side: str, target: Path) -> int:
        path = backend.path(side, relative)[1]
        if side == "acc":
            storage.get(path, target)
        else:
            backend.raw.get_file(path, str(target))
        return target.stat().st_size

    def run(side: str, label: str) -> Timing:
        target = backend.workdir / f"get-{side}-{label}.bin"
        timing = timed(lambda: get(side, target))
        target.unlink()
        return timing

    return run, lambda: backend.remove(relative)


MEASURES: dict[str, Callable[[Backend], tuple[Run, Callable[[], None]]]] = {
    "write": measure_write,
    "read": measure_read,
    "put": measure_put,
    "get": measure_get,
}


# --- backends -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto_executable() -> str:
    found = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    found = found or shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found: install moto[server] (a dev dependency)")
    return found


@contextmanager
def moto_server(log: Path, timeout: float = 30.0) -> Iterator[str]:
    """An S3 endpoint served by moto on a free loopback port; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_moto_executable(), "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **MOTO_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answers(url, process, log, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answers(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"moto_server exited with code {process.returncode}:\n{tail}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {url} within {timeout:.0f} s")


def local_backend(workdir: Path, size: int) -> Backend:
    root = workdir / "local-root"
    return Backend("local", AccFileSystem(root=str(root)), fsspec.filesystem("file"), size, workdir)


def s3_backend(url: str, workdir: Path, size: int) -> Backend:
    import s3fs

    # Credentials given explicitly rather than through this process's environment,
    # so a real AWS configuration of the person running the benchmark is never touched.
    options = {
        "endpoint_url": url,
        "key": MOTO_ENV["AWS_ACCESS_KEY_ID"],
        "secret": MOTO_ENV["AWS_SECRET_ACCESS_KEY"],
    }
    raw = s3fs.S3FileSystem(**options)
    raw.mkdir(BUCKET)
    acc = AccFileSystem(root=f"s3://{BUCKET}/acc", storage_options=options)
    return Backend("s3", acc, raw, size, workdir)


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Samples:
    """The timed runs of one side of one operation."""

    size: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, timing: Timing) -> None:
        self.seconds.append(timing.seconds)
        self.cpu_seconds.append(timing.cpu_seconds)

    @property
    def mb_per_s(self) -> list[float]:
        return [self.size / MB / seconds for seconds in self.seconds]

    @property
    def p95_mb_per_s(self) -> float:
        # The tail of a throughput is its slow side: the 95th-percentile duration.
        return self.size / MB / p95(self.seconds)

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": [round(s, 4) for s in self.seconds],
            "cpu_seconds": [round(s, 4) for s in self.cpu_seconds],
            "mb_per_s": [round(v, 1) for v in self.mb_per_s],
            "median_mb_per_s": round(median(self.mb_per_s), 1),
            "p95_mb_per_s": round(self.p95_mb_per_s, 1),
            "median_cpu_seconds": round(median(self.cpu_seconds), 4),
        }


def order(round_: int) -> tuple[str, str]:
    """AB, BA, AB, …: interleaved, alternating which side goes first."""
    return SIDES if round_ % 2 == 0 else SIDES[::-1]


@dataclass
class Plan:
    repeat: int
    warmup: int
    progress: Progress
    task: TaskID

    @property
    def runs_per_operation(self) -> int:
        return (self.repeat + self.warmup) * len(SIDES)


def measure(backend: Backend, operation: str, plan: Plan) -> dict[str, Any]:
    """One operation on one backend: untimed warm-up rounds, then ``repeat`` timed rounds."""
    run, teardown = MEASURES[operation](backend)
    samples = {side: Samples(backend.size) for side in SIDES}
    rounds = [(f"warm-up-{i}", False) for i in range(plan.warmup)]
    rounds += [(str(i), True) for i in range(plan.repeat)]
    try:
        for round_, (label, kept) in enumerate(rounds):
            for side in order(round_):
                what = f"{backend.name} {operation} via {side}"
                plan.progress.update(plan.task, description=what + ("" if kept else " (warm-up)"))
                timing = run(side, label)
                if timing.moved != backend.size:
                    raise RuntimeError(f"{what}: moved {timing.moved} bytes of {backend.size}")
                if kept:
                    samples[side].add(timing)
                plan.progress.advance(plan.task)
    finally:
        teardown()
    acc, raw = samples["acc"], samples["raw"]
    ratio = median(acc.mb_per_s) / median(raw.mb_per_s)
    cpu_ratio = median(acc.cpu_seconds) / max(median(raw.cpu_seconds), 1e-9)
    return {
        "backend": backend.name,
        "operation": operation,
        "size_bytes": backend.size,
        "raw": raw.summary(),
        "acc": acc.summary(),
        "ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_ratio, 3),
        "target": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
    }


# --- reporting ----------------------------------------------------------------------------

COLUMNS = [
    "Backend",
    "Operation",
    "Size MB",
    "Raw MB/s median",
    "Raw MB/s p95",
    "acc MB/s median",
    "acc MB/s p95",
    "Ratio acc/raw",
    "Target",
    "Met?",
    "Client CPU acc/raw",
]


def table_row(result: dict[str, Any]) -> list[str]:
    raw, acc = result["raw"], result["acc"]
    return [
        result["backend"],
        result["operation"],
        f"{result['size_bytes'] / MB:.0f}",
        f"{raw['median_mb_per_s']:.1f}",
        f"{raw['p95_mb_per_s']:.1f}",
        f"{acc['median_mb_per_s']:.1f}",
        f"{acc['p95_mb_per_s']:.1f}",
        f"{result['ratio']:.3f}",
        f"≥ {result['target']:.2f}",
        "yes" if result["met"] else "NO",
        f"{result['cpu_ratio']:.3f}",
    ]


NOTES = [
    "MB = 2^20 bytes. Throughput is size / wall time of one whole operation "
    "(open, all chunks, close — and for acc writes the atomic commit).",
    "p95 is the throughput of the 95th-percentile duration (the slow tail); with few "
    "repeats it is close to the slowest run.",
    "Ratio = acc median / raw median; target ≥ 0.95. acc and raw runs are interleaved, "
    "alternating which goes first (AB BA AB …), after untimed warm-up rounds.",
    "Client CPU acc/raw = median CPU time of the benchmark process (all threads) per run, "
    "acc over raw: acc's own overhead, free of the S3 server's noise.",
    "write/read: 8 MiB chunks through AccFileSystem.open vs the backend's own open. "
    "put/get: Storage.put/get vs the backend's put_file/get_file.",
    "S3 is moto's server mode on loopback (one Python process, in memory): it measures the "
    "client-side cost of acc://, not S3's network.",
    "Local reads come from the page cache (the file was just written), so they measure "
    "the software path rather than the disk.",
]


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser("storage_throughput", __doc__)
    parser.add_argument("--size-mb", type=int, default=1024, help="file size (MB = 2^20 bytes)")
    parser.add_argument(
        "--s3-size-mb", type=int, default=None, help="file size on S3 (default: --size-mb)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs per side before the timed ones"
    )
    parser.add_argument(
        "--backend", action="append", choices=BACKENDS, help="repeatable; default: all"
    )
    parser.add_argument(
        "--operation", action="append", choices=OPERATIONS, help="repeatable; default: all"
    )
    args = parser.parse_args(argv)
    if min(args.size_mb, args.s3_size_mb or 1, args.repeat) < 1 or args.warmup < 0:
        parser.error("sizes and --repeat must be at least 1, --warmup at least 0")
    return args


def run(args: argparse.Namespace, console: Console) -> Report:
    backends = args.backend or list(BACKENDS)
    operations = args.operation or list(OPERATIONS)
    sizes = {"local": args.size_mb * MB, "s3": (args.s3_size_mb or args.size_mb) * MB}
    report = Report(NAME, "B4 — acc:// storage throughput vs raw fsspec", COLUMNS, notes=NOTES)
    load_before = load_average()
    results = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acc-b4-")))
        progress = stack.enter_context(
            Progress(
                TextColumn("{task.description:<34}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
        )
        plan = Plan(args.repeat, args.warmup, progress, progress.add_task("starting"))
        progress.update(plan.task, total=len(backends) * len(operations) * plan.runs_per_operation)
        for name in backends:
            if name == "local":
                backend = local_backend(workdir, sizes["local"])
            else:
                url = stack.enter_context(moto_server(workdir / "moto.log"))
                backend = s3_backend(url, workdir, sizes["s3"])
            results += [measure(backend, operation, plan) for operation in operations]
    report.rows = [table_row(r) for r in results]
    report.data = {
        "config": {
            "size_mb": {name: sizes[name] // MB for name in backends},
            "repeat": args.repeat,
            "warmup": args.warmup,
            "chunk_bytes": CHUNK,
            "target_ratio": TARGET_RATIO,
            "order": "interleaved, alternating first side: AB BA AB ...",
        },
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
    }
    report.met = all(r["met"] for r in results)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
