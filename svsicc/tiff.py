"""Low-level TIFF access: every read of the input and every offset svsicc writes lives here.

:class:`TiffReader` parses classic TIFF and BigTIFF headers and IFDs from a file opened read-only,
checking every offset and count against the file size before anything is allocated.
:class:`TiffPatcher` edits a copy: it overwrites tag values in place when they fit and appends them
(word aligned) when they do not, the way tifffile's ``TiffTag.overwrite`` does, so every byte that
is not patched stays where it was.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .exceptions import OutputError, TiffFormatError

# TIFF field types: size in bytes of one value.
TYPE_SIZES: Mapping[int, int] = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
    16: 8, 17: 8, 18: 8,
}  # fmt: skip
INTEGER_FORMATS: Mapping[int, str] = {
    1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q",
}  # fmt: skip
TYPE_BYTE, TYPE_ASCII, TYPE_SHORT, TYPE_LONG, TYPE_UNDEFINED, TYPE_LONG8 = 1, 2, 3, 4, 7, 16

# Tags svsicc reads or writes.
TAG_NEW_SUBFILE_TYPE = 254
TAG_IMAGE_WIDTH = 256
TAG_IMAGE_LENGTH = 257
TAG_BITS_PER_SAMPLE = 258
TAG_COMPRESSION = 259
TAG_PHOTOMETRIC = 262
TAG_IMAGE_DESCRIPTION = 270
TAG_STRIP_OFFSETS = 273
TAG_SAMPLES_PER_PIXEL = 277
TAG_ROWS_PER_STRIP = 278
TAG_STRIP_BYTE_COUNTS = 279
TAG_PLANAR_CONFIG = 284
TAG_PREDICTOR = 317
TAG_TILE_WIDTH = 322
TAG_TILE_LENGTH = 323
TAG_TILE_OFFSETS = 324
TAG_TILE_BYTE_COUNTS = 325
TAG_JPEG_TABLES = 347
TAG_YCBCR_SUBSAMPLING = 530
TAG_ICC_PROFILE = 34675

MAX_IFDS = 10_000
MAX_ENTRIES_PER_IFD = 4_096
# No legitimate tag in a slide needs more; larger counts are corrupt and must not allocate.
MAX_TAG_BYTES = 512 * 1024 * 1024
CLASSIC_LIMIT = 2**32


@dataclass(frozen=True)
class TiffEntry:
    """One IFD entry and where its value lives in the file."""

    tag: int
    type: int
    count: int
    entry_offset: int
    value_offset: int
    inline: bool

    @property
    def nbytes(self) -> int:
        return TYPE_SIZES[self.type] * self.count


@dataclass(frozen=True)
class TiffIfd:
    index: int
    offset: int
    entries: Mapping[int, TiffEntry]
    # Offset of the pointer that leads to this IFD (the header's, or the previous IFD's "next").
    pointer_offset: int
    next_pointer_offset: int


@dataclass(frozen=True)
class TiffStructure:
    path: Path
    byteorder: str
    bigtiff: bool
    file_size: int
    ifds: tuple[TiffIfd, ...]

    @property
    def offset_size(self) -> int:
        return 8 if self.bigtiff else 4

    @property
    def entry_size(self) -> int:
        return 20 if self.bigtiff else 12


class TiffReader:
    """Read-only access to a TIFF file; every read is bounds-checked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._fh: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise TiffFormatError(self.path, "no such file") from None
        except IsADirectoryError:
            raise TiffFormatError(self.path, "is a directory, not a slide") from None
        except OSError as exc:
            raise TiffFormatError(self.path, f"cannot open: {exc.strerror}") from None
        self.file_size = os.fstat(self._fh.fileno()).st_size
        try:
            self.structure = self._parse()
        except BaseException:
            self._fh.close()
            raise

    def __enter__(self) -> TiffReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    # -- raw reads -----------------------------------------------------------------------------

    def read(self, offset: int, size: int, what: str = "data", ifd: int | None = None) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.file_size:
            raise TiffFormatError(
                self.path,
                f"{what} at offset {offset} (+{size} bytes) lies past the end of the file "
                f"({self.file_size} bytes); the file is truncated or corrupt",
                ifd=ifd,
            )
        self._fh.seek(offset)
        data = self._fh.read(size)
        if len(data) != size:
            raise TiffFormatError(self.path, f"short read of {what} at offset {offset}", ifd=ifd)
        return data

    def fileno(self) -> int:
        return self._fh.fileno()

    # -- parsing -------------------------------------------------------------------------------

    def _parse(self) -> TiffStructure:
        if self.file_size < 8:
            raise TiffFormatError(self.path, "not a TIFF file (too short)")
        head = self.read(0, 16 if self.file_size >= 16 else 8, "header")
        if head[:2] == b"II":
            bo = "<"
        elif head[:2] == b"MM":
            bo = ">"
        else:
            raise TiffFormatError(self.path, "not a TIFF file (no II/MM byte-order mark)")
        (version,) = struct.unpack(bo + "H", head[2:4])
        if version == 42:
            bigtiff = False
            (first,) = struct.unpack(bo + "I", head[4:8])
            pointer_offset = 4
        elif version == 43:
            if len(head) < 16:
                raise TiffFormatError(self.path, "truncated BigTIFF header")
            bytesize, _zero, first = struct.unpack(bo + "HHQ", head[4:16])
            if bytesize != 8:
                raise TiffFormatError(self.path, f"unsupported BigTIFF offset size {bytesize}")
            bigtiff = True
            pointer_offset = 8
        else:
            raise TiffFormatError(self.path, f"not a TIFF file (version {version})")
        self._bo = bo
        self._bigtiff = bigtiff
        ifds: list[TiffIfd] = []
        seen: set[int] = set()
        offset = first
        while offset:
            if offset in seen:
                raise TiffFormatError(self.path, f"IFD chain loops back to offset {offset}")
            if len(ifds) >= MAX_IFDS:
                raise TiffFormatError(self.path, f"more than {MAX_IFDS} IFDs")
            seen.add(offset)
            ifd = self._parse_ifd(len(ifds), offset, pointer_offset)
            ifds.append(ifd)
            pointer_offset = ifd.next_pointer_offset
            offset = self._read_int(pointer_offset, 8 if bigtiff else 4)
        if not ifds:
            raise TiffFormatError(self.path, "the TIFF has no IFD")
        return TiffStructure(self.path, bo, bigtiff, self.file_size, tuple(ifds))

    def _read_int(self, offset: int, size: int) -> int:
        fmt = {2: "H", 4: "I", 8: "Q"}[size]
        value: int = struct.unpack(self._bo + fmt, self.read(offset, size, "offset"))[0]
        return value

    def _parse_ifd(self, index: int, offset: int, pointer_offset: int) -> TiffIfd:
        if offset % 2:
            # Odd IFD offsets violate the spec but libtiff reads them; so do we.
            pass
        count_size, entry_size, val_size = (8, 20, 8) if self._bigtiff else (2, 12, 4)
        n = self._read_int(offset, count_size) if offset + count_size <= self.file_size else -1
        if n < 0:
            raise TiffFormatError(
                self.path,
                f"IFD {index} at offset {offset} lies past the end of the file ({self.file_size} bytes); "
                "the file is truncated",
            )
        if n == 0 or n > MAX_ENTRIES_PER_IFD:
            raise TiffFormatError(self.path, f"IFD {index} claims {n} entries", ifd=index)
        raw = self.read(offset + count_size, n * entry_size + val_size, "IFD entries", ifd=index)
        entries: dict[int, TiffEntry] = {}
        head_fmt = self._bo + ("HHQ" if self._bigtiff else "HHI")
        for i in range(n):
            pos = i * entry_size
            tag, typ, count = struct.unpack_from(head_fmt, raw, pos)
            entry_offset = offset + count_size + pos
            if typ not in TYPE_SIZES:
                continue  # unknown types are legal; we never touch them
            nbytes = TYPE_SIZES[typ] * count
            if nbytes > MAX_TAG_BYTES:
                raise TiffFormatError(
                    self.path, f"tag {tag} claims {count} values ({nbytes} bytes)", ifd=index
                )
            value_field = entry_offset + (12 if self._bigtiff else 8)
            if nbytes <= val_size:
                value_offset, inline = value_field, True
            else:
                value_offset = struct.unpack_from(
                    self._bo + ("Q" if self._bigtiff else "I"), raw, pos + entry_size - val_size
                )[0]
                inline = False
                if value_offset + nbytes > self.file_size:
                    raise TiffFormatError(
                        self.path,
                        f"tag {tag} value at offset {value_offset} (+{nbytes} bytes) lies past "
                        f"the end of the file ({self.file_size} bytes); the file is truncated",
                        ifd=index,
                    )
            entries[tag] = TiffEntry(tag, typ, count, entry_offset, value_offset, inline)
        next_pointer = offset + count_size + n * entry_size
        return TiffIfd(index, offset, entries, pointer_offset, next_pointer)

    # -- values --------------------------------------------------------------------------------

    def raw_value(self, ifd: TiffIfd, tag: int) -> bytes | None:
        entry = ifd.entries.get(tag)
        if entry is None:
            return None
        return self.read(entry.value_offset, entry.nbytes, f"tag {tag}", ifd=ifd.index)

    def ints(self, ifd: TiffIfd, tag: int) -> tuple[int, ...] | None:
        entry = ifd.entries.get(tag)
        if entry is None:
            return None
        fmt = INTEGER_FORMATS.get(entry.type)
        if fmt is None:
            raise TiffFormatError(
                self.path, f"tag {tag} has non-integer type {entry.type}", ifd=ifd.index
            )
        data = self.read(entry.value_offset, entry.nbytes, f"tag {tag}", ifd=ifd.index)
        return struct.unpack(f"{self._bo}{entry.count}{fmt}", data)

    def int_value(self, ifd: TiffIfd, tag: int, default: int | None = None) -> int | None:
        values = self.ints(ifd, tag)
        if not values:
            return default
        return values[0]

    def ascii(self, ifd: TiffIfd, tag: int) -> str | None:
        data = self.raw_value(ifd, tag)
        if data is None:
            return None
        return data.split(b"\x00", 1)[0].decode("latin-1")


def pack_ints(byteorder: str, type_: int, values: Sequence[int]) -> bytes:
    return struct.pack(f"{byteorder}{len(values)}{INTEGER_FORMATS[type_]}", *values)


class TiffPatcher:
    """Edits the output copy in place: overwrite tag values, place tile data, relocate IFDs.

    The copy starts as the same bytes as the input; ``end`` is where appended data goes.
    """

    def __init__(self, fh: BinaryIO, structure: TiffStructure, path: Path) -> None:
        self._fh = fh
        self.structure = structure
        self.path = path
        self._bo = structure.byteorder
        self.end = structure.file_size

    def write_at(self, offset: int, data: bytes) -> None:
        self._fh.seek(offset)
        self._fh.write(data)

    def append(self, data: bytes, align: int = 2) -> int:
        offset = self.end + (-self.end % align)
        if not self.structure.bigtiff and offset + len(data) > CLASSIC_LIMIT:
            raise OutputError(
                self.path,
                "the copy would grow past the 4 GiB limit of classic TIFF",
                hint="BigTIFF promotion is not supported yet",
            )
        if offset > self.end:
            self.write_at(self.end, b"\x00" * (offset - self.end))
        self.write_at(offset, data)
        self.end = offset + len(data)
        return offset

    def overwrite(self, entry: TiffEntry, type_: int, count: int, data: bytes) -> None:
        """Give ``entry`` a new value: inline, in its old slot, or appended."""
        size = self.structure.offset_size
        if len(data) <= size:
            value_field = data.ljust(size, b"\x00")
            if not entry.inline:
                self.write_at(entry.value_offset, b"\x00" * entry.nbytes)
        elif not entry.inline and len(data) <= entry.nbytes:
            # The stale tail of a shorter value is zeroed so no old bytes hide in the slot.
            self.write_at(entry.value_offset, data + b"\x00" * (entry.nbytes - len(data)))
            value_field = self._offset_bytes(entry.value_offset)
        else:
            if not entry.inline:
                self.write_at(entry.value_offset, b"\x00" * entry.nbytes)
            value_field = self._offset_bytes(self.append(data))
        count_fmt = "Q" if self.structure.bigtiff else "I"
        header = struct.pack(f"{self._bo}HH{count_fmt}", entry.tag, type_, count)
        self.write_at(entry.entry_offset, header + value_field)

    def _offset_bytes(self, offset: int) -> bytes:
        return struct.pack(self._bo + ("Q" if self.structure.bigtiff else "I"), offset)

    def relocate_ifd_with_extra_entry(
        self, reader: TiffReader, ifd: TiffIfd, tag: int, type_: int, count: int, data: bytes
    ) -> None:
        """Write a copy of ``ifd`` with one more entry at the end of the file and link it in.

        Entries are copied as they now stand in the output (after any overwrite), so values and
        offsets they point to stay valid.
        """
        st = self.structure
        count_size = 8 if st.bigtiff else 2
        n = len(ifd.entries)
        self._fh.flush()
        old = self._read_output(ifd.offset, count_size + n * st.entry_size + st.offset_size)
        raw_entries = [
            old[count_size + i * st.entry_size : count_size + (i + 1) * st.entry_size]
            for i in range(n)
        ]
        next_pointer = old[count_size + n * st.entry_size :]
        # Out-of-line data first, so the new IFD can point at it.
        if len(data) <= st.offset_size:
            value_field = data.ljust(st.offset_size, b"\x00")
        else:
            value_field = self._offset_bytes(self.append(data))
        count_fmt = "Q" if st.bigtiff else "I"
        new_entry = struct.pack(f"{self._bo}HH{count_fmt}", tag, type_, count) + value_field
        raw_entries.append(new_entry)
        raw_entries.sort(key=lambda e: struct.unpack_from(self._bo + "H", e)[0])
        count_bytes = struct.pack(self._bo + ("Q" if st.bigtiff else "H"), n + 1)
        new_ifd = count_bytes + b"".join(raw_entries) + next_pointer
        new_offset = self.append(new_ifd, align=2)
        self.write_at(ifd.pointer_offset, self._offset_bytes(new_offset))
        self.write_at(ifd.offset, b"\x00" * len(old))

    def _read_output(self, offset: int, size: int) -> bytes:
        self._fh.seek(offset)
        return self._fh.read(size)


def iter_extents(
    offsets: Sequence[int], counts: Sequence[int]
) -> Iterator[tuple[int, int, int]]:
    """(segment index, offset, byte count) of every non-empty segment, in file order."""
    order = sorted(range(len(offsets)), key=lambda i: offsets[i])
    for i in order:
        if counts[i]:
            yield i, offsets[i], counts[i]
