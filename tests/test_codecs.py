"""Codec round trips with an explicit tolerance per codec (0 for lossless), and the stream
parameters each re-encode must keep."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from svsicc.codecs.jpeg import JpegCodec
from svsicc.codecs.jpeg_stream import JpegFormatError, split_header
from svsicc.codecs.lossless import LosslessCodec
from svsicc.codecs.pixels import bgrx_from_rgb, rgb_from_layout
from svsicc.exceptions import CodecError

from .conftest import CMU_SMALL, psnr, segment_bytes

# Decoding a stream and re-encoding the decoded pixels at the stream's own tables is nearly
# idempotent: what is left is rounding in the colour conversion and the DCT.
JPEG_RGB_REENCODE_PSNR = 55.0
# Chroma upsampled by the decoder and downsampled again by the encoder does not land back on the
# same samples: 4:2:0 keeps less.
JPEG_YCBCR_REENCODE_PSNR = {0: 45.0, 1: 45.0, 2: 40.0}


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    return np.ascontiguousarray(tifffile.imread(CMU_SMALL)[1000:1256, 800:1056])


def encode_pillow(rgb: np.ndarray, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", **options)
    return buf.getvalue()


def all_layouts(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The same pixels in every layout encoders take."""
    bgrx = bgrx_from_rgb(rgb)
    return {"RGB": rgb, "BGRX": bgrx, "RGBX": np.ascontiguousarray(bgrx[..., [2, 1, 0, 3]])}


def markers(stream: bytes) -> list[int]:
    segments, _ = split_header(stream)
    return [s.marker for s in segments]


@pytest.mark.parametrize(("compression", "predictor"), [(1, 1), (5, 1), (5, 2)])
def test_lossless_round_trip_is_exact(tissue: np.ndarray, compression: int, predictor: int) -> None:
    codec = LosslessCodec(compression, predictor)
    stored = codec.encode(bgrx_from_rgb(tissue), "BGRX", b"")
    decoded = codec.decode(stored, 256, 256)
    assert codec.decoded_layout == "RGB" and np.array_equal(decoded, tissue)
    assert codec.encode(decoded, "RGB", b"") == stored


def test_lossless_rejects_short_segments(tissue: np.ndarray) -> None:
    codec = LosslessCodec(1, 1)
    with pytest.raises(CodecError, match="expected 196608"):
        codec.decode(tissue.tobytes()[:1000], 256, 256)


def test_aperio_rgb_stream_round_trip() -> None:
    with tifffile.TiffFile(CMU_SMALL) as tif:
        page = tif.pages[0]
        tables = page.tags[347].value
        tif.filehandle.seek(page.dataoffsets[40])
        tile = tif.filehandle.read(page.databytecounts[40])
    codec = JpegCodec(tables, photometric=2)
    pixels = codec.decode(tile, 240, 240)
    assert codec.decoded_layout == "RGB" and pixels.shape == (240, 240, 3)
    again = codec.encode(pixels, "RGB", tile)
    assert markers(again) == markers(tile) == [0xC0]  # abbreviated: no tables, no JFIF/Adobe
    assert psnr(codec.decode(again, 240, 240), pixels) >= JPEG_RGB_REENCODE_PSNR
    settings = codec.settings_for(tile)
    assert settings.colorspace == "RGB" and settings.sampling_name == "4:4:4"
    assert [c.id for c in settings.components] == [0, 1, 2]
    # Aperio's tables are IJG tables (Q30 here): imagecodecs encoded it, and the frame header
    # (component IDs, sampling, table numbers) is the source's byte for byte.
    assert codec._ijg_encoder(settings) is not None
    frame = [s.payload for s in split_header(again)[0] if s.marker == 0xC0]
    assert frame == [s.payload for s in split_header(tile)[0] if s.marker == 0xC0]


@pytest.mark.parametrize("subsampling", [0, 1, 2])
def test_jfif_ycbcr_stream_keeps_its_parameters(tissue: np.ndarray, subsampling: int) -> None:
    source = encode_pillow(tissue, quality=91, subsampling=subsampling, restart_marker_blocks=4)
    codec = JpegCodec(None, photometric=6)
    pixels = codec.decode(source, 256, 256)
    again = codec.encode(pixels, "BGRX", source)
    assert markers(again) == markers(source)
    src_segments, _ = split_header(source)
    new_segments, _ = split_header(again)
    for a, b in zip(src_segments, new_segments, strict=True):
        if a.marker in (0xE0, 0xDB, 0xC0, 0xC4, 0xDD):  # JFIF, tables, frame, restart interval
            assert a.payload == b.payload
    assert psnr(codec.decode(again, 256, 256), pixels) >= JPEG_YCBCR_REENCODE_PSNR[subsampling]


def test_optimised_huffman_tables_stay_optimised(tissue: np.ndarray) -> None:
    source = encode_pillow(tissue, quality=80, optimize=True)
    codec = JpegCodec(None, photometric=6)
    assert codec.settings_for(source).optimize
    again = codec.encode(codec.decode(source, 256, 256), "BGRX", source)
    assert len(again) <= len(source) * 1.02


def test_pixel_layouts_encode_alike(tissue: np.ndarray) -> None:
    source = encode_pillow(tissue, quality=90)
    codec = JpegCodec(None, photometric=6)
    bgrx = codec.decode(source, 256, 256)
    rgbx = np.ascontiguousarray(bgrx[..., [2, 1, 0, 3]])
    assert codec.encode(bgrx, "BGRX", source) == codec.encode(rgbx, "RGBX", source)


@pytest.mark.parametrize("optimize", [False, True])
def test_cached_headers_give_the_stream_a_full_splice_gives(
    monkeypatch: pytest.MonkeyPatch, optimize: bool
) -> None:
    """Headers are spliced once per distinct encoder header and reused; the bytes must be what
    splicing every tile afresh gives, for the real Aperio tiles and for optimised tables."""
    from svsicc.codecs import jpeg

    with tifffile.TiffFile(CMU_SMALL) as tif:
        tables = tif.pages[0].tags[347].value
    sources = segment_bytes(CMU_SMALL, 0)[::9]
    if optimize:  # GT450-like complete streams with per-tile Huffman tables
        rgb = [JpegCodec(tables, 2).decode(t, 240, 240) for t in sources]
        sources = [encode_pillow(x, quality=85, optimize=True) for x in rgb]
        tables, photometric = None, 6
    else:
        photometric = 2
    cached = JpegCodec(tables, photometric)
    with monkeypatch.context() as patch:
        patch.setattr(jpeg, "MAX_CACHED_HEADERS", 0)
        fresh = JpegCodec(tables, photometric)
        layout = fresh.decoded_layout
        expected = [fresh.encode(fresh.decode(t, 240, 240), layout, t) for t in sources]
        assert not fresh._spliced
    got = [cached.encode(cached.decode(t, 240, 240), layout, t) for t in sources]
    assert got == expected
    assert len(cached._spliced) == (len(sources) if optimize else 1)


def test_scan_data_start_skips_fill_bytes() -> None:
    from svsicc.codecs.jpeg_stream import scan_data_start

    stream = encode_pillow(np.zeros((16, 16, 3), np.uint8), quality=90)
    start = scan_data_start(stream)
    padded = stream[:2] + b"\xff\xff" + stream[2:]
    assert scan_data_start(padded) == start + 2
    sos = stream.rfind(b"\xff\xda", 0, start)
    assert sos > 0 and sos + 2 + int.from_bytes(stream[sos + 2 : sos + 4], "big") == start
    with pytest.raises(JpegFormatError):
        scan_data_start(stream[:20])


@pytest.mark.parametrize(
    ("options", "photometric", "message"),
    [
        ({"progressive": True}, 6, "progressive"),
        ({"keep_rgb": True}, 6, "Adobe marker says RGB but Photometric says YCbCr"),
        ({}, 5, "photometric interpretation 5"),
    ],
)
def test_streams_we_cannot_reproduce_are_refused(
    tissue: np.ndarray, options: dict[str, object], photometric: int, message: str
) -> None:
    source = encode_pillow(tissue, quality=90, **options)
    with pytest.raises(JpegFormatError, match=message):
        JpegCodec(None, photometric).settings_for(source)


def test_grey_jpeg_is_refused(tissue: np.ndarray) -> None:
    source = encode_pillow(tissue[..., 0], quality=90)
    with pytest.raises(JpegFormatError, match="1-component"):
        JpegCodec(None, 6).settings_for(source)


def test_ijg_tables_are_the_ones_libjpeg_makes_at_every_quality(tissue: np.ndarray) -> None:
    from svsicc.codecs.ijg import ijg_table
    from svsicc.codecs.jpeg_stream import TableSet, natural_order

    for quality in range(1, 101):
        stream = encode_pillow(tissue[:16, :16], quality=quality)
        made = TableSet.from_segments(split_header(stream)[0]).quant
        assert natural_order(made[0]) == ijg_table(False, quality), quality
        assert natural_order(made[1]) == ijg_table(True, quality), quality


def _reencoders(tables: bytes | None, photometric: int) -> tuple[JpegCodec, JpegCodec]:
    """The default codec, and one that encodes every tile through Pillow with explicit tables."""
    pillow = JpegCodec(tables, photometric)
    pillow.use_ijg = False
    return JpegCodec(tables, photometric), pillow


@pytest.mark.parametrize(
    "kind", ["aperio", "ycbcr-4:2:0", "ycbcr-4:2:2", "ycbcr-4:4:4", "optimised", "q100", "q5"]
)
def test_ijg_encoder_writes_what_pillow_writes_with_the_tables(
    tissue: np.ndarray, kind: str
) -> None:
    """Sources with IJG tables go through imagecodecs; the bytes are Pillow's with the source's
    tables given explicitly (both libjpeg-turbo, integer DCT), so no pixel changes."""
    if kind == "aperio":
        with tifffile.TiffFile(CMU_SMALL) as tif:
            tables = tif.pages[0].tags[347].value
        sources, photometric, size = segment_bytes(CMU_SMALL, 0)[::7], 2, 240
    else:
        options: dict[str, object] = {"quality": 91, "subsampling": 2}
        if kind.startswith("ycbcr"):
            options["subsampling"] = {"4:2:0": 2, "4:2:2": 1, "4:4:4": 0}[kind[-5:]]
        elif kind == "optimised":
            options["optimize"] = True
        else:
            options["quality"] = int(kind[1:])
        crops = [np.ascontiguousarray(np.rot90(tissue, k)) for k in range(4)]
        sources = [encode_pillow(c, **options) for c in crops]
        tables, photometric, size = None, 6, 256
    fast, pillow = _reencoders(tables, photometric)
    assert fast._ijg_encoder(fast.settings_for(sources[0])) is not None
    for source in sources:
        pixels = fast.decode(source, size, size)
        layout = fast.decoded_layout
        expected = pillow.encode(pixels, layout, source)
        assert fast.encode(pixels, layout, source) == expected
        rgb = rgb_from_layout(pixels, layout)
        for other, arranged in all_layouts(rgb).items():
            assert fast.encode(arranged, other, source) == expected, other
            assert pillow.encode(arranged, other, source) == expected, other


def test_tables_that_are_not_ijg_tables_go_through_pillow(tissue: np.ndarray) -> None:
    """One entry off the IJG table, or a restart interval: Pillow keeps the source's tables."""
    from svsicc.codecs.ijg import ijg_table

    luminance, chrominance = list(ijg_table(False, 85)), list(ijg_table(True, 85))
    luminance[63] += 1
    near = encode_pillow(tissue, qtables=[luminance, chrominance], subsampling=2)
    restart = encode_pillow(tissue, quality=85, restart_marker_blocks=4)
    for source in (near, restart):
        fast, pillow = _reencoders(None, 6)
        assert fast._ijg_encoder(fast.settings_for(source)) is None
        pixels = fast.decode(source, 256, 256)
        again = fast.encode(pixels, "BGRX", source)
        assert again == pillow.encode(pixels, "BGRX", source)
        dqt = [s.payload for s in split_header(again)[0] if s.marker == 0xDB]
        assert dqt == [s.payload for s in split_header(source)[0] if s.marker == 0xDB]
    quality_85 = encode_pillow(tissue, quality=85, subsampling=2)
    assert JpegCodec(None, 6)._ijg_encoder(JpegCodec(None, 6).settings_for(quality_85)) is not None


@pytest.mark.parametrize("quality", [50, 90])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_the_annex_k_tables_are_what_libjpeg_writes(quality: int, subsampling: int) -> None:
    """svsicc's standard Huffman tables (constants) equal those Pillow's libjpeg writes when
    not optimising, whatever the quality and sampling."""
    from svsicc.codecs import jpeg_stream

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 80, 120)).save(
        buf, "JPEG", quality=quality, subsampling=subsampling
    )
    segments, _ = jpeg_stream.split_header(buf.getvalue())
    written = jpeg_stream.TableSet.from_segments(segments).huffman
    assert written == jpeg_stream.standard_huffman_tables()
