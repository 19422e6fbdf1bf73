"""Synthetic Aperio SVS slides built from real pixels, for tests and benchmarks.

No public GT450 or AT2 slide exists, so this module writes files that copy their layout byte for
byte where it matters, using its own small TIFF writer (tifffile's writer cannot reorder tile data,
write zero-length tiles or abbreviated JPEG streams).

API
---
``SlideSpec``                 frozen description of the file to write (fields documented below).
``preset(style, **changes)``  a ``SlideSpec`` with the defaults of the real scanner of that style.
``write_slide(path, rgb, spec) -> Path``  write ``rgb`` (H x W x 3 uint8, may be a memmap).
``load_real_pixels(name="CMU-1-Small-Region.svs", page=0)``  decoded page of a file in tests/data.
``mosaic(source, width, height, seed)``  a large image of randomly cropped/rotated/flipped,
                              +-1 dithered blocks of ``source``, in which no two tiles are equal.
``rgb_to_ycbcr(rgb)``         the JPEG (BT.601 full range) conversion used for 33003 samples.
``file_tile_order(across, down, order)``  raster tile indices in the order their data is stored.
``write_foreign_wsi(path, rgb, kind, icc=None)``  a small TIFF carrying the marks other scanners'
                              formats are recognised by (Hamamatsu NDPI tags, Philips XML, Ventana
                              XMP), or a generic tiled / plain one: what svsicc must refuse.

Layout (as Aperio): IFD0 level 0 (tiled); IFD1 thumbnail (stripped, abbreviated RGB-colourspace
JPEG, RowsPerStrip 16, JPEGTables); the reduced levels (tiled, same compression as level 0); label
(LZW + Predictor 2, NewSubfileType 1, stripped); macro (JPEG like the thumbnail, NewSubfileType 9).
Every IFD has an Aperio ImageDescription and ImageDepth 1, tags sorted, data word aligned.

Styles (``SlideSpec.style``), i.e. what the tiled levels hold:
- ``at2``: Compression 7, Photometric RGB; tiles are abbreviated JPEG streams (SOI SOF0 SOS EOI,
  component ids 0,1,2, 1x1 sampling, one quant table) in RGB colourspace without APP0/APP14; the
  IFD's JPEGTables is SOI + DQT + DHT(DC0, AC0) + EOI (289 bytes); YCbCrSubSampling (2,2) anyway.
- ``gt450``: Compression 7, Photometric YCbCr; each tile a complete JFIF stream at
  ``subsampling``, YCbCrSubSampling tag to match, no JPEGTables.
- ``raw`` / ``lzw``: Compression 1 / 5, Photometric RGB.
- ``jp2k-33005``: raw J2K codestreams of RGB with MCT (the codestream does the colour transform).
- ``jp2k-33003``: raw J2K codestreams of YCbCr samples (``rgb_to_ycbcr``) without MCT, Photometric
  RGB in the tag like real Aperio files (OpenSlide keys the conversion on the compression only).
  ``j2k_chroma=(2, 1)`` writes Cb and Cr subsampled 4:2:2 in the codestream's SIZ (XRsiz 2), as
  some Aperio scanners do, through svsicc's OpenJPEG binding (imagecodecs cannot).
JPEG 2000 is lossless (5/3) with ``j2k_lossless`` or else 9/7 at ``j2k_psnr`` dB.
Edge tiles are full size, padded by repeating the last row/column. ``tile_order`` moves only the
level-0 tile data (AT2 stores it column-major, GT450 bottom row first); reduced levels are raster.
Uncompressed 240x240 tiles are valid TIFF but OpenSlide 4.0.1 (its libtiff) refuses them
("Invalid tile byte count": it compares against a buffer rounded up to 1 KiB; real CMU-Ignore.tif
fails the same way), hence ``preset("raw")`` uses 256x256.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

import imagecodecs
import numpy as np
import numpy.typing as npt
import tifffile
from PIL import Image

Style = Literal["at2", "gt450", "jp2k-33003", "jp2k-33005", "raw", "lzw"]
Subsampling = Literal["4:4:4", "4:2:2", "4:2:0"]
TileOrder = Literal["raster", "column", "bottom_up"]
ProfileOn = Literal["level0", "levels_and_thumbnail"]
RGB = npt.NDArray[np.uint8]

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class SlideSpec:
    style: Style = "at2"
    tile_size: int = 240  # AT2 240, GT450 256
    quality: int = 70  # JPEG quality of tiles, thumbnail and macro (real GT450: 91)
    subsampling: Subsampling = "4:2:0"  # gt450 only
    bigtiff: bool = False
    downsamples: tuple[int, ...] = (1, 4, 16)  # pyramid levels, level 0 first
    profile: bytes | None = None  # ICC bytes for tag 34675
    profile_on: ProfileOn = "level0"  # AT2: IFD0 only; GT450: every level + thumbnail
    icc_name: str | None = "ScanScope v1"  # "ICC Profile = ..." in the descriptions
    tile_order: TileOrder = "raster"  # file order of level-0 tile data; offsets stay raster
    zero_length_tiles: tuple[tuple[int, int], ...] = ()  # (level, raster tile index)
    j2k_lossless: bool = False
    j2k_psnr: int = 45  # target PSNR (dB) of lossy JPEG 2000 tiles
    # jp2k-33003 only: (XRsiz, YRsiz) of Cb and Cr; (2, 1) is 4:2:2, (2, 2) 4:2:0
    j2k_chroma: tuple[int, int] = (1, 1)
    with_label: bool = True
    with_macro: bool = True
    with_thumbnail: bool = True


def preset(style: Style, **changes: Any) -> SlideSpec:
    """The layout of the real scanner: AT2 column-major level 0, GT450 bottom-up, Q=91, ..."""
    if style == "gt450":
        base = SlideSpec(
            style=style,
            tile_size=256,
            quality=91,
            tile_order="bottom_up",
            profile_on="levels_and_thumbnail",
        )
    elif style == "at2":
        base = SlideSpec(style=style, tile_order="column")
    else:
        # 256: OpenSlide 4.0.1's libtiff cannot read uncompressed tiles whose byte count is not
        # a multiple of 1024 (240x240x3 fails, real CMU-Ignore.tif included); JPEG 2000 Aperio
        # files use 256 too.
        base = SlideSpec(style=style, tile_size=256)
    return replace(base, **changes)


# --------------------------------------------------------------------------- TIFF writer

ASCII, SHORT, LONG, UNDEFINED, LONG8 = 2, 3, 4, 7, 16
_Tag = tuple[int, int, bytes | Sequence[int]]


class _TiffWriter:
    """Streams data blocks and IFDs; each IFD is written after its data and linked backwards."""

    def __init__(self, f: BinaryIO, bigtiff: bool) -> None:
        self.f, self.big = f, bigtiff
        self.offset_type = LONG8 if bigtiff else LONG
        if bigtiff:
            f.write(b"II" + struct.pack("<HHHQ", 43, 8, 0, 0))
            self._next_ptr = 8
        else:
            f.write(b"II" + struct.pack("<HI", 42, 0))
            self._next_ptr = 4

    def _align(self) -> int:
        pos = self.f.tell()
        if pos % 2:
            self.f.write(b"\0")
            pos += 1
        if not self.big and pos >= 2**32:
            raise ValueError("classic TIFF would pass 4 GiB: use SlideSpec(bigtiff=True)")
        return pos

    def block(self, data: bytes) -> int:
        pos = self._align()
        self.f.write(data)
        return pos

    def ifd(self, tags: list[_Tag]) -> None:
        tags = sorted(tags, key=lambda t: t[0])
        cfmt, inline, head = ("Q", 8, 8) if self.big else ("I", 4, 2)
        pos = self._align()
        table_end = pos + head + len(tags) * (4 + 2 * inline) + inline
        entries, extra = bytearray(), bytearray()
        for code, typ, value in tags:
            payload, count = _pack(typ, value)
            if len(payload) <= inline:
                field = payload.ljust(inline, b"\0")
            else:
                extra += b"\0" * (len(extra) % 2)
                field = struct.pack("<" + cfmt, table_end + len(extra))
                extra += payload
            entries += struct.pack("<HH" + cfmt, code, typ, count) + field
        self.f.write(struct.pack("<" + ("Q" if self.big else "H"), len(tags)) + entries)
        self.f.write(b"\0" * inline + extra)
        end = self.f.tell()
        self.f.seek(self._next_ptr)
        self.f.write(struct.pack("<" + cfmt, pos))
        self.f.seek(end)
        self._next_ptr = table_end - inline


def _pack(typ: int, value: bytes | Sequence[int]) -> tuple[bytes, int]:
    if isinstance(value, bytes):
        return value, len(value)
    fmt = {SHORT: "H", LONG: "I", LONG8: "Q"}[typ]
    return struct.pack(f"<{len(value)}{fmt}", *value), len(value)


def file_tile_order(across: int, down: int, order: TileOrder) -> list[int]:
    """Raster tile indices in the order their data appears in the file."""
    if order == "column":
        return [r * across + c for c in range(across) for r in range(down)]
    rows = range(down - 1, -1, -1) if order == "bottom_up" else range(down)
    return [r * across + c for r in rows for c in range(across)]


# --------------------------------------------------------------------------- JPEG

SOI, EOI = b"\xff\xd8", b"\xff\xd9"


def _split_jpeg(data: bytes) -> tuple[dict[int, list[bytes]], bytes]:
    """Header segments by marker up to and including SOS, and the entropy-coded rest."""
    segments: dict[int, list[bytes]] = {}
    i = 2
    while True:
        marker = data[i + 1]
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        segments.setdefault(marker, []).append(data[i:end])
        if marker == 0xDA:
            return segments, data[end:]
        i = end


def _pillow_jpeg(rgb: RGB, quality: int, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "JPEG", quality=quality, **options)
    return buf.getvalue()


def aperio_rgb_jpeg(rgb: RGB, quality: int) -> tuple[bytes, bytes]:
    """(abbreviated tile stream, JPEGTables) exactly shaped like an AT2/ImageScope RGB tile."""
    # keep_rgb gives RGB colourspace with one quant table and the DC0/AC0 Huffman tables; Aperio
    # keeps those in JPEGTables and signals RGB only through Photometric, so APP14 must go.
    segments, scan = _split_jpeg(_pillow_jpeg(rgb, quality, subsampling=0, keep_rgb=True))
    (dqt,) = segments[0xDB]
    tables = SOI + dqt + b"".join(segments[0xC4]) + EOI
    sof, sos = bytearray(segments[0xC0][0]), bytearray(segments[0xDA][0])
    for k in range(3):  # Aperio numbers the components 0,1,2, not 'R','G','B'
        sof[10 + 3 * k] = k
        sos[5 + 2 * k] = k
    return SOI + bytes(sof) + bytes(sos) + scan, tables


_SAMPLING: dict[Subsampling, tuple[int, tuple[int, int]]] = {
    "4:4:4": (0, (1, 1)),
    "4:2:2": (1, (2, 1)),
    "4:2:0": (2, (2, 2)),
}


def rgb_to_ycbcr(rgb: RGB) -> RGB:
    """JPEG/JFIF full-range BT.601 YCbCr: the inverse of OpenSlide's 33003 conversion."""
    out: RGB = np.rint(np.stack(_ycbcr_planes(rgb), axis=-1)).clip(0, 255).astype(np.uint8)
    return out


def _ycbcr_planes(rgb: RGB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unrounded float32 Y, Cb, Cr of JPEG/JFIF full-range BT.601."""
    x = np.asarray(rgb, dtype=np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return (
        0.299 * r + 0.587 * g + 0.114 * b,
        128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
        128 + 0.5 * r - 0.418688 * g - 0.081312 * b,
    )


def subsampled_j2k(tile: RGB, spec: SlideSpec) -> bytes:
    """A raw J2K codestream of ``tile`` as YCbCr whose Cb and Cr are subsampled by
    ``spec.j2k_chroma`` in the SIZ (each chroma sample the rounded mean of its block), no MCT,
    6 resolutions, 64x64 code-blocks, LRCP: Kakadu's defaults, as Aperio writes them."""
    from svsicc.codecs import openjpeg

    dx, dy = spec.j2k_chroma
    rows, cols = tile.shape[:2]
    if rows % dy or cols % dx:
        raise ValueError(f"a {cols}x{rows} tile cannot be subsampled {dx}x{dy}")
    y, cb, cr = _ycbcr_planes(tile)
    planes = [np.rint(y).clip(0, 255).astype(np.uint8)]
    for chroma in (cb, cr):
        mean = chroma.reshape(rows // dy, dy, cols // dx, dx).mean(axis=(1, 3))
        planes.append(np.rint(mean).clip(0, 255).astype(np.uint8))
    options = openjpeg.EncodeOptions(
        reversible=spec.j2k_lossless,
        resolutions=6,
        psnr=0.0 if spec.j2k_lossless else float(spec.j2k_psnr),
    )
    return openjpeg.encode(planes, cols, rows, [(1, 1), (dx, dy), (dx, dy)], options)


# --------------------------------------------------------------------------- levels

_COMPRESSION = {"at2": 7, "gt450": 7, "raw": 1, "lzw": 5, "jp2k-33003": 33003, "jp2k-33005": 33005}
_AT2_LIB = "Aperio Image Library v12.0.15"
_GT450_LIB = "Aperio Leica Biosystems GT450 v1.0.1"


def _level_codec(spec: SlideSpec) -> tuple[list[_Tag], Callable[[RGB], bytes], str]:
    """Tags specific to the style, the tile encoder, and the description's codec token."""
    q = spec.quality
    if spec.style == "at2":
        tables = aperio_rgb_jpeg(np.zeros((8, 8, 3), np.uint8), q)[1]
        tags: list[_Tag] = [(262, SHORT, [2]), (347, UNDEFINED, tables), (530, SHORT, [2, 2])]
        return tags, lambda t: aperio_rgb_jpeg(t, q)[0], f"JPEG/RGB Q={q}"
    if spec.style == "gt450":
        mode, factors = _SAMPLING[spec.subsampling]
        tags = [(262, SHORT, [6]), (530, SHORT, list(factors))]
        return tags, lambda t: _pillow_jpeg(t, q, subsampling=mode), f"JPEG/YCC Q={q}"
    if spec.style == "raw":
        return [(262, SHORT, [2])], lambda t: t.tobytes(), "RAW"
    if spec.style == "lzw":
        return [(262, SHORT, [2])], lambda t: bytes(imagecodecs.lzw_encode(t.tobytes())), "LZW"
    ycc = spec.style == "jp2k-33003"
    level = 0 if spec.j2k_lossless else spec.j2k_psnr
    if ycc and spec.j2k_chroma != (1, 1):
        return [(262, SHORT, [2])], lambda t: subsampled_j2k(t, spec), f"J2K/YUV16 Q={q}"

    def j2k(tile: RGB) -> bytes:
        return bytes(
            imagecodecs.jpeg2k_encode(
                rgb_to_ycbcr(tile) if ycc else tile,
                level=level,
                codecformat="J2K",
                reversible=spec.j2k_lossless,
                mct=not ycc,
            )
        )

    return [(262, SHORT, [2])], j2k, f"J2K/{'YUV16' if ycc else 'KDU'} Q={q}"


def _downsample(img: RGB, d: int) -> RGB:
    """Area mean over d x d blocks (remainder rows/columns dropped), in bounded-memory chunks."""
    if d == 1:
        return img
    h, w = img.shape[0] // d, img.shape[1] // d
    if h < 1 or w < 1:
        raise ValueError(f"downsample {d} leaves no pixels of a {img.shape[1]}x{img.shape[0]}")
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, (1 << 22) // (w * d * d * 3))
    for y in range(0, h, step):
        y1 = min(h, y + step)
        block = np.asarray(img[y * d : y1 * d, : w * d, :3])
        # Strided adds are ~30x faster than sum() over the axes of a 5-D reshape.
        rows = block[0::d].astype(np.uint32)
        for i in range(1, d):
            rows += block[i::d]
        sums = rows[:, 0::d].copy()
        for i in range(1, d):
            sums += rows[:, i::d]
        out[y:y1] = (sums + d * d // 2) // (d * d)
    return out


def _tile(img: RGB, row: int, col: int, t: int) -> RGB:
    block = np.asarray(img[row * t : (row + 1) * t, col * t : (col + 1) * t, :3])
    if block.shape[:2] != (t, t):
        pad = ((0, t - block.shape[0]), (0, t - block.shape[1]), (0, 0))
        block = np.pad(block, pad, mode="edge")
    return np.ascontiguousarray(block, dtype=np.uint8)


# --------------------------------------------------------------------------- slide


def write_slide(path: str | Path, rgb: RGB, spec: SlideSpec = SlideSpec()) -> Path:
    """Write ``rgb`` (H x W x 3 uint8) as an Aperio slide laid out as ``spec`` says."""
    path = Path(path)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"need an H x W x 3 uint8 image, got {rgb.shape} {rgb.dtype}")
    if not spec.downsamples or spec.downsamples[0] != 1:
        raise ValueError("downsamples must start with 1 (level 0)")
    height, width = rgb.shape[:2]
    t = spec.tile_size
    levels = [_downsample(rgb, d) for d in spec.downsamples]
    lib = _GT450_LIB if spec.style == "gt450" else _AT2_LIB
    mag, mpp = ("40", "0.2630") if spec.style == "gt450" else ("20", "0.4990")
    props = f"|AppMag = {mag}|MPP = {mpp}"
    if spec.icc_name:
        props += f"|ICC Profile = {spec.icc_name}"
    style_tags, encode, token = _level_codec(spec)
    icc: list[_Tag] = [] if spec.profile is None else [(34675, UNDEFINED, spec.profile)]
    icc_everywhere = icc if spec.profile_on == "levels_and_thumbnail" else []
    zero = set(spec.zero_length_tiles)

    with open(path, "wb") as f:
        w = _TiffWriter(f, spec.bigtiff)

        def tiled(index: int) -> None:
            img = levels[index]
            lh, lw = img.shape[:2]
            across, down = -(-lw // t), -(-lh // t)
            order = file_tile_order(across, down, spec.tile_order if index == 0 else "raster")
            offsets, counts = [0] * (across * down), [0] * (across * down)
            for i in order:
                if (index, i) not in zero:
                    data = encode(_tile(img, i // across, i % across, t))
                    offsets[i], counts[i] = w.block(data), len(data)
            size = f"{width}x{height} ({t}x{t})" + (f" -> {lw}x{lh}" if index else "")
            tags = _common(lw, lh, _COMPRESSION[spec.style], f"{lib} \r\n{size} {token}{props}")
            tags += [
                (322, LONG, [t]),
                (323, LONG, [t]),
                (324, w.offset_type, offsets),
                (325, w.offset_type, counts),
            ]
            w.ifd(tags + style_tags + (icc if index == 0 else icc_everywhere))

        tiled(0)
        thumb = _thumbnail(levels, width, height)
        if spec.with_thumbnail:
            desc = f"{lib} \n{width}x{height} -> {thumb.shape[1]}x{thumb.shape[0]} - {props}"
            _stripped_jpeg(w, thumb, spec.quality, desc, 0, icc_everywhere)
        for index in range(1, len(levels)):
            tiled(index)
        if spec.with_label:
            label = np.asarray(Image.fromarray(thumb).rotate(90, expand=True).resize((387, 463)))
            _stripped_lzw(w, label, f"{lib} \nlabel 387x463")
        if spec.with_macro:
            macro = np.asarray(Image.fromarray(thumb).resize((1280, 431)))
            _stripped_jpeg(w, macro, spec.quality, f"{lib} \nmacro 1280x431", 9, [])
    return path


def _common(
    width: int, height: int, compression: int, description: str, subfile: int = 0
) -> list[_Tag]:
    return [
        (254, LONG, [subfile]),
        (256, LONG, [width]),
        (257, LONG, [height]),
        (258, SHORT, [8, 8, 8]),
        (259, SHORT, [compression]),
        (270, ASCII, description.encode("ascii") + b"\0"),
        (277, SHORT, [3]),
        (284, SHORT, [1]),
        (32997, LONG, [1]),
    ]


def _thumbnail(levels: list[RGB], width: int, height: int) -> RGB:
    """At most 1024x768 like Aperio's, resized from the smallest level that is still larger."""
    scale = min(1.0, 768 / height, 1024 / width)
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    src = next(lv for lv in reversed(levels) if lv.shape[1] >= size[0] and lv.shape[0] >= size[1])
    img = Image.fromarray(np.ascontiguousarray(src[..., :3]))
    return np.asarray(img.resize(size, Image.Resampling.BOX))


def _strips(w: _TiffWriter, img: RGB, rows: int, encode: Callable[[RGB], bytes]) -> list[_Tag]:
    offsets, counts = [], []
    for y in range(0, img.shape[0], rows):
        data = encode(np.ascontiguousarray(img[y : y + rows]))
        offsets.append(w.block(data))
        counts.append(len(data))
    return [(273, w.offset_type, offsets), (278, LONG, [rows]), (279, w.offset_type, counts)]


def _stripped_jpeg(
    w: _TiffWriter, img: RGB, quality: int, desc: str, subfile: int, extra: list[_Tag]
) -> None:
    tables = aperio_rgb_jpeg(np.zeros((8, 8, 3), np.uint8), quality)[1]
    tags = _strips(w, img, 16, lambda s: aperio_rgb_jpeg(s, quality)[0])
    tags += _common(img.shape[1], img.shape[0], 7, desc, subfile)
    w.ifd(tags + extra + [(262, SHORT, [2]), (347, UNDEFINED, tables), (530, SHORT, [2, 2])])


def _stripped_lzw(w: _TiffWriter, img: RGB, desc: str) -> None:
    def encode(strip: RGB) -> bytes:
        diff = strip.copy()
        diff[:, 1:] -= strip[:, :-1]  # Predictor 2: horizontal differences per sample, mod 256
        return bytes(imagecodecs.lzw_encode(diff.tobytes()))

    tags = _strips(w, img, 7, encode) + _common(img.shape[1], img.shape[0], 5, desc, 1)
    w.ifd(tags + [(262, SHORT, [2]), (317, SHORT, [2])])


# --------------------------------------------------------------------------- pixels


def load_real_pixels(name: str | Path = "CMU-1-Small-Region.svs", page: int = 0) -> RGB:
    """Decoded page of a real slide (a bare name is looked up in tests/data)."""
    path = Path(name)
    if not path.exists():
        path = DATA_DIR / path
    with tifffile.TiffFile(path) as tif:
        pixels = tif.pages[page].asarray()
    return np.ascontiguousarray(np.asarray(pixels)[..., :3], dtype=np.uint8)


def mosaic(
    source: RGB, width: int, height: int, seed: int, *, block: int = 512, out: RGB | None = None
) -> RGB:
    """A ``height`` x ``width`` image of random square crops of ``source`` (random rot90/flip)
    plus a seeded +-1 dither, so that no two tiles are equal even on blank glass.

    Source values are first clipped to 1..254 so the dither can be added in uint8 without
    wrapping. Built block by block: pass ``out`` (e.g. an ``np.memmap``) to keep memory flat.
    """
    src = np.asarray(source)[..., :3].clip(1, 254).astype(np.uint8)
    b = min(block, src.shape[0], src.shape[1])
    rng = np.random.default_rng(seed)
    # numpy is ~20x slower reading column-reversed or transposed views, so keep the four
    # orientations that need them contiguous; a row flip on top gives all eight.
    views = [
        np.ascontiguousarray(v)
        for v in (src, src[:, ::-1], src.transpose(1, 0, 2), src.transpose(1, 0, 2)[:, ::-1])
    ]
    # A noise bank read at random offsets is far cheaper than fresh noise for every pixel;
    # 255 is -1 modulo 256.
    noise = rng.choice(np.array([255, 0, 1], np.uint8), size=(2 * b, 2 * b, 3))
    result = np.empty((height, width, 3), np.uint8) if out is None else out
    for y, x in _blocks(height, width, b):
        h, w = min(b, height - y), min(b, width - x)
        view = views[int(rng.integers(4))]
        sy, sx = rng.integers(0, view.shape[0] - b + 1), rng.integers(0, view.shape[1] - b + 1)
        patch = view[sy : sy + b, sx : sx + b]
        if rng.integers(2):
            patch = patch[::-1]
        ny, nx = rng.integers(0, b + 1, size=2)
        np.add(patch[:h, :w], noise[ny : ny + h, nx : nx + w], out=result[y : y + h, x : x + w])
    return result


def _blocks(height: int, width: int, b: int) -> Iterator[tuple[int, int]]:
    for y in range(0, height, b):
        for x in range(0, width, b):
            yield y, x


# --------------------------------------------------------------------------- other formats

ForeignKind = Literal["ndpi", "philips", "ventana", "tiled", "plain"]


def write_foreign_wsi(
    path: str | Path, rgb: RGB, kind: ForeignKind, icc: bytes | None = None
) -> Path:
    """A two-level TIFF of ``rgb`` with only the marks of ``kind``'s real files (tifffile).

    ndpi: stripped JPEG levels with Hamamatsu's private tags 65420 (file format), 65421
    (magnification) and 65422 (x offset). philips: tiled JPEG, Software "Philips DP v1.0" and a
    ``DPUfsImport`` XML description. ventana: tiled JPEG, "level=0 mag=40 quality=90" descriptions
    and an XMP packet (tag 700) with an ``iScan`` element. tiled / plain: no vendor marks.
    ``icc`` goes into tag 34675 of the first level.
    """
    path = Path(path)
    levels = [np.ascontiguousarray(rgb), np.ascontiguousarray(rgb[::2, ::2])]
    options: dict[str, Any] = {"photometric": "rgb", "compression": "jpeg"}
    extra: list[tuple[int, int, int | None, Any, bool]] = []
    description = None
    if kind == "ndpi":
        extra = [(65420, 4, 1, 1, True), (65421, 11, 1, 20.0, True), (65422, 9, 1, 0, True)]
    elif kind == "philips":
        options["tile"] = (128, 128)
        options["software"] = "Philips DP v1.0"
        description = (
            '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
            '<Attribute Name="PIM_DP_SCANNER_OPERATOR_ID">x</Attribute></DataObject>'
        )
    elif kind == "ventana":
        options["tile"] = (128, 128)
        description = "level=0 mag=40 quality=90"
        extra = [(700, 1, None, b'<x:xmpmeta><iScan Magnification="40"/></x:xmpmeta>', True)]
    elif kind == "tiled":
        options["tile"] = (128, 128)
    with tifffile.TiffWriter(path) as tif:
        for n, level in enumerate(levels):
            tags = list(extra)
            if icc is not None and n == 0:
                tags.append((34675, 7, len(icc), icc, True))
            tif.write(
                level,
                description=description or "",
                extratags=tags,
                rowsperstrip=None if "tile" in options else level.shape[0],
                metadata=None,
                **options,
            )
    return path


# --------------------------------------------------------------------------- ICC profiles

# sRGB's primaries adapted to D50 (the ICC PCS), as in every sRGB v2 profile's rXYZ/gXYZ/bXYZ.
_SRGB_D50_COLUMNS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
_D50 = (0.9642, 1.0, 0.8249)


def _s15fixed16(values: Sequence[float]) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _tag_padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _desc_tag(description: str) -> bytes:
    text = description.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(text))
        + text
        + b"\0" * 8  # Unicode: language code, count 0
        + b"\0" * 70  # ScriptCode: code, count, 67 bytes
    )


def _icc(device_class: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2.4 RGB profile of ``device_class`` with ``tags``, intent perceptual."""
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for name, data in tags:
        table += name + struct.pack(">II", offset + len(body), len(data))
        body += _tag_padded(data)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"none"  # preferred CMM
        + bytes([2, 0x40, 0, 0])  # version 2.4
        + device_class
        + b"RGB "
        + pcs
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 4  # platform
        + b"\0" * 4  # flags
        + b"\0" * 8  # manufacturer, model
        + b"\0" * 8  # attributes
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + _s15fixed16(_D50)  # PCS illuminant
        + b"\0" * 4  # creator
    )
    header += b"\0" * (128 - len(header))
    return header + table + body


def lut_profile(description: str = "Linear sRGB LUT (mft2, test)", grid: int = 17) -> bytes:
    """An ICC v2 scanner (``scnr``) profile whose only colour tag is a 16-bit LUT (``mft2``
    A2B0, Lab PCS), as real Aperio scanner profiles are built: the same linear-light transform
    as :func:`matrix_trc_profile`, sampled on a ``grid``-point cube, so LittleCMS takes its LUT
    path (tetrahedral interpolation) instead of the matrix/TRC shaper. Grey 128 -> ~188."""
    steps = np.linspace(0.0, 1.0, grid)
    rgb = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    xyz = rgb @ np.array(_SRGB_D50_COLUMNS)  # columns are the primaries' XYZ
    t = xyz / np.array(_D50)
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack(
        (116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])), axis=-1
    )
    # ICC v2 16-bit Lab: L 0..100 -> 0..0xFF00, a and b -128..~128 -> 0..0xFFFF (0 at 0x8000).
    encoded = np.stack(
        (lab[:, 0] * 0xFF00 / 100, (lab[:, 1] + 128) * 256, (lab[:, 2] + 128) * 256), axis=-1
    )
    clut = np.rint(encoded).clip(0, 0xFFFF).astype(">u2").tobytes()
    identity_curve = struct.pack(">2H", 0, 0xFFFF)
    lut = (
        b"mft2\0\0\0\0"
        + bytes([3, 3, grid, 0])
        + _s15fixed16((1, 0, 0, 0, 1, 0, 0, 0, 1))
        + struct.pack(">2H", 2, 2)
        + identity_curve * 3
        + clut
        + identity_curve * 3
    )
    tags = [
        (b"desc", _desc_tag(description)),
        (b"wtpt", b"XYZ \0\0\0\0" + _s15fixed16(_D50)),
        (b"cprt", b"text\0\0\0\0" + b"No copyright, test data\0"),
        (b"A2B0", lut),
    ]
    return _icc(b"scnr", b"Lab ", tags)


def matrix_trc_profile(
    description: str = "Linear sRGB (gamma 1.0, test)", gamma: float = 1.0
) -> bytes:
    """An ICC v2 RGB display profile, matrix/TRC, written byte by byte: sRGB primaries and
    white (D50-adapted), the same pure-gamma tone curve on R, G and B. With ``gamma=1.0`` the
    pixels are linear light, a strong transform like a real AT2 scanner profile: mid-grey 128
    becomes about 188 in sRGB."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags: list[tuple[bytes, bytes]] = [
        (b"desc", _desc_tag(description)),
        (b"wtpt", b"XYZ \0\0\0\0" + _s15fixed16(_D50)),
        (b"cprt", b"text\0\0\0\0" + b"No copyright, test data\0"),
    ]
    for name, column in zip((b"rXYZ", b"gXYZ", b"bXYZ"), _SRGB_D50_COLUMNS, strict=True):
        tags.append((name, b"XYZ \0\0\0\0" + _s15fixed16(column)))
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    return _icc(b"mntr", b"XYZ ", tags)
