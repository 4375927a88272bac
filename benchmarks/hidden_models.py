"""B14: looking up a model one may not see costs what looking up a missing one does
(issue 21: a hidden model's name must not be told apart by timing).

A real embedded platform and its portal on loopback (see
:mod:`benchmarks.portal_fixture`). The portal's user is a member of project ``bench``.
Besides the ``echo`` model they may see, a second model lives in another project with
``--versions`` versions, hidden from them. Over one keep-alive connection, with the
user's token, interleaved and the order reversed every round:

- ``visible``: ``GET /api/v1/models/{echo}`` (200);
- ``hidden``: ``GET /api/v1/models/{hidden}`` (404);
- ``missing``: ``GET /api/v1/models/{a name nobody uses}`` (404);
- ``raw-hidden``: a reference, what the lookup read before the server filtered by the
  user's visible tags: Prefect's ``POST /deployments/filter`` for every version of the
  hidden model, from this process.

Target: the ratio of medians hidden / missing between 0.9 and 1.1.

    python -m benchmarks.hidden_models --rounds 200 --versions 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import Report, command, load_average, median, p95
from benchmarks.common import parser as common_parser
from benchmarks.platform_fixture import make_model_repo
from benchmarks.portal_fixture import PortalBench, given_or_started

NAME = "hidden_models"
SIDES = ("visible", "hidden", "missing", "raw-hidden")
WHAT = {
    "visible": "GET /models/{a model the user sees} (200)",
    "hidden": "GET /models/{a model of another project} (404)",
    "missing": "GET /models/{a name nobody uses} (404)",
    "raw-hidden": "reference: Prefect's deployment filter reading every version of the "
    "hidden model (what the lookup read before)",
}
LOWEST, HIGHEST = 0.9, 1.1
COLUMNS = ["What", "Calls", "Median ms", "p95 ms", "Ratio to missing", "Target", "Met?"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common_parser(NAME, __doc__)
    parser.add_argument("--rounds", type=int, default=200, help="timed calls per side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    parser.add_argument("--versions", type=int, default=8, help="versions of the hidden model")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.versions < 1:
        parser.error("--rounds and --versions must be at least 1")
    return args


def publish_hidden(bench: PortalBench, versions: int) -> str:
    """A model of project ``elsewhere`` (the user is not a member), ``versions`` times."""
    name = f"hidden-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="acc-bench-hidden-") as folder:
        for index in range(versions):
            manifest = make_model_repo(
                Path(folder) / str(index), name, version=f"1.{index}.0", project="elsewhere"
            )
            bench.bench.acc.publish(manifest)
    return name


def calls(bench: PortalBench, http: Any, hidden: str) -> dict[str, Callable[[], None]]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    from accelerator_prefect.catalog import HOSTED_TAG, tag

    missing = f"missing-{uuid.uuid4().hex[:6]}"
    everything = DeploymentFilter(
        tags=DeploymentFilterTags(all_=[HOSTED_TAG, tag("model", hidden)])
    )

    def get(model: str, status: int) -> Callable[[], None]:
        def call() -> None:
            response = http.get(f"/models/{model}")
            if response.status_code != status:
                raise RuntimeError(f"GET /models/{model}: {response.status_code} {response.text}")

        return call

    def raw() -> None:
        found = bench.bench.acc._call(lambda c: c.read_deployments(deployment_filter=everything))
        if not found:
            raise RuntimeError("the raw filter found no version of the hidden model")

    return {
        "visible": get(bench.model, 200),
        "hidden": get(hidden, 404),
        "missing": get(missing, 404),
        "raw-hidden": raw,
    }


def run(args: argparse.Namespace, console: Console, given: PortalBench | None = None) -> Report:
    report = Report(NAME, "B14 — a hidden model's lookup against a missing one's", COLUMNS)
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    with given_or_started(given) as bench:
        with console.status(f"publishing a hidden model, {args.versions} version(s)…"):
            hidden = publish_hidden(bench, args.versions)
        load_before = load_average()
        with bench.http(timeout=60) as http:
            side_calls = calls(bench, http, hidden)
            with console.status("measuring…"):
                for round_ in range(args.warmup + args.rounds):
                    for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                        start = time.perf_counter()
                        side_calls[side]()
                        if round_ >= args.warmup:
                            seconds[side].append(time.perf_counter() - start)
    base = median(seconds["missing"])
    results = []
    for side in SIDES:
        ratio = median(seconds[side]) / base
        targeted = side == "hidden"
        results.append(
            {
                "side": side,
                "what": WHAT[side],
                "calls": len(seconds[side]),
                "median_ms": round(median(seconds[side]) * 1000, 2),
                "p95_ms": round(p95(seconds[side]) * 1000, 2),
                "ratio_to_missing": round(ratio, 3),
                "met": LOWEST <= ratio <= HIGHEST if targeted else None,
            }
        )
        report.rows.append(
            [
                WHAT[side],
                str(len(seconds[side])),
                f"{results[-1]['median_ms']:.1f}",
                f"{results[-1]['p95_ms']:.1f}",
                f"{ratio:.3f}",
                f"{LOWEST}–{HIGHEST}" if targeted else "—",
                ("yes" if results[-1]["met"] else "NO") if targeted else "—",
            ]
        )
    report.met = bool(results[1]["met"])
    report.notes = [
        f"The hidden model has {args.versions} version(s) in a project the user is not in; "
        "the portal's user is a member of the visible model's project.",
        "Calls over one keep-alive connection with the user's token, interleaved, the order "
        "reversed every round, after untimed warm-up rounds.",
        "The server filters a lookup by the tags the user may see, so no version of the "
        "hidden model is read: its lookup is the missing one's (same requests, same answers; "
        "tests/test_access.py checks them).",
    ]
    report.data = {
        "config": {"rounds": args.rounds, "warmup": args.warmup, "versions": args.versions},
        "load_average": {"before": load_before, "after": load_average()},
        "results": results,
    }
    return report


def main(argv: Sequence[str] | None = None, platform: PortalBench | None = None) -> int:
    """The benchmark's command line; ``platform``: a running one to measure on (the smoke
    tests share one), else one is started and stopped."""
    return command(argv, parse_args, lambda args, console: run(args, console, platform))


if __name__ == "__main__":
    raise SystemExit(main())
