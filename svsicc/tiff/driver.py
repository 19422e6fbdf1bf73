"""What a format driver tells the TIFF machinery: which page is what, what the slide must look
like to be converted, where svsicc's record lives, and how the copy is marked.

Everything else, reading segments, converting them, laying the new bytes into the copy and
patching offsets, is the same for every tiled TIFF format and lives in :mod:`svsicc.convert`.
The drivers are :mod:`svsicc.aperio.driver`, :mod:`svsicc.generic_tiff.driver` and
:mod:`svsicc.ventana.driver`; :mod:`svsicc.drivers` picks one by the file's content.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from svsicc.colour.transform import IccProfile, Intent
from svsicc.tiff import file as tiff
from svsicc.tiff.record import AppliedRecord
from svsicc.tiff.slide import Page, Role, Slide


@dataclass(frozen=True)
class Marks:
    """What the copy's marks say: the conversion, and what the writer did besides."""

    source: IccProfile
    target: IccProfile
    intent: Intent
    identity: bool
    # A codec library that encoded tiles apart from imagecodecs ("OpenJPEG 2.5.4"), if any.
    library: str | None = None
    # (IFD, segment) of segments kept with their original bytes (undecodable in the original).
    kept: tuple[tuple[int, int], ...] = ()


class TiffDriver(Protocol):
    """One whole-slide TIFF format."""

    name: str  # as svsicc.tiff.formats names it: "Aperio SVS", "Ventana BIF", ...

    def role(self, index: int, subfile_type: int, tiled: bool, description: str | None) -> Role:
        """The role of IFD ``index``."""
        ...

    def check_layout(self, path: Path, pages: tuple[Page, ...]) -> None:
        """Raise :class:`~svsicc.exceptions.UnsupportedLayoutError` for a layout this driver
        cannot convert faithfully, naming what and why."""
        ...

    def applied_record(
        self, reader: tiff.TiffReader, pages: tuple[Page, ...]
    ) -> AppliedRecord | None:
        """svsicc's record in the file, or None if svsicc did not convert it."""
        ...

    def record_tags(self) -> frozenset[int]:
        """Tags the mark may add to the level-0 IFD (besides tag 34675)."""
        ...

    def mark(
        self,
        reader: tiff.TiffReader,
        slide: Slide,
        converted: set[int],
        patcher: tiff.TiffPatcher,
        marks: Marks,
    ) -> None:
        """Record the conversion in the copy; ``converted``: indices of the IFDs whose pixels
        are now in the target space (rewritten, or all levels and thumbnails of an identity
        copy)."""
        ...
