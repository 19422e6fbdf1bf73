"""Uncompressed and LZW segments: lossless, so the stored pixels are exactly the transform's."""

from __future__ import annotations

import imagecodecs
import numpy as np

from svsicc.codecs.pixels import rgb_from_layout
from svsicc.exceptions import CodecError

COMPRESSION_NONE = 1
COMPRESSION_LZW = 5
PREDICTOR_NONE = 1
PREDICTOR_HORIZONTAL = 2


class LosslessFormatError(CodecError):
    """A segment whose size or stream does not match its geometry."""


class LosslessCodec:
    lossless = True
    decoded_layout = "RGB"  # what the segment holds

    def __init__(self, compression: int, predictor: int) -> None:
        if compression not in (COMPRESSION_NONE, COMPRESSION_LZW):
            raise ValueError(f"compression {compression} is not lossless here")
        if predictor not in (PREDICTOR_NONE, PREDICTOR_HORIZONTAL):
            raise LosslessFormatError(f"predictor {predictor} is not supported")
        self.compression = compression
        self.predictor = predictor

    def decode(self, data: bytes, rows: int, cols: int) -> np.ndarray:
        expected = rows * cols * 3
        if self.compression == COMPRESSION_LZW:
            try:
                data = bytes(imagecodecs.lzw_decode(data, out=expected))
            except (imagecodecs.LzwError, ValueError) as exc:
                raise LosslessFormatError(f"LZW stream cannot be decoded: {exc}") from None
        if len(data) < expected:
            raise LosslessFormatError(f"holds {len(data)} bytes, expected {expected}")
        rgb = np.frombuffer(data, np.uint8, expected).reshape(rows, cols, 3)
        if self.predictor == PREDICTOR_HORIZONTAL:
            rgb = imagecodecs.delta_decode(rgb, axis=1)
        return rgb

    def encode(self, pixels: np.ndarray, layout: str, source: bytes) -> bytes:
        rgb = rgb_from_layout(pixels, layout)
        if self.predictor == PREDICTOR_HORIZONTAL:
            rgb = imagecodecs.delta_encode(rgb, axis=1)
        raw = np.ascontiguousarray(rgb).tobytes()
        if self.compression == COMPRESSION_LZW:
            try:
                return bytes(imagecodecs.lzw_encode(raw))
            except imagecodecs.LzwError as exc:
                raise LosslessFormatError(f"LZW cannot encode it: {exc}") from None
        return raw
