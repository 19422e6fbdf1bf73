"""What ``svsicc report`` reads of a slide, whatever its format: its pages and their pixels.

The report needs little of a slide: its pages (index, role, size), which one is level 0, RGB of
a whole page and of a window of one, and what the format calls a page in its messages. That
much is :class:`ReportPixels`: :class:`~svsicc.check.structure.SlidePixels` is it for TIFF
(pages are IFDs, pixels from tiles or strips) and ``svsicc.dicom.pixels.SeriesPixels`` for DICOM
(pages are instances, pixels assembled from frames), so the pictures and figures are drawn by
one code path for every format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from svsicc.check.figures import RGB
from svsicc.check.structure import SlidePixels, open_slide
from svsicc.exceptions import UnsupportedLayoutError
from svsicc.tiff.slide import Role


class ReportPage(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def role(self) -> Role: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...


PageT = TypeVar("PageT", bound=ReportPage)


class ReportPixels(Protocol[PageT]):
    @property
    def path(self) -> Path: ...

    @property
    def page_word(self) -> str:
        """A page in this format's words, before its index: 'IFD', 'instance'."""
        ...

    @property
    def pages(self) -> Sequence[PageT]: ...

    @property
    def level0(self) -> PageT: ...

    def page_rgb(self, page: PageT) -> RGB: ...

    def region(self, page: PageT, x: int, y: int, width: int, height: int) -> RGB: ...

    def in_own_words(self, text: str) -> str:
        """A verification line written for TIFF (IFDs, segments), in this format's words."""
        ...


# Opens the slide at a path for the report's reading, closing it at the end of the block.
OpenPixels = Callable[[Path], AbstractContextManager[ReportPixels[Any]]]


@contextmanager
def open_tiff_pixels(path: Path) -> Iterator[SlidePixels]:
    reader, slide = open_slide(path)
    with reader:
        yield SlidePixels(reader, slide)


def overview_page(pixels: ReportPixels[PageT]) -> PageT:
    """The thumbnail, else the smallest level: the whole slide in one picture."""
    thumbnails = [p for p in pixels.pages if p.role is Role.THUMBNAIL]
    if thumbnails:
        return thumbnails[0]
    levels = [p for p in pixels.pages if p.role is Role.LEVEL]
    return min(levels, key=lambda p: p.width * p.height)


def twin_page(original: ReportPixels[PageT], copy: ReportPixels[PageT], page: PageT) -> PageT:
    """The copy's page of the same index as the original's ``page``, which must be its size
    (apply keeps every page in place): another slide is refused before anything is drawn."""
    pages = copy.pages
    twin = pages[page.index] if page.index < len(pages) else None
    if twin is None or (twin.width, twin.height) != (page.width, page.height):
        ifds = original.page_word == "IFD"
        raise UnsupportedLayoutError(
            copy.path,
            f"{original.page_word} {page.index} does not match the original's "
            f"({page.width}x{page.height}); it is not a copy of that slide",
            ifd=page.index if ifds else None,
            hint="run {verify_call} for the details",
        )
    return twin
