"""The structure of a JPEG stream, in one place: the marker walk (every segment checked to lie
within the data), the tables (DQT, DHT), the frame's components and sampling, the colourspace the
markers and Photometric imply, and the splice that gives an encoded tile the source's markers.

The codec (:mod:`svsicc.codecs.jpeg`), the fast encoder (:mod:`svsicc.codecs.ijg`) and the
slide model's JPEGTables check (:mod:`svsicc.tiff.slide`) all read streams through it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from svsicc.codecs.codes import Photometric
from svsicc.exceptions import CodecError

ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
    20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58,
    59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip

SOI, EOI, SOS, DQT, DHT, DRI, SOF0, SOF1, SOF2 = (
    0xD8,
    0xD9,
    0xDA,
    0xDB,
    0xC4,
    0xDD,
    0xC0,
    0xC1,
    0xC2,
)

SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)

APP_OR_COM = frozenset(range(0xE0, 0xF0)) | {0xFE}


PILLOW_SUBSAMPLING = {(1, 1): 0, (2, 1): 1, (2, 2): 2}


class JpegFormatError(CodecError):
    """A JPEG stream svsicc cannot parse or cannot reproduce faithfully."""


@dataclass(frozen=True)
class Segment:
    marker: int
    payload: bytes  # the bytes after the 2-byte length

    def to_bytes(self) -> bytes:
        return bytes((0xFF, self.marker)) + struct.pack(">H", len(self.payload) + 2) + self.payload


def marker_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, payload start, segment end) of each marker segment after SOI, checked to lie
    within ``data``, ending with the first SOS or EOI, yielded as (marker, offset just after
    it, same offset): what follows is the scan's business."""
    if data[:2] != b"\xff\xd8":
        raise JpegFormatError("no SOI marker")
    pos = 2
    n = len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise JpegFormatError(f"expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in (EOI, SOS):
            yield marker, pos, pos
            return
        if pos + 2 > n:
            raise JpegFormatError("truncated marker segment")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > n:
            raise JpegFormatError(f"marker 0x{marker:02X} length {length} runs past the end")
        yield marker, pos + 2, pos + length
        pos += length
    raise JpegFormatError("ends before an SOS or EOI marker")


def split_header(data: bytes) -> tuple[list[Segment], bytes]:
    """Marker segments before the first SOS, and the rest of the stream from that SOS on."""
    segments: list[Segment] = []
    for marker, start, end in marker_segments(data):
        if marker == EOI:
            return segments, b"\xff\xd9"
        if marker == SOS:
            return segments, data[start - 2 :]
        segments.append(Segment(marker, data[start:end]))
    raise AssertionError("unreachable: marker_segments ends with SOS or EOI or raises")


def dqt_entries(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """(table id, the entry bytes including its Pq/Tq byte) of each table in a DQT payload."""
    pos = 0
    while pos < len(payload):
        precision = payload[pos] >> 4
        size = 1 + 64 * (2 if precision else 1)
        if pos + size > len(payload):
            raise JpegFormatError("truncated DQT")
        yield payload[pos] & 0x0F, payload[pos : pos + size]
        pos += size


def dht_entries(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """((class << 4) | id, the entry bytes) of each table in a DHT payload."""
    pos = 0
    while pos < len(payload):
        if pos + 17 > len(payload):
            raise JpegFormatError("truncated DHT")
        size = 17 + sum(payload[pos + 1 : pos + 17])
        if pos + size > len(payload):
            raise JpegFormatError("truncated DHT")
        yield payload[pos], payload[pos : pos + size]
        pos += size


@dataclass(frozen=True)
class TableSet:
    """Quantisation and Huffman tables keyed by id, e.g. from an IFD's JPEGTables."""

    quant: dict[int, bytes]
    huffman: dict[int, bytes]

    @classmethod
    def from_segments(cls, segments: list[Segment]) -> TableSet:
        quant: dict[int, bytes] = {}
        huffman: dict[int, bytes] = {}
        for seg in segments:
            if seg.marker == DQT:
                quant.update(dqt_entries(seg.payload))
            elif seg.marker == DHT:
                huffman.update(dht_entries(seg.payload))
        return cls(quant, huffman)

    @classmethod
    def from_jpeg_tables(cls, data: bytes | None) -> TableSet:
        if not data:
            return cls({}, {})
        segments, _ = split_header(data)
        return cls.from_segments(segments)

    def merged(self, other: TableSet) -> TableSet:
        return TableSet({**self.quant, **other.quant}, {**self.huffman, **other.huffman})


# ITU-T T.81 Annex K tables (K.3-K.6), the ones libjpeg writes when not optimising, as DHT
# entries (Tc/Th byte, 16 code-length counts, symbols): constants rather than read back from an
# encode at start-up (a test checks them against what Pillow's libjpeg writes).
_ANNEX_K = {
    0x00: "0000010501010101010100000000000000000102030405060708090a0b",
    0x01: "0100030101010101010101010000000000000102030405060708090a0b",
    0x10: "100002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342"
    "b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a53545556"
    "5758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7"
    "a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3"
    "f4f5f6f7f8f9fa",
    0x11: "1100020102040403040705040400010277000102031104052131061241510761711322328108144291a1"
    "b1c109233352f0156272d10a162434e125f11718191a262728292a35363738393a434445464748494a5354"
    "55565758595a636465666768696a737475767778797a82838485868788898a92939495969798999aa2a3a4"
    "a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2"
    "f3f4f5f6f7f8f9fa",
}


@lru_cache(maxsize=1)
def standard_huffman_tables() -> dict[int, bytes]:
    """The Annex K tables libjpeg writes when not optimising, keyed by their Tc/Th byte."""
    return {key: bytes.fromhex(entry) for key, entry in _ANNEX_K.items()}


@dataclass(frozen=True)
class Component:
    id: int
    h: int
    v: int
    tq: int


@dataclass(frozen=True)
class JpegSettings:
    """How to re-encode one kind of tile so it matches the source tile's stream."""

    width: int
    height: int
    colorspace: str  # "RGB" or "YCbCr": what the three components hold
    components: tuple[Component, ...]
    qtables: tuple[tuple[int, ...], ...]  # natural order, in Pillow's component assignment
    subsampling: int  # Pillow's code: 0 4:4:4, 1 4:2:2, 2 4:2:0
    optimize: bool  # the source's Huffman tables are not the standard ones
    restart_interval: int
    app_segments: tuple[Segment, ...]  # copied verbatim (JFIF, EXIF, COM...)
    shared_tables: TableSet  # the IFD's JPEGTables: tables found there are left out of tiles

    @property
    def sampling_name(self) -> str:
        return {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}[self.subsampling]


def natural_order(entry: bytes) -> tuple[int, ...]:
    precision = entry[0] >> 4
    values = struct.unpack(">64H", entry[1:129]) if precision else tuple(entry[1:65])
    natural = [0] * 64
    for k, v in enumerate(values):
        natural[ZIGZAG[k]] = v
    return tuple(natural)


def parse_settings(tile: bytes, shared: TableSet, photometric: int) -> JpegSettings:
    segments, _ = split_header(tile)
    tables = shared.merged(TableSet.from_segments(segments))
    sof = [s for s in segments if s.marker in SOF_MARKERS]
    if len(sof) != 1:
        raise JpegFormatError("no frame header (SOF)")
    if sof[0].marker == SOF2:
        raise JpegFormatError("progressive JPEG tiles are not supported")
    if sof[0].marker not in (SOF0, SOF1):
        raise JpegFormatError(f"JPEG process 0x{sof[0].marker:02X} is not supported")
    p = sof[0].payload
    precision, height, width, ncomp = struct.unpack_from(">BHHB", p)
    if precision != 8:
        raise JpegFormatError(f"{precision}-bit JPEG is not supported")
    if ncomp != 3:
        raise JpegFormatError(f"{ncomp}-component JPEG is not supported (RGB slides have 3)")
    comps = tuple(
        Component(p[6 + 3 * i], p[7 + 3 * i] >> 4, p[7 + 3 * i] & 15, p[8 + 3 * i])
        for i in range(ncomp)
    )
    if any((c.h, c.v) != (1, 1) for c in comps[1:]):
        raise JpegFormatError("chroma components with sampling other than 1x1")
    sampling = PILLOW_SUBSAMPLING.get((comps[0].h, comps[0].v))
    if sampling is None:
        raise JpegFormatError(f"component sampling {comps[0].h}x{comps[0].v} is not supported")
    assignment = tuple(c.tq for c in comps)
    if assignment not in ((0, 0, 0), (0, 1, 1), (0, 1, 2)):
        raise JpegFormatError(f"quantisation table assignment {assignment} is not supported")
    try:
        qtables = tuple(natural_order(tables.quant[t]) for t in sorted(set(assignment)))
    except KeyError as exc:
        raise JpegFormatError(f"quantisation table {exc.args[0]} is not defined") from None
    colorspace = _colorspace(segments, comps, photometric)
    if colorspace == "RGB" and sampling != 0:
        raise JpegFormatError("subsampled RGB-colourspace JPEG is not supported")
    standard = standard_huffman_tables()
    optimize = any(standard.get(k) != v for k, v in tables.huffman.items())
    dri = [s for s in segments if s.marker == DRI]
    restart = struct.unpack(">H", dri[0].payload[:2])[0] if dri else 0
    return JpegSettings(
        width=width,
        height=height,
        colorspace=colorspace,
        components=comps,
        qtables=qtables,
        subsampling=sampling,
        optimize=optimize,
        restart_interval=restart,
        app_segments=tuple(s for s in segments if s.marker in APP_OR_COM),
        shared_tables=shared,
    )


def _colorspace(segments: list[Segment], comps: tuple[Component, ...], photometric: int) -> str:
    """Photometric decides, as in OpenSlide; markers that contradict it are an error."""
    if photometric not in (Photometric.RGB, Photometric.YCBCR):
        raise JpegFormatError(f"photometric interpretation {photometric} is not RGB or YCbCr")
    wanted = "RGB" if photometric == Photometric.RGB else "YCbCr"
    for seg in segments:
        if seg.marker == 0xEE and seg.payload[:5] == b"Adobe" and len(seg.payload) >= 12:
            marked = "YCbCr" if seg.payload[11] == 1 else "RGB"
            if marked != wanted:
                raise JpegFormatError(f"Adobe marker says {marked} but Photometric says {wanted}")
    return wanted


def is_jfif(seg: Segment) -> bool:
    return seg.marker == 0xE0 and len(seg.payload) >= 14 and seg.payload[:5] == b"JFIF\x00"


def adobe_marker(transform: int) -> bytes:
    """An Adobe APP14 segment (version 100, no flags) naming the colour transform: libjpeg reads
    3 components as RGB for transform 0 and as YCbCr for 1."""
    return Segment(0xEE, b"Adobe" + bytes((0, 100, 0, 0, 0, 0, transform))).to_bytes()


def scan_data_start(data: bytes) -> int:
    """Offset of the entropy-coded data: just after the first SOS segment."""
    for marker, start, _ in marker_segments(data):
        if marker == SOS and start + 2 <= len(data):
            return start + (data[start] << 8 | data[start + 1])
    raise JpegFormatError("ends before an SOS or EOI marker")


def splice(encoded: bytes, settings: JpegSettings) -> bytes:
    """Give a fresh encoder stream the source tile's markers, component IDs and table layout."""
    segments, scan = split_header(encoded)
    out = [b"\xff\xd8"]
    out.extend(s.to_bytes() for s in settings.app_segments)
    shared = settings.shared_tables
    ids = [c.id for c in settings.components]
    for seg in segments:
        if seg.marker in APP_OR_COM:
            continue  # the encoder's JFIF/Adobe markers; the source's were written above
        if seg.marker == DQT:
            entries = [e for k, e in dqt_entries(seg.payload) if shared.quant.get(k) != e]
            if entries:
                out.append(Segment(DQT, b"".join(entries)).to_bytes())
        elif seg.marker == DHT:
            entries = [e for k, e in dht_entries(seg.payload) if shared.huffman.get(k) != e]
            if entries:
                out.append(Segment(DHT, b"".join(entries)).to_bytes())
        elif seg.marker in SOF_MARKERS:
            payload = bytearray(seg.payload)
            for i, cid in enumerate(ids):
                payload[6 + 3 * i] = cid
            out.append(Segment(seg.marker, bytes(payload)).to_bytes())
        else:
            out.append(seg.to_bytes())
    # The SOS header names components by ID too.
    sos_len = struct.unpack_from(">H", scan, 2)[0]
    sos = bytearray(scan[: 2 + sos_len])
    for i in range(sos[4]):
        sos[5 + 2 * i] = ids[i]
    out.append(bytes(sos))
    out.append(scan[2 + sos_len :])
    return b"".join(out)
