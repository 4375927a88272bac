"""The README's promise as a new user lives it: `acc up`, the snippet, `acc run`, `acc down`."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from accelerator_prefect import Accelerator
from accelerator_prefect.platform import free_port
from tests.conftest import ROOT
from tests.test_launch import count_runs
from tests.test_worker import _has_zygote, _until, zygote_of

ACC = str(Path(sys.executable).parent / "acc")

README_SNIPPET = textwrap.dedent("""
    from accelerator_prefect import Accelerator
    acc = Accelerator.connect(url="http://127.0.0.1:8600", token="acc_…")   # or ACC_URL + ACC_TOKEN
    run = acc.launch("climate-downscaling",
                     conf={"scenario": "ssp245", "target_region": "alps", "base_year": 1995},
                     inputs=["acc://climate/examples/coarse-cmip6/"])   # a folder: ends with /
    run.wait(timeout=120)                            # -> Completed
    print(run.state, [(f.path, f.size) for f in run.outputs()], run.result()["tas_change_k"])
""")


def acc(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ACC_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [ACC, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("acc-up")
    yield home
    acc(home, "down")


def test_acc_up_serves_the_platform_and_the_readme_snippet_runs(home: Path) -> None:
    port, catalog_port, portal_port = free_port(), free_port(), free_port()
    factor_port = free_port()
    first = acc(
        home,
        *("up", "--detach", "--port", str(port), "--catalog-port", str(catalog_port)),
        *("--portal-port", str(portal_port), "--factor-port", str(factor_port)),
    )
    assert first.returncode == 0, first.stdout + first.stderr
    portal = f"http://127.0.0.1:{portal_port}"
    assert f"{portal}/api/v1" in first.stdout
    assert f"http://127.0.0.1:{port}" in first.stdout
    # The catalog is served beside the Prefect UI, and share links point at it.
    catalog = f"http://127.0.0.1:{catalog_port}"
    assert f"Catalog      {catalog}" in first.stdout
    assert httpx.get(f"{catalog}/_stcore/health", timeout=5).text == "ok"
    assert "published climate-downscaling@1.0.0: created" in first.stdout
    assert "published data-harmonization@1.0.0: created" in first.stdout
    samples = [p for p in (ROOT / "examples" / "data").rglob("*") if p.is_file()]
    assert f"sample inputs: {len(samples)} new file(s)" in first.stdout
    for manifest in sorted((ROOT / "deployments").glob("*.yaml")):  # every bundled model
        assert f"published {manifest.stem}@1.0.0: created" in first.stdout, first.stdout
    # The embedded platform runs models as this user: it says it trusts their authors.
    assert "models' code runs as this user on this machine" in " ".join(first.stdout.split())
    # The terrain grid (DVC-tracked) went into the platform's DVC remote before publishing.
    assert "pushing flows/reference/terrain.nc to the DVC remote" in first.stdout
    assert list((home / "dvc-remote" / "files" / "md5").rglob("*"))
    info = json.loads((home / "platform.json").read_text())

    again = acc(home, "up", "--detach", "--port", str(port), "--catalog-port", str(catalog_port))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "serving the catalog" not in again.stdout  # still served from the first time
    assert "climate-downscaling@1.0.0: unchanged" in again.stdout
    assert json.loads((home / "platform.json").read_text())["server_pid"] == info["server_pid"]

    listed = acc(home, "list")
    assert "climate-downscaling" in listed.stdout and "Climate downscaling" in listed.stdout
    for manifest in sorted((ROOT / "deployments").glob("*.yaml")):
        assert manifest.stem in listed.stdout

    # A user made by the operator runs the README's launch from another shell, holding only
    # the portal's address and their token: no home, no Prefect address, no auth string.
    with Accelerator.connect(info["api_url"], home=home) as operator:
        _, token = operator.add_user("alice", {"climate": "member"})
    elsewhere = home.parent / "users-machine"
    elsewhere.mkdir(exist_ok=True)
    snippet_code = README_SNIPPET.replace("http://127.0.0.1:8600", portal).replace("acc_…", token)
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("ACC_", "PREFECT_"))}
    snippet = subprocess.run(
        [sys.executable, "-c", snippet_code],
        env={**bare, "ACC_HOME": str(elsewhere)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert snippet.returncode == 0, snippet.stderr
    assert snippet.stdout.startswith("Completed [('downscaled.nc', "), snippet.stdout
    assert "('quicklook.png'" in snippet.stdout and "('summary.csv'" in snippet.stdout
    # The Prefect API behind the portal refuses a direct read, with or without the token.
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        direct = httpx.post(f"{info['api_url']}/deployments/filter", json={}, headers=headers)
        assert direct.status_code == 401

    refused = acc(
        home,
        *("run", "climate-downscaling", "-c", "scenario=ssp245", "-c", "target_region=alps"),
        *("-c", "base_year=3000", "-i", "acc://climate/examples/coarse-cmip6/model_ssp245.nc"),
    )
    assert refused.returncode == 2
    assert "conf.base_year: 3000 is greater than the maximum of 2100" in refused.stderr
    assert "inputs: 1 file(s) of type .nc selected (folders expanded); at least 2" in refused.stderr
    assert count_runs(info["api_url"], "climate-downscaling@1.0.0", home) == 1  # the snippet's only


def test_a_taken_port_is_named(home: Path, tmp_path: Path) -> None:
    port = json.loads((home / "platform.json").read_text())["port"]
    result = acc(
        tmp_path / "other-home",
        *("up", "--detach", "--port", str(port), "--no-catalog", "--portal-port", str(free_port())),
    )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken by another program" in result.stderr


def test_acc_down_stops_every_process(home: Path) -> None:
    info = json.loads((home / "platform.json").read_text())
    result = acc(home, "down")
    assert result.returncode == 0 and "stopped." in result.stdout
    for pid in (info["server_pid"], info["worker_pid"], info["catalog_pid"], info["portal_pid"]):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (home / "platform.json").exists()
    assert acc(home, "down").stdout.strip() == "nothing was running."


def test_acc_down_stops_the_worker_cleanly_when_acc_up_ran_as_a_background_job(
    tmp_path: Path,
) -> None:
    """A shell script's background job (`acc up --detach &`) ignores Ctrl-C's SIGINT, and
    what it starts inherits that; Prefect's worker stops on SIGTERM by interrupting itself.
    Started so, the worker still stops by itself at `acc down`, and removes its warm
    parent's folder, which a worker killed at the deadline leaves behind."""
    home = tmp_path / "home"
    env = {**os.environ, "ACC_HOME": str(home), "COLUMNS": "200"}
    ports = ("--port", str(free_port()), "--portal-port", str(free_port()))
    started = subprocess.run(
        [ACC, "up", "--detach", "--no-examples", "--no-catalog", *ports],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as `&` does
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        worker = json.loads((home / "platform.json").read_text())["worker_pid"]
        _until(lambda: _has_zygote(worker), 120, "the worker started its warm parent")
        folder = Path(os.readlink(f"/proc/{zygote_of(worker)}/cwd"))
        assert folder.is_dir()
    finally:
        stopped = acc(home, "down")
    assert stopped.returncode == 0 and "stopped." in stopped.stdout
    assert not folder.exists(), "the worker was killed instead of stopping"
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_acc_up_in_the_foreground_sweeps_what_is_past_its_retention(tmp_path: Path) -> None:
    """While `acc up` runs, it sweeps every ACC_SWEEP_EVERY seconds: an upload older than
    ACC_KEEP_UPLOADS goes, and `acc up` says so; Ctrl-C stops everything."""
    home = tmp_path / "home"
    env = {
        **os.environ,
        "ACC_HOME": str(home),
        "COLUMNS": "200",
        "ACC_SWEEP_EVERY": "1",
        "ACC_KEEP_UPLOADS": "1 d",
    }
    ports = ("--port", str(free_port()), "--portal-port", str(free_port()))
    process = subprocess.Popen(
        [ACC, "up", "--no-examples", "--no-catalog", *ports, "--factor-port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        # As from a terminal: Ctrl-C interrupts it (a pytest-xdist worker ignores SIGINT,
        # and its children would inherit that).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # what acc up prints, line by line, read aside so waits can end
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    said: list[str] = []

    def read_until(text: str, deadline: float) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if process.poll() is not None and not reader.is_alive():
                    break  # it stopped, and said all it had to say
                continue
            said.append(line)
            if text in line:
                return
        raise AssertionError(f"acc up never said {text!r}:\n{''.join(said)}")

    try:
        read_until("Press Ctrl-C to stop.", 300)
        storage = home / "storage"
        old, new = storage / "lab" / "uploads" / "old.csv", storage / "lab" / "uploads" / "new.csv"
        old.parent.mkdir(parents=True)
        for path in (old, new):
            path.write_text("a,b\n1,2\n")
        two_days_ago = time.time() - 2 * 86400
        os.utime(old, (two_days_ago, two_days_ago))
        read_until("retention: deleted 1 item(s)", 60)
        assert not old.exists() and new.exists()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        reader.join(timeout=10)
    rest = "".join(said) + "".join(lines.get() for _ in range(lines.qsize()))
    assert "stopped." in rest, rest
    assert not (home / "platform.json").exists()
