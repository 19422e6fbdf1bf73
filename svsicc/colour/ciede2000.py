"""CIEDE2000 colour difference, vectorised, and the sRGB -> CIELAB (D65) conversion it needs.

Follows Sharma, Wu & Dalal, "The CIEDE2000 Color-Difference Formula: Implementation Notes,
Supplementary Test Data, and Mathematical Observations" (Color Res. Appl. 30, 2005), including
their notes on hue angles: h' is 0 for achromatic colours, the mean hue of a pair with one
achromatic colour is the sum of the two hues, and mean hues wrap at 360 degrees.
tests/test_verify.py checks it against all 34 of their published pairs to 1e-4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]

# IEC 61966-2-1 sRGB primaries, D65 white, XYZ scaled so that white has Y = 1.
_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
D65_WHITE = _SRGB_TO_XYZ.sum(axis=1)  # (0.95047, 1.0, 1.08883)
_25_POW_7 = 25.0**7
_COS = {d: float(np.cos(np.radians(d))) for d in (6, 30, 63)}
_SIN = {d: float(np.sin(np.radians(d))) for d in (6, 30, 63)}


def _linear_table() -> FloatArray:
    v = np.arange(256, dtype=np.float64) / 255.0
    out: FloatArray = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return out


_LINEAR = _linear_table()
# XYZ / white point: one row per output channel.
_XYZ_ROWS = tuple(tuple(float(v) for v in row) for row in _SRGB_TO_XYZ / D65_WHITE[:, None])


def srgb_to_lab(rgb: npt.NDArray[np.uint8], dtype: npt.DTypeLike = np.float64) -> FloatArray:
    """(..., 3) 8-bit sRGB -> (..., 3) CIELAB (L*, a*, b*) relative to D65."""
    pixels = np.asarray(rgb, dtype=np.uint8)
    linear = _LINEAR.astype(dtype, copy=False)
    r, g, b = (linear[pixels[..., k]] for k in range(3))
    # Channel by channel: numpy's matmul over a (N, 3) x (3, 3) stack is ~15x slower.
    fx, fy, fz = (_lab_f(m[0] * r + m[1] * g + m[2] * b) for m in _XYZ_ROWS)
    lab = np.empty((*pixels.shape[:-1], 3), dtype)
    lab[..., 0] = 116 * fy - 16
    lab[..., 1] = 500 * (fx - fy)
    lab[..., 2] = 200 * (fy - fz)
    return lab


def _lab_f(t: FloatArray) -> FloatArray:
    epsilon, kappa = 216 / 24389, 24389 / 27
    out: FloatArray = np.where(t > epsilon, np.cbrt(t), (kappa * t + 16) / 116)
    return out


def delta_e2000(
    lab1: npt.ArrayLike,
    lab2: npt.ArrayLike,
    k_l: float = 1.0,
    k_c: float = 1.0,
    k_h: float = 1.0,
) -> FloatArray:
    """CIEDE2000 difference of two broadcastable (..., 3) CIELAB arrays, shape (...).

    Computed in float32 when both inputs are float32 (numpy's float32 sine and cosine are ~7x
    faster, and their 1e-7 relative error is far below what a whole-slide statistic resolves),
    otherwise in float64.
    """
    dtype = np.result_type(np.asarray(lab1).dtype, np.asarray(lab2).dtype, np.float32)
    lab1 = np.asarray(lab1, dtype=dtype)
    lab2 = np.asarray(lab2, dtype=dtype)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]

    c_mean7 = _pow7((np.sqrt(a1 * a1 + b1 * b1) + np.sqrt(a2 * a2 + b2 * b2)) / 2)
    g = 0.5 * (1 - np.sqrt(c_mean7 / (c_mean7 + _25_POW_7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.sqrt(a1p * a1p + b1 * b1), np.sqrt(a2p * a2p + b2 * b2)
    h1p = _hue_degrees(a1p, b1)
    h2p = _hue_degrees(a2p, b2)

    chroma_product = c1p * c2p
    achromatic = chroma_product == 0
    dhp = h2p - h1p
    dhp = np.where(dhp > 180, dhp - 360, np.where(dhp < -180, dhp + 360, dhp))
    dhp = np.where(achromatic, 0.0, dhp)
    d_l = l2 - l1
    d_c = c2p - c1p
    d_h = 2 * np.sqrt(chroma_product) * np.sin(np.radians(dhp) / 2)

    l_mean = (l1 + l2) / 2
    c_mean_p = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(
        np.abs(h1p - h2p) <= 180,
        h_sum / 2,
        np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2),
    )
    h_mean = np.where(achromatic, h_sum, h_mean)

    t = _hue_weight(np.radians(h_mean))
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    c_mean_p7 = _pow7(c_mean_p)
    r_c = 2 * np.sqrt(c_mean_p7 / (c_mean_p7 + _25_POW_7))
    l50 = (l_mean - 50) ** 2
    s_l = 1 + 0.015 * l50 / np.sqrt(20 + l50)
    s_c = 1 + 0.045 * c_mean_p
    s_h = 1 + 0.015 * c_mean_p * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c

    term_l = d_l / (k_l * s_l)
    term_c = d_c / (k_c * s_c)
    term_h = d_h / (k_h * s_h)
    squared = term_l**2 + term_c**2 + term_h**2 + r_t * term_c * term_h
    out: FloatArray = np.sqrt(np.maximum(squared, 0.0))
    return out


def _hue_weight(h: FloatArray) -> FloatArray:
    """T = 1 - .17 cos(h - 30) + .24 cos 2h + .32 cos(3h + 6) - .2 cos(4h - 63), h in radians.

    Multiple angles come from cos h and sin h by the angle-sum identities: two trigonometric
    calls instead of four, the most expensive part of the formula on a whole slide.
    """
    c1, s1 = np.cos(h), np.sin(h)
    c2, s2 = 2 * c1 * c1 - 1, 2 * s1 * c1
    c3, s3 = c1 * (4 * c1 * c1 - 3), s1 * (3 - 4 * s1 * s1)
    c4, s4 = 2 * c2 * c2 - 1, 2 * s2 * c2
    out: FloatArray = (
        1
        - 0.17 * (c1 * _COS[30] + s1 * _SIN[30])
        + 0.24 * c2
        + 0.32 * (c3 * _COS[6] - s3 * _SIN[6])
        - 0.20 * (c4 * _COS[63] + s4 * _SIN[63])
    )
    return out


def _pow7(x: FloatArray) -> FloatArray:
    # Three multiplications; numpy's float power is ~10x slower.
    x2 = x * x
    out: FloatArray = x2 * x2 * x2 * x
    return out


def _hue_degrees(a: FloatArray, b: FloatArray) -> FloatArray:
    """Hue angle in [0, 360); atan2(0, 0) is already 0, as the formula wants for greys."""
    hue: FloatArray = np.degrees(np.arctan2(b, a))
    return np.where(hue < 0, hue + 360, hue)


def delta_e2000_srgb(
    rgb1: npt.NDArray[np.uint8], rgb2: npt.NDArray[np.uint8], dtype: npt.DTypeLike = np.float32
) -> FloatArray:
    """CIEDE2000 between two (..., 3) 8-bit sRGB images, pixel by pixel (float32 by default)."""
    return delta_e2000(srgb_to_lab(rgb1, dtype), srgb_to_lab(rgb2, dtype))
