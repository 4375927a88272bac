"""B16: what a warm run pays for reaching an object store through the run-scoped proxy
(issue 21: a run on S3 holds no storage keys; the worker's proxy reads its inputs and
writes its output folder for it).

S3 served by moto on loopback, a :class:`~accelerator_prefect.proxy.RunProxy` started
here as the warm worker starts its own (with the storage's keys), and a flow run's
scope: its input and its output folder. Each operation is done the two ways a run's
``acc://`` can be, interleaved and the order reversed every round:

- ``raw``: :class:`~accelerator_prefect.storage.AccFileSystem` on ``s3://`` with the keys,
  as a run held them before;
- ``proxied``: the same ``acc://`` paths on ``accrun://``, the run's token, through
  the proxy.

Operations: ``write`` a file of ``--size-mb`` into the output folder (8 MiB chunks),
``read`` it back, and ``info`` of the input (a small call, as a run makes many).
Target: proxied at most 1.5 times raw's median time for each.

    python -m benchmarks.run_storage --size-mb 64 --rounds 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser
from benchmarks.storage_throughput import (
    BUCKET,
    MB,
    MOTO_ENV,
    moto_server,
    read_stream,
    write_stream,
)

NAME = "run_storage"
SIDES = ("raw", "proxied")
OPERATIONS = ("write", "read", "info")
HIGHEST = 1.5
COLUMNS = ["Operation", "Size MB", "Raw median ms", "Proxied median ms", "Proxied p95 ms",
           "Ratio", "Target", "Met?"]  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--size-mb", type=int, default=64, help="size of the file moved")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--info-calls", type=int, default=50, help="info calls per round")
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.rounds < 1:
        parser.error("--size-mb and --rounds must be at least 1")
    return args


def run(args: argparse.Namespace, console: Console) -> Report:
    import s3fs
    from prefect.client.schemas.objects import FlowRun

    from accelerator_prefect.proxy import RunProxy
    from accelerator_prefect.storage import AccFileSystem

    report = Report(NAME, "B16 — a run's storage through the run-scoped proxy vs raw", COLUMNS)
    size = args.size_mb * MB
    seconds: dict[str, list[float]] = {f"{o} {s}": [] for o in OPERATIONS for s in SIDES}
    with (
        tempfile.TemporaryDirectory(prefix="acc-bench-") as work,
        moto_server(Path(work) / "moto.log") as endpoint,
    ):
        options = {"endpoint_url": endpoint, "key": MOTO_ENV["AWS_ACCESS_KEY_ID"],
                   "secret": MOTO_ENV["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip
        s3fs.S3FileSystem(**options).mkdir(BUCKET)
        raw = AccFileSystem(root=f"s3://{BUCKET}/acc", storage_options=options)
        raw.pipe_file("bench/in/input.csv", b"x\n" * 1000)
        run_id = uuid.uuid4()
        flow_run = FlowRun(
            id=run_id,
            flow_id=uuid.uuid4(),
            parameters={
                "inputs": {"selected_files": ["acc://bench/in/input.csv"]},
                "output": {"location": "acc://bench/results/m/1.0.0/{run_id}/"},
            },
        )
        # No Prefect server is asked: storage calls never go upstream.
        proxy = RunProxy("http://127.0.0.1:9/api", None, storage=raw)
        proxy.start()
        try:
            env = proxy.environment_for(flow_run, {})
            import json

            proxied = AccFileSystem(
                root=env["ACC_STORAGE_URL"], storage_options=json.loads(env["ACC_STORAGE_OPTIONS"])
            )
            sides = {"raw": raw, "proxied": proxied}
            folder = f"bench/results/m/1.0.0/{run_id}"
            load_before = load_average()

            def actions(side: str, label: str) -> dict[str, Callable[[], None]]:
                fs, path = sides[side], f"{folder}/{side}-{label}.bin"

                def info() -> None:
                    for _ in range(args.info_calls):
                        fs.info("bench/in/input.csv")

                return {
                    "write": lambda: _check(write_stream(fs, path, size), size),
                    "read": lambda: _check(read_stream(fs, path), size),
                    "info": info,
                }

            with console.status("measuring…") as status:
                for round_ in range(args.warmup + args.rounds):
                    for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                        status.update(f"round {round_ + 1}: {side}")
                        steps = actions(side, str(round_))
                        for operation in OPERATIONS:
                            start = time.perf_counter()
                            steps[operation]()
                            if round_ >= args.warmup:
                                seconds[f"{operation} {side}"].append(time.perf_counter() - start)
                        raw.rm_file(f"{folder}/{side}-{round_}.bin")
        finally:
            proxy.stop()
    results = []
    for operation in OPERATIONS:
        base, through = seconds[f"{operation} raw"], seconds[f"{operation} proxied"]
        per_call = args.info_calls if operation == "info" else 1
        ratio = median(through) / median(base)
        results.append(
            {
                "operation": operation,
                "size_bytes": size if operation != "info" else 0,
                "calls_per_sample": per_call,
                "raw_median_ms": round(median(base) * 1000 / per_call, 2),
                "proxied_median_ms": round(median(through) * 1000 / per_call, 2),
                "proxied_p95_ms": round(p95(through) * 1000 / per_call, 2),
                "ratio": round(ratio, 3),
                "met": ratio <= HIGHEST,
            }
        )
        r = results[-1]
        report.rows.append(
            [
                operation,
                f"{args.size_mb}" if operation != "info" else "—",
                f"{r['raw_median_ms']:.2f}",
                f"{r['proxied_median_ms']:.2f}",
                f"{r['proxied_p95_ms']:.2f}",
                f"{ratio:.3f}",
                f"≤ {HIGHEST}",
                "yes" if r["met"] else "NO",
            ]
        )
    report.met = all(r["met"] for r in results)
    report.notes = [
        "raw: acc:// on s3:// with the storage's keys, as a run held them before; proxied: "
        "the same paths on accrun://, the run's token, through the proxy, which checks each "
        "path against the run's inputs and output folder and does the call with the keys.",
        "S3 is moto on loopback. A write goes through the proxy in 8 MiB parts, which it "
        "writes on to the store; a read goes to the store itself, with a URL the proxy "
        "signed for that one object (through the proxy, before, a read took 1.78 times raw).",
        f"info: the median of {args.info_calls} calls, per call.",
        "Sides interleaved, the order reversed every round, after untimed warm-up rounds.",
    ]
    report.data = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
        "cpus": os.cpu_count(),
    }
    return report


def _check(moved: int, size: int) -> None:
    if moved != size:
        raise RuntimeError(f"moved {moved} bytes of {size}")


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
