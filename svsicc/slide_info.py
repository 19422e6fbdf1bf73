"""``svsicc info``: what a slide holds and whether its profile was applied."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svsicc.colour.transform import IccProfile
from svsicc.drivers import DRIVERS, read_slide
from svsicc.exceptions import ProfileError, SvsiccError
from svsicc.tiff import file as tiff
from svsicc.tiff.formats import TiffSummary, guess_format, summarise_tiff
from svsicc.tiff.record import AppliedRecord, properties
from svsicc.tiff.slide import Page, Slide


@dataclass(frozen=True)
class SlideInfo:
    path: Path
    format_name: str
    bigtiff: bool
    file_size: int
    profile: IccProfile | None
    profile_ifds: tuple[int, ...]
    profile_error: str | None
    applied: AppliedRecord | None
    pages: tuple[Page, ...]
    description_properties: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "format": "BigTIFF" if self.bigtiff else "TIFF",
            "wsi_format": self.format_name,
            "convertible": True,
            "file_size": self.file_size,
            "profile": None
            if self.profile is None
            else {**self.profile.summary(), "ifds": list(self.profile_ifds)},
            "profile_error": self.profile_error,
            "applied": self.applied is not None,
            "applied_record": None if self.applied is None else self.applied.to_dict(),
            "ifds": [_page_dict(p) for p in self.pages],
        }


def _page_dict(page: Page) -> dict[str, object]:
    return {
        "index": page.index,
        "role": page.role.value,
        "width": page.width,
        "height": page.height,
        "layout": page.kind,
        "segment_size": [page.segment_width, page.segment_height],
        "segments": len(page.offsets),
        "empty_segments": sum(1 for c in page.byte_counts if not c),
        "compression": page.compression_name,
        "photometric": page.photometric,
        "icc_bytes": len(page.icc_profile) if page.icc_profile else 0,
        "data_bytes": sum(page.byte_counts),
    }


def slide_info(path: str | Path) -> SlideInfo:
    """What ``path`` holds: format, size, the embedded profile and where, the applied record
    (``ICC Profile Applied*`` keys) if svsicc made it, and every IFD. Only reads the file.

    Returns:
        A :class:`SlideInfo`; an embedded profile that cannot be parsed is ``profile`` None
        with ``profile_error`` saying why, not an exception.``svsicc.info``
        (:func:`svsicc.api.info`) hands a DICOM series to its driver instead.

    Raises:
        TiffFormatError: ``path`` is missing or not a sound TIFF.
    """
    with tiff.TiffReader(path) as reader:
        slide = read_slide(reader)
    return info_from_slide(slide)


def describe(path: str | Path) -> SlideInfo | TiffSummary:
    """``svsicc info``: a slide of a format svsicc converts in full, any other TIFF as a summary
    saying why svsicc cannot convert it (a file svsicc refuses included, with the reason)."""
    with tiff.TiffReader(path) as reader:
        if guess_format(reader).name not in DRIVERS:
            return summarise_tiff(reader)
        try:
            slide = read_slide(reader)
        except SvsiccError as exc:
            return summarise_tiff(reader, why_not=exc.one_line().removeprefix(f"{reader.path}: "))
    return info_from_slide(slide)


def info_from_slide(slide: Slide) -> SlideInfo:
    carriers = [p for p in slide.pages if p.icc_profile]
    profile = None
    error = None
    if carriers:
        first = carriers[0]
        assert first.icc_profile is not None
        try:
            profile = IccProfile.from_bytes(first.icc_profile, f"IFD {first.index} tag 34675")
        except ProfileError as exc:
            error = exc.problem
    return SlideInfo(
        path=slide.path,
        format_name=slide.format_name,
        bigtiff=slide.structure.bigtiff,
        file_size=slide.structure.file_size,
        profile=profile,
        profile_ifds=tuple(p.index for p in carriers),
        profile_error=error,
        applied=slide.applied,
        pages=slide.pages,
        description_properties=properties(slide.description),
    )


def format_info(info: SlideInfo) -> str:
    container = "BigTIFF" if info.bigtiff else "TIFF"
    lines = [f"{info.path}  ({info.format_name}, {container}, {info.file_size:,} bytes)"]
    if info.profile is not None:
        ifds = ", ".join(str(i) for i in info.profile_ifds)
        lines += info.profile.text_lines(f"on IFD {ifds}")
    elif info.profile_error:
        lines.append(f"profile: unreadable ({info.profile_error})")
    else:
        named = info.description_properties.get("ICC Profile")
        lines.append(
            "profile: none embedded" + (f" (description names {named!r})" if named else "")
        )
    if info.applied is not None:
        lines += info.applied.text_lines("tile(s)", lambda ifd, tile: f"IFD {ifd} tile {tile}")
    else:
        lines.append("applied: no")
    lines.append("IFDs:")
    for page in info.pages:
        size = f"{page.width}x{page.height}"
        seg = f"{page.segment_width}x{page.segment_height}"
        empty = sum(1 for c in page.byte_counts if not c)
        lines.append(
            f"  {page.index}: {page.role.value:<9} {size:>13} {page.kind} {seg:>9} "
            f"x{len(page.offsets):<6} {page.compression_name}"
            + (f", {empty} empty" if empty else "")
            + (f", ICC {len(page.icc_profile):,} B" if page.icc_profile else "")
        )
    return "\n".join(lines)
