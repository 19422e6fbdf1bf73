"""The colour table is LittleCMS 8-bit, bit for bit, and it converts in the right direction.

Exactness is checked on all 2**24 colours (one LittleCMS pass over a shuffled all-colours image,
compared with the table's lookup) for a LUT profile and a matrix/TRC profile with every intent
that gives them a distinct transform, and on real tile data through the path apply uses
(codec decode to BGRX, ``apply_bgrx``), against LittleCMS on an independent RGB decode.
"""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np
import pytest
import tifffile

from svsicc.colour.transform import (
    ColourTable,
    IccProfile,
    Intent,
    default_target,
    native_gather_available,
    reference_transform,
)
from svsicc.convert.engine import PageJob, make_codec
from tests.synthetic import load_real_pixels, mosaic, preset, write_slide

from .conftest import CMU_EMBED, CMU_SMALL, DATA, SCANSCOPE, mean_abs, segment_bytes

ADOBE = DATA / "AdobeCompat-v2.icc"
TARGET = default_target()
SOURCE = IccProfile.from_file(SCANSCOPE)

# ScanScope v1 holds A2B0, A2B1 and A2B2 LUTs (and matrix/TRC tags LittleCMS does not use when
# a LUT is present); absolute colorimetric is A2B1 with the white point unscaled: four transforms.
# A matrix/TRC profile has one transform for perceptual, relative and saturation (LittleCMS
# builds the same matrix-shaper for the three) and absolute colorimetric.
CASES = [
    ("ScanScope v1 (LUT)", SCANSCOPE, Intent.PERCEPTUAL),
    ("ScanScope v1 (LUT)", SCANSCOPE, Intent.RELATIVE),
    ("ScanScope v1 (LUT)", SCANSCOPE, Intent.SATURATION),
    ("ScanScope v1 (LUT)", SCANSCOPE, Intent.ABSOLUTE),
    ("Adobe RGB compatible (matrix/TRC)", ADOBE, Intent.PERCEPTUAL),
    ("Adobe RGB compatible (matrix/TRC)", ADOBE, Intent.ABSOLUTE),
]

_tables: dict[tuple[str, Intent], ColourTable] = {}


def built_table(profile: IccProfile, intent: Intent) -> ColourTable:
    """``ColourTable.build`` itself (never the on-disk cache), once per module."""
    key = (profile.sha256, intent)
    if key not in _tables:
        _tables[key] = ColourTable.build(profile, TARGET, intent)
    return _tables[key]


@pytest.fixture(scope="module")
def every_colour() -> tuple[np.ndarray, np.ndarray]:
    """All 2**24 colours once each, shuffled, as a 4096x4096 image: (RGB, the same as BGRX)."""
    index = np.random.default_rng(20240).permutation(1 << 24).astype(np.uint32)
    rgb = np.empty((1 << 24, 3), np.uint8)
    rgb[:, 0] = index >> 16
    rgb[:, 1] = index >> 8
    rgb[:, 2] = index
    bgrx = np.zeros((1 << 24, 4), np.uint8)
    bgrx[:, :3] = rgb[:, ::-1]
    return rgb.reshape(4096, 4096, 3), bgrx.reshape(4096, 4096, 4)


def test_every_colour_is_there_once(every_colour: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, bgrx = every_colour
    words = bgrx.view("<u4").reshape(-1)
    seen = np.zeros(1 << 24, bool)
    seen[words] = True  # 2**24 words, all below 2**24: each seen once iff all are seen
    assert seen.all()
    assert rgb[123, 456].tolist() == bgrx[123, 456, 2::-1].tolist()


@pytest.mark.parametrize(
    ("name", "path", "intent"), CASES, ids=[f"{c[0].split()[0]}-{c[2].label}" for c in CASES]
)
def test_table_equals_littlecms_on_all_colours(
    every_colour: tuple[np.ndarray, np.ndarray], name: str, path: object, intent: Intent
) -> None:
    rgb, bgrx = every_colour
    profile = IccProfile.from_file(path)  # type: ignore[arg-type]
    table = built_table(profile, intent)
    expected = reference_transform(rgb, profile, TARGET, intent)
    for layout, pixels in (("BGRX", bgrx), ("RGB", rgb)):
        got = table.apply(pixels, layout)
        assert got.shape == (4096, 4096, 4)
        if not np.array_equal(got[..., :3], expected):
            mismatches = np.count_nonzero((got[..., :3] != expected).any(axis=-1))
            pytest.fail(f"{name} {intent.label} {layout}: {mismatches} colours differ from lcms")
    # The transform does something: far from the identity.
    assert np.count_nonzero(expected[::16] != rgb[::16]) > (1 << 18)
    if path == SCANSCOPE and intent == Intent.PERCEPTUAL:
        # The plain-RGB entry point, on the same 2**24 colours; and a flat list of colours.
        assert np.array_equal(table.apply_rgb(rgb), expected)
        assert np.array_equal(table.apply_rgb(rgb[7]), expected[7])


def test_slot_layout_is_one_to_one() -> None:
    """The table's chroma-difference layout: a documented slot per colour, every slot used once."""
    from svsicc.colour.transform import TABLE_LAYOUT, TransformKey, _colours_in, _slots_of

    colours = np.arange(1 << 24, dtype=np.uint32)
    slots = _slots_of(colours)
    assert np.array_equal(_colours_in(slots), colours)
    used = np.zeros(1 << 24, bool)
    used[slots] = True
    assert used.all()
    # (200, 150, 100): R-G = 50, B-G = -50 = 206 (mod 256), G = 150.
    assert int(_slots_of(np.array([0xC89664]))[0]) == (50 << 16) | (206 << 8) | 150
    # A cached table built in another layout must never be read as this one.
    assert TransformKey(SOURCE.sha256, TARGET.sha256, Intent.PERCEPTUAL).name.endswith(
        f"-{TABLE_LAYOUT}.npy"
    )


def test_gather_and_lookup_agree_on_a_hand_checked_colour() -> None:
    """One colour through every entry point, against LittleCMS on that single pixel."""
    table = built_table(SOURCE, Intent.PERCEPTUAL)
    rgb = np.array([[[200, 150, 100]]], np.uint8)
    expected = reference_transform(rgb, SOURCE, TARGET, Intent.PERCEPTUAL)[0, 0].tolist()
    bgrx = np.array([[[100, 150, 200, 0]]], np.uint8)
    assert table.apply_bgrx(bgrx)[0, 0, :3].tolist() == expected
    assert table.apply_rgb(rgb)[0, 0].tolist() == expected
    word = int(table.lookup(np.array([0xC89664], np.uint32))[0])
    assert [word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF] == expected
    assert expected != [200, 150, 100]


def test_native_gather_is_built() -> None:
    """pip builds svsicc/_native.c wherever a C compiler exists (CI has one): without it the
    colour stage silently runs ~1.5x slower on numpy. Set SVSICC_ALLOW_NUMPY_GATHER=1 to accept
    that on a machine without a compiler."""
    import os

    if os.environ.get("SVSICC_ALLOW_NUMPY_GATHER") != "1":
        assert native_gather_available(), (
            "svsicc.colour._native was not built: install a C compiler"
        )


def test_native_and_numpy_gathers_agree_on_all_colours(
    every_colour: tuple[np.ndarray, np.ndarray],
) -> None:
    """Both gathers, the X byte set to junk (it must be ignored), in place and not."""
    _, bgrx = every_colour
    table = built_table(SOURCE, Intent.PERCEPTUAL)
    junk_x = bgrx.copy()
    junk_x[..., 3] = np.random.default_rng(1).integers(0, 256, junk_x.shape[:2], dtype=np.uint8)
    expected = table._apply_bgrx_numpy(bgrx, np.empty_like(bgrx))
    assert np.array_equal(table._apply_bgrx_numpy(junk_x, np.empty_like(junk_x)), expected)
    got = table.apply_bgrx(junk_x)
    assert got is not junk_x and np.array_equal(got, expected)
    in_place = table.apply_bgrx(junk_x, in_place=True)
    assert in_place is junk_x and np.array_equal(junk_x, expected)
    # A strided view (a tile cut out of a larger decode) is copied, never written through.
    window = bgrx[100:356, 200:456]
    before = window.copy()
    assert np.array_equal(table.apply_bgrx(window, in_place=True), expected[100:356, 200:456])
    assert np.array_equal(window, before)
    # Packed RGB, through the C gather and numpy's, into a reused buffer and a fresh one.
    rgb, _ = every_colour
    reused = np.full(expected.shape, 9, np.uint8)
    assert table.apply(rgb, "RGB", reused) is reused
    assert np.array_equal(reused, expected)
    assert np.array_equal(table._apply_rgb_numpy(rgb, np.empty_like(expected)), expected)
    rgb_window = rgb[100:356, 200:456]  # strided: gathered from a contiguous copy
    assert np.array_equal(table.apply(rgb_window, "RGB"), expected[100:356, 200:456])
    with pytest.raises(ValueError, match="BGRX or RGB"):
        table.apply(rgb, "RGBX")
    with pytest.raises(ValueError, match="uint8"):  # the C gather reads bytes
        table.apply(rgb[:2, :2].astype(np.uint16), "RGB")


def test_colour_out_is_in_place_for_bgrx_and_one_reused_buffer_for_rgb() -> None:
    from svsicc.colour.transform import ColourOut

    out = ColourOut()
    bgrx = np.zeros((240, 240, 4), np.uint8)
    assert out.for_pixels(bgrx, "BGRX") is bgrx
    first = out.for_pixels(np.zeros((240, 240, 3), np.uint8), "RGB")
    assert first.shape == (240, 240, 4) and first.flags.c_contiguous and first.flags.writeable
    assert out.for_pixels(np.ones((240, 240, 3), np.uint8), "RGB") is first
    edge = out.for_pixels(np.zeros((100, 240, 3), np.uint8), "RGB")  # an edge segment
    assert edge.shape == (100, 240, 4) and edge is not first


@pytest.mark.skipif(not native_gather_available(), reason="svsicc.colour._native not built")
def test_native_gather_rejects_wrong_buffers() -> None:
    from svsicc.colour import _native

    table = built_table(SOURCE, Intent.PERCEPTUAL).table
    pixels = np.zeros(16, np.uint32)
    with pytest.raises(ValueError, match="2\\*\\*24"):
        _native.apply_table(table[:-1], pixels, pixels)
    with pytest.raises(ValueError, match="out"):
        _native.apply_table(table, pixels, np.zeros(15, np.uint32))
    with pytest.raises(ValueError, match="32-bit words"):
        _native.apply_table(table, np.zeros(6, np.uint8), np.zeros(6, np.uint8))
    read_only = pixels.copy()
    read_only.flags.writeable = False
    with pytest.raises((BufferError, ValueError)):
        _native.apply_table(table, pixels, read_only)
    with pytest.raises(ValueError, match="overlaps"):
        _native.apply_table(table, pixels[1:], pixels[:-1])
    rgb = np.zeros(48, np.uint8)  # 16 packed RGB pixels
    _native.apply_table_rgb(table, rgb, np.zeros(16, np.uint32))
    with pytest.raises(ValueError, match="3-byte pixels"):
        _native.apply_table_rgb(table, rgb[:47], np.zeros(16, np.uint32))
    with pytest.raises(ValueError, match="out: 15 words"):
        _native.apply_table_rgb(table, rgb, np.zeros(15, np.uint32))
    shared = np.zeros(48, np.uint8)  # 12 RGB pixels in, 12 words out, in the same bytes
    with pytest.raises(ValueError, match="overlaps"):
        _native.apply_table_rgb(table, shared[:36], shared.view(np.uint32))


def test_lut_intents_differ() -> None:
    """Absolute colorimetric really is another transform (else the cases above test one table)."""
    perceptual = built_table(SOURCE, Intent.PERCEPTUAL).table
    absolute = built_table(SOURCE, Intent.ABSOLUTE).table
    assert np.count_nonzero(perceptual != absolute) > (1 << 20)


# -- real tile data, through the path apply uses ---------------------------------------------


def test_real_aperio_tiles_through_rgb_path() -> None:
    """CMU-1-Small-Region: 130 abbreviated RGB-colourspace JPEG tiles with shared JPEGTables,
    decoded to packed RGB and gathered from it, as apply does."""
    tiles = segment_bytes(CMU_SMALL, 0)
    with tifffile.TiffFile(CMU_SMALL) as tif:
        page = tif.pages[0]
        tables, rows, cols = page.jpegtables, page.tilelength, page.tilewidth
    assert len(tiles) == 130 and tables
    codec = make_codec(PageJob(0, 7, 2, 1, tables))
    assert codec.decoded_layout == "RGB"
    table = built_table(SOURCE, Intent.PERCEPTUAL)
    reused = np.full((rows, cols, 4), 7, np.uint8)  # apply's engine reuses one RGBX buffer
    converted, independent = [], []
    for tile in tiles:
        decoded = codec.decode(tile, rows, cols)
        assert decoded.shape == (rows, cols, 3) and decoded.dtype == np.uint8
        # An RGB decode by imagecodecs directly, not through svsicc's codec.
        rgb = imagecodecs.jpeg8_decode(tile, tables=tables, colorspace="RGB", outcolorspace="RGB")
        assert np.array_equal(decoded, rgb), "svsicc's RGB decode is not imagecodecs' RGB decode"
        rgbx = table.apply(decoded, "RGB", reused)
        assert rgbx is reused
        converted.append(rgbx[..., :3].copy())
        independent.append(rgb)
    expected = reference_transform(np.concatenate(independent), SOURCE, TARGET, Intent.PERCEPTUAL)
    got = np.concatenate(converted)
    assert np.array_equal(got, expected)
    assert mean_abs(got, np.concatenate(independent)) > 1.0  # the tiles did change


def test_ycbcr_tiles_through_bgrx_path(tmp_path: object) -> None:
    """GT450 style: complete JFIF YCbCr 4:2:0 tiles, decoded by libjpeg's own colour conversion."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "gt450.svs"
    pixels = mosaic(load_real_pixels(), 1024, 768, seed=3)
    write_slide(path, pixels, preset("gt450", downsamples=(1,), with_label=False))
    tiles = segment_bytes(path, 0)
    codec = make_codec(PageJob(0, 7, 6, 1, None))
    assert codec.decoded_layout == "BGRX"
    table = built_table(SOURCE, Intent.PERCEPTUAL)
    for tile in tiles:
        bgrx = codec.decode(tile, 256, 256)
        rgb = imagecodecs.jpeg8_decode(tile, outcolorspace="RGB")
        assert np.array_equal(bgrx[..., 2::-1], rgb)
        got = table.apply_bgrx(bgrx)[..., :3]
        assert np.array_equal(got, reference_transform(rgb, SOURCE, TARGET, Intent.PERCEPTUAL))


# -- direction and the profile's LUT ---------------------------------------------------------


def matrix_only(profile: IccProfile) -> IccProfile:
    """The same profile with its A2Bn tags renamed, so LittleCMS falls back to matrix/TRC."""
    data = bytearray(profile.data)
    (count,) = struct.unpack_from(">I", data, 128)
    renamed = 0
    for i in range(count):
        at = 132 + 12 * i
        if data[at : at + 3] == b"A2B":
            data[at : at + 3] = b"zzz"  # an unknown private tag: ignored
            renamed += 1
    assert renamed == 3
    return IccProfile.from_bytes(bytes(data), "ScanScope v1 without its LUTs")


def test_direction_matches_imagescope_apply_export() -> None:
    """Profile as source reproduces ImageScope's own "apply ICC" export statistics.

    petebankhead/ICC-Profiles (README, Java output) compares ImageScope's "Apply" export of this
    CMU-1 region with the "Ignore" export, whose pixels CMU-Embed.tif holds: mean +3.8, min -62,
    max +31, mean absolute difference 5.16. The swapped direction (sRGB as source) gives a mean
    absolute difference of ~10.4 and whitens the glass.
    """
    raw = load_real_pixels(CMU_EMBED)
    forward = reference_transform(raw, SOURCE, TARGET, Intent.PERCEPTUAL).astype(np.int16)
    diff = forward - raw.astype(np.int16)
    assert abs(float(diff.mean()) - 3.8) < 0.3
    assert abs(float(np.abs(diff).mean()) - 5.16) < 0.3
    assert -66 <= int(diff.min()) <= -56 and 28 <= int(diff.max()) <= 35
    swapped = reference_transform(raw, TARGET, SOURCE, Intent.PERCEPTUAL)
    assert mean_abs(swapped, raw) > 8.0
    # The same through the table.
    table = built_table(SOURCE, Intent.PERCEPTUAL)
    assert np.array_equal(table.apply_rgb(raw), forward.astype(np.uint8))


def test_glass_stays_neutral_and_is_not_blown_to_white() -> None:
    """CMU-1's glass (raw ~243-246 grey) stays within a few levels of itself and neutral.

    Pushing it to ~(255, 255, 255) is what the swapped direction does (sRGB -> scanner), the
    mistake of the first published recipe, not what the scanner profile asks for.
    """
    raw = load_real_pixels(CMU_SMALL).reshape(-1, 3)
    spread = raw.max(axis=1).astype(np.int16) - raw.min(axis=1)
    glass = raw[(raw.min(axis=1) >= 235) & (spread <= 6)]
    assert len(glass) > 100_000
    table = built_table(SOURCE, Intent.PERCEPTUAL)
    out = table.apply_rgb(glass).astype(np.int16)
    assert float(np.abs(out - glass).mean()) < 4.0
    out_spread = out.max(axis=1) - out.min(axis=1)
    assert float(np.median(out_spread)) <= 2  # neutral
    swapped = reference_transform(glass[None], TARGET, SOURCE, Intent.PERCEPTUAL)[0]
    assert float(np.median(swapped)) >= 254
    # An isolated reading of typical CMU-1 glass.
    typical = table.apply_rgb(np.array([[239, 236, 239]], np.uint8))[0].astype(np.int16)
    assert np.abs(typical - [238, 238, 239]).max() <= 1


def test_matrix_only_path_is_far_from_the_lut() -> None:
    """Using the profile's matrix/TRC tags instead of its LUT moves tissue by ~17-20 levels."""
    raw = load_real_pixels(CMU_SMALL)
    lut = reference_transform(raw, SOURCE, TARGET, Intent.PERCEPTUAL)
    matrix = reference_transform(raw, matrix_only(SOURCE), TARGET, Intent.PERCEPTUAL)
    off = mean_abs(lut, matrix)
    assert 12.0 < off < 28.0, off
    # ... while the LUT path is the one that matches ImageScope (see the direction test).
    embed = load_real_pixels(CMU_EMBED)
    via_matrix = reference_transform(embed, matrix_only(SOURCE), TARGET, Intent.PERCEPTUAL)
    assert mean_abs(via_matrix, embed) > 10.0
