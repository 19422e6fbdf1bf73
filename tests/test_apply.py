"""svsicc apply on real slides and on synthetic AT2 / GT450 / BigTIFF / LZW layouts.

Colour is judged on what OpenSlide returns, against LittleCMS applied to what OpenSlide returns
for the original; layout is judged on the raw bytes of both files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

import svsicc
from svsicc.colour.transform import IccProfile, Intent, default_target, reference_transform
from svsicc.convert.engine import BadSegment, ResultRings, WorkerPool
from tests.synthetic import load_real_pixels, preset, write_slide

from .conftest import (
    CMU_EMBED,
    CMU_SMALL,
    OPENSLIDE_SMALL,
    SCANSCOPE,
    TCGA,
    mean_abs,
    openslide_levels,
    openslide_thumbnail,
    psnr,
    sha256,
)
from .conftest import segment_bytes as segments

SOURCE = IccProfile.from_file(SCANSCOPE)
TARGET = default_target()


# -- helpers that read the files independently of svsicc --------------------------------------


def jpeg_markers(stream: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of the segments before the scan."""
    out = []
    pos = 2
    while pos < len(stream):
        marker = stream[pos + 1]
        if marker == 0xD9:
            break
        (length,) = struct.unpack(">H", stream[pos + 2 : pos + 4])
        out.append((marker, stream[pos + 4 : pos + 2 + length]))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def sof_components(stream: bytes) -> list[tuple[int, int, int]]:
    (payload,) = [p for m, p in jpeg_markers(stream) if m == 0xC0]
    return [(payload[6 + 3 * i], payload[7 + 3 * i], payload[8 + 3 * i]) for i in range(payload[5])]


def tags(path: Path, page: int) -> dict[int, object]:
    with tifffile.TiffFile(path) as tif:
        return {t.code: t.value for t in tif.pages[page].tags}


CHANGED_TAGS = {270, 273, 279, 324, 325, 34675}


@dataclass(frozen=True)
class Bar:
    psnr: float
    mean: float


# The bars: RGB-colourspace JPEG at quality >= 70, and everything with a colour conversion
# or subsampling in the codec (YCbCr) or coarse tables (quality < 70).
RGB_HIGH_QUALITY = Bar(42.0, 1.1)
SUBSAMPLED_OR_LOW_QUALITY = Bar(40.0, 1.6)
YCBCR = SUBSAMPLED_OR_LOW_QUALITY


def assert_colour(original: Path, output: Path, bar: Bar, source: IccProfile = SOURCE) -> list:
    figures = []
    before = openslide_levels(original)
    after = openslide_levels(output)
    assert len(before) == len(after)
    for level, (a, b) in enumerate(zip(before, after, strict=True)):
        expected = reference_transform(a, source, TARGET, source.default_intent)
        p, m = psnr(b, expected), mean_abs(b, expected)
        figures.append((level, round(p, 2), round(m, 3)))
        assert p >= bar.psnr and m <= bar.mean, (output.name, level, p, m)
    thumb_expected = reference_transform(
        openslide_thumbnail(original), source, TARGET, source.default_intent
    )
    thumb = openslide_thumbnail(output)
    assert psnr(thumb, thumb_expected) >= bar.psnr - 2
    return figures


def assert_ijg_encoded(src: Path) -> None:
    """Level 0 of ``src`` is re-encoded through imagecodecs (IJG tables), so the OpenSlide
    decoding checked by the test covers that encoder, not only Pillow's."""
    from svsicc.codecs.jpeg import JpegCodec
    from svsicc.drivers import read_slide
    from svsicc.tiff import file as tiff

    with tiff.TiffReader(src) as reader:
        page = read_slide(reader).pages[0]
        tile = reader.read(page.offsets[0], page.byte_counts[0])
    codec = JpegCodec(page.jpeg_tables, page.photometric)
    assert codec._ijg_encoder(codec.settings_for(tile)) is not None


# -- real slides ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cmu_applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, svsicc.ApplyResult]:
    out = tmp_path_factory.mktemp("cmu") / "cmu_srgb.svs"
    before = sha256(CMU_SMALL)
    result = svsicc.apply(CMU_SMALL, out, profile=SCANSCOPE, workers=1)
    assert sha256(CMU_SMALL) == before
    return out, result


def test_cmu_small_region_colour_matches_littlecms(
    cmu_applied: tuple[Path, svsicc.ApplyResult],
) -> None:
    out, result = cmu_applied
    # Aperio Q=30 RGB JPEG: a low-quality source.
    figures = assert_colour(CMU_SMALL, out, SUBSAMPLED_OR_LOW_QUALITY)
    assert_ijg_encoded(CMU_SMALL)
    print("CMU-1-Small-Region", figures, "size ratio", round(result.size_ratio, 4))
    assert result.profile.description == "ScanScope v1"
    assert result.intent is Intent.PERCEPTUAL
    assert [p.index for p in result.pages] == [0, 1]  # level 0 and thumbnail, not label/macro
    assert result.segments_rewritten == 130 + 48


def test_cmu_layout_is_preserved(cmu_applied: tuple[Path, svsicc.ApplyResult]) -> None:
    out, _ = cmu_applied
    assert abs(out.stat().st_size / CMU_SMALL.stat().st_size - 1) < 0.03
    for page in (0, 1):
        t_in, t_out = tags(CMU_SMALL, page), tags(out, page)
        assert t_out[347] == t_in[347]  # JPEGTables byte-identical
        assert {k: v for k, v in t_in.items() if k not in CHANGED_TAGS} == {
            k: v for k, v in t_out.items() if k not in CHANGED_TAGS
        }
        for old, new in zip(segments(CMU_SMALL, page), segments(out, page), strict=True):
            markers = [m for m, _ in jpeg_markers(new)]
            # Abbreviated RGB stream, exactly like the source: no tables, no JFIF, no Adobe.
            assert markers == [m for m, _ in jpeg_markers(old)] == [0xC0, 0xDA]
            assert (
                sof_components(new)
                == sof_components(old)
                == [(0, 0x11, 0), (1, 0x11, 0), (2, 0x11, 0)]
            )
            assert abs(len(new) - len(old)) < 0.25 * len(old) + 64
    # Label and macro: another camera, byte-identical.
    for page in (2, 3):
        assert segments(out, page) == segments(CMU_SMALL, page)
        assert tags(out, page) == tags(CMU_SMALL, page)


def test_cmu_is_marked(cmu_applied: tuple[Path, svsicc.ApplyResult]) -> None:
    out, _ = cmu_applied
    with openslide.OpenSlide(str(out)) as slide:
        props = slide.properties
        assert props["aperio.ICC Profile Applied"] == "ScanScope v1"
        assert props["aperio.ICC Profile Applied SHA256"] == SOURCE.sha256
        assert props["aperio.ICC Profile Applied Intent"] == "perceptual"
        assert props["aperio.ICC Profile Applied Target"] == "sRGB"
        assert props["aperio.ICC Profile Applied By"] == f"svsicc {svsicc.__version__}"
        assert props["aperio.ICC Profile"] == "sRGB"
        # The source had no tag 34675: the copy now says its pixels are sRGB.
        assert int(props["openslide.icc-size"]) == len(TARGET.data)
        assert slide.color_profile is not None
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].tags[34675].value == TARGET.data
        assert tif.pages[0].description.startswith("Aperio Image Library v11.2.1")


def test_workers_give_identical_bytes(
    tmp_path: Path, cmu_applied: tuple[Path, svsicc.ApplyResult]
) -> None:
    out, _ = cmu_applied
    parallel = tmp_path / "parallel.svs"
    svsicc.apply(CMU_SMALL, parallel, profile=SCANSCOPE, workers=2)
    assert parallel.read_bytes() == out.read_bytes()


def test_results_come_back_through_the_result_rings(
    tmp_path: Path, cmu_applied: tuple[Path, svsicc.ApplyResult]
) -> None:
    out, _ = cmu_applied
    with WorkerPool(2) as pool:
        svsicc.apply(CMU_SMALL, tmp_path / "ring.svs", profile=SCANSCOPE, pool=pool)
        assert pool.rings is not None and pool.rings.batches_received > 0
        assert [pool.rings.unread(ring) for ring in range(2)] == [0, 0]
    assert (tmp_path / "ring.svs").read_bytes() == out.read_bytes()


def test_batches_larger_than_a_ring_travel_pickled(
    tmp_path: Path, cmu_applied: tuple[Path, svsicc.ApplyResult]
) -> None:
    out, _ = cmu_applied
    with WorkerPool(2, ring_bytes=4096) as pool:  # smaller than any batch of tiles
        svsicc.apply(CMU_SMALL, tmp_path / "pickled.svs", profile=SCANSCOPE, pool=pool)
        assert pool.rings is not None and pool.rings.batches_received == 0
    assert (tmp_path / "pickled.svs").read_bytes() == out.read_bytes()


def test_result_ring_arithmetic() -> None:
    """A batch never spans the ring's end, never overwrites unread bytes, and never waits."""
    rings = ResultRings(1, capacity=100)
    assert rings.claim() == 0 and rings.claim() is None  # one ring per worker
    bad = BadSegment(0, 1, "corrupt")
    first = rings.put(0, [b"x" * 40, bad, b"y" * 30])
    assert first is not None and (first.start, first.size, first.items) == (0, 70, (40, bad, 30))
    # 40 more bytes would cross the end: they would start over at 100, on unread bytes.
    assert rings.put(0, [b"z" * 40]) is None
    assert [bytes(s) if isinstance(s, memoryview) else s for s in rings.segments(first)] == [
        b"x" * 40, bad, b"y" * 30,
    ]  # fmt: skip
    rings.consume(first)
    assert rings.unread(0) == 0
    second = rings.put(0, [b"z" * 40])
    assert second is not None and second.start == 100  # the skipped 30 bytes count as used
    assert rings.unread(0) == 70
    assert rings.put(0, [b"w" * 101]) is None  # larger than the ring: travels pickled
    views = list(rings.segments(second))
    assert [bytes(v) for v in views if isinstance(v, memoryview)] == [b"z" * 40]
    assert rings.batches_received == 2
    rings.close()  # while a view is still held
    rings.consume(second)  # after close: nothing to give back, no error


class _StopAfter(Exception):
    pass


def test_an_apply_stopped_midway_gives_the_ring_space_back(
    tmp_path: Path, cmu_applied: tuple[Path, svsicc.ApplyResult]
) -> None:
    """A kept pool (migrate's) must not lose ring space to a slide that failed halfway."""
    out, _ = cmu_applied

    def stop_after_ten(done: int, total: int) -> None:
        if done == 10:
            raise _StopAfter

    with WorkerPool(2) as pool:
        with pytest.raises(_StopAfter):
            svsicc.apply(
                CMU_SMALL, tmp_path / "stopped.svs", profile=SCANSCOPE, pool=pool,
                progress=stop_after_ten,
            )  # fmt: skip
        assert pool.rings is not None
        assert [pool.rings.unread(ring) for ring in range(2)] == [0, 0]
        received = pool.rings.batches_received
        svsicc.apply(CMU_SMALL, tmp_path / "next.svs", profile=SCANSCOPE, pool=pool)
        assert pool.rings.batches_received > received
        assert [pool.rings.unread(ring) for ring in range(2)] == [0, 0]
    assert not (tmp_path / "stopped.svs").exists()
    assert (tmp_path / "next.svs").read_bytes() == out.read_bytes()


def test_uncompressed_embedded_profile_is_exact(tmp_path: Path) -> None:
    out = tmp_path / "embed.tif"
    result = svsicc.apply(CMU_EMBED, out, workers=1)
    assert result.profile_origin == "embedded (IFD 0)"
    assert result.profile.description == "ScanScope v1"
    original = tifffile.imread(CMU_EMBED)
    converted = tifffile.imread(out)
    # Lossless: the stored pixels are exactly the LittleCMS transform's output.
    assert np.array_equal(
        converted, reference_transform(original, SOURCE, TARGET, Intent.PERCEPTUAL)
    )
    # OpenSlide opens it and reports the new profile. (OpenSlide 4.0.1's libtiff refuses to read
    # this file's 592x592 uncompressed tile, original included: its byte count is not a multiple
    # of 1 KiB, so pixels are compared through tifffile above.)
    with openslide.OpenSlide(str(out)) as slide:
        assert int(slide.properties["openslide.icc-size"]) == len(TARGET.data)
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].tags[34675].value == TARGET.data


def _ideal_requantisation(target: np.ndarray, qtable: np.ndarray) -> np.ndarray:
    """What an exact float DCT quantised with ``qtable`` and decoded would give: the floor."""
    n = np.arange(8)
    basis = np.sqrt(np.where(n == 0, 1, 2) / 8)[:, None] * np.cos(
        np.pi * (2 * n[None, :] + 1) * n[:, None] / 16
    )
    out = np.empty_like(target, dtype=np.float64)
    for y in range(0, target.shape[0], 8):
        for x in range(0, target.shape[1], 8):
            for c in range(3):
                block = target[y : y + 8, x : x + 8, c].astype(np.float64) - 128
                coefficients = np.rint(basis @ block @ basis.T / qtable) * qtable
                out[y : y + 8, x : x + 8, c] = basis.T @ coefficients @ basis + 128
    return np.clip(np.rint(out), 0, 255)


def test_image_smaller_than_one_tile(tmp_path: Path) -> None:
    out = tmp_path / "small.svs"
    svsicc.apply(OPENSLIDE_SMALL, out, profile=SCANSCOPE, workers=1)
    (before,) = openslide_levels(OPENSLIDE_SMALL)
    (after,) = openslide_levels(out)
    expected = reference_transform(before, SOURCE, TARGET, Intent.PERCEPTUAL)
    # 16x16 pixels of dense tissue at Aperio Q=30: requantising at the source's own tables has a
    # floor here just under the 40 dB bar. Check we reach that floor (an exact float DCT
    # quantised with the same table), and stay close to the bar.
    with tifffile.TiffFile(OPENSLIDE_SMALL) as tif:
        tables = tif.pages[0].tags[347].value
    (dqt,) = [p for m, p in jpeg_markers(tables) if m == 0xDB]
    zigzag = np.array(
        [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34,
         27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37,
         44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63]
    )  # fmt: skip
    qtable = np.empty(64)
    qtable[zigzag] = np.frombuffer(dqt[1:65], np.uint8)
    padded = np.pad(expected, ((0, 0), (0, 0), (0, 0)))
    floor = _ideal_requantisation(padded, qtable.reshape(8, 8))
    assert psnr(after, expected) >= psnr(floor, expected) - 0.1
    assert psnr(after, expected) >= 39.5 and mean_abs(after, expected) <= 2.1
    thumb_expected = reference_transform(
        openslide_thumbnail(OPENSLIDE_SMALL), SOURCE, TARGET, Intent.PERCEPTUAL
    )
    assert psnr(openslide_thumbnail(out), thumb_expected) >= 38


def test_identity_profile_keeps_every_tile(tmp_path: Path) -> None:
    out = tmp_path / "tcga.svs"
    result = svsicc.apply(TCGA, out)
    assert result.identity
    assert result.segments_rewritten == 0
    for page in range(3):
        assert segments(out, page) == segments(TCGA, page)
    with openslide.OpenSlide(str(out)) as slide:
        assert slide.properties["aperio.ICC Profile Applied Mode"] == "identity (pixels unchanged)"
        assert slide.properties["aperio.ICC Profile Applied"] == "sRGB IEC61966-2.1"


def test_intent_option_changes_the_transform(tmp_path: Path) -> None:
    out = tmp_path / "absolute.svs"
    result = svsicc.apply(OPENSLIDE_SMALL, out, profile=SCANSCOPE, intent="absolute", workers=1)
    assert result.intent is Intent.ABSOLUTE
    (after, *_) = openslide_levels(out)
    (before, *_) = openslide_levels(OPENSLIDE_SMALL)
    absolute = reference_transform(before, SOURCE, TARGET, Intent.ABSOLUTE)
    perceptual = reference_transform(before, SOURCE, TARGET, Intent.PERCEPTUAL)
    assert mean_abs(after, absolute) < 3 < mean_abs(after, perceptual)


# -- synthetic scanner layouts from real pixels ---------------------------------------------


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return np.ascontiguousarray(load_real_pixels()[600:1400, 300:1300])


def _build(folder: Path, name: str, crop: np.ndarray, style: str, **changes: object) -> Path:
    return write_slide(folder / name, crop, preset(style, **changes))  # type: ignore[arg-type]


def test_at2_style(tmp_path: Path, crop: np.ndarray, scanscope_bytes: bytes) -> None:
    src = _build(
        tmp_path, "at2.svs", crop, "at2", profile=scanscope_bytes, zero_length_tiles=((0, 3),)
    )
    out = tmp_path / "at2_srgb.svs"
    before = sha256(src)
    result = svsicc.apply(src, out, workers=2)
    assert sha256(src) == before
    assert result.profile_origin == "embedded (IFD 0)"
    figures = assert_colour(src, out, RGB_HIGH_QUALITY)
    assert_ijg_encoded(src)
    print("AT2-style Q70", figures, "size ratio", round(result.size_ratio, 4))
    assert abs(result.size_ratio - 1) < 0.03
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(out) as b:
        for pa, pb in zip(a.pages, b.pages, strict=True):
            if pa.index == 0:
                assert (pb.dataoffsets[3], pb.databytecounts[3]) == (0, 0)  # still empty
                # File order of the tiles (column-major here) is kept.
                assert np.argsort(pa.dataoffsets).tolist() == np.argsort(pb.dataoffsets).tolist()
            has_icc = 34675 in pb.tags
            assert has_icc == (pa.index == 0)
        assert b.pages[0].tags[34675].value == TARGET.data


@pytest.mark.parametrize(
    ("subsampling", "bar"),
    [("4:2:0", YCBCR), ("4:2:2", YCBCR), ("4:4:4", YCBCR)],
)
def test_gt450_style(
    tmp_path: Path, crop: np.ndarray, scanscope_bytes: bytes, subsampling: str, bar: Bar
) -> None:
    src = _build(
        tmp_path, "gt450.svs", crop, "gt450", profile=scanscope_bytes, subsampling=subsampling
    )
    out = tmp_path / "gt450_srgb.svs"
    result = svsicc.apply(src, out, workers=1)
    figures = assert_colour(src, out, bar)
    assert_ijg_encoded(src)
    print(f"GT450-style {subsampling} Q91", figures, "size ratio", round(result.size_ratio, 4))
    assert abs(result.size_ratio - 1) < 0.05
    levels = [p.index for p in result.pages if p.role == "level"]
    for page in levels:
        for old, new in zip(segments(src, page), segments(out, page), strict=True):
            old_markers, new_markers = jpeg_markers(old), jpeg_markers(new)
            # Self-contained JFIF YCbCr, same markers, sampling and quantisation tables.
            assert [m for m, _ in new_markers] == [m for m, _ in old_markers]
            assert new_markers[0] == old_markers[0] and new_markers[0][1][:5] == b"JFIF\x00"
            assert sof_components(new) == sof_components(old)
            assert [p for m, p in new_markers if m == 0xDB] == [
                p for m, p in old_markers if m == 0xDB
            ]
    with tifffile.TiffFile(out) as tif:
        for page in tif.pages:
            carries = 34675 in page.tags
            assert carries == (page.subfiletype not in (1, 9))
            if carries:
                assert page.tags[34675].value == TARGET.data


def test_bigtiff_in_bigtiff_out(tmp_path: Path, crop: np.ndarray, scanscope_bytes: bytes) -> None:
    src = _build(tmp_path, "big.svs", crop, "at2", profile=scanscope_bytes, bigtiff=True)
    out = tmp_path / "big_srgb.svs"
    svsicc.apply(src, out, workers=1)
    assert out.read_bytes()[:4] == b"II+\x00"
    assert_colour(src, out, RGB_HIGH_QUALITY)


def test_lzw_is_lossless(tmp_path: Path, crop: np.ndarray, scanscope_bytes: bytes) -> None:
    src = _build(tmp_path, "lzw.svs", crop, "lzw", profile=scanscope_bytes)
    out = tmp_path / "lzw_srgb.svs"
    svsicc.apply(src, out, workers=1)
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(out) as b:
        for pa, pb in zip(a.pages, b.pages, strict=True):
            if pa.is_tiled:
                expected = reference_transform(pa.asarray(), SOURCE, TARGET, Intent.PERCEPTUAL)
                assert np.array_equal(pb.asarray(), expected)
    before, after = openslide_levels(src), openslide_levels(out)
    for a_level, b_level in zip(before, after, strict=True):
        assert np.array_equal(
            b_level, reference_transform(a_level, SOURCE, TARGET, Intent.PERCEPTUAL)
        )


def test_include_associated_converts_label_and_macro(tmp_path: Path) -> None:
    out = tmp_path / "all.svs"
    result = svsicc.apply(CMU_SMALL, out, profile=SCANSCOPE, include_associated=True, workers=1)
    assert [p.role for p in result.pages] == ["level", "thumbnail", "label", "macro"]
    label_before = tifffile.imread(CMU_SMALL, key=2)
    label_after = tifffile.imread(out, key=2)
    assert np.array_equal(
        label_after, reference_transform(label_before, SOURCE, TARGET, Intent.PERCEPTUAL)
    )


def test_pool_batches_taper_at_the_tail() -> None:
    """Every task once, in order; the last size * workers tasks go in quarter batches."""
    from svsicc.convert.engine import SegmentTask, tapered

    tasks = [SegmentTask(0, i, 1000 + i, 10, 256, 256) for i in range(203)]
    batches = list(tapered(tasks, 32, 2))
    assert [t for batch in batches for t in batch] == tasks
    sizes = [len(b) for b in batches]
    assert sizes == [32, 32, 32, 32, 11] + [8] * 8
    assert [len(b) for b in tapered(tasks[:20], 32, 2)] == [8, 8, 4]
