"""A DICOM WSI series' pixels as ``svsicc report`` reads them: pages are instances, and a page's
picture is its frames decoded (svsicc's codecs, as verify decodes them) and laid out on the
instance's Total Pixel Matrix.

Frames sit on the matrix row by row (TILED_FULL, what wsidicomizer and most scanners write), or
where each frame's Plane Position (Slide) says (TILED_SPARSE). Only the first focal plane is
read: a frame whose place is already taken belongs to another plane.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from svsicc.check.figures import RGB
from svsicc.codecs import SegmentCodec
from svsicc.codecs.pixels import rgb_from_layout
from svsicc.codecs.registry import PageCoding, make_codec
from svsicc.convert.engine import CODEC_ERRORS
from svsicc.dicom.pixeldata import read_frame
from svsicc.dicom.series import Instance, Series, read_series
from svsicc.dicom.verify import in_dicom_words
from svsicc.exceptions import DicomFormatError, SvsiccError, UnsupportedLayoutError
from svsicc.tiff.slide import Role

ROLES = {
    "VOLUME": Role.LEVEL,
    "THUMBNAIL": Role.THUMBNAIL,
    "LABEL": Role.LABEL,
    "OVERVIEW": Role.MACRO,  # the camera picture of the whole glass, as a TIFF's macro
}


@dataclass(frozen=True, eq=False)
class InstancePage:
    """One instance as a page: ``index`` its number in the series (as verify numbers it)."""

    index: int
    role: Role
    width: int
    height: int
    instance: Instance


class SeriesPixels:
    """Decoded pixels of a series' instances (:class:`~svsicc.check.report_pixels.ReportPixels`
    for DICOM); a context manager that closes the files it opened."""

    page_word = "instance"

    def __init__(self, series: Series) -> None:
        self.series = series
        self.pages = tuple(
            InstancePage(n, ROLES[i.flavor], *i.size, i) for n, i in enumerate(series.instances)
        )
        self._files: dict[int, BinaryIO] = {}
        self._codecs: dict[int, SegmentCodec] = {}
        self._places: dict[int, dict[int, tuple[int, int]]] = {}

    @property
    def path(self) -> Path:
        return self.series.path

    @property
    def level0(self) -> InstancePage:
        return self.pages[0]  # read_series puts the largest VOLUME first

    @staticmethod
    def in_own_words(text: str) -> str:
        return in_dicom_words(text)

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def __enter__(self) -> SeriesPixels:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def page_rgb(self, page: InstancePage) -> RGB:
        return self.region(page, 0, 0, page.width, page.height)

    def region(
        self, page: InstancePage, x: int, y: int, width: int, height: int, fill: int = 255
    ) -> RGB:
        """(height, width, 3) RGB of the instance's matrix; a place no frame covers is
        ``fill``."""
        instance = page.instance
        rows, cols = instance.rows, instance.cols
        out = np.full((height, width, 3), fill, np.uint8)
        for n, (x0, y0) in self._frame_places(page).items():
            left, top = max(x, x0), max(y, y0)
            right = min(x + width, x0 + cols, page.width)
            bottom = min(y + height, y0 + rows, page.height)
            if left >= right or top >= bottom:
                continue
            pixels = self._frame_rgb(page, n)
            out[top - y : bottom - y, left - x : right - x] = pixels[
                top - y0 : bottom - y0, left - x0 : right - x0
            ]
        return out

    def _frame_rgb(self, page: InstancePage, n: int) -> RGB:
        instance = page.instance
        fh = self._files.get(page.index)
        if fh is None:
            # kept open across frames and pages; close() closes it
            fh = self._files[page.index] = open(instance.path, "rb")  # noqa: SIM115
        codec = self._codec(page)
        try:
            pixels = codec.decode(read_frame(fh, instance.frames, n), instance.rows, instance.cols)
        except CODEC_ERRORS as exc:
            raise SvsiccError(instance.path, f"frame {n}: cannot decode: {exc}") from None
        rgb: RGB = rgb_from_layout(pixels, codec.decoded_layout)
        return rgb

    def _codec(self, page: InstancePage) -> SegmentCodec:
        codec = self._codecs.get(page.index)
        if codec is None:
            coding = page.instance.coding
            if coding is None:  # LABEL or OVERVIEW in a coding svsicc does not handle
                raise UnsupportedLayoutError(
                    page.instance.path, f"cannot decode: {page.instance.coding_problem}"
                )
            codec = make_codec(PageCoding(coding.compression, None, coding.photometric))
            self._codecs[page.index] = codec
        return codec

    def _frame_places(self, page: InstancePage) -> dict[int, tuple[int, int]]:
        places = self._places.get(page.index)
        if places is None:
            places = self._places[page.index] = frame_places(page.instance)
        return places


def frame_places(instance: Instance) -> dict[int, tuple[int, int]]:
    """Frame number -> (x, y) of its top left corner on the Total Pixel Matrix, for the frames
    of the first focal plane."""
    ds = instance.dataset
    count = len(instance.frames.frames)
    width, height = instance.size
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if str(ds.get("DimensionOrganizationType", "")).upper() == "TILED_SPARSE" and per_frame:
        places: dict[int, tuple[int, int]] = {}
        taken: set[tuple[int, int]] = set()
        for n, item in enumerate(list(per_frame)[:count]):
            try:
                where = item.PlanePositionSlideSequence[0]
                x = int(where.ColumnPositionInTotalImagePixelMatrix) - 1
                y = int(where.RowPositionInTotalImagePixelMatrix) - 1
            except (AttributeError, IndexError, TypeError, ValueError):
                raise DicomFormatError(
                    instance.path, f"frame {n} has no Plane Position (Slide)"
                ) from None
            if (x, y) not in taken:
                taken.add((x, y))
                places[n] = (x, y)
        return places
    across = -(-width // instance.cols)
    down = -(-height // instance.rows)
    return {
        n: ((n % across) * instance.cols, (n // across) * instance.rows)
        for n in range(min(count, across * down))
    }


@contextlib.contextmanager
def open_series_pixels(path: str | os.PathLike[str]) -> Iterator[SeriesPixels]:
    with SeriesPixels(read_series(path)) as pixels:
        yield pixels
