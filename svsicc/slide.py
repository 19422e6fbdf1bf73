"""What an Aperio SVS file holds: its pages, their roles, geometry and segments.

Built on :mod:`svsicc.tiff`; nothing here reads pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from . import tiff
from .exceptions import TiffFormatError, UnsupportedLayoutError

COMPRESSION_NAMES = {
    1: "none",
    5: "LZW",
    7: "JPEG",
    33003: "JPEG 2000 (Aperio YCbCr)",
    33005: "JPEG 2000 (Aperio RGB)",
}
PHOTOMETRIC_RGB = 2
PHOTOMETRIC_YCBCR = 6
# Geometry that would need more segments than this is corrupt, not a slide.
MAX_SEGMENTS = 50_000_000


class Role(str, Enum):
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
        return COMPRESSION_NAMES.get(self.compression, str(self.compression))

    @property
    def kind(self) -> str:
        return "tiled" if self.tiled else "stripped"


@dataclass(frozen=True)
class Slide:
    path: Path
    structure: tiff.TiffStructure
    pages: tuple[Page, ...]

    @property
    def description(self) -> str | None:
        return self.pages[0].description

    @property
    def is_aperio(self) -> bool:
        return bool(self.description and self.description.startswith("Aperio"))


def _role(index: int, subfile_type: int, tiled: bool, description: str | None) -> Role:
    text = description or ""
    if subfile_type & 1 and ("\nlabel " in text or subfile_type == 1):
        return Role.LABEL
    if subfile_type == 9 or "\nmacro " in text:
        return Role.MACRO
    if "\nlabel " in text:
        return Role.LABEL
    if index == 0 or tiled:
        return Role.LEVEL
    if index == 1:
        return Role.THUMBNAIL
    return Role.OTHER


def read_slide(reader: tiff.TiffReader) -> Slide:
    pages = tuple(_read_page(reader, ifd) for ifd in reader.structure.ifds)
    if not pages[0].tiled:
        raise UnsupportedLayoutError(
            reader.path, "IFD 0 is not tiled; an SVS slide keeps its full-resolution level in tiles"
        )
    return Slide(reader.path, reader.structure, pages)


def _read_page(reader: tiff.TiffReader, ifd: tiff.TiffIfd) -> Page:
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
    across = -(-width // seg_w) if tiled else 1
    down = -(-height // seg_h)
    spp = reader.int_value(ifd, tiff.TAG_SAMPLES_PER_PIXEL, 1) or 1
    planar = reader.int_value(ifd, tiff.TAG_PLANAR_CONFIG, 1) or 1
    expected = across * down * (spp if planar == 2 else 1)
    if expected > MAX_SEGMENTS:
        raise TiffFormatError(path, f"geometry needs {expected} segments", ifd=i)
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
    for n, (off, cnt) in enumerate(zip(offsets, counts, strict=True)):
        if cnt and off + cnt > reader.file_size:
            raise TiffFormatError(
                path,
                f"segment data at offset {off} (+{cnt} bytes) lies past the end of the file "
                f"({reader.file_size} bytes); the file is truncated",
                ifd=i,
                tile=n,
            )
    description = reader.ascii(ifd, tiff.TAG_IMAGE_DESCRIPTION)
    subfile = reader.int_value(ifd, tiff.TAG_NEW_SUBFILE_TYPE, 0) or 0
    return Page(
        index=i,
        ifd=ifd,
        role=_role(i, subfile, tiled, description),
        width=width,
        height=height,
        tiled=tiled,
        segment_width=seg_w,
        segment_height=seg_h,
        compression=reader.int_value(ifd, tiff.TAG_COMPRESSION, 1) or 1,
        photometric=reader.int_value(ifd, tiff.TAG_PHOTOMETRIC, PHOTOMETRIC_RGB) or 0,
        samples_per_pixel=spp,
        bits_per_sample=reader.ints(ifd, tiff.TAG_BITS_PER_SAMPLE) or (1,),
        planar=planar,
        predictor=reader.int_value(ifd, tiff.TAG_PREDICTOR, 1) or 1,
        offsets=offsets,
        byte_counts=counts,
        jpeg_tables=reader.raw_value(ifd, tiff.TAG_JPEG_TABLES),
        icc_profile=reader.raw_value(ifd, tiff.TAG_ICC_PROFILE),
        description=description,
    )
