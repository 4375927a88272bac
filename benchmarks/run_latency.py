"""B2: launch → Completed for a trivial hosted jobflow on the embedded default, against a
plain Prefect deployment of the same function on the same worker.

Two process workers serve two work pools: one with Prefect's default polling
(every 10 s), one polling every second (what ``acc up`` ran before its warm worker). On
each pool:

- ``acc``: ``Accelerator.launch`` of the hosted model (its version published to
  that pool: git checkout pull step, the jobflow wrapper, provenance), then
  waiting until the run is Completed;
- ``raw``: ``create_flow_run_from_deployment`` of a plain ``@flow`` with the same
  body, deployed with a ``set_working_directory`` pull step onto the same code.

Runs alternate acc/raw (AB BA …) after one untimed run of each (``--warmup``). Target: acc's
median at most 1.05 x raw's; the absolute seconds are reported too.

Run it:

    python -m benchmarks.run_latency --runs 10
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import Report, load_average, median, p95, until_completed
from benchmarks.common import console as common_console
from benchmarks.common import parser as common_parser

NAME = "run_latency"
TARGET_RATIO = 1.05
POLLING = {"default": None, "1s": "1"}  # PREFECT_WORKER_QUERY_SECONDS; None: Prefect's own (10 s)
COLUMNS = [
    "worker polling",
    "acc median (s)",
    "acc p95 (s)",
    "raw median (s)",
    "raw p95 (s)",
    "acc / raw",
    "target",
    "met",
]

FLOW = """
from prefect import flow
from pydantic import Field

from accelerator_prefect import Conf, jobflow, routine


class AddConf(Conf):
    x: int = Field(default=1, description="A number.")


@routine
def add_one(x: int) -> int:
    return x + 1


@jobflow(name="bench-trivial")
def trivial(conf: AddConf) -> int:
    return add_one(conf.x)


@flow(name="bench-plain")
def plain(x: int = 1) -> int:
    return add_one(x)
"""

MANIFEST = """
name: bench-trivial
title: Trivial
version: {version}
jobflow: flows/trivial.py:trivial
owner: operator
project: bench
access:
  scope: project
work_pool: {pool}
"""


def _repo(folder: Path, versions: dict[str, str]) -> list[Path]:
    """A git repository with the trivial model; one manifest per (version, pool), committed."""
    from git import Repo

    repo = Repo.init(folder)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Benchmark")
        config.set_value("user", "email", "bench@example.invalid")
    (folder / "flows").mkdir()
    (folder / "flows" / "trivial.py").write_text(textwrap.dedent(FLOW).lstrip())
    manifests = []
    for version, pool in versions.items():
        target = folder / "deployments" / version / "bench-trivial.yaml"
        target.parent.mkdir(parents=True)
        target.write_text(textwrap.dedent(MANIFEST.format(version=version, pool=pool)).lstrip())
        manifests.append(target)
    repo.git.add(A=True)
    repo.index.commit("trivial model")
    return manifests


def _start_worker(home: Path, api_url: str, pool: str, query_seconds: str | None) -> int:
    """A process worker on ``pool``; Prefect's default polling unless ``query_seconds``."""
    from accelerator_prefect.platform import RESULTS_BLOCK, _base_env, _prefect_bin, _spawn

    env = _base_env(home, api_url)
    env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] = f"local-file-system/{RESULTS_BLOCK}"
    env.pop("PREFECT_WORKER_QUERY_SECONDS", None)
    if query_seconds is not None:
        env["PREFECT_WORKER_QUERY_SECONDS"] = query_seconds
    args = [_prefect_bin(), "worker", "start", "--pool", pool, "--type", "process"]
    return _spawn(args, env, home / "logs" / f"worker-{pool}.log").pid


async def _raw_deployments(
    api_url: str, auth_string: str, code: Path, pools: list[str]
) -> dict[str, Any]:
    """The plain flow deployed once per pool, running from the same code folder."""
    import importlib.util

    from prefect.client.orchestration import PrefectClient
    from prefect.utilities.callables import parameter_schema

    spec = importlib.util.spec_from_file_location("bench_trivial", code / "flows" / "trivial.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    schema = parameter_schema(module.plain.fn).model_dump_for_openapi()
    found = {}
    async with PrefectClient(api_url, auth_string=auth_string) as client:
        flow_id = await client.create_flow_from_name("bench-plain")
        for pool in pools:
            found[pool] = await client.create_deployment(
                flow_id=flow_id,
                name=f"plain-{pool}",
                entrypoint="flows/trivial.py:plain",
                work_pool_name=pool,
                parameter_openapi_schema=schema,
                parameters={"x": 1},
                pull_steps=[
                    {"prefect.deployments.steps.set_working_directory": {"directory": str(code)}}
                ],
            )
    return found


def _acc_run(acc: Any, api_url: str, auth_string: str, version: str) -> float:
    from prefect.client.orchestration import PrefectClient

    start = time.perf_counter()
    run = acc.launch("bench-trivial", {"x": 1}, version=version)

    async def wait() -> None:
        async with PrefectClient(api_url, auth_string=auth_string) as client:
            await until_completed(client, run.id, 300.0, 0.05)

    asyncio.run(wait())
    return time.perf_counter() - start


def _raw_run(api_url: str, auth_string: str, deployment_id: Any) -> float:
    from prefect.client.orchestration import PrefectClient

    async def go() -> float:
        async with PrefectClient(api_url, auth_string=auth_string) as client:
            start = time.perf_counter()
            run = await client.create_flow_run_from_deployment(deployment_id, parameters={"x": 1})
            await until_completed(client, run.id, 300.0, 0.05)
            return time.perf_counter() - start

    return asyncio.run(go())


def main(argv: Sequence[str] | None = None) -> int:
    parser = common_parser("run_latency", __doc__)
    parser.add_argument("--runs", type=int, default=10, help="Timed runs per side and pool.")
    parser.add_argument(
        "--warmup", type=int, default=1, help="Untimed runs per side and pool first."
    )
    parser.add_argument(
        "--polling", default="default,1s", help="Which workers: default, 1s or both."
    )
    args = parser.parse_args(argv)
    pollings = [p for p in args.polling.split(",") if p]

    from accelerator_prefect import Accelerator
    from accelerator_prefect.platform import down, ensure_auth_string, free_port, stop_process, up

    console = common_console()
    report = Report(
        NAME,
        "B2 — launch → Completed vs a plain Prefect deployment",
        COLUMNS,
        notes=[
            "A trivial jobflow (one routine adding one) on a process worker; each run is a "
            "fresh Python process, as on every process worker.",
            "acc: Accelerator.launch of the hosted version, then polling its state every 50 ms; "
            "raw: create_flow_run_from_deployment of a plain @flow with the same body, same "
            "worker, same polling of its state.",
            "Prefect's default worker polling is every 10 s; `acc up` polls every second.",
        ],
    )
    workdir = Path(tempfile.mkdtemp(prefix="acc-bench-latency-"))
    home = workdir / "home"
    pools = {polling: f"bench-{polling}" for polling in pollings}
    workers: list[int] = []
    results: list[dict[str, Any]] = []
    try:
        with console.status("starting a platform (Prefect server on SQLite)…"):
            info, _ = up(home, port=free_port(), examples=[], catalog_port=None, portal_port=None)
        operator = Accelerator.connect(info.api_url, home=home)
        # The server is locked as `acc up` locks it: raw Prefect's client needs its auth string.
        auth_string = ensure_auth_string(home)
        versions = {f"1.0.{i}": pool for i, pool in enumerate(pools.values())}
        manifests = _repo(workdir / "repo", versions)
        for pool in pools.values():
            operator._call(lambda c, pool=pool: c.create_work_pool(_pool(pool)))
        for manifest in manifests:
            operator.publish(manifest)
        raw = asyncio.run(
            _raw_deployments(info.api_url, auth_string, workdir / "repo", list(pools.values()))
        )
        for polling, pool in pools.items():
            workers.append(_start_worker(home, info.api_url, pool, POLLING[polling]))
        for polling, pool in pools.items():
            version = next(v for v, p in versions.items() if p == pool)
            with console.status(f"{polling} polling: {args.warmup} untimed run(s) of each…"):
                for _ in range(args.warmup):
                    _acc_run(operator, info.api_url, auth_string, version)
                    _raw_run(info.api_url, auth_string, raw[pool])
            sides: dict[str, list[float]] = {"acc": [], "raw": []}
            for round_ in range(args.runs):
                order = ("acc", "raw") if round_ % 2 == 0 else ("raw", "acc")
                for side in order:
                    console.print(f"[dim]{polling} polling, run {round_ + 1}/{args.runs}: {side}")
                    if side == "acc":
                        sides["acc"].append(_acc_run(operator, info.api_url, auth_string, version))
                    else:
                        sides["raw"].append(_raw_run(info.api_url, auth_string, raw[pool]))
            results.append({"polling": polling, **sides, "load_average": load_average()})
        operator.close()
    finally:
        for pid in workers:
            stop_process(pid)
        down(home)
        shutil.rmtree(workdir, ignore_errors=True)

    for result in results:
        ratio = median(result["acc"]) / median(result["raw"])
        report.rows.append(
            [
                result["polling"],
                f"{median(result['acc']):.2f}",
                f"{p95(result['acc']):.2f}",
                f"{median(result['raw']):.2f}",
                f"{p95(result['raw']):.2f}",
                f"{ratio:.2f}",
                f"≤ {TARGET_RATIO}",
                "yes" if ratio <= TARGET_RATIO else "no",
            ]
        )
        result["ratio"] = ratio
    report.data["results"] = results
    report.finish(args.out, console)
    return 0


def _pool(name: str) -> Any:
    from prefect.client.schemas.actions import WorkPoolCreate

    return WorkPoolCreate(name=name, type="process")


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    raise SystemExit(main())
