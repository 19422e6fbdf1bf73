"""The TIFF codes of the compressions and colour types svsicc knows (the registry of their codecs
is :mod:`svsicc.codecs.registry`; codec modules import the codes from here, not the registry)."""

from __future__ import annotations

from enum import IntEnum


class Compression(IntEnum):
    """TIFF Compression (tag 259) values svsicc knows."""

    NONE = 1
    LZW = 5
    JPEG = 7
    # Aperio's JPEG 2000: raw J2K codestreams; 33003 holds YCbCr samples without a codestream
    # colour transform (the reader converts), 33005 RGB.
    JPEG2000_YCBCR = 33003
    JPEG2000_RGB = 33005


class Photometric(IntEnum):
    """TIFF PhotometricInterpretation (tag 262) values of colour slides."""

    RGB = 2
    YCBCR = 6
