"""The Aperio SVS driver: Aperio's page roles, and the record in its ImageDescription."""

from __future__ import annotations

from pathlib import Path

from svsicc.exceptions import UnsupportedLayoutError
from svsicc.tiff import file as tiff
from svsicc.tiff.driver import Marks
from svsicc.tiff.formats import APERIO
from svsicc.tiff.record import AppliedRecord, applied_record, mark_applied, rename_profile
from svsicc.tiff.slide import Page, Role, Slide
from svsicc.version import __version__


class AperioDriver:
    """IFD 0 level 0 (tiled), IFD 1 the thumbnail (strips), reduced levels (tiled), label
    (NewSubfileType 1, "label" in its description) and macro (NewSubfileType 9)."""

    name = APERIO

    def role(self, index: int, subfile_type: int, tiled: bool, description: str | None) -> Role:
        text = description or ""
        if subfile_type & 1 and ("\nlabel " in text or subfile_type == 1):
            return Role.LABEL
        if subfile_type == 9 or "\nmacro " in text:
            return Role.MACRO
        if "\nlabel " in text:
            return Role.LABEL
        if index == 0 or tiled:
            return Role.LEVEL
        if index == 1:
            return Role.THUMBNAIL
        return Role.OTHER

    def check_layout(self, path: Path, pages: tuple[Page, ...]) -> None:
        if not pages[0].tiled:
            raise UnsupportedLayoutError(
                path, "IFD 0 is not tiled; an SVS slide keeps its full-resolution level in tiles"
            )

    def applied_record(
        self, reader: tiff.TiffReader, pages: tuple[Page, ...]
    ) -> AppliedRecord | None:
        return applied_record(pages[0].description)

    def record_tags(self) -> frozenset[int]:
        return frozenset()

    def mark(
        self,
        reader: tiff.TiffReader,
        slide: Slide,
        converted: set[int],
        patcher: tiff.TiffPatcher,
        marks: Marks,
    ) -> None:
        target = marks.target
        for page in slide.pages:
            if page.icc_profile and page.index in converted:
                patcher.overwrite(
                    page.ifd.entries[tiff.TAG_ICC_PROFILE],
                    tiff.TYPE_UNDEFINED,
                    len(target.data),
                    target.data,
                )
        for page in slide.pages:
            if page.description is None or page.index not in converted | {0}:
                continue
            if page.index == 0:
                text = mark_applied(
                    page.description,
                    marks.source,
                    target,
                    marks.intent,
                    marks.identity,
                    __version__,
                    library=marks.library,
                    kept=marks.kept,
                )
            else:
                # OpenSlide 4.0.1 gives an associated image (thumbnail, label, macro) IFD 0's
                # profile only when its description's "ICC Profile" names the same profile as
                # IFD 0's: a converted one must name the target, a key added if it had none.
                text = rename_profile(
                    page.description, target, add_if_missing=page.role is not Role.LEVEL
                )
            if text != page.description:
                data = text.encode("latin-1", "replace") + b"\x00"
                entry = page.ifd.entries[tiff.TAG_IMAGE_DESCRIPTION]
                patcher.overwrite(entry, tiff.TYPE_ASCII, len(data), data)
        if not slide.pages[0].icc_profile:
            # The pixels are now in the target space: say so where ICC-aware readers look.
            patcher.relocate_ifd_with_extra_entry(
                reader,
                slide.pages[0].ifd,
                tiff.TAG_ICC_PROFILE,
                tiff.TYPE_UNDEFINED,
                len(target.data),
                target.data,
            )
