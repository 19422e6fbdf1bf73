"""Damaged tiles: decoders that only warn (libjpeg's grey fill, OpenJPEG's partial decode) make a
tile bad like a decoder error; ``--on-bad-tile keep`` keeps its bytes wherever it lies, and the
copy says so. Also: a bug in a codec is a bug, never a kept tile."""

from __future__ import annotations

import json
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

from svsicc.check.verify import verify
from svsicc.codecs.jpeg import JpegCodec
from svsicc.codecs.jpeg_stream import JpegFormatError, scan_data_start
from tests.synthetic import load_real_pixels, preset, write_slide

from .conftest import CMU_SMALL, SCANSCOPE, assert_one_line_error, run_cli, segment_bytes, sha256

Damage = Callable[[bytes], bytes]


def garble(tile: bytes) -> bytes:
    """Random entropy-coded data after the scan header: no marker is created (a 0xFF is
    followed by a stuffed 0), the EOI stays."""
    data = bytearray(tile)
    start = tile.index(b"\xff\xda") + 20
    rng = random.Random(5)
    for i in range(start, len(data) - 2):
        data[i] = 0 if data[i - 1] == 0xFF else rng.randrange(256)
    return bytes(data)


def cut_in_half(tile: bytes) -> bytes:
    return tile[: len(tile) // 2]


def change_one_byte(tile: bytes) -> bytes:
    """The first byte of the entropy-coded data with its top bit flipped: no marker appears
    (it is not 0xFF and does not follow one in the real tile this is used on)."""
    start = scan_data_start(tile)
    assert tile[start] not in (0x7F, 0xFF) and tile[start - 1] != 0xFF
    return tile[:start] + bytes([tile[start] ^ 0x80]) + tile[start + 1 :]


def cut_packets_in_half(codestream: bytes) -> bytes:
    """A JPEG 2000 tile cut in half of its packet data (after SOD): its header stays whole."""
    data_start = codestream.index(b"\xff\x93") + 2
    return codestream[: data_start + (len(codestream) - data_start) // 2]


def move_damaged_to_end(path: Path, page: int, tile: int, damage: Damage) -> bytes:
    """Write a damaged copy of a tile at the very end of the file and point the tile at it
    (offset and byte count): the damaged tile is the last segment in the file. Its bytes."""
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        offsets = p.tags["TileOffsets" if p.is_tiled else "StripOffsets"]
        counts = p.tags["TileByteCounts" if p.is_tiled else "StripByteCounts"]
        byteorder = tif.byteorder
    damaged = damage(segment_bytes(path, page)[tile])
    data = bytearray(path.read_bytes())
    end = len(data)
    data += damaged
    for tag, value in ((offsets, end), (counts, len(damaged))):
        code = {3: "H", 4: "I", 16: "Q"}[tag.dtype]
        struct.pack_into(
            f"{byteorder}{code}", data, tag.valueoffset + tile * struct.calcsize(code), value
        )
    path.write_bytes(bytes(data))
    assert segment_bytes(path, page)[tile] == damaged
    return damaged


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return load_real_pixels()[:720, :960]


def make_slide(folder: Path, kind: str, pixels: np.ndarray) -> tuple[Path, list[str]]:
    """A real or synthetic slide of ``kind`` and the CLI options its conversion needs."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "aperio-rgb":
        return Path(shutil.copyfile(CMU_SMALL, folder / "slide.svs")), ["--profile", SCANSCOPE]
    spec = preset(kind, profile=SCANSCOPE.read_bytes(), downsamples=(1,), with_label=False,
                  with_macro=False)  # fmt: skip
    return write_slide(folder / "slide.svs", pixels, spec), []


CASES = [
    ("aperio-rgb", garble, "damaged data, libjpeg: Corrupt JPEG data"),
    ("aperio-rgb", cut_in_half, "damaged data, libjpeg: Premature end of JPEG file"),
    ("aperio-rgb", change_one_byte, "damaged data, libjpeg: Corrupt JPEG data: premature end of"),
    ("gt450", garble, "damaged data, libjpeg: Corrupt JPEG data"),
    ("gt450", cut_in_half, "damaged data, libjpeg: Premature end of JPEG file"),
    ("jp2k-33005", cut_packets_in_half, "OpenJPEG could not decode the codestream"),
    ("jp2k-33003", cut_packets_in_half, "OpenJPEG could not decode the codestream"),
]
IDS = [f"{kind}-{damage.__name__}" for kind, damage, _ in CASES]


def flip_low_bit(tile: bytes) -> bytes:
    start = scan_data_start(tile)
    return tile[:start] + bytes([tile[start] ^ 0x01]) + tile[start + 1 :]


# Damage to a real Aperio tile (CMU-1-Small-Region, IFD 0, tile 5) and libjpeg's first warning
# about it, which the decode itself reports (no second pass).
WARNINGS = [
    (cut_in_half, "Premature end of JPEG file"),
    (lambda t: t[: len(t) // 2] + b"\xff\xd9", "Corrupt JPEG data: premature end of data segment"),
    (garble, "Corrupt JPEG data: premature end of data segment"),
    (change_one_byte, "Corrupt JPEG data: premature end of data segment"),
    (
        lambda t: t[:-2] + bytes(range(1, 33)) + t[-2:],  # junk (no 0xFF) before the EOI
        r"Corrupt JPEG data: \d+ extraneous bytes before marker 0xd9",
    ),
]


@pytest.mark.parametrize(("damage", "warning"), WARNINGS, ids=lambda v: getattr(v, "__name__", ""))
def test_libjpeg_warnings_are_heard_in_the_decode(damage: Damage, warning: str) -> None:
    tables = tifffile.TiffFile(CMU_SMALL).pages[0].jpegtables
    codec = JpegCodec(tables, 2)
    tile = segment_bytes(CMU_SMALL, 0)[5]
    assert codec.decode(tile, 240, 240).shape == (240, 240, 3)  # RGB colourspace: decoded to RGB
    with pytest.raises(JpegFormatError, match=f"^damaged data, libjpeg: {warning}$"):
        codec.decode(damage(tile), 240, 240)


def test_damage_libjpeg_does_not_notice_goes_unseen() -> None:
    """JPEG has no checksum: a changed bit whose Huffman codes resynchronise within the block
    decodes without a warning, to other pixels (about half of single-byte changes on these
    tiles). What svsicc can hear is only what libjpeg says."""
    tables = tifffile.TiffFile(CMU_SMALL).pages[0].jpegtables
    codec = JpegCodec(tables, 2)
    tile = segment_bytes(CMU_SMALL, 0)[5]
    sound = codec.decode(tile, 240, 240).copy()
    assert not np.array_equal(codec.decode(flip_low_bit(tile), 240, 240), sound)


@dataclass(frozen=True)
class DamagedSlide:
    source: Path
    options: list[str]  # what converting it needs on the command line
    damaged: bytes  # tile 5 of IFD 0, the last segment in the file
    message: str  # what the failure says about it


@pytest.fixture(params=CASES, ids=IDS)
def slide(request: pytest.FixtureRequest, tmp_path: Path, pixels: np.ndarray) -> DamagedSlide:
    kind, damage, message = request.param
    source, options = make_slide(tmp_path / "in", kind, pixels)
    return DamagedSlide(source, options, move_damaged_to_end(source, 0, 5, damage), message)


def test_damaged_tile_at_the_end_fails_the_slide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], slide: DamagedSlide
) -> None:
    source, options, message = slide.source, slide.options, slide.message
    before = sha256(source)
    out = tmp_path / "out" / "o.svs"
    out.parent.mkdir()
    code, _, err = run_cli(capsys, "apply", source, out, *options, "--workers", "1")
    assert code == 2
    assert_one_line_error(err, "slide.svs", "IFD 0", "tile 5", "cannot decode", message)
    assert list(out.parent.iterdir()) == []
    assert sha256(source) == before


@pytest.mark.parametrize("workers", ["1", "2"])
def test_damaged_tile_at_the_end_is_kept_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], slide: DamagedSlide, workers: str
) -> None:
    source, options, damaged, message = slide.source, slide.options, slide.damaged, slide.message
    out = tmp_path / "o.svs"
    code, stdout, err = run_cli(
        capsys, "apply", source, out, *options, "--on-bad-tile", "keep", "--workers", workers
    )
    assert (code, err) == (0, "")
    assert f"kept undecodable IFD 0 tile 5: {message}" in stdout
    copied = segment_bytes(out, 0)
    assert copied[5] == damaged
    assert sum(a != b for a, b in zip(copied, segment_bytes(source, 0), strict=True)) == (
        len(copied) - 1
    )  # every other tile was converted
    # The copy records the kept tile, for OpenSlide (aperio.* property), info and verify.
    with tifffile.TiffFile(out) as tif:
        assert "|ICC Profile Applied Kept Tiles = 0:5" in tif.pages[0].description
    code, stdout, _ = run_cli(capsys, "info", out, "--json")
    assert json.loads(stdout)["applied_record"]["kept_tiles"] == [{"ifd": 0, "tile": 5}]
    code, stdout, _ = run_cli(capsys, "info", out)
    assert "1 tile(s) kept unconverted (undecodable in the original): IFD 0 tile 5" in stdout
    result = verify(source, out, profile=SCANSCOPE)
    assert result.ok, result.problems
    assert result.pages[0].kept == (5,)
    assert result.pages[0].segments_checked == len(copied) - 1


# -- a bug is a bug ------------------------------------------------------------------------------


BUGS = [
    TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'"),
    # What numpy raises for a shape mistake: a ValueError, which the engine used to catch.
    ValueError("cannot reshape array of size 172800 into shape (240,241,3)"),
]


@pytest.mark.parametrize("bug", BUGS, ids=lambda bug: type(bug).__name__)
def test_a_bug_in_a_codec_is_not_a_kept_tile(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bug: Exception,
) -> None:
    """Before the CodecError tree the engine caught ValueError and RuntimeError from codecs, so
    a programming error read "cannot decode" and, under keep, left unconverted tiles in a copy
    marked as converted."""
    real_decode = JpegCodec.decode
    calls = 0

    def buggy(self: JpegCodec, tile: bytes, rows: int, cols: int) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 7:
            raise bug
        return real_decode(self, tile, rows, cols)

    monkeypatch.setattr(JpegCodec, "decode", buggy)
    out = tmp_path / "o.svs"
    args = ["apply", CMU_SMALL, out, "--profile", SCANSCOPE, "--workers", "1"]
    code, stdout, err = run_cli(capsys, *args, "--on-bad-tile", "keep")
    assert code == 2
    assert stdout == ""
    [line] = err.strip().splitlines()
    assert f"unexpected error: {type(bug).__name__}: {bug}" in line
    assert "--debug" in line and "kept" not in line
    assert list(tmp_path.iterdir()) == []
    # With --debug, the traceback.
    calls = 0
    with pytest.raises(type(bug)):
        run_cli(capsys, "--debug", *args, "--on-bad-tile", "keep")
    assert list(tmp_path.iterdir()) == []
