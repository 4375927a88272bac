"""Regenerate the sample inputs of the geotiff-to-cog example.

    python examples/make_geotiffs.py

needs rasterio (the model's own library, not the platform's), e.g. in a
scratch virtual environment with ``pip install rasterio numpy``. It writes two
ordinary GeoTIFFs, striped, DEFLATE-compressed and without overviews (as many
tools write them, and not cloud optimized), into
``examples/data/geo/geotiffs/``; ``acc up`` copies them into
``acc://geo/examples/geotiffs/``, where users select them:

- ``dem_utm32n.tif``: a 768 × 768 elevation grid in metres (float32), 20 m
  cells in UTM zone 32N (EPSG:32632), a lake marked as no data (-9999);
- ``orthophoto_wgs84.tif``: a 1024 × 768 RGB image (uint8, 3 bands) in
  longitude/latitude (EPSG:4326) of fields, forest, a river and roads.

Both come from fixed seeds, so rerunning the script gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

TARGET = Path(__file__).resolve().parent / "data" / "geo" / "geotiffs"
NODATA = -9999.0


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Random field with features about ``scale`` cells wide, values roughly in -1..1."""
    rows, cols = shape
    fy, fx = np.fft.fftfreq(rows)[:, None], np.fft.fftfreq(cols)[None, :]
    spectrum = np.exp(-((fx**2 + fy**2) * (scale**2)))
    phases = np.fft.fft2(rng.standard_normal(shape))
    field = np.real(np.fft.ifft2(phases * spectrum))
    normalized: np.ndarray = field / np.abs(field).max()
    return normalized


def dem(size: int = 768) -> np.ndarray:
    """A valley between two ridges, rough slopes, and a lake (no data) on the valley floor."""
    rng = np.random.default_rng(32632)
    y, x = np.mgrid[0:size, 0:size] / size  # 0..1, row 0 at the north
    valley = 1800 + 900 * np.abs(x - 0.45 - 0.1 * np.sin(4 * y)) ** 0.8 * 2
    peaks = 700 * np.exp(-(((x - 0.8) / 0.08) ** 2 + ((y - 0.25) / 0.1) ** 2))
    peaks += 500 * np.exp(-(((x - 0.15) / 0.1) ** 2 + ((y - 0.7) / 0.12) ** 2))
    rough = 120 * smooth_noise(rng, (size, size), 40) + 25 * smooth_noise(rng, (size, size), 8)
    elevation = np.round(valley + peaks + rough).astype(np.float32)
    lake = ((x - 0.46) / 0.05) ** 2 + ((y - 0.55) / 0.09) ** 2 < 1
    elevation[lake] = NODATA
    return elevation  # type: ignore[no-any-return]


def orthophoto(width: int = 1024, height: int = 768) -> np.ndarray:
    """Fields in patches of colour, a forest, a winding river and two straight roads."""
    rng = np.random.default_rng(4326)
    y, x = np.mgrid[0:height, 0:width]
    palette = np.array(
        [[196, 180, 84], [142, 168, 74], [110, 150, 60], [170, 140, 90], [210, 200, 120]],
        dtype=np.float64,
    )
    # Fields: a grid of 64 × 48 pixel plots, each one crop colour.
    plots = rng.integers(0, len(palette), size=(height // 48 + 1, width // 64 + 1))
    image = palette[plots[y // 48, x // 64]]
    image += 12 * smooth_noise(rng, (height, width), 6)[..., None]
    forest = smooth_noise(rng, (height, width), 60) > 0.35
    image[forest] = [40, 80, 40] + 15 * smooth_noise(rng, (height, width), 3)[forest][:, None]
    river = np.abs(y - (height * 0.6 + 60 * np.sin(x / 90.0))) < 6
    image[river] = [60, 100, 160]
    roads = (np.abs(x - 300) < 2) | (np.abs(y - x * 0.3 - 100) < 2)
    image[roads] = [90, 90, 90]
    bands: np.ndarray = np.clip(np.round(image), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return bands


def write(name: str, bands: np.ndarray, **profile: Any) -> None:
    """A striped, DEFLATE-compressed GeoTIFF without overviews."""
    count, height, width = bands.shape
    path = TARGET / name
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=bands.dtype,
        compress="deflate",
        **profile,
    ) as dst:
        dst.write(bands)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    write(
        "dem_utm32n.tif",
        dem()[None],
        crs="EPSG:32632",
        transform=from_origin(598_000, 5_166_000, 20.0, 20.0),
        nodata=NODATA,
        predictor=3,
    )
    write(
        "orthophoto_wgs84.tif",
        orthophoto(),
        crs="EPSG:4326",
        transform=from_origin(10.20, 46.66, 0.0001, 0.0001),
        photometric="rgb",
        predictor=2,
    )


if __name__ == "__main__":
    main()
