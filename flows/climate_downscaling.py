"""Statistical downscaling of coarse climate projections to a fine regional grid.

Three routines, as a regional climate service would run them:

1. ``preprocess``: read the coarse (1°) model fields for the reference period and
   the scenario, crop them to the region and bias-correct them against the
   observed reference climatology (the delta method: additive for temperature,
   multiplicative for precipitation).
2. ``regional_model``: interpolate the corrected fields to the fine grid and
   correct temperature for elevation with a lapse rate on the terrain grid
   (and precipitation with an orographic factor).
3. ``postprocess``: write the fine grid as NetCDF (CF conventions), a CSV
   summary per sub-region and a PNG quick-look map.

The fine terrain comes from a reference elevation grid (``reference/terrain.nc``
beside this file, 0.05°, whole metres), tracked with DVC: each published
version pins its exact content, and a hosted run receives it at that version's
commit. ``examples/make_terrain.py`` makes it.

The user selects the coarse inputs: ``observations.nc`` (the observed
reference climatology on the coarse grid) and one ``model_<scenario>.nc`` per
scenario (a global model's historical and future monthly climate). The
bundled sample inputs under ``examples/data/climate/coarse-cmip6/`` come from
:func:`coarse_fields`, a small deterministic generator, so the model runs
anywhere without a download; the arithmetic on them is the real method.
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from accelerator_prefect import Conf, InputFile, Inputs, Output, jobflow, routine

LAPSE_RATE_K_PER_M = -0.0065
OROGRAPHIC_PER_M = 0.0004
COARSE_STEP_DEG = 1.0
FUTURE_YEAR = 2085
REFERENCE_YEAR = 1995  # the centre of the reference period of the coarse inputs


class Scenario(StrEnum):
    ssp126 = "ssp126"
    ssp245 = "ssp245"
    ssp370 = "ssp370"
    ssp585 = "ssp585"


class Region(StrEnum):
    alps = "alps"
    pyrenees = "pyrenees"
    carpathians = "carpathians"
    scandes = "scandes"


# (south, north, west, east) in degrees, and the peaks that shape the terrain:
# (lat, lon, height m, width deg).
REGIONS: dict[Region, tuple[tuple[float, float, float, float], list[tuple[float, ...]]]] = {
    Region.alps: (
        (43.5, 48.5, 5.0, 16.5),
        [
            (45.9, 6.9, 3600, 0.6),
            (46.5, 8.5, 3200, 0.8),
            (46.9, 11.0, 3000, 0.9),
            (47.2, 13.2, 2600, 0.8),
        ],
    ),
    Region.pyrenees: (
        (41.5, 43.8, -2.5, 3.5),
        [(42.6, 0.6, 2800, 0.7), (42.7, -0.9, 2300, 0.6), (42.5, 1.9, 2500, 0.5)],
    ),
    Region.carpathians: (
        (44.5, 49.5, 18.0, 27.0),
        [(49.1, 20.1, 2200, 0.5), (47.6, 24.7, 1900, 0.8), (45.5, 24.6, 2300, 0.6)],
    ),
    Region.scandes: (
        (59.0, 70.0, 5.0, 20.0),
        [(61.6, 8.3, 2200, 1.2), (64.0, 13.0, 1500, 1.5), (68.3, 18.0, 1800, 1.0)],
    ),
}

# Global-mean warming (K) and precipitation change (fraction) by 2085 vs 1995.
SCENARIOS: dict[Scenario, tuple[float, float]] = {
    Scenario.ssp126: (1.5, 0.02),
    Scenario.ssp245: (2.6, 0.04),
    Scenario.ssp370: (3.6, 0.05),
    Scenario.ssp585: (4.6, 0.07),
}


class DownscalingConf(Conf):
    """What to downscale, where, and how finely."""

    scenario: Scenario = Field(
        description="Emission scenario (SSP) of the projection: pick the one your model file "
        "was run for.",
        json_schema_extra={
            "x-section": "What to downscale",
            "x-enum-titles": {
                "ssp126": "SSP1-2.6 (sustainability, low emissions)",
                "ssp245": "SSP2-4.5 (middle of the road)",
                "ssp370": "SSP3-7.0 (regional rivalry, high emissions)",
                "ssp585": "SSP5-8.5 (fossil-fuelled development, very high emissions)",
            },
        },
    )
    target_region: Region = Field(
        # A harmless default (every region runs on the same inputs), unlike the scenario,
        # which must be the one the selected model run was made for: that stays a choice.
        default=Region.alps,
        description="Mountain region to downscale.",
        json_schema_extra={
            "x-section": "What to downscale",
            "x-enum-titles": {
                "alps": "Alps",
                "pyrenees": "Pyrenees",
                "carpathians": "Carpathians",
                "scandes": "Scandinavian Mountains",
            },
        },
    )
    base_year: int = Field(
        default=1995,
        ge=1950,
        le=2100,
        title="Base year",
        description="Centre of the 30-year reference period the change is measured against.",
        json_schema_extra={"x-section": "Period and grid"},
    )
    resolution_km: float = Field(
        default=5.0,
        ge=1.0,
        le=50.0,
        title="Resolution",
        description="Cell size of the fine grid.",
        # Rarely changed: 5 km suits the regions' terrain; folded under "Advanced settings".
        json_schema_extra={"x-unit": "km", "x-section": "Period and grid", "x-advanced": True},
    )


@dataclass
class Grid:
    lat: np.ndarray
    lon: np.ndarray


@dataclass
class CoarseFields:
    grid: Grid
    elevation: np.ndarray  # (lat, lon) m
    tas: np.ndarray  # (month, lat, lon) °C, bias-corrected future climate
    tas_change: np.ndarray  # (month, lat, lon) K vs the reference period
    pr: np.ndarray  # (month, lat, lon) mm/day
    pr_change: np.ndarray  # (month, lat, lon) fraction


@dataclass
class FineFields:
    grid: Grid
    elevation: np.ndarray
    tas: np.ndarray
    tas_change: np.ndarray
    pr: np.ndarray
    pr_change: np.ndarray


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def terrain(grid: Grid) -> np.ndarray:
    """Elevation (m) on ``grid``: Gaussian massifs plus seeded relief."""
    lat, lon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    z = np.full(lat.shape, 300.0)
    for _, peaks in REGIONS.values():
        for plat, plon, height, width in peaks:
            z += height * np.exp(
                -(((lat - plat) / width) ** 2 + ((lon - plon) / (1.6 * width)) ** 2)
            )
    rng = np.random.default_rng(_seed("terrain"))
    waves = rng.uniform(0.5, 3.0, size=(4, 2))
    for ky, kx in waves:
        z += 120.0 * np.sin(ky * 2 * np.pi * lat) * np.cos(kx * 2 * np.pi * lon)
    return np.clip(z, 0.0, None)


def _climatology(grid: Grid, elevation: np.ndarray, year: float) -> tuple[np.ndarray, np.ndarray]:
    """Observed-like monthly temperature (°C) and precipitation (mm/day)."""
    month = np.arange(12)[:, None, None]
    lat = grid.lat[None, :, None]
    seasonal = -np.cos(2 * np.pi * (month + 0.5) / 12) * (4 + 0.18 * np.abs(lat))
    tas = 27.0 - 0.45 * np.abs(lat) + seasonal + LAPSE_RATE_K_PER_M * elevation[None]
    tas = tas + 0.018 * (year - 1995)
    pr = 1.6 + 0.0009 * elevation[None] + 0.5 * np.cos(2 * np.pi * (month - 10.5) / 12)
    return tas, np.clip(pr, 0.05, None)


# The coarse model's domain: the region is cropped out of it in `preprocess`.
DOMAIN = (34.0, 72.0, -12.0, 32.0)

# The reference terrain grid (DVC-tracked) and its cell size in degrees.
TERRAIN_FILE = Path(__file__).resolve().parent / "reference" / "terrain.nc"
TERRAIN_STEP_DEG = 0.05


def terrain_grid() -> tuple[Grid, np.ndarray]:
    """The reference terrain over the domain, in whole metres (what TERRAIN_FILE holds)."""
    south, north, west, east = DOMAIN
    count_lat = round((north - south) / TERRAIN_STEP_DEG) + 1
    count_lon = round((east - west) / TERRAIN_STEP_DEG) + 1
    grid = Grid(
        lat=south + TERRAIN_STEP_DEG * np.arange(count_lat),
        lon=west + TERRAIN_STEP_DEG * np.arange(count_lon),
    )
    return grid, np.rint(terrain(grid)).astype(np.int16)


def write_terrain(target: Any) -> None:
    """The reference terrain grid as NetCDF (CF conventions) on the open binary ``target``."""
    grid, elevation = terrain_grid()
    nc = grid_file(target, grid, title="Reference terrain (sample digital elevation model)")
    var = nc.createVariable("elevation", "i2", ("lat", "lon"))
    var[:] = elevation
    var.units = "m"
    nc.flush()
    nc.close()


def read_terrain(path: Path = TERRAIN_FILE) -> tuple[Grid, np.ndarray]:
    """The reference terrain grid: its coordinates and elevation (m)."""
    from scipy.io import netcdf_file

    if not path.is_file():
        raise FileNotFoundError(
            f"{path.name}: the reference terrain grid is missing; it is tracked with DVC, "
            "so fetch it with `dvc pull` (or make it with examples/make_terrain.py)"
        )
    nc = netcdf_file(path, "r", mmap=False)
    try:
        grid = Grid(np.array(nc.variables["lat"][:]), np.array(nc.variables["lon"][:]))
        elevation = np.array(nc.variables["elevation"][:], dtype=float)
    finally:
        nc.close()
    return grid, elevation


def coarse_fields(scenario: Scenario) -> tuple[Grid, np.ndarray, dict[str, np.ndarray]]:
    """Sample coarse inputs on the whole domain: observations and a biased model run,
    historical (around REFERENCE_YEAR) and future (around FUTURE_YEAR)."""
    south, north, west, east = DOMAIN
    grid = Grid(
        lat=np.arange(south, north + 1e-9, COARSE_STEP_DEG),
        lon=np.arange(west, east + 1e-9, COARSE_STEP_DEG),
    )
    elevation = _block_mean_elevation(grid)
    obs_tas, obs_pr = _climatology(grid, elevation, REFERENCE_YEAR)
    rng = np.random.default_rng(_seed("model", scenario.value, REFERENCE_YEAR))
    shape = obs_tas.shape
    warm, wet = SCENARIOS[scenario]
    mountain = 1.0 + 0.3 * elevation[None] / max(float(elevation.max()), 1.0)
    model_bias = 1.3 + 0.4 * rng.standard_normal(shape[1:])[None]
    model_hist_tas = obs_tas + model_bias + 0.3 * rng.standard_normal(shape)
    model_future_tas = model_hist_tas + warm * mountain + 0.2 * rng.standard_normal(shape)
    model_hist_pr = obs_pr * (1.15 + 0.05 * rng.standard_normal(shape))
    seasonal = 1 - 0.5 * np.cos(2 * np.pi * np.arange(12)[:, None, None] / 12)
    model_future_pr = model_hist_pr * (1 + wet * seasonal)
    return (
        grid,
        elevation,
        {
            "obs_tas": obs_tas,
            "obs_pr": obs_pr,
            "model_hist_tas": model_hist_tas,
            "model_future_tas": model_future_tas,
            "model_hist_pr": np.clip(model_hist_pr, 0.01, None),
            "model_future_pr": np.clip(model_future_pr, 0.01, None),
        },
    )


def crop(
    grid: Grid,
    fields: dict[str, np.ndarray],
    elevation: np.ndarray,
    region: Region,
    margin: float = 1.0,
) -> tuple[Grid, np.ndarray, dict[str, np.ndarray]]:
    """The part of the domain covering ``region`` plus ``margin`` degrees for interpolation."""
    (south, north, west, east), _ = REGIONS[region]
    rows = (grid.lat >= south - margin) & (grid.lat <= north + margin)
    cols = (grid.lon >= west - margin) & (grid.lon <= east + margin)
    cropped = {name: values[:, rows][:, :, cols] for name, values in fields.items()}
    return Grid(grid.lat[rows], grid.lon[cols]), elevation[rows][:, cols], cropped


def _block_mean_elevation(coarse: Grid) -> np.ndarray:
    """Coarse-cell elevation as the mean of the terrain inside each cell."""
    sub = 8
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    fine = Grid(
        lat=(coarse.lat[:, None] + offsets * COARSE_STEP_DEG).ravel(),
        lon=(coarse.lon[:, None] + offsets * COARSE_STEP_DEG).ravel(),
    )
    z = terrain(fine)
    return z.reshape(len(coarse.lat), sub, len(coarse.lon), sub).mean(axis=(1, 3))


def grid_file(target: Any, grid: Grid, months: bool = False, **attrs: Any) -> Any:
    """A NetCDF file (CF conventions) open for writing on ``target``: its attributes, its
    dimensions (``month`` first if asked) and the ``lat``/``lon`` coordinates."""
    from scipy.io import netcdf_file

    nc = netcdf_file(target, "w", version=2)
    for key, value in attrs.items():
        setattr(nc, key, value)
    nc.Conventions = "CF-1.8"
    if months:
        nc.createDimension("month", 12)
    nc.createDimension("lat", len(grid.lat))
    nc.createDimension("lon", len(grid.lon))
    for name, data, units in [
        ("lat", grid.lat, "degrees_north"),
        ("lon", grid.lon, "degrees_east"),
    ]:
        var = nc.createVariable(name, "f8", (name,))
        var[:] = data
        var.units = units
    return nc


def write_netcdf(target: Any, variables: dict[str, np.ndarray], grid: Grid, **attrs: Any) -> None:
    """Coarse fields as a NetCDF file (CF conventions) on the open binary ``target``."""

    nc = grid_file(target, grid, months=True, **attrs)
    for name, data in variables.items():
        dims = ("month", "lat", "lon") if data.ndim == 3 else ("lat", "lon")
        var = nc.createVariable(name, "f4", dims)
        var[:] = data
        var.units = "m" if name == "elevation" else ("degC" if "tas" in name else "mm day-1")
    nc.flush()
    nc.close()


def sample_inputs() -> dict[str, tuple[dict[str, np.ndarray], Grid, dict[str, Any]]]:
    """The bundled sample inputs: file name -> (variables, grid, attributes)."""
    files: dict[str, tuple[dict[str, np.ndarray], Grid, dict[str, Any]]] = {}
    for scenario in Scenario:
        grid, elevation, fields = coarse_fields(scenario)
        if "observations.nc" not in files:
            files["observations.nc"] = (
                {"obs_tas": fields["obs_tas"], "obs_pr": fields["obs_pr"], "elevation": elevation},
                grid,
                {
                    "title": "Observed reference climatology (sample)",
                    "reference_year": REFERENCE_YEAR,
                },
            )
        files[f"model_{scenario.value}.nc"] = (
            {
                name.removeprefix("model_"): values
                for name, values in fields.items()
                if name.startswith("model_")
            },
            grid,
            {
                "title": f"Global model run, {scenario.value} (sample)",
                "scenario": scenario.value,
                "reference_year": REFERENCE_YEAR,
                "future_year": FUTURE_YEAR,
            },
        )
    return files


def _attribute(nc: Any, name: str) -> str | None:
    value = getattr(nc, name, None)
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def read_inputs(
    files: list[InputFile], scenario: Scenario
) -> tuple[Grid, np.ndarray, dict[str, np.ndarray]]:
    """The observations and the scenario's model run among the selected files."""
    from scipy.io import netcdf_file

    observations: dict[str, np.ndarray] | None = None
    runs: dict[str, dict[str, np.ndarray]] = {}
    grid = None
    for f in files:
        with f.open("rb") as stream:
            nc = netcdf_file(stream, "r", mmap=False)
            variables = {name: np.array(v[:]) for name, v in nc.variables.items()}
            found = _attribute(nc, "scenario")
            nc.close()
        here = Grid(variables.pop("lat"), variables.pop("lon"))
        if grid is not None and (
            here.lat.shape != grid.lat.shape or here.lon.shape != grid.lon.shape
        ):
            raise ValueError(f"inputs: {f.uri} is on another grid than the other files")
        grid = here
        if "obs_tas" in variables:
            observations = variables
        elif found:
            runs[found] = variables
    if observations is None:
        raise ValueError("inputs: no observations file (with obs_tas) among the selected files")
    if scenario.value not in runs:
        have = ", ".join(sorted(runs)) or "none"
        raise ValueError(
            f"inputs: no model run for scenario {scenario.value} among the selected files "
            f"(found: {have}); select model_{scenario.value}.nc too"
        )
    assert grid is not None
    model = runs[scenario.value]
    elevation = observations.pop("elevation")
    return grid, elevation, {**observations, **{f"model_{k}": v for k, v in model.items()}}


@routine(retries=1, retry_delay_seconds=1)
def preprocess(conf: DownscalingConf, files: list[InputFile]) -> CoarseFields:
    """Read the coarse fields, crop to the region, bias-correct against observations."""
    domain, domain_elevation, fields = read_inputs(files, conf.scenario)
    grid, elevation, f = crop(domain, fields, domain_elevation, conf.target_region)
    # The inputs describe REFERENCE_YEAR -> FUTURE_YEAR; a later base year sees less of
    # the change, and an observed reference warmer by the observed trend.
    horizon = max(0.0, (FUTURE_YEAR - conf.base_year) / (FUTURE_YEAR - REFERENCE_YEAR))
    obs_tas = f["obs_tas"] + 0.018 * (conf.base_year - REFERENCE_YEAR)
    tas_change = horizon * (f["model_future_tas"] - f["model_hist_tas"])
    pr_change = horizon * (f["model_future_pr"] / f["model_hist_pr"] - 1.0)
    tas = obs_tas + tas_change
    pr = f["obs_pr"] * (1.0 + pr_change)
    bias = float(np.mean(f["model_hist_tas"] - f["obs_tas"]))
    print(
        f"preprocess: read {len(files)} file(s); {conf.target_region.value} "
        f"{conf.scenario.value}, cropped {len(grid.lat)}x{len(grid.lon)} of the "
        f"{len(domain.lat)}x{len(domain.lon)} coarse grid, removed a mean model bias of "
        f"{bias:+.2f} K"
    )
    return CoarseFields(grid, elevation, tas, tas_change, pr, pr_change)


def _interpolate(coarse: Grid, values: np.ndarray, fine: Grid) -> np.ndarray:
    from scipy.interpolate import RegularGridInterpolator

    lat, lon = np.meshgrid(fine.lat, fine.lon, indexing="ij")
    points = np.stack([lat.ravel(), lon.ravel()], axis=-1)
    stack = values if values.ndim == 3 else values[None]
    out = np.stack(
        [
            RegularGridInterpolator((coarse.lat, coarse.lon), layer, method="linear")(points)
            for layer in stack
        ]
    ).reshape(len(stack), len(fine.lat), len(fine.lon))
    return out if values.ndim == 3 else out[0]


@routine
def regional_model(conf: DownscalingConf, coarse: CoarseFields) -> FineFields:
    """Interpolate to the fine grid and correct for elevation on the terrain grid."""
    (south, north, west, east), _ = REGIONS[conf.target_region]
    dlat = conf.resolution_km / 111.0
    dlon = conf.resolution_km / (111.0 * np.cos(np.radians((south + north) / 2)))
    fine = Grid(lat=np.arange(south, north, dlat), lon=np.arange(west, east, dlon))
    reference, elevation = read_terrain()
    z_fine = np.clip(_interpolate(reference, elevation, fine), 0.0, None)
    z_smooth = _interpolate(coarse.grid, coarse.elevation, fine)
    dz = (z_fine - z_smooth)[None]
    tas = _interpolate(coarse.grid, coarse.tas, fine) + LAPSE_RATE_K_PER_M * dz
    pr = _interpolate(coarse.grid, coarse.pr, fine) * np.clip(1 + OROGRAPHIC_PER_M * dz, 0.3, 3.0)
    print(f"regional_model: fine grid {len(fine.lat)}x{len(fine.lon)} at {conf.resolution_km} km")
    return FineFields(
        fine,
        z_fine,
        tas,
        _interpolate(coarse.grid, coarse.tas_change, fine),
        pr,
        _interpolate(coarse.grid, coarse.pr_change, fine),
    )


def sub_regions(fields: FineFields) -> dict[str, np.ndarray]:
    """West, central and east thirds of the region, split into lowland and highland."""
    lon = np.broadcast_to(fields.grid.lon[None, :], fields.elevation.shape)
    edges = np.quantile(fields.grid.lon, [1 / 3, 2 / 3])
    bands = {
        "west": lon < edges[0],
        "central": (lon >= edges[0]) & (lon < edges[1]),
        "east": lon >= edges[1],
    }
    high = fields.elevation >= 1500.0
    masks = {}
    for band, mask in bands.items():
        masks[f"{band} lowland"] = mask & ~high
        masks[f"{band} highland"] = mask & high
    return {name: mask for name, mask in masks.items() if mask.any()}


def summary_rows(fields: FineFields) -> list[dict[str, Any]]:
    tas_year = fields.tas.mean(axis=0)
    change_year = fields.tas_change.mean(axis=0)
    pr_year = fields.pr.mean(axis=0)
    pr_change_year = fields.pr_change.mean(axis=0)
    return [
        {
            "sub_region": name,
            "cells": int(mask.sum()),
            "mean_elevation_m": round(float(fields.elevation[mask].mean()), 1),
            "tas_annual_mean_c": round(float(tas_year[mask].mean()), 2),
            "tas_change_k": round(float(change_year[mask].mean()), 2),
            "pr_annual_mean_mm_day": round(float(pr_year[mask].mean()), 3),
            "pr_change_pct": round(100 * float(pr_change_year[mask].mean()), 1),
        }
        for name, mask in sub_regions(fields).items()
    ]


def netcdf_bytes(conf: DownscalingConf, fields: FineFields) -> bytes:
    from scipy.io import netcdf_file

    buffer = io.BytesIO()
    nc = netcdf_file(buffer, "w", version=2)
    nc.title = f"Downscaled {conf.scenario.value} climate for {conf.target_region.value}"
    nc.Conventions = "CF-1.8"
    nc.reference_period = f"{conf.base_year - 15}-{conf.base_year + 14}"
    nc.projection_period = f"{FUTURE_YEAR - 14}-{FUTURE_YEAR + 15}"
    nc.createDimension("month", 12)
    nc.createDimension("lat", len(fields.grid.lat))
    nc.createDimension("lon", len(fields.grid.lon))
    for name, data, units, dims in [
        ("month", np.arange(1, 13), "1", ("month",)),
        ("lat", fields.grid.lat, "degrees_north", ("lat",)),
        ("lon", fields.grid.lon, "degrees_east", ("lon",)),
        ("elevation", fields.elevation, "m", ("lat", "lon")),
        ("tas", fields.tas, "degC", ("month", "lat", "lon")),
        ("tas_change", fields.tas_change, "K", ("month", "lat", "lon")),
        ("pr", fields.pr, "mm day-1", ("month", "lat", "lon")),
    ]:
        var = nc.createVariable(name, "f4" if name not in {"month"} else "i4", dims)
        var[:] = data
        var.units = units
    nc.flush()
    data = buffer.getvalue()
    nc.close()
    return data


def quicklook_png(conf: DownscalingConf, fields: FineFields) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extent = (fields.grid.lon[0], fields.grid.lon[-1], fields.grid.lat[0], fields.grid.lat[-1])
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, data, title, cmap in [
        (axes[0], fields.tas.mean(axis=0), "Annual mean temperature (°C)", "RdYlBu_r"),
        (axes[1], fields.tas_change.mean(axis=0), "Warming vs reference (K)", "Reds"),
    ]:
        image = ax.imshow(data, origin="lower", extent=extent, cmap=cmap, aspect="auto")
        ax.contour(
            fields.grid.lon,
            fields.grid.lat,
            fields.elevation,
            levels=[1500, 2500],
            colors="k",
            linewidths=0.4,
        )
        ax.set_title(title)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        figure.colorbar(image, ax=ax, shrink=0.85)
    figure.suptitle(
        f"{conf.target_region.value.title()} · {conf.scenario.value} · {FUTURE_YEAR - 14}–"
        f"{FUTURE_YEAR + 15} vs {conf.base_year - 15}–{conf.base_year + 14}"
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


@routine
def postprocess(conf: DownscalingConf, fields: FineFields, output: Output) -> dict[str, Any]:
    """Write the NetCDF grid, the CSV summary per sub-region and the PNG quick-look."""
    rows = summary_rows(fields)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    files = {
        "downscaled.nc": netcdf_bytes(conf, fields),
        "summary.csv": text.getvalue().encode(),
        "quicklook.png": quicklook_png(conf, fields),
    }
    for name, data in files.items():
        with output.open(name, "wb") as f:
            f.write(data)
    print(f"postprocess: wrote {', '.join(files)} to {output.uri}")
    return {
        "output": output.uri,
        "files": sorted(files),
        "grid": [len(fields.grid.lat), len(fields.grid.lon)],
        "tas_change_k": round(float(fields.tas_change.mean()), 2),
        "sub_regions": rows,
    }


@jobflow(name="climate-downscaling")
def climate_downscaling(conf: DownscalingConf, inputs: Inputs, output: Output) -> dict[str, Any]:
    """Downscale a coarse climate projection to a fine regional grid."""
    coarse = preprocess(conf, inputs.files())
    fine = regional_model(conf, coarse)
    return postprocess(conf, fine, output)  # type: ignore[no-any-return]
