"""Hostile and huge inputs (issue 7): nothing lost, nothing hangs.

Every broken file here is built from real bytes (tests/data or a synthetic slide made of real
pixels) by changing the few bytes that make it broken, found through svsicc's own parser. Each
must give one clear line naming the file (and IFD / tile), exit code 2, no file left beside the
output, and an input that is byte for byte what it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile

import svsicc
from svsicc.colour.transform import IccProfile, default_target, reference_transform
from svsicc.drivers import read_slide
from svsicc.exceptions import OutputError, TiffFormatError, UnsupportedLayoutError
from svsicc.tiff import file as tiff
from svsicc.tiff import output as output_module
from svsicc.tiff.output import TEMP_SUFFIX, TempOutput, bigtiff_twin, temp_name
from tests.synthetic import load_real_pixels, mosaic, preset, write_slide

from .conftest import CMU_SMALL, SCANSCOPE, assert_one_line_error, sha256
from .conftest import run_cli as run

GiB = 2**30


# -- helpers -------------------------------------------------------------------------------------


def entry(path: Path, ifd: int, tag: int) -> tiff.TiffEntry:
    with tiff.TiffReader(path) as reader:
        return reader.structure.ifds[ifd].entries[tag]


def ifds(path: Path) -> tuple[tiff.TiffIfd, ...]:
    with tiff.TiffReader(path) as reader:
        return reader.structure.ifds


def values(path: Path, ifd: int, tag: int) -> tuple[int, ...]:
    with tiff.TiffReader(path) as reader:
        found = reader.ints(reader.structure.ifds[ifd], tag)
    assert found is not None
    return found


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def set_entry(path: Path, ifd: int, tag: int, *, count: int | None = None,
              field: int | None = None, type_: int | None = None) -> None:  # fmt: skip
    """Change an entry of a classic little-endian TIFF: its type, count or value/offset field."""
    e = entry(path, ifd, tag)
    if type_ is not None:
        poke(path, e.entry_offset + 2, struct.pack("<H", type_))
    if count is not None:
        poke(path, e.entry_offset + 4, struct.pack("<I", count))
    if field is not None:
        poke(path, e.entry_offset + 8, struct.pack("<I", field))


def set_value(path: Path, ifd: int, tag: int, index: int, value: int) -> None:
    """Change one LONG of an out-of-line array (offsets, byte counts)."""
    e = entry(path, ifd, tag)
    assert e.type == tiff.TYPE_LONG and not e.inline
    poke(path, e.value_offset + 4 * index, struct.pack("<I", value))


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def tile_bytes(path: Path, page: int, index: int) -> bytes:
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        fh = tif.filehandle
        fh.seek(p.dataoffsets[index])
        return bytes(fh.read(p.databytecounts[index]))


# -- fixtures ------------------------------------------------------------------------------------

SCANSCOPE_BYTES = SCANSCOPE.read_bytes()


@pytest.fixture(scope="module")
def real_crop() -> np.ndarray:
    return np.ascontiguousarray(load_real_pixels()[1000:1720, 600:1560])


@pytest.fixture(scope="module")
def at2_slide(tmp_path_factory: pytest.TempPathFactory, real_crop: np.ndarray) -> Path:
    """A small AT2-style slide (abbreviated RGB JPEG tiles, JPEGTables, ScanScope profile)."""
    path = tmp_path_factory.mktemp("at2") / "at2.svs"
    spec = preset("at2", profile=SCANSCOPE_BYTES, downsamples=(1, 4), with_macro=False)
    return write_slide(path, real_crop[:480, :720], spec)


@pytest.fixture
def broken(tmp_path: Path, at2_slide: Path) -> Path:
    """A private copy of the AT2 slide, in its own folder, to break."""
    folder = tmp_path / "in"
    folder.mkdir()
    return Path(shutil.copyfile(at2_slide, folder / "broken.svs"))


def expect_clean_failure(
    capsys: pytest.CaptureFixture[str], source: Path, *needles: str, code: int = 2
) -> str:
    """apply through the CLI: one line, exit ``code``, no output, input unchanged, fast."""
    before = sha256(source)
    out_dir = source.parent.parent / "out"
    out_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    got, _, err = run(capsys, "apply", source, out_dir / "o.svs", "--workers", "1", "--quiet")
    assert time.monotonic() - started < 20, "a broken file must fail fast, not hang"
    line = assert_one_line_error(err, source.name, *needles)
    assert got == code
    assert listing(out_dir) == []
    assert sha256(source) == before
    return line


# -- parser hardening ----------------------------------------------------------------------------


def test_ifd_chain_that_loops_is_refused(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = ifds(broken)
    poke(broken, chain[-1].next_pointer_offset, struct.pack("<I", chain[1].offset))
    expect_clean_failure(capsys, broken, "IFD chain loops back")


def test_ifd_pointing_at_itself_is_refused(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = ifds(broken)[0]
    poke(broken, first.next_pointer_offset, struct.pack("<I", first.offset))
    expect_clean_failure(capsys, broken, "loops back")


def test_ifd_past_the_end_is_refused(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    poke(broken, 4, struct.pack("<I", broken.stat().st_size + 1000))
    expect_clean_failure(capsys, broken, "IFD 0", "past the end of the file")


def test_ifd_inside_the_header_is_refused(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    poke(broken, 4, struct.pack("<I", 2))
    expect_clean_failure(capsys, broken, "points into the file header")


def crafted_chain(path: Path, n_ifds: int, entries: int, step: int) -> None:
    """A classic TIFF of ``n_ifds`` IFDs of ``entries`` entries of an unknown type (legal, and
    skipped by readers), the IFDs ``step`` bytes apart, each pointing at the next."""
    size = 2 + 12 * entries + 4
    data = bytearray(b"II*\x00" + struct.pack("<I", 8))
    data += bytes(8 + step * (n_ifds - 1) + size - len(data))
    for k in range(n_ifds):
        at = 8 + step * k
        table = struct.pack("<H", entries) + struct.pack("<HHII", 40000, 99, 1, 0) * entries
        following = 8 + step * (k + 1) if k + 1 < n_ifds else 0
        data[at : at + size] = table + struct.pack("<I", following)
    path.write_bytes(bytes(data))


def test_ifds_laid_over_each_other_are_refused(tmp_path: Path) -> None:
    """IFD 1 inside IFD 0 (no loop): a chain of such IFDs, each a few bytes on, would make the
    parser read the same bytes thousands of times."""
    path = tmp_path / "overlaid.tif"
    data = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 3))
    # IFD 0 at 8: entries at 10, 22, 34, next pointer at 46 -> 20. IFD 1 at 20 reads its count
    # from the top of entry 0's value (1), its entry is IFD 0's entry 1, and its next pointer
    # is entry 2's tag and type (0).
    data += struct.pack("<HHII", 40000, 99, 1, 0x00010000)
    data += struct.pack("<HHII", 40001, 99, 1, 0)
    data += struct.pack("<HHII", 0, 0, 1, 0)
    data += struct.pack("<I", 20)
    path.write_bytes(bytes(data))
    with pytest.raises(TiffFormatError, match="IFD 1 at offset 20 overlaps IFD 0"):
        tiff.TiffReader(path)


def test_too_many_entries_in_all_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.tif"
    crafted_chain(path, n_ifds=30, entries=4096, step=2 + 12 * 4096 + 4)
    started = time.monotonic()
    with pytest.raises(TiffFormatError, match="more than 100000 IFD entries in all"):
        tiff.TiffReader(path)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.97])
def test_truncated_file_is_refused(
    broken: Path, capsys: pytest.CaptureFixture[str], keep: float
) -> None:
    data = broken.read_bytes()
    broken.write_bytes(data[: int(len(data) * keep)])
    expect_clean_failure(capsys, broken, "past the end of the file")


def test_tag_value_past_the_end_is_refused(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_entry(broken, 0, tiff.TAG_ICC_PROFILE, field=broken.stat().st_size - 10)
    expect_clean_failure(capsys, broken, "IFD 0", "tag 34675", "past the end of the file")


def test_tile_past_the_end_names_ifd_and_tile(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_value(broken, 0, tiff.TAG_TILE_BYTE_COUNTS, 4, broken.stat().st_size)
    expect_clean_failure(capsys, broken, "IFD 0", "tile 4", "past the end of the file")


def test_huge_count_is_refused_before_allocating(broken: Path) -> None:
    """A count claiming 2 GiB must fail at parse time with a few KB allocated, not read."""
    set_entry(broken, 0, tiff.TAG_ICC_PROFILE, count=2**31 - 1)
    tracemalloc.start()
    try:
        with pytest.raises(TiffFormatError) as caught:
            tiff.TiffReader(broken).close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "tag 34675 claims" in caught.value.one_line()
    assert caught.value.ifd == 0
    assert peak < 1 << 20


def test_huge_count_inside_a_sparse_file_is_refused(broken: Path) -> None:
    """In a big (sparse) file the value fits, so only the per-tag limit stops the read."""
    size = broken.stat().st_size
    os.truncate(broken, 600 * 2**20)  # holes: no disk used
    set_entry(broken, 0, tiff.TAG_JPEG_TABLES, count=400 * 2**20, field=size)
    tracemalloc.start()
    try:
        with tiff.TiffReader(broken) as reader, pytest.raises(TiffFormatError) as caught:
            read_slide(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "tag 347 claims 419430400 bytes" in caught.value.one_line()
    assert peak < 4 << 20


def test_scalar_tag_with_huge_count_reads_one_value(broken: Path) -> None:
    """ImageWidth claiming a million values (inside the file) reads only the first."""
    width = entry(broken, 0, tiff.TAG_IMAGE_WIDTH)
    tables = entry(broken, 0, tiff.TAG_JPEG_TABLES)
    poke(broken, tables.value_offset, struct.pack("<I", 720))
    os.truncate(broken, 64 * 2**20)
    set_entry(broken, 0, tiff.TAG_IMAGE_WIDTH, count=10**6, field=tables.value_offset)
    with tiff.TiffReader(broken) as reader:
        page0 = reader.structure.ifds[0]
        assert reader.int_value(page0, tiff.TAG_IMAGE_WIDTH) == 720
        assert page0.entries[tiff.TAG_IMAGE_WIDTH].entry_offset == width.entry_offset
        with pytest.raises(TiffFormatError, match="at most 64"):
            reader.ints(page0, tiff.TAG_IMAGE_WIDTH, max_count=64)


def test_geometry_needing_millions_of_tiles_is_refused(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_entry(broken, 0, tiff.TAG_IMAGE_WIDTH, field=2**31)
    set_entry(broken, 0, tiff.TAG_IMAGE_LENGTH, field=2**31)
    line = expect_clean_failure(capsys, broken, "IFD 0", "segments")
    assert "needs" in line


def test_giant_tiles_are_refused(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_entry(broken, 0, tiff.TAG_TILE_WIDTH, field=65536)
    set_entry(broken, 0, tiff.TAG_TILE_LENGTH, field=65536)
    expect_clean_failure(capsys, broken, "IFD 0", "tiles of 65536x65536 pixels")


def test_byte_count_larger_than_any_tile_is_refused(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 240x240 RGB tile needs 173 kB raw; 4 MB is beyond any codec's worst case.
    os.truncate(broken, 8 * 2**20)  # sparse: the bogus count stays inside the file
    set_value(broken, 0, tiff.TAG_TILE_BYTE_COUNTS, 2, 4 * 2**20)
    expect_clean_failure(capsys, broken, "IFD 0", "tile 2", "byte count is corrupt")


def test_tile_count_not_matching_geometry_is_refused(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_entry(broken, 0, tiff.TAG_TILE_WIDTH, field=480)
    expect_clean_failure(capsys, broken, "IFD 0", "(expected 4)")


def test_overlapping_tiles_are_refused(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    offsets = values(broken, 0, tiff.TAG_TILE_OFFSETS)
    set_value(broken, 0, tiff.TAG_TILE_OFFSETS, 3, offsets[2] + 7)
    line = expect_clean_failure(capsys, broken, "IFD 0", "overlaps")
    assert "tile 2" in line or "tile 3" in line


def test_tile_overlapping_an_ifd_is_refused(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_value(broken, 0, tiff.TAG_TILE_OFFSETS, 1, ifds(broken)[1].offset)
    expect_clean_failure(capsys, broken, "IFD 0", "tile 1", "overlaps the table of IFD 1")


def test_shared_identical_tiles_are_allowed(broken: Path, tmp_path: Path) -> None:
    """Scanners point blank tiles at one copy: identical extents are not an overlap."""
    offsets = values(broken, 0, tiff.TAG_TILE_OFFSETS)
    counts = values(broken, 0, tiff.TAG_TILE_BYTE_COUNTS)
    set_value(broken, 0, tiff.TAG_TILE_OFFSETS, 5, offsets[0])
    set_value(broken, 0, tiff.TAG_TILE_BYTE_COUNTS, 5, counts[0])
    result = svsicc.apply(broken, tmp_path / "o.svs", workers=1)
    with tifffile.TiffFile(tmp_path / "o.svs") as tif:
        page = tif.pages[0]
        assert page.dataoffsets[5] == page.dataoffsets[0]
        page.asarray()
    assert result.pages[0].rewritten == len(offsets)


@pytest.mark.parametrize("cut", [3, 60, 150, 288])
def test_truncated_jpeg_tables_are_refused(
    broken: Path, capsys: pytest.CaptureFixture[str], cut: int
) -> None:
    assert entry(broken, 0, tiff.TAG_JPEG_TABLES).count == 289
    set_entry(broken, 0, tiff.TAG_JPEG_TABLES, count=cut)
    expect_clean_failure(capsys, broken, "IFD 0", "JPEGTables (tag 347)")


def test_garbage_jpeg_tables_are_refused(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = entry(broken, 0, tiff.TAG_JPEG_TABLES)
    poke(broken, tables.value_offset + 2, bytes(range(40)))
    expect_clean_failure(capsys, broken, "IFD 0", "JPEGTables (tag 347)")


def test_garbage_profile_tag_is_a_profile_error(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    icc = entry(broken, 0, tiff.TAG_ICC_PROFILE)
    rng = np.random.default_rng(7)
    poke(broken, icc.value_offset, rng.integers(0, 256, icc.count, dtype=np.uint8).tobytes())
    expect_clean_failure(capsys, broken, "IFD 0 tag 34675", "ICC profile")


def test_short_profile_tag_is_a_profile_error(
    broken: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_entry(broken, 0, tiff.TAG_ICC_PROFILE, count=200)
    expect_clean_failure(capsys, broken, "IFD 0 tag 34675", "truncated")


def test_garbage_profile_is_ignored_when_one_is_given(
    broken: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    icc = entry(broken, 0, tiff.TAG_ICC_PROFILE)
    poke(broken, icc.value_offset, b"\x00" * 200)
    code, _, err = run(
        capsys, "apply", broken, tmp_path / "o.svs", "--profile", SCANSCOPE, "--quiet"
    )
    assert (code, err) == (0, "")
    with tifffile.TiffFile(tmp_path / "o.svs") as tif:
        assert tif.pages[0].asarray().shape == (480, 720, 3)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "too short"),
        (b"GIF89a" + bytes(100), "no II/MM"),
        (b"II*\x00" + bytes(4), "the TIFF has no IFD"),
        (b"II+\x00\x08\x00\x00\x00\x10" + bytes(7) + struct.pack("<Q", 2**40), "claims"),
        (b"II*\x00\x08\x00\x00\x00\xff\xff" + bytes(12), "claims 65535 entries"),
    ],
)
def test_not_a_slide_at_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, needle: str
) -> None:
    source = tmp_path / "in" / "junk.svs"
    source.parent.mkdir()
    source.write_bytes(content)
    expect_clean_failure(capsys, source, needle)


def raw_entries(path: Path, ifd: int) -> list[tuple[int, int, int]]:
    """(tag, type, count) of every entry of a classic little-endian IFD, as stored."""
    offset = ifds(path)[ifd].offset
    data = path.read_bytes()
    (n,) = struct.unpack_from("<H", data, offset)
    return [struct.unpack_from("<HHI", data, offset + 2 + 12 * i) for i in range(n)]


def test_unknown_entry_types_survive_relocation(broken: Path, tmp_path: Path) -> None:
    """An entry of unknown type is legal; adding tag 34675 to IFD 0 must carry it along."""
    # With its type unknown, the profile entry is invisible: apply adds a new one, which
    # rewrites IFD 0 at the end of the file.
    set_entry(broken, 0, tiff.TAG_ICC_PROFILE, type_=99)
    with tiff.TiffReader(broken) as reader:
        page0 = reader.structure.ifds[0]
        assert tiff.TAG_ICC_PROFILE not in page0.entries
        assert page0.entry_count == len(page0.entries) + 1
    before = raw_entries(broken, 0)
    svsicc.apply(broken, tmp_path / "o.svs", profile=SCANSCOPE, workers=1)
    after = raw_entries(tmp_path / "o.svs", 0)
    new = (tiff.TAG_ICC_PROFILE, tiff.TYPE_UNDEFINED, len(default_target().data))
    assert [(t, ty) for t, ty, _ in after] == sorted(
        [(t, ty) for t, ty, _ in before] + [new[:2]], key=lambda e: e[0]
    )
    assert new in after and (tiff.TAG_ICC_PROFILE, 99, len(SCANSCOPE_BYTES)) in after
    with tiff.TiffReader(tmp_path / "o.svs") as reader:
        icc = reader.raw_value(reader.structure.ifds[0], tiff.TAG_ICC_PROFILE)
    assert icc == default_target().data


# -- corrupt tiles -------------------------------------------------------------------------------

TileCorruption = Callable[[bytearray], None]


def break_sof_marker(tile: bytearray) -> None:
    sof = tile.find(b"\xff\xc0")
    tile[sof + 1] = 0xC8  # JPG extension: no frame header svsicc (or libjpeg) decodes


def break_scan_component(tile: bytearray) -> None:
    sos = tile.find(b"\xff\xda")
    tile[sos + 5] = 9  # component 9 is not in the frame


def break_huffman_selector(tile: bytearray) -> None:
    sos = tile.find(b"\xff\xda")
    tile[sos + 6] = 0x33  # DC/AC table 3: never defined


def cmu_copy(tmp_path: Path, tile: int, corrupt: TileCorruption) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    path = Path(shutil.copyfile(CMU_SMALL, folder / "cmu.svs"))
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[tile], tif.pages[0].databytecounts[tile]
    data = bytearray(path.read_bytes())
    segment = data[offset : offset + count]
    corrupt(segment)
    assert len(segment) == count
    data[offset : offset + count] = segment
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "corrupt", [break_sof_marker, break_scan_component, break_huffman_selector]
)
def test_undecodable_tile_fails_the_slide_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], corrupt: TileCorruption
) -> None:
    source = cmu_copy(tmp_path, 11, corrupt)
    before = sha256(source)
    out = tmp_path / "out" / "o.svs"
    out.parent.mkdir()
    code, _, err = run(capsys, "apply", source, out, "--profile", SCANSCOPE, "--workers", "1")
    assert code == 2
    assert_one_line_error(err, "cmu.svs", "IFD 0", "tile 11", "cannot decode")
    assert listing(out.parent) == []
    assert sha256(source) == before


@pytest.mark.parametrize("workers", ["1", "2"])
def test_undecodable_tile_is_kept_with_on_bad_tile_keep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    source = cmu_copy(tmp_path, 11, break_sof_marker)
    before = sha256(source)
    out = tmp_path / "out" / "o.svs"
    out.parent.mkdir()
    code, stdout, err = run(
        capsys, "apply", source, out, "--profile", SCANSCOPE, "--on-bad-tile", "keep",
        "--workers", workers,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "kept undecodable IFD 0 tile 11" in stdout
    assert listing(out.parent) == ["o.svs"]
    assert sha256(source) == before
    assert tile_bytes(out, 0, 11) == tile_bytes(source, 0, 11)
    # Every other tile was converted and still decodes.
    with tifffile.TiffFile(out) as tif:
        tables = tif.pages[0].jpegtables
    for index in (10, 12, 50):
        assert tile_bytes(out, 0, index) != tile_bytes(source, 0, index)
        decoded = imagecodecs.jpeg8_decode(
            tile_bytes(out, 0, index), tables=tables, colorspace=imagecodecs.JPEG8.CS.RGB
        )
        assert decoded.shape == (240, 240, 3)


def test_keep_bad_tiles_api_lists_them(tmp_path: Path) -> None:
    source = cmu_copy(tmp_path, 11, break_sof_marker)
    data = bytearray(source.read_bytes())
    with tifffile.TiffFile(source) as tif:
        offset, count = tif.pages[0].dataoffsets[40], tif.pages[0].databytecounts[40]
    segment = data[offset : offset + count]
    break_scan_component(segment)
    data[offset : offset + count] = segment
    source.write_bytes(bytes(data))
    result = svsicc.apply(
        source, tmp_path / "o.svs", profile=SCANSCOPE, keep_bad_tiles=True, workers=1
    )
    assert [(b.page, b.segment) for b in result.bad_segments] == [(0, 11), (0, 40)]
    assert "component ID 9" in result.bad_segments[1].reason
    assert result.pages[0].kept_bad == 2
    assert result.pages[0].rewritten == result.pages[0].segments - 2
    assert result.to_dict()["bad_segments"][0]["segment"] == 11


def test_undecodable_gt450_tile_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], real_crop: np.ndarray
) -> None:
    """GT450 tiles are self-contained JFIF streams: break one's quantisation table reference."""
    folder = tmp_path / "in"
    folder.mkdir()
    source = write_slide(
        folder / "gt450.svs", real_crop[:512, :768],
        preset("gt450", profile=SCANSCOPE_BYTES, downsamples=(1,), with_label=False,
               with_macro=False),
    )  # fmt: skip
    with tifffile.TiffFile(source) as tif:
        offset = tif.pages[0].dataoffsets[4]
    data = bytearray(source.read_bytes())
    sof = data.index(b"\xff\xc0", offset)
    data[sof + 12] = 3  # luma uses quantisation table 3, which no DQT defines
    source.write_bytes(bytes(data))
    code, _, err = run(capsys, "apply", source, tmp_path / "o.svs", "--workers", "1")
    assert code == 2
    assert_one_line_error(err, "gt450.svs", "IFD 0", "tile 4")
    code, stdout, err = run(
        capsys, "apply", source, tmp_path / "o.svs", "--on-bad-tile", "keep", "--workers", "1"
    )
    assert (code, err) == (0, "")
    assert "kept undecodable IFD 0 tile 4" in stdout
    assert tile_bytes(tmp_path / "o.svs", 0, 4) == tile_bytes(source, 0, 4)


# -- disk full -----------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` on ``folder``; yields False when mounting is not possible."""
    folder.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_disk_full_gives_one_line_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "cmu.svs"
    shutil.copyfile(CMU_SMALL, source)
    before = sha256(source)
    full = tmp_path / "full"
    with small_tmpfs(full, "1m") as mounted:
        if not mounted:
            # No mount permission: fail the same writes with ENOSPC once 1 MiB is written.
            _inject_enospc(monkeypatch, limit=2**20)
        out = full / "o.svs"
        code, _, err = run(capsys, "apply", source, out, "--profile", SCANSCOPE, "--quiet")
        assert code == 2
        assert_one_line_error(err, "o.svs", "no space left on the device")
        assert listing(full) == []
    assert sha256(source) == before
    assert listing(tmp_path) == ["cmu.svs", "full"]


def _inject_enospc(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    written = 0

    def counting(real: Callable[..., int]) -> Callable[..., int]:
        def wrapper(*args: object) -> int:
            nonlocal written
            if written > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = real(*args)
            written += n
            return n

        return wrapper

    monkeypatch.setattr(output_module.os, "pwrite", counting(os.pwrite))
    if hasattr(os, "copy_file_range"):
        monkeypatch.setattr(output_module.os, "copy_file_range", counting(os.copy_file_range))


# -- interruption --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mosaic AT2 slide of ~1300 distinct tiles: apply takes seconds even on two idle cores."""
    path = tmp_path_factory.mktemp("slow") / "slow.svs"
    pixels = mosaic(load_real_pixels(), 9600, 7200, seed=7)
    spec = preset("at2", profile=SCANSCOPE_BYTES, downsamples=(1, 4), with_label=False,
                  with_macro=False)  # fmt: skip
    return write_slide(path, pixels, spec)


def start_apply(source: Path, out: Path, workers: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "svsicc.cli", "apply", str(source), str(out), "--quiet",
         "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell that started the test run in the background ignores SIGINT for its children.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def wait_for_temp(folder: Path, process: subprocess.Popen[str]) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        temps = [p for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX)]
        if temps:
            # The temporary file appears before any tile is written: the run is just starting.
            assert process.poll() is None, "apply finished before it could be interrupted"
            return temps[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("no temporary file appeared")


@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGINT, 2), (signal.SIGTERM, 1)])
def test_interrupt_removes_the_temporary_file(
    tmp_path: Path, slow_slide: Path, sig: signal.Signals, workers: int
) -> None:
    before = sha256(slow_slide)
    out = tmp_path / "o.svs"
    process = start_apply(slow_slide, out, workers)
    wait_for_temp(tmp_path, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    # stderr in the message: an exit by a signal (-2) was seen once and never reproduced.
    code, what = (143, "terminated") if sig == signal.SIGTERM else (130, "interrupted")
    assert process.returncode == code, f"exit {process.returncode}, stderr: {err!r}"
    assert err.strip() == f"svsicc: {what}; no output was left behind"
    assert listing(tmp_path) == []
    assert sha256(slow_slide) == before


def test_after_kill_9_only_a_temp_file_remains_and_the_next_run_removes_it(
    tmp_path: Path, slow_slide: Path
) -> None:
    out = tmp_path / "o.svs"
    process = start_apply(slow_slide, out, 1)
    temp = wait_for_temp(tmp_path, process)
    process.kill()
    process.communicate(timeout=60)
    assert listing(tmp_path) == [temp.name]
    # The next run for the same output removes it (its process is gone) and succeeds.
    rerun = subprocess.run(
        [sys.executable, "-m", "svsicc.cli", "apply", str(slow_slide), str(out), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (rerun.returncode, rerun.stderr) == (0, "")
    assert listing(tmp_path) == ["o.svs"]


def test_temp_names_carry_a_purpose(tmp_path: Path) -> None:
    out = tmp_path / "slide.svs"
    assert temp_name(out).name == f".slide.svs.{os.getpid()}{TEMP_SUFFIX}"
    assert temp_name(out, "bigtiff").name == f".slide.svs.{os.getpid()}.bigtiff{TEMP_SUFFIX}"
    with pytest.raises(ValueError):
        temp_name(out, "../x")


# -- sparse copies -------------------------------------------------------------------------------


def test_copy_ranges_keeps_holes_and_overwrites_stale_bytes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    with open(src, "wb") as fh:
        fh.truncate(3 * GiB)
        fh.seek(100)
        fh.write(b"A" * 100)
        fh.seek(2 * GiB)
        fh.write(b"B" * 100)
    with open(dst, "wb") as fh:
        fh.truncate(3 * GiB)
        fh.seek(GiB)
        fh.write(b"stale")  # where src has a hole: must become zeros
    fd_src, fd_dst = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR)
    try:
        started = time.monotonic()
        output_module.copy_ranges(fd_src, fd_dst, [(0, 3 * GiB)])
        assert time.monotonic() - started < 5
        assert os.pread(fd_dst, 100, 100) == b"A" * 100
        assert os.pread(fd_dst, 100, 2 * GiB) == b"B" * 100
        assert os.pread(fd_dst, 5, GiB) == bytes(5)
    finally:
        os.close(fd_src)
        os.close(fd_dst)
    assert os.stat(dst).st_blocks * 512 < 2**20


# -- BigTIFF promotion ---------------------------------------------------------------------------


def promote_copy(source: Path, folder: Path) -> Path:
    """The BigTIFF twin of ``source``, kept (the context manager removes its own)."""
    kept = folder / f"{source.stem}-big.tif"
    with (
        tiff.TiffReader(source) as reader,
        TempOutput(folder / "unused") as out,
        bigtiff_twin(reader, out) as twin,
    ):
        if source.suffix == ".svs":
            read_slide(twin)
        shutil.copyfile(twin.path, kept)
    assert not (folder / "unused").exists()
    return kept


def assert_same_images(a: Path, b: Path) -> None:
    with tifffile.TiffFile(a) as ta, tifffile.TiffFile(b) as tb:
        assert not ta.is_bigtiff and tb.is_bigtiff
        assert len(ta.pages) == len(tb.pages)
        for pa, pb in zip(ta.pages, tb.pages, strict=True):
            assert np.array_equal(pa.asarray(), pb.asarray())
            for tag in pa.tags.values():
                if tag.code in (tiff.TAG_STRIP_OFFSETS, tiff.TAG_TILE_OFFSETS):
                    assert pb.tags[tag.code].dtype == tiff.TYPE_LONG8
                    continue
                assert np.array_equal(np.asarray(tag.value), np.asarray(pb.tags[tag.code].value))


def test_promotion_of_a_real_slide_keeps_every_tag_and_pixel(tmp_path: Path) -> None:
    big = promote_copy(CMU_SMALL, tmp_path)
    assert big.read_bytes()[:8] == b"II+\x00\x08\x00\x00\x00"
    assert_same_images(CMU_SMALL, big)
    with openslide.OpenSlide(big) as slide:
        assert slide.dimensions == (2220, 2967)
        slide.read_region((1000, 1000), 0, (300, 300))


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_promotion_moves_what_the_bigger_header_covers(tmp_path: Path, byteorder: str) -> None:
    """tifffile writes the first IFD at offset 8, where the BigTIFF header now goes."""
    source = tmp_path / "first-ifd-at-8.tif"
    pixels = np.ascontiguousarray(load_real_pixels()[:300, :400])
    tifffile.imwrite(source, pixels, tile=(128, 128), byteorder=byteorder, description="x" * 40,
                     resolution=(2.5, 2.5), software="svsicc test", metadata=None)  # fmt: skip
    assert ifds(source)[0].offset == 8
    big = promote_copy(source, tmp_path)
    assert_same_images(source, big)
    # No stale classic IFD stays behind: the old table (past the new header) is zeroed.
    old = ifds(source)[0]
    assert big.read_bytes()[16 : old.end] == bytes(old.end - 16)


def test_promotion_refuses_sub_ifds(tmp_path: Path) -> None:
    source = tmp_path / "subifds.tif"
    with tifffile.TiffWriter(source) as writer:
        writer.write(np.zeros((64, 64, 3), np.uint8), subifds=1, metadata=None)
        writer.write(np.zeros((32, 32, 3), np.uint8), metadata=None)
    with pytest.raises(UnsupportedLayoutError, match="tag 330 points at further IFDs"):
        promote_copy(source, tmp_path)
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_classic_patcher_raises_the_dedicated_error(tmp_path: Path) -> None:
    with tiff.TiffReader(CMU_SMALL) as reader, open(tmp_path / "copy", "w+b") as fh:
        patcher = tiff.TiffPatcher(fh, reader.structure, tmp_path / "copy")
        patcher.end = tiff.CLASSIC_LIMIT - 10
        assert patcher.append(b"12345678") == tiff.CLASSIC_LIMIT - 10
        with pytest.raises(tiff.ClassicTiffLimitError) as caught:
            patcher.append(b"1234")
    assert isinstance(caught.value, OutputError)
    assert "4 GiB" in caught.value.one_line()


def head(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def relocate_below_4gib(source: Path, target: Path, slack: int) -> int:
    """Write ``source`` (classic, little-endian) as a sparse file whose data ends ``slack``
    bytes below 4 GiB: the header stays at 0, everything else moves up by the returned shift."""
    data = bytearray(source.read_bytes())
    shift = tiff.CLASSIC_LIMIT - len(data) - slack

    def add(position: int) -> None:
        (value,) = struct.unpack_from("<I", data, position)
        if value:
            struct.pack_into("<I", data, position, value + shift)

    with tiff.TiffReader(source) as reader:
        add(4)
        for ifd in reader.structure.ifds:
            add(ifd.next_pointer_offset)
            for e in ifd.entries.values():
                if not e.inline:
                    add(e.entry_offset + 8)
            for offsets_tag, counts_tag in tiff.SEGMENT_TAG_PAIRS.items():
                if offsets_tag in ifd.entries:
                    e = ifd.entries[offsets_tag]
                    assert e.type == tiff.TYPE_LONG
                    counts = reader.ints(ifd, counts_tag) or ()
                    for i, count in enumerate(counts):
                        if count:
                            add(e.value_offset + 4 * i)
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, len(data) + shift)
        os.pwrite(fd, bytes(data[:8]), 0)
        os.pwrite(fd, bytes(data[8:]), 8 + shift)
    finally:
        os.close(fd)
    return shift


def test_copy_passing_4_gib_is_promoted_to_bigtiff(
    tmp_path: Path, at2_slide: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A classic slide whose data ends 64 bytes below 4 GiB: converted tiles that grow and the
    longer description must be appended past 4 GiB, so the copy is written as BigTIFF."""
    source = tmp_path / "near-4gib.svs"
    shift = relocate_below_4gib(at2_slide, source, slack=64)
    assert source.stat().st_size == tiff.CLASSIC_LIMIT - 64
    assert source.stat().st_blocks * 512 < 64 * 2**20, "the file system must keep holes"
    kept = head(source, 0, 8), head(source, 8 + shift, 2**21)

    out = tmp_path / "out.svs"
    result = svsicc.apply(source, out)

    assert listing(tmp_path) == ["near-4gib.svs", "out.svs"]  # the twin is gone
    assert head(out, 0, 4) == b"II+\x00"
    assert out.stat().st_size > tiff.CLASSIC_LIMIT
    assert out.stat().st_blocks * 512 < 64 * 2**20  # holes stayed holes
    assert (head(source, 0, 8), head(source, 8 + shift, 2**21)) == kept
    assert result.pages[0].bytes_after > result.pages[0].bytes_before  # tiles grew
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff
        level0 = tif.pages[0]
        assert level0.tags[tiff.TAG_TILE_OFFSETS].dtype == tiff.TYPE_LONG8
        assert max(level0.dataoffsets) > tiff.CLASSIC_LIMIT  # some tiles were appended
        assert tif.pages[0].tags[tiff.TAG_ICC_PROFILE].value == default_target().data
        for page in tif.pages:
            page.asarray()
    # What users see: OpenSlide on the BigTIFF, against LittleCMS applied to the input.
    region = (240, 120), 0, (480, 360)
    with openslide.OpenSlide(source) as before, openslide.OpenSlide(out) as after:
        assert after.properties["aperio.ICC Profile Applied Mode"] == "transformed"
        rgb_in = np.asarray(before.read_region(*region).convert("RGB"))
        rgb_out = np.asarray(after.read_region(*region).convert("RGB"))
    expected = reference_transform(
        rgb_in, IccProfile.from_bytes(SCANSCOPE_BYTES), default_target(), result.intent
    )
    error = np.abs(rgb_out.astype(np.int16) - expected.astype(np.int16))
    moved = np.abs(rgb_in.astype(np.int16) - expected.astype(np.int16)).mean()
    assert error.mean() < 2.0 < moved  # the conversion happened, within one JPEG re-encode
    # info reads the result like any slide.
    code, stdout, _ = run(capsys, "info", out)
    assert code == 0 and "BigTIFF" in stdout and "applied: yes" in stdout


def test_disk_full_during_bigtiff_promotion_leaves_nothing(
    tmp_path: Path, at2_slide: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The promotion writes a twin of the input beside the output: when that fills the disk,
    the error is the same one line and both temporary files go."""
    source = tmp_path / "near-4gib.svs"
    relocate_below_4gib(at2_slide, source, slack=64)
    data_bytes = source.stat().st_blocks * 512
    full = tmp_path / "full"
    # Room for one copy of the data (the first, classic attempt) but not for twin and copy.
    with small_tmpfs(full, f"{data_bytes * 3 // 2 // 1024}k") as mounted:
        assert mounted, "this test needs a tmpfs (run as root)"
        code, _, err = run(capsys, "apply", source, full / "o.svs", "--quiet")
        assert code == 2
        assert_one_line_error(err, "o.svs", "no space left on the device")
        assert listing(full) == []
    assert listing(tmp_path) == ["full", "near-4gib.svs"]
