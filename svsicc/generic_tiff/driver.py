"""The generic tiled TIFF driver: every tiled IFD is a pyramid level, as OpenSlide's
generic-tiff driver reads it; the record goes into a private tag.

OpenSlide opens a TIFF as generic when IFD 0 is tiled and no vendor driver claims it; it takes
every tiled IFD as a level and reads the ICC profile from level 0's tag 34675. svsicc converts
exactly those IFDs. An IFD in strips (a preview some writers add) is no level: it is kept byte
for byte, with its own tag 34675 if it has one, so it still says what its pixels are.

The description belongs to whoever wrote the file (tifffile's JSON shape, which tifffile parses
back; a scanner's text), so svsicc leaves it alone: its record is the same ``Key = Value`` text
as in Aperio descriptions, in the private ASCII tag
:data:`~svsicc.tiff.record.TAG_APPLIED_RECORD` (65300) of level 0, beside tag 34675, which
holds the target profile afterwards on every converted IFD that had one (level 0 gains it if it
had none).
"""

from __future__ import annotations

from pathlib import Path

from svsicc.exceptions import UnsupportedLayoutError
from svsicc.tiff import file as tiff
from svsicc.tiff.driver import Marks
from svsicc.tiff.formats import GENERIC_TILED
from svsicc.tiff.record import (
    MAX_RECORD_BYTES,
    RECORD_HEADER,
    TAG_APPLIED_RECORD,
    AppliedRecord,
    applied_record,
    mark_applied,
)
from svsicc.tiff.slide import Page, Role, Slide
from svsicc.version import __version__


class GenericTiffDriver:
    name = GENERIC_TILED

    def role(self, index: int, subfile_type: int, tiled: bool, description: str | None) -> Role:
        return Role.LEVEL if tiled else Role.OTHER

    def check_layout(self, path: Path, pages: tuple[Page, ...]) -> None:
        if not pages[0].tiled:
            raise UnsupportedLayoutError(
                path,
                "IFD 0 is not tiled; a tiled whole-slide TIFF keeps its full-resolution level in "
                "tiles (OpenSlide does not open it either)",
            )

    def applied_record(
        self, reader: tiff.TiffReader, pages: tuple[Page, ...]
    ) -> AppliedRecord | None:
        level0 = next((p for p in pages if p.role is Role.LEVEL), pages[0])
        text = reader.ascii(level0.ifd, TAG_APPLIED_RECORD, MAX_RECORD_BYTES)
        return applied_record(text)

    def record_tags(self) -> frozenset[int]:
        return frozenset({TAG_APPLIED_RECORD})

    def mark(
        self,
        reader: tiff.TiffReader,
        slide: Slide,
        converted: set[int],
        patcher: tiff.TiffPatcher,
        marks: Marks,
    ) -> None:
        mark_with_record_tag(reader, slide, converted, patcher, marks)


def mark_with_record_tag(
    reader: tiff.TiffReader,
    slide: Slide,
    converted: set[int],
    patcher: tiff.TiffPatcher,
    marks: Marks,
) -> None:
    """Tag 34675 holds the target on every converted IFD that had a profile; level 0 gets the
    record tag, and tag 34675 if it had none. Every other tag keeps its value."""
    target = marks.target
    level0 = slide.level0
    for page in slide.pages:
        if page.icc_profile and page.index in converted and page is not level0:
            patcher.overwrite(
                page.ifd.entries[tiff.TAG_ICC_PROFILE],
                tiff.TYPE_UNDEFINED,
                len(target.data),
                target.data,
            )
    text = mark_applied(
        RECORD_HEADER,
        marks.source,
        target,
        marks.intent,
        marks.identity,
        __version__,
        library=marks.library,
        kept=marks.kept,
    )
    record = text.encode("latin-1", "replace") + b"\x00"
    extra = [(TAG_APPLIED_RECORD, tiff.TYPE_ASCII, len(record), record)]
    profile_entry = level0.ifd.entries.get(tiff.TAG_ICC_PROFILE)
    if profile_entry is not None:
        patcher.overwrite(profile_entry, tiff.TYPE_UNDEFINED, len(target.data), target.data)
    else:
        extra.append((tiff.TAG_ICC_PROFILE, tiff.TYPE_UNDEFINED, len(target.data), target.data))
    patcher.relocate_ifd_with_extra_entries(reader, level0.ifd, extra)
