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
    from svsicc.check.figures import VerifyResult
    from svsicc.check.report_summary import ReportResult
    from svsicc.colour.transform import IccProfile
    from svsicc.convert.apply import ApplyResult
    from svsicc.dicom.info import DicomSeriesInfo
    from svsicc.slide_info import SlideInfo

PathLike = str | os.PathLike[str]


def apply(source: PathLike, output: PathLike, **options: Any) -> ApplyResult:
    """Write ``output``: ``source`` converted from its scanner profile to the target.

    A TIFF slide (Aperio SVS, generic tiled TIFF, Ventana BIF) goes to
    :func:`svsicc.convert.apply.apply`, whose docstring lists the options, what it returns and
    raises; a DICOM series to :func:`svsicc.dicom.apply.apply_dicom` (``output`` a folder), with
    the same options but ``in_place`` and ``include_associated``, which a series refuses.

    Returns:
        :class:`~svsicc.convert.apply.ApplyResult` (for a series, a page per instance).

    Raises:
        TiffFormatError, DicomFormatError: missing, unreadable or corrupt input.
        UnsupportedLayoutError: a format, layout or coding svsicc does not convert.
        ProfileError, AlreadyAppliedError, OutputError, TileDecodeError, VerificationError:
            as :func:`svsicc.convert.apply.apply` says. All derive from :class:`SvsiccError`.
    """
    if not is_dicom_input(source):
        from svsicc.convert.apply import apply as apply_tiff

        return apply_tiff(source, output, **options)
    from svsicc.dicom.apply import apply_dicom

    if options.pop("in_place", False):
        raise OutputError(
            Path(source),
            "a DICOM series cannot be converted in place",
            hint="give an OUTPUT folder: the copy is a new series",
        )
    if options.pop("include_associated", False):
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
