"""The bundled geotiff-to-cog model, launched through the real platform on its samples.

The test environment has no rasterio (only the model's own environment does), so
the COGs are checked by reading their TIFF structure with ``struct`` (the chain of
image file directories: full resolution first, then each overview, tiled, with the
compression asked for) and their pixels with Pillow.
"""

from __future__ import annotations

import csv
import io
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import Image

from accelerator_prefect import Accelerator, Run
from tests.conftest import ROOT, ModelRepo, User
from tests.test_launch import PORTAL_ONLY, bundled_example

SAMPLES = "acc://geo/examples/geotiffs/"
FILES = ["dem_utm32n.tif", "orthophoto_wgs84.tif"]
DEFLATE = "deflate"
# TIFF tag numbers and the Compression tag's values.
NEW_SUBFILE_TYPE, WIDTH, LENGTH, COMPRESSION, PREDICTOR = 254, 256, 257, 259, 317
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS = 322, 323, 324
COMPRESSIONS = {"deflate": 8, "lzw": 5, "zstd": 50000, "webp": 50001}
TYPES = {1: "B", 2: "s", 3: "H", 4: "I", 16: "Q"}  # the integer types an IFD entry uses here


@dataclass
class Directory:
    """One image file directory (IFD) of a TIFF: where it is and its integer tags."""

    offset: int
    tags: dict[int, list[int]]

    def first(self, tag: int) -> int:
        return self.tags[tag][0]


def directories(data: bytes) -> list[Directory]:
    """Every IFD of a classic (not Big) TIFF, following the chain from the header."""
    order = {b"II": "<", b"MM": ">"}[data[:2]]
    assert struct.unpack(order + "H", data[2:4])[0] == 42, "not a classic TIFF"
    (offset,) = struct.unpack(order + "I", data[4:8])
    found = []
    while offset:
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        tags = {}
        for i in range(count):
            entry = offset + 2 + 12 * i
            tag, kind, n = struct.unpack(order + "HHI", data[entry : entry + 8])
            if kind not in TYPES or kind == 2:
                continue
            size = struct.calcsize(TYPES[kind]) * n
            at = (
                entry + 8
                if size <= 4
                else struct.unpack(order + "I", data[entry + 8 : entry + 12])[0]
            )
            tags[tag] = list(struct.unpack(f"{order}{n}{TYPES[kind]}", data[at : at + size]))
        found.append(Directory(offset, tags))
        (offset,) = struct.unpack(
            order + "I", data[offset + 2 + 12 * count : offset + 6 + 12 * count]
        )
    return found


def assert_is_a_cog(
    data: bytes, *, width: int, height: int, levels: int, block: int, compression: str
) -> list[Directory]:
    """The layout of a COG: the full-resolution IFD, then one per overview halving it, all
    tiled ``block`` × ``block`` with ``compression``, every IFD before the tile data, and
    the smallest overview's tiles first, the full resolution's last."""
    assert b"LAYOUT=IFDS_BEFORE_DATA" in data[:400]  # GDAL's ghost header of a COG
    found = directories(data)
    assert len(found) == 1 + levels
    for level, ifd in enumerate(found):
        factor = 2**level
        assert ifd.tags.get(NEW_SUBFILE_TYPE, [0])[0] == (1 if level else 0)  # 1: reduced
        assert (ifd.first(WIDTH), ifd.first(LENGTH)) == (-(-width // factor), -(-height // factor))
        assert (ifd.first(TILE_WIDTH), ifd.first(TILE_LENGTH)) == (block, block)
        assert ifd.first(COMPRESSION) == COMPRESSIONS[compression]
    offsets = [ifd.offset for ifd in found]
    assert offsets == sorted(offsets)
    first_tiles = [min(o for o in ifd.tags[TILE_OFFSETS] if o) for ifd in found]
    assert max(offsets) < min(first_tiles)
    assert first_tiles == sorted(first_tiles, reverse=True)
    return found


def read_output(user: User, run: Run, name: str) -> bytes:
    with user.acc.storage.open(f"{run.output_location}{name}") as f:
        data: bytes = f.read()
    return data


def cogs_table(user: User, run: Run) -> dict[str, dict[str, str]]:
    text = read_output(user, run, "cogs.csv").decode("utf-8")
    return {row["file"]: row for row in csv.DictReader(io.StringIO(text))}


def pixels(data: bytes, frame: int = 0) -> np.ndarray[Any, Any]:
    with Image.open(io.BytesIO(data)) as image:
        image.seek(frame)
        return np.asarray(image)


def sample(name: str) -> bytes:
    return (ROOT / "examples" / "data" / "geo" / "geotiffs" / name).read_bytes()


def launch(user: User, conf: dict[str, Any]) -> Run:
    run = user.acc.launch("geotiff-to-cog", conf=conf, inputs=[SAMPLES])
    run.wait(timeout=300)
    return run


@pytest.fixture(scope="module")
def cog_repo(tmp_path_factory: pytest.TempPathFactory, acc: Accelerator) -> ModelRepo:
    """geotiff-to-cog committed in its own repository and published; its samples seeded."""
    repo = bundled_example(tmp_path_factory.mktemp("geo"), "geotiff-to-cog")
    acc.publish(repo.manifest)
    return repo


@PORTAL_ONLY
def test_geotiff_to_cog_turns_the_sample_folder_into_valid_cogs_with_overviews(
    cog_repo: ModelRepo, user: User
) -> None:
    run = launch(user, {})  # the catalog's "Use the sample inputs" with the defaults
    assert run.state == "Completed", "\n".join(run.logs())
    assert [f.path for f in run.outputs()] == ["cogs.csv", *FILES]
    table = cogs_table(user, run)
    assert sorted(table) == FILES
    for name, (width, height, bands, dtype) in {
        "dem_utm32n.tif": (768, 768, "1", "float32"),
        "orthophoto_wgs84.tif": (1024, 768, "3", "uint8"),
    }.items():
        row, data = table[name], read_output(user, run, name)
        # Automatic overviews halve each file down to 256 pixels or less: 1/2 and 1/4.
        assert_is_a_cog(
            data, width=width, height=height, levels=2, block=512, compression="deflate"
        )
        assert (row["valid"], row["warnings"], row["overview_levels"]) == ("true", "", "2")
        assert (row["overview_factors"], row["block_size"], row["compression"]) == (
            "2 4",
            "512x512",
            "deflate",
        )
        assert (row["bands"], row["dtype"], row["overview_resampling"]) == (bands, dtype, "average")
        assert int(row["size_before_bytes"]) == len(sample(name))
        assert int(row["size_after_bytes"]) == len(data)
        # Lossless: the full resolution holds the input's values, cell for cell.
        assert np.array_equal(pixels(data), pixels(sample(name)))
    assert table["dem_utm32n.tif"]["crs"] == "EPSG:32632"
    assert table["orthophoto_wgs84.tif"]["crs"] == "EPSG:4326"
    assert (table["dem_utm32n.tif"]["nodata"], table["dem_utm32n.tif"]["predictor"]) == (
        "-9999",
        "3",
    )
    # The 1/4 overview averages 4 × 4 cells: its elevations stay in the input's range.
    dem = pixels(read_output(user, run, "dem_utm32n.tif"), frame=2)
    valid = dem[dem != -9999]
    assert dem.shape == (192, 192) and 1700 < valid.min() < valid.max() < 3200
    assert any("convert: dem_utm32n.tif:" in line and "a valid COG" in line for line in run.logs())

    # A rerun (same version, conf and inputs) gives the same bytes.
    again = user.acc.rerun(str(run.id))
    assert again.wait(timeout=300) == "Completed", "\n".join(again.logs())
    found = user.acc.diff(str(run.id), str(again.id))
    assert found.identical and found.same_outputs == 3, found
    hashes = {(o.uri, o.sha256) for o in run.provenance().outputs}
    assert hashes == {(o.uri, o.sha256) for o in again.provenance().outputs}


@PORTAL_ONLY
def test_other_settings_give_cogs_tiled_compressed_and_reduced_as_asked(
    cog_repo: ModelRepo, user: User
) -> None:
    conf = {
        "compression": "lzw",
        "blocksize": 256,
        "overview_levels": 3,
        "overview_resampling": "nearest",
    }
    run = launch(user, conf)
    assert run.state == "Completed", "\n".join(run.logs())
    table = cogs_table(user, run)
    dem = read_output(user, run, "dem_utm32n.tif")
    ifds = assert_is_a_cog(dem, width=768, height=768, levels=3, block=256, compression="lzw")
    assert ifds[0].first(PREDICTOR) == 3
    image = read_output(user, run, "orthophoto_wgs84.tif")
    assert_is_a_cog(image, width=1024, height=768, levels=3, block=256, compression="lzw")
    for row in table.values():
        assert (row["overview_levels"], row["overview_factors"]) == ("3", "2 4 8")
        assert (row["block_size"], row["compression"], row["valid"]) == ("256x256", "lzw", "true")
    # Nearest keeps values: the 1/8 overview's cells are cells of the full resolution.
    full, smallest = pixels(dem), pixels(dem, frame=3)
    assert smallest.shape == (96, 96)
    assert np.isin(smallest, full).all()
    assert np.array_equal(pixels(image), pixels(sample("orthophoto_wgs84.tif")))


@PORTAL_ONLY
def test_webp_refuses_the_elevation_grid_naming_the_file_and_the_compression(
    cog_repo: ModelRepo, user: User
) -> None:
    run = launch(user, {"compression": "webp"})
    assert run.state == "Failed"
    failure = run.failure()
    assert failure is not None and failure.routine == "describe"
    assert "dem_utm32n.tif cannot be compressed with webp" in failure.message
    assert "8-bit images of 3 or 4 bands" in failure.message
    assert "orthophoto_wgs84.tif" not in failure.message  # the RGB image fits
    assert not [f for f in run.outputs() if f.path.endswith(".tif")]
