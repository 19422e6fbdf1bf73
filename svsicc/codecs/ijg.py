"""The encoder for sources quantised with IJG tables: libjpeg-turbo through imagecodecs.

Most scanners quantise with the Annex K tables scaled to a quality, as libjpeg's
``jpeg_set_quality`` does. For those, imagecodecs' ``jpeg8_encode`` at that quality writes the
same tables, so the entropy-coded data is what Pillow writes with the tables passed explicitly
(both are libjpeg-turbo, integer DCT), at less cost per tile: Pillow builds an Image, parses its
options and copies through a BytesIO on every call (0.05-0.06 ms of a 0.22-0.28 ms encode here).
Any other tables, or a restart interval (imagecodecs cannot set one), keep Pillow's encoder.

The quality path is taken only after an exact check: every table the source uses equals, in all
64 entries, the table libjpeg makes for that quality, and a probe encoded through imagecodecs at
that quality carries exactly those tables in the same component assignment and sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import imagecodecs
import numpy as np

from svsicc.codecs.jpeg_stream import (
    SOF_MARKERS,
    JpegFormatError,
    JpegSettings,
    TableSet,
    natural_order,
    split_header,
)

# ITU-T T.81 Annex K.1, natural (row-major) order: what libjpeg's jpeg_set_quality scales.
_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMINANCE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip

_SUBSAMPLING = {0: "444", 1: "422", 2: "420"}
_IN_LAYOUT = {
    "RGB": imagecodecs.JPEG8.CS.RGB,
    "RGBX": imagecodecs.JPEG8.CS.EXT_RGBX,
    "BGRX": imagecodecs.JPEG8.CS.EXT_BGRX,
}


@lru_cache(maxsize=128)
def ijg_table(base_is_chroma: bool, quality: int) -> tuple[int, ...]:
    """The table libjpeg's jpeg_set_quality(quality, force_baseline=TRUE) makes."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = _CHROMINANCE if base_is_chroma else _LUMINANCE
    return tuple(min(max((b * scale + 50) // 100, 1), 255) for b in base)


def ijg_quality(settings: JpegSettings) -> int | None:
    """The quality whose IJG tables the source uses, all 64 entries of every table, or None.

    RGB colourspace: libjpeg quantises every component with the luminance table (table 0).
    YCbCr: luminance for Y (table 0), chrominance for Cb and Cr (table 1).
    """
    wanted = tuple(c.tq for c in settings.components)
    if settings.colorspace == "RGB":
        if wanted != (0, 0, 0):
            return None
        expected_chroma: tuple[bool, ...] = (False,)
    else:
        if wanted != (0, 1, 1):
            return None
        expected_chroma = (False, True)
    for quality in range(100, 0, -1):
        if all(
            ijg_table(chroma, quality) == table
            for chroma, table in zip(expected_chroma, settings.qtables, strict=True)
        ):
            return quality
    return None


@dataclass(frozen=True)
class IjgEncoder:
    """imagecodecs' jpeg8_encode with the arguments that reproduce one kind of source tile."""

    quality: int
    outcolorspace: int
    subsampling: str
    optimize: bool

    def encode(self, pixels: np.ndarray, layout: str) -> bytes:
        try:
            encoded = imagecodecs.jpeg8_encode(
                pixels,
                level=self.quality,
                colorspace=_IN_LAYOUT[layout],
                outcolorspace=self.outcolorspace,
                subsampling=self.subsampling,
                optimize=self.optimize,
            )
        except imagecodecs.Jpeg8Error as exc:
            raise JpegFormatError(f"libjpeg cannot encode it: {exc}") from None
        return bytes(encoded)


def ijg_encoder(settings: JpegSettings) -> IjgEncoder | None:
    """An encoder that writes the source's tables, assignment and sampling, or None (Pillow)."""
    if settings.restart_interval:
        return None
    quality = ijg_quality(settings)
    if quality is None:
        return None
    encoder = IjgEncoder(
        quality=quality,
        outcolorspace=(
            imagecodecs.JPEG8.CS.RGB if settings.colorspace == "RGB" else imagecodecs.JPEG8.CS.YCbCr
        ),
        subsampling=_SUBSAMPLING[settings.subsampling],
        optimize=settings.optimize,
    )
    # Checked on a probe rather than trusted: the library must write exactly these tables in
    # this assignment and sampling, or the tiles would not decode through the IFD's JPEGTables.
    h, v = settings.components[0].h, settings.components[0].v
    probe = encoder.encode(np.zeros((8 * v, 8 * h, 4), np.uint8), "RGBX")
    segments, _ = split_header(probe)
    made = TableSet.from_segments(segments).quant
    sof = [s.payload for s in segments if s.marker in SOF_MARKERS]
    if len(sof) != 1 or sof[0][5] != len(settings.components):
        return None
    for i, component in enumerate(settings.components):
        tq = sof[0][8 + 3 * i]
        sampling = (sof[0][7 + 3 * i] >> 4, sof[0][7 + 3 * i] & 15)
        if tq != component.tq or sampling != (component.h, component.v) or tq not in made:
            return None
    tables = sorted({c.tq for c in settings.components})
    if [natural_order(made[t]) for t in tables] != list(settings.qtables):
        return None
    return encoder
