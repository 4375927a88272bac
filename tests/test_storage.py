"""acc:// storage on both backends: the local disk and S3 (moto's server on loopback)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import fsspec
import pytest

from accelerator_prefect.errors import AcceleratorError, AccessDenied, NotFound
from accelerator_prefect.storage import (
    PARTIAL_MARK,
    AccFileSystem,
    Storage,
    StoragePathError,
    UnsupportedMode,
    accepts,
    check_path,
)
from tests.conftest import S3Server

ESCAPES = [
    "acc://climate/../other/secret.csv",
    "acc://climate/a/../../etc/passwd",
    "acc://../outside.csv",
    "acc:///etc/passwd",
    "acc://climate/%2e%2e/%2e%2e/x",
    "acc://climate/%2F..%2Fx",
    "acc://climate\\..\\..\\x",
    "acc://climate/./x",
    "acc://climate//x",
    "acc://climate/a\x00b",
]


@pytest.mark.parametrize("uri", ESCAPES)
def test_paths_that_could_escape_the_root_are_refused(uri: str) -> None:
    with pytest.raises(StoragePathError, match=r"not allowed|absolute path"):
        check_path(uri)


@pytest.mark.parametrize("uri", ESCAPES)
def test_no_operation_reaches_outside_the_root(
    acc_fs: AccFileSystem, uri: str, tmp_path: Path
) -> None:
    acc_fs.pipe_file("acc://climate/ok.txt", b"fine")
    local = tmp_path / "local.txt"
    local.write_text("x")
    for operation in (
        lambda: acc_fs.open(uri, "rb"),
        lambda: acc_fs.open(uri, "wb"),
        lambda: acc_fs.ls(uri),
        lambda: acc_fs.info(uri),
        lambda: acc_fs.pipe_file(uri, b"x"),
        lambda: acc_fs.rm(uri),
        lambda: acc_fs.cp_file("acc://climate/ok.txt", uri),
        # The bulk calls keep a trailing "/" ("into this folder"): checked all the same.
        lambda: acc_fs.copy("acc://climate/ok.txt", uri + "/"),
        lambda: acc_fs.copy(uri + "/", "acc://climate/loot/", recursive=True),
        lambda: acc_fs.mv("acc://climate/ok.txt", uri + "/"),
        lambda: acc_fs.put(str(local), uri + "/"),
        lambda: acc_fs.get(uri + "/", str(tmp_path / "dl") + "/", recursive=True),
        lambda: acc_fs.get_file(uri, str(tmp_path / "dl.txt")),
        lambda: acc_fs.touch(uri),
        lambda: acc_fs.pipe(uri, b"x"),
        lambda: acc_fs.write_text(uri, "x"),
    ):
        with pytest.raises(StoragePathError):
            operation()


def test_a_symlink_out_of_the_local_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    fs = AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
    project = tmp_path / "storage" / "climate"
    project.mkdir()
    (project / "door").symlink_to(outside, target_is_directory=True)
    (project / "key.txt").symlink_to(outside / "secret.txt")

    with pytest.raises(StoragePathError, match="symbolic link"):
        fs.cat_file("acc://climate/door/secret.txt")
    with pytest.raises(StoragePathError, match="symbolic link"):
        fs.cat_file("acc://climate/key.txt")
    with pytest.raises(StoragePathError, match="symbolic link"):
        fs.pipe_file("acc://climate/door/planted.txt", b"x")
    assert not (outside / "planted.txt").exists()


@pytest.fixture
def linked(tmp_path: Path) -> tuple[AccFileSystem, Path]:
    """Local storage with a folder link and a file link leading out of the root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET")
    fs = AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
    fs.pipe_file("acc://climate/ok.txt", b"fine")
    project = tmp_path / "storage" / "climate"
    (project / "door").symlink_to(outside, target_is_directory=True)
    (project / "key.txt").symlink_to(outside / "secret.txt")
    return fs, outside


def test_bulk_glob_and_recursive_calls_never_follow_a_link_out(
    linked: tuple[AccFileSystem, Path], tmp_path: Path
) -> None:
    fs, outside = linked
    fs.pipe_file("acc://src/door/planted.txt", b"x")
    local = tmp_path / "local" / "door"
    local.mkdir(parents=True)
    (local / "put.txt").write_text("x")
    attempts = [
        lambda: fs.cat("acc://climate/key*"),
        lambda: fs.get("acc://climate/key*", str(tmp_path / "dl") + "/"),
        lambda: fs.get("acc://climate", str(tmp_path / "dl2"), recursive=True),
        lambda: fs.copy("acc://climate", "acc://loot", recursive=True),
        lambda: fs.copy("acc://src/*", "acc://climate/", recursive=True),
        lambda: fs.put(str(tmp_path / "local") + "/", "acc://climate/", recursive=True),
        lambda: fs.rm("acc://climate/*", recursive=True),
    ]
    for attempt in attempts:
        # Refused, or done without the link (listings do not show it): either way
        # nothing outside is read or written.
        with contextlib.suppress(StoragePathError, FileNotFoundError):
            attempt()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "SECRET"
    copies = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and not path.is_symlink() and path.read_bytes() == b"SECRET"
    ]
    assert copies == [outside / "secret.txt"]
    # The glob removed what it may see, and left the links (and what they lead to) alone.
    assert not fs.exists("acc://climate/ok.txt")
    assert (tmp_path / "storage" / "climate" / "key.txt").is_symlink()


def test_listings_do_not_reveal_where_links_lead(linked: tuple[AccFileSystem, Path]) -> None:
    fs, outside = linked
    for listing in (fs.ls("acc://climate"), list(fs.find("acc://climate", detail=True).values())):
        assert [e["name"] for e in listing] == ["climate/ok.txt"]
        assert str(outside) not in repr(listing)
    assert fs.du("acc://climate", total=False) == {"climate/ok.txt": 4}
    assert [e.name for e in Storage(fs).ls("acc://climate")] == ["ok.txt"]


def test_errors_name_acc_paths_never_the_root(
    linked: tuple[AccFileSystem, Path], tmp_path: Path
) -> None:
    from accelerator_prefect.manifest import InputMapping
    from accelerator_prefect.mapping import input_problems, output_problems

    fs, _ = linked
    root = str(tmp_path / "storage")
    storage = Storage(fs)
    failures: list[str] = []
    for attempt in (
        lambda: fs.cat_file("acc://climate/nope"),
        lambda: fs.open("acc://climate/nope", "rb"),
        lambda: storage.info("acc://climate/ok.txt/x"),
        lambda: storage.open("acc://climate"),
        lambda: storage.ls("acc://climate/ok.txt/x"),
    ):
        with pytest.raises((OSError, AcceleratorError)) as raised:
            attempt()
        failures.append(str(raised.value))
    failures += input_problems(InputMapping(), {"selected_files": ["acc://climate/ok.txt/x"]}, fs)
    failures += output_problems("acc://climate/ok.txt/x/", fs)
    assert all(root not in text for text in failures), failures
    assert "acc://climate/nope" in failures[0]
    assert failures[-1] == (
        "output.location: acc://climate/ok.txt/x/ is inside the file acc://climate/ok.txt; "
        "choose a folder"
    )


def test_a_symlink_inside_the_root_still_works(tmp_path: Path) -> None:
    fs = AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
    fs.pipe_file("acc://climate/data/t2m.csv", b"t\n1\n")
    (tmp_path / "storage" / "climate" / "latest").symlink_to(
        tmp_path / "storage" / "climate" / "data"
    )
    assert fs.cat_file("acc://climate/latest/t2m.csv") == b"t\n1\n"


def test_acc_is_an_fsspec_protocol_that_pandas_and_xarray_use(
    platform: object, tmp_path: Path
) -> None:
    import numpy as np
    import pandas as pd
    import xarray as xr

    assert fsspec.get_filesystem_class("acc") is AccFileSystem
    # A project of its own: the session's platform is shared, and the catalog's tests
    # tick the whole of acc://climate/.
    area = f"acc://formats-{uuid.uuid4().hex[:8]}/obs"
    frame = pd.DataFrame({"date": ["2020-01-01", "2020-01-02"], "t2m": [3.5, 4.0]})
    frame.to_csv(f"{area}/t2m.csv", index=False)
    assert pd.read_csv(f"{area}/t2m.csv")["t2m"].tolist() == [3.5, 4.0]
    frame.to_parquet(f"{area}/t2m.parquet")
    assert pd.read_parquet(f"{area}/t2m.parquet").shape == (2, 2)

    grid = xr.Dataset({"tas": (("lat", "lon"), np.arange(6.0).reshape(2, 3))})
    with fsspec.open(f"{area}/grid.nc", "wb") as f:
        f.write(grid.to_netcdf())
    with fsspec.open(f"{area}/grid.nc", "rb") as f:
        assert float(xr.open_dataset(f, engine="scipy")["tas"].sum()) == 15.0


def test_files_round_trip_on_both_backends(acc_fs: AccFileSystem) -> None:
    with acc_fs.open("acc://climate/obs/t2m.csv", "w") as f:
        f.write("date,t2m\n2020-01-01,3.5\n")
    assert acc_fs.cat_file("acc://climate/obs/t2m.csv") == b"date,t2m\n2020-01-01,3.5\n"
    assert acc_fs.ls("acc://climate/obs", detail=False) == ["climate/obs/t2m.csv"]
    assert acc_fs.find("acc://climate") == ["climate/obs/t2m.csv"]
    assert acc_fs.info("acc://climate/obs/t2m.csv")["size"] == 24


def test_a_write_that_fails_leaves_nothing_and_keeps_the_old_file(acc_fs: AccFileSystem) -> None:
    acc_fs.pipe_file("acc://climate/results/summary.csv", b"old,complete\n")
    for mode in ("w", "wb"):
        with (
            pytest.raises(RuntimeError),
            acc_fs.open("acc://climate/results/summary.csv", mode) as f,
        ):
            f.write("half" if mode == "w" else b"half")
            raise RuntimeError("the routine failed mid-write")
        with pytest.raises(RuntimeError), acc_fs.open("acc://climate/results/new.csv", mode) as f:
            f.write("half" if mode == "w" else b"half")
            raise RuntimeError("the routine failed mid-write")
    assert acc_fs.cat_file("acc://climate/results/summary.csv") == b"old,complete\n"
    assert acc_fs.find("acc://climate/results") == ["climate/results/summary.csv"]


def test_touch_pipe_and_write_text_make_their_folders_and_write_whole_files(
    acc_fs: AccFileSystem,
) -> None:
    acc_fs.touch("acc://climate/new/deep/empty.txt")
    acc_fs.pipe("acc://climate/a/b/c.bin", b"\x00\x01")
    acc_fs.pipe({"acc://climate/many/1.txt": b"1", "acc://climate/many/sub/2.txt": b"2"})
    assert acc_fs.write_text("acc://climate/notes/today.md", "# été\n") == 6
    assert {name: acc_fs.cat_file(name) for name in acc_fs.find("acc://climate")} == {
        "climate/a/b/c.bin": b"\x00\x01",
        "climate/many/1.txt": b"1",
        "climate/many/sub/2.txt": b"2",
        "climate/new/deep/empty.txt": b"",
        "climate/notes/today.md": "# été\n".encode(),
    }
    # A text that cannot be written leaves the old file as it was, and nothing aside.
    with pytest.raises(UnicodeEncodeError):
        acc_fs.write_text("acc://climate/notes/today.md", "half\udcff", encoding="ascii")
    assert acc_fs.cat_file("acc://climate/notes/today.md") == "# été\n".encode()
    assert acc_fs.find("acc://climate/notes") == ["climate/notes/today.md"]


def test_appending_is_atomic_and_updates_in_place_are_refused(acc_fs: AccFileSystem) -> None:
    acc_fs.pipe_file("acc://climate/log.txt", b"first\n")
    with acc_fs.open("acc://climate/log.txt", "a") as f:
        f.write("second\n")
    with acc_fs.open("acc://climate/log.txt", "ab") as f:
        assert f.tell() == 13
        f.write(b"third\n")
    with pytest.raises(RuntimeError), acc_fs.open("acc://climate/log.txt", "ab") as f:
        f.write(b"half")
        raise RuntimeError("the routine failed mid-write")
    assert acc_fs.cat_file("acc://climate/log.txt") == b"first\nsecond\nthird\n"
    assert acc_fs.find("acc://climate") == ["climate/log.txt"]
    for mode in ("r+b", "w+", "a+"):
        with pytest.raises(UnsupportedMode, match=r"acc://climate/log.txt: mode .* in place"):
            acc_fs.open("acc://climate/log.txt", mode)


def test_errors_of_writes_name_the_acc_path_never_the_root(tmp_path: Path) -> None:
    fs = AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
    fs.pipe_file("acc://climate/ok.txt", b"a file, not a folder")
    messages = []
    for attempt in (
        lambda: fs.touch("acc://climate/ok.txt/inside.txt"),
        lambda: fs.pipe("acc://climate/ok.txt/inside.txt", b"x"),
        lambda: fs.write_text("acc://climate/ok.txt/inside.txt", "x"),
        lambda: fs.put_file(str(tmp_path / "missing.txt"), "acc://climate/in.txt"),
        lambda: fs.cp_file("acc://climate/nope.txt", "acc://climate/copy.txt"),
        lambda: fs.get_file("acc://climate/nope.txt", str(tmp_path / "nope.txt")),
    ):
        with pytest.raises(OSError) as raised:
            attempt()
        messages.append(str(raised.value))
    assert all(str(tmp_path / "storage") not in m for m in messages), messages
    assert all("acc://climate/" in m for m in messages[:3] + messages[4:]), messages
    assert fs.find("acc://climate") == ["climate/ok.txt"]


def test_get_makes_the_local_folders_it_needs(acc_fs: AccFileSystem, tmp_path: Path) -> None:
    tmp_path = tmp_path / "local"
    acc_fs.pipe({"acc://climate/obs/t2m.csv": b"t\n1\n", "acc://climate/obs/n/pr.csv": b"p\n"})
    acc_fs.get_file("acc://climate/obs/t2m.csv", str(tmp_path / "one" / "two" / "t2m.csv"))
    acc_fs.get("acc://climate/obs/t2m.csv", str(tmp_path / "into" / "new") + "/")
    acc_fs.get("acc://climate/obs", str(tmp_path / "tree"), recursive=True)
    acc_fs.get("acc://climate/obs/", str(tmp_path / "contents"), recursive=True)
    found = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv"))
    assert found == [
        "contents/n/pr.csv",
        "contents/t2m.csv",
        "into/new/t2m.csv",
        "one/two/t2m.csv",
        "tree/n/pr.csv",
        "tree/t2m.csv",
    ]
    assert (tmp_path / "one" / "two" / "t2m.csv").read_bytes() == b"t\n1\n"
    assert not [p for p in tmp_path.rglob("*") if PARTIAL_MARK in p.name]


def test_a_trailing_slash_means_into_this_folder_or_its_contents(
    acc_fs: AccFileSystem, tmp_path: Path
) -> None:
    acc_fs.pipe({"acc://climate/src/a.csv": b"a", "acc://climate/src/sub/b.csv": b"b"})
    local = tmp_path / "c.csv"
    local.write_bytes(b"c")
    acc_fs.cp("acc://climate/src/a.csv", "acc://climate/t/newdir/")
    acc_fs.put(str(local), "acc://climate/t/putdir/")
    acc_fs.cp("acc://climate/src/", "acc://climate/t/contents", recursive=True)
    acc_fs.cp("acc://climate/src", "acc://climate/t/contents", recursive=True)
    acc_fs.mv("acc://climate/t/putdir/c.csv", "acc://climate/t/moved/")
    assert acc_fs.find("acc://climate/t") == [
        "climate/t/contents/a.csv",
        "climate/t/contents/src/a.csv",
        "climate/t/contents/src/sub/b.csv",
        "climate/t/contents/sub/b.csv",
        "climate/t/moved/c.csv",
        "climate/t/newdir/a.csv",
    ]


def test_a_crashed_writer_leaves_no_complete_looking_file(tmp_path: Path) -> None:
    """A process killed mid-write (no cleanup at all) leaves only a hidden partial file."""
    root = (tmp_path / "storage").as_uri()
    script = textwrap.dedent(f"""
        import os
        from accelerator_prefect.storage import AccFileSystem
        fs = AccFileSystem(root={root!r}, storage_options={{}})
        f = fs.open("acc://climate/results/grid.nc", "wb")
        f.write(b"x" * 1_000_000)
        f.flush()
        os._exit(9)  # killed: no close, no finally, no atexit
    """)
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert crashed.returncode == 9, crashed.stderr
    fs = AccFileSystem(root=root, storage_options={})
    assert not fs.exists("acc://climate/results/grid.nc")
    leftovers = os.listdir(tmp_path / "storage" / "climate" / "results")
    assert len(leftovers) == 1 and leftovers[0].startswith(".grid.nc" + PARTIAL_MARK)
    assert Storage(fs).ls("acc://climate/results") == []
    assert Storage(fs).files("acc://climate/results") == []


def test_storage_put_get_and_ls_on_both_backends(acc_fs: AccFileSystem, tmp_path: Path) -> None:
    storage = Storage(acc_fs)
    local = tmp_path / "stations"
    (local / "north").mkdir(parents=True)
    (local / "a.csv").write_text("a\n1\n")
    (local / "north" / "b.csv").write_text("b\n2\n")
    (local / ".hidden").write_text("x")

    seen: list[int] = []
    put = storage.put(local, "acc://meteo/incoming/", progress=seen.append)
    assert sorted(e.uri for e in put) == [
        "acc://meteo/incoming/stations/.hidden",
        "acc://meteo/incoming/stations/a.csv",
        "acc://meteo/incoming/stations/north/b.csv",
    ]
    assert sum(seen) == 9
    listing = storage.ls("acc://meteo/incoming/stations")
    assert [(e.name, e.kind) for e in listing] == [("north", "folder"), ("a.csv", "file")]
    assert listing[1].media_type == "text/csv" and listing[1].size == 4
    assert [e.uri for e in storage.files("acc://meteo/incoming/", [".csv"])] == [
        "acc://meteo/incoming/stations/a.csv",
        "acc://meteo/incoming/stations/north/b.csv",
    ]

    out = tmp_path / "out"
    out.mkdir()
    written = storage.get("acc://meteo/incoming/stations/", out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "stations/a.csv",
        "stations/north/b.csv",
    ]
    assert (out / "stations" / "north" / "b.csv").read_text() == "b\n2\n"
    with pytest.raises(NotFound, match="acc://meteo/nothing: no such file or folder"):
        storage.ls("acc://meteo/nothing")


def test_a_worker_process_finds_its_storage_in_the_environment(s3_server: S3Server) -> None:
    """ACC_STORAGE_URL and ACC_STORAGE_OPTIONS are all another machine's process needs."""
    env = {
        **os.environ,
        "ACC_STORAGE_URL": f"s3://{s3_server.bucket}/from-env",
        "ACC_STORAGE_OPTIONS": f'{{"endpoint_url": "{s3_server.endpoint}"}}',
    }
    script = (
        "import fsspec\n"
        "with fsspec.open('acc://climate/hello.txt', 'w') as f:\n"
        "    f.write('from a worker')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    s3 = s3_server.filesystem()
    assert s3.cat_file(f"{s3_server.bucket}/from-env/climate/hello.txt") == b"from a worker"


@pytest.mark.parametrize(
    ("name", "accepted", "expected"),
    [
        ("t2m.CSV", [".csv"], True),
        ("t2m.csv.gz", [".csv"], False),
        ("grid.nc", ["application/x-netcdf"], True),
        ("map.png", ["image/*"], True),
        ("notes.txt", [".csv", "image/*"], False),
        ("anything.bin", [], True),
    ],
)
def test_accepted_types_match_extensions_and_media_types(
    name: str, accepted: list[str], expected: bool
) -> None:
    assert accepts(name, accepted) is expected


def test_a_folder_never_sweeps_in_the_outputs_of_earlier_runs(acc_fs: AccFileSystem) -> None:
    """Ticking ``climate/`` must not pull in a run's ``downscaled.nc`` from ``results/``."""
    storage = Storage(acc_fs)
    files = {
        "examples/observations.nc": "o",
        "examples/model_ssp245.nc": "m",
        "results/climate/1.0.0/run-1/downscaled.nc": "d",
        "results/climate/1.0.0/run-1/provenance.json": "{}",
        "results/climate/1.0.0/run-2/partial.nc": "p",
        "results/climate/1.0.0/run-2/_INCOMPLETE.json": "{}",
        "results/notes/readme.nc": "n",  # no run's records: an ordinary folder
    }
    for relative, text in files.items():
        with storage.open(f"acc://climate/{relative}", "w") as f:
            f.write(text)
    swept = [e.uri for e in storage.files("acc://climate/", [".nc"])]
    assert swept == [
        "acc://climate/examples/model_ssp245.nc",
        "acc://climate/examples/observations.nc",
        "acc://climate/results/notes/readme.nc",
    ]
    # A run's folder selected itself gives its outputs, never its records.
    run = [e.uri for e in storage.files("acc://climate/results/climate/1.0.0/run-1/")]
    assert run == ["acc://climate/results/climate/1.0.0/run-1/downscaled.nc"]


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("lab/meteo-mirror", "meteo"),  # a project's folder into another project
        ("lab/notes", "meteo/stations/notes.txt"),  # a file of another project
        ("users/mallory/inbox", "users/alice"),  # a user's area into another's
        ("links/abc/shared", "lab"),  # a link's guests into a project
    ],
)
def test_a_symlink_into_another_area_opens_nothing(tmp_path: Path, link: str, target: str) -> None:
    """A link planted inside the root (by code that could write there) must not widen
    access: areas are decided on acc:// paths, so a link may not cross from one to another."""
    root = tmp_path / "storage"
    fs = AccFileSystem(root=root.as_uri(), storage_options={})
    fs.pipe_file("acc://meteo/stations/notes.txt", b"private")
    fs.pipe_file("acc://users/alice/diary.txt", b"private")
    fs.pipe_file("acc://lab/own.txt", b"ours")
    fs.makedirs("acc://users/mallory", exist_ok=True)
    fs.makedirs("acc://links/abc", exist_ok=True)
    planted = root / link
    planted.symlink_to(root / target, target_is_directory=(root / target).is_dir())
    parent = link.rsplit("/", 1)[0]
    assert f"{parent}/{link.rsplit('/', 1)[1]}" not in fs.ls(f"acc://{parent}/", detail=False)
    with pytest.raises(StoragePathError, match="through a symbolic link"):
        fs.cat_file(f"acc://{link}/notes.txt" if (root / target).is_dir() else f"acc://{link}")
    with pytest.raises(StoragePathError):
        fs.pipe_file(f"acc://{link}/planted.txt", b"x")
    assert fs.cat_file("acc://lab/own.txt") == b"ours"  # the area itself still works


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("invoice\u202egpj.exe", "acc://lab/invoice?gpj.exe: "),  # shows as invoiceexe.jpg
        ("a\u2066b\u2069.csv", "characters that reorder text"),
        ("bell\x85.csv", "control characters"),  # a C1 control
        ("x" * 256 + ".csv", "names may be at most 255 bytes"),
    ],
)
def test_names_that_hide_or_overflow_are_refused_with_a_clear_message(
    tmp_path: Path, name: str, said: str
) -> None:
    fs = AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
    with pytest.raises(StoragePathError) as refused:
        fs.pipe_file(f"acc://lab/{name}", b"x")
    assert said in str(refused.value)
    assert "\u202e" not in str(refused.value) and "\u2066" not in str(refused.value)
    assert not list((tmp_path / "storage").rglob("*.*"))  # nothing was written


def test_a_name_has_one_spelling_whatever_its_unicode_form(tmp_path: Path) -> None:
    import unicodedata

    fs = AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
    decomposed = unicodedata.normalize("NFD", "acc://lab/Zürich.csv")
    fs.pipe_file(decomposed, b"t\n1\n")
    assert fs.cat_file("acc://lab/Zürich.csv") == b"t\n1\n"  # the composed spelling
    assert fs.ls("acc://lab/", detail=False) == ["lab/Zürich.csv"]


def _plant(root: Path, link: str, target: str) -> None:
    """A symbolic link planted in storage, as code writing straight to the disk could (a
    warm run may make links in its output folder)."""
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(root / target, target_is_directory=(root / target).is_dir())


def test_a_link_in_ones_own_run_folder_opens_no_other_runs(tmp_path: Path) -> None:
    """bob's run plants ``peek`` in its output folder, pointing at alice's run folder in
    the same project, and ``ended`` at a folder of hers that holds a run's records: through
    them nothing is read, listed, found or written, and removing his folder removes the
    links, never what they point at."""
    from accelerator_prefect.access import Principal, Role

    root = tmp_path / "storage"
    fs = AccFileSystem(root=root.as_uri(), storage_options={})
    hers, his = str(uuid.uuid4()), str(uuid.uuid4())
    fs.pipe_file(f"acc://demo/results/{hers}/provenance.json", b'{"conf": "hers"}')
    fs.pipe_file(f"acc://demo/results/{hers}/note.txt", b"hers")
    fs.pipe_file("acc://demo/kept/provenance.json", b"{}")  # an ended run's chosen folder
    fs.pipe_file("acc://demo/kept/summary.csv", b"n\n1\n")
    fs.pipe_file(f"acc://demo/results/{his}/note.txt", b"his")
    _plant(root, f"demo/results/{his}/peek", f"demo/results/{hers}")
    _plant(root, f"demo/results/{his}/peek.json", f"demo/results/{hers}/provenance.json")
    _plant(root, f"demo/results/{his}/ended", "demo/kept")
    bob = Storage(fs, Principal("bob", {"demo": Role.member}))

    own = f"acc://demo/results/{his}/"
    assert [e.name for e in bob.ls(own)] == ["ended", "note.txt"]  # no peek, no peek.json
    assert [e.uri for e in bob.files(own)] == [own + "note.txt"]
    for through in ("peek/provenance.json", "peek.json", "peek/note.txt"):
        with pytest.raises(StoragePathError, match="into the output folder of another run"):
            bob.open(own + through).read()
    with pytest.raises(StoragePathError, match="into the output folder of another run"):
        bob.ls(own + "peek/")
    with pytest.raises(StoragePathError, match="into the output folder of another run"):
        fs.info(own + "peek")  # as a launch checks its inputs: the same answer
    with pytest.raises(StoragePathError, match="into the output folder of another run"):
        bob.open(own + "peek/note.txt", "wb")
    # A folder holding a run's records, through a link to one without an id in its path.
    with pytest.raises(AccessDenied, match="in the output folder of an ended run"):
        bob.open(own + "ended/summary.csv", "wb")
    with pytest.raises(AccessDenied, match="in the output folder of an ended run"):
        bob.rm(own + "ended/summary.csv")
    assert fs.cat_file("acc://demo/kept/summary.csv") == b"n\n1\n"

    fs.rm(own, recursive=True)  # as retention sweeps his run: the links go, not hers
    assert not (root / "demo" / "results" / his).exists()
    assert fs.cat_file(f"acc://demo/results/{hers}/note.txt") == b"hers"
    assert fs.cat_file("acc://demo/kept/summary.csv") == b"n\n1\n"


def test_a_guests_link_opens_no_other_guests_area(tmp_path: Path) -> None:
    """Each guest of a link has an area of their own under it: a link planted in one
    guest's folder toward another's opens nothing, for reading, listing or writing."""
    from accelerator_prefect.access import LinkGrant, guest

    root = tmp_path / "storage"
    fs = AccFileSystem(root=root.as_uri(), storage_options={})
    fs.pipe_file("acc://links/abc/g2/upload.csv", b"second guest's")
    fs.pipe_file("acc://links/abc/g1/own.csv", b"first guest's")
    _plant(root, "links/abc/g1/peek", "links/abc/g2")
    _plant(root, "links/abc/g1/peek.csv", "links/abc/g2/upload.csv")
    first = Storage(fs, guest(LinkGrant("abc", "model", guest="g1")))
    second = Storage(fs, guest(LinkGrant("abc", "model", guest="g2")))

    assert [e.name for e in first.ls("acc://links/abc/g1/")] == ["own.csv"]
    for through in ("peek/upload.csv", "peek.csv"):
        with pytest.raises((StoragePathError, AccessDenied), match="symbolic link"):
            first.open(f"acc://links/abc/g1/{through}").read()
    with pytest.raises((StoragePathError, AccessDenied), match="symbolic link"):
        first.open("acc://links/abc/g1/peek/planted.csv", "wb")
    with pytest.raises(StoragePathError, match="leads out of acc://links/abc/g1/"):
        fs.cat_file("acc://links/abc/g1/peek.csv")
    assert not (root / "links" / "abc" / "g2" / "planted.csv").exists()
    with second.open("acc://links/abc/g2/upload.csv") as f:  # the second guest's own
        assert f.read() == b"second guest's"


@pytest.mark.parametrize("name", ["x" * 251 + ".csv", "é" * 125 + "x.csv"])
def test_a_name_of_255_bytes_is_written_and_read_back(tmp_path: Path, name: str) -> None:
    """The limit users are told of holds: the file a write goes to until it completes has
    a short name of its own, whatever the length of the name written."""
    from accelerator_prefect.access import Principal

    assert len(name.encode()) == 255
    fs = AccFileSystem(root=(tmp_path / "storage").as_uri(), storage_options={})
    alice = Storage(fs, Principal("alice"))
    with alice.open(f"acc://users/alice/{name}", "wb") as f:
        f.write(b"t\n1\n")
    with alice.open(f"acc://users/alice/{name}") as f:
        assert f.read() == b"t\n1\n"
    assert [e.name for e in alice.ls("acc://users/alice/")] == [name]
    fs.pipe_file(f"acc://lab/{name}", b"again")
    assert fs.cat_file(f"acc://lab/{name}") == b"again"
    out = tmp_path / "out"
    out.mkdir()
    assert alice.get(f"acc://users/alice/{name}", out) == [out / name]
    assert (out / name).read_bytes() == b"t\n1\n"

    longer = "x" * 252 + ".csv"
    with pytest.raises(StoragePathError, match="256 bytes long; names may be at most 255 bytes"):
        alice.open(f"acc://users/alice/{longer}", "wb")
    assert [p.name for p in (tmp_path / "storage" / "users" / "alice").iterdir()] == [name]
    assert not [p for p in (tmp_path / "storage").rglob("*") if PARTIAL_MARK in p.name]


def test_a_user_cannot_write_a_dot_file_that_listings_would_hide(tmp_path: Path) -> None:
    """Listings hide dot-names (partial files, the platform's own folders), so a user's
    ``.env`` would be kept and never shown: it is refused, naming it, and nothing stays.
    Runs and the platform write theirs as before."""
    from accelerator_prefect.access import Principal

    root = tmp_path / "storage"
    fs = AccFileSystem(root=root.as_uri(), storage_options={})
    alice = Storage(fs, Principal("alice"))
    for uri, name in [
        ("acc://users/alice/.env", ".env"),
        ("acc://users/alice/.cache/index.json", ".cache"),
    ]:
        with pytest.raises(StoragePathError) as refused:
            alice.open(uri, "wb")
        said = str(refused.value)
        assert said.startswith(uri + ": ") and f"'{name}'" in said
        assert "may not start with a dot" in said
    local = tmp_path / "stations"
    local.mkdir()
    (local / "a.csv").write_text("a\n1\n")
    (local / ".DS_Store").write_text("x")
    with pytest.raises(StoragePathError, match=r"stations/\.DS_Store: the name '\.DS_Store'"):
        alice.put(local, "acc://users/alice/")
    assert not list(root.rglob("*.*"))  # nothing written, not even a.csv

    (local / ".DS_Store").unlink()
    assert [e.name for e in alice.put(local, "acc://users/alice/")] == ["a.csv"]
    fs.pipe_file("acc://.platform/retention/sweep.json", b"{}")  # the platform's own
    assert fs.cat_file("acc://.platform/retention/sweep.json") == b"{}"
    with Storage(fs).open("acc://lab/run/.state", "wb") as f:  # a run's (no principal)
        f.write(b"x")
    assert (root / "lab" / "run" / ".state").read_bytes() == b"x"
    assert not [p for p in root.rglob("*") if PARTIAL_MARK in p.name]
