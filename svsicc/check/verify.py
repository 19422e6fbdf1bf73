"""``svsicc verify``: evidence that a calibrated copy is its original with the profile baked in.

Two kinds of check, both against the original file:

Structure
    Same byte order and TIFF flavour, the same IFDs in the same order, the same tags with the same
    values except those apply rewrites (tile/strip offsets and byte counts, tag 34675, the
    ImageDescription's ``ICC Profile*`` keys; IFD 0 may have moved to gain tag 34675: tag values
    are compared, never positions). Empty segments stay empty. Pages apply does not convert
    (label, macro) keep every segment byte; a label or macro whose bytes differ is taken as
    converted (``apply --include-associated``) and gets the colour check instead. Every checked
    segment of the copy decodes; with ``--sample`` the others are checked for their stream's
    leading marker only.

Colour
    Both files are decoded with svsicc's own codecs (so abbreviated RGB-colourspace JPEG, GT450
    YCbCr JPEG, LZW and JPEG 2000 are read exactly as apply and OpenSlide read them). LittleCMS
    (the exact 2**24 table of :class:`~svsicc.colour.transform.ColourTable`) maps the original's
    pixels from
    the source profile named by the copy's ``ICC Profile Applied*`` record to the profile now in
    the copy's tag 34675, with the recorded intent; that is what the copy should hold. Each
    converted page (pyramid levels and thumbnail) gets PSNR, mean and max absolute error over
    R, G, B samples, and the mean and 95th percentile of the CIEDE2000 difference (sRGB -> CIELAB,
    D65) between the copy and that expectation (the ideal), and the same figures for the floor.
    Identity-mode copies (the source profile already was sRGB) must instead keep every segment
    byte.

Floor-relative margins (:data:`MARGINS`), and why
    A correct lossy copy differs from the ideal by one re-encode at the original's settings, and
    how much that loses depends on the tables and on the transform: a strong profile (an AT2
    profile maps grey 128 to ~191; the linear-light test profile to 188) stretches what the
    original encode flattened, so a correct copy of a synthetic AT2 Q=30 slide measures 34.6 dB /
    mean 2.43 on a reduced level, and openslide-python's tiny slide mean 2.06: fixed limits
    (once 38 dB / 2.0) fail them. So each checked segment is also re-encoded once by
    :mod:`svsicc.check.floor` (Pillow, not svsicc's writer) and the copy is judged against that
    floor:
    per page PSNR >= floor - 0.5 dB (JPEG copies land within 0.02 dB of it; JPEG 2000 keeps a
    level's bytes within a few percent, ~0.4 dB; any PSNR >= 50 dB passes, the error then being
    below 0.8 levels RMS); mean |error|, dE2000 mean and p95 <= floor x 1.1 + 0.1 / 0.1 / 0.2
    (encoder differences in DCT method and rounding move them by a few percent; the constants
    cover near-lossless pages whose floor is ~0). Per segment, so one broken tile cannot hide in
    a level's average: MSE <= floor MSE x 2 + 1 (JPEG 2000 spreads the rate over the page at
    equal slope, so a tile may get fewer bytes than the original gave it: measured up to 2.1 dB
    on a textured tile, 6.5 dB on a nearly flat one at 53 dB) and dE2000 mean <= floor x 1.25 +
    0.2. An unconverted tile among converted ones measures 31.0 dB against its 50.5 dB floor;
    CMU-1-Small-Region marked but unconverted 32 dB against 41 dB. Lossless compressions (none,
    LZW, 5/3 JPEG 2000): every sample exact. A profile whose effect is smaller than one
    re-encode's loss cannot be told from an untransformed copy by pixels at all; the record and
    structure checks still apply. The 95th percentile comes from a histogram of 0.01 bins and
    CIEDE2000 from a quarter of the pixels (see DELTA_E_STRIDE).

Exit codes: 0 within the margins, 1 verification failed, 2 bad input (missing file, not a TIFF,
ORIGINAL already calibrated, no source profile, a copy that records another source profile or
none: one line naming what it records and the --profile to pass).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from svsicc.aperio.marking import AppliedRecord, applied_record, split_description
from svsicc.aperio.slide import Page, Role, Slide, read_slide
from svsicc.check.floor import FloorError, floor_for
from svsicc.codecs import SegmentCodec
from svsicc.colour.ciede2000 import delta_e2000_srgb
from svsicc.colour.transform import ColourTable, IccProfile, Intent, default_target
from svsicc.convert.engine import CODEC_ERRORS, PageJob, make_codec
from svsicc.convert.plan import ORIGIN_OVERRIDE, ProfileChoice, ProfileSource, embedded_profile
from svsicc.exceptions import ProfileError, SvsiccError, UnsupportedLayoutError, VerificationError
from svsicc.tiff import file as tiff

if TYPE_CHECKING:
    from svsicc.convert.apply import ApplyResult

RGB = npt.NDArray[np.uint8]
ProgressCallback = Callable[[int, int], None]

EXIT_OK = 0
EXIT_FAILED = 1

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
# dE2000 percentiles come from a histogram of this resolution (bounded memory on any slide).
DELTA_E_BIN = 0.01
DELTA_E_BINS = 10_000  # up to dE 100; larger values land in the last bin
# CIEDE2000 is ~40 numpy passes per pixel, the bulk of a full verify's time: its statistics use
# every DELTA_E_STRIDE-th pixel of every DELTA_E_STRIDE-th row (a quarter). On CMU-1-Small-Region
# that moves the mean by 0.002 and the 95th percentile by 0.01; PSNR and abs errors use all.
DELTA_E_STRIDE = 2
# Leading bytes that identify a segment's stream, checked on every segment with --sample.
_STREAM_MAGIC = {7: b"\xff\xd8", 33003: b"\xff\x4f", 33005: b"\xff\x4f"}


@dataclass(frozen=True)
class Margins:
    """How far a lossy copy may sit from its floor (module docstring: why these numbers).

    A page passes when PSNR >= floor PSNR - ``psnr_db``, mean |error| <= floor * ``ratio`` +
    ``mean_abs``, dE2000 mean <= floor * ``ratio`` + ``delta_e_mean`` and p95 <= floor *
    ``ratio`` + ``delta_e_p95``; a segment when its PSNR >= its floor's - ``segment_psnr_db``
    and its dE2000 mean <= its floor's * ``segment_ratio`` + ``segment_delta_e_mean``.
    """

    psnr_db: float = 0.5
    ratio: float = 1.1
    mean_abs: float = 0.1
    delta_e_mean: float = 0.1
    delta_e_p95: float = 0.2
    segment_psnr_db: float = 3.0
    segment_mse: float = 1.0  # squared levels added to the segment's allowance (see below)
    segment_ratio: float = 1.25
    segment_delta_e_mean: float = 0.2
    # Above this PSNR a page's error is below 0.8 levels RMS: nothing left to judge.
    enough_psnr_db: float = 50.0

    def page_psnr_limit(self, floor: float | None) -> float:
        if floor is None:
            return self.enough_psnr_db
        return min(floor - self.psnr_db, self.enough_psnr_db)

    def segment_psnr_limit(self, floor: float | None) -> float:
        """The floor's MSE times 10**(segment_psnr_db / 10), plus ``segment_mse``: a JPEG 2000
        copy spreads its rate over the page at equal slope, so a nearly flat tile may give up
        half its bytes (several dB on a tile already at 55 dB, under a level RMS)."""
        floor_mse = 0.0 if floor is None else 255.0**2 / 10 ** (floor / 10)
        limit = psnr_from_mse(floor_mse * 10 ** (self.segment_psnr_db / 10) + self.segment_mse)
        assert limit is not None
        return limit

    def to_dict(self) -> dict[str, float | str]:
        return {
            **self.__dict__,
            "lossless": "exact (max_abs 0)",
        }


MARGINS = Margins()


@dataclass(frozen=True)
class Finding:
    """One reason verification failed (``kind``: structure, profile, decode, colour)."""

    kind: str
    message: str
    ifd: int | None = None
    tile: int | None = None

    def text(self) -> str:
        where = []
        if self.ifd is not None:
            where.append(f"IFD {self.ifd}")
        if self.tile is not None:
            where.append(f"segment {self.tile}")
        return (", ".join(where) + ": " if where else "") + self.message

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "ifd": self.ifd, "tile": self.tile, "message": self.message}


@dataclass(frozen=True)
class PageFigures:
    """The colour figures of one converted page (a pyramid level, the thumbnail...)."""

    index: int
    role: str
    compression: str
    lossless: bool
    method: str  # "pixels": decoded and compared; "bytes": identity mode, segments compared
    segments_total: int
    segments_checked: int
    pixels: int
    psnr: float | None  # None: no difference at all (infinite PSNR)
    mean_abs: float
    max_abs: int
    bias: tuple[float, float, float]  # mean signed error (copy - expected) of R, G, B
    delta_e2000_mean: float
    delta_e2000_p95: float
    worst_segment: int | None
    worst_segment_psnr: float | None
    worst_segment_delta_e2000: float
    # The same figures for the floor: the ideal re-encoded once at the original's settings
    # (svsicc.check.floor); equal to the ideal (inf, 0...) on lossless pages.
    floor_psnr: float | None = None
    floor_mean_abs: float = 0.0
    floor_delta_e2000_mean: float = 0.0
    floor_delta_e2000_p95: float = 0.0
    problems: tuple[str, ...] = ()
    # Checked segments the original cannot decode, kept byte for byte in the copy (apply
    # --on-bad-tile keep): not converted, and not counted against the copy.
    kept: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "role": self.role,
            "compression": self.compression,
            "lossless": self.lossless,
            "method": self.method,
            "segments_total": self.segments_total,
            "segments_checked": self.segments_checked,
            "pixels": self.pixels,
            "psnr_db": _rounded(self.psnr, 3),
            "floor_psnr_db": _rounded(self.floor_psnr, 3),
            "mean_abs": round(self.mean_abs, 4),
            "floor_mean_abs": round(self.floor_mean_abs, 4),
            "max_abs": self.max_abs,
            "bias_rgb": [round(v, 4) for v in self.bias],
            "delta_e2000_mean": round(self.delta_e2000_mean, 4),
            "floor_delta_e2000_mean": round(self.floor_delta_e2000_mean, 4),
            "delta_e2000_p95": round(self.delta_e2000_p95, 4),
            "floor_delta_e2000_p95": round(self.floor_delta_e2000_p95, 4),
            "worst_segment": None
            if self.worst_segment is None
            else {
                "index": self.worst_segment,
                "psnr": _rounded(self.worst_segment_psnr, 3),
                "delta_e2000_mean": round(self.worst_segment_delta_e2000, 4),
            },
            "kept_unconverted": list(self.kept),
            "ok": self.ok,
            "problems": list(self.problems),
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class VerifyResult:
    original: Path
    calibrated: Path
    record: AppliedRecord | None
    source_profile: IccProfile | None
    target_profile: IccProfile | None
    intent: Intent | None
    identity: bool
    sample: int | None
    ifds: int
    segments_decoded: int
    unchanged_pages: tuple[int, ...]  # pages whose segments were required byte-identical
    converted_associated: tuple[int, ...]  # label/macro pages found converted
    findings: tuple[Finding, ...]
    pages: tuple[PageFigures, ...]
    seconds: float
    margins: Margins = field(default=MARGINS)

    @property
    def ok(self) -> bool:
        return not self.findings and all(p.ok for p in self.pages)

    @property
    def problems(self) -> list[str]:
        """Every reason for failure, one line each."""
        lines = [f.text() for f in self.findings]
        for page in self.pages:
            lines.extend(f"IFD {page.index} ({page.role}): {p}" for p in page.problems)
        return lines

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "original": str(self.original),
            "calibrated": str(self.calibrated),
            "record": None if self.record is None else self.record.to_dict(),
            "source_profile": None
            if self.source_profile is None
            else self.source_profile.summary(),
            "target_profile": None
            if self.target_profile is None
            else self.target_profile.summary(),
            "intent": None if self.intent is None else self.intent.label,
            "mode": "identity" if self.identity else "transformed",
            "sample": self.sample,
            "margins": self.margins.to_dict(),
            "structure": {
                "ifds": self.ifds,
                "segments_decoded": self.segments_decoded,
                "unchanged_pages": list(self.unchanged_pages),
                "converted_associated_pages": list(self.converted_associated),
                "ok": not [f for f in self.findings if f.kind in ("structure", "decode")],
            },
            "findings": [f.to_dict() for f in self.findings],
            "problems": self.problems,
            "levels": [p.to_dict() for p in self.pages],
            "seconds": round(self.seconds, 3),
        }

    def summary_line(self) -> str:
        """One line for ``apply --verify``: the verdict and the page closest to its floor."""
        head = "verified OK" if self.ok else "verification FAILED"
        sampled = f"{self.sample} tiles per level" if self.sample else "every tile"
        if self.identity:
            detail = "identity copy: every checked segment byte-identical"
        else:
            detail = self.closest_to_floor()
        return f"{head} ({len(self.pages)} pages, {sampled}; {detail})"

    def closest_to_floor(self) -> str:
        """The lossy page whose PSNR sits closest to (or furthest under) its floor's."""
        lossy = [p for p in self.pages if p.method == "pixels" and not p.lossless and p.psnr]
        if not lossy:
            return "lossless pages exact" if self.ok else "no lossy page"
        worst = min(lossy, key=lambda p: (p.psnr or 0.0) - (p.floor_psnr or 0.0))
        return (
            f"closest to its floor IFD {worst.index} ({worst.role}): PSNR "
            f"{_psnr_text(worst.psnr)} dB, floor {_psnr_text(worst.floor_psnr)} dB"
        )

    def format(self) -> str:
        head = "OK" if self.ok else "FAILED"
        what = ""
        if self.source_profile is not None and self.target_profile is not None:
            what = (
                f" ({self.source_profile.description!r} -> {self.target_profile.description!r}, "
                f"{self.intent.label if self.intent is not None else '?'}, "
                f"{'identity' if self.identity else 'transformed'})"
            )
        lines = [f"{self.calibrated} vs {self.original}: {head}{what}"]
        sampled = f", {self.sample} sampled per level" if self.sample else ""
        # Identity copies are checked by their bytes, never decoded: say so, not "0 decoded".
        compared = sum(p.segments_checked for p in self.pages if p.method == "bytes")
        checked = (
            f"{compared} segments compared byte for byte"
            if self.identity
            else f"{self.segments_decoded} segments decoded"
        )
        lines.append(
            f"structure: {self.ifds} IFDs, {checked}{sampled}, "
            f"unchanged pages {list(self.unchanged_pages) or '-'}"
            + (
                f", converted label/macro {list(self.converted_associated)}"
                if self.converted_associated
                else ""
            )
        )
        for p in self.pages:
            where = f"  IFD {p.index} {p.role:<9} {p.segments_checked}/{p.segments_total} segments"
            fail = "" if p.ok else "  FAIL"
            if p.method == "bytes":
                lines.append(f"{where} byte-identical{fail}" if p.ok else f"{where}{fail}")
                continue
            if p.lossless:
                lines.append(f"{where} lossless, max |d| {p.max_abs}{fail}")
                continue
            lines.append(
                f"{where} PSNR {_psnr_text(p.psnr)} dB, floor {_psnr_text(p.floor_psnr)} dB; "
                f"mean |d| {p.mean_abs:.2f}, floor {p.floor_mean_abs:.2f}; dE2000 mean "
                f"{p.delta_e2000_mean:.2f}, floor {p.floor_delta_e2000_mean:.2f}; p95 "
                f"{p.delta_e2000_p95:.2f}, floor {p.floor_delta_e2000_p95:.2f}{fail}"
            )
            if p.kept:
                lines.append(
                    f"    not converted: {len(p.kept)} segment(s) the original cannot decode, "
                    f"kept as they were: {', '.join(str(n) for n in p.kept)}"
                )
        lines.extend(f"  problem: {text}" for text in self.problems)
        return "\n".join(lines)


# -- reading pixels -------------------------------------------------------------------------------


class SlidePixels:
    """Decoded pixels of a slide's segments and regions, through svsicc's own codecs."""

    def __init__(self, reader: tiff.TiffReader, slide: Slide) -> None:
        self.reader = reader
        self.slide = slide
        self._codecs: dict[int, SegmentCodec] = {}

    @property
    def path(self) -> Path:
        return self.slide.path

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
        bgrx = self.codec(page).decode(self.segment_bytes(page, index), rows, cols)
        if crop:
            _y0, _x0, rows, cols = self.segment_box(page, index)
        rgb: RGB = np.ascontiguousarray(bgrx[:rows, :cols, 2::-1])
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


# -- the expected transform -------------------------------------------------------------------


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
    record = applied_record(calibrated.description)
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
    target_bytes = calibrated.pages[0].icc_profile
    if target_bytes:
        target = IccProfile.from_bytes(target_bytes, f"{calibrated.path}: IFD 0 tag 34675")
    else:
        findings.append(Finding("structure", "IFD 0 of the copy has no ICC profile tag", ifd=0))
        target = default_target()
    if target.description != record.target:
        findings.append(
            Finding(
                "profile",
                f"the copy's tag 34675 holds {target.description!r} but its record says the "
                f"target was {record.target!r}",
                ifd=0,
            )
        )
    try:
        intent = Intent.parse(record.intent)
    except ValueError:
        findings.append(Finding("profile", f"the record names an unknown intent {record.intent!r}"))
        intent = profile.default_intent
    identity = record.mode.startswith(IDENTITY_MODE_PREFIX)
    return Expectation(profile, target, intent, identity, tuple(findings))


# -- structure --------------------------------------------------------------------------------


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
    tags_o, tags_c = set(po.ifd.entries), set(pc.ifd.entries)
    missing = sorted(tags_o - tags_c)
    extra = sorted(tags_c - tags_o - {tiff.TAG_ICC_PROFILE})
    if missing:
        findings.append(Finding("structure", f"tags {missing} are missing from the copy", ifd=i))
    if extra:
        findings.append(Finding("structure", f"the copy has extra tags {extra}", ifd=i))
    if tiff.TAG_ICC_PROFILE in tags_c - tags_o and i != 0:
        findings.append(
            Finding("structure", "the copy gained an ICC profile tag on an IFD other than 0", ifd=i)
        )
    for tag in sorted((tags_o & tags_c) - REWRITTEN_TAGS):
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


def _geometry_matches(po: Page, pc: Page) -> bool:
    keys = ("width", "height", "tiled", "segment_width", "segment_height", "compression")
    return all(getattr(po, k) == getattr(pc, k) for k in keys) and len(po.offsets) == len(
        pc.offsets
    )


# -- colour -----------------------------------------------------------------------------------


@dataclass
class _Accumulator:
    samples: int = 0
    pixels: int = 0
    delta_e_pixels: int = 0
    signed: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(3, np.int64))
    squared: float = 0.0
    absolute: float = 0.0
    max_abs: int = 0
    delta_e_sum: float = 0.0
    delta_e_hist: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(DELTA_E_BINS, np.int64)
    )
    max_delta_e: float = 0.0
    worst: int | None = None
    worst_psnr: float | None = None
    worst_delta_e: float = -1.0

    def add(self, index: int, got: RGB, want: RGB) -> tuple[float | None, float]:
        diff = got.astype(np.int32) - want.astype(np.int32)
        squared = float(np.square(diff).sum(dtype=np.int64))
        magnitude = np.abs(diff)
        absolute = float(magnitude.sum(dtype=np.int64))
        step = DELTA_E_STRIDE
        delta_e = delta_e2000_srgb(got[::step, ::step], want[::step, ::step]).ravel()
        n = diff.size
        self.samples += n
        self.pixels += n // 3
        self.delta_e_pixels += delta_e.size
        self.squared += squared
        self.absolute += absolute
        self.signed += diff.reshape(-1, 3).sum(axis=0, dtype=np.int64)
        self.max_abs = max(self.max_abs, int(magnitude.max(initial=0)))
        self.delta_e_sum += float(delta_e.sum())
        self.max_delta_e = max(self.max_delta_e, float(delta_e.max(initial=0.0)))
        bins = np.minimum((delta_e / DELTA_E_BIN).astype(np.int64), DELTA_E_BINS - 1)
        self.delta_e_hist += np.bincount(bins, minlength=DELTA_E_BINS)
        seg_psnr = psnr_from_mse(squared / n) if n else None
        seg_delta_e = float(delta_e.mean()) if delta_e.size else 0.0
        if seg_delta_e > self.worst_delta_e:
            self.worst, self.worst_psnr, self.worst_delta_e = index, seg_psnr, seg_delta_e
        return seg_psnr, seg_delta_e

    def psnr(self) -> float | None:
        return psnr_from_mse(self.squared / self.samples) if self.samples else None

    def mean_abs(self) -> float:
        return self.absolute / self.samples if self.samples else 0.0

    def delta_e_mean(self) -> float:
        return self.delta_e_sum / self.delta_e_pixels if self.delta_e_pixels else 0.0

    def percentile(self, q: float) -> float:
        total = int(self.delta_e_hist.sum())
        if not total:
            return 0.0
        cumulative = np.cumsum(self.delta_e_hist)
        bin_index = int(np.searchsorted(cumulative, q * total))
        # The bin's upper edge never under-reports; the largest value seen caps it.
        return min((bin_index + 1) * DELTA_E_BIN, self.max_delta_e)


def _bias(acc: _Accumulator) -> tuple[float, float, float]:
    if not acc.pixels:
        return (0.0, 0.0, 0.0)
    r, g, b = (float(v) / acc.pixels for v in acc.signed)
    return (r, g, b)


def psnr_from_mse(mse: float) -> float | None:
    return None if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _choose_segments(page: Page, sample: int | None, seed: int) -> list[int]:
    present = [n for n, count in enumerate(page.byte_counts) if count]
    if sample is None or page.role is not Role.LEVEL or sample >= len(present):
        return present
    rng = np.random.default_rng([seed, page.index])
    return sorted(int(n) for n in rng.choice(present, size=sample, replace=False))


def _check_colour(
    orig: SlidePixels,
    cal: SlidePixels,
    po: Page,
    pc: Page,
    table: ColourTable,
    segments: list[int],
    margins: Margins,
    findings: list[Finding],
    progress: Callable[[], None],
) -> tuple[PageFigures, int]:
    acc, floor_acc = _Accumulator(), _Accumulator()
    decoded = 0
    lossless = bool(getattr(cal.codec(pc), "lossless", False))
    round_trip = None if lossless else floor_for(po)
    bad_segments: list[str] = []
    kept: list[int] = []
    for n in segments:
        progress()
        try:
            stored = orig.segment_rgb(po, n, crop=False)
        except CODEC_ERRORS as exc:
            if orig.segment_bytes(po, n) != cal.segment_bytes(pc, n):
                findings.append(
                    Finding("decode", f"the original's segment cannot be decoded ({exc}) and "
                            "the copy's differs from it", ifd=po.index, tile=n)
                )  # fmt: skip
            else:
                kept.append(n)  # apply --on-bad-tile keep: kept as it was
            continue
        try:
            after = cal.segment_rgb(pc, n)
        except CODEC_ERRORS as exc:
            findings.append(Finding("decode", f"cannot decode: {exc}", ifd=pc.index, tile=n))
            continue
        decoded += 1
        _y0, _x0, rows, cols = orig.segment_box(po, n)
        before = stored[:rows, :cols]
        if after.shape != before.shape:
            findings.append(
                Finding("decode", f"decodes to {after.shape}, the original to {before.shape}",
                        ifd=pc.index, tile=n)
            )  # fmt: skip
            continue
        # The floor re-encodes the whole stored segment, padding included, as apply does.
        ideal_stored = table.apply_rgb(stored)
        ideal = ideal_stored[:rows, :cols]
        seg_psnr, seg_delta_e = acc.add(n, after, ideal)
        if round_trip is None:
            floor_acc.add(n, ideal, ideal)
            continue
        try:
            floor_pixels = round_trip(ideal_stored, orig.segment_bytes(po, n))[:rows, :cols]
        except (FloorError, OSError, ValueError) as exc:
            findings.append(
                Finding("decode", f"the floor cannot be computed: {exc}", ifd=po.index, tile=n)
            )
            continue
        floor_psnr, floor_delta_e = floor_acc.add(n, floor_pixels, ideal)
        problem = _segment_problem(seg_psnr, seg_delta_e, floor_psnr, floor_delta_e, margins)
        if problem is not None:
            bad_segments.append(f"segment {n}: {problem}")
    figures = _page_figures(po, decoded, acc, floor_acc, lossless)
    problems = _page_problems(figures, margins) if acc.pixels else []
    problems.extend(bad_segments[:10])
    if len(bad_segments) > 10:
        problems.append(f"... and {len(bad_segments) - 10} more segments beyond their floor")
    if segments and not acc.pixels:
        problems.append("no segment could be compared")
    return replace(figures, problems=tuple(problems), kept=tuple(kept)), decoded


def _psnr_text(value: float | None) -> str:
    return "inf" if value is None else f"{value:.1f}"


def _segment_problem(
    psnr: float | None,
    delta_e: float,
    floor_psnr: float | None,
    floor_delta_e: float,
    m: Margins,
) -> str | None:
    """Why one segment is out of its floor's margins (None: it is within them)."""
    low_psnr = psnr is not None and psnr < m.segment_psnr_limit(floor_psnr)
    high_delta_e = delta_e > floor_delta_e * m.segment_ratio + m.segment_delta_e_mean
    if not (low_psnr or high_delta_e):
        return None
    return (
        f"PSNR {_psnr_text(psnr)} dB (floor {_psnr_text(floor_psnr)} dB), mean dE2000 "
        f"{delta_e:.2f} (floor {floor_delta_e:.2f})"
    )


def _page_figures(
    po: Page, decoded: int, acc: _Accumulator, floor: _Accumulator, lossless: bool
) -> PageFigures:
    return PageFigures(
        index=po.index,
        role=po.role.value,
        compression=po.compression_name,
        lossless=lossless,
        method="pixels",
        segments_total=len(po.offsets),
        segments_checked=decoded,
        pixels=acc.pixels,
        psnr=acc.psnr(),
        mean_abs=acc.mean_abs(),
        max_abs=acc.max_abs,
        bias=_bias(acc),
        delta_e2000_mean=acc.delta_e_mean(),
        delta_e2000_p95=acc.percentile(0.95),
        worst_segment=acc.worst,
        worst_segment_psnr=acc.worst_psnr,
        worst_segment_delta_e2000=max(acc.worst_delta_e, 0.0),
        floor_psnr=floor.psnr(),
        floor_mean_abs=floor.mean_abs(),
        floor_delta_e2000_mean=floor.delta_e_mean(),
        floor_delta_e2000_p95=floor.percentile(0.95),
    )


def _page_problems(f: PageFigures, m: Margins) -> list[str]:
    """Why a page is out of its floor's margins (lossless pages: any difference at all)."""
    if f.lossless:
        if not f.max_abs:
            return []
        return [
            f"lossless compression but the pixels differ from the expectation by up to "
            f"{f.max_abs} (mean {f.mean_abs:.3f})"
        ]
    problems = []
    if f.psnr is not None and f.psnr < m.page_psnr_limit(f.floor_psnr):
        problems.append(
            f"PSNR {f.psnr:.2f} dB < {m.page_psnr_limit(f.floor_psnr):.2f} dB (floor "
            f"{_psnr_text(f.floor_psnr)} dB - {m.psnr_db} dB)"
        )
    checks = (
        ("mean |error|", f.mean_abs, f.floor_mean_abs, m.mean_abs),
        ("mean dE2000", f.delta_e2000_mean, f.floor_delta_e2000_mean, m.delta_e_mean),
        ("95th-percentile dE2000", f.delta_e2000_p95, f.floor_delta_e2000_p95, m.delta_e_p95),
    )
    for name, value, floor, slack in checks:
        limit = floor * m.ratio + slack
        if value > limit:
            problems.append(
                f"{name} {value:.3f} > {limit:.3f} (floor {floor:.3f} x {m.ratio} + {slack})"
            )
    return problems


def _segments_identical(
    orig: SlidePixels, cal: SlidePixels, po: Page, pc: Page, segments: list[int]
) -> list[int]:
    """The segments of ``segments`` whose bytes differ."""
    return [
        n
        for n in segments
        if po.byte_counts[n] != pc.byte_counts[n]
        or orig.segment_bytes(po, n) != cal.segment_bytes(pc, n)
    ]


def _check_unsampled(
    orig: SlidePixels, cal: SlidePixels, po: Page, pc: Page, skip: set[int]
) -> list[Finding]:
    """The cheap check of every segment --sample did not decode.

    Compressed streams must start with their codec's marker (when the original's did);
    uncompressed segments must keep their size. Catches truncated, zeroed and misplaced data.
    """
    magic = _STREAM_MAGIC.get(pc.compression)
    findings = []
    for n, count in enumerate(pc.byte_counts):
        if n in skip or not count:
            continue
        if pc.compression == 1 and count != po.byte_counts[n]:
            findings.append(
                Finding("decode", f"holds {count} bytes, the original {po.byte_counts[n]}",
                        ifd=pc.index, tile=n)
            )  # fmt: skip
        if magic is None or po.byte_counts[n] < len(magic):
            continue
        if orig.reader.read(po.offsets[n], len(magic), "segment", ifd=po.index) != magic:
            continue  # the original's stream is unusual; do not guess
        head = cal.reader.read(pc.offsets[n], min(count, len(magic)), "segment", ifd=pc.index)
        if head != magic:
            findings.append(
                Finding("decode", f"starts with {head.hex()}, not {magic.hex()}",
                        ifd=pc.index, tile=n)
            )  # fmt: skip
    return findings


def _identity_figures(po: Page, checked: int, differing: list[int]) -> PageFigures:
    problems = tuple(
        f"segment {n} differs; identity mode must keep every byte" for n in differing[:10]
    )
    return PageFigures(
        index=po.index,
        role=po.role.value,
        compression=po.compression_name,
        lossless=True,
        method="bytes",
        segments_total=len(po.offsets),
        segments_checked=checked,
        pixels=0,
        psnr=None,
        mean_abs=0.0,
        max_abs=0,
        bias=(0.0, 0.0, 0.0),
        delta_e2000_mean=0.0,
        delta_e2000_p95=0.0,
        worst_segment=None,
        worst_segment_psnr=None,
        worst_segment_delta_e2000=0.0,
        problems=problems,
    )


def verify(
    original: str | os.PathLike[str],
    calibrated: str | os.PathLike[str],
    *,
    profile: ProfileSource = None,
    fallback_profile: ProfileSource = None,
    sample: int | None = None,
    seed: int = 0,
    margins: Margins = MARGINS,
    progress: ProgressCallback | None = None,
) -> VerifyResult:
    """Check ``calibrated`` against ``original``; see the module docstring for what and how.

    ``profile`` and ``fallback_profile`` choose the source profile the copy must have been
    made with, as apply chooses it (:mod:`svsicc.convert.plan`). ``sample`` checks that many
    random segments (seeded by ``seed``) per pyramid level instead of all of them.

    Returns:
        A :class:`VerifyResult`: ``ok``, the ``findings`` (structure), per-level figures
        (``pages``: PSNR, mean abs, CIEDE2000, each beside its floor) and the ``margins`` they
        were held to. A copy that fails verification is a result with ``ok`` False, not an
        exception.

    Raises:
        SvsiccError: bad input: a file that is missing or not a sound TIFF
            (:class:`TiffFormatError`), no usable source profile (:class:`ProfileError`), a
            copy that records another source profile or none (:class:`ProfileError`),
            ``original`` already calibrated, ``sample`` below 1.
    """
    started = time.perf_counter()
    if sample is not None and sample < 1:
        raise SvsiccError(None, f"{{sample}} must be at least 1, not {sample}")
    src_path, dst_path = Path(original), Path(calibrated)
    chosen = ProfileChoice.load(profile, fallback_profile)
    orig_reader, orig_slide = open_slide(src_path)
    try:
        cal_reader, cal_slide = open_slide(dst_path)
    except BaseException:
        orig_reader.close()
        raise
    with orig_reader, cal_reader:
        if applied_record(orig_slide.description) is not None:
            raise SvsiccError(
                src_path,
                "{original} is itself a calibrated copy "
                "(it carries an 'ICC Profile Applied' record)",
                hint="give the original first, then the calibrated copy",
            )
        orig = SlidePixels(orig_reader, orig_slide)
        cal = SlidePixels(cal_reader, cal_slide)
        expect = expectation(orig_slide, cal_slide, chosen)
        findings = list(expect.findings)
        findings.extend(compare_structure(orig, cal, expect.target))
        table = None
        if expect.source is not None and expect.target is not None and expect.intent is not None:
            table = ColourTable.load_or_build(expect.source, expect.target, expect.intent)
            if expect.identity:
                from svsicc.convert.apply import IDENTITY_TOLERANCE

                deviation = table.max_deviation_from_identity()
                if deviation > IDENTITY_TOLERANCE:
                    findings.append(
                        Finding(
                            "profile",
                            f"the record says identity mode but {expect.source.description!r} "
                            f"-> {expect.target.description!r} moves colours by up to "
                            f"{deviation} levels",
                        )
                    )
        pairs = [
            (po, pc)
            for po, pc in zip(orig_slide.pages, cal_slide.pages, strict=False)
            if _geometry_matches(po, pc)
        ]
        for po, pc in zip(orig_slide.pages, cal_slide.pages, strict=False):
            if not _geometry_matches(po, pc):
                findings.append(
                    Finding("structure", "size, segment layout or compression differ", ifd=po.index)
                )
        plan: list[tuple[Page, Page, list[int], bool]] = []  # (orig, copy, segments, convert)
        unchanged: list[int] = []
        converted_associated: list[int] = []
        for po, pc in pairs:
            converts = not expect.identity and po.role in (Role.LEVEL, Role.THUMBNAIL)
            if not expect.identity and not converts:
                everything = list(range(len(po.offsets)))
                if _segments_identical(orig, cal, po, pc, everything):
                    converts = True
                    converted_associated.append(po.index)
            if not converts:
                unchanged.append(po.index)
            plan.append((po, pc, _choose_segments(po, sample, seed), converts))
        total = sum(len(segs) for po, _pc, segs, conv in plan if conv)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        pages: list[PageFigures] = []
        decoded = 0
        for po, pc, segments, converts in plan:
            if not converts:
                checked = list(range(len(po.offsets))) if sample is None else segments
                differing = _segments_identical(orig, cal, po, pc, checked)
                if expect.identity and po.role in (Role.LEVEL, Role.THUMBNAIL):
                    pages.append(_identity_figures(po, len(checked), differing))
                else:
                    findings.extend(
                        Finding("structure", "differs from the original; this page is not "
                                "converted and must keep every byte", ifd=po.index, tile=n)
                        for n in differing[:10]
                    )  # fmt: skip
                continue
            if table is None:
                continue
            figures, count = _check_colour(
                orig, cal, po, pc, table, segments, margins, findings, tick
            )
            pages.append(figures)
            decoded += count
            if sample is not None:
                findings.extend(_check_unsampled(orig, cal, po, pc, set(segments)))
        if not pages and table is not None and not expect.identity:
            findings.append(Finding("structure", "no page of the copy was converted"))
    return VerifyResult(
        original=src_path,
        calibrated=dst_path,
        record=applied_record(cal_slide.description),
        source_profile=expect.source,
        target_profile=expect.target,
        intent=expect.intent,
        identity=expect.identity,
        sample=sample,
        ifds=len(cal_slide.pages),
        segments_decoded=decoded,
        unchanged_pages=tuple(unchanged),
        converted_associated=tuple(converted_associated),
        findings=tuple(findings),
        pages=tuple(pages),
        seconds=time.perf_counter() - started,
        margins=margins,
    )


# -- apply --verify ---------------------------------------------------------------------------


def verify_before_commit(
    sample: int | None,
    profile: str | os.PathLike[str] | bytes | IccProfile | None = None,
    on_result: Callable[[VerifyResult], None] | None = None,
) -> Callable[[Path, ApplyResult], None]:
    """A ``before_commit`` hook for :func:`svsicc.apply`: verify the finished temporary copy.

    The copy is checked against ``result.source`` with ``profile`` (default: the profile apply
    used) and ``sample`` random segments per level (None: all). ``on_result`` receives the
    :class:`VerifyResult` whether it passed or not (a migration journal records the figures).
    Raises :class:`VerificationError` when the copy fails, so apply leaves no output.
    """

    def check(temp_path: Path, result: ApplyResult) -> None:
        outcome = verify(
            result.source,
            temp_path,
            profile=profile if profile is not None else result.profile,
            sample=sample,
        )
        if on_result is not None:
            on_result(outcome)
        if not outcome.ok:
            # A line naming the IFD and tile says more than a level's average: it goes first.
            problems = sorted(outcome.problems, key=lambda text: "segment " not in text)
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise VerificationError(
                result.output,
                f"verification failed, nothing was written: {problems[0]}{more}",
                hint="run {verify_call} on a copy made without {apply_verify} for the details",
            )

    return check


# -- command line -----------------------------------------------------------------------------
