"""JPEG 2000 tiles (Aperio compression 33003 and 33005): decode with OpenJPEG (imagecodecs), and
re-encode so the new codestream means what the old one meant.

* 33005 stores RGB; the codestream may carry the irreversible/reversible colour transform (MCT).
* 33003 stores YCbCr samples with no codestream colour transform; the reader converts them. What
  users see is OpenSlide's conversion (JPEG full-range BT.601 in fixed point, see
  :func:`rgb_from_ycbcr`), so that is the conversion used here, bit for bit. For lossless (5/3)
  tiles the encoder stores, per pixel, the YCbCr triple that OpenSlide turns back into the wanted
  RGB most closely (only a quarter of all RGB colours have an exact 8-bit YCbCr preimage; plain
  rounding would almost double the squared error); lossy tiles use plain rounding.

Every tile keeps the source's wavelet (reversible 5/3 stays lossless, irreversible 9/7 stays 9/7),
number of decomposition levels, MCT flag, component count and image size. imagecodecs writes one
quality layer and 64x64 code-blocks; when the source's coding style is packet-for-packet
equivalent (one layer, one precinct per resolution, resolution-major progression), the source's
COD segment is spliced in so even the progression order and precinct signalling match.

Rate: imagecodecs offers no byte budget, only a target PSNR (``level``). :class:`RateControl`
spreads each page's source bytes over its tiles at equal rate-distortion slope (what minimises
the page's squared error), searching each tile's level with 1.6 encodes on average (tcga); the
page total stays within a few per cent of the source's. The codec is an ``AdaptiveCodec``: the
engine fits the page model on a sample of the page's tiles, then starts every batch of tiles
from that model (without the sample's debt), so the bytes are the same for any worker count.

Chroma-subsampled 33003 (Cb and Cr at XRsiz 2, "4:2:2", as some Aperio scanners write, or also
YRsiz 2, 4:2:0) goes through svsicc's own OpenJPEG binding (:mod:`.openjpeg`), because imagecodecs
can neither write subsampled components nor return them unconverted. Decoding replicates each
chroma sample over its block and converts as above, which is exactly what OpenSlide shows.
Encoding keeps the SIZ's sampling and the COD's wavelet, levels, progression, code-blocks,
precincts and SOP/EPH (in one quality layer); lossy chroma is the rounded block mean of the exact
chroma, lossless tiles search chroma and Y per block for OpenSlide's closest reconstruction
(:func:`subsampled_ycbcr_for_openslide`): with shared chroma the exact transform output is not
reachable. Other subsampled layouts (33005, subsampled Y, odd tile sizes) are refused.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import imagecodecs
import numpy as np

from ..exceptions import UnsupportedLayoutError
from . import openjpeg
from .pixels import bgrx_from_rgb, rgb_from_layout

COMPRESSION_JP2K_YCBCR = 33003
COMPRESSION_JP2K_RGB = 33005

SOC, SOT, SIZ, COD, COM = 0xFF4F, 0xFF90, 0xFF51, 0xFF52, 0xFF64
PROGRESSIONS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")
# With one layer and one precinct per resolution these three visit packets in the same order:
# resolution, then component.
RESOLUTION_MAJOR = frozenset({0, 1, 2})
DEFAULT_PRECINCT_EXPONENT = 15  # no precinct sizes signalled: 2**15, i.e. one precinct
CODEBLOCK_EXPONENT_OFFSET = 2  # SPcod stores log2(code-block size) - 2


class Jpeg2000FormatError(ValueError):
    """A codestream svsicc cannot parse or OpenJPEG cannot decode."""


# --------------------------------------------------------------------------- codestream header


@dataclass(frozen=True)
class ComponentInfo:
    precision: int
    signed: bool
    dx: int  # XRsiz: horizontal subsampling
    dy: int  # YRsiz


@dataclass(frozen=True)
class CodingStyle:
    """The COD marker segment, decoded."""

    precincts_signalled: bool
    sop: bool
    eph: bool
    progression: int
    layers: int
    mct: int
    levels: int  # decomposition levels (resolutions - 1)
    codeblock_exponents: tuple[int, int]  # log2 of code-block width and height
    codeblock_style: int
    reversible: bool  # 5/3 integer wavelet; False: 9/7
    precinct_exponents: tuple[tuple[int, int], ...]  # (PPx, PPy) per resolution, lowest first

    @property
    def wavelet(self) -> str:
        return "5/3 reversible" if self.reversible else "9/7 irreversible"

    @property
    def progression_name(self) -> str:
        if self.progression < len(PROGRESSIONS):
            return PROGRESSIONS[self.progression]
        return f"progression {self.progression}"

    def effective_codeblocks(self) -> tuple[tuple[int, int], ...]:
        """Code-block exponents per resolution after precinct clipping (ITU-T T.800 B.7)."""
        cbw, cbh = self.codeblock_exponents
        out = []
        for r, (ppx, ppy) in enumerate(self.precinct_exponents):
            cut = 1 if r > 0 else 0
            out.append((min(cbw, ppx - cut), min(cbh, ppy - cut)))
        return tuple(out)


@dataclass(frozen=True)
class CodestreamHeader:
    """SIZ and COD of a raw J2K codestream's main header."""

    width: int
    height: int
    image_offset: tuple[int, int]
    tile_size: tuple[int, int]
    tile_offset: tuple[int, int]
    components: tuple[ComponentInfo, ...]
    coding: CodingStyle
    siz_segment: bytes  # marker, length and payload, as found
    cod_segment: bytes

    @property
    def subsampled(self) -> bool:
        return any((c.dx, c.dy) != (1, 1) for c in self.components)

    def summary(self) -> str:
        c = self.coding
        return (
            f"{self.width}x{self.height}, {len(self.components)} components, {c.wavelet}, "
            f"{c.levels} levels, MCT {c.mct}, {c.layers} layer(s), {c.progression_name}"
        )


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, payload start, payload end) of the main header's segments, up to the first SOT."""
    if len(data) < 4 or struct.unpack_from(">H", data, 0)[0] != SOC:
        raise Jpeg2000FormatError("not a raw JPEG 2000 codestream (no SOC marker)")
    out: list[tuple[int, int, int]] = []
    pos = 2
    while True:
        if pos + 4 > len(data):
            raise Jpeg2000FormatError("main header ends before the first tile (no SOT marker)")
        marker, length = struct.unpack_from(">HH", data, pos)
        if marker < 0xFF00:
            raise Jpeg2000FormatError(f"expected a marker at byte {pos}")
        if marker == SOT:
            return out
        if length < 2 or pos + 2 + length > len(data):
            raise Jpeg2000FormatError(f"marker 0x{marker:04X} runs past the end of the tile")
        out.append((marker, pos + 4, pos + 2 + length))
        pos += 2 + length


def parse_header(data: bytes) -> CodestreamHeader:
    segments = _segments(data)
    if not segments or segments[0][0] != SIZ:
        raise Jpeg2000FormatError("the SIZ marker does not follow SOC")
    siz_start, siz_end = segments[0][1], segments[0][2]
    siz = data[siz_start:siz_end]
    if len(siz) < 36:
        raise Jpeg2000FormatError("truncated SIZ marker")
    _rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, _ncomp = struct.unpack_from(">H8IH", siz)
    components = _siz_components(siz)
    cods = [(s, e) for m, s, e in segments if m == COD]
    if len(cods) != 1:
        raise Jpeg2000FormatError(f"the main header has {len(cods)} COD markers, expected 1")
    cod_start, cod_end = cods[0]
    coding = _parse_cod(data[cod_start:cod_end])
    return CodestreamHeader(
        width=xsiz - xo,
        height=ysiz - yo,
        image_offset=(xo, yo),
        tile_size=(xt, yt),
        tile_offset=(xto, yto),
        components=components,
        coding=coding,
        siz_segment=data[siz_start - 4 : siz_end],
        cod_segment=data[cod_start - 4 : cod_end],
    )


def _siz_components(siz: bytes) -> tuple[ComponentInfo, ...]:
    """The components a SIZ payload declares."""
    if len(siz) < 36:
        raise Jpeg2000FormatError("truncated SIZ marker")
    ncomp = struct.unpack_from(">H", siz, 34)[0]
    if ncomp < 1 or len(siz) < 36 + 3 * ncomp:
        raise Jpeg2000FormatError(f"SIZ declares {ncomp} components but is too short for them")
    return tuple(
        ComponentInfo(
            precision=(siz[36 + 3 * i] & 0x7F) + 1,
            signed=bool(siz[36 + 3 * i] & 0x80),
            dx=siz[37 + 3 * i],
            dy=siz[38 + 3 * i],
        )
        for i in range(ncomp)
    )


def _parse_cod(cod: bytes) -> CodingStyle:
    if len(cod) < 10:
        raise Jpeg2000FormatError("truncated COD marker")
    scod, progression, layers, mct, levels, cbw, cbh, cbstyle, transform = struct.unpack_from(
        ">BBHBBBBBB", cod
    )
    if transform > 1:
        raise Jpeg2000FormatError(f"unknown wavelet transform {transform} in COD")
    if scod & 1:
        if len(cod) < 10 + levels + 1:
            raise Jpeg2000FormatError("COD signals precinct sizes but does not hold them")
        precincts = tuple((b & 0x0F, b >> 4) for b in cod[10 : 10 + levels + 1])
    else:
        precincts = ((DEFAULT_PRECINCT_EXPONENT, DEFAULT_PRECINCT_EXPONENT),) * (levels + 1)
    return CodingStyle(
        precincts_signalled=bool(scod & 1),
        sop=bool(scod & 2),
        eph=bool(scod & 4),
        progression=progression,
        layers=layers,
        mct=mct,
        levels=levels,
        codeblock_exponents=(cbw + CODEBLOCK_EXPONENT_OFFSET, cbh + CODEBLOCK_EXPONENT_OFFSET),
        codeblock_style=cbstyle,
        reversible=transform == 1,
        precinct_exponents=precincts,
    )


def _one_precinct_per_resolution(coding: CodingStyle, width: int, height: int) -> bool:
    for r, (ppx, ppy) in enumerate(coding.precinct_exponents):
        scale = 1 << (coding.levels - r)
        if -(-width // scale) > (1 << ppx) or -(-height // scale) > (1 << ppy):
            return False
    return True


def equivalent_cod(ours: CodestreamHeader, source: CodestreamHeader) -> bytes | None:
    """The source's COD segment, adjusted to one layer and no SOP/EPH, if it describes exactly
    the packets in ``ours`` (else None): same wavelet, levels, code-blocks, MCT, one precinct per
    resolution in both, and progression orders that visit one layer's packets identically."""
    a, b = ours.coding, source.coding
    same_coding = (
        a.reversible == b.reversible
        and a.levels == b.levels
        and a.mct == b.mct
        and a.codeblock_style == b.codeblock_style
        and a.effective_codeblocks() == b.effective_codeblocks()
        and a.layers == 1
        and not (a.sop or a.eph)
        and a.progression in RESOLUTION_MAJOR
        and b.progression in RESOLUTION_MAJOR
    )
    if not same_coding or ours.subsampled or source.subsampled:
        return None
    size = (ours.width, ours.height)
    if not (_one_precinct_per_resolution(a, *size) and _one_precinct_per_resolution(b, *size)):
        return None
    cod = bytearray(source.cod_segment)
    cod[4] &= 0x01  # keep the precinct flag, drop SOP/EPH: our packets have neither
    struct.pack_into(">H", cod, 6, 1)  # one quality layer
    return bytes(cod)


# --------------------------------------------------------------------------- YCbCr (OpenSlide)


def _c_round(values: np.ndarray) -> np.ndarray:
    """C's round(): halves away from zero."""
    return np.where(values >= 0, np.floor(values + 0.5), -np.floor(-values + 0.5)).astype(np.int32)


# OpenSlide's make-tables.c: chroma contributions, G in 16.16 fixed point with the rounding
# half folded into the Cb table; the sum is shifted right (floored) by 16 at run time.
_CENTRED = np.arange(256, dtype=np.float64) - 128
R_FROM_CR = _c_round(1.402 * _CENTRED).astype(np.int16)
B_FROM_CB = _c_round(1.772 * _CENTRED).astype(np.int16)
G_FROM_CB = _c_round(65536.0 * (0.5 - 0.34414 * _CENTRED))
G_FROM_CR = _c_round(65536.0 * (-0.71414 * _CENTRED))


def rgb_from_ycbcr(ycbcr: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 YCbCr -> (..., 3) uint8 RGB exactly as OpenSlide converts 33003 tiles."""
    y = ycbcr[..., 0].astype(np.int32)
    cb = ycbcr[..., 1]
    cr = ycbcr[..., 2]
    out = np.empty(ycbcr.shape, np.uint8)
    out[..., 0] = np.clip(y + R_FROM_CR[cr], 0, 255)
    out[..., 1] = np.clip(y + ((G_FROM_CB[cb] + G_FROM_CR[cr]) >> 16), 0, 255)
    out[..., 2] = np.clip(y + B_FROM_CB[cb], 0, 255)
    return out


# G's chroma contribution for every (Cb, Cr), indexed by Cb * 256 + Cr.
_G_FROM_CBCR = ((G_FROM_CB[:, None] + G_FROM_CR[None, :]) >> 16).astype(np.int16).ravel()


def _squared_miss(value: np.ndarray, want: np.ndarray) -> np.ndarray:
    """(clip(value, 0, 255) - want) ** 2 as int32."""
    miss = np.clip(value, 0, 255, out=value) - want
    squared: np.ndarray = np.square(miss, dtype=np.int32)
    return squared


def _exact_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real-valued JPEG/JFIF YCbCr of (N, 3) uint8 RGB."""
    x = rgb.astype(np.float32)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return (
        0.299 * r + 0.587 * g + 0.114 * b,
        128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
        128 + 0.5 * r - 0.418688 * g - 0.081312 * b,
    )


def ycbcr_rounded(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> the rounded JPEG/JFIF YCbCr, for lossy tiles, whose coding error
    dwarfs the 0.2 levels (RMS) that :func:`ycbcr_for_openslide` would save."""
    flat = rgb.reshape(-1, 3)
    out = np.stack([np.clip(np.rint(c), 0, 255) for c in _exact_ycbcr(flat)], axis=-1)
    return out.astype(np.uint8).reshape(rgb.shape)


def ycbcr_for_openslide(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> the YCbCr samples whose OpenSlide conversion is closest to ``rgb``:
    least squared error over the 8 integer neighbours of the exact BT.601 inverse, ties going to
    the rounded inverse."""
    shape = rgb.shape
    flat = rgb.reshape(-1, 3)
    exact = _exact_ycbcr(flat)
    y0, cb0, cr0 = (np.clip(np.floor(c), 0, 254).astype(np.int16) for c in exact)
    # Which neighbour rounding would pick, per component (0 or 1): the tie-break's reference.
    round_up = [np.rint(c) > f for c, f in zip(exact, (y0, cb0, cr0), strict=True)]
    want_r, want_g, want_b = (flat[:, i].astype(np.int16) for i in range(3))
    # R depends on (Y, Cr), B on (Y, Cb), G on all three: evaluate the parts once each.
    r_chroma = [R_FROM_CR[cr0 + d] for d in (0, 1)]
    b_chroma = [B_FROM_CB[cb0 + d] for d in (0, 1)]
    g_index = cb0.astype(np.intp) * 256 + cr0
    g_chroma = [[_G_FROM_CBCR[g_index + 256 * dcb + dcr] for dcr in (0, 1)] for dcb in (0, 1)]
    best_error = np.full(flat.shape[0], np.iinfo(np.int32).max, np.int32)
    best = np.zeros(flat.shape[0], np.uint8)  # chosen neighbour as bits dY << 2 | dCb << 1 | dCr
    for dy in (0, 1):
        y = y0 + dy
        away_y = (round_up[0] != bool(dy)).astype(np.int32)
        r_miss = [_squared_miss(y + r_chroma[d], want_r) for d in (0, 1)]
        b_miss = [_squared_miss(y + b_chroma[d], want_b) for d in (0, 1)]
        for dcb, dcr in itertools.product((0, 1), repeat=2):
            error = _squared_miss(y + g_chroma[dcb][dcr], want_g)
            error += r_miss[dcr]
            error += b_miss[dcb]
            # Errors are integers: scaled by 4 they leave room for the tie-break (0..3 steps
            # away from the rounded inverse).
            error *= 4
            error += away_y
            error += round_up[1] != bool(dcb)
            error += round_up[2] != bool(dcr)
            better = error < best_error
            np.copyto(best_error, error, where=better)
            best[better] = dy << 2 | dcb << 1 | dcr
    out = np.empty(flat.shape, np.uint8)
    out[:, 0] = y0 + (best >> 2)
    out[:, 1] = cb0 + ((best >> 1) & 1)
    out[:, 2] = cr0 + (best & 1)
    return out.reshape(shape)


def upsample_chroma(planes: tuple[np.ndarray, ...], factors: tuple[int, int]) -> np.ndarray:
    """(rows, cols, 3) YCbCr from a full-resolution Y plane and Cb/Cr planes subsampled by
    ``factors`` (dx, dy), replicating each chroma sample as OpenSlide does (no interpolation)."""
    y = planes[0]
    out = np.empty((*y.shape, 3), np.uint8)
    out[..., 0] = y
    for index in (1, 2):
        out[..., index] = _replicate(planes[index], factors)[: y.shape[0], : y.shape[1]]
    return out


def _replicate(blocks: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """Each value repeated over its dy x dx block: what a reader does with subsampled chroma."""
    dx, dy = factors
    return np.repeat(np.repeat(blocks, dy, axis=0), dx, axis=1)


def _block_mean(values: np.ndarray, shape: tuple[int, int], factors: tuple[int, int]) -> np.ndarray:
    """Mean over each dy x dx block of a flat per-pixel array laid out as ``shape``."""
    rows, cols = shape
    dx, dy = factors
    blocks = values.reshape(rows // dy, dy, cols // dx, dx)
    mean: np.ndarray = blocks.mean(axis=(1, 3))
    return mean


def subsampled_ycbcr(
    rgb: np.ndarray, factors: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, Cb, Cr planes for lossy tiles: rounded Y per pixel, chroma the rounded mean of each
    block's exact chroma (the least-squares choice when the reader replicates it)."""
    rows, cols = rgb.shape[:2]
    y, cb, cr = _exact_ycbcr(rgb.reshape(-1, 3))
    planes = [np.clip(np.rint(y), 0, 255).reshape(rows, cols)]
    for chroma in (cb, cr):
        planes.append(np.clip(np.rint(_block_mean(chroma, (rows, cols), factors)), 0, 255))
    y_plane, cb_plane, cr_plane = (p.astype(np.uint8) for p in planes)
    return y_plane, cb_plane, cr_plane


def subsampled_ycbcr_for_openslide(
    rgb: np.ndarray, factors: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, Cb, Cr planes for lossless tiles: per chroma block, the (Cb, Cr) among the 2 x 2
    integer neighbours of the block's mean exact chroma, and per pixel the Y among the rounded
    exact Y and the two integers around the least-squares Y for that chroma, that together
    give the least squared error of OpenSlide's conversion against ``rgb``. The plainly
    rounded choice (rounded mean chroma, rounded Y) is among the candidates, so no block is
    worse than it."""
    rows, cols = rgb.shape[:2]
    dx, dy = factors
    flat = rgb.reshape(-1, 3)
    exact_y, exact_cb, exact_cr = _exact_ycbcr(flat)
    rounded_y = np.clip(np.rint(exact_y), 0, 255).astype(np.int16)
    want = [flat[:, i].astype(np.int16) for i in range(3)]

    def per_pixel(block_values: np.ndarray) -> np.ndarray:
        """Block values -> per pixel, flat."""
        return _replicate(block_values, factors).reshape(-1)

    means = [_block_mean(c, (rows, cols), factors) for c in (exact_cb, exact_cr)]
    low = [np.clip(np.floor(m), 0, 254).astype(np.int16) for m in means]
    rounds_up = [np.rint(m) > f for m, f in zip(means, low, strict=True)]
    best_error = np.full(low[0].shape, np.iinfo(np.int64).max, np.int64)
    best_cb = low[0].copy()
    best_cr = low[1].copy()
    best_y = rounded_y.copy()
    for dcb, dcr in itertools.product((0, 1), repeat=2):
        cb_block, cr_block = low[0] + dcb, low[1] + dcr
        cb, cr = per_pixel(cb_block), per_pixel(cr_block)
        chroma = (
            R_FROM_CR[cr].astype(np.int16),
            _G_FROM_CBCR[cb.astype(np.intp) * 256 + cr],
            B_FROM_CB[cb].astype(np.int16),
        )
        centre = sum(w - c for w, c in zip(want, chroma, strict=True)) / 3
        y_low = np.floor(centre).astype(np.int16)
        pixel_error = np.full(flat.shape[0], np.iinfo(np.int32).max, np.int32)
        pixel_y = rounded_y.copy()
        for candidate in (rounded_y, y_low, y_low + 1):
            y = np.clip(candidate, 0, 255).astype(np.int16)
            error = sum(
                (_squared_miss(y + c, w) for c, w in zip(chroma, want, strict=True)),
                start=np.zeros(flat.shape[0], np.int32),
            )
            better = error < pixel_error
            np.copyto(pixel_error, error, where=better)
            np.copyto(pixel_y, y, where=better)
        block_error = pixel_error.reshape(rows // dy, dy, cols // dx, dx).sum(axis=(1, 3))
        # Scaled by 4, the errors leave room for the tie-break: steps away from rounding.
        block_error = block_error.astype(np.int64) * 4
        block_error += (rounds_up[0] != bool(dcb)).astype(np.int64)
        block_error += rounds_up[1] != bool(dcr)
        better_block = block_error < best_error
        np.copyto(best_error, block_error, where=better_block)
        np.copyto(best_cb, cb_block, where=better_block)
        np.copyto(best_cr, cr_block, where=better_block)
        np.copyto(best_y, pixel_y, where=per_pixel(better_block))
    return (
        best_y.astype(np.uint8).reshape(rows, cols),
        best_cb.astype(np.uint8),
        best_cr.astype(np.uint8),
    )


# --------------------------------------------------------------------------- rate control

MIN_LEVEL = 20.0  # dB; imagecodecs treats a level below 1 as lossless
MAX_LEVEL = 70.0
START_LEVEL = 40.0
# Model of one tile: ln(bytes) = a + slope * level, and distortion 10**(-level / 10) (on textured
# tiles OpenJPEG's fixed-quality mode lands within a fraction of a dB of the level asked for;
# flat ones are handled apart, see RateControl.encode).
MODEL_SLOPE = 0.06  # typical d ln(bytes) / d level of 256x256 H&E tiles
MIN_SLOPE, MAX_SLOPE = 0.005, 0.4
SLOPE_BINS = 16  # the page fit groups tiles by slope, geometrically spaced
DISTORTION_SLOPE = math.log(10) / 10  # d ln(distortion) / d level
# K = DISTORTION_SLOPE * level + ln(bytes) over any level and tile length we could meet
K_RANGE = (DISTORTION_SLOPE * MIN_LEVEL, DISTORTION_SLOPE * MAX_LEVEL + math.log(1 << 26))
ACCEPT_DB = 1.0  # a tile within this of its equal-slope level is not encoded again
MAX_ENCODES = 4
DEBT_SHARE = 0.25  # share of the page's byte surplus one tile tries to repay ...
MAX_CORRECTION = 0.15  # ... moving its own bytes by at most this fraction
MAX_REPAYMENT_DB = 2.0  # ... and its level by at most this
FREE_BYTES_RATIO, FREE_BYTES = 1.02, 64  # "no more bytes": within 2 % + 64 bytes
PROBE_BELOW_BYTES = 512  # streams this short are also tried at MAX_LEVEL
# Until the page constant rests on enough data, keep each tile near its own source length: the
# allowed ratio grows from 1 to MAX_RATIO as the tiles seen reach WARMUP_COUNT and the bytes
# seen WARMUP_TILES times this tile's (small pages, e.g. a pyramid's top, stay near 1).
WARMUP_TILES = 4
WARMUP_COUNT = 16
MAX_RATIO = 8.0


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _slope_bins() -> tuple[float, ...]:
    step = (MAX_SLOPE / MIN_SLOPE) ** (1 / (SLOPE_BINS - 1))
    return tuple(MIN_SLOPE * step**i for i in range(SLOPE_BINS))


_SLOPES = _slope_bins()


@dataclass
class RateControl:
    """Chooses each tile's imagecodecs ``level`` (target PSNR) so a page keeps its byte count.

    Bytes are spread over a page's tiles at equal rate-distortion slope, the allocation that
    minimises the page's squared error for its total size: a tile's level L solves
    ``DISTORTION_SLOPE * L + ln(bytes(L)) = K``, the same K for every tile. K is fitted to the
    tiles seen so far (each modelled as ln(bytes) = a + s L with its own measured slope s) so
    that, at K, they would have cost exactly their source bytes. On the tcga slide this gives
    1-2 dB more PSNR than matching every tile's own length. A surplus left by the fit's early
    estimates is repaid by later tiles. A tile's first encode starts from the level last chosen
    for a tile of similar source length.
    """

    tiles: int = 0
    encodes: int = 0
    source_bytes: int = 0
    written_bytes: int = 0
    slope: float = MODEL_SLOPE  # running estimate of d ln(bytes) / d level, for the search
    # Per slope bin b: sum over tiles of exp(a c / (c + s_b)); the tiles' modelled bytes at page
    # constant K are then sum_b fit[b] * exp(K s_b / (c + s_b)).
    _fit: list[float] = field(default_factory=lambda: [0.0] * SLOPE_BINS, repr=False)
    _start: dict[int, float] = field(default_factory=dict, repr=False)

    @staticmethod
    def _fit_term(level: float, size: int, slope: float) -> tuple[int, float]:
        c = DISTORTION_SLOPE
        b = min(range(SLOPE_BINS), key=lambda i: abs(math.log(_SLOPES[i] / slope)))
        s = _SLOPES[b]
        return b, math.exp((math.log(size) - s * level) * c / (c + s))

    def _page_constant(self, source_bytes: int, term: tuple[int, float]) -> float:
        """K at which the tiles so far, this one included, would cost their source bytes."""
        c = DISTORTION_SLOPE
        fit = list(self._fit)
        fit[term[0]] += term[1]
        wanted = self.source_bytes + source_bytes
        low, high = K_RANGE
        for _ in range(40):  # bisection: the modelled bytes grow with K
            k = (low + high) / 2
            modelled = sum(
                f * math.exp(k * s / (c + s)) for f, s in zip(fit, _SLOPES, strict=True) if f
            )
            if modelled < wanted:
                low = k
            else:
                high = k
        return (low + high) / 2

    def _repayment(self, expected: float, slope: float) -> float:
        """Level change that makes this tile repay part of the page's surplus: at most
        MAX_CORRECTION of its bytes and MAX_REPAYMENT_DB, so a tile whose length hardly moves
        with the level (blank glass) is not driven to a level where OpenJPEG's fixed-quality
        mode falls apart for a handful of bytes."""
        surplus = self.written_bytes - self.source_bytes
        share = _clamp(DEBT_SHARE * surplus / expected, -MAX_CORRECTION, MAX_CORRECTION)
        return _clamp(math.log(1 - share) / slope, -MAX_REPAYMENT_DB, MAX_REPAYMENT_DB)

    def _wanted_level(self, level: float, size: int, slope: float, source_bytes: int) -> float:
        """The level this tile should have, from its model through (level, size)."""
        c = DISTORTION_SLOPE
        a = math.log(size) - slope * level
        matching = (math.log(source_bytes) - a) / slope  # the level that repeats its length
        k = self._page_constant(source_bytes, self._fit_term(level, size, slope))
        equal_slope = (k - a) / (c + slope)
        expected = math.exp(a + slope * equal_slope)
        equal_slope += self._repayment(expected, slope)
        # Until K rests on several tiles' worth of bytes, stay near the tile's own length.
        confidence = min(
            1.0, self.source_bytes / (WARMUP_TILES * source_bytes), self.tiles / WARMUP_COUNT
        )
        allowed = confidence * math.log(MAX_RATIO) / slope
        wanted = _clamp(equal_slope, matching - allowed, matching + allowed)
        return _clamp(wanted, MIN_LEVEL, MAX_LEVEL)

    def encode(self, encode_at: Callable[[float], bytes], source_bytes: int) -> bytes:
        """Encode one tile through ``encode_at(level)``; returns the stream chosen."""
        source_bytes = max(source_bytes, 1)
        bucket = round(2 * math.log2(max(source_bytes, 1)))
        level = self._start.get(bucket, START_LEVEL)
        tries: list[tuple[float, bytes]] = []
        slope = self.slope
        measured = False  # slope measured on this tile (two encodes)
        wanted = level
        for _ in range(MAX_ENCODES):
            stream = encode_at(level)
            self.encodes += 1
            tries.append((level, stream))
            if len(tries) >= 2:
                (l0, s0), (l1, s1) = sorted((lv, len(st)) for lv, st in tries[-2:])
                if l1 > l0:
                    slope = _clamp(math.log(s1 / s0) / (l1 - l0), MIN_SLOPE, MAX_SLOPE)
                    measured = True
            wanted = self._wanted_level(level, len(stream), slope, source_bytes)
            if abs(wanted - level) <= ACCEPT_DB or any(abs(wanted - t[0]) < 1e-6 for t in tries):
                break
            level = wanted
        level, stream = min(tries, key=lambda t: abs(t[0] - wanted))
        # A higher level that costs next to nothing more is always the better buy: on flat
        # tiles (blank glass) OpenJPEG can miss a target PSNR by 15 dB at the same length, so
        # a near-empty stream is also tried at the top level.
        if len(stream) < PROBE_BELOW_BYTES and all(t[0] < MAX_LEVEL for t in tries):
            tries.append((MAX_LEVEL, encode_at(MAX_LEVEL)))
            self.encodes += 1
        for other_level, other in tries:
            if other_level > level and len(other) <= len(stream) * FREE_BYTES_RATIO + FREE_BYTES:
                level, stream = other_level, other
        if measured:
            self.slope = 0.8 * self.slope + 0.2 * slope
        self._start[bucket] = level
        b, term = self._fit_term(level, len(stream), slope)
        self._fit[b] += term
        self.tiles += 1
        self.source_bytes += source_bytes
        self.written_bytes += len(stream)
        return stream


# --------------------------------------------------------------------------- codec


@dataclass(frozen=True)
class Jpeg2000Settings:
    """How to re-encode one kind of tile so it matches the source codestream."""

    header: CodestreamHeader
    ycbcr: bool  # the samples are YCbCr (33003) converted by the reader
    lossless: bool
    chroma: tuple[int, int] | None = None  # (dx, dy) of subsampled Cb/Cr; None: 4:4:4

    @property
    def mct(self) -> bool:
        return self.header.coding.mct != 0

    @property
    def resolutions(self) -> int:
        return self.header.coding.levels + 1


SUPPORTED_CHROMA = frozenset({(2, 1), (2, 2)})  # 4:2:2 and 4:2:0


def _chroma_factors(header: CodestreamHeader, compression: int) -> tuple[int, int] | None:
    """(dx, dy) of Cb and Cr when the tile is subsampled YCbCr svsicc can reproduce: Y at full
    resolution, Cb and Cr alike, a tile size the factors divide (OpenSlide derives the factor
    from the plane widths, so odd sizes would read wrongly anyway)."""
    if compression != COMPRESSION_JP2K_YCBCR or len(header.components) != 3:
        return None
    y, cb, cr = ((c.dx, c.dy) for c in header.components)
    if y != (1, 1) or cb != cr or cb not in SUPPORTED_CHROMA:
        return None
    if header.width % cb[0] or header.height % cb[1]:
        return None
    return cb


def parse_settings(data: bytes, compression: int) -> Jpeg2000Settings:
    header = parse_header(data)
    if len(header.components) != 3:
        raise UnsupportedLayoutError(
            None, f"JPEG 2000 tile with {len(header.components)} components; only 3 are supported"
        )
    if any(c.precision != 8 or c.signed for c in header.components):
        raise UnsupportedLayoutError(
            None, "JPEG 2000 tile samples are not 8-bit unsigned; only 8-bit RGB is supported"
        )
    chroma = _chroma_factors(header, compression) if header.subsampled else None
    if header.subsampled and chroma is None:
        factors = ", ".join(f"{c.dx}x{c.dy}" for c in header.components)
        raise UnsupportedLayoutError(
            None,
            f"JPEG 2000 tile with component subsampling {factors} cannot be re-encoded "
            "faithfully: only 33003 YCbCr with full-resolution Y and Cb/Cr subsampled 2x1 "
            "(4:2:2) or 2x2 (4:2:0), on a tile of even size, is supported",
            hint="the slide is left as it was",
        )
    if header.image_offset != (0, 0) or header.tile_offset != (0, 0):
        raise UnsupportedLayoutError(
            None, "JPEG 2000 tile with a non-zero image or tile origin is not supported"
        )
    if header.tile_size[0] < header.width or header.tile_size[1] < header.height:
        raise UnsupportedLayoutError(
            None, "JPEG 2000 tile split into several codestream tiles is not supported"
        )
    return Jpeg2000Settings(
        header=header,
        ycbcr=compression == COMPRESSION_JP2K_YCBCR,
        lossless=header.coding.reversible,
        chroma=chroma,
    )


def encoded_by_binding(stream: bytes | memoryview) -> bool:
    """Whether a tile svsicc encoded came from its OpenJPEG binding: only the binding writes
    subsampled components (imagecodecs cannot). Reads the SIZ segment only (it follows SOC)."""
    if len(stream) < 6 or struct.unpack_from(">HH", stream) != (SOC, SIZ):
        return False
    length = struct.unpack_from(">H", stream, 4)[0]
    try:
        components = _siz_components(bytes(stream[6 : 4 + length]))
    except Jpeg2000FormatError:
        return False
    return any((c.dx, c.dy) != (1, 1) for c in components)


def _binding_unavailable(exc: openjpeg.OpenJpegUnavailable) -> UnsupportedLayoutError:
    """Only chroma-subsampled tiles need the binding: they are refused, everything else works."""
    return UnsupportedLayoutError(
        None,
        f"a JPEG 2000 tile with subsampled chroma needs svsicc's OpenJPEG binding: {exc}",
        hint=openjpeg.HOW_TO_FIX,
    )


class Jpeg2000Codec:
    """Decode to BGRX and encode from RGBX/BGRX, reproducing the source tile's codestream."""

    lossless = False  # per stream: True once a 5/3 (reversible) tile has been seen

    def __init__(self, compression: int) -> None:
        if compression not in (COMPRESSION_JP2K_YCBCR, COMPRESSION_JP2K_RGB):
            raise ValueError(f"compression {compression} is not Aperio JPEG 2000")
        self.compression = compression
        self.rate = RateControl()
        self._settings: dict[bytes, Jpeg2000Settings] = {}

    # AdaptiveCodec: the rate control's model of the page is what steers later encodes.
    def learned_state(self) -> object:
        """The model of the page, without its debt: every batch starts from this state, and a
        surplus carried into each would be repaid once per batch."""
        state = copy.deepcopy(self.rate)
        state.written_bytes = state.source_bytes
        return state

    def restore_state(self, state: object) -> None:
        if not isinstance(state, RateControl):
            raise TypeError(f"not a JPEG 2000 rate-control state: {type(state).__name__}")
        self.rate = copy.deepcopy(state)

    def settings_for(self, data: bytes) -> Jpeg2000Settings:
        try:
            segments = _segments(data)
        except Jpeg2000FormatError:
            return parse_settings(data, self.compression)  # raises with the precise reason
        # COM markers differ from tile to tile (Kakadu logs per-tile rates there).
        key = b"".join(data[s - 4 : e] for m, s, e in segments if m != COM)
        settings = self._settings.get(key)
        if settings is None:
            settings = parse_settings(data, self.compression)
            self._settings[key] = settings
            self.lossless = settings.lossless
        return settings

    def decode(self, data: bytes, rows: int, cols: int) -> np.ndarray:
        settings = self.settings_for(data)
        header = settings.header
        if (header.width, header.height) != (cols, rows):
            raise Jpeg2000FormatError(
                f"codestream is {header.width}x{header.height}, the tile is {cols}x{rows}"
            )
        if settings.chroma is not None:
            return bgrx_from_rgb(rgb_from_ycbcr(self._decode_subsampled(data, settings)))
        try:
            samples = imagecodecs.jpeg2k_decode(data, numthreads=1)
        except Exception as exc:  # imagecodecs raises its own error types
            raise Jpeg2000FormatError(f"OpenJPEG cannot decode it: {exc}") from None
        if samples.shape != (rows, cols, 3) or samples.dtype != np.uint8:
            raise Jpeg2000FormatError(f"decodes to {samples.shape} {samples.dtype}")
        rgb = rgb_from_ycbcr(samples) if settings.ycbcr else samples
        return bgrx_from_rgb(rgb)

    def encode(self, pixels: np.ndarray, layout: str, source: bytes) -> bytes:
        """Encode (rows, cols, 4) uint8 pixels in ``layout`` ("RGBX" or "BGRX")."""
        settings = self.settings_for(source)
        rgb = rgb_from_layout(pixels, layout)
        encode_at: Callable[[float], bytes]
        if settings.chroma is not None:
            make_planes = subsampled_ycbcr_for_openslide if settings.lossless else subsampled_ycbcr
            planes = make_planes(rgb, settings.chroma)
            encode_at = functools.partial(self._encode_openjpeg, planes, settings)
        else:
            if settings.ycbcr:
                samples = ycbcr_for_openslide(rgb) if settings.lossless else ycbcr_rounded(rgb)
            else:
                samples = rgb
            encode_at = functools.partial(self._encode, samples, settings)
        if settings.lossless:
            return self._finish(encode_at(0.0), settings)
        return self._finish(self.rate.encode(encode_at, len(source)), settings)

    def _encode(self, samples: np.ndarray, settings: Jpeg2000Settings, level: float) -> bytes:
        return bytes(
            imagecodecs.jpeg2k_encode(
                samples,
                # OpenJPEG takes the target PSNR as a float (imagecodecs passes it through to
                # tcp_distoratio); the type stub's int is narrower than the function.
                level=cast(int, level),
                codecformat="J2K",
                reversible=settings.lossless,
                mct=settings.mct,
                resolutions=settings.resolutions,
                numthreads=1,  # parallelism comes from the worker pool; threads cost more here
            )
        )

    @staticmethod
    def _decode_subsampled(data: bytes, settings: Jpeg2000Settings) -> np.ndarray:
        """YCbCr samples at full resolution, chroma replicated as OpenSlide does.
        (imagecodecs would convert subsampled YCbCr to RGB its own way.)"""
        try:
            decoded = openjpeg.decode(data, (settings.header.width, settings.header.height))
        except openjpeg.OpenJpegUnavailable as exc:
            raise _binding_unavailable(exc) from None
        except openjpeg.OpenJpegError as exc:
            raise Jpeg2000FormatError(str(exc)) from None
        header = settings.header
        wanted = tuple((c.dx, c.dy) for c in header.components)
        if (decoded.width, decoded.height) != (header.width, header.height) or (
            decoded.subsampling != wanted
        ):
            raise Jpeg2000FormatError(
                f"decodes to {decoded.width}x{decoded.height} with subsampling "
                f"{decoded.subsampling}, the header says {header.width}x{header.height} {wanted}"
            )
        planes = tuple(np.clip(p, 0, 255).astype(np.uint8) for p in decoded.planes)
        assert settings.chroma is not None
        return upsample_chroma(planes, settings.chroma)

    @staticmethod
    def _encode_openjpeg(
        planes: tuple[np.ndarray, ...], settings: Jpeg2000Settings, level: float
    ) -> bytes:
        """Encode with the source's coding style (progression, code-blocks, precincts, SOP/EPH,
        code-block style) and component sampling, in one quality layer."""
        header = settings.header
        coding = header.coding
        cbw, cbh = coding.codeblock_exponents
        options = openjpeg.EncodeOptions(
            reversible=coding.reversible,
            resolutions=coding.levels + 1,
            psnr=0.0 if settings.lossless else level,
            mct=coding.mct != 0,
            progression=coding.progression,
            codeblock=(1 << cbw, 1 << cbh),
            codeblock_style=coding.codeblock_style,
            precincts=tuple((1 << x, 1 << y) for x, y in coding.precinct_exponents)
            if coding.precincts_signalled
            else (),
            sop=coding.sop,
            eph=coding.eph,
        )
        factors = [(c.dx, c.dy) for c in header.components]
        try:
            return openjpeg.encode(planes, header.width, header.height, factors, options)
        except openjpeg.OpenJpegUnavailable as exc:
            raise _binding_unavailable(exc) from None
        except openjpeg.OpenJpegError as exc:
            raise UnsupportedLayoutError(
                None, f"cannot re-encode a JPEG 2000 tile with {header.summary()}: {exc}"
            ) from None

    def _finish(self, stream: bytes, settings: Jpeg2000Settings) -> bytes:
        """Check the encoder kept the source's parameters; give it the source's COD if that is
        packet-equivalent."""
        ours = parse_header(stream)
        source = settings.header
        kept = (
            ours.coding.reversible == source.coding.reversible
            and ours.coding.levels == source.coding.levels
            and ours.coding.mct == source.coding.mct
            and (ours.width, ours.height) == (source.width, source.height)
            and [(c.dx, c.dy) for c in ours.components] == [(c.dx, c.dy) for c in source.components]
        )
        if not kept:
            raise UnsupportedLayoutError(
                None,
                f"cannot re-encode a JPEG 2000 tile with {source.summary()}: the encoder "
                f"wrote {ours.summary()}",
            )
        cod = equivalent_cod(ours, source)
        if cod is None or cod == ours.cod_segment:
            return stream
        start = stream.index(ours.cod_segment)
        return stream[:start] + cod + stream[start + len(ours.cod_segment) :]
