"""Write realistic synthetic Aperio slides (AT2, GT450, BigTIFF, LZW, JPEG 2000) from real pixels.

    python scripts/make_synthetic_slides.py OUT_DIR [--size 4000] [--styles at2 gt450 ...]

Each slide is built by tests.synthetic from the bundled CMU-1-Small-Region pixels, with the real
ScanScope v1 profile embedded where that scanner would put it. Handy for trying svsicc on layouts
no public slide has.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The fixture builder lives in tests/: it ships with the repository, not with the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from pathlib import Path

from tests.synthetic import DATA_DIR, load_real_pixels, mosaic, preset, write_slide

STYLES = ("at2", "gt450", "lzw", "jp2k-33003", "jp2k-33005")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=4000, help="level-0 width and height")
    parser.add_argument("--styles", nargs="+", choices=STYLES, default=list(STYLES))
    parser.add_argument("--bigtiff", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    profile = (DATA_DIR / "ScanScope_v1_from_CMU-Embed.icc").read_bytes()
    pixels = mosaic(load_real_pixels(), args.size, args.size, seed=args.seed)
    for style in args.styles:
        spec = preset(style, profile=profile, bigtiff=args.bigtiff)
        path = write_slide(args.out_dir / f"{style}-{args.size}.svs", pixels, spec)
        print(f"{path}  {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
