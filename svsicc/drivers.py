"""The format drivers, and the one way to read a slide TIFF: the driver chosen by content.

``guess_format`` (:mod:`svsicc.tiff.formats`) names the format from tags and texts, never from
the file name; a format with a driver here is converted, any other is refused naming what it is.
"""

from __future__ import annotations

from svsicc.aperio.driver import AperioDriver
from svsicc.exceptions import UnsupportedLayoutError
from svsicc.generic_tiff.driver import GenericTiffDriver
from svsicc.tiff import file as tiff
from svsicc.tiff.driver import TiffDriver
from svsicc.tiff.formats import guess_format
from svsicc.tiff.slide import Slide, read_pages
from svsicc.ventana.driver import VentanaDriver

DRIVERS: dict[str, TiffDriver] = {
    d.name: d for d in (AperioDriver(), GenericTiffDriver(), VentanaDriver())
}
TAG_SUB_IFDS = 330
CONVERTED_FORMATS = ", ".join(DRIVERS) + " and DICOM WSI"


def driver_for(reader: tiff.TiffReader) -> TiffDriver:
    """The driver for an open TIFF; refuses formats svsicc does not convert, naming them."""
    guess = guess_format(reader)
    driver = DRIVERS.get(guess.name)
    if driver is None:
        raise UnsupportedLayoutError(
            reader.path,
            f"svsicc does not convert a {guess.name} ({guess.evidence})",
            hint=f"svsicc converts {CONVERTED_FORMATS}; svsicc info describes the file",
        )
    return driver


def driver_of(slide: Slide) -> TiffDriver:
    return DRIVERS[slide.format_name]


def read_slide(reader: tiff.TiffReader, driver: TiffDriver | None = None) -> Slide:
    """The slide in an open TIFF, its pages' roles from its format's driver (by content unless
    ``driver`` is given). Raises TiffFormatError for a corrupt file and UnsupportedLayoutError
    for a format or layout svsicc does not convert."""
    if driver is None:
        driver = driver_for(reader)
    for ifd in reader.structure.ifds:
        if TAG_SUB_IFDS in ifd.entries:
            # tifffile, libvips and Bio-Formats read pyramid levels from SubIFDs, OpenSlide does
            # not: converting only the main IFDs would leave those levels in the scanner's
            # colours under an sRGB tag 34675.
            raise UnsupportedLayoutError(
                reader.path,
                "pyramid levels stored as SubIFDs (tag 330), which svsicc does not convert",
                ifd=ifd.index,
                hint="write the pyramid with every level a top-level IFD (as OpenSlide reads it)",
            )
    pages = read_pages(reader, driver.role)
    driver.check_layout(reader.path, pages)
    return Slide(
        reader.path,
        reader.structure,
        pages,
        format_name=driver.name,
        applied=driver.applied_record(reader, pages),
    )
