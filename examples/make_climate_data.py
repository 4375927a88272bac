"""Regenerate the sample inputs of the climate-downscaling example.

    python examples/make_climate_data.py

writes ``observations.nc`` and ``model_<scenario>.nc`` into
``examples/data/climate/coarse-cmip6/``; ``acc up`` copies them into
``acc://climate/examples/coarse-cmip6/``, where users select them.
"""

from __future__ import annotations

from pathlib import Path

from flows.climate_downscaling import sample_inputs, write_netcdf

TARGET = Path(__file__).resolve().parent / "data" / "climate" / "coarse-cmip6"


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, (variables, grid, attrs) in sample_inputs().items():
        with (TARGET / name).open("wb") as f:
            write_netcdf(f, variables, grid, **attrs)
        print(f"wrote {TARGET / name} ({(TARGET / name).stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
