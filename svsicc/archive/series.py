"""A DICOM WSI series in an archive: one folder of ``.dcm`` files is one slide.

migrate finds a series by its folder (any folder holding ``.dcm`` files, not descended into),
hashes it as a whole (each file's sha256 under its name, in name order), and writes its copy as a
folder of the same relative path under DST_DIR through :func:`svsicc.dicom.apply.apply_dicom`,
whose temporary folder is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from svsicc.archive.discover import series_files, sha256_file
from svsicc.archive.journal import (
    DONE,
    SKIP_ALREADY_APPLIED,
    SKIP_IDENTITY,
    SKIP_NO_PROFILE,
    SKIPPED,
    SlideRecord,
)
from svsicc.exceptions import OutputError

if TYPE_CHECKING:
    from svsicc.archive.slide_job import SlideJob
    from svsicc.convert.apply import ApplyResult


def sha256_folder(folder: Path) -> str:
    """One digest for a folder: each file's name and sha256, in name order."""
    digest = hashlib.sha256()
    for path in series_files(folder):
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in series_files(folder))


def migrate_series(job: SlideJob, base: SlideRecord, timings: dict[str, float]) -> SlideRecord:
    """One series: copied as it is if svsicc converted it already, skipped without a profile
    to use, else converted (and verified with ``job.verify``) into a folder at ``job.output``."""
    from svsicc.convert.apply import apply
    from svsicc.dicom.info import dicom_info
    from svsicc.dicom.verify import verify_before_commit

    source, output = Path(job.source), Path(job.output)
    info = dicom_info(source)
    if info.applied is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        digest = copy_series_as_is(source, output)
        timings["hash"] = time.perf_counter() - t
        return base.with_changes(
            status=SKIPPED,
            detail=SKIP_ALREADY_APPLIED,
            source_sha256=digest,
            output_sha256=digest,
            output_size=folder_size(output),
            profile_description=info.applied.source_description,
            profile_sha256=info.applied.source_sha256,
            profile_origin=f"applied earlier ({info.applied.by})",
            intent=info.applied.intent,
        )
    t = time.perf_counter()
    source_sha = sha256_folder(source)
    timings["hash"] = time.perf_counter() - t
    if job.profile is None and job.fallback is None and info.profile is None:
        if job.redo is not None:
            shutil.rmtree(output, ignore_errors=True)
        return base.with_changes(status=SKIPPED, detail=SKIP_NO_PROFILE, source_sha256=source_sha)
    output.parent.mkdir(parents=True, exist_ok=True)
    output_sha: list[str] = []
    verify_copy = None if job.verify is None else verify_before_commit(job.verify)

    def check_before_commit(temp: Path, result: ApplyResult) -> None:
        if verify_copy is not None:
            verify_copy(temp, result)
        if dicom_info(temp).applied is None:
            raise OutputError(output, "the finished copy carries no applied record")
        h = time.perf_counter()
        output_sha.append(sha256_folder(temp))
        timings["hash"] += time.perf_counter() - h

    t, hashed_before = time.perf_counter(), timings["hash"]
    result = apply(
        source,
        output,
        profile=job.profile,
        fallback_profile=job.fallback,
        target=job.target,
        intent=job.intent,
        overwrite=True,
        workers=1,
        before_commit=check_before_commit,
    )
    timings["apply"] = time.perf_counter() - t - (timings["hash"] - hashed_before)
    return base.with_changes(
        status=SKIPPED if result.identity else DONE,
        detail=SKIP_IDENTITY if result.identity else "",
        source_sha256=source_sha,
        output_sha256=output_sha[0],
        output_size=result.output_bytes,
        profile_description=result.profile.description,
        profile_sha256=result.profile.sha256,
        profile_origin=result.profile_origin,
        intent=result.intent.label,
        target_description=result.target.description,
        target_sha256=result.target.sha256,
        segments_rewritten=result.segments_rewritten,
    )


def copy_series_as_is(source: Path, output: Path) -> str:
    """Copy the series folder byte for byte (through a temporary folder renamed into place);
    return its folder digest."""
    from svsicc.dicom.output import TempFolder

    with TempFolder(output) as temp:
        for path in series_files(source):
            try:
                shutil.copyfile(path, temp.path / path.name)
            except OSError as exc:
                raise OutputError(output, f"cannot copy {path.name}: {exc.strerror}") from None
        digest = sha256_folder(temp.path)
        temp.commit()
    return digest
