#!/usr/bin/env python3
"""An independent codec floor for an Aperio slide: what decoding and re-encoding every tile costs
with nothing of svsicc's.

For every pyramid level and the thumbnail (every page but label and macro) it reads each tile or
strip with plain file reads at the offsets and byte counts tifffile lists, decodes it with
imagecodecs and encodes it again with imagecodecs at the source's settings, and writes the new
bytes one after another into OUTPUT, which is flushed to disk at the end (apply fsyncs its copy
too). No TIFF is written and no colour is converted.

* JPEG (libjpeg-turbo): decoded with the IFD's JPEGTables, in the colourspace Photometric names
  (RGB or YCbCr); encoded at the IJG quality whose tables equal the source's (found by encoding an
  8x8 image at every quality and comparing the DQT bytes), with the source's sampling and
  colourspace. Pages whose tables are not IJG tables at any quality are refused.
* JPEG 2000 (OpenJPEG, Aperio 33003/33005): decoded and encoded as a raw J2K codestream, lossless
  when the source is reversible, else at the PSNR target that makes the page's first tile as
  large as the source's (imagecodecs' OpenJPEG encoder takes a PSNR, not a rate).

The script must not import svsicc: it is the yardstick svsicc is measured against. It prints one
JSON line: segments, bytes written, seconds after imports.

Run: python benchmarks/codec_floor.py SLIDE OUTPUT
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

import imagecodecs
import numpy as np
import tifffile

PHOTOMETRIC_RGB = 2
JPEG_COMPRESSION = 7
JPEG2000_COMPRESSIONS = (33003, 33005)


def dqt_tables(stream: bytes | bytearray) -> dict[int, bytes]:
    """Quantisation table entries (precision/id byte included) by id, from a JPEG stream's
    markers before its first SOS (a JPEGTables stream holds only tables)."""
    tables: dict[int, bytes] = {}
    pos = 2
    while pos + 4 <= len(stream) and stream[pos] == 0xFF:
        marker = stream[pos + 1]
        if marker in (0xDA, 0xD9):
            break
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if marker == 0xDB:
            body = bytes(stream[pos + 4 : pos + 2 + length])
            at = 0
            while at < len(body):
                size = 1 + 64 * (2 if body[at] >> 4 else 1)
                tables[body[at] & 15] = body[at : at + size]
                at += size
        pos += 2 + length
    return tables


def frame_sampling(stream: bytes) -> str:
    """imagecodecs' subsampling name for the first component's factors in the SOF0/SOF1."""
    for sof in (b"\xff\xc0", b"\xff\xc1"):
        at = stream.find(sof)
        if at >= 0:
            factors = stream[at + 11]
            return {0x11: "444", 0x21: "422", 0x22: "420"}[factors]
    raise SystemExit("no baseline frame header")


def ijg_quality(tables: dict[int, bytes], colorspace: int) -> int:
    """The IJG quality whose tables libjpeg-turbo writes equal ``tables``."""
    probe = np.zeros((8, 8, 3), np.uint8)
    for quality in range(100, 0, -1):
        encoded = imagecodecs.jpeg8_encode(
            probe, level=quality, colorspace="RGB", outcolorspace=colorspace
        )
        made = dqt_tables(encoded)
        if all(made.get(k) == v for k, v in tables.items()):
            return quality
    raise SystemExit("the quantisation tables are not IJG tables at any quality")


def jpeg_reencoder(page: tifffile.TiffPage, first: bytes) -> Callable[[bytes], bytes | bytearray]:
    """Decode and re-encode one tile or strip of ``page`` (``first``: its first non-empty one)."""
    colorspace = imagecodecs.JPEG8.CS.RGB
    if page.photometric != PHOTOMETRIC_RGB:
        colorspace = imagecodecs.JPEG8.CS.YCbCr
    jpegtables = page.jpegtables
    quality = ijg_quality(dqt_tables(jpegtables or first) | dqt_tables(first), colorspace)
    sampling = frame_sampling(first)

    def reencode(data: bytes) -> bytes | bytearray:
        pixels = imagecodecs.jpeg8_decode(
            data, tables=jpegtables, colorspace=colorspace, outcolorspace="RGB"
        )
        return imagecodecs.jpeg8_encode(
            pixels, level=quality, colorspace="RGB", outcolorspace=colorspace, subsampling=sampling
        )

    return reencode


def matched_psnr(pixels: np.ndarray, size: int) -> int:
    """The PSNR target (imagecodecs' ``level`` for OpenJPEG, whole dB) at which ``pixels`` encode
    to about ``size`` bytes: imagecodecs has no rate parameter, so the rate is matched by
    bisection."""
    low, high = 20, 80
    while high - low > 1:
        middle = (low + high) // 2
        if len(imagecodecs.jpeg2k_encode(pixels, level=middle, codecformat="J2K")) > size:
            high = middle
        else:
            low = middle
    return low


def jpeg2000_reencoder(first: bytes) -> Callable[[bytes], bytes | bytearray]:
    # Once per page, from its first tile: the COD marker's wavelet byte (1: reversible 5/3,
    # lossless; 0: 9/7) and, when lossy, the quality that matches the source's rate.
    cod = first.find(b"\xff\x52")
    level: int | None = None  # None: reversible (lossless)
    if not (cod >= 0 and first[cod + 13] == 1):
        level = matched_psnr(imagecodecs.jpeg2k_decode(first), len(first))

    def reencode(data: bytes) -> bytes | bytearray:
        pixels = imagecodecs.jpeg2k_decode(data)
        return imagecodecs.jpeg2k_encode(
            pixels, level=level, codecformat="J2K", reversible=level is None
        )

    return reencode


def reencoder(page: tifffile.TiffPage, first: bytes) -> Callable[[bytes], bytes | bytearray]:
    if page.compression == JPEG_COMPRESSION:
        return jpeg_reencoder(page, first)
    if page.compression in JPEG2000_COMPRESSIONS:
        return jpeg2000_reencoder(first)
    raise SystemExit(f"page {page.index}: compression {page.compression}")


def reencode_page(page: tifffile.TiffPage, fd: int, out: BinaryIO) -> int:
    """Every non-empty tile or strip of ``page`` read, re-encoded and written; how many."""
    extents = [
        (offset, count)
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True)
        if count
    ]
    if not extents:
        return 0
    reencode = reencoder(page, os.pread(fd, extents[0][1], extents[0][0]))
    for offset, count in extents:
        out.write(reencode(os.pread(fd, count, offset)))
    return len(extents)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    source, output = argv
    started = time.perf_counter()
    segments = 0
    fd = os.open(source, os.O_RDONLY)
    with tifffile.TiffFile(source) as tif, open(output, "wb") as out:
        for page in tif.pages:
            assert isinstance(page, tifffile.TiffPage)  # TiffFrames only when pages are cached
            text = page.description
            if "\nlabel " in text or "\nmacro " in text:
                continue
            segments += reencode_page(page, fd, out)
        out.flush()
        os.fsync(out.fileno())
        written = out.tell()
    os.close(fd)
    seconds = time.perf_counter() - started
    print(json.dumps({"segments": segments, "bytes": written, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
