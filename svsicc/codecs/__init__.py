"""Segment codecs: one class per compression, built from a page's settings.

Every codec has ``lossless``, ``decoded_layout``, ``decode(data, rows, cols)`` -> uint8 pixels in
that layout (:mod:`svsicc.codecs.pixels`) and ``encode(pixels, layout, source) -> bytes`` where
``source`` is the original segment, whose stream parameters the encoder reproduces.

A codec whose output depends on the segments it encoded before (JPEG 2000's rate control) is
also an :class:`AdaptiveCodec`: the engine snapshots what it learned and starts every batch from
that snapshot, so the bytes do not depend on how segments were spread over workers.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


class SegmentCodec(Protocol):
    lossless: bool
    decoded_layout: str  # "BGRX" or "RGB": what decode returns

    def decode(self, data: bytes, rows: int, cols: int) -> np.ndarray: ...

    def encode(self, pixels: np.ndarray, layout: str, source: bytes) -> bytes: ...


@runtime_checkable
class AdaptiveCodec(Protocol):
    def learned_state(self) -> object:
        """A picklable snapshot of everything that steers later encodes."""
        ...

    def restore_state(self, state: object) -> None: ...
