"""Low-level TIFF access: every read of the input and every offset svsicc writes lives here.

:class:`TiffReader` parses classic TIFF and BigTIFF headers and IFDs from a file opened read-only,
checking every offset and count against the file size before anything is allocated.
:class:`TiffPatcher` edits a copy: it overwrites tag values in place when they fit and appends them
(word aligned) when they do not, the way tifffile's ``TiffTag.overwrite`` does, so every byte that
is not patched stays where it was. :func:`promote_to_bigtiff` turns a copy of a classic TIFF into a
BigTIFF in place (used when a classic copy would pass 4 GiB).
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from svsicc.exceptions import OutputError, TiffFormatError, UnsupportedLayoutError

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

TYPE_IFD, TYPE_IFD8 = 13, 18

MAX_IFDS = 10_000
MAX_ENTRIES_PER_IFD = 4_096
# A slide has about ten IFDs of twenty entries; this bounds the parse of a hostile chain.
MAX_TOTAL_ENTRIES = 100_000
# No legitimate tag in a slide needs more; larger counts are corrupt and must not allocate.
MAX_TAG_BYTES = 512 * 1024 * 1024
CLASSIC_LIMIT = 2**32

# Offset tags and the byte-count tags that go with them: strips, tiles, FreeOffsets, and the old
# JPEGInterchangeFormat. A promotion to BigTIFF re-points them.
SEGMENT_TAG_PAIRS: Mapping[int, int] = {
    TAG_STRIP_OFFSETS: TAG_STRIP_BYTE_COUNTS, TAG_TILE_OFFSETS: TAG_TILE_BYTE_COUNTS,
    288: 289, 513: 514,
}  # fmt: skip
# Tags that point at further IFDs (SubIFDs, EXIF, GPS, Interoperability): a promotion would have
# to promote those IFDs too, so svsicc refuses rather than leave classic IFDs in a BigTIFF.
IFD_POINTER_TAGS = frozenset({330, 34665, 34853, 40965})


class ClassicTiffLimitError(OutputError):
    """A copy of a classic TIFF would pass 4 GiB (raised by :meth:`TiffPatcher.append`).

    ``svsicc.convert.apply`` catches it and redoes the copy as BigTIFF; anything that lets it
    through still shows a one-line error.
    """


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
    # Entries in the file, counting those of unknown type that ``entries`` leaves out (0: unknown).
    entry_count: int = 0
    # Bytes of the IFD table itself (entry count, entries, next pointer); 0: unknown.
    size: int = 0

    @property
    def end(self) -> int:
        """Offset just past the IFD table."""
        return self.offset + self.size


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
        tables: list[tuple[int, int, int]] = []  # (start, end, index), sorted
        total_entries = 0
        offset = first
        while offset:
            if offset in seen:
                raise TiffFormatError(self.path, f"IFD chain loops back to offset {offset}")
            if len(ifds) >= MAX_IFDS:
                raise TiffFormatError(self.path, f"more than {MAX_IFDS} IFDs")
            seen.add(offset)
            ifd = self._parse_ifd(len(ifds), offset, pointer_offset)
            # A chain of IFDs laid over each other (each a few bytes further) would not loop
            # but would make the parser read the same bytes thousands of times.
            at = bisect.bisect_left(tables, (ifd.offset, ifd.end, ifd.index))
            for _start, end_, other in tables[max(0, at - 1) : at + 1]:
                if _start < ifd.end and ifd.offset < end_:
                    raise TiffFormatError(
                        self.path,
                        f"IFD {ifd.index} at offset {ifd.offset} overlaps IFD {other}; the file "
                        "is corrupt",
                        ifd=ifd.index,
                    )
            tables.insert(at, (ifd.offset, ifd.end, ifd.index))
            total_entries += ifd.entry_count
            if total_entries > MAX_TOTAL_ENTRIES:
                raise TiffFormatError(
                    self.path, f"more than {MAX_TOTAL_ENTRIES} IFD entries in all; the file is "
                    "corrupt",
                )  # fmt: skip
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
        # Odd IFD offsets violate the spec but libtiff reads them; so do we.
        count_size, entry_size, val_size = (8, 20, 8) if self._bigtiff else (2, 12, 4)
        header_size = 16 if self._bigtiff else 8
        if offset < header_size:
            raise TiffFormatError(
                self.path, f"IFD {index} offset {offset} points into the file header; the file is "
                "corrupt",
            )  # fmt: skip
        n = self._read_int(offset, count_size) if offset + count_size <= self.file_size else -1
        if n < 0:
            raise TiffFormatError(
                self.path,
                f"IFD {index} at offset {offset} lies past the end of the file "
                f"({self.file_size} bytes); the file is truncated",
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
            # A repeated tag (tifffile writes a second ImageDescription) is read, like libtiff
            # and tifffile do, from its first entry; that is the one svsicc rewrites.
            entries.setdefault(tag, TiffEntry(tag, typ, count, entry_offset, value_offset, inline))
        next_pointer = offset + count_size + n * entry_size
        size = count_size + n * entry_size + val_size
        return TiffIfd(index, offset, entries, pointer_offset, next_pointer, n, size)

    # -- values --------------------------------------------------------------------------------

    def raw_value(self, ifd: TiffIfd, tag: int, max_bytes: int | None = None) -> bytes | None:
        """The value's bytes; more than ``max_bytes`` is an error raised before reading."""
        entry = ifd.entries.get(tag)
        if entry is None:
            return None
        if max_bytes is not None and entry.nbytes > max_bytes:
            raise TiffFormatError(
                self.path,
                f"tag {tag} claims {entry.nbytes} bytes (at most {max_bytes} make sense); the "
                "file is corrupt",
                ifd=ifd.index,
            )
        return self.read(entry.value_offset, entry.nbytes, f"tag {tag}", ifd=ifd.index)

    def ints(self, ifd: TiffIfd, tag: int, max_count: int | None = None) -> tuple[int, ...] | None:
        """All values of an integer tag; more than ``max_count`` is an error raised first."""
        entry = ifd.entries.get(tag)
        if entry is None:
            return None
        fmt = self._integer_format(ifd, entry)
        if max_count is not None and entry.count > max_count:
            raise TiffFormatError(
                self.path,
                f"tag {tag} claims {entry.count} values (at most {max_count} make sense); the "
                "file is corrupt",
                ifd=ifd.index,
            )
        return self.entry_ints(entry, ifd.index, fmt)

    def entry_ints(self, entry: TiffEntry, ifd: int, fmt: str | None = None) -> tuple[int, ...]:
        """The integer values of one entry (of any IFD position, repeated tags included)."""
        fmt = fmt or INTEGER_FORMATS.get(entry.type)
        if fmt is None:
            raise TiffFormatError(
                self.path, f"tag {entry.tag} has non-integer type {entry.type}", ifd=ifd
            )
        data = self.read(entry.value_offset, entry.nbytes, f"tag {entry.tag}", ifd=ifd)
        return struct.unpack(f"{self._bo}{entry.count}{fmt}", data)

    def int_value(self, ifd: TiffIfd, tag: int, default: int | None = None) -> int | None:
        """The first value of an integer tag (a corrupt count does not make it read more)."""
        entry = ifd.entries.get(tag)
        if entry is None or entry.count == 0:
            return default
        fmt = self._integer_format(ifd, entry)
        size = TYPE_SIZES[entry.type]
        data = self.read(entry.value_offset, size, f"tag {tag}", ifd=ifd.index)
        value: int = struct.unpack(self._bo + fmt, data)[0]
        return value

    def _integer_format(self, ifd: TiffIfd, entry: TiffEntry) -> str:
        fmt = INTEGER_FORMATS.get(entry.type)
        if fmt is None:
            raise TiffFormatError(
                self.path, f"tag {entry.tag} has non-integer type {entry.type}", ifd=ifd.index
            )
        return fmt

    def ascii(self, ifd: TiffIfd, tag: int, max_bytes: int | None = None) -> str | None:
        data = self.raw_value(ifd, tag, max_bytes)
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

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        self._fh.seek(offset)
        self._fh.write(data)

    def append(self, data: bytes | memoryview, align: int = 2) -> int:
        offset = self.end + (-self.end % align)
        if not self.structure.bigtiff and offset + len(data) > CLASSIC_LIMIT:
            raise ClassicTiffLimitError(
                self.path, "the copy would grow past the 4 GiB limit of classic TIFF"
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
        """Write a copy of ``ifd`` with one more entry at the end of the file and link it in."""
        self.relocate_ifd_with_extra_entries(reader, ifd, [(tag, type_, count, data)])

    def relocate_ifd_with_extra_entries(
        self, reader: TiffReader, ifd: TiffIfd, extra: Sequence[tuple[int, int, int, bytes]]
    ) -> None:
        """Write a copy of ``ifd`` with more entries, (tag, type, count, value bytes) each, at the
        end of the file and link it in; a tag the IFD already has gets the value in place.

        Entries are copied as they now stand in the output (after any overwrite), so values and
        offsets they point to stay valid.
        """
        added = []
        for tag, type_, count, data in extra:
            existing = ifd.entries.get(tag)
            if existing is not None:
                # An empty or unreadable value of the same tag: a second entry would make the
                # IFD invalid (duplicate tags), so give the existing one the value instead.
                self.overwrite(existing, type_, count, data)
            else:
                added.append((tag, type_, count, data))
        if not added:
            return
        st = self.structure
        count_size = 8 if st.bigtiff else 2
        n = ifd.entry_count or len(ifd.entries)
        self._fh.flush()
        old = self._read_output(ifd.offset, count_size + n * st.entry_size + st.offset_size)
        raw_entries = [
            old[count_size + i * st.entry_size : count_size + (i + 1) * st.entry_size]
            for i in range(n)
        ]
        next_pointer = old[count_size + n * st.entry_size :]
        count_fmt = "Q" if st.bigtiff else "I"
        for tag, type_, count, data in added:
            # Out-of-line data first, so the new IFD can point at it.
            if len(data) <= st.offset_size:
                value_field = data.ljust(st.offset_size, b"\x00")
            else:
                value_field = self._offset_bytes(self.append(data))
            raw_entries.append(
                struct.pack(f"{self._bo}HH{count_fmt}", tag, type_, count) + value_field
            )
        raw_entries.sort(key=lambda e: struct.unpack_from(self._bo + "H", e)[0])
        count_bytes = struct.pack(self._bo + ("Q" if st.bigtiff else "H"), n + len(added))
        new_ifd = count_bytes + b"".join(raw_entries) + next_pointer
        new_offset = self.append(new_ifd, align=2)
        self.write_at(ifd.pointer_offset, self._offset_bytes(new_offset))
        self.write_at(ifd.offset, b"\x00" * len(old))

    def _read_output(self, offset: int, size: int) -> bytes:
        self._fh.seek(offset)
        return self._fh.read(size)


# -- BigTIFF promotion ----------------------------------------------------------------------------

BIGTIFF_HEADER_SIZE = 16


@dataclass(frozen=True)
class _PromotedEntry:
    tag: int
    type: int
    count: int
    inline: bytes | None  # the 8-byte value field, or None when the value stays out of line
    value_offset: int  # where an out-of-line value lives in the twin (before relocation)


def promote_to_bigtiff(reader: TiffReader, fh: BinaryIO) -> int:
    """Turn ``fh``, a byte-for-byte copy of the classic TIFF read by ``reader``, into a BigTIFF.

    Every data byte stays at its offset; the header becomes the 16-byte BigTIFF header, every IFD
    is rewritten at the end with 20-byte entries, segment offset arrays become LONG8 and
    out-of-line values are re-pointed. Whatever the old header now covers (bytes 8 to 16: the
    first IFD, a tile, a tag value) is moved to the end first. The old IFDs and the values that
    now live inline or in new arrays are zeroed, so no stale structure remains. Returns the
    twin's size.
    """
    st = reader.structure
    if st.bigtiff:
        raise ValueError("the file is already a BigTIFF")
    bo = st.byteorder
    end = os.fstat(fh.fileno()).st_size
    if end < st.file_size:
        raise OSError(f"the copy holds {end} of {st.file_size} bytes")

    def append(data: bytes) -> int:
        nonlocal end
        offset = end + (-end % 8)
        fh.seek(offset)
        fh.write(data)
        end = offset + len(data)
        return offset

    # Extents the new header covers must move; the mapping applies to every pointer to them.
    moved: dict[tuple[int, int], int] = {}

    def place(offset: int, size: int) -> int:
        if size == 0 or offset >= BIGTIFF_HEADER_SIZE:
            return offset
        key = (offset, size)
        if key not in moved:
            moved[key] = append(reader.read(offset, size, "data under the BigTIFF header"))
            dead.append((offset, offset + size))
        return moved[key]

    dead: list[tuple[int, int]] = [(ifd.offset, ifd.end) for ifd in st.ifds]
    live: list[tuple[int, int]] = [(0, BIGTIFF_HEADER_SIZE)]
    promoted: list[list[_PromotedEntry]] = []
    for ifd in st.ifds:
        entries = _raw_entries(reader, ifd)
        by_tag: dict[int, TiffEntry] = {}
        for e in entries:
            by_tag.setdefault(e.tag, e)
        out: list[_PromotedEntry] = []
        for entry in entries:
            tag, type_, count = entry.tag, entry.type, entry.count
            if type_ not in TYPE_SIZES:
                raise UnsupportedLayoutError(
                    reader.path,
                    f"tag {tag} has unknown type {type_}: it cannot be carried into a BigTIFF",
                    ifd=ifd.index,
                )
            if type_ in (TYPE_IFD, TYPE_IFD8) or tag in IFD_POINTER_TAGS:
                raise UnsupportedLayoutError(
                    reader.path,
                    f"tag {tag} points at further IFDs, which svsicc cannot promote to BigTIFF",
                    ifd=ifd.index,
                    hint="the copy would pass 4 GiB, the limit of classic TIFF",
                )
            if not entry.inline:
                dead.append((entry.value_offset, entry.value_offset + entry.nbytes))
            if tag in SEGMENT_TAG_PAIRS:
                offsets = reader.entry_ints(entry, ifd.index)
                counts_entry = by_tag.get(SEGMENT_TAG_PAIRS[tag])
                counts = (
                    reader.entry_ints(counts_entry, ifd.index)
                    if counts_entry
                    else (0,) * len(offsets)
                )
                if len(counts) != len(offsets):
                    raise TiffFormatError(
                        reader.path,
                        f"{len(offsets)} offsets in tag {tag} but {len(counts)} byte counts",
                        ifd=ifd.index,
                    )
                new = [place(o, c) for o, c in zip(offsets, counts, strict=True)]
                live.extend((o, o + c) for o, c in zip(new, counts, strict=True) if c)
                data = pack_ints(bo, TYPE_LONG8, new)
                type_ = TYPE_LONG8
            elif entry.nbytes <= 8:
                data = reader.read(entry.value_offset, entry.nbytes, f"tag {tag}", ifd=ifd.index)
            else:
                offset = place(entry.value_offset, entry.nbytes)
                live.append((offset, offset + entry.nbytes))
                out.append(_PromotedEntry(tag, type_, count, None, offset))
                continue
            if len(data) <= 8:
                out.append(_PromotedEntry(tag, type_, count, data, -1))
            else:
                out.append(_PromotedEntry(tag, type_, count, None, append(data)))
        promoted.append(out)

    # The IFDs, back to back at the end, each pointing at the next.
    base = end + (-end % 8)
    sizes = [8 + 20 * len(table) + 8 for table in promoted]
    starts = [base + sum(sizes[:i]) for i in range(len(sizes))]
    tables = []
    for i, table in enumerate(promoted):
        parts = [struct.pack(bo + "Q", len(table))]
        for item in sorted(table, key=lambda item: item.tag):
            if item.inline is not None:
                field = item.inline.ljust(8, b"\x00")
            else:
                field = struct.pack(bo + "Q", item.value_offset)
            parts.append(struct.pack(bo + "HHQ", item.tag, item.type, item.count) + field)
        parts.append(struct.pack(bo + "Q", starts[i + 1] if i + 1 < len(starts) else 0))
        tables.append(b"".join(parts))
    first = append(b"".join(tables))
    assert first == base
    fh.seek(0)
    fh.write((b"II" if bo == "<" else b"MM") + struct.pack(bo + "HHHQ", 43, 8, 0, first))
    for start, stop in _outside(_merge(dead), _merge(live)):
        for chunk in range(start, stop, 1 << 24):
            fh.seek(chunk)
            fh.write(b"\x00" * (min(stop, chunk + (1 << 24)) - chunk))
    fh.flush()
    return end


def _raw_entries(reader: TiffReader, ifd: TiffIfd) -> list[TiffEntry]:
    """Every entry of a classic IFD in file order, unknown types included."""
    bo = reader.structure.byteorder
    n = ifd.entry_count or len(ifd.entries)
    raw = reader.read(ifd.offset + 2, n * 12, "IFD entries", ifd=ifd.index)
    entries = []
    for i in range(n):
        tag, type_, count, field = struct.unpack_from(bo + "HHII", raw, 12 * i)
        entry_offset = ifd.offset + 2 + 12 * i
        inline = TYPE_SIZES.get(type_, 0) * count <= 4
        value_offset = entry_offset + 8 if inline else field
        entries.append(TiffEntry(tag, type_, count, entry_offset, value_offset, inline))
    return entries


def _merge(extents: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(e for e in extents if e[1] > e[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def _outside(
    regions: Sequence[tuple[int, int]], keep: Sequence[tuple[int, int]]
) -> Iterator[tuple[int, int]]:
    """The parts of the sorted, disjoint ``regions`` outside the sorted, disjoint ``keep``."""
    k = 0
    for start, stop in regions:
        position = start
        while k < len(keep) and keep[k][1] <= position:
            k += 1
        j = k
        while j < len(keep) and keep[j][0] < stop:
            if keep[j][0] > position:
                yield position, keep[j][0]
            position = max(position, keep[j][1])
            j += 1
        if position < stop:
            yield position, stop
