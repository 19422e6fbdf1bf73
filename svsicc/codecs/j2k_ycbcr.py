"""YCbCr for 33003 tiles as OpenSlide reads them.

33003 stores YCbCr samples with no codestream colour transform; the reader converts them. What
users see is OpenSlide's conversion (JPEG full-range BT.601 in fixed point, see
:func:`rgb_from_ycbcr`), so that is the conversion used here, bit for bit. For lossless (5/3)
tiles the encoder stores, per pixel, the YCbCr triple that OpenSlide turns back into the wanted
RGB most closely (only a quarter of all RGB colours have an exact 8-bit YCbCr preimage; plain
rounding would almost double the squared error); lossy tiles use plain rounding. Subsampled
chroma (4:2:2, 4:2:0) is replicated over its block on reading, as OpenSlide does; lossy chroma
is the rounded block mean of the exact chroma, lossless tiles search chroma and Y per block for
OpenSlide's closest reconstruction (:func:`subsampled_ycbcr_for_openslide`).
"""

from __future__ import annotations

import itertools

import numpy as np


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
    """(..., 3) uint8 RGB -> the JPEG/JFIF YCbCr rounded exactly, for lossy tiles, whose
    coding error dwarfs the 0.2 levels (RMS) that :func:`ycbcr_for_openslide` would save.

    Exactly (the coefficients have six decimals), halves to even as np.rint: glass often sits
    on a half (RGB 243,244,244 has Cr 127.5). Rounded in float32 that Cr fell to 127, which
    OpenSlide reads as G + 1 (CIEDE2000 0.83); 128 reads as R + 1 (0.51), the same squared
    error. A slide of mostly such glass measured a mean dE2000 0.18 above its floor (which
    rounds exactly), past verify's margin."""
    # Integer sums of integer products are exact in float64, and so is the rounding of their
    # quotient: a half (k + 0.5) is representable, any other value is 1e-6 away from one.
    flat = rgb.reshape(-1, 3)
    r, g, b = (flat[:, i].astype(np.float64) for i in range(3))
    out = np.empty(flat.shape, np.uint8)
    for index, (kr, kg, kb, offset) in enumerate(_MICRO):
        micro = kr * r + kg * g + kb * b
        out[:, index] = np.clip(np.rint(micro / 1_000_000) + offset, 0, 255)
    return out.reshape(rgb.shape)


# JPEG/JFIF Y, Cb and Cr in millionths: exact integers (see ycbcr_rounded).
_MICRO = (
    (299_000.0, 587_000.0, 114_000.0, 0.0),
    (-168_736.0, -331_264.0, 500_000.0, 128.0),
    (500_000.0, -418_688.0, -81_312.0, 128.0),
)


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
