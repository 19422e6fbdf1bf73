"""The public functions that take any slide: each hands a DICOM WSI series (a folder, or one of
its files) to the DICOM driver and anything else to the TIFF path, with the same options.

:func:`apply`, :func:`verify`, :func:`info` and :func:`report` are ``svsicc.apply``, ``.verify``,
``.info`` and ``.report``; the command line and migrate call them too. They sit above both
paths (:mod:`svsicc.convert` / :mod:`svsicc.check` for TIFF, :mod:`svsicc.dicom`, which builds on
those), so neither imports the other's way up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svsicc.dicom.detect import is_dicom_input
from svsicc.exceptions import OutputError, UnsupportedLayoutError, VerificationError

if TYPE_CHECKING:
    import threading

    from svsicc.check.figures import VerifyResult
    from svsicc.check.report_summary import ReportResult
    from svsicc.colour.transform import IccProfile, Intent
    from svsicc.convert.apply import ApplyResult
    from svsicc.convert.engine import ProgressCallback, WorkerPool
    from svsicc.convert.plan import ConversionPlan, ProfileSource
    from svsicc.dicom.info import DicomSeriesInfo
    from svsicc.slide_info import SlideInfo

PathLike = str | os.PathLike[str]


def apply(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    profile: ProfileSource = None,
    target: ProfileSource = None,
    intent: Intent | str | None = None,
    fallback_profile: ProfileSource = None,
    in_place: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
    include_associated: bool = False,
    keep_bad_tiles: bool = False,
    progress: ProgressCallback | None = None,
    pool: WorkerPool | None = None,
    before_commit: Callable[[Path, ApplyResult], None] | None = None,
    on_plan: Callable[[ConversionPlan], None] | None = None,
    cancel: threading.Event | None = None,
) -> ApplyResult:
    """Write ``output``: ``source`` with every pyramid level and the thumbnail converted from
    its ICC profile to ``target`` (default: a compact sRGB), every other byte kept, and marked.
    A TIFF slide goes to :func:`svsicc.convert.apply.apply`, a DICOM series to
    :func:`svsicc.dicom.apply.apply_dicom` (``output`` a folder; ``in_place`` and
    ``include_associated`` are refused: the copy is a new series, LABEL and OVERVIEW are kept).

    Writes ``output`` through a temporary file beside it (``.OUTPUT.PID.svsicc-tmp``) that is
    renamed into place only when complete; after any error neither ``output`` nor a temporary
    file remains. ``source`` is only ever opened read-only.

    Args:
        source: a slide of a format svsicc converts: Aperio SVS, generic tiled TIFF, Ventana
            BIF (by content; other TIFFs are refused naming them), or a DICOM WSI series (a
            folder, or one of its files).
        output: the copy to write. Equal to ``source`` only with ``in_place``.
        profile: the source profile (path, bytes or :class:`IccProfile`); overrides the
            embedded one (``ApplyResult.replaced_profile`` names it when they differ).
        fallback_profile: the source profile only when the slide embeds none
            (:mod:`svsicc.convert.plan`).
        target: the target profile; default a compact ICC v2 sRGB.
        intent: ``Intent`` or its name; default the source profile's own (perceptual for
            ScanScope v1).
        in_place: replace ``source`` (``output`` must then be ``source`` itself).
        overwrite: replace an existing ``output``.
        workers: processes that decode, convert and encode segments; None for all cores
            (:func:`svsicc.convert.engine.default_workers`); values below 1 count as 1. With 1
            (or an identity copy) no process is started.
        include_associated: also convert the label and macro images.
        keep_bad_tiles: keep the original bytes of a segment that cannot be decoded (listed in
            ``ApplyResult.bad_segments``) instead of failing.
        progress: called as ``progress(done, total)`` (segments) from the calling thread after
            each segment is written, e.g. :class:`svsicc.progress.ProgressBar`.
        on_plan: called with the :class:`~svsicc.convert.plan.ConversionPlan` before any work (the
            command line says there when --profile replaces an embedded profile).
        pool: a :class:`WorkerPool` to reuse across calls (``workers`` is then ignored and the
            pool is left open); by default apply starts and closes its own.
        before_commit: called as ``before_commit(temp_path, result)`` with the finished, flushed
            temporary file before it is renamed into place (``result.seconds`` is 0 there); may
            raise to abort, leaving nothing (``apply --verify`` runs
            :func:`svsicc.api.verify_before_commit` here).
        cancel: an event whoever interrupts the run sets (the command line's SIGINT/SIGTERM
            handler): nothing is renamed into place once it is set, even if a library swallowed
            the KeyboardInterrupt.

    Returns:
        :class:`ApplyResult`: profiles, intent, whether the copy is an identity copy (no pixel
        changed, only marked), per-page counts and bytes (:class:`PageResult`), input and output
        sizes, seconds, workers used and any kept bad segments.

    Raises:
        DicomFormatError: a DICOM input that is not DICOM or is broken.
        TiffFormatError: missing, unreadable, truncated or corrupt input.
        UnsupportedLayoutError: not an Aperio slide (the format is named), or a compression or
            sample layout svsicc does not convert.
        ProfileError: no profile to use, or an unreadable or non-RGB one.
        AlreadyAppliedError: the slide already carries svsicc's applied record.
        OutputError: OUTPUT is INPUT without ``in_place``, exists without ``overwrite``, is a
            folder or in a missing folder, or the disk is full or not writable.
        TileDecodeError: a segment cannot be decoded (unless ``keep_bad_tiles``).
        VerificationError: raised by a ``before_commit`` check such as apply --verify.
        KeyboardInterrupt: on Ctrl-C or SIGTERM (via the command line); nothing is left.

    All but the last derive from :class:`SvsiccError` and carry ``path``, ``ifd``, ``tile``,
    ``problem`` and ``hint``.
    """
    options: dict[str, Any] = {
        "profile": profile, "target": target, "intent": intent,
        "fallback_profile": fallback_profile, "overwrite": overwrite, "workers": workers,
        "keep_bad_tiles": keep_bad_tiles, "progress": progress, "pool": pool,
        "before_commit": before_commit, "on_plan": on_plan, "cancel": cancel,
    }  # fmt: skip
    if not is_dicom_input(source):
        from svsicc.convert.apply import apply as apply_tiff

        return apply_tiff(
            source, output, in_place=in_place, include_associated=include_associated, **options
        )
    from svsicc.dicom.apply import apply_dicom

    if in_place:
        raise OutputError(
            Path(source),
            "a DICOM series cannot be converted in place",
            hint="give an OUTPUT folder: the copy is a new series",
        )
    if include_associated:
        raise UnsupportedLayoutError(
            Path(source),
            "LABEL and OVERVIEW instances of a DICOM series are kept as they are",
            hint="leave out {include_associated}",
        )
    return apply_dicom(source, output, **options)


def verify(original: PathLike, calibrated: PathLike, **options: Any) -> VerifyResult:
    """Check ``calibrated`` against ``original``: :func:`svsicc.check.verify.verify` for TIFF
    slides, :func:`svsicc.dicom.verify.verify_dicom` for DICOM series (same options).

    Returns:
        :class:`~svsicc.check.figures.VerifyResult`; a copy that fails is ``ok`` False, not an
        exception.

    Raises:
        TiffFormatError, DicomFormatError: an input is missing or unreadable.
        ProfileError: the copy records no source profile, or another one than the original's
            (or ``profile``) is (a usage error).
        UnsupportedLayoutError: the copy is not a copy of that slide.
    """
    if is_dicom_input(original):
        from svsicc.dicom.verify import verify_dicom

        return verify_dicom(original, calibrated, **options)
    from svsicc.check.verify import verify as verify_tiff

    return verify_tiff(original, calibrated, **options)


def info(path: PathLike) -> SlideInfo | DicomSeriesInfo:
    """What ``path`` holds: :func:`svsicc.slide_info.slide_info` for a TIFF slide,
    :func:`svsicc.dicom.info.dicom_info` for a DICOM series. Only reads.

    Returns:
        :class:`~svsicc.slide_info.SlideInfo`, or :class:`~svsicc.dicom.info.DicomSeriesInfo`
        with the same ``profile``, ``applied`` and ``to_dict()``.

    Raises:
        TiffFormatError, DicomFormatError: missing, or not a sound file.
        UnsupportedLayoutError: a TIFF of a format svsicc does not convert.
    """
    if is_dicom_input(path):
        from svsicc.dicom.info import dicom_info

        return dicom_info(path)
    from svsicc.slide_info import slide_info

    return slide_info(Path(path))


def report(
    original: PathLike, calibrated: PathLike, out_dir: PathLike, **options: Any
) -> ReportResult:
    """Verify and write the report folder: :func:`svsicc.check.report.make_report` for TIFF
    slides, :func:`svsicc.dicom.report.make_dicom_report` for DICOM series (same options).

    Returns:
        :class:`~svsicc.check.report_summary.ReportResult` (``ok`` False when verification
        failed; the report is written either way).

    Raises:
        As :func:`verify`, and OutputError when ``out_dir`` cannot be written.
    """
    if is_dicom_input(original):
        from svsicc.dicom.report import make_dicom_report

        return make_dicom_report(original, calibrated, out_dir, **options)
    from svsicc.check.report import make_report

    return make_report(original, calibrated, out_dir, **options)


def verify_before_commit(
    sample: int | None,
    profile: PathLike | bytes | IccProfile | None = None,
    on_result: Callable[[VerifyResult], None] | None = None,
) -> Callable[[Path, ApplyResult], None]:
    """A ``before_commit`` hook for :func:`apply`: :func:`verify` the finished temporary copy
    (file or folder) against ``result.source`` with ``profile`` (default: the profile apply
    used); raises :class:`VerificationError` when it fails, so apply leaves nothing."""

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
            # A line naming the segment says more than a level's average: it goes first.
            problems = sorted(
                outcome.problems, key=lambda text: "segment " not in text and "frame " not in text
            )
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise VerificationError(
                result.output,
                f"verification failed, nothing was written: {problems[0]}{more}",
                hint="run {verify_call} on a copy made without {apply_verify} for the details",
            )

    return check
