"""The structural half of verify: the expectation a copy's record sets, IFDs and tags compared,
and each slide's pixels read through svsicc's own codecs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svsicc.check.figures import (
    RGB,
    Finding,
)
from svsicc.codecs import SegmentCodec
from svsicc.codecs.pixels import rgb_from_layout
from svsicc.colour.transform import IccProfile, Intent, default_target
from svsicc.convert.engine import CODEC_ERRORS, PageJob, make_codec
from svsicc.convert.plan import ORIGIN_OVERRIDE, ProfileChoice, embedded_profile
from svsicc.drivers import driver_of, read_slide
from svsicc.exceptions import ProfileError, SvsiccError, UnsupportedLayoutError
from svsicc.tiff import file as tiff
from svsicc.tiff.record import split_description
from svsicc.tiff.slide import Page, Slide

IDENTITY_MODE_PREFIX = "identity"

# Tags whose values apply rewrites; every other tag must keep its value.
REWRITTEN_TAGS = frozenset(
    {
        tiff.TAG_STRIP_OFFSETS,
        tiff.TAG_STRIP_BYTE_COUNTS,
        tiff.TAG_TILE_OFFSETS,
        tiff.TAG_TILE_BYTE_COUNTS,
        tiff.TAG_ICC_PROFILE,
        tiff.TAG_IMAGE_DESCRIPTION,
    }
)

# Leading bytes that identify a segment's stream, checked on every segment with --sample.


class SlidePixels:
    """Decoded pixels of a slide's segments and regions, through svsicc's own codecs."""

    def __init__(self, reader: tiff.TiffReader, slide: Slide) -> None:
        self.reader = reader
        self.slide = slide
        self._codecs: dict[int, SegmentCodec] = {}

    page_word = "IFD"  # what a page is called in messages (the report's ReportPixels)

    @property
    def path(self) -> Path:
        return self.slide.path

    @property
    def pages(self) -> tuple[Page, ...]:
        return self.slide.pages

    @property
    def level0(self) -> Page:
        return self.slide.level0

    @staticmethod
    def in_own_words(text: str) -> str:
        return text  # verify speaks TIFF already

    def codec(self, page: Page) -> SegmentCodec:
        codec = self._codecs.get(page.index)
        if codec is None:
            try:
                codec = make_codec(PageJob.for_page(page))
            except ImportError as exc:
                raise UnsupportedLayoutError(
                    self.path,
                    f"cannot decode {page.compression_name}: {exc}",
                    ifd=page.index,
                ) from None
            except UnsupportedLayoutError as exc:
                raise UnsupportedLayoutError(self.path, exc.problem, ifd=page.index) from None
            self._codecs[page.index] = codec
        return codec

    def segment_bytes(self, page: Page, index: int) -> bytes:
        return self.reader.read(
            page.offsets[index], page.byte_counts[index], "segment", ifd=page.index
        )

    @staticmethod
    def segment_box(page: Page, index: int) -> tuple[int, int, int, int]:
        """(y0, x0, rows, cols) of the image pixels segment ``index`` holds (padding excluded)."""
        if page.tiled:
            across = page.segments_across
            y0 = (index // across) * page.segment_height
            x0 = (index % across) * page.segment_width
            return (
                y0,
                x0,
                min(page.segment_height, page.height - y0),
                min(page.segment_width, page.width - x0),
            )
        y0 = index * page.segment_height
        return y0, 0, min(page.segment_height, page.height - y0), page.width

    def segment_rgb(self, page: Page, index: int, crop: bool = True) -> RGB:
        """Decode one segment to (rows, cols, 3) RGB cropped to the image (``crop=False``: with
        an edge tile's padding, as stored); raises CODEC_ERRORS."""
        rows, cols = page.segment_shape(index)
        codec = self.codec(page)
        pixels = codec.decode(self.segment_bytes(page, index), rows, cols)
        if crop:
            _y0, _x0, rows, cols = self.segment_box(page, index)
        rgb: RGB = rgb_from_layout(pixels[:rows, :cols], codec.decoded_layout)
        return rgb

    def region(self, page: Page, x: int, y: int, width: int, height: int, fill: int = 255) -> RGB:
        """(height, width, 3) RGB of a page; empty segments are ``fill``."""
        out = np.full((height, width, 3), fill, np.uint8)
        for index in self.segments_in(page, x, y, width, height):
            if not page.byte_counts[index]:
                continue
            y0, x0, h, w = self.segment_box(page, index)
            try:
                pixels = self.segment_rgb(page, index)
            except CODEC_ERRORS as exc:
                raise SvsiccError(
                    self.path, f"cannot decode: {exc}", ifd=page.index, tile=index
                ) from None
            top, left = max(y, y0), max(x, x0)
            bottom, right = min(y + height, y0 + h), min(x + width, x0 + w)
            out[top - y : bottom - y, left - x : right - x] = pixels[
                top - y0 : bottom - y0, left - x0 : right - x0
            ]
        return out

    def page_rgb(self, page: Page) -> RGB:
        return self.region(page, 0, 0, page.width, page.height)

    @staticmethod
    def segments_in(page: Page, x: int, y: int, width: int, height: int) -> Iterator[int]:
        first_row, last_row = y // page.segment_height, (y + height - 1) // page.segment_height
        last_row = min(last_row, page.segments_down - 1)
        if not page.tiled:
            yield from range(first_row, last_row + 1)
            return
        first_col, last_col = x // page.segment_width, (x + width - 1) // page.segment_width
        last_col = min(last_col, page.segments_across - 1)
        for row in range(first_row, last_row + 1):
            for col in range(first_col, last_col + 1):
                yield row * page.segments_across + col


def open_slide(path: str | os.PathLike[str]) -> tuple[tiff.TiffReader, Slide]:
    reader = tiff.TiffReader(Path(path))
    try:
        return reader, read_slide(reader)
    except BaseException:
        reader.close()
        raise


@dataclass(frozen=True)
class Expectation:
    """What the copy should be: the source, target and intent, and any doubts about them."""

    source: IccProfile | None
    target: IccProfile | None
    intent: Intent | None
    identity: bool
    findings: tuple[Finding, ...]


def expectation(original: Slide, calibrated: Slide, choice: ProfileChoice) -> Expectation:
    """Source, target and intent from the copy's record, the original and --profile.

    The source profile follows apply's policy (:mod:`svsicc.convert.plan`). A copy without svsicc's
    record, or one that records another source profile, is a usage error
    (:class:`ProfileError`, exit 2): no pixel comparison could say more than that line.
    """
    findings: list[Finding] = []
    record = calibrated.applied
    if record is None:
        raise ProfileError(
            calibrated.path,
            "the copy records no source profile (no 'ICC Profile Applied' record in its "
            "ImageDescription): svsicc apply did not write it",
            hint="give the original, then the copy svsicc apply wrote from it",
        )
    recorded = f"{record.source_description!r} (sha256 {record.source_sha256[:16]}...)"
    try:
        plan = choice.plan(original)
    except ProfileError:
        raise ProfileError(
            original.path,
            f"the original embeds no ICC profile and the copy records {recorded}",
            hint=f"pass {{profile}} with {record.source_description!r}",
        ) from None
    profile = plan.source
    if profile.sha256 != record.source_sha256:
        embedded = embedded_profile(original) if plan.origin == ORIGIN_OVERRIDE else None
        if embedded is not None and embedded[0].sha256 == record.source_sha256:
            hint = "leave out {profile}: the original's embedded profile is the one recorded"
        else:
            hint = f"pass {{profile}} with {record.source_description!r}"
        raise ProfileError(
            calibrated.path,
            f"the copy records source profile {recorded}, not {profile.description!r} "
            f"(sha256 {profile.sha256[:16]}..., {plan.origin})",
            hint=hint,
        )
    level0 = calibrated.level0
    target_bytes = level0.icc_profile
    if target_bytes:
        target = IccProfile.from_bytes(
            target_bytes, f"{calibrated.path}: IFD {level0.index} tag 34675"
        )
    else:
        findings.append(
            Finding(
                "structure",
                f"level 0 (IFD {level0.index}) of the copy has no ICC profile tag",
                ifd=level0.index,
            )
        )
        target = default_target()
    if target.description != record.target:
        findings.append(
            Finding(
                "profile",
                f"the copy's tag 34675 holds {target.description!r} but its record says the "
                f"target was {record.target!r}",
                ifd=level0.index,
            )
        )
    try:
        intent = Intent.parse(record.intent)
    except ValueError:
        findings.append(Finding("profile", f"the record names an unknown intent {record.intent!r}"))
        intent = profile.default_intent
    identity = record.mode.startswith(IDENTITY_MODE_PREFIX)
    return Expectation(profile, target, intent, identity, tuple(findings))


def _description_without_icc(text: str | None) -> tuple[str, list[tuple[str, str]]] | None:
    if text is None:
        return None
    header, pairs = split_description(text)
    return header, [(k, v) for k, v in pairs if not k.startswith("ICC Profile")]


def compare_structure(
    orig: SlidePixels, cal: SlidePixels, target: IccProfile | None
) -> list[Finding]:
    """Header, IFD list, tag values, empty segments and tag 34675; not segment contents."""
    findings: list[Finding] = []
    a, b = orig.slide.structure, cal.slide.structure
    # apply promotes a classic TIFF whose copy would pass 4 GiB to BigTIFF; nothing else.
    if a.byteorder != b.byteorder or (a.bigtiff and not b.bigtiff):
        findings.append(
            Finding(
                "structure",
                f"the TIFF header differs (byte order {a.byteorder} / {b.byteorder}, BigTIFF "
                f"{a.bigtiff} / {b.bigtiff})",
            )
        )
    if len(a.ifds) != len(b.ifds):
        findings.append(
            Finding("structure", f"the original has {len(a.ifds)} IFDs, the copy {len(b.ifds)}")
        )
    for po, pc in zip(orig.slide.pages, cal.slide.pages, strict=False):
        findings.extend(_compare_page(orig, cal, po, pc, target))
    return findings


def _compare_page(
    orig: SlidePixels, cal: SlidePixels, po: Page, pc: Page, target: IccProfile | None
) -> list[Finding]:
    findings: list[Finding] = []
    i = po.index
    level0 = cal.slide.level0.index
    tags_o, tags_c = set(po.ifd.entries), set(pc.ifd.entries)
    missing = sorted(tags_o - tags_c)
    added = {tiff.TAG_ICC_PROFILE} | (
        driver_of(cal.slide).record_tags() if i == level0 else frozenset()
    )
    extra = sorted(tags_c - tags_o - added)
    if missing:
        findings.append(Finding("structure", f"tags {missing} are missing from the copy", ifd=i))
    if extra:
        findings.append(Finding("structure", f"the copy has extra tags {extra}", ifd=i))
    if tiff.TAG_ICC_PROFILE in tags_c - tags_o and i != level0:
        findings.append(
            Finding(
                "structure",
                "the copy gained an ICC profile tag on an IFD other than level 0",
                ifd=i,
            )
        )
    for tag in sorted((tags_o & tags_c) - REWRITTEN_TAGS - added):
        eo, ec = po.ifd.entries[tag], pc.ifd.entries[tag]
        if (eo.type, eo.count) != (ec.type, ec.count) or orig.reader.raw_value(
            po.ifd, tag
        ) != cal.reader.raw_value(pc.ifd, tag):
            findings.append(Finding("structure", f"tag {tag} has a different value", ifd=i))
    if len(po.offsets) != len(pc.offsets):
        findings.append(
            Finding(
                "structure",
                f"{len(po.offsets)} segments in the original, {len(pc.offsets)} in the copy",
                ifd=i,
            )
        )
    else:
        for n, (co, cc) in enumerate(zip(po.byte_counts, pc.byte_counts, strict=True)):
            if (co == 0) != (cc == 0):
                state = "empty in the original only" if co == 0 else "empty in the copy only"
                findings.append(Finding("structure", f"segment {n} is {state}", ifd=i, tile=n))
    core_o, core_c = (
        _description_without_icc(po.description),
        _description_without_icc(pc.description),
    )
    if core_o != core_c:
        findings.append(
            Finding(
                "structure",
                "the ImageDescription differs in more than its 'ICC Profile' keys",
                ifd=i,
            )
        )
    if (
        pc.icc_profile is not None
        and pc.icc_profile != po.icc_profile
        and target is not None
        and pc.icc_profile != target.data
    ):
        findings.append(
            Finding(
                "structure",
                "tag 34675 holds neither the original's profile nor the target profile",
                ifd=i,
            )
        )
    if po.icc_profile is not None and pc.icc_profile is None:
        findings.append(Finding("structure", "tag 34675 was removed", ifd=i))
    return findings


def geometry_matches(po: Page, pc: Page) -> bool:
    keys = ("width", "height", "tiled", "segment_width", "segment_height", "compression")
    return all(getattr(po, k) == getattr(pc, k) for k in keys) and len(po.offsets) == len(
        pc.offsets
    )
