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
    equal slope, so a tile may get fewer bytes than the original gave it; the encoder bounds
    that at 1.5 dB below the level that repeats the tile's own length, and the floor's per-tile
    rate is itself an estimate) and dE2000 mean <= floor x 1.25 + 0.2. An unconverted tile among
    converted ones measures 31.0 dB against its 50.5 dB floor;
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

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from svsicc.check.figures import (
    Accumulator,
    Finding,
    PageFigures,
    VerifyResult,
    identity_figures,
    page_figures,
    page_problems,
    segment_problem,
)
from svsicc.check.floor import FloorError, floor_for
from svsicc.check.margins import MARGINS, Margins
from svsicc.check.structure import (
    SlidePixels,
    compare_structure,
    expectation,
    geometry_matches,
    open_slide,
)
from svsicc.codecs import registry
from svsicc.colour.transform import ColourTable
from svsicc.convert.engine import CODEC_ERRORS
from svsicc.convert.plan import IDENTITY_TOLERANCE, ProfileChoice, ProfileSource
from svsicc.exceptions import SvsiccError
from svsicc.tiff.slide import Page, Role

if TYPE_CHECKING:
    pass

ProgressCallback = Callable[[int, int], None]

EXIT_OK = 0
EXIT_FAILED = 1


# -- reading pixels -------------------------------------------------------------------------------


# -- the expected transform -------------------------------------------------------------------


# -- structure --------------------------------------------------------------------------------


# -- colour -----------------------------------------------------------------------------------


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
    acc, floor_acc = Accumulator(), Accumulator()
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
        problem = segment_problem(seg_psnr, seg_delta_e, floor_psnr, floor_delta_e, margins)
        if problem is not None:
            bad_segments.append(f"segment {n}: {problem}")
    figures = page_figures(po, decoded, acc, floor_acc, lossless)
    problems = page_problems(figures, margins) if acc.pixels else []
    problems.extend(bad_segments[:10])
    if len(bad_segments) > 10:
        problems.append(f"... and {len(bad_segments) - 10} more segments beyond their floor")
    if segments and not acc.pixels:
        problems.append("no segment could be compared")
    return replace(figures, problems=tuple(problems), kept=tuple(kept)), decoded


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
    magic = registry.stream_magic(pc.compression)
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
        if orig_slide.applied is not None:
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
            if geometry_matches(po, pc)
        ]
        for po, pc in zip(orig_slide.pages, cal_slide.pages, strict=False):
            if not geometry_matches(po, pc):
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
                    pages.append(identity_figures(po, len(checked), differing))
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
        record=cal_slide.applied,
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
