"""``svsicc migrate SRC_DIR DST_DIR``: apply a whole archive, resumably, on one machine or Dask.

Design
------
- Parallelism is per slide: each worker runs :func:`svsicc.convert.apply.apply` with
  ``workers=1`` on one whole slide. A crash, a corrupt file or an out-of-memory kill then costs
  that slide only, slides need no coordination between workers, and the same task runs unchanged
  on a Dask cluster. Slides are
  started largest first so the last ones to finish are small (the idle tail of per-slide
  parallelism stays short).
- The local pool uses ``spawn`` processes: a forked worker would inherit the lock file
  descriptor and hold the lock after the coordinator died. Workers watch their parent and, when
  it is gone (kill -9), remove the temporary file of the slide in hand and exit. A worker that
  dies (segfault, OOM kill) costs nothing but a retry: the slides it shared the pool with are
  retried, each alone, and only one that kills a pool on its own fails.
- Only the coordinator writes the journal (:mod:`svsicc.archive.journal`); workers return
  :class:`~svsicc.archive.journal.SlideRecord` values. A slide is marked ``running`` when it is
  handed out and gets its final row when its result comes back, after its output was renamed into
  place. A resume redoes ``running`` and ``failed`` slides from scratch (``overwrite=True``).
- Outputs appear only by rename (apply's ``.NAME.PID.svsicc-tmp``; the as-is copies of
  already-applied slides and the summary files use the same naming), so a final name always
  holds a complete file; at start-up, under the lock, migrate removes every such temporary file
  under DST_DIR that no process holds a lock on, whether or not its slide will be redone.
- Statuses: ``done`` (converted); ``skipped: identity`` (the profile maps to sRGB as identity:
  apply's marked copy with unchanged pixels still lands in DST_DIR, so the mirror is complete);
  ``skipped: already applied`` (the source carries svsicc's mark: it is copied byte for byte, as
  it already is what the archive should hold); ``skipped: no profile`` (nothing embedded and no
  --profile: nothing is written, so the gap is visible; a later run with --profile converts
  these); ``failed`` with the one-line reason (no output; retried by the next run).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from svsicc.archive.backends import (
    Backend,
    DaskBackend,
    InFlight,
    LocalBackend,
    NothingToDo,
    run_jobs,
    settled_records,
)
from svsicc.archive.discover import FoundSlide, discover
from svsicc.archive.journal import (
    FAILED,
    RUNNING,
    SKIP_NO_PROFILE,
    SKIPPED,
    Journal,
    SlideRecord,
    utc_now,
)
from svsicc.archive.lock import MigrationLock, remove_stale_temps_under
from svsicc.archive.options import (
    Colours,
    MigrateOptions,
    check_dirs,
    load_colours,
)
from svsicc.archive.resume import slides_to_do
from svsicc.archive.slide_job import SlideJob
from svsicc.archive.summary import (
    ArchiveProgress,
    MigrationReport,
    counted,
    human_bytes,
    write_summaries,
)
from svsicc.convert.engine import default_workers
from svsicc.convert.worker_signals import interrupts_deferred
from svsicc.exceptions import Interrupted, OutputError

# ------------------------------------------------------------------------------------- options


# ----------------------------------------------------------------------------------- discovery


# -------------------------------------------------------------------------------- worker side


# -------------------------------------------------------------------------------- coordinator


# ------------------------------------------------------------------------------------ progress


# ------------------------------------------------------------------------------------- the run


class MigrationInterrupted(Interrupted):
    """Ctrl-C or SIGTERM during a run: what stays in DST_DIR and what a rerun will do."""

    def __init__(self, dst: Path, finished: int, in_progress: int, not_started: int) -> None:
        self.dst, self.finished = dst, finished
        self.in_progress, self.not_started = in_progress, not_started
        super().__init__(self.one_line())

    def one_line(self, what: str = "interrupted") -> str:
        return (
            f"{what}; {counted(self.finished, 'slide')} finished in this run stay in "
            f"{self.dst} (in the journal), {counted(self.in_progress, 'slide')} in progress "
            f"removed, {counted(self.not_started, 'slide')} not started; run the same command "
            "again to resume"
        )


def run_migration(options: MigrateOptions, out: TextIO | None = None) -> MigrationReport:
    """Migrate SRC_DIR into DST_DIR (resuming what the journal says is unfinished)."""
    # sys.stdout when called, not when imported: a test's captured stream closes after it.
    out = sys.stdout if out is None else out
    src, dst = check_dirs(options)
    colours = load_colours(options)
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(dst, f"cannot create DST_DIR: {exc.strerror}") from None
    with MigrationLock(dst), Journal.open(dst) as journal:
        stale = remove_stale_temps_under(dst)
        found = discover(src, options.include, options.exclude, skip_dir=dst)
        previous = journal.records()
        todo, redo = slides_to_do(found, previous, dst, colours)
        todo.sort(key=lambda s: (-s.size, s.rel_path))
        jobs = [_job(s, dst, colours, options, redo.get(s.rel_path)) for s in todo]
        backend: Backend
        if not jobs:
            backend = NothingToDo()
        elif options.scheduler:
            backend = DaskBackend(options.scheduler, src, dst)
        else:
            wanted = options.workers if options.workers is not None else default_workers()
            backend = LocalBackend(max(1, min(wanted, len(jobs))))
        run_id = journal.start_run(src, options.settings())
        started, started_at = time.monotonic(), utc_now()
        if not options.quiet:
            print(
                f"svsicc migrate {src} -> {dst}: {counted(len(found), 'slide')}, {len(todo)} to do "
                f"({human_bytes(sum(s.size for s in todo))}), {len(found) - len(todo)} "
                f"finished earlier"
                + (f", {len(redo)} redone as their profile choice changed" if redo else "")
                + f"; {backend.name}",
                file=out,
                flush=True,
            )
        progress = ArchiveProgress(
            len(jobs),
            sum(j.size for j in jobs),
            enabled=not options.quiet and sys.stderr.isatty(),
            stream=sys.stderr,
        )
        records: list[SlideRecord] = []
        replacements: set[str] = set()
        in_hand: dict[str, tuple[SlideJob, float]] = {}  # rel path -> job, wall time started

        def start(job: SlideJob) -> None:
            in_hand[job.rel_path] = (job, time.time())
            journal.write(_running(job, run_id))

        def record_result(record: SlideRecord) -> SlideRecord:
            record = record.with_changes(run_id=run_id)
            with interrupts_deferred():  # journalled and counted, or neither
                journal.write(record)
                records.append(record)
            return record

        interrupted, closed = True, False
        in_flight: InFlight = {}
        try:
            for result in run_jobs(jobs, backend, start, progress.draw, in_flight):
                record = record_result(result)
                progress.add(record)
                replaced = record.profile_origin.partition(", replaces embedded ")[2]
                if replaced and replaced not in replacements and not options.quiet:
                    replacements.add(replaced)
                    progress.clear()
                    print(
                        f"svsicc: --profile {record.profile_description!r} replaces the embedded "
                        f"profile {replaced} (first seen in {record.path})",
                        file=sys.stderr,
                        flush=True,
                    )
                if record.status == FAILED:
                    progress.clear()
                    print(f"svsicc: failed: {record.detail}", file=sys.stderr, flush=True)
                progress.draw()
            interrupted = False
        except KeyboardInterrupt:
            with interrupts_deferred():
                progress.clear()
                # Stopped workers rename nothing more: what finished meanwhile is journalled;
                # what was cut short leaves a temporary file (swept below) or, when its worker
                # was stopped between the rename and its result, a copy no record names.
                backend.close(interrupted)
                closed = True
                for result in settled_records(in_flight):
                    record_result(result)
                finished = {r.path for r in records}
                cut_short = [job for path, job in in_hand.items() if path not in finished]
                for job, when in cut_short:
                    remove_unrecorded_output(Path(job.output), when)
            raise MigrationInterrupted(
                dst, len(finished), len(cut_short), len(jobs) - len(in_hand)
            ) from None
        finally:
            progress.clear()
            if not closed:
                backend.close(interrupted)
            # Workers that died or were stopped (a crash, an interrupt) leave temporary files.
            remove_stale_temps_under(dst)
            journal.finish_run(run_id, "interrupted" if interrupted else "finished")
        after = journal.records()
        report = MigrationReport(
            source_dir=src,
            destination_dir=dst,
            backend=backend.name,
            started_at=started_at,
            finished_at=utc_now(),
            seconds=time.monotonic() - started,
            found=len(found),
            finished_earlier=len(found) - len(todo),
            this_run=tuple(records),
            records=tuple(after.values()),
            stale_temps_removed=len(stale),
            redone=tuple(sorted(redo.items())),
            left_without_profile=sum(
                1
                for s in found
                if (r := after.get(s.rel_path)) is not None
                and r.status == SKIPPED
                and r.detail == SKIP_NO_PROFILE
            ),
        )
        write_summaries(report)
    return report


def _job(
    slide: FoundSlide, dst: Path, colours: Colours, options: MigrateOptions, redo: str | None
) -> SlideJob:
    return SlideJob(
        rel_path=slide.rel_path,
        source=str(slide.path),
        output=str(dst / slide.rel_path),
        size=slide.size,
        mtime_ns=slide.mtime_ns,
        profile=None if colours.profile is None else colours.profile.data,
        target=colours.target.data,
        intent=options.intent,
        fallback=None if colours.fallback is None else colours.fallback.data,
        verify=options.verify,
        redo=redo,
    )


def _running(job: SlideJob, run_id: int) -> SlideRecord:
    return job.record(RUNNING, started_at=utc_now(), run_id=run_id)


# ------------------------------------------------------------------------------------ summaries


# ------------------------------------------------------------------------------------- dry run


# ----------------------------------------------------------------------------------------- CLI


# Timestamps of some file systems are coarse (up to 2 s): a file written this run is never older.
_MTIME_SLACK_SECONDS = 2.0


def remove_unrecorded_output(output: Path, started: float) -> None:
    """Remove ``output`` if it was written since ``started`` (wall time): a worker stopped by an
    interrupt can have renamed its copy into place without its result ever reaching the journal,
    which still says "running"; the copy goes, as the interrupt message says, and a rerun redoes
    the slide. An older file (a copy from an earlier run being redone) is left alone."""
    with contextlib.suppress(OSError):
        if output.stat().st_mtime >= started - _MTIME_SLACK_SECONDS:
            if output.is_dir():  # a DICOM series' copy
                shutil.rmtree(output)
            else:
                output.unlink()
