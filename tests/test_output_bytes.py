"""The tile bytes apply writes for every fixture style, pinned: a guard for refactors.

A redesign of the package must not change one output byte. The digests below were recorded
with the codec libraries named in ``RECORDED_WITH``; other versions of libjpeg-turbo or OpenJPEG
may legitimately write other bytes, so with other versions the test says so instead of failing
(regenerate with ``python -m tests.test_output_bytes``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import imagecodecs
import PIL
import pytest
import tifffile

import svsicc
from tests.synthetic import load_real_pixels, mosaic, preset, write_slide

SCANSCOPE = Path(__file__).parent / "data" / "ScanScope_v1_from_CMU-Embed.icc"
STYLES = {
    "at2": {"style": "at2"},
    "gt450-420": {"style": "gt450"},
    "gt450-422": {"style": "gt450", "subsampling": "4:2:2"},
    "gt450-444-bigtiff": {"style": "gt450", "subsampling": "4:4:4", "bigtiff": True},
    "raw": {"style": "raw"},
    "lzw": {"style": "lzw"},
    "j2k-33005": {"style": "jp2k-33005"},
    "j2k-33003": {"style": "jp2k-33003"},
    "j2k-33003-lossless": {"style": "jp2k-33003", "j2k_lossless": True},
    "j2k-33003-422": {"style": "jp2k-33003", "j2k_chroma": (2, 1)},
}
RECORDED_WITH: dict[str, str] = {
    "imagecodecs": "2026.3.6",
    "pillow": "13.0.0",
}
DIGESTS: dict[str, str] = {
    "at2": "a1ed07d2957b9cb007da155a0c4ff56768ba734d8e63f0ff69607835b78621bb",
    "gt450-420": "9485bfd669bc3586258087618a6990474b7541b35e39baf035d7af0ad469ea81",
    "gt450-422": "5483fdc7bed293aa4a23f4892ef86d384ddb7d4aaa40e8322dbaf63441c591c5",
    "gt450-444-bigtiff": "aba07a1a124e0a9777d3ccd2f862b1570645d97d1abb1ed93f087134b51fdd87",
    "j2k-33003": "13864f5021bc8ad1c2f4cc225ad4a7f49eb4397b1444e09f5b50b2ef2ced3556",
    "j2k-33003-422": "6f09beae59df64101221d3d5da3c22c556ee2d5ea55efff9fc2329e76252b4e4",
    "j2k-33003-lossless": "8922439ca6f30895ea21d7f9c5885e0f68611d0dc5e4e3db8234ad1c88171a06",
    "j2k-33005": "5e5d1266fdb9191bc0e0da89799971db52b301b3e6999c44b60d72c431c1cd03",
    "lzw": "07d7f68302796bc97838362ed28395e7d3ea71f0e6b76fac3f2aef6fa0c764e3",
    "raw": "7d18b597819bd55dc631f17e752c4a6907995d066989aa4e89c4b8d7bda13f60",
}


def library_versions() -> dict[str, str]:
    return {"imagecodecs": imagecodecs.__version__, "pillow": PIL.__version__}


def tile_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with tifffile.TiffFile(path) as tf, open(path, "rb") as fh:
        for page in tf.pages:
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                fh.seek(offset)
                digest.update(fh.read(count))
    return digest.hexdigest()


def convert(folder: Path, name: str, workers: int) -> str:
    options = dict(STYLES[name])
    style = options.pop("style")
    spec = preset(style, profile=SCANSCOPE.read_bytes(), **options)
    source = folder / f"{name}.svs"
    if not source.exists():
        write_slide(source, mosaic(load_real_pixels(), 1500, 1100, seed=3), spec)
    output = folder / f"{name}-{workers}.svs"
    svsicc.apply(source, output, workers=workers)
    return tile_digest(output)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", sorted(STYLES))
def test_tile_bytes_are_unchanged(
    name: str, workers: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if library_versions() != RECORDED_WITH:
        pytest.skip(f"digests recorded with {RECORDED_WITH}, running {library_versions()}")
    folder = tmp_path_factory.getbasetemp() / "output-bytes"
    folder.mkdir(exist_ok=True)
    assert convert(folder, name, workers) == DIGESTS[name]


if __name__ == "__main__":  # regenerate the digests
    import tempfile

    with tempfile.TemporaryDirectory() as temp:
        found = {name: convert(Path(temp), name, 1) for name in sorted(STYLES)}
    json.dump({"RECORDED_WITH": library_versions(), "DIGESTS": found}, sys.stdout, indent=4)
