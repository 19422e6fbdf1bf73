"""The floor of a lossy re-encode: what one encode of the ideal pixels loses, as a yardstick.

A calibrated copy of a lossy slide cannot equal the ideal (LittleCMS applied to the decoded
original): its tiles were encoded once more, at the original's quantisation tables, sampling and
colourspace (JPEG 2000: at the original's rate). How much that loses depends on the tables and on
the transform: a strong profile stretches the tones the original encode had flattened, so the
same tables lose more. :func:`floor_for` re-encodes the ideal once, in the original's settings,
and decodes it again; ``svsicc verify`` then judges the copy against that floor instead of fixed
numbers.

Independence: the floor never goes through svsicc's own encode path (``svsicc/codecs``). The
settings are read with Pillow from the original's own headers (JPEG quantisation tables and
sampling from the tile with its JPEGTables; JPEG 2000 from the SIZ/COD the reader parses), and
the encode and decode are Pillow's (libjpeg-turbo, OpenJPEG). A bug in svsicc's writer therefore
shows as a copy that misses its floor rather than as a floor that moved with it.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image, JpegImagePlugin

from svsicc.codecs.codes import Compression, Photometric
from svsicc.codecs.jpeg2k import parse_header
from svsicc.tiff.slide import Page

RGB = npt.NDArray[np.uint8]
# the ideal pixels of a whole stored segment (rows, cols, 3; edge tiles with their padding) and
# the original's stored bytes -> those pixels after one re-encode
RoundTrip = Callable[[RGB, bytes], RGB]

_EOI = b"\xff\xd9"


class FloorError(ValueError):
    """The original's segment does not say how it was encoded (unparsable header)."""


def floor_for(page: Page) -> RoundTrip | None:
    """The re-encode round trip of ``page``'s compression; None for lossless compressions
    (none, LZW: the floor is exact) and for anything else svsicc does not convert lossily."""
    if page.compression == Compression.JPEG:
        tables = page.jpeg_tables
        rgb = page.photometric == Photometric.RGB

        def jpeg(ideal: RGB, source: bytes) -> RGB:
            return jpeg_round_trip(ideal, source, tables, rgb)

        return jpeg
    if page.compression in (Compression.JPEG2000_RGB, Compression.JPEG2000_YCBCR):
        ycbcr = page.compression == Compression.JPEG2000_YCBCR

        def j2k(ideal: RGB, source: bytes) -> RGB:
            return jpeg2000_round_trip(ideal, source, ycbcr)

        return j2k
    return None


# -- JPEG -------------------------------------------------------------------------------------


def jpeg_settings(source: bytes, tables: bytes | None) -> tuple[list[list[int]], int]:
    """(quantisation tables in table-id order, Pillow's subsampling code) of a JPEG segment,
    read by Pillow from the segment and its IFD's JPEGTables (Aperio's abbreviated streams)."""
    data = source
    if tables and tables.endswith(_EOI) and source[:2] == b"\xff\xd8":
        data = tables[:-2] + source[2:]
    try:
        with Image.open(io.BytesIO(data)) as im:
            quant = getattr(im, "quantization", None) or {}
            sampling = JpegImagePlugin.get_sampling(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise FloorError(f"Pillow cannot read the JPEG header: {exc}") from None
    if not quant or sampling < 0:
        raise FloorError("the JPEG header has no quantisation tables or no 3-component frame")
    return [list(quant[k]) for k in sorted(quant)], sampling


def jpeg_round_trip(ideal: RGB, source: bytes, tables: bytes | None, rgb: bool) -> RGB:
    qtables, sampling = jpeg_settings(source, tables)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(ideal)).save(
        buf, "JPEG", qtables=qtables, subsampling=sampling, keep_rgb=rgb
    )
    buf.seek(0)
    with Image.open(buf) as im:
        out: RGB = np.asarray(im.convert("RGB"))
    return out


# -- JPEG 2000 --------------------------------------------------------------------------------


def _to_ycbcr(rgb: RGB) -> npt.NDArray[np.float64]:
    x = rgb.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return np.stack(
        (
            0.299 * r + 0.587 * g + 0.114 * b,
            128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
            128 + 0.5 * r - 0.418688 * g - 0.081312 * b,
        ),
        axis=-1,
    )


def _to_rgb(ycc: RGB) -> RGB:
    y, cb, cr = (ycc[..., k].astype(np.float64) for k in range(3))
    out = np.stack(
        (
            y + 1.402 * (cr - 128),
            y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
            y + 1.772 * (cb - 128),
        ),
        axis=-1,
    )
    result: RGB = np.rint(out).clip(0, 255).astype(np.uint8)
    return result


def _subsample(plane: npt.NDArray[np.float64], dx: int, dy: int) -> npt.NDArray[np.float64]:
    """Block means replicated back to full size: the chroma a subsampled stream can hold."""
    rows, cols = plane.shape
    padded = np.pad(plane, ((0, -rows % dy), (0, -cols % dx)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // dy, dy, padded.shape[1] // dx, dx).mean(axis=(1, 3))
    full = np.repeat(np.repeat(blocks, dy, axis=0), dx, axis=1)
    return full[:rows, :cols]


def jpeg2000_round_trip(ideal: RGB, source: bytes, ycbcr: bool) -> RGB:
    """One 9/7 encode of ``ideal`` at the byte count of ``source`` (Aperio 33003: as YCbCr
    without MCT, chroma at the source's subsampling), decoded again; reversible 5/3 sources are
    lossless and returned as they are."""
    try:
        header = parse_header(source)
    except ValueError as exc:
        raise FloorError(f"the JPEG 2000 header cannot be read: {exc}") from None
    if ycbcr:
        planes = _to_ycbcr(ideal)
        for k in (1, 2):
            c = header.components[k] if k < len(header.components) else None
            if c is not None and (c.dx, c.dy) != (1, 1):
                planes[..., k] = _subsample(planes[..., k], c.dx, c.dy)
        samples: RGB = np.rint(planes).clip(0, 255).astype(np.uint8)
    else:
        samples = np.ascontiguousarray(ideal)
    if header.coding.reversible:
        # Lossless keeps the samples, but 33003's are 8-bit YCbCr: rounding them (and any
        # chroma subsampling) is what even a perfect copy loses.
        return _to_rgb(samples) if ycbcr else ideal
    ratio = max(1.0, samples.size / max(len(source), 1))
    buf = io.BytesIO()
    Image.fromarray(samples, "RGB").save(
        buf,
        "JPEG2000",
        no_jp2=True,
        irreversible=True,
        quality_mode="rates",
        quality_layers=[ratio],
        mct=0 if ycbcr else (1 if header.coding.mct else 0),
        num_resolutions=header.coding.levels + 1,
    )
    buf.seek(0)
    with Image.open(buf) as im:
        decoded: RGB = np.asarray(im.convert("RGB"))
    return _to_rgb(decoded) if ycbcr else decoded
