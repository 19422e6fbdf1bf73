"""The pixel layouts codecs exchange.

A decoder returns pixels in the layout its codec names as ``decoded_layout``, whichever its library
writes fastest: "BGRX", (rows, cols, 4) uint8, read as little-endian 32-bit words ``0x??RRGGBB``
(the colour table's index after one mask; libjpeg-turbo converts YCbCr to it with SIMD), or
"RGB", (rows, cols, 3) uint8 (what an RGB-colourspace JPEG, JPEG 2000 or an uncompressed strip
holds as it is). The colour table takes either and returns "RGBX". Encoders take any of the
three and are told which by ``layout``.
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
    if layout == "RGB":
        return np.ascontiguousarray(pixels)
    if layout == "RGBX":
        return np.ascontiguousarray(pixels[..., :3])
    if layout == "BGRX":
        return np.ascontiguousarray(pixels[..., 2::-1])
    raise ValueError(f"unknown pixel layout {layout!r}")
