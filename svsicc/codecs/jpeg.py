"""JPEG tiles: decode with libjpeg-turbo, re-encode with the source's own tables, sampling and
colourspace, and splice the result so its marker set matches the source tile.

Two real layouts matter:

* Aperio / AT2 / ImageScope: abbreviated streams (SOI, SOF0, SOS, EOI) in RGB colourspace with
  component IDs 0, 1, 2, no JFIF or Adobe marker; DQT and DHT live in the IFD's JPEGTables.
* GT450: self-contained JFIF YCbCr streams (4:2:0 / 4:2:2 / 4:4:4).

The SOF decides sampling; Photometric decides colourspace (as OpenSlide does). The decoder is
libjpeg-turbo through simplejpeg's TurboJPEG binding, strict: libjpeg's warnings (a damaged tile
it would fill with grey) are errors, in the same single pass (:class:`DecodeStream`). The encoder is
libjpeg-turbo through imagecodecs when the source's tables are IJG tables at some quality
(:mod:`svsicc.codecs.ijg`), else Pillow (libjpeg-turbo too), which accepts explicit quantisation
tables; either way its markers are then replaced by the source's so the tile differs from the
original only in its entropy-coded data.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import simplejpeg
from PIL import Image

from svsicc.exceptions import CodecError

if TYPE_CHECKING:
    from svsicc.codecs.ijg import IjgEncoder

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

PHOTOMETRIC_RGB = 2
PHOTOMETRIC_YCBCR = 6

_PILLOW_SUBSAMPLING = {(1, 1): 0, (2, 1): 1, (2, 2): 2}
MAX_CACHED_HEADERS = 64  # optimised Huffman tables differ per tile: do not cache those forever


class JpegFormatError(CodecError):
    """A JPEG stream svsicc cannot parse or cannot reproduce faithfully."""


@dataclass(frozen=True)
class Segment:
    marker: int
    payload: bytes  # the bytes after the 2-byte length

    def to_bytes(self) -> bytes:
        return bytes((0xFF, self.marker)) + struct.pack(">H", len(self.payload) + 2) + self.payload


def _marker_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
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
    raise JpegFormatError("no SOS marker")


def split_header(data: bytes) -> tuple[list[Segment], bytes]:
    """Marker segments before the first SOS, and the rest of the stream from that SOS on."""
    segments: list[Segment] = []
    for marker, start, end in _marker_segments(data):
        if marker == EOI:
            return segments, b"\xff\xd9"
        if marker == SOS:
            return segments, data[start - 2 :]
        segments.append(Segment(marker, data[start:end]))
    raise AssertionError("unreachable: _marker_segments ends with SOS or EOI or raises")


def _dqt_entries(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """(table id, the entry bytes including its Pq/Tq byte) of each table in a DQT payload."""
    pos = 0
    while pos < len(payload):
        precision = payload[pos] >> 4
        size = 1 + 64 * (2 if precision else 1)
        if pos + size > len(payload):
            raise JpegFormatError("truncated DQT")
        yield payload[pos] & 0x0F, payload[pos : pos + size]
        pos += size


def _dht_entries(payload: bytes) -> Iterator[tuple[int, bytes]]:
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
                quant.update(_dqt_entries(seg.payload))
            elif seg.marker == DHT:
                huffman.update(_dht_entries(seg.payload))
        return cls(quant, huffman)

    @classmethod
    def from_jpeg_tables(cls, data: bytes | None) -> TableSet:
        if not data:
            return cls({}, {})
        segments, _ = split_header(data)
        return cls.from_segments(segments)

    def merged(self, other: TableSet) -> TableSet:
        return TableSet({**self.quant, **other.quant}, {**self.huffman, **other.huffman})


@lru_cache(maxsize=1)
def standard_huffman_tables() -> dict[int, bytes]:
    """The Annex K tables libjpeg writes when not optimising."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", quality=90)
    segments, _ = split_header(buf.getvalue())
    return TableSet.from_segments(segments).huffman


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


def _natural_order(entry: bytes) -> tuple[int, ...]:
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
    sampling = _PILLOW_SUBSAMPLING.get((comps[0].h, comps[0].v))
    if sampling is None:
        raise JpegFormatError(f"component sampling {comps[0].h}x{comps[0].v} is not supported")
    assignment = tuple(c.tq for c in comps)
    if assignment not in ((0, 0, 0), (0, 1, 1), (0, 1, 2)):
        raise JpegFormatError(f"quantisation table assignment {assignment} is not supported")
    try:
        qtables = tuple(_natural_order(tables.quant[t]) for t in sorted(set(assignment)))
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
    if photometric not in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR):
        raise JpegFormatError(f"photometric interpretation {photometric} is not RGB or YCbCr")
    wanted = "RGB" if photometric == PHOTOMETRIC_RGB else "YCbCr"
    for seg in segments:
        if seg.marker == 0xEE and seg.payload[:5] == b"Adobe" and len(seg.payload) >= 12:
            marked = "YCbCr" if seg.payload[11] == 1 else "RGB"
            if marked != wanted:
                raise JpegFormatError(f"Adobe marker says {marked} but Photometric says {wanted}")
    return wanted


def _is_jfif(seg: Segment) -> bool:
    return seg.marker == 0xE0 and len(seg.payload) >= 14 and seg.payload[:5] == b"JFIF\x00"


def _adobe_marker(transform: int) -> bytes:
    """An Adobe APP14 segment (version 100, no flags) naming the colour transform: libjpeg reads
    3 components as RGB for transform 0 and as YCbCr for 1."""
    return Segment(0xEE, b"Adobe" + bytes((0, 100, 0, 0, 0, 0, transform))).to_bytes()


@dataclass(frozen=True)
class DecodeStream:
    """How one kind of tile becomes a stream TurboJPEG decodes to the pixels imagecodecs'
    ``jpeg8_decode(tile, tables=JPEGTables, colorspace=<Photometric's>)`` gives.

    TurboJPEG takes neither separate tables nor a colourspace: libjpeg deduces the colourspace
    from the markers (JFIF: YCbCr; else an Adobe marker's transform; else the component IDs,
    which for Aperio's 0, 1, 2 mean YCbCr). So the stream is the tile after its SOI, behind
    ``prefix``: SOI, an Adobe marker naming Photometric's colourspace unless a JFIF marker
    already does, and the JPEGTables' DQT and DHT segments. Only a JFIF tile under Photometric
    RGB needs its header rebuilt, without that marker.
    """

    prefix: bytes
    drop_jfif: bool

    @classmethod
    def for_settings(cls, settings: JpegSettings, table_segments: bytes) -> DecodeStream:
        jfif = any(_is_jfif(seg) for seg in settings.app_segments)
        if settings.colorspace == "YCbCr":
            # A tile's own Adobe marker comes later and wins: parse_settings checked it agrees.
            marker = b"" if jfif else _adobe_marker(1)
            return cls(b"\xff\xd8" + marker + table_segments, drop_jfif=False)
        return cls(b"\xff\xd8" + _adobe_marker(0) + table_segments, drop_jfif=jfif)

    def of(self, tile: bytes) -> bytes:
        if self.drop_jfif:
            segments, scan = split_header(tile)
            header = b"".join(seg.to_bytes() for seg in segments if not _is_jfif(seg))
            return b"".join((self.prefix, header, scan))
        if len(self.prefix) == 2:
            return tile  # self-contained and libjpeg reads the right colourspace: as it is
        return b"".join((self.prefix, memoryview(tile)[2:]))


class JpegCodec:
    """Decode to BGRX and encode from RGBX/BGRX, reproducing the source tile's stream."""

    lossless = False
    # False: every tile through Pillow with explicit tables (tests compare the two encoders).
    use_ijg = True

    def __init__(self, jpeg_tables: bytes | None, photometric: int) -> None:
        self._raw_tables = jpeg_tables or None
        self._shared = TableSet.from_jpeg_tables(jpeg_tables)
        self._photometric = photometric
        self._settings: dict[bytes, JpegSettings] = {}
        self._spliced: dict[tuple[int, bytes], bytes] = {}
        self._ijg: dict[int, IjgEncoder | None] = {}
        self._streams: dict[int, DecodeStream] = {}
        # What libjpeg keeps from JPEGTables when imagecodecs loads them before a tile: only the
        # tables (the tile's SOI resets markers and restart interval).
        self._table_segments = b"".join(
            seg.to_bytes()
            for seg in (split_header(jpeg_tables)[0] if jpeg_tables else ())
            if seg.marker in (DQT, DHT)
        )
        self._last_header: tuple[int, bytes, bytes] | None = None  # settings id, encoder's, spliced

    def settings_for(self, tile: bytes) -> JpegSettings:
        sos = tile.find(b"\xff\xda")
        key = tile[: sos if sos > 0 else 512]
        settings = self._settings.get(key)
        if settings is None:
            settings = parse_settings(tile, self._shared, self._photometric)
            self._settings[key] = settings
        return settings

    def decode(self, tile: bytes, rows: int, cols: int) -> np.ndarray:
        settings = self.settings_for(tile)
        # Checked before decoding: a corrupt frame header can claim 65520x65520 pixels.
        if settings.width != cols or not rows <= settings.height <= 2 * rows + 16:
            raise JpegFormatError(
                f"frame header says {settings.width}x{settings.height}, expected {cols}x{rows}"
            )
        stream = self._stream(settings).of(tile)
        try:
            pixels: np.ndarray = simplejpeg.decode_jpeg(stream, colorspace="BGRX", strict=True)
        except ValueError as exc:
            raise JpegFormatError(self._failure(tile, stream, settings, str(exc))) from None
        if pixels.shape[:2] != (rows, cols):
            if pixels.shape[0] < rows or pixels.shape[1] < cols:
                raise JpegFormatError(
                    f"decodes to {pixels.shape[1]}x{pixels.shape[0]}, expected {cols}x{rows}"
                )
            pixels = pixels[:rows, :cols]
        return pixels

    def _failure(
        self, tile: bytes, stream: bytes | memoryview, settings: JpegSettings, message: str
    ) -> str:
        """What is wrong with a tile strict decoding refused. A stream libjpeg decodes when it
        may only warn is damaged data it would fill with grey (cut short, garbled entropy-coded
        data); one it cannot decode at all is an error, named in libjpeg's own words:
        TurboJPEG's header check can refuse first, more vaguely ("Could not determine
        subsampling level" where libjpeg says "Invalid component ID 9 in SOS")."""
        try:
            simplejpeg.decode_jpeg(stream, colorspace="BGRX", strict=False)
        except ValueError:
            pass
        else:
            return f"damaged data, libjpeg: {message}"
        import imagecodecs  # only on this path: a tile that cannot be decoded

        cs = imagecodecs.JPEG8.CS
        try:
            imagecodecs.jpeg8_decode(
                tile,
                tables=self._raw_tables,
                colorspace=cs.RGB if settings.colorspace == "RGB" else cs.YCbCr,
            )
        except (imagecodecs.Jpeg8Error, ValueError) as exc:
            message = str(exc)
        return f"libjpeg cannot decode it: {message}"

    def _stream(self, settings: JpegSettings) -> DecodeStream:
        key = id(settings)  # settings live in self._settings: stable ids
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = DecodeStream.for_settings(settings, self._table_segments)
        return stream

    def encode(self, pixels: np.ndarray, layout: str, source_tile: bytes) -> bytes:
        """Encode (rows, cols, 4) uint8 pixels in ``layout`` ("RGBX" or "BGRX")."""
        settings = self.settings_for(source_tile)
        fast = self._ijg_encoder(settings)
        if fast is not None:
            encoded = fast.encode(np.ascontiguousarray(pixels), layout)
        else:
            encoded = self._pillow_encode(pixels, layout, settings)
        # The encoder writes the same headers for every tile of a kind (Huffman tables change
        # only when optimised): splice each distinct header once, then reuse it. The last one
        # is compared first, byte for byte, which is cheaper than walking the markers again.
        last = self._last_header
        if last is not None and last[0] == id(settings) and encoded.startswith(last[1]):
            scan, header = len(last[1]), last[2]
        else:
            scan = scan_data_start(encoded)
            key = (id(settings), encoded[:scan])  # settings live in self._settings: stable ids
            cached = self._spliced.get(key)
            if cached is None:
                cached = splice(encoded[:scan] + b"\xff\xd9", settings)[:-2]
                if len(self._spliced) < MAX_CACHED_HEADERS:
                    self._spliced[key] = cached
            header = cached
            self._last_header = (key[0], key[1], header)
        return b"".join((header, memoryview(encoded)[scan:]))

    def _ijg_encoder(self, settings: JpegSettings) -> IjgEncoder | None:
        """imagecodecs' encoder when the source's tables are IJG tables (decided once per kind
        of tile), else None: Pillow with the tables given explicitly."""
        key = id(settings)
        if key not in self._ijg:
            from svsicc.codecs.ijg import ijg_encoder  # ijg builds on this module

            self._ijg[key] = ijg_encoder(settings) if self.use_ijg else None
        return self._ijg[key]

    @staticmethod
    def _pillow_encode(pixels: np.ndarray, layout: str, settings: JpegSettings) -> bytes:
        rows, cols = pixels.shape[:2]
        if layout == "RGBX" and pixels.flags.c_contiguous:
            # An RGBX image maps the array as it is (no unpacking copy); the JPEG encoder reads
            # its first three bytes per pixel, exactly as from an RGB image.
            image = Image.frombuffer("RGBX", (cols, rows), pixels, "raw", "RGBX", 0, 1)
        else:
            image = Image.frombuffer("RGB", (cols, rows), pixels, "raw", layout, 0, 1)
        options: dict[str, object] = {
            "qtables": [list(t) for t in settings.qtables],
            "subsampling": settings.subsampling,
            "optimize": settings.optimize,
        }
        if settings.colorspace == "RGB":
            options["keep_rgb"] = True
        if settings.restart_interval:
            options["restart_marker_blocks"] = settings.restart_interval
        buf = io.BytesIO()
        try:
            image.save(buf, "JPEG", **options)
        except (OSError, ValueError) as exc:  # what Pillow raises for what libjpeg refuses
            raise JpegFormatError(f"libjpeg cannot encode it: {exc}") from None
        return buf.getvalue()


def scan_data_start(data: bytes) -> int:
    """Offset of the entropy-coded data: just after the first SOS segment."""
    for marker, start, _ in _marker_segments(data):
        if marker == SOS and start + 2 <= len(data):
            return start + (data[start] << 8 | data[start + 1])
    raise JpegFormatError("no SOS marker")


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
            entries = [e for k, e in _dqt_entries(seg.payload) if shared.quant.get(k) != e]
            if entries:
                out.append(Segment(DQT, b"".join(entries)).to_bytes())
        elif seg.marker == DHT:
            entries = [e for k, e in _dht_entries(seg.payload) if shared.huffman.get(k) != e]
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
