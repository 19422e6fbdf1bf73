"""The pixel layouts codecs exchange.

Decoders return (rows, cols, 4) uint8 in BGRX order: read as little-endian 32-bit words that is
``0x??RRGGBB``, the colour table's index after one mask. The colour table returns RGBX order.
Encoders accept either and name it with ``layout`` ("BGRX" or "RGBX").
"""

from __future__ import annotations

import numpy as np


def bgrx_from_rgb(rgb: np.ndarray) -> np.ndarray:
    rows, cols = rgb.shape[:2]
    out = np.empty((rows, cols, 4), np.uint8)
    out[..., 0] = rgb[..., 2]
    out[..., 1] = rgb[..., 1]
    out[..., 2] = rgb[..., 0]
    out[..., 3] = 0
    return out


def rgb_from_layout(pixels: np.ndarray, layout: str) -> np.ndarray:
    if layout == "RGBX":
        return np.ascontiguousarray(pixels[..., :3])
    if layout == "BGRX":
        return np.ascontiguousarray(pixels[..., 2::-1])
    raise ValueError(f"unknown pixel layout {layout!r}")
