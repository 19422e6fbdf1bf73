"""What a tiled slide TIFF holds: its pages, their roles, geometry and segments.

Built on :mod:`svsicc.tiff.file`; nothing here reads pixels. Which page is a pyramid level, the
thumbnail, the label or the macro is the format driver's call (:mod:`svsicc.drivers`); everything
else here holds for any TIFF. Everything a corrupt or hostile file
could use to make svsicc allocate gigabytes, loop, or overwrite one structure while rewriting
another is checked here, before any segment is read: segment counts against the geometry, segment
sizes against what their pixels can need, overlaps between segments and the file's structure, and
the JPEGTables marker structure. Each problem is a :class:`TiffFormatError` naming the IFD (and
tile).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from svsicc.codecs import jpeg_stream
from svsicc.codecs.codes import Compression, Photometric
from svsicc.codecs.registry import compression_name
from svsicc.exceptions import TiffFormatError
from svsicc.tiff import file as tiff
from svsicc.tiff.record import AppliedRecord

# Geometry that would need more segments than this is corrupt, not a slide: 4 million 240x240
# tiles are 230 gigapixels, ten times the largest slides scanned today.
MAX_SEGMENTS = 4_000_000
# A decoded segment is held as (rows, cols, 4) bytes: 64 Mpx is 256 MiB, far above any real tile
# or strip (Aperio: 240x240 or 256x256 tiles, strips of 16 rows).
MAX_SEGMENT_PIXELS = 1 << 26
# A compressed segment larger than this many times its raw size (plus headroom for markers) is a
# corrupt byte count; reading it would allocate whatever the count says.
MAX_EXPANSION = 8
SEGMENT_HEADROOM = 1 << 20
MAX_DESCRIPTION_BYTES = 4 << 20
MAX_ICC_BYTES = 64 << 20
MAX_JPEG_TABLES_BYTES = 1 << 20  # real ones are 289 bytes (AT2) to a few KiB
MAX_SAMPLES = 64


class Role(StrEnum):
    LEVEL = "level"
    THUMBNAIL = "thumbnail"
    LABEL = "label"
    MACRO = "macro"
    OTHER = "other"


@dataclass(frozen=True)
class Page:
    """One IFD with the facts needed to rewrite its segments (tiles or strips)."""

    index: int
    ifd: tiff.TiffIfd
    role: Role
    width: int
    height: int
    tiled: bool
    segment_width: int
    segment_height: int  # tile length, or rows per strip
    compression: int
    photometric: int
    samples_per_pixel: int
    bits_per_sample: tuple[int, ...]
    planar: int
    predictor: int
    offsets: tuple[int, ...]
    byte_counts: tuple[int, ...]
    jpeg_tables: bytes | None
    icc_profile: bytes | None
    description: str | None

    @property
    def offsets_tag(self) -> int:
        return tiff.TAG_TILE_OFFSETS if self.tiled else tiff.TAG_STRIP_OFFSETS

    @property
    def byte_counts_tag(self) -> int:
        return tiff.TAG_TILE_BYTE_COUNTS if self.tiled else tiff.TAG_STRIP_BYTE_COUNTS

    @property
    def segments_across(self) -> int:
        return -(-self.width // self.segment_width) if self.tiled else 1

    @property
    def segments_down(self) -> int:
        return -(-self.height // self.segment_height)

    def segment_shape(self, index: int) -> tuple[int, int]:
        """(rows, columns) of the pixels stored in segment ``index`` (tiles are padded)."""
        if self.tiled:
            return self.segment_height, self.segment_width
        last_rows = self.height - (self.segments_down - 1) * self.segment_height
        rows = self.segment_height if index < self.segments_down - 1 else last_rows
        return rows, self.width

    @property
    def compression_name(self) -> str:
        return compression_name(self.compression)

    @property
    def kind(self) -> str:
        return "tiled" if self.tiled else "stripped"


# The role of a page from its IFD index, NewSubfileType, whether it is tiled and its
# ImageDescription: each format driver has its own.
RoleRule = Callable[[int, int, bool, str | None], Role]


@dataclass(frozen=True)
class Slide:
    path: Path
    structure: tiff.TiffStructure
    pages: tuple[Page, ...]
    format_name: str  # the driver's name: "Aperio SVS", "generic tiled TIFF", "Ventana BIF"
    applied: AppliedRecord | None = None  # svsicc's record, if it converted this slide

    @property
    def description(self) -> str | None:
        return self.pages[0].description

    @property
    def level0(self) -> Page:
        """The full-resolution level: the first level page (Ventana puts its macro and
        thumbnail before the levels). Its tag 34675 is the one OpenSlide reads."""
        return next((p for p in self.pages if p.role is Role.LEVEL), self.pages[0])


def read_pages(reader: tiff.TiffReader, role: RoleRule) -> tuple[Page, ...]:
    """Every IFD as a :class:`Page`, its role from ``role``; refuses overlapping extents."""
    pages = tuple(_read_page(reader, ifd, role) for ifd in reader.structure.ifds)
    check_extents(reader.structure, pages)
    return pages


_SEGMENT, _VALUE, _STRUCTURE = 0, 1, 2


@dataclass(frozen=True)
class _Extent:
    start: int
    stop: int
    kind: int
    ifd: int
    item: int  # segment index, or tag

    def describe(self) -> str:
        if self.kind == _SEGMENT:
            return f"segment {self.item} of IFD {self.ifd} (offset {self.start}, {self.size} bytes)"
        if self.kind == _VALUE:
            return f"the value of tag {self.item} of IFD {self.ifd} (offset {self.start})"
        if self.ifd < 0:
            return "the file header"
        return f"the table of IFD {self.ifd} (offset {self.start})"

    @property
    def size(self) -> int:
        return self.stop - self.start


def check_extents(structure: tiff.TiffStructure, pages: tuple[Page, ...]) -> None:
    """Refuse files in which segments, IFD tables and tag values partly overlap.

    Rewriting a segment that overlaps anything else would corrupt the other. Identical extents
    are allowed among segments (scanners share one blank tile) and among tag values (shared
    JPEGTables); every other overlap is an error naming the IFD and segment. Vectorised: a
    slide has up to a few million segments.
    """
    rows = [(0, 16 if structure.bigtiff else 8, _STRUCTURE, -1, 0)]
    for ifd in structure.ifds:
        rows.append((ifd.offset, ifd.end, _STRUCTURE, ifd.index, 0))
        for entry in ifd.entries.values():
            if not entry.inline and entry.nbytes:
                stop = entry.value_offset + entry.nbytes
                rows.append((entry.value_offset, stop, _VALUE, ifd.index, entry.tag))
    parts = [np.array(rows, dtype=np.int64)]
    for page in pages:
        offsets = np.asarray(page.offsets, dtype=np.int64)
        counts = np.asarray(page.byte_counts, dtype=np.int64)
        (used,) = np.nonzero(counts)
        block = np.empty((used.size, 5), dtype=np.int64)
        block[:, 0] = offsets[used]
        block[:, 1] = offsets[used] + counts[used]
        block[:, 2] = _SEGMENT
        block[:, 3] = page.index
        block[:, 4] = used
        parts.append(block)
    table = np.concatenate(parts)
    table = table[np.lexsort((table[:, 2], table[:, 1], table[:, 0]))]
    # Identical extents of one kind (not IFD tables) count once.
    repeat = (table[1:, :3] == table[:-1, :3]).all(axis=1) & (table[1:, 2] != _STRUCTURE)
    table = table[np.concatenate(([True], ~repeat))]
    reach = np.maximum.accumulate(table[:, 1])
    (overlapping,) = np.nonzero(table[1:, 0] < reach[:-1])
    if not overlapping.size:
        return
    i = int(overlapping[0]) + 1
    j = int(np.argmax(table[:i, 1]))
    first, second = (_Extent(*(int(v) for v in table[k])) for k in (i, j))
    named = first if first.kind == _SEGMENT or second.kind != _SEGMENT else second
    other = second if named is first else first
    raise TiffFormatError(
        structure.path,
        f"{named.describe()} overlaps {other.describe()}; the file is corrupt",
        ifd=named.ifd if named.ifd >= 0 else None,
        tile=named.item if named.kind == _SEGMENT else None,
    )


def jpeg_tables_problem(data: bytes) -> str | None:
    """What is wrong with a JPEGTables value (SOI, DQT/DHT segments, EOI), or None."""
    try:
        for marker, start, end in jpeg_stream.marker_segments(data):
            if marker == jpeg_stream.EOI:
                return None
            if marker == jpeg_stream.SOS:
                return "holds a scan (SOS marker) where only tables belong"
            # Walked for their checks: an entry that runs past its segment raises.
            if marker == jpeg_stream.DQT:
                list(jpeg_stream.dqt_entries(data[start:end]))
            elif marker == jpeg_stream.DHT:
                list(jpeg_stream.dht_entries(data[start:end]))
    except jpeg_stream.JpegFormatError as exc:
        return f"is malformed: {exc}"
    return "is truncated: no EOI marker"


def _read_page(reader: tiff.TiffReader, ifd: tiff.TiffIfd, role: RoleRule) -> Page:
    path, i = reader.path, ifd.index

    def need(tag: int, name: str) -> int:
        value = reader.int_value(ifd, tag)
        if value is None:
            raise TiffFormatError(path, f"missing {name} tag", ifd=i)
        return value

    width = need(tiff.TAG_IMAGE_WIDTH, "ImageWidth")
    height = need(tiff.TAG_IMAGE_LENGTH, "ImageLength")
    if width <= 0 or height <= 0:
        raise TiffFormatError(path, f"image size {width}x{height}", ifd=i)
    tiled = tiff.TAG_TILE_WIDTH in ifd.entries
    if tiled:
        seg_w = need(tiff.TAG_TILE_WIDTH, "TileWidth")
        seg_h = need(tiff.TAG_TILE_LENGTH, "TileLength")
        offsets_tag, counts_tag = tiff.TAG_TILE_OFFSETS, tiff.TAG_TILE_BYTE_COUNTS
    else:
        seg_w = width
        seg_h = min(reader.int_value(ifd, tiff.TAG_ROWS_PER_STRIP, height) or height, height)
        offsets_tag, counts_tag = tiff.TAG_STRIP_OFFSETS, tiff.TAG_STRIP_BYTE_COUNTS
    if seg_w <= 0 or seg_h <= 0:
        raise TiffFormatError(path, f"segment size {seg_w}x{seg_h}", ifd=i)
    if seg_w * seg_h > MAX_SEGMENT_PIXELS:
        raise TiffFormatError(
            path,
            f"{'tiles' if tiled else 'strips'} of {seg_w}x{seg_h} pixels: too large to be real; "
            "the file is corrupt",
            ifd=i,
        )
    across = -(-width // seg_w) if tiled else 1
    down = -(-height // seg_h)
    spp = reader.int_value(ifd, tiff.TAG_SAMPLES_PER_PIXEL, 1) or 1
    planar = reader.int_value(ifd, tiff.TAG_PLANAR_CONFIG, 1) or 1
    expected = across * down * (spp if planar == 2 else 1)
    if expected > MAX_SEGMENTS:
        raise TiffFormatError(
            path,
            f"a {width}x{height} image in {seg_w}x{seg_h} segments needs {expected} of them; "
            "the file is corrupt",
            ifd=i,
        )
    for tag, name in ((offsets_tag, "offsets"), (counts_tag, "byte counts")):
        entry = ifd.entries.get(tag)
        if entry is None:
            raise TiffFormatError(path, f"missing segment {name} tag", ifd=i)
        if entry.count != expected:
            raise TiffFormatError(
                path,
                f"{entry.count} segment {name} for a {width}x{height} image in "
                f"{seg_w}x{seg_h} segments (expected {expected})",
                ifd=i,
            )
    offsets = reader.ints(ifd, offsets_tag) or ()
    counts = reader.ints(ifd, counts_tag) or ()
    bits = reader.ints(ifd, tiff.TAG_BITS_PER_SAMPLE, max_count=MAX_SAMPLES) or (1,)
    raw_bytes = seg_w * seg_h * max(spp, 1) * max(1, -(-max(bits) // 8))
    largest = MAX_EXPANSION * raw_bytes + SEGMENT_HEADROOM
    for n, (off, cnt) in enumerate(zip(offsets, counts, strict=True)):
        if cnt and off + cnt > reader.file_size:
            raise TiffFormatError(
                path,
                f"segment data at offset {off} (+{cnt} bytes) lies past the end of the file "
                f"({reader.file_size} bytes); the file is truncated",
                ifd=i,
                tile=n,
            )
        if cnt > largest:
            raise TiffFormatError(
                path,
                f"segment claims {cnt} bytes, more than {seg_w}x{seg_h} pixels can need; the byte "
                "count is corrupt",
                ifd=i,
                tile=n,
            )
    compression = reader.int_value(ifd, tiff.TAG_COMPRESSION, 1) or 1
    jpeg_tables = reader.raw_value(ifd, tiff.TAG_JPEG_TABLES, MAX_JPEG_TABLES_BYTES) or None
    if jpeg_tables is not None and compression == Compression.JPEG:
        problem = jpeg_tables_problem(jpeg_tables)
        if problem:
            raise TiffFormatError(path, f"JPEGTables (tag 347) {problem}", ifd=i)
    description = reader.ascii(ifd, tiff.TAG_IMAGE_DESCRIPTION, MAX_DESCRIPTION_BYTES)
    subfile = reader.int_value(ifd, tiff.TAG_NEW_SUBFILE_TYPE, 0) or 0
    return Page(
        index=i,
        ifd=ifd,
        role=role(i, subfile, tiled, description),
        width=width,
        height=height,
        tiled=tiled,
        segment_width=seg_w,
        segment_height=seg_h,
        compression=compression,
        photometric=reader.int_value(ifd, tiff.TAG_PHOTOMETRIC, Photometric.RGB) or 0,
        samples_per_pixel=spp,
        bits_per_sample=bits,
        planar=planar,
        predictor=reader.int_value(ifd, tiff.TAG_PREDICTOR, 1) or 1,
        offsets=offsets,
        byte_counts=counts,
        jpeg_tables=jpeg_tables,
        icc_profile=reader.raw_value(ifd, tiff.TAG_ICC_PROFILE, MAX_ICC_BYTES),
        description=description,
    )
