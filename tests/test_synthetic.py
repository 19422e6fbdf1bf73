"""The synthetic Aperio fixtures must look like real slides to tifffile and OpenSlide."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile

from tests.synthetic import (
    DATA_DIR,
    SlideSpec,
    TileOrder,
    file_tile_order,
    load_real_pixels,
    mosaic,
    preset,
    rgb_to_ycbcr,
    write_slide,
)

from .conftest import segment_bytes as tile_bytes

W, H = 700, 500
PROFILE = (DATA_DIR / "ScanScope_v1_from_CMU-Embed.icc").read_bytes()


@pytest.fixture(scope="module")
def src() -> np.ndarray:
    return np.ascontiguousarray(load_real_pixels()[1200 : 1200 + H, 900 : 900 + W])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a[..., :3].astype(np.float64) - b[..., :3]) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def area_mean(img: np.ndarray, d: int) -> np.ndarray:
    h, w = img.shape[0] // d, img.shape[1] // d
    return img[: h * d, : w * d].reshape(h, d, w, d, 3).mean(axis=(1, 3))


def markers(stream: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of the header segments up to SOS."""
    out, i = [], 2
    while True:
        m, n = stream[i + 1], int.from_bytes(stream[i + 2 : i + 4], "big")
        out.append((m, stream[i + 4 : i + 2 + n]))
        if m == 0xDA or m == 0xD9:
            return out
        i += 2 + n


# accuracy: "exact" round-trips; "ycc-*": tifffile returns the 33003 YCbCr samples unconverted.
# The minimum PSNR (dB) of level 0 reflects the codec on this textured crop: 4:2:0/4:2:2 chroma
# loses most (~29-30 dB), RGB-colourspace JPEG 4:4:4 keeps ~36 dB.
CASES: dict[str, tuple[SlideSpec, str, float]] = {
    "at2": (preset("at2"), "lossy", 33),
    "gt450-420": (preset("gt450"), "lossy", 28),
    "gt450-422": (preset("gt450", subsampling="4:2:2"), "lossy", 28),
    "gt450-444": (preset("gt450", subsampling="4:4:4"), "lossy", 33),
    "raw": (preset("raw"), "exact", 99),
    "lzw": (preset("lzw"), "exact", 99),
    "33003": (preset("jp2k-33003"), "ycc-lossy", 37),
    "33003-lossless": (preset("jp2k-33003", j2k_lossless=True), "ycc-exact", 50),
    "33005": (preset("jp2k-33005"), "lossy", 40),
    "33005-lossless": (preset("jp2k-33005", j2k_lossless=True), "exact", 99),
    "at2-bigtiff": (preset("at2", bigtiff=True), "lossy", 33),
}
COMPRESSION = {"at2": 7, "gt450": 7, "raw": 1, "lzw": 5, "jp2k-33003": 33003, "jp2k-33005": 33005}


@pytest.mark.parametrize("case", CASES)
def test_style_reads_back(case: str, src: np.ndarray, tmp_path: Path) -> None:
    spec, accuracy, min_psnr = CASES[case]
    path = write_slide(tmp_path / f"{case}.svs", src, spec)
    dims = [(W // d, H // d) for d in spec.downsamples]

    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff == spec.bigtiff
        pages = list(tif.pages)
        assert len(pages) == len(dims) + 3  # + thumbnail, label, macro
        arrays = [p.asarray() for p in pages]  # every IFD decodes
        level_pages = [pages[0], *pages[2 : 2 + len(dims) - 1]]
        for p, (w, h) in zip(level_pages, dims, strict=True):
            assert p.is_tiled and (p.imagewidth, p.imagelength) == (w, h)
            assert p.compression == COMPRESSION[spec.style]
            assert p.photometric == (6 if spec.style == "gt450" else 2)
            assert list(p.tags.keys()) == sorted(p.tags.keys())
        thumb, label, macro = pages[1], pages[-2], pages[-1]
        assert not thumb.is_tiled and thumb.compression == 7 and thumb.rowsperstrip == 16
        assert (label.subfiletype, label.compression, label.predictor) == (1, 5, 2)
        assert (macro.subfiletype, macro.compression) == (9, 7)
        assert arrays[-2].shape == (463, 387, 3) and arrays[-1].shape == (431, 1280, 3)
        if spec.bigtiff:
            assert pages[0].tags["TileOffsets"].dtype == 16  # LONG8
    level0 = arrays[0]
    if accuracy == "exact":
        np.testing.assert_array_equal(level0, src)
    elif accuracy == "ycc-exact":
        np.testing.assert_array_equal(level0, rgb_to_ycbcr(src))
    elif accuracy == "ycc-lossy":
        assert psnr(level0, rgb_to_ycbcr(src)) > min_psnr
    else:
        assert psnr(level0, src) > min_psnr

    with openslide.OpenSlide(path) as slide:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert slide.level_dimensions == tuple(dims)
        assert set(slide.associated_images) == {"thumbnail", "label", "macro"}
        region = np.asarray(slide.read_region((0, 0), 0, (W, H)))
        assert (region[..., 3] == 255).all()
        # OpenSlide's own YCbCr->RGB for 33003 is what proves the samples were converted right
        if accuracy == "exact":
            np.testing.assert_array_equal(region[..., :3], src)
        else:
            assert psnr(region, src) > min_psnr
        if accuracy == "ycc-exact":  # only the rounding of the YCbCr samples is lost
            assert np.abs(region[..., :3].astype(int) - src).max() <= 2
        for level, d in enumerate(spec.downsamples[1:], start=1):  # plain area means
            small = np.asarray(slide.read_region((0, 0), level, dims[level]))
            assert psnr(small, area_mean(src, d)) > (55 if accuracy == "exact" else 26)
        thumbnail = np.asarray(slide.associated_images["thumbnail"].convert("RGB"))
        np.testing.assert_array_equal(thumbnail, arrays[1])


def test_at2_streams_are_shaped_like_real_aperio(src: np.ndarray, tmp_path: Path) -> None:
    path = write_slide(tmp_path / "at2.svs", src, preset("at2"))
    real = DATA_DIR / "CMU-1-Small-Region.svs"
    with tifffile.TiffFile(path) as tif, tifffile.TiffFile(real) as ref:
        for page in (0, 1, 2, 5):  # level 0, thumbnail, level 1, macro
            p = tif.pages[page]
            tables = p.jpegtables
            assert len(tables) == 289 == len(ref.pages[0].jpegtables)
            layout = [(m, body[:1]) for m, body in markers(tables)]
            assert layout == [(m, body[:1]) for m, body in markers(ref.pages[0].jpegtables)]
            assert layout == [(0xDB, b"\x00"), (0xC4, b"\x00"), (0xC4, b"\x10"), (0xD9, b"")]
            assert p.tags["YCbCrSubSampling"].value == (2, 2)
            for stream in tile_bytes(path, page):
                segs = markers(stream)
                assert [m for m, _ in segs] == [0xC0, 0xDA] and stream.endswith(b"\xff\xd9")
                sof, sos = segs[0][1], segs[1][1]
                assert [tuple(sof[6 + 3 * k : 9 + 3 * k]) for k in range(3)] == [
                    (0, 0x11, 0),
                    (1, 0x11, 0),
                    (2, 0x11, 0),
                ]
                assert list(sos[1:7:2]) == [0, 1, 2]
            if page == 0:
                first = tile_bytes(path, 0)[0]
                decoded = imagecodecs.jpeg8_decode(
                    first, tables=tables, colorspace="RGB", outcolorspace="RGB"
                )
                assert psnr(decoded, src[:240, :240]) > 33


@pytest.mark.parametrize(
    ("sub", "factors"), [("4:2:0", (2, 2)), ("4:2:2", (2, 1)), ("4:4:4", (1, 1))]
)
def test_gt450_tiles_are_jfif(
    sub: str, factors: tuple[int, int], src: np.ndarray, tmp_path: Path
) -> None:
    path = write_slide(tmp_path / "gt.svs", src, preset("gt450", subsampling=sub))
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[0]
        assert p.jpegtables is None and p.tags["YCbCrSubSampling"].value == factors
        assert p.description.startswith(
            "Aperio Leica Biosystems GT450 v1.0.1 \r\n700x500 "
            "(256x256) JPEG/YCC Q=91|AppMag = 40|MPP = 0.2630"
        )
    for stream in tile_bytes(path, 0):
        segs = dict(markers(stream))
        assert stream[2:4] == b"\xff\xe0" and 0xDB in segs and 0xC4 in segs
        assert segs[0xC0][7] == (factors[0] << 4) | factors[1]  # luma sampling = chroma factors


def test_descriptions_and_properties(src: np.ndarray, tmp_path: Path) -> None:
    path = write_slide(tmp_path / "d.svs", src, preset("at2", downsamples=(1, 4)))
    lib = "Aperio Image Library v12.0.15"
    props = "|AppMag = 20|MPP = 0.4990|ICC Profile = ScanScope v1"
    with tifffile.TiffFile(path) as tif:
        assert [p.description for p in tif.pages] == [
            f"{lib} \r\n700x500 (240x240) JPEG/RGB Q=70{props}",
            f"{lib} \n700x500 -> 700x500 - {props}",
            f"{lib} \r\n700x500 (240x240) -> 175x125 JPEG/RGB Q=70{props}",
            f"{lib} \nlabel 387x463",
            f"{lib} \nmacro 1280x431",
        ]
        assert all(p.tags["ImageDepth"].value == 1 for p in tif.pages)
    with openslide.OpenSlide(path) as slide:
        assert slide.properties["aperio.AppMag"] == "20"
        assert slide.properties["openslide.mpp-x"] == "0.499"
        assert slide.properties["aperio.ICC Profile"] == "ScanScope v1"


@pytest.mark.parametrize(
    ("spec", "on"),
    [
        (preset("at2", profile=PROFILE), {0}),
        (preset("gt450", profile=PROFILE), {0, 1, 2, 3}),
        (preset("jp2k-33005", profile=PROFILE, profile_on="levels_and_thumbnail"), {0, 1, 2, 3}),
        (preset("at2"), set()),
    ],
)
def test_icc_tag_placement(spec: SlideSpec, on: set[int], src: np.ndarray, tmp_path: Path) -> None:
    path = write_slide(tmp_path / "icc.svs", src, spec)
    with tifffile.TiffFile(path) as tif:
        assert {i for i, p in enumerate(tif.pages) if 34675 in p.tags} == on
        for i in on:
            assert tif.pages[i].tags[34675].value == PROFILE
    with openslide.OpenSlide(path) as slide:
        if on:
            assert slide.properties["openslide.icc-size"] == str(len(PROFILE))
            assert slide.color_profile is not None
        else:
            assert "openslide.icc-size" not in slide.properties


@pytest.mark.parametrize("order", ["raster", "column", "bottom_up"])
def test_tile_data_order(order: TileOrder, src: np.ndarray, tmp_path: Path) -> None:
    big = np.concatenate([src, src[::-1]], axis=0)  # 700x1000: 3x5 tiles
    path = write_slide(tmp_path / "o.svs", big, SlideSpec(tile_order=order))
    with tifffile.TiffFile(path) as tif:
        expected: list[tuple[int, TileOrder]] = [(0, order), (2, "raster")]
        for page, order_expected in expected:
            p = tif.pages[page]
            across, down = -(-p.imagewidth // 240), -(-p.imagelength // 240)
            offsets = p.dataoffsets
            in_file = sorted(range(len(offsets)), key=offsets.__getitem__)
            assert in_file == file_tile_order(across, down, order_expected)
    with openslide.OpenSlide(path) as slide:
        region = np.asarray(slide.read_region((0, 0), 0, (700, 1000)))
        assert psnr(region, big) > 35


def test_scanner_presets_order_level0_like_the_real_ones() -> None:
    assert preset("at2").tile_order == "column" and preset("at2").tile_size == 240
    gt = preset("gt450")
    assert (gt.tile_order, gt.tile_size, gt.quality, gt.profile_on) == (
        "bottom_up",
        256,
        91,
        "levels_and_thumbnail",
    )
    assert file_tile_order(3, 2, "bottom_up") == [3, 4, 5, 0, 1, 2]
    assert file_tile_order(3, 2, "column") == [0, 3, 1, 4, 2, 5]


def test_zero_length_tiles(src: np.ndarray, tmp_path: Path) -> None:
    spec = preset("at2", zero_length_tiles=((0, 4), (1, 0)))
    path = write_slide(tmp_path / "z.svs", src, spec)
    with tifffile.TiffFile(path) as tif:
        p0, p1 = tif.pages[0], tif.pages[2]
        assert (p0.dataoffsets[4], p0.databytecounts[4]) == (0, 0)
        assert (p1.dataoffsets[0], p1.databytecounts[0]) == (0, 0)
        assert all(n > 0 for i, n in enumerate(p0.databytecounts) if i != 4)
    with openslide.OpenSlide(path) as slide:
        region = np.asarray(slide.read_region((0, 0), 0, (W, H)))
    # level 0 has no level above it to borrow from: OpenSlide leaves the tile transparent
    assert (region[240:480, 240:480, 3] == 0).all()
    assert (region[:240, :, 3] == 255).all()


def test_mosaic_has_no_repeated_tiles() -> None:
    source = load_real_pixels("CMU-Embed.tif")
    assert source.shape == (590, 590, 3)
    img = mosaic(source, 1500, 1210, seed=7)
    assert img.shape == (1210, 1500, 3) and img.dtype == np.uint8
    for t in (240, 256):
        tiles = {
            img[y : y + t, x : x + t].tobytes()
            for y in range(0, 1210 - t + 1, t)
            for x in range(0, 1500 - t + 1, t)
        }
        assert len(tiles) == (1210 // t) * (1500 // t)
    np.testing.assert_array_equal(img, mosaic(source, 1500, 1210, seed=7))
    assert not np.array_equal(img, mosaic(source, 1500, 1210, seed=8))
    out = np.zeros((300, 400, 3), np.uint8)
    assert mosaic(source, 400, 300, seed=1, out=out) is out and out.any()
    # +-1 dither only: the pixels stay those of the source
    assert abs(float(img.mean()) - float(source.mean())) < 10
