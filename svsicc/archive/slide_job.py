"""One slide's migration, as a worker runs it: apply (or copy, or skip) and the journal record."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from svsicc.api import apply, verify_before_commit
from svsicc.archive.discover import HASH_CHUNK, FoundSlide, sha256_file
from svsicc.archive.journal import (
    DONE,
    FAILED,
    RUNNING,
    SKIP_ALREADY_APPLIED,
    SKIP_IDENTITY,
    SKIP_NO_PROFILE,
    SKIPPED,
    SlideRecord,
    this_process,
    utc_now,
)
from svsicc.convert.apply import ApplyResult
from svsicc.convert.plan import find_embedded_profile
from svsicc.drivers import read_slide
from svsicc.exceptions import OutputError, SvsiccError, TiffFormatError
from svsicc.tiff import file as tiff
from svsicc.tiff.output import TempOutput, output_error
from svsicc.tiff.record import AppliedRecord


@dataclass(frozen=True)
class SlideJob:
    """Everything a worker (local or on Dask) needs for one slide; plain picklable data."""

    rel_path: str
    source: str
    output: str
    size: int
    mtime_ns: int
    profile: bytes | None
    target: bytes | None
    intent: str | None
    fallback: bytes | None = None
    verify: int | None = None
    redo: str | None = None  # why a slide finished earlier is done again

    def record(self, status: str, **changes: object) -> SlideRecord:
        """The journal row of this slide with ``status`` (and any other fields in ``changes``)."""
        row = SlideRecord(
            path=self.rel_path,
            source_path=self.source,
            output_path=self.output,
            size=self.size,
            mtime_ns=self.mtime_ns,
            status=status,
        )
        return row.with_changes(**changes) if changes else row


def needs_work(
    previous: SlideRecord | None, slide: FoundSlide, output: Path, profile_given: bool
) -> bool:
    """Whether a resume must (re)do the slide: finished slides whose source is unchanged and
    whose ``output`` is still there are not redone; "no profile" ones are when --profile is
    given. The output is looked for where this run would write it, so a moved DST_DIR resumes."""
    if previous is None or not previous.finished:
        return True
    if (previous.size, previous.mtime_ns) != (slide.size, slide.mtime_ns):
        return True
    if previous.status == SKIPPED and previous.detail == SKIP_NO_PROFILE:
        return profile_given
    return not (output.is_dir() if slide.path.is_dir() else output.is_file())


def migrate_slide(job: SlideJob) -> SlideRecord:
    """Do one slide and say what happened; a bad slide returns a ``failed`` record (only
    interrupts propagate). Runs in a worker process, local or on a Dask worker."""
    started = time.perf_counter()
    base = job.record(RUNNING, started_at=utc_now(), worker=this_process())
    timings: dict[str, float] = {"hash": 0.0, "apply": 0.0}
    try:
        record = _migrate_slide(job, base, timings)
    except SvsiccError as exc:
        record = base.with_changes(status=FAILED, detail=exc.one_line())
    except Exception as exc:  # one bad slide never stops the run
        record = base.with_changes(
            status=FAILED, detail=f"{job.source}: unexpected error: {type(exc).__name__}: {exc}"
        )
    return record.with_changes(
        finished_at=utc_now(),
        seconds=round(time.perf_counter() - started, 6),
        hash_seconds=round(timings["hash"], 6),
        apply_seconds=round(timings["apply"], 6),
    )


@dataclass(frozen=True)
class SlideKind:
    """What migrating one slide needs to know of its storage: a TIFF file or a DICOM series
    folder (:mod:`svsicc.archive.series`)."""

    # (svsicc's record if it converted the slide already, whether it embeds a profile)
    read: Callable[[Path], tuple[AppliedRecord | None, bool]]
    digest: Callable[[Path], str]
    copy_as_is: Callable[[Path, Path], tuple[str, int]]  # -> (digest, bytes)
    is_marked: Callable[[Path], bool]  # the finished copy parses and carries the record
    remove: Callable[[Path], None]


def _read_tiff(source: Path) -> tuple[AppliedRecord | None, bool]:
    with tiff.TiffReader(source) as reader:
        slide = read_slide(reader)
    return slide.applied, find_embedded_profile(slide) is not None


def _tiff_marked(path: Path) -> bool:
    with tiff.TiffReader(path) as written:
        return read_slide(written).applied is not None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


TIFF_FILE = SlideKind(_read_tiff, sha256_file, lambda s, o: copy_as_is(s, o), _tiff_marked, _unlink)


def _migrate_slide(job: SlideJob, base: SlideRecord, timings: dict[str, float]) -> SlideRecord:
    source, output = Path(job.source), Path(job.output)
    if source.is_dir():
        from svsicc.archive.series import DICOM_SERIES

        kind = DICOM_SERIES
    else:
        kind = TIFF_FILE
    applied, embeds_profile = kind.read(source)
    if applied is not None:
        _make_folder(output.parent)
        t = time.perf_counter()
        digest, size = kind.copy_as_is(source, output)
        timings["hash"] = time.perf_counter() - t
        return base.with_changes(
            status=SKIPPED,
            detail=SKIP_ALREADY_APPLIED,
            source_sha256=digest,
            output_sha256=digest,
            output_size=size,
            profile_description=applied.source_description,
            profile_sha256=applied.source_sha256,
            profile_origin=f"applied earlier ({applied.by})",
            intent=applied.intent,
        )
    t = time.perf_counter()
    source_sha = kind.digest(source)
    timings["hash"] = time.perf_counter() - t
    if job.profile is None and job.fallback is None and not embeds_profile:
        if job.redo is not None:
            # A fresh run of this command writes nothing for it: neither does this one.
            kind.remove(output)
        return base.with_changes(status=SKIPPED, detail=SKIP_NO_PROFILE, source_sha256=source_sha)
    _make_folder(output.parent)
    output_sha: list[str] = []
    verify_copy = None if job.verify is None else verify_before_commit(job.verify)

    def check_before_commit(temp: Path, result: ApplyResult) -> None:
        if verify_copy is not None:
            verify_copy(temp, result)  # raises VerificationError: the slide fails, no output
        # The copy must parse and carry the mark before it may take its final name.
        if not kind.is_marked(temp):
            raise OutputError(output, "the finished copy carries no applied mark")
        h = time.perf_counter()
        output_sha.append(kind.digest(temp))
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
    # The output's hash ran inside apply (before the rename); count it as hashing.
    timings["apply"] = time.perf_counter() - t - (timings["hash"] - hashed_before)
    return base.with_changes(
        status=SKIPPED if result.identity else DONE,
        detail=SKIP_IDENTITY if result.identity else "",
        source_sha256=source_sha,
        output_sha256=output_sha[0],
        output_size=result.output_bytes,
        profile_description=result.profile.description,
        profile_sha256=result.profile.sha256,
        profile_origin=result.profile_origin
        + (
            ""
            if result.replaced_profile is None
            else f", replaces embedded {result.replaced_profile.description!r} "
            f"(sha256 {result.replaced_profile.sha256[:12]})"
        ),
        intent=result.intent.label,
        target_description=result.target.description,
        target_sha256=result.target.sha256,
        segments_rewritten=result.segments_rewritten,
    )


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the folder: {exc.strerror}") from None


def copy_as_is(source: Path, output: Path) -> tuple[str, int]:
    """Copy ``source`` to ``output`` byte for byte (through a temporary file); return the
    sha256 of the bytes copied, which is both files' hash, and their size."""
    digest = hashlib.sha256()
    size = 0
    with TempOutput(output) as out, open(source, "rb") as src:
        assert out.file is not None
        while True:
            try:
                chunk = src.read(HASH_CHUNK)
            except OSError as exc:
                raise TiffFormatError(source, f"cannot read: {exc.strerror or exc}") from None
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            try:
                out.file.write(chunk)
            except OSError as exc:
                raise output_error(output, exc) from None
        out.commit()
    return digest.hexdigest(), size
