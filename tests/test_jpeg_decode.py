"""svsicc's one-pass JPEG decode (simplejpeg, strict) against imagecodecs' libjpeg decode with the
IFD's JPEGTables and the colourspace Photometric names, the decode svsicc used before: the same
pixels, byte for byte, on every JPEG segment of the real and synthetic slides the tests use, and
on streams whose markers would lead libjpeg to another colourspace than Photometric's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from svsicc.codecs.codes import Photometric
from svsicc.codecs.jpeg import JpegCodec
from svsicc.codecs.jpeg_stream import (
    JpegFormatError,
    Segment,
    split_header,
)
from svsicc.drivers import read_slide
from svsicc.tiff import file as tiff
from svsicc.tiff.slide import Page
from tests.synthetic import load_real_pixels, preset, write_slide

from .conftest import CMU_SMALL, OPENSLIDE_SMALL, TCGA


def decoded_colorspace(photometric: int) -> int:
    """imagecodecs' name for the layout svsicc decodes to: packed RGB from an RGB-colourspace
    frame, BGRX from YCbCr."""
    cs = imagecodecs.JPEG8.CS
    return int(cs.RGB if photometric == Photometric.RGB else cs.EXT_BGRX)


def reference(tile: bytes, page: Page, rows: int, cols: int) -> np.ndarray:
    """What svsicc decoded before: imagecodecs with tables= and colorspace= given."""
    cs = imagecodecs.JPEG8.CS
    pixels = imagecodecs.jpeg8_decode(
        tile,
        tables=page.jpeg_tables,
        colorspace=cs.RGB if page.photometric == Photometric.RGB else cs.YCbCr,
        outcolorspace=decoded_colorspace(page.photometric),
    )
    return np.asarray(pixels)[:rows, :cols]


def jpeg_segments(path: Path) -> Iterator[tuple[Page, int, bytes]]:
    with tiff.TiffReader(path) as reader:
        for page in read_slide(reader).pages:
            if page.compression != 7:
                continue
            for index, (offset, count) in enumerate(
                zip(page.offsets, page.byte_counts, strict=True)
            ):
                if count:
                    yield page, index, reader.read(offset, count)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """AT2 style (levels, thumbnail and macro: abbreviated RGB colourspace) and GT450 style at
    each sampling (self-contained JFIF YCbCr levels)."""
    folder = tmp_path_factory.mktemp("slides")
    pixels = load_real_pixels()[:600, :800]
    specs = {"at2": preset("at2", downsamples=(1, 2))}
    for sampling in ("4:2:0", "4:2:2", "4:4:4"):
        specs[f"gt450-{sampling}"] = preset(
            "gt450", subsampling=sampling, downsamples=(1, 2), with_label=False
        )
    return {name: write_slide(folder / f"{name}.svs", pixels, spec) for name, spec in specs.items()}


REAL = {"CMU-1-Small-Region": CMU_SMALL, "openslide-small": OPENSLIDE_SMALL, "TCGA": TCGA}
KINDS = [*REAL, "at2", "gt450-4:2:0", "gt450-4:2:2", "gt450-4:4:4"]
# (roles of the JPEG pages, how many there are); synthetic slides: two levels, thumbnail, macro.
EXPECTED_PAGES = {
    "CMU-1-Small-Region": ({"level", "thumbnail", "macro"}, 3),
    "openslide-small": ({"level", "thumbnail"}, 2),
    "TCGA": ({"thumbnail"}, 1),
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_segment_decodes_as_imagecodecs_did(kind: str, synthetic: dict[str, Path]) -> None:
    path = REAL.get(kind) or synthetic[kind]
    codecs: dict[int, JpegCodec] = {}
    roles: set[str] = set()
    decoded = 0
    for page, index, tile in jpeg_segments(path):
        codec = codecs.setdefault(page.index, JpegCodec(page.jpeg_tables, page.photometric))
        rows, cols = page.segment_shape(index)
        got = codec.decode(tile, rows, cols)
        assert got.shape == (rows, cols, len(codec.decoded_layout))
        assert np.array_equal(got, reference(tile, page, rows, cols)), (page.index, index)
        roles.add(page.role.value)
        decoded += 1
    # Every JPEG page of the file was compared: levels (tiles), thumbnail (strips), macro.
    assert (roles, len(codecs)) == EXPECTED_PAGES.get(kind, ({"level", "thumbnail", "macro"}, 4))
    assert decoded >= 2


def first_tile(path: Path) -> tuple[Page, bytes]:
    page, _, tile = next(jpeg_segments(path))
    return page, tile


def with_header(tile: bytes, change: dict[int, Segment | None], ids: bytes | None = None) -> bytes:
    """``tile`` with header segments replaced or removed by marker (a new one goes first) and
    optionally other component IDs in SOF and SOS."""
    segments, scan = split_header(tile)
    kept = [change.get(s.marker, s) for s in segments]
    present = {s.marker for s in segments}
    added = [seg for marker, seg in change.items() if seg and marker not in present]
    header = []
    for seg in [*added, *kept]:
        if seg is None:
            continue
        if ids and seg.marker == 0xC0:
            payload = bytearray(seg.payload)
            for i, cid in enumerate(ids):
                payload[6 + 3 * i] = cid
            seg = Segment(0xC0, bytes(payload))
        header.append(seg.to_bytes())
    if ids:
        sos = bytearray(scan)
        for i, cid in enumerate(ids):
            sos[5 + 2 * i] = cid
        scan = bytes(sos)
    return b"\xff\xd8" + b"".join(header) + scan


JFIF = Segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")


def adobe(transform: int) -> Segment:
    return Segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00" + bytes([transform]))


@pytest.mark.parametrize(
    ("source", "photometric", "change", "ids"),
    [
        # A JFIF marker says YCbCr to libjpeg; Photometric RGB must still win.
        ("aperio", Photometric.RGB, {0xE0: JFIF}, None),
        # An Adobe marker that agrees with Photometric, in the tile itself.
        ("aperio", Photometric.RGB, {0xEE: adobe(0)}, None),
        # Component IDs 'R', 'G', 'B' say RGB to libjpeg when no marker does.
        ("aperio", Photometric.RGB, {}, b"RGB"),
        # YCbCr without JFIF: component IDs 1, 2, 3, or 'R', 'G', 'B', or an agreeing Adobe.
        ("gt450", Photometric.YCBCR, {0xE0: None}, None),
        ("gt450", Photometric.YCBCR, {0xE0: None}, b"RGB"),
        ("gt450", Photometric.YCBCR, {0xE0: None, 0xEE: adobe(1)}, b"RGB"),
    ],
    ids=["rgb-jfif", "rgb-adobe", "rgb-ids-RGB", "ycbcr-no-jfif", "ycbcr-ids-RGB", "ycbcr-adobe"],
)
def test_photometric_decides_whatever_the_markers_say(
    source: str,
    photometric: int,
    change: dict[int, Segment | None],
    ids: bytes | None,
    synthetic: dict[str, Path],
) -> None:
    page, tile = first_tile(CMU_SMALL if source == "aperio" else synthetic["gt450-4:2:0"])
    assert page.photometric == photometric
    tile = with_header(tile, change, ids)
    rows, cols = page.segment_shape(0)
    got = JpegCodec(page.jpeg_tables, photometric).decode(tile, rows, cols)
    expected = reference(tile, page, rows, cols)
    assert np.array_equal(got, expected)
    # The other colourspace would give other pixels: the case tells them apart.
    other = imagecodecs.jpeg8_decode(
        tile,
        tables=page.jpeg_tables,
        colorspace=imagecodecs.JPEG8.CS.YCbCr
        if photometric == Photometric.RGB
        else imagecodecs.JPEG8.CS.RGB,
        outcolorspace=decoded_colorspace(photometric),
    )
    assert not np.array_equal(np.asarray(other)[:rows, :cols], expected)


def test_an_adobe_marker_that_contradicts_photometric_is_refused() -> None:
    page, tile = first_tile(CMU_SMALL)
    tile = with_header(tile, {0xEE: adobe(1)})
    with pytest.raises(JpegFormatError, match="Adobe marker says YCbCr but Photometric says RGB"):
        JpegCodec(page.jpeg_tables, page.photometric).decode(tile, 240, 240)


def test_an_undecodable_tile_is_an_error_not_damage() -> None:
    """A stream libjpeg refuses outright (here: a Huffman table the scan needs is missing) is
    told apart from damage it would decode with grey fill."""
    page, tile = first_tile(CMU_SMALL)
    segments, scan = split_header(tile)
    sos = bytearray(scan)
    sos[6] = 0x33  # first component: DC and AC table 3, which JPEGTables does not define
    broken = b"\xff\xd8" + b"".join(s.to_bytes() for s in segments) + bytes(sos)
    with pytest.raises(JpegFormatError, match="^libjpeg cannot decode it: Huffman table 0x03"):
        JpegCodec(page.jpeg_tables, page.photometric).decode(broken, 240, 240)
