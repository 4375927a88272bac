"""Previews of run output files: tables, images, quick-look maps, text, and the Streamlit view.

Every file is made here, in memory, the way a model would write it (pandas,
pyarrow, Pillow, scipy), so the tests read real formats rather than fixtures.
"""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image, TiffImagePlugin
from streamlit.testing.v1 import AppTest

from catalog_ui import previews
from catalog_ui.previews import (
    PreviewError,
    describe_netcdf,
    kind_of,
    quicklook,
    read_table,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NO_DATA_GREY = (217, 217, 217)  # the colour quick looks give cells without data

# --- making files ------------------------------------------------------------


def csv_bytes(rows: int) -> bytes:
    frame = pd.DataFrame({"site": [f"s{i}" for i in range(rows)], "tas": np.arange(rows) * 0.5})
    text: str = frame.to_csv(index=False)
    return text.encode()


def parquet_bytes(rows: int) -> bytes:
    buffer = io.BytesIO()
    frame = pd.DataFrame({"year": np.arange(2000, 2000 + rows), "flow": np.linspace(0, 1, rows)})
    frame.to_parquet(buffer, index=False, row_group_size=300)
    return buffer.getvalue()


def png_bytes(mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    if mode == "I;16":
        ramp = np.linspace(0, 60000, 40 * 30).astype("<u2").reshape(30, 40)
        Image.frombytes("I;16", (40, 30), ramp.tobytes()).save(buffer, format="PNG")
    else:
        Image.new(mode, (40, 30), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


def terrain(dtype: Any = np.float32) -> np.ndarray[Any, Any]:
    """A 40 × 60 lon/lat field with an obvious pattern, bottom 10 rows set to -9999."""
    lon, lat = np.meshgrid(np.linspace(5, 17, 60), np.linspace(48, 44, 40))
    values = 1500 + 1000 * np.sin(lon) * np.cos(lat)
    values[-10:, :] = -9999
    return values.astype(dtype)


def cog_bytes(values: np.ndarray[Any, Any], *, levels: int = 2, block: int = 16) -> bytes:
    """A Cloud Optimized GeoTIFF as GDAL lays one out, uncompressed: float32, tiled, the
    full resolution then ``levels`` overviews (every other cell), every directory before
    the tiles, the smallest overview's tiles first; placed like :func:`geotiff_bytes`.

    Written byte by byte with ``struct``: Pillow writes no tiles, and rasterio is the
    optional extra whose absence these tests are about."""

    images = [
        np.ascontiguousarray(values[:: 2**i, :: 2**i], dtype="<f4") for i in range(levels + 1)
    ]
    ghost = b"GDAL_STRUCTURAL_METADATA_SIZE=000040 bytes\nLAYOUT=IFDS_BEFORE_DATA\n"
    geo: list[tuple[int, int, list[float] | list[int] | bytes]] = [
        (33550, 12, [0.2, 0.1, 0.0]),
        (33922, 12, [0.0, 0.0, 0.0, 5.0, 48.0, 0.0]),
        (34735, 3, [1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326]),
        (42113, 2, b"-9999\x00"),
    ]

    def tiles(image: np.ndarray[Any, Any]) -> list[bytes]:
        rows, cols = -(-image.shape[0] // block), -(-image.shape[1] // block)
        padded = np.zeros((rows * block, cols * block), dtype="<f4")
        padded[: image.shape[0], : image.shape[1]] = image
        return [
            padded[r * block : (r + 1) * block, c * block : (c + 1) * block].tobytes()
            for r in range(rows)
            for c in range(cols)
        ]

    def entries(level: int, image: np.ndarray[Any, Any], offsets: list[int]) -> list[Any]:
        count = len(offsets)
        found: list[tuple[int, int, list[float] | list[int] | bytes]] = [
            (254, 4, [1 if level else 0]),
            (256, 4, [image.shape[1]]),
            (257, 4, [image.shape[0]]),
            (258, 3, [32]),
            (259, 3, [1]),
            (262, 3, [1]),
            (277, 3, [1]),
            (284, 3, [1]),
            (322, 3, [block]),
            (323, 3, [block]),
            (324, 4, offsets),
            (325, 4, [block * block * 4] * count),
            (339, 3, [3]),
        ]
        return sorted(found + (geo if level == 0 else []))

    formats = {2: "s", 3: "H", 4: "I", 12: "d"}

    def directory(at: int, items: list[Any], following: int) -> bytes:
        head, extra = struct.pack("<H", len(items)), b""
        extra_at = at + 2 + 12 * len(items) + 4
        for tag, kind, value in items:
            n = len(value)
            packed = value if kind == 2 else struct.pack(f"<{n}{formats[kind]}", *value)
            if len(packed) <= 4:
                head += struct.pack("<HHI", tag, kind, n) + packed.ljust(4, b"\x00")
            else:
                head += struct.pack("<HHII", tag, kind, n, extra_at + len(extra))
                extra += packed + b"\x00" * (len(packed) % 2)
        return head + struct.pack("<I", following) + extra

    all_tiles = [tiles(image) for image in images]
    starts, at = [], 8 + len(ghost)
    for level, image in enumerate(images):  # a directory's size does not depend on offsets
        starts.append(at)
        at += len(directory(at, entries(level, image, [0] * len(all_tiles[level])), 0))
    offsets: list[list[int]] = [[] for _ in images]
    for level in reversed(range(len(images))):  # the smallest overview's tiles first
        for tile in all_tiles[level]:
            offsets[level].append(at)
            at += len(tile)
    blobs = [
        directory(starts[level], entries(level, image, offsets[level]), following)
        for level, (image, following) in enumerate(zip(images, [*starts[1:], 0], strict=True))
    ]
    body = b"".join(b"".join(all_tiles[level]) for level in reversed(range(len(images))))
    return b"II" + struct.pack("<HI", 42, 8 + len(ghost)) + ghost + b"".join(blobs) + body


def geotiff_bytes(
    values: np.ndarray[Any, Any],
    *,
    nodata: str | None = "-9999",
    compression: str | None = None,
) -> bytes:
    """A GeoTIFF as GDAL writes it: tie point at 5°E 48°N, 0.2° pixels, WGS 84, nodata."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[33922], tags.tagtype[33922] = (0.0, 0.0, 0.0, 5.0, 48.0, 0.0), 12
    tags[33550], tags.tagtype[33550] = (0.2, 0.1, 0.0), 12
    tags[34735], tags.tagtype[34735] = (1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326), 3
    if nodata is not None:
        tags[42113], tags.tagtype[42113] = nodata, 2
    if values.dtype == np.int16:
        # Pillow has no signed 16-bit mode to write; GDAL marks int16 with SampleFormat=2.
        image = Image.frombytes("I;16", values.shape[::-1], values.astype("<i2").tobytes())
        tags[339], tags.tagtype[339] = 2, 3
    else:
        image = Image.fromarray(values)
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF", tiffinfo=tags, compression=compression)
    return buffer.getvalue()


def netcdf_bytes(*, with_map: bool = True) -> bytes:
    """Classic NetCDF: 3 monthly fields of `tas` (K) on a 2° global lat/lon grid."""
    from scipy.io import netcdf_file

    buffer = io.BytesIO()
    dataset = netcdf_file(buffer, "w")
    dataset.createDimension("time", None)
    dataset.createDimension("lat", 90)
    dataset.createDimension("lon", 180)
    lat = dataset.createVariable("lat", "f4", ("lat",))
    lat[:], lat.units = np.linspace(-89, 89, 90), "degrees_north"
    lon = dataset.createVariable("lon", "f4", ("lon",))
    lon[:], lon.units = np.linspace(1, 359, 180), "degrees_east"
    time = dataset.createVariable("time", "f8", ("time",))
    time.units = "days since 2000-01-01"
    time[0:3] = [0, 31, 59]
    if with_map:
        tas = dataset.createVariable("tas", "f4", ("time", "lat", "lon"))
        tas.units, tas.long_name = "K", "Near-Surface Air Temperature"
        tas._FillValue = np.float32(1e20)
        lons, lats = np.meshgrid(np.linspace(1, 359, 180), np.linspace(-89, 89, 90))
        field = 288 - 40 * np.abs(np.sin(np.radians(lats))) + 5 * np.sin(np.radians(lons) * 3)
        field[10:20, 30:60] = 1e20
        tas[0:3] = np.stack([field, field + 1, field + 2]).astype(np.float32)
    dataset.flush()
    data = buffer.getvalue()
    dataset.close()
    return data


def decoded(png: bytes) -> np.ndarray[Any, Any]:
    assert png[:8] == PNG_MAGIC
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def assert_is_a_drawn_map(png: bytes) -> np.ndarray[Any, Any]:
    pixels = decoded(png)
    height, width, _ = pixels.shape
    assert 300 <= width <= 1600 and 150 <= height <= 1200
    # A map, colorbar and labels make many colours; an empty or failed draw does not.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    return pixels


def grey_cells(pixels: np.ndarray[Any, Any]) -> int:
    return int(np.all(pixels == NO_DATA_GREY, axis=-1).sum())


# --- kind_of -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("out/summary.csv", "table"),
        ("out/summary.TSV", "table"),
        ("acc://runs/7/flows.Parquet", "table"),
        ("map.png", "image"),
        ("photo.JPG", "image"),
        ("photo.jpeg", "image"),
        ("anim.gif", "image"),
        ("diagram.svg", "image"),
        ("tile.webp", "image"),
        ("dem.tif", "geotiff"),
        ("DEM.TIFF", "geotiff"),
        ("tas.nc", "netcdf"),
        ("notes.txt", "text"),
        ("README.md", "text"),
        ("result.json", "text"),
        ("conf.yaml", "text"),
        ("conf.YML", "text"),
        ("run.log", "text"),
    ],
)
def test_kind_of_knows_each_previewable_extension_in_any_case(name: str, kind: str) -> None:
    assert kind_of(name) == kind


@pytest.mark.parametrize("name", ["model.bin", "archive.tar.gz", "Makefile", "data.h5", ""])
def test_kind_of_is_none_for_files_without_a_preview(name: str) -> None:
    assert kind_of(name) is None


def test_excel_is_a_table_when_openpyxl_is_installed() -> None:
    pytest.importorskip("openpyxl")
    assert kind_of("Budget.XLSX") == "table"


# --- tables --------------------------------------------------------------------


def test_read_table_returns_the_csv_rows_and_columns_written() -> None:
    frame = read_table("summary.csv", csv_bytes(5))
    assert list(frame.columns) == ["site", "tas"]
    assert frame["site"].tolist() == ["s0", "s1", "s2", "s3", "s4"]
    assert frame["tas"].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_read_table_cuts_a_long_csv_to_max_rows() -> None:
    frame = read_table("summary.csv", csv_bytes(1500))
    assert len(frame) == 1000
    assert frame["site"].iloc[-1] == "s999"
    assert len(read_table("summary.csv", csv_bytes(1500), max_rows=10)) == 10


def test_read_table_reads_semicolon_separated_and_tab_separated_files() -> None:
    semicolons = read_table("eu.csv", b"site;tas\nalps;271.5\njura;275.0\n")
    tabs = read_table("t.tsv", b"site\ttas\nalps\t271.5\n")
    assert semicolons.to_dict("records") == [
        {"site": "alps", "tas": 271.5},
        {"site": "jura", "tas": 275.0},
    ]
    assert tabs.to_dict("records") == [{"site": "alps", "tas": 271.5}]


def test_read_table_returns_the_parquet_rows_written_cut_to_max_rows() -> None:
    whole = read_table("flows.parquet", parquet_bytes(20))
    cut = read_table("flows.parquet", parquet_bytes(2000), max_rows=1000)
    assert whole["year"].tolist() == list(range(2000, 2020))
    assert list(cut.columns) == ["year", "flow"]
    assert cut["year"].tolist() == list(range(2000, 3000))  # spans row groups of 300


def test_read_table_reads_the_first_sheet_of_an_excel_workbook() -> None:
    pytest.importorskip("openpyxl")
    buffer = io.BytesIO()
    pd.DataFrame({"site": ["alps", "jura"], "tas": [271.5, 275.0]}).to_excel(buffer, index=False)
    assert read_table("t.xlsx", buffer.getvalue()).to_dict("records") == [
        {"site": "alps", "tas": 271.5},
        {"site": "jura", "tas": 275.0},
    ]


@pytest.mark.parametrize(
    ("name", "data"),
    [("flows.parquet", b"PAR1 not really parquet"), ("empty.csv", b""), ("x.png", png_bytes())],
)
def test_unreadable_table_raises_preview_error_naming_the_file(name: str, data: bytes) -> None:
    with pytest.raises(PreviewError, match=name.replace(".", r"\.")):
        read_table(name, data)


# --- GeoTIFF quick looks ---------------------------------------------------------


def test_quicklook_of_a_float_geotiff_draws_a_map() -> None:
    assert_is_a_drawn_map(quicklook("dem.tif", geotiff_bytes(terrain())))


def test_quicklook_greys_out_geotiff_nodata_cells_instead_of_colouring_them() -> None:
    with_nodata = assert_is_a_drawn_map(quicklook("dem.tif", geotiff_bytes(terrain())))
    without_nodata = decoded(quicklook("dem.tif", geotiff_bytes(terrain(), nodata=None)))
    # A quarter of the map is nodata: a sizeable grey block, and none without the tag.
    assert grey_cells(with_nodata) > 5000
    assert grey_cells(without_nodata) < 100  # a few anti-aliased text pixels at most


@pytest.mark.parametrize(
    ("dtype", "compression"),
    [
        (np.int16, None),
        (np.float32, "tiff_deflate"),
        (np.float32, "tiff_lzw"),
        (np.int16, "tiff_deflate"),
        (np.uint8, "tiff_lzw"),
    ],
)
def test_quicklook_reads_integer_and_compressed_geotiffs(dtype: Any, compression: str) -> None:
    values = terrain(np.float32)
    if dtype == np.uint8:
        values = np.clip(values / 20, 0, 255)
        values[-10:, :] = 0
        data = geotiff_bytes(values.astype(np.uint8), nodata="0", compression=compression)
    else:
        data = geotiff_bytes(values.astype(dtype), compression=compression)
    pixels = assert_is_a_drawn_map(quicklook("dem.tif", data))
    assert grey_cells(pixels) > 5000


def test_geotiff_extent_puts_the_map_where_the_tie_point_and_pixel_size_say() -> None:
    from catalog_ui.previews import _read_geotiff

    raster = _read_geotiff("dem.tif", geotiff_bytes(terrain()))
    # 60 columns of 0.2° from 5°E, 40 rows of 0.1° down from 48°N.
    assert raster.extent == pytest.approx((5.0, 17.0, 44.0, 48.0))
    assert (raster.x_label, raster.y_label) == ("longitude (°E)", "latitude (°N)")
    assert np.isnan(raster.values[-1, 0]) and not np.isnan(raster.values[0, 0])


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_geotiff_raises_preview_error_naming_the_file() -> None:
    truncated = geotiff_bytes(terrain())[:300]
    for data in (b"II*\x00 this is not a tiff", truncated):
        with pytest.raises(PreviewError, match=r"dem\.tif could not be read as a GeoTIFF"):
            quicklook("dem.tif", data)


def test_quicklook_of_a_geotiff_that_is_all_nodata_says_there_is_nothing_to_draw() -> None:
    empty = np.full((20, 30), -9999, dtype=np.float32)
    with pytest.raises(PreviewError, match="nothing to draw"):
        quicklook("empty.tif", geotiff_bytes(empty))


# --- NetCDF ------------------------------------------------------------------------


def test_quicklook_of_netcdf_draws_the_first_time_step_of_tas() -> None:
    from catalog_ui.previews import _read_netcdf_grid

    pixels = assert_is_a_drawn_map(quicklook("tas.nc", netcdf_bytes()))
    raster = _read_netcdf_grid("tas.nc", netcdf_bytes())
    assert grey_cells(pixels) > 1000  # the _FillValue block
    assert raster.title == "tas — Near-Surface Air Temperature"
    assert raster.units == "K"
    assert raster.note == "time 1 of 3"
    assert raster.extent == pytest.approx((0.0, 360.0, -90.0, 90.0))
    # Row 0 is drawn at the top, so it must be the northernmost latitude.
    assert np.nanmax(raster.values[0]) < np.nanmax(raster.values[45])


def test_describe_netcdf_lists_each_variable_with_its_units() -> None:
    table = describe_netcdf(netcdf_bytes())
    tas = table.set_index("name").loc["tas"]
    assert set(table["name"]) == {"lat", "lon", "time", "tas"}
    assert tas["units"] == "K"
    assert tas["long_name"] == "Near-Surface Air Temperature"
    assert tas["dimensions"] == "time, lat, lon"
    assert tas["shape"] == "3 × 90 × 180"


def test_netcdf_without_a_gridded_variable_raises_preview_error() -> None:
    with pytest.raises(PreviewError, match="no variable with two or more dimensions"):
        quicklook("series.nc", netcdf_bytes(with_map=False))


def test_corrupt_netcdf_raises_preview_error_naming_the_file() -> None:
    with pytest.raises(PreviewError, match=r"tas\.nc could not be read as a NetCDF file"):
        quicklook("tas.nc", b"CDF\x01 broken")
    with pytest.raises(PreviewError, match=r"tas\.nc could not be read as a NetCDF file"):
        describe_netcdf(b"garbage", name="tas.nc")


def test_netcdf4_file_gets_a_plain_message_about_the_format() -> None:
    with pytest.raises(PreviewError, match="NetCDF-4"):
        quicklook("tas.nc", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)


def test_quicklook_of_a_non_raster_file_raises_preview_error() -> None:
    with pytest.raises(PreviewError, match="no quick-look map"):
        quicklook("summary.csv", csv_bytes(3))


# --- show, in a Streamlit app -----------------------------------------------------


def preview_page(name: str, data: bytes) -> None:
    from catalog_ui.previews import show

    show(name, data)


def run_preview(name: str, data: bytes) -> AppTest:
    # The timeout bounds the first run, which imports matplotlib; it is not a wait.
    app = AppTest.from_function(preview_page, args=(name, data), default_timeout=30)
    app.run()
    assert not app.exception
    return app


def test_show_draws_a_csv_as_a_dataframe_with_its_row_count() -> None:
    app = run_preview("summary.csv", csv_bytes(12))
    assert app.dataframe[0].value.shape == (12, 2)
    assert app.caption[0].value == "12 rows × 2 columns"


def headed_page(name: str, data: bytes) -> None:
    from accelerator_prefect.manifest import OutputMapping
    from catalog_ui.previews import show

    mapping = OutputMapping.model_validate(
        {"columns": {"*.csv": {"tas": {"title": "Mean temperature", "unit": "°C"}}}}
    )
    show(name, data, columns=mapping.columns_of(name))


def test_a_tables_columns_are_headed_with_the_titles_and_units_the_model_declares() -> None:
    app = AppTest.from_function(headed_page, args=("out/summary.csv", csv_bytes(3)))
    app.run(timeout=30)
    assert not app.exception
    assert list(app.dataframe[0].value.columns) == ["site", "Mean temperature (°C)"]
    assert list(app.dataframe[0].value["Mean temperature (°C)"]) == [0.0, 0.5, 1.0]


def test_output_columns_are_found_by_exact_name_before_a_pattern() -> None:
    from accelerator_prefect.manifest import OutputMapping

    mapping = OutputMapping.model_validate(
        {"columns": {"*.csv": {"a": {"unit": "m"}}, "summary.csv": {"b": {"unit": "s"}}}}
    )
    assert set(mapping.columns_of("summary.csv")) == {"b"}
    assert set(mapping.columns_of("sub/other.csv")) == {"a"}
    assert mapping.columns_of("map.png") == {}


def test_show_says_a_long_table_is_cut_to_the_first_thousand_rows() -> None:
    app = run_preview("summary.csv", csv_bytes(1500))
    assert app.dataframe[0].value.shape == (1000, 2)
    assert "1,500 rows" in app.caption[0].value
    assert "first 1,000 rows" in app.caption[0].value


def test_show_draws_an_image() -> None:
    app = run_preview("map.png", png_bytes())
    assert len(app.image) == 1
    assert app.image[0].captions == ["map.png"]


def test_show_draws_an_svg_drawing() -> None:
    svg = b'<svg width="20" height="10"><rect width="20" height="10" fill="teal"/></svg>'
    app = run_preview("diagram.svg", svg)
    assert app.image[0].value[0].startswith("data:image/svg+xml")


def test_show_draws_a_16_bit_png_that_streamlit_cannot_reencode_itself() -> None:
    app = run_preview("depth.png", png_bytes("I;16"))
    assert len(app.image) == 1


def test_show_draws_a_netcdf_quicklook_and_its_variables() -> None:
    app = run_preview("tas.nc", netcdf_bytes())
    assert len(app.image) == 1
    assert "tas" in app.dataframe[0].value["name"].tolist()


def test_show_lists_netcdf_variables_even_when_there_is_no_map() -> None:
    app = run_preview("series.nc", netcdf_bytes(with_map=False))
    assert len(app.image) == 0
    assert "no variable with two or more dimensions" in app.info[0].value
    assert "time" in app.dataframe[0].value["name"].tolist()


def test_show_draws_a_geotiff_quicklook() -> None:
    app = run_preview("dem.tif", geotiff_bytes(terrain(), compression="tiff_deflate"))
    assert len(app.image) == 1
    assert not app.warning
    assert not app.info  # not a COG: nothing to say about overviews


HAS_RASTERIO = importlib.util.find_spec("rasterio") is not None


def test_without_rasterio_a_cog_shows_its_full_resolution_and_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A catalog installed without the geo extra: rasterio cannot be imported.
    monkeypatch.setitem(sys.modules, "rasterio", None)
    app = run_preview("dem.tif", cog_bytes(terrain()))
    assert len(app.image) == 1 and not app.warning
    notice = app.info[0].value
    assert "dem.tif looks like a Cloud Optimized GeoTIFF (tiled, 2 overviews)" in notice
    assert "install accelerator-prefect[geo] to preview Cloud Optimized GeoTIFFs' overviews" in (
        notice
    )
    assert "full resolution" in notice
    assert app.image[0].captions == ["Quick look at dem.tif; download it for the full data."]


def test_a_cog_quicklook_draws_a_map_with_or_without_rasterio() -> None:
    pixels = assert_is_a_drawn_map(quicklook("dem.tif", cog_bytes(terrain())))
    assert grey_cells(pixels) > 0  # the -9999 rows, read from whichever level is drawn


@pytest.mark.skipif(not HAS_RASTERIO, reason="needs rasterio (accelerator-prefect[geo])")
def test_with_rasterio_a_cog_shows_its_smallest_overview_and_says_how_many_it_has() -> None:
    app = run_preview("dem.tif", cog_bytes(terrain(), levels=2))
    assert len(app.image) == 1 and not app.warning and not app.info
    (caption,) = app.image[0].captions
    what = "Cloud Optimized GeoTIFF" if importlib.util.find_spec("rio_cogeo") else "tiled GeoTIFF"
    assert caption.startswith(f"dem.tif is a {what} with 2 overviews (1/2, 1/4)")
    assert "the map shows its smallest overview, 15 × 10 of 60 × 40 cells" in caption


def test_show_pretty_prints_json() -> None:
    app = run_preview("result.json", json.dumps({"rmse": 0.25, "sites": ["alps"]}).encode())
    assert app.code[0].value == '{\n  "rmse": 0.25,\n  "sites": [\n    "alps"\n  ]\n}'
    assert app.code[0].language == "json"


def test_show_shows_invalid_json_as_it_is_with_a_note() -> None:
    app = run_preview("result.json", b'{"rmse": 0.25,')
    assert app.code[0].value == '{"rmse": 0.25,'
    assert "not valid JSON" in app.caption[0].value


def test_show_renders_markdown_as_markdown() -> None:
    app = run_preview("README.md", b"# Results\n\nAll **good**.")
    assert any("All **good**." in block.value for block in app.markdown)
    assert not app.code


def test_show_keeps_the_end_of_a_long_log_and_says_so() -> None:
    log = "\n".join(f"step {i}" for i in range(5000)).encode()
    app = run_preview("run.log", log)
    shown = app.code[0].value.splitlines()
    assert shown[-1] == "step 4999"
    assert len(shown) == 2000
    assert "last 2,000 of 5,000 lines" in app.caption[0].value


def test_show_tells_the_user_to_download_a_file_it_cannot_preview() -> None:
    app = run_preview("model.bin", b"\x00\x01\x02")
    assert "no preview for .bin files" in app.info[0].value
    assert "Download" in app.info[0].value


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("map.png", b"\x89PNG\r\n\x1a\n broken"),
        ("dem.tif", b"II*\x00 broken"),
        ("flows.parquet", b"nonsense"),
        ("tas.nc", b"nonsense"),
        ("blob.txt", b"\x00\x01binary\x00"),
    ],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_show_warns_in_plain_words_about_a_corrupt_file(name: str, data: bytes) -> None:
    app = run_preview(name, data)
    assert name in app.warning[0].value
    assert "Download it" in app.warning[0].value
    assert not app.image and not app.dataframe


def test_show_offers_only_the_download_for_files_over_the_preview_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(previews, "PREVIEW_LIMIT", 100)
    app = run_preview("summary.csv", csv_bytes(50))
    assert not app.dataframe
    assert "too large to preview" in app.info[0].value
