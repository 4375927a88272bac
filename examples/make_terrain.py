"""Make the reference terrain grid of the climate-downscaling example.

    python examples/make_terrain.py

writes ``flows/reference/terrain.nc``, the DVC-tracked file whose hash
``flows/reference/terrain.nc.dvc`` records. The grid is computed from fixed
formulas and rounded to whole metres, so it comes out byte for byte the same
on every machine; ``acc up`` makes it when it is missing and pushes it to the
default DVC remote, where hosted runs fetch it.
"""

from __future__ import annotations

import os

from flows.climate_downscaling import TERRAIN_FILE, write_terrain


def main() -> None:
    TERRAIN_FILE.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed into place: a failure leaves no file that looks made.
    scratch = TERRAIN_FILE.with_name(f".{TERRAIN_FILE.name}.{os.getpid()}.part")
    try:
        with scratch.open("wb") as f:
            write_terrain(f)
        scratch.replace(TERRAIN_FILE)
    finally:
        scratch.unlink(missing_ok=True)
    print(f"wrote {TERRAIN_FILE} ({TERRAIN_FILE.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
