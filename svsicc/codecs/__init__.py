"""Segment codecs: one class per compression, built from a page's settings.

Every codec has ``lossless``, ``decode(data, rows, cols) -> (rows, cols, 4) BGRX uint8`` and
``encode(pixels, layout, source) -> bytes`` where ``source`` is the original segment, whose
stream parameters the encoder reproduces.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class SegmentCodec(Protocol):
    lossless: bool

    def decode(self, data: bytes, rows: int, cols: int) -> np.ndarray: ...

    def encode(self, pixels: np.ndarray, layout: str, source: bytes) -> bytes: ...
