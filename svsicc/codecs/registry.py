"""The compressions svsicc converts, in one table: TIFF code, name, how a segment of it starts,
and the codec that reads and writes it.

Adding a codec touches this table and the codec's own module; the engine, the slide model,
verify and apply ask here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from svsicc.codecs import SegmentCodec
from svsicc.codecs.codes import Compression, Photometric

__all__ = [
    "COMPRESSIONS",
    "CodecEntry",
    "Compression",
    "PageCoding",
    "Photometric",
    "compression_name",
    "entry_for",
    "is_supported",
    "make_codec",
    "stream_magic",
]


@dataclass(frozen=True)
class PageCoding:
    """What a codec needs to know about a page besides its segments."""

    compression: int
    jpeg_tables: bytes | None = None
    photometric: int = Photometric.RGB
    predictor: int = 1


@dataclass(frozen=True)
class CodecEntry:
    name: str
    # The first bytes of every encoded segment (None: raw samples, anything goes).
    stream_magic: bytes | None
    make: Callable[[PageCoding], SegmentCodec]


def _jpeg(coding: PageCoding) -> SegmentCodec:
    from svsicc.codecs.jpeg import JpegCodec

    return JpegCodec(coding.jpeg_tables, coding.photometric)


def _lossless(coding: PageCoding) -> SegmentCodec:
    from svsicc.codecs.lossless import LosslessCodec

    return LosslessCodec(coding.compression, coding.predictor)


def _jpeg2000(coding: PageCoding) -> SegmentCodec:
    # Imported on first use: the OpenJPEG binding is only needed for JPEG 2000 slides.
    from svsicc.codecs.jpeg2k import Jpeg2000Codec

    codec: SegmentCodec = Jpeg2000Codec(coding.compression)
    return codec


_J2K_MAGIC = b"\xff\x4f"  # SOC

COMPRESSIONS: dict[Compression, CodecEntry] = {
    Compression.NONE: CodecEntry("none", None, _lossless),
    Compression.LZW: CodecEntry("LZW", None, _lossless),
    Compression.JPEG: CodecEntry("JPEG", b"\xff\xd8", _jpeg),
    Compression.JPEG2000_YCBCR: CodecEntry("JPEG 2000 (Aperio YCbCr)", _J2K_MAGIC, _jpeg2000),
    Compression.JPEG2000_RGB: CodecEntry("JPEG 2000 (Aperio RGB)", _J2K_MAGIC, _jpeg2000),
}


def entry_for(compression: int) -> CodecEntry | None:
    """The registry's entry, None for a compression svsicc does not convert."""
    try:
        return COMPRESSIONS[Compression(compression)]
    except ValueError:
        return None


def is_supported(compression: int) -> bool:
    return entry_for(compression) is not None


def compression_name(compression: int) -> str:
    """The registry's name, or the bare number for a compression svsicc does not convert."""
    entry = entry_for(compression)
    return str(compression) if entry is None else entry.name


def stream_magic(compression: int) -> bytes | None:
    entry = entry_for(compression)
    return None if entry is None else entry.stream_magic


def make_codec(coding: PageCoding) -> SegmentCodec:
    """The codec for ``coding``'s compression; KeyError for one :func:`is_supported` refuses."""
    return COMPRESSIONS[Compression(coding.compression)].make(coding)
