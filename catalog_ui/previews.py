"""Previews of a run's output files on the catalog's run page.

This module owns deciding which output files can be previewed (by their
extension), turning a file's bytes into something a person can look at — a
table, an image, a quick-look map of a raster, text — and drawing that with
Streamlit. It takes ``(name, data)`` and never touches storage: the run page
reads the bytes through the service layer and hands them over.

Heavy packages (numpy, pandas, pyarrow, Pillow, matplotlib, scipy, streamlit)
are imported inside the functions that need them, because every catalog page
imports this module. A Cloud Optimized GeoTIFF's quick look comes from its
smallest overview where rasterio is installed (the ``geo`` extra, with
rio-cogeo to validate it); elsewhere Pillow reads the full resolution and the
preview says which extra would do better.

Example:
    >>> from catalog_ui.previews import kind_of, read_table
    >>> kind_of("results/Summary.CSV")
    'table'
    >>> read_table("summary.csv", b"site,tas\\nalps,271.5\\n").shape
    (1, 2)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from accelerator_prefect.errors import AcceleratorError
from catalog_ui.markdown import plain, safe_markdown

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from PIL import Image

__all__ = [
    "PREVIEW_LIMIT",
    "PreviewError",
    "describe_netcdf",
    "headed",
    "kind_of",
    "quicklook",
    "read_table",
    "show",
]

log = logging.getLogger(__name__)

PREVIEW_LIMIT = 50 * 1024 * 1024
"""Largest file (in bytes) previewed inline; bigger files get only a download button."""

TABLE_ROWS = 1000
TEXT_LINES = 2000
TEXT_CHARS = 200_000
# A quick look is a screen-sized picture: drawing more cells than this per axis
# only costs time and memory, so larger rasters are thinned by striding.
QUICKLOOK_CELLS = 1200
# NetCDF's default fill values for float/double (NC_FILL_FLOAT/NC_FILL_DOUBLE);
# files written without an explicit _FillValue still use them for unwritten cells.
NETCDF_DEFAULT_FILL = 9.9e36

_KINDS = {
    ".csv": "table",
    ".tsv": "table",
    ".parquet": "table",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".gif": "image",
    ".svg": "image",
    ".webp": "image",
    ".tif": "geotiff",
    ".tiff": "geotiff",
    ".nc": "netcdf",
    ".txt": "text",
    ".md": "text",
    ".json": "text",
    ".geojson": "text",
    ".yaml": "text",
    ".yml": "text",
    ".log": "text",
}
_TEXT_LANGUAGES = {".json": "json", ".geojson": "json", ".yaml": "yaml", ".yml": "yaml"}
_DOWNLOAD_HINT = "Download it to open it in another program."
GEO_EXTRA_HINT = "install accelerator-prefect[geo] to preview Cloud Optimized GeoTIFFs' overviews"
"""What the catalog's operator can do for COG previews where rasterio is missing."""


class PreviewError(AcceleratorError):
    """A file cannot be previewed; the message says which file and why, in plain words."""


# --- what kind of file ------------------------------------------------------


def _suffix(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def kind_of(name: str) -> str | None:
    """How ``name`` is previewed: 'table', 'image', 'geotiff', 'netcdf', 'text' or None.

    Only the extension counts (case-insensitive); ``.xlsx`` is a table only
    where openpyxl is installed.

    Example:
        >>> kind_of("acc://runs/42/tas.NC")
        'netcdf'
        >>> kind_of("model.bin") is None
        True
    """
    suffix = _suffix(name)
    if suffix == ".xlsx":
        return "table" if importlib.util.find_spec("openpyxl") is not None else None
    return _KINDS.get(suffix)


@contextlib.contextmanager
def _reading(name: str, what: str) -> Iterator[None]:
    """Turn any failure of a file parser into a PreviewError naming the file.

    Parsers of arbitrary bytes (pandas, pyarrow, Pillow, scipy) fail with many
    exception types; the user needs one plain sentence, and the original stays
    chained as the cause for the log.
    """
    try:
        yield
    except PreviewError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise PreviewError(
            f"{name} could not be read as {what} ({reason}). {_DOWNLOAD_HINT}"
        ) from exc


# --- tables -----------------------------------------------------------------


def read_table(name: str, data: bytes, max_rows: int = TABLE_ROWS) -> pd.DataFrame:
    """The first ``max_rows`` rows of a CSV, TSV, Parquet or Excel file.

    Example:
        >>> read_table("t.tsv", b"a\\tb\\n1\\t2\\n3\\t4\\n", max_rows=1).to_dict("records")
        [{'a': 1, 'b': 2}]
    """
    return _read_table(name, data, max_rows)[0]


def _read_table(name: str, data: bytes, max_rows: int) -> tuple[pd.DataFrame, int]:
    """The first ``max_rows`` rows and the file's total row count."""
    if max_rows < 0:
        raise ValueError(f"max_rows: {max_rows} is negative; expected 0 or more")
    suffix = _suffix(name)
    if suffix == ".parquet":
        with _reading(name, "a Parquet table"):
            return _read_parquet(data, max_rows)
    if suffix == ".xlsx":
        with _reading(name, "an Excel workbook"):
            return _read_excel(data, max_rows)
    if suffix in (".csv", ".tsv"):
        with _reading(name, "a CSV table"):
            return _read_csv(data, max_rows, "\t" if suffix == ".tsv" else _sniff_separator(data))
    raise PreviewError(f"{name} is not a table (CSV, TSV, Parquet or Excel). {_DOWNLOAD_HINT}")


def _sniff_separator(data: bytes) -> str:
    # European spreadsheets export CSV with ';', so ',' cannot be assumed.
    sample = data[:65536].decode("utf-8", errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _read_csv(data: bytes, max_rows: int, sep: str) -> tuple[pd.DataFrame, int]:
    import pandas as pd

    options: dict[str, Any] = {"sep": sep, "encoding": "utf-8", "encoding_errors": "replace"}
    head = pd.read_csv(io.BytesIO(data), nrows=max_rows + 1, **options)
    if len(head) <= max_rows:
        return head, len(head)
    # Counting rows by parsing one column keeps quoted line breaks right
    # without building the whole frame.
    total = len(pd.read_csv(io.BytesIO(data), usecols=[0], **options))
    return head.iloc[:max_rows], total


def _read_parquet(data: bytes, max_rows: int) -> tuple[pd.DataFrame, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(pa.BufferReader(data))
    batches, rows = [], 0
    for batch in parquet.iter_batches(batch_size=max(max_rows, 1)):
        if rows >= max_rows:
            break
        batches.append(batch)
        rows += batch.num_rows
    table = pa.Table.from_batches(batches, schema=parquet.schema_arrow).slice(0, max_rows)
    return table.to_pandas(), parquet.metadata.num_rows


def _read_excel(data: bytes, max_rows: int) -> tuple[pd.DataFrame, int]:
    import pandas as pd

    frame = pd.read_excel(io.BytesIO(data), sheet_name=0)
    return frame.iloc[:max_rows], len(frame)


# --- rasters ----------------------------------------------------------------


@dataclass(frozen=True)
class _Raster:
    """A 2-D grid ready to draw: row 0 is the top (north), NaN marks no data."""

    values: np.ndarray[Any, Any]
    title: str
    units: str = ""
    note: str = ""
    extent: tuple[float, float, float, float] | None = None  # left, right, bottom, top
    x_label: str = "column"
    y_label: str = "row"
    geographic: bool = False


def quicklook(name: str, data: bytes) -> bytes:
    """A PNG quick-look map of a GeoTIFF's first band or a NetCDF file's first grid.

    Colour-mapped with viridis, no-data cells grey, with a colorbar, the band or
    variable name, and longitude/latitude (or projected x/y) on the axes where
    the file gives them.

    Raises:
        PreviewError: the file cannot be read, or holds nothing to map.

    Example:
        >>> png = quicklook("tas.nc", nc_bytes)  # doctest: +SKIP
        >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"  # doctest: +SKIP
        True
    """
    return _render(name, _map(name, data).raster)


@dataclass(frozen=True)
class _Map:
    """A raster to draw and what to tell about it: ``caption`` under the map (which
    level of a COG it shows), ``notice`` beside it (how to get a better preview)."""

    raster: _Raster
    caption: str = ""
    notice: str = ""


def _map(name: str, data: bytes) -> _Map:
    kind = kind_of(name)
    if kind == "geotiff":
        return _geotiff_map(name, data)
    if kind == "netcdf":
        return _Map(_read_netcdf_grid(name, data))
    raise PreviewError(f"{name} is not a GeoTIFF or NetCDF file, so it has no quick-look map.")


def _thin(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    step = max(1, math.ceil(max(values.shape) / QUICKLOOK_CELLS))
    return values[::step, ::step]


# GeoTIFF (read with Pillow; rasterio is not a dependency)

_TIEPOINT, _PIXEL_SCALE, _TRANSFORMATION = 33922, 33550, 34264
_GEO_KEYS, _GDAL_METADATA, _GDAL_NODATA = 34735, 42112, 42113
_SAMPLES_PER_PIXEL = 277
_MODEL_TYPE_KEY, _PROJECTED_CRS_KEY = 1024, 3072


def _read_geotiff(name: str, data: bytes) -> _Raster:
    # Tags come from the file as much as pixels do, so reading them can fail too.
    with _reading(name, "a GeoTIFF"):
        from PIL import Image

        with Image.open(io.BytesIO(data), formats=["TIFF"]) as image:
            values = _first_band(image)
            tags: dict[int, Any] = dict(getattr(image, "tag_v2", {}))
        return _geotiff_raster(values, tags)


# Cloud Optimized GeoTIFFs: tiled, with reduced-resolution images (overviews) after the
# full one. GDAL marks the COGs it writes with a "ghost" header near the file's start.

_NEW_SUBFILE_TYPE, _TILE_WIDTH = 254, 322
_REDUCED, _MASK = 1, 4
_COG_GHOST_HEADER = b"LAYOUT=IFDS_BEFORE_DATA"


@dataclass(frozen=True)
class _TiffLayout:
    tiled: bool
    overviews: int  # reduced-resolution images of the data (masks not counted)
    ghost_header: bool

    @property
    def cog_like(self) -> bool:
        """Tiled with internal overviews, or marked as a COG by GDAL."""
        return self.tiled and (self.overviews > 0 or self.ghost_header)


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked with sys.modules[module] = None
        return False


def _tiff_layout(image: Image.Image, data: bytes) -> _TiffLayout:
    """How a TIFF is laid out, from its directories only (no pixel is decoded)."""
    tiled = _TILE_WIDTH in getattr(image, "tag_v2", {})
    overviews = 0
    for frame in range(1, getattr(image, "n_frames", 1)):
        image.seek(frame)
        kind = int(getattr(image, "tag_v2", {}).get(_NEW_SUBFILE_TYPE, 0))
        overviews += bool(kind & _REDUCED and not kind & _MASK)
    image.seek(0)
    return _TiffLayout(tiled, overviews, _COG_GHOST_HEADER in data[:1024])


def _geotiff_map(name: str, data: bytes) -> _Map:
    """A GeoTIFF's map: a COG's smallest overview where rasterio can read it, else the
    full resolution with Pillow (and, for a COG, the extra that would do better)."""
    with _reading(name, "a GeoTIFF"):
        from PIL import Image

        with Image.open(io.BytesIO(data), formats=["TIFF"]) as image:
            layout = _tiff_layout(image, data)
    if layout.cog_like and _installed("rasterio"):
        with _reading(name, "a Cloud Optimized GeoTIFF"):
            return _cog_overview_map(name, data)
    if not layout.cog_like:
        return _Map(_read_geotiff(name, data))
    levels = f"{layout.overviews} overview{'s' * (layout.overviews != 1)}"
    notice = (
        f"{name} looks like a Cloud Optimized GeoTIFF (tiled, {levels}). The catalog cannot "
        f"read its overviews here: {GEO_EXTRA_HINT}."
    )
    try:
        raster = _read_geotiff(name, data)
    except PreviewError as exc:  # e.g. WebP tiles, which Pillow's libtiff may not decode
        raise PreviewError(f"{exc} The catalog reads it with rasterio: {GEO_EXTRA_HINT}.") from exc
    return _Map(raster, notice=notice + " The map shows the full resolution instead.")


def _cog_overview_map(name: str, data: bytes) -> _Map:
    """The smallest overview of a COG, read with rasterio, and what it is."""
    import rasterio
    from rasterio.io import MemoryFile

    with MemoryFile(data) as memory:
        with memory.open() as full:
            factors, width, height = full.overviews(1), full.width, full.height
        if not factors:
            return _Map(_read_geotiff(name, data), caption=_cog_caption(name, memory.name, []))
        with rasterio.open(memory.name, OVERVIEW_LEVEL=len(factors) - 1) as smallest:
            values = smallest.read(1)
            raster = _rasterio_raster(smallest, values, bands=smallest.count)
        caption = _cog_caption(name, memory.name, factors)
    shown = f"its smallest overview, {values.shape[1]} × {values.shape[0]} of {width} × {height}"
    note = f"{raster.note} · {shown}" if raster.note else shown
    return _Map(
        dataclasses.replace(raster, note=note), caption=f"{caption}; the map shows {shown} cells"
    )


def _cog_caption(name: str, path: str, factors: list[int]) -> str:
    """ "name is a Cloud Optimized GeoTIFF with N overviews (1/2, 1/4)", as validated."""
    levels = f"{len(factors)} overview{'s' * (len(factors) != 1)}"
    if factors:
        levels += " (" + ", ".join(f"1/{f}" for f in factors) + ")"
    if not _installed("rio_cogeo"):
        return f"{name} is a tiled GeoTIFF with {levels}"
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _ = cog_validate(path, quiet=True)
    if valid:
        return f"{name} is a Cloud Optimized GeoTIFF with {levels}"
    return (
        f"{name} is a tiled GeoTIFF with {levels}, but not a valid Cloud Optimized GeoTIFF "
        f"({'; '.join(errors)})"
    )


def _rasterio_raster(dataset: Any, values: np.ndarray[Any, Any], bands: int) -> _Raster:
    """Band 1 of a rasterio dataset as a raster to draw, placed by its bounds and CRS."""
    grid = _mask_nodata(_thin(values), None if dataset.nodata is None else str(dataset.nodata))
    grid = grid * (dataset.scales[0] or 1.0) + (dataset.offsets[0] or 0.0)
    left, bottom, right, top = dataset.bounds
    grid, extent = _north_up(grid, (left, right, bottom, top))
    crs = dataset.crs
    if crs is not None and crs.is_geographic:
        x_label, y_label, geographic = "longitude (°E)", "latitude (°N)", True
    else:
        epsg = crs.to_epsg() if crs is not None else None
        suffix = f" (EPSG:{epsg})" if epsg else ""
        x_label, y_label, geographic = f"x{suffix}", f"y{suffix}", False
    of_bands = f"band 1 of {bands}" if bands > 1 else "band 1"
    description = dataset.descriptions[0]
    return _Raster(
        values=grid,
        title=description or of_bands,
        units=dataset.units[0] or "",
        note=of_bands if description and bands > 1 else "",
        extent=extent if crs is not None else None,
        x_label=x_label if crs is not None else "column",
        y_label=y_label if crs is not None else "row",
        geographic=geographic,
    )


def _geotiff_raster(values: np.ndarray[Any, Any], tags: dict[int, Any]) -> _Raster:
    height, width = values.shape
    extent = _geotiff_extent(tags, width=width, height=height)
    # Thin before converting to float64 so a large raster is never copied whole.
    values = _mask_nodata(_thin(values), tags.get(_GDAL_NODATA))
    band = _gdal_band_metadata(tags.get(_GDAL_METADATA))
    # A scale of 0 is as meaningless as none, so both leave the values as stored.
    values = values * (_number(band.get("scale")) or 1.0) + (_number(band.get("offset")) or 0.0)
    if extent is not None:
        values, extent = _north_up(values, extent)
    x_label, y_label, geographic = _geotiff_axis_labels(tags)
    bands = int(tags.get(_SAMPLES_PER_PIXEL, 1))
    of_bands = f"band 1 of {bands}" if bands > 1 else "band 1"
    description = band.get("description")
    return _Raster(
        values=values,
        title=description or of_bands,
        units=band.get("unittype", ""),
        note=of_bands if description and bands > 1 else "",
        extent=extent,
        x_label=x_label if extent else "column",
        y_label=y_label if extent else "row",
        geographic=geographic and extent is not None,
    )


def _first_band(image: Image.Image) -> np.ndarray[Any, Any]:
    import numpy as np

    image.seek(0)
    values = np.asarray(image)
    if values.ndim == 3:
        values = values[..., 0]
    if values.ndim != 2 or values.size == 0:
        raise PreviewError(f"the first band has shape {values.shape}, not a 2-D grid")
    return values


def _number(text: object) -> float | None:
    """A number written as text in a tag (TIFF ASCII tags may end in NUL), if it is one."""
    cleaned = str(text or "").strip().strip("\x00")
    try:
        return float(cleaned) if cleaned else None
    except ValueError:
        return None


def _mask_nodata(values: np.ndarray[Any, Any], nodata: object) -> np.ndarray[Any, Any]:
    """Float64 copy of ``values`` with the GDAL nodata value (an ASCII tag) as NaN."""
    import numpy as np

    fill = _number(nodata)
    # Compare in the stored precision: GDAL prints float32 nodata with fewer
    # digits than float64 needs, so the float64 value would not match.
    is_nodata = (
        values == values.dtype.type(fill) if fill is not None and values.dtype.kind == "f" else None
    )
    grid = values.astype(np.float64)
    if fill is not None and is_nodata is None:
        is_nodata = grid == fill
    if is_nodata is not None:
        grid[is_nodata] = np.nan
    return grid


def _gdal_band_metadata(xml: object) -> dict[str, str]:
    """Band 1's description, unit, scale and offset from GDAL's metadata tag, by role."""
    if not isinstance(xml, str) or not xml.strip():
        return {}
    try:
        root = ET.fromstring(xml.strip().strip("\x00"))
    except ET.ParseError:
        return {}  # the tag is optional decoration; a broken one should not block the map
    return {
        str(item.get("role")): (item.text or "").strip()
        for item in root.iter("Item")
        if item.get("sample") == "0" and item.get("role")
    }


def _geo_keys(tags: dict[int, Any]) -> dict[int, int]:
    """The GeoKeyDirectory's short values by key id (those stored inline)."""
    directory = [int(v) for v in tags.get(_GEO_KEYS, ())]
    if len(directory) < 4:
        return {}
    keys: dict[int, int] = {}
    for start in range(4, 4 + 4 * directory[3], 4):
        entry = directory[start : start + 4]
        if len(entry) == 4 and entry[1] == 0:
            keys[entry[0]] = entry[3]
    return keys


def _geotiff_axis_labels(tags: dict[int, Any]) -> tuple[str, str, bool]:
    keys = _geo_keys(tags)
    if keys.get(_MODEL_TYPE_KEY) == 2 or (not keys and _looks_geographic(tags)):
        return "longitude (°E)", "latitude (°N)", True
    crs = keys.get(_PROJECTED_CRS_KEY)
    suffix = f" (EPSG:{crs})" if crs and crs != 32767 else ""
    return f"x{suffix}", f"y{suffix}", False


def _looks_geographic(tags: dict[int, Any]) -> bool:
    # Without geokeys, a tie point within ±180/±90 with sub-degree pixels is
    # almost certainly longitude/latitude.
    tie, scale = tags.get(_TIEPOINT), tags.get(_PIXEL_SCALE)
    if not tie or not scale or len(tie) < 6:
        return False
    return abs(float(tie[3])) <= 360 and abs(float(tie[4])) <= 90 and float(scale[0]) < 10


def _geotiff_extent(
    tags: dict[int, Any], width: int, height: int
) -> tuple[float, float, float, float] | None:
    """(left, right, bottom, top) of the grid from its tie point and pixel size, or transform."""
    tie, scale, matrix = tags.get(_TIEPOINT), tags.get(_PIXEL_SCALE), tags.get(_TRANSFORMATION)
    if tie and scale and len(tie) >= 6 and len(scale) >= 2:
        i, j, x, y = (float(v) for v in (tie[0], tie[1], tie[3], tie[4]))
        sx, sy = float(scale[0]), float(scale[1])
        left, top = x - i * sx, y + j * sy
        return left, left + width * sx, top - height * sy, top
    if matrix and len(matrix) >= 8 and float(matrix[1]) == 0 and float(matrix[4]) == 0:
        # Only the unrotated affine fits a lon/lat box; rotated grids fall back to pixels.
        sx, x0, sy, y0 = float(matrix[0]), float(matrix[3]), float(matrix[5]), float(matrix[7])
        return x0, x0 + width * sx, y0 + height * sy, y0
    return None


def _north_up(
    values: np.ndarray[Any, Any], extent: tuple[float, float, float, float]
) -> tuple[np.ndarray[Any, Any], tuple[float, float, float, float]]:
    left, right, bottom, top = extent
    if left > right:
        values, left, right = values[:, ::-1], right, left
    if bottom > top:
        values, bottom, top = values[::-1, :], top, bottom
    return values, (left, right, bottom, top)


# NetCDF (classic format, read with scipy)

# CF's spellings of latitude and longitude units.
_NORTH = {"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"}
_EAST = {"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"}
_Y_NAMES = {"lat", "latitude", "y", "rlat", "nav_lat", "lats", "yc", "south_north"}
_X_NAMES = {"lon", "longitude", "x", "rlon", "nav_lon", "lons", "xc", "west_east"}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip("\x00").strip()
    return "" if value is None else str(value).strip()


@contextlib.contextmanager
def _open_netcdf(name: str, data: bytes) -> Iterator[Any]:
    if data[:4] == b"\x89HDF":
        raise PreviewError(
            f"{name} is a NetCDF-4 (HDF5) file; previews read only classic NetCDF. "
            f"{_DOWNLOAD_HINT} (e.g. xarray, Panoply or QGIS)"
        )
    with _reading(name, "a NetCDF file"):
        from scipy.io import netcdf_file

        dataset = netcdf_file(io.BytesIO(data), mode="r", mmap=False, maskandscale=True)
    try:
        with _reading(name, "a NetCDF file"):
            yield dataset
    finally:
        dataset.close()


def describe_netcdf(data: bytes, *, name: str = "The NetCDF file") -> pd.DataFrame:
    """One row per variable: name, dimensions, shape, units, long_name.

    Example:
        >>> describe_netcdf(nc_bytes)[["name", "units"]].to_dict("records")  # doctest: +SKIP
        [{'name': 'lat', 'units': 'degrees_north'}, ..., {'name': 'tas', 'units': 'K'}]
    """
    import pandas as pd

    with _open_netcdf(name, data) as dataset:
        rows = [
            {
                "name": var_name,
                "dimensions": ", ".join(variable.dimensions),
                "shape": " × ".join(str(n) for n in variable.shape) or "scalar",
                "units": _text(variable._attributes.get("units")),
                "long_name": _text(variable._attributes.get("long_name")),
            }
            for var_name, variable in dataset.variables.items()
        ]
    return pd.DataFrame(rows, columns=["name", "dimensions", "shape", "units", "long_name"])


def _axis_of(dataset: Any, dim: str) -> str:
    """'X', 'Y' or '' for a dimension, from its coordinate variable's CF attributes."""
    coord = dataset.variables.get(dim)
    attrs = coord._attributes if coord is not None else {}
    units = _text(attrs.get("units")).lower()
    hints = {_text(attrs.get("axis")).upper(), _text(attrs.get("standard_name")).lower()}
    if units in _NORTH or hints & {"Y", "latitude"}:
        return "Y"
    if units in _EAST or hints & {"X", "longitude"}:
        return "X"
    lowered = dim.lower()
    return "Y" if lowered in _Y_NAMES else "X" if lowered in _X_NAMES else ""


def _mappable(dataset: Any) -> list[tuple[str, Any]]:
    """Numeric data variables of 2 or more dimensions, those on lat/lon first."""
    found = [
        (var_name, variable)
        for var_name, variable in dataset.variables.items()
        if var_name not in dataset.dimensions
        and len(variable.shape) >= 2
        and variable.data.dtype.kind in "iufb"
        and all(n > 0 for n in variable.shape)
        and min(variable.shape[-2:]) > 1
    ]

    def on_lat_lon(item: tuple[str, Any]) -> bool:
        axes = {_axis_of(dataset, dim) for dim in item[1].dimensions[-2:]}
        return axes == {"X", "Y"}

    return sorted(found, key=lambda item: not on_lat_lon(item))


def _read_netcdf_grid(name: str, data: bytes) -> _Raster:
    import numpy as np

    with _open_netcdf(name, data) as dataset:
        candidates = _mappable(dataset)
        if not candidates:
            raise PreviewError(
                f"{name} has no variable with two or more dimensions to draw as a map; "
                "its variables are listed below."
            )
        var_name, variable = candidates[0]
        dims = variable.dimensions
        grid = np.ma.filled(
            np.ma.asarray(variable[(0,) * (len(dims) - 2)], dtype=np.float64), np.nan
        )
        y_dim, x_dim = dims[-2], dims[-1]
        if _axis_of(dataset, y_dim) == "X" and _axis_of(dataset, x_dim) == "Y":
            grid, y_dim, x_dim = grid.T, x_dim, y_dim
        x, x_label, x_known = _coordinate(dataset, x_dim, grid.shape[1])
        y, y_label, y_known = _coordinate(dataset, y_dim, grid.shape[0])
        attrs = variable._attributes
        title = var_name + (f" — {_text(attrs['long_name'])}" if attrs.get("long_name") else "")
        note = ", ".join(
            f"{dim} 1 of {size}"
            for dim, size in zip(dims[:-2], variable.shape[:-2], strict=True)
            if size > 1
        )
        units = _text(attrs.get("units"))
        on_lat_lon = (_axis_of(dataset, x_dim), _axis_of(dataset, y_dim)) == ("X", "Y")
    grid[np.abs(grid) >= NETCDF_DEFAULT_FILL] = np.nan
    grid, extent = _sorted_grid(grid, x, y)
    return _Raster(
        values=_thin(grid),
        title=title,
        units=units,
        note=note,
        extent=extent,
        x_label=x_label,
        y_label=y_label,
        geographic=on_lat_lon and x_known and y_known,
    )


def _coordinate(dataset: Any, dim: str, size: int) -> tuple[np.ndarray[Any, Any], str, bool]:
    """A dimension's coordinate values, axis label and whether the file gave them.

    Without a usable 1-D coordinate variable the cell indices stand in.
    """
    import numpy as np

    indices = np.arange(size, dtype=np.float64), f"{dim} (index)", False
    coord = dataset.variables.get(dim)
    if coord is None or coord.shape != (size,) or coord.data.dtype.kind not in "iuf":
        return indices
    values = np.ma.filled(np.ma.asarray(coord[:], dtype=np.float64), np.nan)
    if not np.all(np.isfinite(values)):
        return indices
    units = _text(coord._attributes.get("units"))
    return values, f"{dim} ({units})" if units else dim, True


def _sorted_grid(
    grid: np.ndarray[Any, Any], x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], tuple[float, float, float, float]]:
    """The grid with x increasing left to right and y increasing upwards, and its extent.

    Sorting also puts longitudes stored 180…359, 0…179 back in order.
    """
    import numpy as np

    x_order, y_order = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    x, y = x[x_order], y[y_order]
    grid = grid[np.ix_(y_order, x_order)][::-1, :]
    dx = (x[-1] - x[0]) / (len(x) - 1) if len(x) > 1 and x[-1] != x[0] else 1.0
    dy = (y[-1] - y[0]) / (len(y) - 1) if len(y) > 1 and y[-1] != y[0] else 1.0
    extent = (
        float(x[0] - dx / 2),
        float(x[-1] + dx / 2),
        float(y[0] - dy / 2),
        float(y[-1] + dy / 2),
    )
    return grid, extent


# Drawing


def _colour_limits(values: np.ndarray[Any, Any]) -> tuple[float, float, str]:
    """Colour range and which colorbar ends are cut off.

    A 2–98 % stretch keeps a few extreme cells from washing out the map; a
    grid of a few distinct values (classes) keeps its full range.
    """
    import numpy as np

    finite = values[np.isfinite(values)]
    low, high = float(finite.min()), float(finite.max())
    if len(np.unique(finite[:100_000])) <= 32:
        return low, high, "neither"
    vmin, vmax = (float(v) for v in np.percentile(finite, [2, 98]))
    if vmin == vmax:
        return low, high, "neither"
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}
    return vmin, vmax, extend.get((low < vmin, high > vmax), "both")


def _render(name: str, raster: _Raster) -> bytes:
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    values = raster.values
    finite = np.isfinite(values)
    if not finite.any():
        raise PreviewError(
            f"{name}: every cell of {raster.title} is no data, so there is nothing to draw."
        )
    vmin, vmax, extend = _colour_limits(values)
    rows, cols = values.shape
    left, right, bottom, top = raster.extent or (-0.5, cols - 0.5, rows - 0.5, -0.5)
    aspect, shape = _aspect(raster, width=abs(right - left), height=abs(top - bottom))
    figure = Figure(figsize=(7, 0.8 + 6 * shape), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(
        values,
        cmap=colormaps["viridis"].with_extremes(bad="#d9d9d9"),
        vmin=vmin,
        vmax=vmax,
        extent=(left, right, bottom, top),
        origin="upper",
        interpolation="nearest",
        aspect=aspect,
    )
    # A colorbar in axes coordinates matches the map's height whatever its aspect;
    # the tight bounding box at saving takes in the colorbar and titles.
    colorbar_axes = axes.inset_axes((1.025, 0.0, 0.035, 1.0))
    figure.colorbar(image, cax=colorbar_axes, label=raster.units or None, extend=extend)
    axes.set_title(raster.title, fontsize=12, loc="left", pad=20)
    axes.text(0, 1.015, _subtitle(raster, values, finite), transform=axes.transAxes, fontsize=9)
    axes.set_xlabel(raster.x_label)
    axes.set_ylabel(raster.y_label)
    # Projected metres (5,200,000) would get a "1e6" offset that collides with
    # the subtitle and hides the real coordinates.
    axes.ticklabel_format(style="plain", useOffset=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.15)
    return buffer.getvalue()


def _aspect(raster: _Raster, width: float, height: float) -> tuple[float, float]:
    """Matplotlib's aspect (y unit / x unit on screen) and the map's height / width."""
    aspect = 1.0
    if raster.geographic and raster.extent is not None:
        # A degree of longitude shrinks with cos(latitude); stretching by
        # 1/cos keeps shapes roughly as on a map.
        middle = (raster.extent[2] + raster.extent[3]) / 2
        aspect = 1 / max(math.cos(math.radians(min(abs(middle), 80))), 0.2)
    width, height = max(width, 1e-12), max(height, 1e-12)
    # Very elongated grids would become a thin strip at true scale.
    shape = min(max(height * aspect / width, 0.25), 1.5)
    return shape * width / height, shape


def _subtitle(raster: _Raster, values: np.ndarray[Any, Any], finite: np.ndarray[Any, Any]) -> str:
    units = f" {raster.units}" if raster.units else ""
    parts = [raster.note] if raster.note else []
    parts.append(
        f"min {float(values[finite].min()):.4g}, max {float(values[finite].max()):.4g}{units}"
    )
    if not finite.all():
        parts.append("grey: no data")
    return " · ".join(parts)


# --- images and text ----------------------------------------------------------

_BROWSER_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}


def _displayable_image(name: str, data: bytes) -> tuple[bytes | str, str]:
    """The image as Streamlit can show it, with the output format to ask for.

    Streamlit re-encodes non-PNG images as JPEG, which fails for 16-bit and
    float images, so those are stretched to 8-bit PNG here.
    """
    if _suffix(name) == ".svg":
        text = data.decode("utf-8", errors="replace")
        if "<svg" not in text:
            raise PreviewError(
                f"{name} could not be read as an SVG image (no <svg> element). {_DOWNLOAD_HINT}"
            )
        return text, "auto"
    with _reading(name, "an image"):
        from PIL import Image

        image = Image.open(io.BytesIO(data))
        image.load()
        if image.mode in _BROWSER_MODES and image.format in ("PNG", "JPEG", "GIF"):
            return data, "PNG" if image.format == "PNG" else "auto"
        buffer = io.BytesIO()
        _to_browser_mode(image).save(buffer, format="PNG")
        return buffer.getvalue(), "PNG"


def _to_browser_mode(image: Image.Image) -> Image.Image:
    import numpy as np
    from PIL import Image

    if image.mode in _BROWSER_MODES:
        return image
    if image.mode.startswith(("I", "F")):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scaled = (values - low) / (high - low or 1.0) * 255
        return Image.fromarray(np.nan_to_num(scaled).astype(np.uint8))
    return image.convert("RGBA" if "A" in image.mode else "RGB")


@dataclass(frozen=True)
class _Text:
    """Text to show and a note on how it was changed (cut, not valid JSON)."""

    body: str
    note: str = ""


def _text_preview(name: str, data: bytes) -> _Text:
    """The text to show, pretty-printed JSON, cut to a screenful with a note."""
    if b"\x00" in data[:8192]:
        raise PreviewError(f"{name} looks like a binary file, not text. {_DOWNLOAD_HINT}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # every byte decodes; better odd accents than nothing
    note = ""
    if _TEXT_LANGUAGES.get(_suffix(name)) == "json":
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except json.JSONDecodeError as exc:
            note = f"This is not valid JSON ({exc.msg} at line {exc.lineno}); shown as it is."
    return _cut(text, from_end=_suffix(name) == ".log", note=note)


def _cut(text: str, *, from_end: bool, note: str) -> _Text:
    """At most TEXT_LINES lines and TEXT_CHARS characters, saying so when cut.

    Logs keep their end: that is where a failed run says why.
    """
    lines = text.splitlines()
    kept = "\n".join(lines[-TEXT_LINES:] if from_end else lines[:TEXT_LINES])
    body = kept[-TEXT_CHARS:] if from_end else kept[:TEXT_CHARS]
    shown = len(body.splitlines())
    if shown == len(lines) and body == kept:
        return _Text(body, note)
    where = "last" if from_end else "first"
    cut = f"Showing the {where} {shown:,} of {len(lines):,} lines; download the file for the rest."
    return _Text(body, f"{note} {cut}".strip())


# --- drawing with Streamlit ---------------------------------------------------


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def headed(frame: pd.DataFrame, columns: Mapping[str, Any]) -> pd.DataFrame:
    """``frame`` with its columns headed as the model declares them: "Title (unit)".

    ``columns`` maps a column's name to what the manifest says of it (an object with
    ``title`` and ``unit``, see :class:`~accelerator_prefect.manifest.OutputColumn`).

    Example:
        >>> import pandas as pd
        >>> from accelerator_prefect.manifest import OutputColumn
        >>> headed(pd.DataFrame({"tas": [1.5]}), {"tas": OutputColumn(title="Mean", unit="°C")})
           Mean (°C)
        0        1.5
    """
    names = {}
    for column in frame.columns:
        spec = columns.get(str(column))
        if spec is None:
            continue
        title = spec.title or str(column)
        names[column] = f"{title} ({spec.unit})" if spec.unit else title
    return frame.rename(columns=names)


def show(name: str, data: bytes, ui: Any = None, columns: Mapping[str, Any] | None = None) -> None:
    """Draw a preview of an output file with ``ui`` (by default the ``streamlit`` module).

    ``ui`` may also be a Streamlit container or column. A file that cannot be
    previewed gets a plain-language note saying to download it, never a traceback.

    ``columns``: the titles and units the model declares for a table's columns.

    Example:
        >>> import streamlit as st  # doctest: +SKIP
        >>> show("summary.csv", data, ui=st.container())  # doctest: +SKIP
    """
    if ui is None:
        ui = importlib.import_module("streamlit")
    kind = kind_of(name)
    if kind is None:
        files = f"{_suffix(name)} files" if _suffix(name) else name
        ui.info(f"There is no preview for {plain(files)}. {_DOWNLOAD_HINT}")
        return
    if len(data) > PREVIEW_LIMIT:
        ui.info(
            f"{plain(name)} is {_size(len(data))}, too large to preview here "
            f"(the limit is {_size(PREVIEW_LIMIT)}). {_DOWNLOAD_HINT}"
        )
        return
    draws: dict[str, Callable[[str, bytes, Any], None]] = {
        "table": partial(_show_table, columns=columns or {}),
        "image": _show_image,
        "text": _show_text,
    }
    draw = draws.get(kind, _show_raster)
    try:
        draw(name, data, ui)
    except PreviewError as exc:  # it may quote the file: its name, its own labels
        ui.warning(safe_markdown(str(exc)))
    except Exception:
        # A bug here must not cost the user the run page: log it with its
        # traceback for us, and give them the way around it.
        log.exception("previewing %s failed", name)
        ui.warning(f"The preview of {plain(name)} failed. {_DOWNLOAD_HINT}")


def _show_table(name: str, data: bytes, ui: Any, columns: Mapping[str, Any]) -> None:
    frame, total = _read_table(name, data, TABLE_ROWS)
    summary = f"{total:,} rows × {len(frame.columns):,} columns"
    if total > len(frame):
        summary += f"; showing the first {len(frame):,} rows"
    ui.caption(summary)
    config = importlib.import_module("streamlit").column_config
    described = {
        title: config.Column(help=safe_markdown(spec.description))
        for column, title in zip(frame.columns, headed(frame, columns).columns, strict=True)
        if (spec := columns.get(str(column))) is not None and spec.description
    }
    ui.dataframe(headed(frame, columns), column_config=described or None)


def _show_image(name: str, data: bytes, ui: Any) -> None:
    image, output_format = _displayable_image(name, data)
    ui.image(image, caption=plain(name), output_format=output_format)


def _show_raster(name: str, data: bytes, ui: Any) -> None:
    variables = describe_netcdf(data, name=name) if kind_of(name) == "netcdf" else None
    try:
        drawn = _map(name, data)
        if drawn.notice:
            ui.info(safe_markdown(drawn.notice))
        about = drawn.caption or f"Quick look at {name}"
        caption = safe_markdown(f"{about}; download it for the full data.")
        ui.image(_render(name, drawn.raster), caption=caption)
    except PreviewError as exc:
        if variables is None:
            raise
        ui.info(safe_markdown(str(exc)))
    if variables is not None:
        ui.caption("Variables")
        ui.dataframe(variables, hide_index=True)


def _show_text(name: str, data: bytes, ui: Any) -> None:
    text = _text_preview(name, data)
    if text.note:
        ui.caption(safe_markdown(text.note))
    if _suffix(name) == ".md":
        ui.markdown(safe_markdown(text.body))
        return
    ui.code(text.body, language=_TEXT_LANGUAGES.get(_suffix(name)))
