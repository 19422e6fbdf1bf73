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
    pages = read_pages(reader, driver.role)
    driver.check_layout(reader.path, pages)
    return Slide(
        reader.path,
        reader.structure,
        pages,
        format_name=driver.name,
        applied=driver.applied_record(reader, pages),
    )
