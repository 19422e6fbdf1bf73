"""The Ventana/Roche BIF driver: pages by their ImageDescription, as OpenSlide's ventana driver
reads them, the record in a private tag beside the XMP.

A BIF names its pages in the description: ``Label Image`` (or ``Label_Image``: the macro, from
the overview camera), ``Thumbnail``, and ``level=N mag=M quality=Q`` for each pyramid level.
OpenSlide reads the ICC profile from level 0's tag 34675 and the scan layout (AOIs, tile joints,
overlaps) from the XMP packet (tag 700) of level 0.

svsicc converts the levels and the thumbnail and keeps the macro (another camera, as for SVS).
Every byte of the XMP and of every other tag is kept, so OpenSlide stitches the copy exactly as
the original. Overlapping tiles (TileJointInfo OverlapX/OverlapY) need nothing special: the
colour transform works on each pixel alone, so the overlap of two converted tiles holds the
same colours in both, up to each tile's own re-encode, as the original's did. The record
(:data:`~svsicc.tiff.record.TAG_APPLIED_RECORD`) and tag 34675 go on level 0, as for generic
TIFF.

Refused, naming the IFD: a level in strips (OpenSlide refuses it too), levels whose tile sizes
differ (OpenSlide's stitching assumes one size), and a file with no ``level=`` page.
"""

from __future__ import annotations

from pathlib import Path

from svsicc.exceptions import UnsupportedLayoutError
from svsicc.generic_tiff.driver import GenericTiffDriver
from svsicc.tiff.formats import VENTANA
from svsicc.tiff.slide import Page, Role

LEVEL_TOKEN = "level="
MACRO_DESCRIPTIONS = ("Label Image", "Label_Image")
THUMBNAIL_DESCRIPTION = "Thumbnail"


class VentanaDriver(GenericTiffDriver):
    """Roles by description; the record, the profile and the marks as generic TIFF's."""

    name = VENTANA

    def role(self, index: int, subfile_type: int, tiled: bool, description: str | None) -> Role:
        text = (description or "").strip("\x00 ")
        if text in MACRO_DESCRIPTIONS:
            return Role.MACRO
        if text == THUMBNAIL_DESCRIPTION:
            return Role.THUMBNAIL
        if LEVEL_TOKEN in text:
            return Role.LEVEL
        return Role.OTHER

    def check_layout(self, path: Path, pages: tuple[Page, ...]) -> None:
        levels = [p for p in pages if p.role is Role.LEVEL]
        if not levels:
            raise UnsupportedLayoutError(
                path, "no pyramid level: no IFD's ImageDescription holds 'level='"
            )
        for page in levels:
            if not page.tiled:
                raise UnsupportedLayoutError(
                    path, "a pyramid level stored in strips; BIF levels are tiled", ifd=page.index
                )
            if (page.segment_width, page.segment_height) != (
                levels[0].segment_width,
                levels[0].segment_height,
            ):
                raise UnsupportedLayoutError(
                    path,
                    f"tiles of {page.segment_width}x{page.segment_height} on this level but "
                    f"{levels[0].segment_width}x{levels[0].segment_height} on level 0; OpenSlide "
                    "stitches BIF levels with one tile size",
                    ifd=page.index,
                )
