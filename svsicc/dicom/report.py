"""``svsicc report`` for a DICOM WSI copy: verified by :func:`~.verify.verify_dicom`, then the
pictures, figures and page of :mod:`svsicc.check.report`, read from the series' frames
(:mod:`.pixels`): the THUMBNAIL instance as the whole slide (the smallest VOLUME without one)
and a window of the largest VOLUME as the full-resolution region."""

from __future__ import annotations

import os
from pathlib import Path

from svsicc.check.report import DEFAULT_REGION_SIZE, report_folder, write_report
from svsicc.check.report_summary import ReportResult
from svsicc.convert.plan import ProfileSource
from svsicc.dicom.pixels import open_series_pixels
from svsicc.dicom.verify import verify_dicom


def make_dicom_report(
    original: str | os.PathLike[str],
    calibrated: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    profile: ProfileSource = None,
    sample: int | None = None,
    region_size: int = DEFAULT_REGION_SIZE,
) -> ReportResult:
    """:func:`svsicc.check.report.make_report` for two DICOM series (folders, or one .dcm of
    each): the same folder, files, result and errors; pages are instances."""
    destination = report_folder(out_dir, region_size)
    result = verify_dicom(original, calibrated, profile=profile, sample=sample)
    sources = (Path(original), Path(calibrated))
    return write_report(result, sources, open_series_pixels, destination, region_size)
