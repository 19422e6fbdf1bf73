"""Write every generic tiled TIFF and Ventana BIF fixture variant into a folder, to inspect.

    python scripts/make_format_fixtures.py OUT_DIR

The files come from tests.format_fixtures: crops of the bundled CMU-1-Small-Region pixels,
written by tifffile, with the real ScanScope v1 profile on level 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The fixture builders live in tests/: they ship with the repository, not with the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Any

from tests.format_fixtures import write_generic_tiff, write_ventana_bif

GENERIC: dict[str, dict[str, Any]] = {
    "generic-jpeg-ycbcr.tif": {"compression": "jpeg"},
    "generic-jpeg-rgb.tif": {"compression": "jpeg", "photometric": "rgb"},
    "generic-lzw.tif": {"compression": "lzw"},
    "generic-lzw-predictor-bigtiff.tif": {"compression": "lzw", "predictor": True, "bigtiff": True},
    "generic-none.tif": {"compression": "none"},
    "generic-jp2k-33005.tif": {"compression": "jp2k-33005"},
    "generic-jp2k-33003.tif": {"compression": "jp2k-33003"},
    "generic-jpeg-stripped-thumbnail.tif": {"compression": "jpeg", "stripped_thumbnail": True},
    "generic-jpeg-no-profile.tif": {"compression": "jpeg", "profile": None},
}
BIF: dict[str, dict[str, Any]] = {
    "ventana-dp200.bif": {},
    "ventana-dp200-overlap.bif": {"overlap": (24, 16)},
    "ventana-iscan.bif": {"model": "iscan"},
    "ventana-no-jpegtables.bif": {"jpeg_tables": False},
    "ventana-tiff-no-aoi.tif": {"encode_info": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_generic_tiff(out / name, **kw) for name, kw in GENERIC.items()]
    paths += [write_ventana_bif(out / name, **kw) for name, kw in BIF.items()]
    for path in paths:
        print(f"{path}  {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
