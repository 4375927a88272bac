"""B10: downloading a large run output through the portal against reading it from ``acc://``.

A real embedded platform (Prefect server on SQLite, as ``acc up`` starts it) serves
the portal on a loopback port, with its limits lifted. A ``writer`` model, whose
jobflow writes N bytes into its output folder, is published into its own work pool;
a worker for that pool alone is started, one member of the model's project launches
it with the output in their own area (``acc://users/<them>/downloads/<run id>/``),
and the worker is stopped once the run has Completed. Its one output,
``data.bin``, is then read whole, again and again, in five ways, each to
``/dev/null``:

- ``acc`` (the baseline): ``Accelerator.storage.open(uri).read(8 MiB)`` until the
  end, in this process, with the product's storage (``Storage`` over
  ``AccFileSystem``), as the platform's services read it;
- ``portal-file``: ``GET /api/v1/storage/file?path=acc://…`` streamed by httpx;
- ``portal-output``: ``GET /api/v1/runs/{id}/outputs/data.bin`` streamed by httpx;
- ``python-http``: the user's Python client over the portal,
  ``Accelerator.connect(url=…, token=…).storage.open(uri).read(8 MiB)``;
- ``raw-http``: a reference: the same file streamed 1 MiB at a time by a bare ASGI
  app on the same uvicorn, read by httpx — what HTTP costs here without the portal.

While each download through the portal runs, the portal process's resident memory
(RSS) is sampled every few milliseconds; its peak growth over the RSS just before
the download is reported, with the CPU time the server and this process spent. The
sides are interleaved, the order reversed every round (ABCDE EDCBA …), after
untimed warm-up rounds. Targets: each download through the
portal's HTTP API at least 0.8 × the throughput (median) of reading from
``acc://``, and the portal's RSS growing by less than 64 MB during any download
through it.

Run it:

    python -m benchmarks.portal_download --size-mb 1024 --repeat 3 --warmup 1

(``--writer here``: the writer run is created but never started, and this process
writes its output where the run would — the same file, without waiting for a worker
and a fresh Python; the smoke test does that.)

Results land in ``benchmarks/results/portal_download.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from accelerator_prefect.platform import free_port, start_worker, stop_process
from accelerator_prefect.storage import CHUNK
from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser
from benchmarks.portal_fixture import (
    LIMITS_LIFTED,
    PROJECT,
    PortalBench,
    cpu_seconds,
    given_or_started,
    rss_bytes,
)

NAME = "portal_download"
MB = 2**20
TARGET_RATIO = 0.8
TARGET_RSS_MB = 64
SIDES = ("acc", "portal-file", "portal-output", "python-http", "raw-http")
BASELINE = "acc"
THROUGH_PORTAL = ("portal-file", "portal-output", "python-http")
TARGETED = ("portal-file", "portal-output")
WHAT = {
    "acc": "Accelerator.storage.open(acc://…) read in 8 MiB chunks, in-process",
    "portal-file": "GET /api/v1/storage/file?path=acc://… (httpx, streamed)",
    "portal-output": "GET /api/v1/runs/{id}/outputs/data.bin (httpx, streamed)",
    "python-http": "Accelerator.connect(url=portal).storage.open(…) in 8 MiB reads",
    "raw-http": "reference: a bare ASGI app on uvicorn streaming the file 1 MiB at a time (httpx)",
}
PORTAL_CHUNK = 1 << 20  # what the portal reads and sends at a time
REPOSITORY = Path(__file__).resolve().parents[1]
WRITER_POOL = "acc-bench-writer"

WRITER_FLOW = """
from pydantic import Field

from accelerator_prefect import Conf, Output, jobflow, routine


class WriterConf(Conf):
    size: int = Field(default=1 << 20, ge=0, le=1 << 40, description="Bytes to write.")


@routine
def write(conf: WriterConf, output: Output) -> int:
    block = bytes(range(256)) * 32768  # 8 MiB
    left = conf.size
    with output.open("data.bin", "wb") as f:
        while left > 0:
            f.write(block[: min(len(block), left)])
            left -= len(block)
    return conf.size


@jobflow(name="writer")
def writer(conf: WriterConf, output: Output) -> dict:
    return {"size": write(conf, output)}
"""

WRITER_MANIFEST = """
name: {name}
title: Writer
description: Writes a file of the size asked for (the download benchmark's output).
version: 1.0.0
jobflow: flows/writer.py:writer
owner: operator
project: {project}
work_pool: {pool}
access:
  scope: project
"""


# --- the output to download: a run of the writer model ---------------------------------------


@dataclass(frozen=True)
class Output:
    run_id: str
    uri: str  # acc://users/<user>/downloads/<run id>/data.bin
    path: str  # as the run's outputs list it
    size: int
    write_seconds: float  # launch → written (→ Completed on a worker, its process start included)
    writer: str  # "worker": the run wrote it; "here": this process, where the run writes it


def make_writer_repo(path: Path, name: str) -> Path:
    """A committed git repository holding the writer model; returns its manifest."""
    from git import Repo

    repo = Repo.init(path)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Benchmark")
        config.set_value("user", "email", "benchmark@example.invalid")
    files = {
        "flows/writer.py": WRITER_FLOW,
        f"deployments/{name}.yaml": WRITER_MANIFEST.format(
            name=name, project=PROJECT, pool=WRITER_POOL
        ),
    }
    for relative, text in files.items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    repo.git.add(A=True)
    repo.index.commit("writer")
    return path / "deployments" / f"{name}.yaml"


async def _ensure_pool(client: Any) -> None:
    """The writer's own process work pool, so its worker starts no other run."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with suppress(ObjectAlreadyExists):  # made by an earlier run on this platform
        await client.create_work_pool(
            WorkPoolCreate(
                name=WRITER_POOL,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )


@contextmanager
def _worker(bench: PortalBench) -> Iterator[None]:
    pid = start_worker(bench.bench.home, bench.bench.info.api_url, WRITER_POOL)
    try:
        yield
    finally:
        stop_process(pid)


def write_output(bench: PortalBench, size: int, timeout: float, writer: str) -> Output:
    """Publish the writer and launch it once to write ``size`` bytes into its output folder:
    run on a worker of its own (``writer="worker"``), or, faster (``"here"``), the run is
    created and never started, and this process writes the file where the run writes it,
    as the operator (users may not write in a run's folder)."""
    acc = bench.bench.acc
    acc._call(_ensure_pool)
    name = f"writer-{uuid.uuid4().hex[:8]}"
    # The run's pull step checks the model's code out of this repository: kept until it ends.
    with (
        tempfile.TemporaryDirectory(prefix="acc-b10-") as folder,
        bench.in_process() as user,
        _worker(bench) if writer == "worker" else nullcontext(),
    ):
        acc.publish(make_writer_repo(Path(folder) / "models", name))
        start = time.perf_counter()
        run = user.launch(
            name, conf={"size": size}, output=f"acc://users/{bench.user}/downloads/{{run_id}}/"
        )
        if writer == "worker":
            state = run.wait(timeout=timeout)
            if state != "Completed":
                raise RuntimeError(f"the writer run {run.id} ended {state}: {run.logs()[-20:]}")
        else:  # as the run would: only a run (or an operator) writes in a run's folder
            with acc.storage.open(f"{run.output_location}data.bin", "wb") as f:
                _write_pattern(f, size)
        elapsed = time.perf_counter() - start
        (output,) = run.outputs()
    if output.size != size:
        raise RuntimeError(f"the writer wrote {output.size} bytes, not {size}")
    return Output(str(run.id), output.uri, output.path, output.size, elapsed, writer)


def _write_pattern(f: IO[bytes], size: int) -> None:
    """What the writer's jobflow writes."""
    block = bytes(range(256)) * 32768  # 8 MiB
    left = size
    while left > 0:
        f.write(block[: min(len(block), left)])
        left -= len(block)


# --- one download of each side --------------------------------------------------------------


def raw_file_app() -> Any:
    """A bare ASGI app serving the files under ``$ACC_BENCH_RAW_ROOT`` 1 MiB at a time, as the
    portal does, with nothing else: what HTTP on uvicorn costs here (B10's raw reference)."""
    root = Path(os.environ["ACC_BENCH_RAW_ROOT"]).resolve()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = (root / scope["path"].lstrip("/")).resolve()
        if scope["path"] == "/health" or not path.is_file() or root not in path.parents:
            status = 200 if scope["path"] == "/health" else 404
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            (b"content-length", str(path.stat().st_size).encode()),
            (b"content-type", b"application/octet-stream"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, PORTAL_CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


@contextmanager
def raw_server(root: Path, log: Path, timeout: float = 60.0) -> Iterator[tuple[int, str]]:
    """:func:`raw_file_app` on uvicorn (as the portal is served) on a free loopback port;
    its pid and URL, stopped on exit."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "ACC_BENCH_RAW_ROOT": str(root)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "benchmarks.portal_download:raw_file_app",
                "--host",
                "127.0.0.1",
                "--port",
                url.rsplit(":", 1)[1],
                "--lifespan",
                "off",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the raw HTTP server did not start: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield process.pid, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sink:
    """Where a download's bytes go (``/dev/null``), noting when the first of them arrived."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.first: float | None = None

    def write(self, data: bytes) -> int:
        if self.first is None:
            self.first = time.perf_counter()
        return self.target.write(data)


def _drain(source: IO[bytes], sink: Sink) -> int:
    total = 0
    while chunk := source.read(CHUNK):
        sink.write(chunk)
        total += len(chunk)
    return total


@dataclass(frozen=True)
class Side:
    """One way of reading the file whole into a sink (the bytes read), and the pid of the
    server it goes through (``None``: in-process)."""

    download: Callable[[Sink], int]
    server: int | None


def sides(bench: PortalBench, output: Output, stack: ExitStack) -> dict[str, Side]:
    """One whole read of the output per side; clients and the raw server opened on ``stack``."""
    in_process = stack.enter_context(bench.in_process())
    over_http = stack.enter_context(bench.over_http())
    timeout = httpx.Timeout(120.0, connect=10.0)
    http = stack.enter_context(bench.http(timeout=timeout))
    fs = in_process._core.storage_fs()
    if "file" not in fs.fs.protocol:
        raise RuntimeError(f"the raw reference reads local storage; this one is {fs.fs.protocol}")
    raw_pid, raw_url = stack.enter_context(
        raw_server(Path(fs.path), bench.bench.home / "logs" / "raw-http.log")
    )
    raw = stack.enter_context(httpx.Client(base_url=raw_url, timeout=timeout))

    def stream(client: httpx.Client, path: str, params: dict[str, str] | None = None) -> Any:
        def download(sink: Sink) -> int:
            total = 0
            with client.stream("GET", path, params=params) as response:
                if response.status_code != 200:
                    response.read()
                    raise RuntimeError(f"GET {path}: {response.status_code} {response.text}")
                for chunk in response.iter_raw():
                    sink.write(chunk)
                    total += len(chunk)
            return total

        return download

    def storage_of(acc: Any) -> Callable[[Sink], int]:
        def download(sink: Sink) -> int:
            with acc.storage.open(output.uri, "rb") as source:
                return _drain(source, sink)

        return download

    output_path = f"/runs/{output.run_id}/outputs/{output.path}"
    return {
        "acc": Side(storage_of(in_process), None),
        "portal-file": Side(stream(http, "/storage/file", {"path": output.uri}), bench.pid),
        "portal-output": Side(stream(http, output_path), bench.pid),
        "python-http": Side(storage_of(over_http), bench.pid),
        "raw-http": Side(stream(raw, "/" + output.uri.removeprefix("acc://")), raw_pid),
    }


class RssSampler:
    """The peak resident memory of process ``pid`` while in the ``with`` block, sampled every
    ``interval`` seconds, over what it was on entry."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid, self.interval = pid, interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> RssSampler:
        self.baseline = self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Samples:
    size: int
    seconds: list[float] = field(default_factory=list)
    first_byte: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    rss_growth: list[int] = field(default_factory=list)
    rss_baseline: list[int] = field(default_factory=list)

    def add(self, done: Download) -> None:
        self.seconds.append(done.seconds)
        self.first_byte.append(done.first_byte)
        self.client_cpu.append(done.client_cpu)
        if done.rss is not None:
            self.server_cpu.append(done.server_cpu)
            self.rss_growth.append(done.rss.growth)
            self.rss_baseline.append(done.rss.baseline)

    @property
    def mb_per_s(self) -> list[float]:
        return [self.size / MB / s for s in self.seconds]

    def summary(self) -> dict[str, Any]:
        gb = self.size / 2**30
        streaming = [s - f for s, f in zip(self.seconds, self.first_byte, strict=True)]
        return {
            "seconds": [round(s, 4) for s in self.seconds],
            "mb_per_s": [round(v, 1) for v in self.mb_per_s],
            "median_mb_per_s": round(median(self.mb_per_s), 1),
            # The slow tail of a throughput: the 95th-percentile duration.
            "p95_mb_per_s": round(self.size / MB / p95(self.seconds), 1),
            "first_byte_ms": [round(f * 1000, 1) for f in self.first_byte],
            "median_first_byte_ms": round(median(self.first_byte) * 1000, 1),
            # After the first byte: the rate of the stream itself, without the request's setup.
            "median_streaming_mb_per_s": round(self.size / MB / max(median(streaming), 1e-9), 1),
            "client_cpu_s_per_gb": round(median(self.client_cpu) / gb, 2),
            "server_cpu_s_per_gb": round(median(self.server_cpu) / gb, 2)
            if self.server_cpu
            else None,
            "rss_growth_mb": [round(g / MB, 1) for g in self.rss_growth],
            "max_rss_growth_mb": round(max(self.rss_growth) / MB, 1) if self.rss_growth else None,
            "rss_before_mb": [round(b / MB, 1) for b in self.rss_baseline],
        }


def order(round_: int) -> tuple[str, ...]:
    """ABCDE, EDCBA, ABCDE, …: interleaved, reversing the order every round."""
    return SIDES if round_ % 2 == 0 else SIDES[::-1]


@dataclass(frozen=True)
class Download:
    moved: int  # bytes
    seconds: float  # request (or open) to the last byte
    first_byte: float  # request (or open) to the first byte
    client_cpu: float  # this process's CPU seconds
    server_cpu: float  # the server's CPU seconds
    rss: RssSampler | None  # the server's memory


def _one(side: Side, target: IO[bytes]) -> Download:
    server_cpu = cpu_seconds(side.server) if side.server else 0.0
    sink = Sink(target)
    with ExitStack() as stack:
        rss = stack.enter_context(RssSampler(side.server)) if side.server else None
        cpu, start = time.process_time(), time.perf_counter()
        moved = side.download(sink)
        elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    served = cpu_seconds(side.server) - server_cpu if side.server else 0.0
    first = (sink.first or time.perf_counter()) - start
    return Download(moved, elapsed, first, used, served, rss)


def measure(
    calls: dict[str, Side], size: int, repeat: int, warmup: int, progress: Progress
) -> dict[str, Samples]:
    samples = {side: Samples(size) for side in SIDES}
    task = progress.add_task("warm-up", total=(repeat + warmup) * len(SIDES))
    with open("/dev/null", "wb") as target:
        for round_ in range(warmup + repeat):
            for side in order(round_):
                progress.update(task, description=side + (" (warm-up)" if round_ < warmup else ""))
                done = _one(calls[side], target)
                if done.moved != size:
                    raise RuntimeError(f"{side}: read {done.moved} bytes of {size}")
                if round_ >= warmup:
                    samples[side].add(done)
                progress.advance(task)
    return samples


def result(side: str, samples: dict[str, Samples]) -> dict[str, Any]:
    ours, base = samples[side], samples[BASELINE]
    ratio = median(ours.mb_per_s) / median(base.mb_per_s)
    targeted = side in TARGETED
    growth = max(ours.rss_growth) / MB if ours.rss_growth else None
    through_portal = side in THROUGH_PORTAL
    memory_met = growth is not None and growth < TARGET_RSS_MB if through_portal else None
    return {
        "side": side,
        "what": WHAT[side],
        "baseline": WHAT[BASELINE] if side != BASELINE else "—",
        "size_bytes": ours.size,
        **ours.summary(),
        "ratio": round(ratio, 3),
        "raw_http_ratio": round(median(ours.mb_per_s) / median(samples["raw-http"].mb_per_s), 3),
        "target": TARGET_RATIO if targeted else None,
        "target_rss_growth_mb": TARGET_RSS_MB if through_portal else None,
        "throughput_met": ratio >= TARGET_RATIO if targeted else None,
        "memory_met": memory_met,
        "met": (ratio >= TARGET_RATIO and bool(memory_met)) if targeted else memory_met,
    }


COLUMNS = [
    "What",
    "Baseline",
    "Size MB",
    "Downloads",
    "MB/s median",
    "MB/s p95",
    "Ratio to acc://",
    "Ratio to raw HTTP",
    "First byte ms",
    "MB/s after it",
    "Server RSS growth MB (max)",
    "Server CPU s/GB",
    "Client CPU s/GB",
    "Target",
    "Met?",
]


def _target(r: dict[str, Any]) -> str:
    if r["target"] is not None:
        return f"≥ {r['target']:.2f} × acc://, RSS < {TARGET_RSS_MB} MB"
    if r["target_rss_growth_mb"] is not None:
        return f"RSS < {TARGET_RSS_MB} MB"
    return "—"


def table_row(r: dict[str, Any]) -> list[str]:
    growth, server_cpu = r["max_rss_growth_mb"], r["server_cpu_s_per_gb"]
    return [
        r["what"],
        r["baseline"],
        f"{r['size_bytes'] / MB:.0f}",
        str(len(r["seconds"])),
        f"{r['median_mb_per_s']:.1f}",
        f"{r['p95_mb_per_s']:.1f}",
        f"{r['ratio']:.3f}",
        f"{r['raw_http_ratio']:.3f}",
        f"{r['median_first_byte_ms']:.1f}",
        f"{r['median_streaming_mb_per_s']:.1f}",
        f"{growth:.1f}" if growth is not None else "—",
        f"{server_cpu:.2f}" if server_cpu is not None else "—",
        f"{r['client_cpu_s_per_gb']:.2f}",
        _target(r),
        "—" if r["met"] is None else "yes" if r["met"] else "NO",
    ]


def notes(output: Output) -> list[str]:
    return [
        "MB = 2^20 bytes. Throughput = size / wall time of one whole download (request or "
        "open, every byte, close), every byte written to /dev/null.",
        (
            f"The file is a real run output: the writer model's run wrote "
            f"{output.size / MB:.0f} MB into acc://users/<user>/downloads/<run id>/ in "
            f"{output.write_seconds:.1f} s (launch to Completed, on a worker of its own pool, "
            "stopped before the downloads)."
            if output.writer == "worker"
            else f"The file is a run's output: a writer run was launched (and never started) "
            f"and this process wrote its {output.size / MB:.0f} MB output where the run writes "
            "it (acc://users/<user>/downloads/<run id>/), as --writer here asks."
        ),
        "Every side reads the same file; all but raw-http for the same user (a member of the "
        "project, with a personal token). Local acc:// storage: reads come from the page "
        "cache, so they measure the software path, not the disk.",
        "Server RSS growth: the resident memory of the process serving the download (the "
        "portal; for raw-http the bare server), sampled every 5 ms, peak minus the value just "
        f"before the download; the largest over the timed downloads. Target < {TARGET_RSS_MB} "
        "MB for every download through the portal.",
        "Ratio to raw HTTP: the side's median throughput over raw-http's (no target): how "
        "far a download is from what HTTP on this stack does at best.",
        "First byte ms: from the request (or open) to the first byte (median): what a "
        "download costs before it streams; MB/s after it: size / (median time minus it).",
        "Server CPU s/GB: CPU time of that process per download, per GiB (median); Client "
        "CPU s/GB: of this process (all its threads). Two cores: client and server compete.",
        "The portal reads the file 1 MiB at a time in a thread and streams it (uvicorn, h11); "
        "httpx reads what arrives; the Python client reads 8 MiB at a time from its stream. "
        "raw-http is the same 1 MiB streaming from a bare ASGI app on the same uvicorn: "
        "what HTTP here costs without the portal.",
        "The portal's limits were lifted for the benchmark ("
        + ", ".join(f"{k}={v}" for k, v in LIMITS_LIFTED.items())
        + ").",
        "Sides interleaved, order reversed every round (ABCDE EDCBA …), after untimed warm-up "
        "rounds. Portal, client and storage on the same machine (loopback HTTP).",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--size-mb", type=int, default=1024, help="file size (MB = 2^20 bytes)")
    parser.add_argument("--repeat", type=int, default=3, help="timed downloads per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--writer",
        choices=("worker", "here"),
        default="worker",
        help="who writes the run's output: the run, on a worker (default), or this process "
        "where the run writes it (the run created, never started: faster, same file)",
    )
    parser.add_argument(
        "--run-timeout", type=float, default=900.0, help="seconds the writer run may take"
    )
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--size-mb and --repeat must be at least 1, --warmup at least 0")
    return args


def run(args: argparse.Namespace, console: Console, given: PortalBench | None = None) -> Report:
    size = args.size_mb * MB
    report = Report(NAME, "B10 — output download through the portal vs acc://", COLUMNS)
    load_before = load_average()
    progress = Progress(
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress, given_or_started(given) as bench, ExitStack() as clients:
        task = progress.add_task("writing the output (a run)", total=None)
        output = write_output(bench, size, args.run_timeout, args.writer)
        calls = sides(bench, output, clients)
        progress.remove_task(task)
        rss_start = rss_bytes(bench.pid)
        samples = measure(calls, size, args.repeat, args.warmup, progress)
        rss_end = rss_bytes(bench.pid)
        bench.bench.acc.storage.rm(output.uri)  # the operator: the run never ended
    results = [result(side, samples) for side in SIDES]
    report.rows = [table_row(r) for r in results]
    report.notes = notes(output)
    report.data = {
        "config": {
            "size_mb": args.size_mb,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "target_ratio": TARGET_RATIO,
            "target_rss_growth_mb": TARGET_RSS_MB,
            "portal_chunk_bytes": PORTAL_CHUNK,
            "client_chunk_bytes": CHUNK,
            "order": "interleaved, reversed every round: ABCDE EDCBA ...",
            "limits_lifted": LIMITS_LIFTED,
        },
        "output": {
            "run_id": output.run_id,
            "path": output.path,
            "size_bytes": output.size,
            "write_seconds": round(output.write_seconds, 2),
            "written_by": output.writer,
        },
        "portal_rss_mb": {"before": round(rss_start / MB, 1), "after": round(rss_end / MB, 1)},
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
    }
    report.met = all(r["met"] for r in results if r["met"] is not None)
    return report


def main(argv: Sequence[str] | None = None, platform: PortalBench | None = None) -> int:
    """The benchmark's command line; ``platform``: a running one to measure on (the smoke
    tests share one), else one is started and stopped."""
    return command(argv, parse_args, lambda args, console: run(args, console, platform))


if __name__ == "__main__":
    raise SystemExit(main())
