"""B3: the catalog listing of a user in 3 projects, with 1,000 and 10,000 published versions,
against Prefect's own ``read_deployments`` of every deployment, on the same server.

One model is published for real (git repository, manifest, ``acc publish``); its
deployment is then cloned into N hosted versions spread over 30 projects (70%
project scope, 20% private, 10% public), 10 versions a model, each with the tags
and hosting record a publish writes. The reader is a member of 3 projects and
signs in with a token, as a catalog user does.

- ``acc``: ``Accelerator.catalog()`` as the reader: the server filters each
  model's heads (``acc:head``, per scope the version a launch would run) by the
  reader's tags, then the access layer decides;
- ``raw``: ``read_deployments`` of every deployment, paged by 200 (the server's
  largest page), as an operator's script or the Prefect UI would list them.

Targets: acc's p50 at most 300 ms at 10,000 versions, growing sublinearly
(from 1,000 to 10,000 versions, less than 10x).

Run it:

    python -m benchmarks.catalog_listing --versions 1000,10000 --repeat 20
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import Report, load_average, median, p95
from benchmarks.common import console as common_console
from benchmarks.common import parser as common_parser

NAME = "catalog_listing"
TARGET_P50_S = 0.300
PROJECTS = 30
VERSIONS_PER_MODEL = 10
COLUMNS = [
    "versions",
    "models listed to the reader",
    "acc p50 (ms)",
    "acc p95 (ms)",
    "raw p50 (ms)",
    "raw p95 (ms)",
    "acc / raw",
    "target",
    "met",
]


def _placement(index: int) -> tuple[str, str, str, str]:
    """Model name, version, project and scope of hosted version number ``index``."""
    model, minor = divmod(index, VERSIONS_PER_MODEL)
    rng = random.Random(model)
    project = f"p{rng.randrange(PROJECTS)}"
    draw = rng.random()
    scope = "public" if draw < 0.1 else "private" if draw < 0.3 else "project"
    return f"model-{model:05d}", f"1.{minor}.0", project, scope


async def _clone(
    api_url: str, auth_string: str, template: Any, start: int, stop: int, console: Console
) -> None:
    """Hosted versions ``start``..``stop`` as copies of ``template`` (a deployment)."""
    from prefect.client.orchestration import PrefectClient

    from accelerator_prefect.catalog import HostingRecord, hosting_tags, mark_heads
    from accelerator_prefect.transport import prefect_client
    from accelerator_prefect.validation import EXTENSION_KEY

    schema = dict(template.parameter_openapi_schema)
    base = HostingRecord.model_validate(schema.pop(EXTENSION_KEY))
    gate = asyncio.Semaphore(4)

    async def one(client: PrefectClient, index: int) -> None:
        name, version, project, scope = _placement(index)
        record = HostingRecord.model_validate(
            {**base.model_dump(), "project": project, "scope": scope, "owner": f"author-{project}"}
        )
        async with gate:
            await client.create_deployment(
                flow_id=template.flow_id,
                name=f"{name}@{version}",
                version=version,
                description=template.description,
                tags=hosting_tags(name, version, record),
                parameter_openapi_schema={**schema, EXTENSION_KEY: record.model_dump(mode="json")},
                parameters=template.parameters,
                enforce_parameter_schema=True,
                work_pool_name=template.work_pool_name,
                entrypoint=template.entrypoint,
                pull_steps=template.pull_steps,
                paused=True,  # nothing runs them
            )

    async def heads(client: PrefectClient, model: str) -> None:
        async with gate:
            await mark_heads(client, model)

    with console.status(f"publishing versions {start + 1}–{stop}…"):
        # The product's client: busy writes retried soon.
        async with prefect_client(api_url, auth_string=auth_string) as client:
            for batch in range(start, stop, 200):
                await asyncio.gather(
                    *(one(client, i) for i in range(batch, min(batch + 200, stop)))
                )
    # What publishing does after each version: tag the versions the catalog lists.
    models = sorted({_placement(i)[0] for i in range(start, stop)})
    with console.status(f"marking the heads of {len(models)} models…"):
        async with prefect_client(api_url, auth_string=auth_string) as client:
            await asyncio.gather(*(heads(client, m) for m in models))


async def _read_everything(api_url: str, auth_string: str) -> int:
    """Every deployment, as a user of raw Prefect reads them from the locked server."""
    from prefect.client.orchestration import PrefectClient

    count, offset = 0, 0
    async with PrefectClient(api_url, auth_string=auth_string) as client:
        while True:
            batch = await client.read_deployments(limit=200, offset=offset)
            count += len(batch)
            if len(batch) < 200:
                return count
            offset += 200


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure(acc: Any, api_url: str, auth_string: str, repeat: int) -> dict[str, Any]:
    """acc and raw listings, interleaved (AB BA …), after one untimed round of each."""
    acc.catalog()
    asyncio.run(_read_everything(api_url, auth_string))
    sides: dict[str, list[float]] = {"acc": [], "raw": []}
    visible = total = 0
    for round_ in range(repeat):
        order = ("acc", "raw") if round_ % 2 == 0 else ("raw", "acc")
        for side in order:
            if side == "acc":
                seconds, models = _timed(acc.catalog)
                visible = len(models)
            else:
                seconds, total = _timed(lambda: asyncio.run(_read_everything(api_url, auth_string)))
            sides[side].append(seconds)
    return {"acc": sides["acc"], "raw": sides["raw"], "visible": visible, "total": total}


def main(argv: Sequence[str] | None = None) -> int:
    parser = common_parser("catalog_listing", __doc__)
    parser.add_argument("--versions", default="1000,10000", help="Sizes to measure, ascending.")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.versions.split(","))

    from accelerator_prefect import Accelerator
    from accelerator_prefect.platform import down, ensure_auth_string, free_port, up
    from benchmarks.platform_fixture import make_model_repo

    console = common_console()
    report = Report(
        NAME,
        "B3 — catalog listing vs Prefect read_deployments",
        COLUMNS,
        notes=[
            f"The reader is in 3 of {PROJECTS} projects; 10% of versions are public, 20% "
            f"private, 70% project-scoped; {VERSIONS_PER_MODEL} versions a model.",
            "acc: Accelerator.catalog() as the reader (token): each model's heads (acc:head), "
            "filtered by tags in the server, then by the access layer; raw: read_deployments "
            "of every deployment, 200 a page.",
            f"Target: acc p50 ≤ {TARGET_P50_S * 1000:.0f} ms at the largest size, and growing "
            "sublinearly with the number of versions.",
        ],
    )
    workdir = Path(tempfile.mkdtemp(prefix="acc-bench-catalog-"))
    home = workdir / "home"
    results: list[dict[str, Any]] = []
    try:
        with console.status("starting a platform (Prefect server on SQLite)…"):
            info, _ = up(home, port=free_port(), examples=[], catalog_port=None, portal_port=None)
        operator = Accelerator.connect(info.api_url, home=home)
        # The server is locked as `acc up` locks it: raw Prefect's client needs its auth string.
        auth_string = ensure_auth_string(home)
        operator.publish(make_model_repo(workdir / "repo", "bench-echo", project="p0"))
        template = operator._call(lambda c: c.read_deployment_by_name("echo/bench-echo@1.0.0"))
        _, token = operator.add_user("reader", {"p0": "member", "p1": "member", "p2": "member"})
        # The reader's token says who acts; the home's auth string lets the client reach the
        # locked API, as the catalog's own does.
        reader = Accelerator.connect(info.api_url, home=home, token=token)
        made = 0
        for size in sizes:
            asyncio.run(_clone(info.api_url, auth_string, template, made, size, console))
            made = size
            with console.status(f"listing, {size} versions, {args.repeat} rounds…"):
                found = measure(reader, info.api_url, auth_string, args.repeat)
            results.append({"versions": size, **found, "load_average": load_average()})
        reader.close()
        operator.close()
    finally:
        down(home)
        shutil.rmtree(workdir, ignore_errors=True)

    largest = results[-1]
    for result in results:
        acc_p50, raw_p50 = median(result["acc"]), median(result["raw"])
        last = result is largest
        met = acc_p50 <= TARGET_P50_S if last else None
        report.rows.append(
            [
                str(result["versions"]),
                str(result["visible"]),
                f"{acc_p50 * 1000:.0f}",
                f"{p95(result['acc']) * 1000:.0f}",
                f"{raw_p50 * 1000:.0f}",
                f"{p95(result['raw']) * 1000:.0f}",
                f"{acc_p50 / raw_p50:.2f}",
                f"p50 ≤ {TARGET_P50_S * 1000:.0f} ms" if last else "–",
                "–" if met is None else ("yes" if met else "no"),
            ]
        )
    if len(results) > 1:
        first = results[0]
        growth = median(largest["acc"]) / median(first["acc"])
        scale = largest["versions"] / first["versions"]
        report.notes.append(
            f"Growth from {first['versions']} to {largest['versions']} versions: "
            f"acc x{growth:.1f} for x{scale:.0f} the versions "
            f"({'sublinear' if growth < scale else 'not sublinear'})."
        )
        report.data["growth"] = {"acc": growth, "versions": scale, "sublinear": growth < scale}
    report.data["results"] = results
    report.finish(args.out, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
