"""The Pixel Data element of one DICOM file: where each frame's bytes are, and writing it anew.

Read from the file itself, never loaded whole: pydicom reads the header (up to the Pixel Data
element), and this module walks the element's items (encapsulated) or computes each frame's
place (native), checking every length against the file before anything is read, so a truncated
or hostile file is refused in one line naming the frame.

Frames map to fragments through the Extended Offset Table when there is one, else the Basic
Offset Table, else one fragment per frame (or all fragments for a single frame). A new file
holds each frame as one fragment, behind the same kind of offset table as its source: basic
(rebuilt; promoted to extended when an offset would pass 4 GiB), extended (rebuilt), or empty.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from svsicc.exceptions import DicomFormatError

ITEM = b"\xfe\xff\x00\xe0"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
UNDEFINED = 0xFFFFFFFF
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"SQ", b"UC", b"UR"}
BASIC_LIMIT = 1 << 32

Fragment = tuple[int, int]  # (offset of the value in the file, length)


@dataclass(frozen=True)
class FrameIndex:
    """Where the Pixel Data element and every frame of one file are."""

    element_start: int  # offset of the (7FE0,0010) tag
    header: bytes  # the element's tag, VR and length as stored
    encapsulated: bool
    offset_table: str  # "basic", "extended", "empty" (encapsulated) or "native"
    frames: tuple[tuple[Fragment, ...], ...]
    end: int  # first byte after the element (after its sequence delimiter)
    file_size: int

    def frame_length(self, index: int) -> int:
        return sum(length for _offset, length in self.frames[index])

    @property
    def single_fragment(self) -> bool:
        """Every frame is one contiguous range of the file (workers can read it by offset)."""
        return all(len(fragments) == 1 for fragments in self.frames)

    @property
    def data_bytes(self) -> int:
        return sum(self.frame_length(i) for i in range(len(self.frames)))


def read_frame(fh: BinaryIO, index: FrameIndex, frame: int) -> bytes:
    parts = []
    for offset, length in index.frames[frame]:
        fh.seek(offset)
        parts.append(fh.read(length))
    return b"".join(parts)


def index_frames(
    fh: BinaryIO,
    path: Path,
    start: int,
    number_of_frames: int,
    frame_bytes: int,
    explicit_vr: bool,
    extended_offsets: bytes | None,
) -> FrameIndex:
    """The frames of the Pixel Data element whose tag is at ``start``; ``frame_bytes`` is the
    size of a native frame; ``extended_offsets`` the Extended Offset Table's value, if any."""
    size = fh.seek(0, 2)
    fh.seek(start)
    head = fh.read(12)
    if len(head) < 8 or head[:4] != PIXEL_DATA_TAG:
        raise DicomFormatError(path, "no Pixel Data element (7FE0,0010)")
    if explicit_vr and head[4:6] in _LONG_VRS:
        header, (length,) = head[:12], struct.unpack_from("<I", head, 8)
    elif explicit_vr:
        header, (length,) = head[:8], struct.unpack_from("<H", head, 6)
    else:
        header, (length,) = head[:8], struct.unpack_from("<I", head, 4)
    value = start + len(header)
    if length != UNDEFINED:
        return _native(path, start, header, value, length, size, number_of_frames, frame_bytes)
    fragments, bot, end = _items(fh, path, value, size)
    return _encapsulated(
        path, start, header, fragments, bot, end, size, number_of_frames, extended_offsets
    )


def _native(
    path: Path,
    start: int,
    header: bytes,
    value: int,
    length: int,
    size: int,
    number_of_frames: int,
    frame_bytes: int,
) -> FrameIndex:
    needed = number_of_frames * frame_bytes
    if length < needed:
        raise DicomFormatError(
            path, f"Pixel Data holds {length:,} bytes; {number_of_frames} frames need {needed:,}"
        )
    if value + length > size:
        last = (size - value) // frame_bytes if frame_bytes else 0
        raise DicomFormatError(
            path,
            f"Pixel Data runs {value + length - size:,} bytes past the end of the file "
            f"(truncated at frame {last})",
        )
    frames = tuple(((value + i * frame_bytes, frame_bytes),) for i in range(number_of_frames))
    return FrameIndex(start, header, False, "native", frames, value + length, size)


def _items(fh: BinaryIO, path: Path, position: int, size: int) -> tuple[list[Fragment], bytes, int]:
    """(fragments after the offset table, the Basic Offset Table's value, end of element)."""
    fragments: list[Fragment] = []
    bot: bytes | None = None
    while True:
        fh.seek(position)
        head = fh.read(8)
        if len(head) < 8:
            frame = max(len(fragments) - 1, 0)
            raise DicomFormatError(
                path,
                f"the Pixel Data ends without its sequence delimiter: the file is cut short "
                f"(after fragment {frame})",
            )
        tag, (length,) = head[:4], struct.unpack_from("<I", head, 4)
        if tag == SEQUENCE_DELIMITER:
            if bot is None:
                raise DicomFormatError(path, "encapsulated Pixel Data without an offset table")
            return fragments, bot, position + 8
        if tag != ITEM or length == UNDEFINED:
            raise DicomFormatError(
                path, f"broken encapsulated Pixel Data at byte {position:,} (not an item)"
            )
        if position + 8 + length > size:
            raise DicomFormatError(
                path,
                f"fragment {len(fragments)} runs {position + 8 + length - size:,} bytes past "
                "the end of the file (truncated)",
            )
        if bot is None:
            if length % 4:
                raise DicomFormatError(path, f"Basic Offset Table of {length} bytes")
            bot = fh.read(length)
        else:
            fragments.append((position + 8, length))
        position += 8 + length


def _encapsulated(
    path: Path,
    start: int,
    header: bytes,
    fragments: list[Fragment],
    bot: bytes,
    end: int,
    size: int,
    number_of_frames: int,
    extended_offsets: bytes | None,
) -> FrameIndex:
    if extended_offsets:
        kind = "extended"
        offsets = list(struct.unpack(f"<{len(extended_offsets) // 8}Q", extended_offsets))
    elif bot:
        kind = "basic"
        offsets = list(struct.unpack(f"<{len(bot) // 4}I", bot))
    else:
        kind = "empty"
        if len(fragments) == number_of_frames:
            offsets = None
        elif number_of_frames == 1:
            offsets = [0]
        else:
            raise DicomFormatError(
                path,
                f"{len(fragments)} fragments for {number_of_frames} frames and no offset "
                "table to tell them apart",
            )
    frames = _group(path, fragments, offsets)
    if len(frames) != number_of_frames:
        raise DicomFormatError(
            path, f"holds {len(frames)} frames; Number of Frames says {number_of_frames}"
        )
    return FrameIndex(start, header, True, kind, frames, end, size)


def _group(
    path: Path, fragments: list[Fragment], offsets: list[int] | None
) -> tuple[tuple[Fragment, ...], ...]:
    """Fragments grouped into frames by an offset table (offsets of each frame's first item
    tag, counted from the first fragment's item tag); None: one fragment per frame."""
    if offsets is None:
        return tuple((f,) for f in fragments)
    if not fragments:
        raise DicomFormatError(path, "encapsulated Pixel Data without fragments")
    first = fragments[0][0] - 8
    where = {offset - 8 - first: n for n, (offset, _length) in enumerate(fragments)}
    starts = []
    for frame, offset in enumerate(offsets):
        if offset not in where:
            raise DicomFormatError(
                path, f"the offset table's entry for frame {frame} ({offset}) starts no fragment"
            )
        starts.append(where[offset])
    if starts != sorted(starts) or len(set(starts)) != len(starts) or starts[0] != 0:
        raise DicomFormatError(path, "the offset table's entries are not in frame order")
    bounds = [*starts, len(fragments)]
    return tuple(tuple(fragments[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))


# -- writing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewTables:
    """The offset tables of a rewritten encapsulated element: the Basic Offset Table's value
    and the Extended Offset Table's (offsets, lengths), None where the element has none."""

    basic: bytes
    extended: tuple[bytes, bytes] | None


def item_lengths(lengths: Sequence[int]) -> list[int]:
    """Each frame's item value length: padded to even."""
    return [n + (n & 1) for n in lengths]


def offset_tables(kind: str, lengths: Sequence[int]) -> NewTables:
    """The offset tables for frames of ``lengths`` under the source's kind of table; a basic
    table whose offsets would pass 4 GiB becomes an extended one (DICOM allows only 32 bits)."""
    padded = item_lengths(lengths)
    offsets = []
    position = 0
    for n in padded:
        offsets.append(position)
        position += 8 + n
    if kind == "basic" and (not offsets or offsets[-1] < BASIC_LIMIT):
        return NewTables(struct.pack(f"<{len(offsets)}I", *offsets), None)
    if kind in ("basic", "extended"):
        extended = (
            struct.pack(f"<{len(offsets)}Q", *offsets),
            struct.pack(f"<{len(padded)}Q", *padded),
        )
        return NewTables(b"", extended)
    return NewTables(b"", None)


def write_encapsulated(
    out: BinaryIO, header: bytes, basic: bytes, frames: Iterable[bytes | memoryview]
) -> None:
    """The Pixel Data element: ``header`` as the source stored it, the Basic Offset Table item,
    one item per frame (padded to even with a zero byte), the sequence delimiter."""
    out.write(header)
    out.write(ITEM + struct.pack("<I", len(basic)) + basic)
    for frame in frames:
        out.write(ITEM + struct.pack("<I", len(frame) + (len(frame) & 1)))
        out.write(frame)
        if len(frame) & 1:
            out.write(b"\x00")
    out.write(SEQUENCE_DELIMITER + b"\x00\x00\x00\x00")


def copy_range(source: BinaryIO, out: BinaryIO, start: int, end: int, chunk: int = 1 << 22) -> None:
    source.seek(start)
    remaining = end - start
    while remaining > 0:
        data = source.read(min(chunk, remaining))
        if not data:
            raise DicomFormatError(None, "the input changed while it was read")
        out.write(data)
        remaining -= len(data)
