"""Convert GeoTIFFs to Cloud Optimized GeoTIFFs (COGs), and check that they are.

A COG is a GeoTIFF laid out for reading over the network: tiled, with
internal overviews (the same raster at halved resolutions), its directories
(IFDs) at the start of the file and each level's tiles after them, so a
viewer reads a map's corner or a zoomed-out quick look with a few range
requests instead of the whole file. Three routines:

1. ``describe``: copy each selected GeoTIFF to a scratch folder and read its
   header (size, bands, data type, CRS, no-data, layout), and refuse the
   whole run, before converting anything, if a file cannot take the settings:
   WebP needs 8-bit images of 3 or 4 bands, a no-data value must fit the data
   type, and every overview must keep at least one pixel.
2. ``convert``: write each file as a COG with rio-cogeo's
   ``cog_translate`` (a profile from ``cog_profiles``, the chosen block size,
   a predictor for DEFLATE, LZW and ZSTD) and check the result with
   rio-cogeo's own validator, ``cog_validate``; a file that is not a valid COG
   fails the run, with the validator's errors.
3. ``write_outputs``: write the COGs under their own names (their paths
   below the selected folder) and ``cogs.csv``, one row per file: its size
   before and after, the overview levels and block size, the compression,
   all read back from the COG, and the validation result.

rasterio and rio-cogeo (``flows/environments/geotiff-to-cog.txt``) are
imported inside the routines: importing this module costs nothing.

GDAL writes no time stamps into a GeoTIFF unless asked, and compresses on one
thread by default, so the same input and settings give the same bytes; a
rerun's outputs hash identically. The sample inputs under
``examples/data/geo/geotiffs/`` come from ``examples/make_geotiffs.py``.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from accelerator_prefect import Conf, Inputs, Output, jobflow, routine

if TYPE_CHECKING:
    from accelerator_prefect.mapping import InputFile

# The automatic overview count halves the raster until its shorter side is at most this
# many pixels: a quick look's size, whatever the block size.
QUICK_LOOK_PIXELS = 256
# A DEFLATE, LZW or ZSTD tile compresses better after a predictor: differences between
# neighbouring integers (2), or between the bytes of neighbouring floats (3).
PREDICTORS = {"int": 2, "uint": 2, "float": 3}
# rasterio's own deprecation notes (affine's `*`), not about the user's files.
QUIET = ("Use `@` matmul",)


class Compression(StrEnum):
    deflate = "deflate"
    lzw = "lzw"
    zstd = "zstd"
    webp = "webp"


class Resampling(StrEnum):
    nearest = "nearest"
    average = "average"
    bilinear = "bilinear"
    cubic = "cubic"
    cubic_spline = "cubic_spline"
    lanczos = "lanczos"
    mode = "mode"
    gauss = "gauss"
    rms = "rms"


class CogConf(Conf):
    """How the Cloud Optimized GeoTIFFs are compressed, tiled and given overviews."""

    compression: Compression = Field(
        default=Compression.deflate,
        description="How each tile is compressed. DEFLATE, LZW and ZSTD are lossless; WebP "
        "is lossy (quality 75) and takes only 8-bit images of 3 or 4 bands (RGB, RGBA).",
        json_schema_extra={
            "x-section": "Layout",
            "x-enum-titles": {
                "deflate": "DEFLATE (lossless, read everywhere)",
                "lzw": "LZW (lossless, older readers)",
                "zstd": "ZSTD (lossless, faster; needs GDAL 2.3 or later to read)",
                "webp": "WebP (lossy, small; 8-bit RGB or RGBA images only)",
            },
        },
    )
    blocksize: Literal[256, 512] = Field(
        default=512,
        title="Block size",
        description="Width and height of each tile: the least a reader fetches at once.",
        json_schema_extra={"x-section": "Layout", "x-unit": "pixels"},
    )
    overview_levels: int | None = Field(
        default=None,
        ge=0,
        le=12,
        title="Overview levels",
        description="How many overviews, each half the resolution of the one before (1/2, "
        "1/4, 1/8 …); 0 makes none. Empty: as many as it takes for the smallest overview's "
        f"shorter side to be {QUICK_LOOK_PIXELS} pixels or less.",
        json_schema_extra={"x-section": "Overviews"},
    )
    overview_resampling: Resampling = Field(
        default=Resampling.average,
        description="How an overview's pixel is made from the pixels it covers: average or a "
        "smooth kernel for continuous data (elevation, imagery), nearest or mode for classes.",
        json_schema_extra={
            "x-section": "Overviews",
            "x-enum-titles": {
                "nearest": "Nearest (keeps values; for classes)",
                "average": "Average (continuous data)",
                "bilinear": "Bilinear",
                "cubic": "Cubic",
                "cubic_spline": "Cubic spline",
                "lanczos": "Lanczos",
                "mode": "Mode (most frequent value; for classes)",
                "gauss": "Gaussian",
                "rms": "Root mean square",
            },
        },
    )
    nodata: float | None = Field(
        default=None,
        title="No-data value",
        description="The value marking cells without data in the COGs, replacing the one each "
        "file declares (it must fit the file's data type). Empty keeps each file's own.",
        json_schema_extra={"x-section": "Overviews", "x-advanced": True},
    )


@dataclass
class Source:
    """One selected GeoTIFF, copied to the scratch folder, as its header describes it."""

    name: str  # its path below the selected folder: the COG's name too
    path: Path
    size: int
    width: int
    height: int
    bands: int
    dtype: str
    crs: str
    nodata: float | None
    tiled: bool
    overviews: int

    @property
    def layout(self) -> str:
        tiles = "tiled" if self.tiled else "striped"
        return f"{self.width} × {self.height}, {self.bands} × {self.dtype}, {tiles}"


@dataclass
class Converted:
    """A COG written to the scratch folder, as read back from it and validated."""

    source: Source
    path: Path
    size: int
    overview_factors: list[int]
    block: tuple[int, int]
    compression: str
    predictor: int | None
    nodata: float | None
    valid: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def overview_count(conf: CogConf, width: int, height: int) -> int:
    """The overview levels to build: as set, else halving down to a quick look's size."""
    if conf.overview_levels is not None:
        return conf.overview_levels
    levels = 0
    while min(width, height) >> levels > QUICK_LOOK_PIXELS:
        levels += 1
    return levels


def most_levels(width: int, height: int) -> int:
    """The most halvings that leave the smaller side at least one pixel."""
    return max(min(width, height).bit_length() - 1, 0)


def problems_of(conf: CogConf, source: Source) -> list[str]:
    """Why ``source`` cannot be converted with ``conf``, in words naming the file."""
    from rasterio.dtypes import in_dtype_range

    found = []
    if source.crs == "none":
        found.append(
            f"{source.name} has no coordinate reference system: it is a plain TIFF, not a "
            "GeoTIFF; give it one (e.g. gdal_edit.py -a_srs EPSG:4326) and select it again"
        )
    if conf.compression == Compression.webp and (
        source.dtype != "uint8" or source.bands not in (3, 4)
    ):
        found.append(
            f"{source.name} cannot be compressed with webp: WebP takes 8-bit images of 3 or 4 "
            f"bands (RGB or RGBA), and this file has {source.bands} band(s) of {source.dtype}; "
            "choose deflate, lzw or zstd for it"
        )
    if conf.nodata is not None and not in_dtype_range(conf.nodata, source.dtype):
        found.append(
            f"conf.nodata: {conf.nodata:g} does not fit {source.name}'s {source.dtype} values; "
            "choose a value its data type can hold, or leave it empty to keep the file's own"
        )
    levels, most = (
        overview_count(conf, source.width, source.height),
        most_levels(source.width, source.height),
    )
    if levels > most:
        found.append(
            f"conf.overview_levels: {levels} levels would shrink {source.name} "
            f"({source.width} × {source.height} pixels) below one pixel; at most {most} fit"
        )
    return found


def read_source(file: InputFile, scratch: Path) -> Source:
    """Copy ``file`` into ``scratch`` (rasterio reads local files) and read its header."""
    import rasterio
    from rasterio.errors import RasterioIOError

    path = scratch / "in" / file.relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with file.open("rb") as stream, path.open("wb") as local:
        shutil.copyfileobj(stream, local, length=8 * 1024 * 1024)
    try:
        with rasterio.open(path) as src:
            crs = src.crs or src.gcps[1]
            return Source(
                name=file.relative,
                path=path,
                size=path.stat().st_size,
                width=src.width,
                height=src.height,
                bands=src.count,
                dtype=src.dtypes[0],
                crs=crs.to_string() if crs else "none",
                nodata=src.nodata,
                tiled=src.block_shapes[0][1] != src.width,
                overviews=len(src.overviews(1)),
            )
    except RasterioIOError as exc:
        raise ValueError(
            f"inputs: {file.relative} is not a GeoTIFF rasterio can read ({exc})"
        ) from None


@routine(retries=1, retry_delay_seconds=1)
def describe(conf: CogConf, files: list[InputFile], scratch: Path) -> list[Source]:
    """Copy the selected GeoTIFFs and read their headers; refuse files the settings do not
    fit, all of them at once, before anything is converted."""
    if not files:
        raise ValueError("inputs: no .tif or .tiff file among the selected files")
    names = [f.relative for f in files]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"inputs: more than one selected file is called {', '.join(repeated)}; the COGs keep "
            "their names, so select files with different names (or one folder)"
        )
    sources = [read_source(f, scratch) for f in sorted(files, key=lambda f: f.relative)]
    for s in sources:
        print(f"describe: {s.name}: {s.layout}, {s.crs}, {s.overviews} overview(s), {s.size} bytes")
    found = [problem for s in sources for problem in problems_of(conf, s)]
    if found:
        raise ValueError("; ".join(found))
    return sources


def cog_profile(conf: CogConf, source: Source) -> dict[str, Any]:
    """rio-cogeo's profile for the compression, with the block size and a predictor."""
    from rio_cogeo.profiles import cog_profiles

    with warnings.catch_warnings():
        # "Non-standard compression schema" for zstd and webp: the description says so.
        warnings.simplefilter("ignore", UserWarning)
        chosen = cog_profiles.get(conf.compression.value)  # type: ignore[no-untyped-call]
    profile: dict[str, Any] = dict(chosen)
    profile.update(blockxsize=conf.blocksize, blockysize=conf.blocksize)
    kind = source.dtype.rstrip("0123456789")
    if conf.compression != Compression.webp and kind in PREDICTORS:
        profile["predictor"] = PREDICTORS[kind]
    return profile


def translate(conf: CogConf, source: Source, target: Path) -> list[str]:
    """Write ``source`` as a COG at ``target``; return what GDAL and rio-cogeo warned."""
    from rio_cogeo.cogeo import cog_translate

    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cog_translate(
            str(source.path),
            str(target),
            cog_profile(conf, source),
            nodata=conf.nodata,
            overview_level=overview_count(conf, source.width, source.height),
            overview_resampling=conf.overview_resampling.value,
            quiet=True,
        )
    return [str(w.message) for w in caught if not str(w.message).startswith(QUIET)]


def read_back(source: Source, target: Path) -> Converted:
    """What the COG at ``target`` holds, and what rio-cogeo's validator says of it."""
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    valid, errors, notes = cog_validate(str(target), quiet=True)
    with rasterio.open(target) as cog:
        structure = cog.tags(ns="IMAGE_STRUCTURE")
        height, width = cog.block_shapes[0]
        predictor = structure.get("PREDICTOR")
        return Converted(
            source=source,
            path=target,
            size=target.stat().st_size,
            overview_factors=list(cog.overviews(1)),
            block=(width, height),
            compression=(cog.compression.value if cog.compression else "none").lower(),
            predictor=int(predictor) if predictor else None,
            nodata=cog.nodata,
            valid=bool(valid),
            errors=list(errors),
            warnings=list(notes),
        )


@routine
def convert(conf: CogConf, sources: list[Source], scratch: Path) -> list[Converted]:
    """Write each GeoTIFF as a COG and validate it; fail naming each file that is not one."""
    converted = []
    for source in sources:
        target = scratch / "out" / source.name
        for note in translate(conf, source, target):
            print(f"convert: {source.name}: {note}")
        cog = read_back(source, target)
        print(
            f"convert: {source.name}: {source.size} -> {cog.size} bytes, "
            f"{len(cog.overview_factors)} overview(s), {cog.block[0]} × {cog.block[1]} tiles, "
            f"{cog.compression}; " + ("a valid COG" if cog.valid else "NOT a valid COG")
        )
        converted.append(cog)
    invalid = [c for c in converted if not c.valid]
    if invalid:
        raise ValueError(
            "; ".join(
                f"{c.source.name} is not a valid Cloud Optimized GeoTIFF after conversion "
                f"(rio-cogeo's validator: {' '.join(c.errors) or 'no reason given'})"
                for c in invalid
            )
        )
    return converted


CSV_COLUMNS = [
    "file",
    "size_before_bytes",
    "size_after_bytes",
    "size_ratio",
    "width",
    "height",
    "bands",
    "dtype",
    "crs",
    "overview_levels",
    "overview_factors",
    "block_size",
    "compression",
    "predictor",
    "nodata",
    "overview_resampling",
    "valid",
    "warnings",
]


def csv_row(conf: CogConf, cog: Converted) -> dict[str, Any]:
    source = cog.source
    return {
        "file": source.name,
        "size_before_bytes": source.size,
        "size_after_bytes": cog.size,
        "size_ratio": round(cog.size / source.size, 3) if source.size else "",
        "width": source.width,
        "height": source.height,
        "bands": source.bands,
        "dtype": source.dtype,
        "crs": source.crs,
        "overview_levels": len(cog.overview_factors),
        "overview_factors": " ".join(str(f) for f in cog.overview_factors),
        "block_size": f"{cog.block[0]}x{cog.block[1]}",
        "compression": cog.compression,
        "predictor": cog.predictor or "",
        "nodata": "" if cog.nodata is None else f"{cog.nodata:g}",
        "overview_resampling": conf.overview_resampling.value,
        "valid": str(cog.valid).lower(),
        "warnings": "; ".join(cog.warnings),
    }


@routine
def write_outputs(conf: CogConf, converted: list[Converted], output: Output) -> dict[str, Any]:
    """Write the COGs under their own names, and ``cogs.csv``."""
    for cog in converted:
        with cog.path.open("rb") as local, output.open(cog.source.name, "wb") as target:
            shutil.copyfileobj(local, target, length=8 * 1024 * 1024)
    rows = [csv_row(conf, cog) for cog in converted]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with output.open("cogs.csv", "wb") as f:
        f.write(table.getvalue().encode("utf-8"))
    files = sorted([c.source.name for c in converted] + ["cogs.csv"])
    print(f"write_outputs: wrote {', '.join(files)} to {output.uri}")
    return {
        "output": output.uri,
        "files": files,
        "cogs": {
            c.source.name: {"overview_levels": len(c.overview_factors), "valid": c.valid}
            for c in converted
        },
        "bytes_before": sum(c.source.size for c in converted),
        "bytes_after": sum(c.size for c in converted),
    }


@jobflow(name="geotiff-to-cog")
def geotiff_to_cog(conf: CogConf, inputs: Inputs, output: Output) -> dict[str, Any]:
    """Convert the selected GeoTIFFs to validated Cloud Optimized GeoTIFFs."""
    with tempfile.TemporaryDirectory(prefix="geotiff-to-cog-") as folder:
        scratch = Path(folder)
        sources = describe(conf, inputs.files(), scratch)
        converted = convert(conf, sources, scratch)
        return write_outputs(conf, converted, output)  # type: ignore[no-any-return]
