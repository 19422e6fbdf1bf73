"""The generic-TIFF and BIF fixtures are what they claim, by readers independent of svsicc:
tifffile for the file structure and OpenSlide (its generic-tiff and ventana drivers) for the
levels, the ICC profile and the pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
import tifffile

from tests.conftest import SCANSCOPE
from tests.format_fixtures import (
    GenericCompression,
    bif_level0_size,
    halve,
    real_crop,
    serpentine_number,
    write_generic_tiff,
    write_ventana_bif,
    ycbcr_to_rgb,
)
from tests.synthetic import rgb_to_ycbcr

PROFILE = SCANSCOPE.read_bytes()
SIZE = (720, 500)  # write_generic_tiff's default level 0

# variant: (builder options, (Compression, Photometric, YCbCrSubSampling) on every level)
GENERIC: dict[str, tuple[dict[str, Any], tuple[int, int, tuple[int, int] | None]]] = {
    "jpeg-ycbcr": ({"compression": "jpeg"}, (7, 6, (2, 2))),
    "jpeg-rgb": ({"compression": "jpeg", "photometric": "rgb"}, (7, 2, (1, 1))),
    "lzw": ({"compression": "lzw"}, (5, 2, None)),
    "lzw-predictor-bigtiff": (
        {"compression": "lzw", "predictor": True, "bigtiff": True},
        (5, 2, None),
    ),
    "none": ({"compression": "none"}, (1, 2, None)),
    "jpeg-stripped-thumbnail": (
        {"compression": "jpeg", "stripped_thumbnail": True, "description": None},
        (7, 6, (2, 2)),
    ),
}
JP2K: dict[GenericCompression, int] = {"jp2k-33005": 33005, "jp2k-33003": 33003}


def _rgb(region: Any) -> np.ndarray:
    return np.asarray(region)[..., :3].astype(np.int16)


def _pages(tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    pages = [p for p in tif.pages if isinstance(p, tifffile.TiffPage)]
    assert len(pages) == len(tif.pages)
    return pages


def _first_tile(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> bytes:
    tif.filehandle.seek(page.dataoffsets[0])
    return tif.filehandle.read(page.databytecounts[0])


@pytest.fixture(scope="module")
def generic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("generic")
    paths = {
        name: write_generic_tiff(out / f"{name}.tif", **options)
        for name, (options, _) in GENERIC.items()
    }
    for name in JP2K:
        paths[name] = write_generic_tiff(out / f"{name}.tif", compression=name)
    return paths


@pytest.mark.parametrize("name", [*GENERIC, *JP2K])
def test_generic_tiff_structure(generic: dict[str, Path], name: str) -> None:
    path = generic[name]
    assert path.stat().st_size < 2_500_000
    with tifffile.TiffFile(path) as tif:
        pages = _pages(tif)
        tiled = [p for p in pages if p.is_tiled]
        assert [p.shape[:2] for p in tiled] == [(500, 720), (250, 360), (125, 180)]
        assert tif.is_bigtiff == GENERIC.get(name, ({}, None))[0].get("bigtiff", False)
        for k, page in enumerate(pages):
            assert 330 not in page.tags  # no SubIFDs
            assert page.subfiletype == (0 if k == 0 else 1)
            assert (34675 in page.tags) == (k == 0)
        assert pages[0].tags[34675].value == PROFILE
        for page in tiled:
            assert page.tile == (256, 256)
            if name in JP2K:
                assert (page.compression, page.photometric) == (JP2K[name], 2)
                continue
            compression, photometric, sub = GENERIC[name][1]
            assert (page.compression, page.photometric) == (compression, photometric)
            assert (page.tags[530].value if 530 in page.tags else None) == sub
        desc = pages[0].tags.get(270)
        if name == "jpeg-stripped-thumbnail":
            assert desc is None
            assert not pages[1].is_tiled
        else:
            assert desc is not None and desc.value == '{"shape": [500, 720, 3]}'


@pytest.mark.parametrize("name", GENERIC)
def test_generic_tiff_in_openslide(generic: dict[str, Path], name: str) -> None:
    lossless = GENERIC[name][1][0] != 7
    with tifffile.TiffFile(generic[name]) as tif:
        decoded = _pages(tif)[0].asarray().astype(np.int16)
    source = real_crop(*SIZE).astype(np.int16)
    if lossless:
        assert np.array_equal(decoded, source)
    else:
        assert np.abs(decoded - source).mean() < 8
    with openslide.OpenSlide(generic[name]) as osr:
        assert osr.properties["openslide.vendor"] == "generic-tiff"
        assert osr.level_dimensions == ((720, 500), (360, 250), (180, 125))
        assert osr.properties["openslide.mpp-x"] == "0.499"
        profile = osr.color_profile
        assert profile is not None and profile.tobytes() == PROFILE
        # one region across tile seams, one over the partial edge tiles
        for x, y, w, h in ((200, 150, 300, 250), (620, 400, 100, 100)):
            got = _rgb(osr.read_region((x, y), 0, (w, h)))
            want = decoded[y : y + h, x : x + w]
            if lossless:
                assert np.array_equal(got, want)
            else:
                assert np.abs(got - want).mean() < 1


@pytest.mark.parametrize("name", JP2K)
def test_generic_jp2k(generic: dict[str, Path], name: GenericCompression) -> None:
    """Lossless codestreams of the source (33003: of its YCbCr samples); OpenSlide's
    generic-tiff driver does not decode Aperio's JPEG 2000 codes at all."""
    source = real_crop(*SIZE)
    with tifffile.TiffFile(generic[name]) as tif:
        page = _pages(tif)[0]
        decoded = page.asarray()
        stream = _first_tile(tif, page)
    assert stream[:4] == b"\xff\x4f\xff\x51"  # a raw codestream: SOC SIZ, not a JP2 box
    cod = stream.index(b"\xff\x52")
    assert stream[cod + 8] == (1 if name == "jp2k-33005" else 0)  # multiple component transform
    if name == "jp2k-33005":
        assert np.array_equal(decoded, source)
    else:
        assert np.array_equal(decoded, rgb_to_ycbcr(source))
        assert np.abs(ycbcr_to_rgb(decoded).astype(np.int16) - source).max() <= 2
    with pytest.raises(
        openslide.OpenSlideError, match=f"Unsupported TIFF compression: {JP2K[name]}"
    ):
        openslide.OpenSlide(generic[name])


# --------------------------------------------------------------------------- BIF

BIF: dict[str, dict[str, Any]] = {
    "dp200": {},
    "iscan-overlap": {"model": "iscan", "overlap": (24, 16)},
    "ventana-tiff": {"encode_info": False},
}


@pytest.fixture(scope="module")
def bif(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bif")
    return {name: write_ventana_bif(out / f"{name}.bif", **kw) for name, kw in BIF.items()}


def test_serpentine_number_inverts_openslide() -> None:
    """OpenSlide's get_tile_coordinates, transcribed: the numbering starts at the bottom left
    and every second row from the bottom runs right to left."""
    cols, rows = 4, 3
    for col in range(cols):
        for row in range(rows):
            tile = serpentine_number(col, row, cols, rows) - 1
            c, r = tile % cols, tile // cols
            if r % 2:
                c = cols - c - 1
            assert (c, rows - r - 1) == (col, row)
    assert serpentine_number(0, rows - 1, cols, rows) == 1
    assert serpentine_number(cols - 1, rows - 2, cols, rows) == cols + 1


@pytest.mark.parametrize("name", BIF)
def test_bif_structure(bif: dict[str, Path], name: str) -> None:
    with tifffile.TiffFile(bif[name]) as tif:
        assert tif.is_bigtiff and tif.is_bif
        pages = _pages(tif)
        second = "Thumbnail" if BIF[name].get("model") == "iscan" else "Probability_Image"
        assert [p.description for p in pages] == [
            "Label_Image",
            second,
            "level=0 mag=20 quality=90",
            "level=1 mag=10 quality=90",
            "level=2 mag=5 quality=90",
        ]
        xmp0 = pages[0].tags[700]
        assert xmp0.dtype == 1 and b"<iScan " in xmp0.value
        for k, page in enumerate(pages):
            assert (34675 in page.tags) == (k == 2)
            has_xmp = k == 0 or (k == 2 and name != "ventana-tiff")
            assert (700 in page.tags) == has_xmp
        assert pages[2].tags[34675].value == PROFILE
        if name != "ventana-tiff":
            assert pages[2].tags[700].value.startswith(b"<?xml")
            assert b"<EncodeInfo " in pages[2].tags[700].value
        for page in pages[2:]:
            assert page.is_tiled and page.tile == (320, 256)
            assert (page.compression, page.photometric) == (7, 6)
            assert page.tags[530].value == (2, 2)
            tables = page.tags[347].value
            assert tables[:2] == b"\xff\xd8" and tables[-2:] == b"\xff\xd9"
            tile = _first_tile(tif, page)
            assert tile[2:4] == b"\xff\xc0" and b"\xff\xdb" not in tile[:600]  # abbreviated
        assert [p.shape[:2] for p in pages[2:]] == [(960, 1024), (480, 512), (240, 256)]


def _painted(frames: np.ndarray, adv: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Level 0 as OpenSlide paints a BIF: frames at multiples of the advance. It draws them in
    reverse raster order with cairo's SATURATE operator (which leaves opaque pixels alone), so
    where frames overlap the lower right one wins: the same as pasting in raster order."""
    out = np.zeros((size[1], size[0], 3), np.int16)
    th, tw = 320, 256
    for r in range(frames.shape[0] // th):
        for c in range(frames.shape[1] // tw):
            y, x = r * adv[1], c * adv[0]
            out[y : y + th, x : x + tw] = frames[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
    return out


@pytest.mark.parametrize("name", BIF)
def test_bif_in_openslide(bif: dict[str, Path], name: str) -> None:
    overlap = BIF[name].get("overlap", (0, 0))
    width, height = bif_level0_size(4, 3, 256, 320, overlap)
    with tifffile.TiffFile(bif[name]) as tif:
        frames = _pages(tif)[2].asarray().astype(np.int16)
    expected = _painted(frames, (256 - overlap[0], 320 - overlap[1]), (width, height))
    source = real_crop(width, height).astype(np.int16)
    with openslide.OpenSlide(bif[name]) as osr:
        assert osr.properties["openslide.vendor"] == "ventana"
        assert osr.level_dimensions == (
            (width, height),
            (-(-width // 2), -(-height // 2)),
            (-(-width // 4), -(-height // 4)),
        )
        assert osr.level_downsamples == (1.0, 2.0, 4.0)
        assert osr.properties["openslide.objective-power"] == "20"
        assert osr.properties["openslide.mpp-x"] == "0.499"
        want_model = "VENTANA iScan HT" if BIF[name].get("model") == "iscan" else "VENTANA DP 200"
        assert osr.properties["ventana.ScannerModel"] == want_model
        associated = {"macro", "thumbnail"} if BIF[name].get("model") == "iscan" else {"macro"}
        assert set(osr.associated_images) == associated
        profile = osr.color_profile
        assert profile is not None and profile.tobytes() == PROFILE
        level0 = _rgb(osr.read_region((0, 0), 0, (width, height)))
        level1 = _rgb(osr.read_region((0, 0), 1, osr.level_dimensions[1]))
    assert np.abs(level0 - expected).mean() < 0.5  # the frames where the joints say
    assert np.abs(level0 - source).mean() < 8  # i.e. the stitched source, JPEG aside
    half = halve(real_crop(width, height)).astype(np.int16)
    assert np.abs(level1[: half.shape[0], : half.shape[1]] - half).mean() < 8
    if overlap != (0, 0):  # frames abutted instead would misplace the tissue
        wrong = _painted(frames, (256, 320), (1024, 960))[:height, :width]
        assert np.abs(wrong - source).mean() > 3 * np.abs(level0 - source).mean()
