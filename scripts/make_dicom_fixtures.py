"""Regenerate the DICOM WSI fixtures under tests/data/dicom/ with wsidicomizer.

    python scripts/make_dicom_fixtures.py [OUT_DIR]     # default: tests/data/dicom

Needs ``pip install wsidicomizer`` (and the system libturbojpeg it loads), which the test suite
does not: the fixtures are committed. Each series is a real converter's output for a bundled SVS
with a real ICC profile put where the scanner puts it (TIFF tag 34675 of IFD 0), which
wsidicomizer (through opentile) copies into every instance's OpticalPathSequence:

- ``cmu1-scanscope``: CMU-1-Small-Region.svs with the ScanScope v1 profile (the profile of the
  CMU-1 scan, from CMU-Embed.tif), frames copied as they are: JPEG baseline RGB volume, thumbnail
  and overview; the LZW label transcoded by wsidicomizer to JPEG YBR_FULL_422. Basic offset tables.
- ``small-j2k-ict``: openslide-python's 16x16 small.svs with the compact AdobeRGB-compatible
  profile, transcoded to lossy JPEG 2000 (YBR_ICT, MCT on). Extended offset tables.
- ``small-j2k-rct``: the same, lossless JPEG 2000 (YBR_RCT, reversible MCT), empty basic
  offset tables.
- ``small-native``: the same, uncompressed (explicit VR little endian, RGB).
- ``small-default``: small.svs as it is (no profile): wsidicomizer then writes its own sRGB
  profile ("sRGB built-in", class 'mntr'), so svsicc's conversion is an identity.

UIDs are random per run: regenerating changes every file.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from svsicc.tiff import file as tiff  # noqa: E402

DATA = ROOT / "tests" / "data"


def svs_with_profile(source: Path, profile: bytes, out: Path) -> Path:
    """``source`` copied to ``out`` with ``profile`` in tag 34675 of IFD 0, every other byte
    kept (the IFD moves to the end to gain the entry)."""
    shutil.copyfile(source, out)
    with tiff.TiffReader(source) as reader, open(out, "r+b") as fh:
        first = reader.structure.ifds[0]
        patcher = tiff.TiffPatcher(fh, reader.structure, out)
        patcher.relocate_ifd_with_extra_entry(
            reader, first, tiff.TAG_ICC_PROFILE, tiff.TYPE_UNDEFINED, len(profile), profile
        )
    return out


def convert(svs: Path, out: Path, **options: object) -> None:
    from wsidicomizer import WsiDicomizer

    if out.exists():
        shutil.rmtree(out)
    WsiDicomizer.convert(svs, out, workers=1, **options)
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out}: {len(list(out.iterdir()))} instances, {total:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=DATA / "dicom")
    args = parser.parse_args()
    from wsidicom.codec import Jpeg2kSettings, NumpySettings

    args.out_dir.mkdir(parents=True, exist_ok=True)
    scanscope = (DATA / "ScanScope_v1_from_CMU-Embed.icc").read_bytes()
    adobe = (DATA / "AdobeCompat-v2.icc").read_bytes()
    small = DATA / "openslide-python_small.svs"
    with tempfile.TemporaryDirectory() as tmp:
        cmu = svs_with_profile(DATA / "CMU-1-Small-Region.svs", scanscope, Path(tmp) / "cmu.svs")
        convert(cmu, args.out_dir / "cmu1-scanscope")
        small_adobe = svs_with_profile(small, adobe, Path(tmp) / "small.svs")
        convert(
            small_adobe,
            args.out_dir / "small-j2k-ict",
            encoding=Jpeg2kSettings(levels=45),
            force_transcoding=True,
            offset_table="eot",
        )
        convert(
            small_adobe,
            args.out_dir / "small-j2k-rct",
            encoding=Jpeg2kSettings(levels=0),
            force_transcoding=True,
            offset_table="empty",
        )
        convert(
            small_adobe,
            args.out_dir / "small-native",
            encoding=NumpySettings(),
            force_transcoding=True,
        )
        convert(small, args.out_dir / "small-default")


if __name__ == "__main__":
    main()
