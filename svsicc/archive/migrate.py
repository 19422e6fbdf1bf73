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
import csv
import fcntl
import fnmatch
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from svsicc import __version__
from svsicc.aperio.info import info_from_slide
from svsicc.aperio.marking import applied_record
from svsicc.aperio.slide import Page, Role, Slide, read_slide
from svsicc.archive.journal import (
    DONE,
    FAILED,
    JOURNAL_NAME,
    RECORD_FIELDS,
    RUNNING,
    SKIP_ALREADY_APPLIED,
    SKIP_IDENTITY,
    SKIP_NO_PROFILE,
    SKIPPED,
    Journal,
    SlideRecord,
    this_process,
    utc_now,
)
from svsicc.archive.resume import choice_change
from svsicc.check.verify import verify_before_commit
from svsicc.colour.transform import ColourTable, IccProfile, Intent
from svsicc.convert.apply import IDENTITY_TOLERANCE, ApplyResult, apply
from svsicc.convert.engine import PageJob, SegmentProcessor, SegmentTask, default_workers
from svsicc.convert.plan import ProfileChoice, find_embedded_profile
from svsicc.convert.worker_signals import interrupts_deferred, shield_worker
from svsicc.exceptions import Interrupted, OutputError, ProfileError, SvsiccError, TiffFormatError
from svsicc.tiff import file as tiff
from svsicc.tiff.output import TEMP_SUFFIX, TempOutput, output_error, remove_stale_temps, temp_name

LOCK_NAME = ".svsicc-migrate.lock"
# Exit codes besides 0 (all converted, or nothing needed converting) and 2 (a bad request):
# 1 when any slide failed in this run; else 4 when any slide found is still unconverted for
# lack of a profile (a pipeline must not take "skipped: no profile" for "converted").
EXIT_FAILED = 1
EXIT_LEFT_WITHOUT_PROFILE = 4
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
SLIDE_SUFFIXES = (".svs",)
TIFF_SUFFIXES = (".tif", ".tiff")
STATUS_ORDER = (
    DONE,
    f"{SKIPPED}: {SKIP_IDENTITY}",
    f"{SKIPPED}: {SKIP_ALREADY_APPLIED}",
    f"{SKIPPED}: {SKIP_NO_PROFILE}",
    FAILED,
    RUNNING,
)
_HASH_CHUNK = 8 * 1024 * 1024
_TEMP_PATTERN = re.compile(rf"^\.(?P<name>.+)\.\d+(?:\.[a-z]+)?{re.escape(TEMP_SUFFIX)}$")
# How often the coordinator redraws the progress line while it waits for slides.
_TICK_SECONDS = 0.5
# Tiles decoded, transformed and encoded to estimate the per-pixel cost in a dry run.
_ESTIMATE_TILES = 12


# ------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class MigrateOptions:
    source_dir: Path
    destination_dir: Path
    profile: str | None = None
    target: str | None = None
    intent: str | None = None
    workers: int | None = None
    fallback_profile: str | None = None
    verify: int | None = None  # sampled tiles per level checked before a copy lands
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    scheduler: str | None = None
    quiet: bool = False

    def settings(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "fallback_profile": self.fallback_profile,
            "target": self.target,
            "intent": self.intent,
            "workers": self.workers,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "scheduler": self.scheduler,
            "verify": self.verify,
        }


@dataclass(frozen=True)
class FoundSlide:
    """A slide discovered under SRC_DIR; ``rel_path`` uses POSIX separators."""

    rel_path: str
    path: Path
    size: int
    mtime_ns: int


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


@dataclass(frozen=True)
class _Colours:
    """The run's profile options, loaded once (the policy is :mod:`svsicc.convert.plan`'s)."""

    choice: ProfileChoice

    @property
    def profile(self) -> IccProfile | None:
        return self.choice.override

    @property
    def fallback(self) -> IccProfile | None:
        return self.choice.fallback

    @property
    def target(self) -> IccProfile:
        return self.choice.target_profile

    @property
    def intent(self) -> Intent | None:
        return self.choice.intent

    @property
    def chooses_for_unprofiled(self) -> bool:
        """Slides without an embedded profile get one (--profile or --fallback-profile)."""
        return self.choice.override is not None or self.choice.fallback is not None


def _load_colours(options: MigrateOptions) -> _Colours:
    return _Colours(
        ProfileChoice.load(
            options.profile, options.fallback_profile, options.target, options.intent
        )
    )


def _check_dirs(options: MigrateOptions) -> tuple[Path, Path]:
    src, dst = options.source_dir, options.destination_dir
    if not src.is_dir():
        raise SvsiccError(src, "{source_dir} is not a folder" if src.exists() else "no such folder")
    if dst.exists() and not dst.is_dir():
        raise OutputError(dst, "{destination_dir} exists and is not a folder")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_src == real_dst:
        raise OutputError(
            dst,
            "{destination_dir} is {source_dir}",
            hint="migrate writes copies: choose another {destination_dir}",
        )
    if real_src.is_relative_to(real_dst):
        raise OutputError(
            dst,
            "{source_dir} lies inside {destination_dir}; copies could land on originals",
            hint="choose a {destination_dir} outside {source_dir}",
        )
    return real_src, real_dst


# ----------------------------------------------------------------------------------- discovery


def matches(rel_path: str, patterns: Sequence[str]) -> bool:
    """Glob match on the path relative to SRC_DIR (``*`` crosses ``/``), or on the file name
    for a pattern without ``/``: ``--exclude '*.tif'``, ``--include 'lab1/*'``."""
    name = rel_path.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(rel_path, p) or ("/" not in p and fnmatch.fnmatchcase(name, p))
        for p in patterns
    )


def is_aperio_tiff(path: Path) -> bool:
    """Whether IFD 0's ImageDescription starts with "Aperio" (unreadable files: no)."""
    try:
        with tiff.TiffReader(path) as reader:
            description = reader.ascii(reader.structure.ifds[0], tiff.TAG_IMAGE_DESCRIPTION)
    except SvsiccError:
        return False
    return bool(description and description.startswith("Aperio"))


def discover(
    source_dir: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_dir: Path | None = None,
) -> list[FoundSlide]:
    """Slides under ``source_dir`` in path order: every ``.svs``, and ``.tif``/``.tiff`` files
    whose IFD 0 description starts with "Aperio". Hidden files (``._x.svs`` resource forks,
    temporary files) and ``skip_dir`` (DST_DIR inside SRC_DIR) are left out."""
    found: list[FoundSlide] = []
    skip = None if skip_dir is None else os.path.realpath(skip_dir)
    for dirpath, dirnames, filenames in os.walk(source_dir):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) != skip
        )
        for name in sorted(filenames):
            suffix = os.path.splitext(name)[1].lower()
            if name.startswith(".") or suffix not in SLIDE_SUFFIXES + TIFF_SUFFIXES:
                continue
            path = Path(dirpath, name)
            rel = path.relative_to(source_dir).as_posix()
            if include and not matches(rel, include):
                continue
            if exclude and matches(rel, exclude):
                continue
            try:
                st = path.stat()
            except OSError:
                continue  # vanished or a dangling link: nothing to migrate
            if suffix in TIFF_SUFFIXES and not is_aperio_tiff(path):
                continue
            found.append(FoundSlide(rel, path, st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda s: s.rel_path)


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
    return not output.is_file()


# -------------------------------------------------------------------------------- worker side


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def migrate_slide(job: SlideJob) -> SlideRecord:
    """Do one slide and say what happened; a bad slide returns a ``failed`` record (only
    interrupts propagate). Runs in a worker process, local or on a Dask worker."""
    started = time.perf_counter()
    base = SlideRecord(
        path=job.rel_path,
        source_path=job.source,
        output_path=job.output,
        size=job.size,
        mtime_ns=job.mtime_ns,
        status=RUNNING,
        started_at=utc_now(),
        worker=this_process(),
    )
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


def _migrate_slide(job: SlideJob, base: SlideRecord, timings: dict[str, float]) -> SlideRecord:
    source, output = Path(job.source), Path(job.output)
    with tiff.TiffReader(source) as reader:
        slide = read_slide(reader)
    info = info_from_slide(slide)
    if info.applied is not None:
        _make_folder(output.parent)
        t = time.perf_counter()
        digest, size = copy_as_is(source, output)
        timings["hash"] = time.perf_counter() - t
        return base.with_changes(
            status=SKIPPED,
            detail=SKIP_ALREADY_APPLIED,
            source_sha256=digest,
            output_sha256=digest,
            output_size=size,
            profile_description=info.applied.source_description,
            profile_sha256=info.applied.source_sha256,
            profile_origin=f"applied earlier ({info.applied.by})",
            intent=info.applied.intent,
        )
    t = time.perf_counter()
    source_sha = sha256_file(source)
    timings["hash"] = time.perf_counter() - t
    if job.profile is None and job.fallback is None and find_embedded_profile(slide) is None:
        if job.redo is not None:
            # A fresh run of this command writes nothing for it: neither does this one.
            with contextlib.suppress(FileNotFoundError):
                output.unlink()
        return base.with_changes(status=SKIPPED, detail=SKIP_NO_PROFILE, source_sha256=source_sha)
    _make_folder(output.parent)
    output_sha: list[str] = []
    verify_copy = None if job.verify is None else verify_before_commit(job.verify)

    def check_before_commit(temp: Path, result: ApplyResult) -> None:
        if verify_copy is not None:
            verify_copy(temp, result)  # raises VerificationError: the slide fails, no output
        # The copy must parse and carry the mark before it may take its final name.
        with tiff.TiffReader(temp) as written:
            if applied_record(read_slide(written).description) is None:
                raise OutputError(output, "the finished copy carries no applied mark")
        h = time.perf_counter()
        output_sha.append(sha256_file(temp))
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
                chunk = src.read(_HASH_CHUNK)
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


def worker_environment(source_dir: str, destination_dir: str) -> dict[str, object]:
    """What a Dask worker sees: run on every worker before any slide is handed out."""
    return {
        "version": __version__,
        "source": os.path.isdir(source_dir),
        "destination": os.path.isdir(destination_dir) and os.access(destination_dir, os.W_OK),
    }


# Local pool workers. A SIGTERM from the coordinator keeps its immediate death (see
# worker_signals): ProcessPoolExecutor relies on it to clear a broken pool, and a worker that
# unwound instead could block forever on a queue lock left dirty. Whoever ends a worker removes
# its temporary file afterwards (the coordinator sweeps DST_DIR for temporary files nobody holds
# locked); an orphan removes its own.
_slide_in_hand: list[Path] = []


def _local_worker_init(parent: int) -> None:
    # Ctrl-C and a batch system's SIGTERM reach the whole process group; the coordinator decides
    # what happens (it terminates the slides in hand itself).
    shield_worker(parent)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Exit when the coordinator is gone (kill -9): an orphan must not finish a slide the
    journal will redo, nor leave its temporary file behind."""
    while os.getppid() == parent:
        time.sleep(0.2)
    for output in list(_slide_in_hand):
        # The main thread cannot rename a file that no longer exists, so no output lands.
        with contextlib.suppress(OSError):
            os.unlink(temp_name(output))
    os._exit(1)


def _local_migrate_slide(job: SlideJob) -> SlideRecord:
    _slide_in_hand.append(Path(job.output))
    try:
        return migrate_slide(job)
    finally:
        _slide_in_hand.clear()


# -------------------------------------------------------------------------------- coordinator


class _Backend:
    """Where slides run: a concurrent.futures executor plus how to recover from a dead pool."""

    name = ""
    capacity = 1
    can_break = False

    def submit(self, job: SlideJob) -> Future[SlideRecord]:
        raise NotImplementedError

    def restart(self) -> None:
        """Replace a broken pool."""

    def close(self, interrupted: bool) -> None:
        raise NotImplementedError


class _NothingToDo(_Backend):
    name = "no workers (nothing to do)"

    def close(self, interrupted: bool) -> None:
        pass


class LocalBackend(_Backend):
    can_break = True

    def __init__(self, workers: int) -> None:
        self.capacity = max(1, workers)
        self.name = f"{self.capacity} local worker process{'es' if self.capacity > 1 else ''}"
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        import multiprocessing

        return ProcessPoolExecutor(
            self.capacity,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_local_worker_init,
            initargs=(os.getpid(),),
        )

    def submit(self, job: SlideJob) -> Future[SlideRecord]:
        try:
            return self._executor.submit(_local_migrate_slide, job)
        except BrokenProcessPool:
            # A worker died while no slide was in flight to report it.
            self.restart()
            return self._executor.submit(_local_migrate_slide, job)

    def restart(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()

    def close(self, interrupted: bool) -> None:
        if interrupted:
            # Stop the slides in hand now; the coordinator then removes their temporary files.
            processes = getattr(self._executor, "_processes", None) or {}
            for process in list(processes.values()):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    process.terminate()
        self._executor.shutdown(wait=True, cancel_futures=True)


class DaskBackend(_Backend):
    def __init__(self, address: str, source_dir: Path, destination_dir: Path) -> None:
        try:
            # Typed as Any: distributed ships no annotations mypy can use.
            distributed: Any = importlib.import_module("distributed")
        except ImportError:
            raise SvsiccError(None, "{scheduler} needs Dask: pip install 'svsicc[dask]'") from None
        try:
            self._client: Any = distributed.Client(address, timeout="15s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SvsiccError(
                None, f"cannot reach the Dask scheduler at {address}: {exc}"
            ) from None
        try:
            threads = self._client.nthreads()
            if not threads:
                raise SvsiccError(None, f"the Dask scheduler at {address} has no workers")
            self._check_workers(source_dir, destination_dir)
        except BaseException:
            self._client.close()
            raise
        self.capacity = 2 * sum(threads.values())  # a queued slide per thread keeps them busy
        self.name = f"Dask at {address} ({len(threads)} workers, {sum(threads.values())} threads)"
        self._executor: Executor = self._client.get_executor(pure=False)

    def _check_workers(self, source_dir: Path, destination_dir: Path) -> None:
        seen = self._client.run(worker_environment, str(source_dir), str(destination_dir))
        for worker, env in sorted(seen.items()):
            if env["version"] != __version__:
                raise SvsiccError(
                    None,
                    f"Dask worker {worker} runs svsicc {env['version']}, this is {__version__}",
                    hint="install the same svsicc on every worker",
                )
            for key, path in (("source", source_dir), ("destination", destination_dir)):
                if not env[key]:
                    raise SvsiccError(
                        path,
                        f"Dask worker {worker} cannot "
                        + ("see" if key == "source" else "write to")
                        + " this folder",
                        hint="workers need the same paths as the coordinating machine",
                    )

    def submit(self, job: SlideJob) -> Future[SlideRecord]:
        return self._executor.submit(migrate_slide, job)

    def close(self, interrupted: bool) -> None:
        # Tasks already running on workers finish (Dask cannot stop them); their outputs land
        # complete, and the journal, which still says "running", makes a resume redo them.
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False)
        self._client.close()


def _failed(job: SlideJob, reason: str) -> SlideRecord:
    return SlideRecord(
        path=job.rel_path,
        source_path=job.source,
        output_path=job.output,
        size=job.size,
        mtime_ns=job.mtime_ns,
        status=FAILED,
        detail=f"{job.source}: {reason}",
        finished_at=utc_now(),
    )


InFlight = dict["Future[SlideRecord]", tuple[SlideJob, bool]]


def run_jobs(
    jobs: Iterable[SlideJob],
    backend: _Backend,
    on_start: Callable[[SlideJob], None],
    on_tick: Callable[[], None] = lambda: None,
    in_flight: InFlight | None = None,
) -> Iterator[SlideRecord]:
    """Yield one record per job as slides finish, at most ``backend.capacity`` at a time.

    When a local worker dies (segfault, out-of-memory kill), every slide in flight is suspect:
    the pool is replaced and each suspect is retried alone; one that kills a pool on its own
    fails with that reason, the others go on as if nothing happened. ``in_flight`` (the
    caller's, filled here) lets an interrupted caller collect the slides that finished but were
    not yet yielded (:func:`settled_records`).
    """
    pending = deque(jobs)
    suspects: deque[SlideJob] = deque()
    in_flight = {} if in_flight is None else in_flight
    while pending or suspects or in_flight:
        while suspects and not in_flight:
            job = suspects.popleft()
            on_start(job)
            in_flight[backend.submit(job)] = (job, True)
        while not suspects and pending and len(in_flight) < backend.capacity:
            job = pending.popleft()
            on_start(job)
            in_flight[backend.submit(job)] = (job, False)
        done, _ = wait(list(in_flight), timeout=_TICK_SECONDS, return_when=FIRST_COMPLETED)
        on_tick()
        broken = False
        for future in done:
            job, alone = in_flight.pop(future)
            try:
                record = future.result()
            except BrokenProcessPool:
                broken = True
                if not alone:
                    suspects.append(job)
                    continue
                record = _failed(job, "the worker process died (crash or out of memory)")
            except Exception as exc:  # a Dask task lost with its worker, a pickling error...
                record = _failed(job, f"the task failed: {type(exc).__name__}: {exc}")
            yield record
        if broken and backend.can_break:
            for job, alone in in_flight.values():
                if alone:
                    yield _failed(job, "the worker process died (crash or out of memory)")
                else:
                    suspects.append(job)
            in_flight.clear()
            backend.restart()


def settled_records(in_flight: InFlight) -> list[SlideRecord]:
    """The records of slides whose worker finished (its output renamed into place) but whose
    result was not yet taken; call once the backend is closed, so every future is settled."""
    records = []
    for future in in_flight:
        if future.done() and not future.cancelled() and future.exception() is None:
            records.append(future.result())
    return records


class MigrationLock:
    """An exclusive ``flock`` on DST_DIR/.svsicc-migrate.lock; the kernel drops it with the
    process (kill -9 included). The file says who holds it, for the refusal message."""

    def __init__(self, dst_dir: Path) -> None:
        self.path = dst_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> MigrationLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(self.path, f"cannot create the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise OutputError(
                self.path.parent,
                f"another svsicc migrate is running on this folder ({holder})",
                hint="wait for it to finish; the lock is released when that process ends",
            ) from None
        os.ftruncate(fd, 0)
        holder = f"held by pid {os.getpid()} on host {socket.gethostname()} since {utc_now()}"
        os.pwrite(fd, f"{holder}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (deleting it would race)
            self._fd = None


def remove_stale_temps_under(dst_dir: Path) -> list[Path]:
    """Remove the temporary files nobody holds a lock on anywhere under DST_DIR: those of slides
    that will be redone and of slides that will not (finished, excluded, or gone)."""
    removed: list[Path] = []
    destinations: set[Path] = set()
    for dirpath, _dirnames, filenames in os.walk(dst_dir):
        for name in filenames:
            match = _TEMP_PATTERN.match(name)
            if match:
                destinations.add(Path(dirpath, match.group("name")))
    for destination in sorted(destinations):
        removed += remove_stale_temps(destination)
    return removed


# ------------------------------------------------------------------------------------ progress


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


def human_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


class ArchiveProgress:
    """One line across the archive: slides done/total, bytes, GB/s, ETA (by bytes), failures.
    Drawn only on a terminal, only once the run has lasted a couple of seconds."""

    SHOW_AFTER = 2.0

    def __init__(self, slides: int, total_bytes: int, enabled: bool, stream: TextIO) -> None:
        self.slides, self.total_bytes = slides, total_bytes
        self.done = self.done_bytes = self.failed = 0
        self.enabled, self.stream = enabled, stream
        self.started = time.monotonic()
        self._drawn = False

    def add(self, record: SlideRecord) -> None:
        self.done += 1
        self.done_bytes += record.size
        self.failed += record.status == FAILED

    def draw(self) -> None:
        elapsed = time.monotonic() - self.started
        if not self.enabled or elapsed < self.SHOW_AFTER:
            return
        rate = self.done_bytes / elapsed
        eta = (self.total_bytes - self.done_bytes) / rate if rate > 0 else 0.0
        text = (
            f"svsicc migrate {self.done}/{self.slides} slides, "
            f"{human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)}, "
            f"{human_bytes(rate)}/s, ETA {_duration(eta) if rate > 0 else '?'}, "
            f"{self.failed} failed"
        )
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r" + text[:width] + "\033[K")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Wipe the line (before printing something else, and at the end)."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False


# ------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class MigrationReport:
    source_dir: Path
    destination_dir: Path
    backend: str
    started_at: str
    finished_at: str
    seconds: float
    found: int
    finished_earlier: int
    this_run: tuple[SlideRecord, ...]
    records: tuple[SlideRecord, ...]  # the journal's every row after the run
    stale_temps_removed: int
    redone: tuple[tuple[str, str], ...] = ()  # (path, why) of slides redone as choices changed
    # Slides found by this run whose journal row says "skipped: no profile", this run's or not.
    left_without_profile: int = 0

    @property
    def failed(self) -> int:
        return sum(1 for r in self.this_run if r.status == FAILED)

    @property
    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAILED
        return EXIT_LEFT_WITHOUT_PROFILE if self.left_without_profile else 0

    def to_dict(self) -> dict[str, object]:
        return {
            "svsicc_version": __version__,
            "source_dir": str(self.source_dir),
            "destination_dir": str(self.destination_dir),
            "journal": str(self.destination_dir / JOURNAL_NAME),
            "run": {
                "backend": self.backend,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "seconds": round(self.seconds, 3),
                "slides_found": self.found,
                "finished_earlier": self.finished_earlier,
                "processed": len(self.this_run),
                "input_bytes": sum(r.size for r in self.this_run),
                "stale_temps_removed": self.stale_temps_removed,
                "redone": [{"path": path, "why": why} for path, why in self.redone],
                "left_without_profile": self.left_without_profile,
                "exit_code": self.exit_code,
                "statuses": dict(Counter(r.display_status for r in self.this_run)),
            },
            "statuses": dict(Counter(r.display_status for r in self.records)),
            "slides": [r.to_dict() for r in self.records],
        }


class MigrationInterrupted(Interrupted):
    """Ctrl-C or SIGTERM during a run: what stays in DST_DIR and what a rerun will do."""

    def __init__(self, dst: Path, finished: int, in_progress: int, not_started: int) -> None:
        self.dst, self.finished = dst, finished
        self.in_progress, self.not_started = in_progress, not_started
        super().__init__(self.one_line())

    def one_line(self, what: str = "interrupted") -> str:
        return (
            f"{what}; {_count(self.finished, 'slide')} finished in this run stay in "
            f"{self.dst} (in the journal), {_count(self.in_progress, 'slide')} in progress "
            f"removed, {_count(self.not_started, 'slide')} not started; run the same command "
            "again to resume"
        )


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run_migration(options: MigrateOptions, out: TextIO = sys.stdout) -> MigrationReport:
    """Migrate SRC_DIR into DST_DIR (resuming what the journal says is unfinished)."""
    src, dst = _check_dirs(options)
    colours = _load_colours(options)
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(dst, f"cannot create DST_DIR: {exc.strerror}") from None
    with MigrationLock(dst), Journal.open(dst) as journal:
        stale = remove_stale_temps_under(dst)
        found = discover(src, options.include, options.exclude, skip_dir=dst)
        previous = journal.records()
        todo, redo = _to_do(found, previous, dst, colours)
        todo.sort(key=lambda s: (-s.size, s.rel_path))
        jobs = [_job(s, dst, colours, options, redo.get(s.rel_path)) for s in todo]
        backend: _Backend
        if not jobs:
            backend = _NothingToDo()
        elif options.scheduler:
            backend = DaskBackend(options.scheduler, src, dst)
        else:
            wanted = options.workers if options.workers is not None else default_workers()
            backend = LocalBackend(max(1, min(wanted, len(jobs))))
        run_id = journal.start_run(src, options.settings())
        started, started_at = time.monotonic(), utc_now()
        if not options.quiet:
            print(
                f"svsicc migrate {src} -> {dst}: {_count(len(found), 'slide')}, {len(todo)} to do "
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
        started_paths: set[str] = set()

        def start(job: SlideJob) -> None:
            started_paths.add(job.rel_path)
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
                # Stopped workers rename nothing more: what finished meanwhile is journalled,
                # what was cut short leaves only a temporary file (removed below).
                backend.close(interrupted)
                closed = True
                for result in settled_records(in_flight):
                    record_result(result)
            finished = {r.path for r in records}
            raise MigrationInterrupted(
                dst, len(finished), len(started_paths - finished), len(jobs) - len(started_paths)
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


def _to_do(
    found: list[FoundSlide], previous: dict[str, SlideRecord], dst: Path, colours: _Colours
) -> tuple[list[FoundSlide], dict[str, str]]:
    """The slides this run must (re)do, and why each finished one is redone (its profile,
    target or intent chosen now differs from the journal's: svsicc.archive.resume)."""
    todo: list[FoundSlide] = []
    redo: dict[str, str] = {}
    for slide in found:
        record, output = previous.get(slide.rel_path), dst / slide.rel_path
        if needs_work(record, slide, output, colours.chooses_for_unprofiled):
            todo.append(slide)
            continue
        assert record is not None
        reason = choice_change(record, slide.path, output, colours.choice)
        if reason is not None:
            redo[slide.rel_path] = reason
            todo.append(slide)
    return todo, redo


def _job(
    slide: FoundSlide, dst: Path, colours: _Colours, options: MigrateOptions, redo: str | None
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
    return SlideRecord(
        path=job.rel_path,
        source_path=job.source,
        output_path=job.output,
        size=job.size,
        mtime_ns=job.mtime_ns,
        status=RUNNING,
        started_at=utc_now(),
        run_id=run_id,
    )


# ------------------------------------------------------------------------------------ summaries


def write_summaries(report: MigrationReport) -> None:
    """summary.csv (one row per slide in the journal) and summary.json, each renamed into place."""
    dst = report.destination_dir
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("display_status", *RECORD_FIELDS))
    for record in report.records:
        writer.writerow((record.display_status, *(getattr(record, f) for f in RECORD_FIELDS)))
    _write_atomically(dst / SUMMARY_CSV, text.getvalue())
    _write_atomically(dst / SUMMARY_JSON, json.dumps(report.to_dict(), indent=2) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    # Through a locked temporary file like a slide's, so no other run takes it for stale.
    with TempOutput(path) as out:
        assert out.file is not None
        try:
            out.file.write(text.encode("utf-8"))
        except OSError as exc:
            raise output_error(path, exc) from None
        out.commit()


def format_summary(report: MigrationReport, attention_limit: int = 100) -> str:
    """The table printed at the end: the archive's state per status (this run's share beside
    it), then every slide that needs someone's attention (failed, no profile)."""
    by_status: dict[str, list[SlideRecord]] = {}
    for record in report.records:
        by_status.setdefault(record.display_status, []).append(record)
    this_run = Counter(r.display_status for r in report.this_run)
    rate = sum(r.size for r in report.this_run) / report.seconds if report.seconds > 0 else 0.0
    # No "svsicc migrate SRC -> DST" header: the run's first line already said it.
    lines = [
        f"this run: {len(report.this_run)} slides in {report.seconds:.1f} s "
        f"({human_bytes(rate)}/s) on {report.backend}; {report.finished_earlier} finished "
        f"earlier, not redone"
        + (
            f"; {report.stale_temps_removed} stale temporary files removed"
            if report.stale_temps_removed
            else ""
        )
        + (
            f"; {len(report.redone)} redone as the profile, target or intent chosen changed"
            if report.redone
            else ""
        ),
        "",
        f"{'status':<26} {'slides':>7} {'this run':>9} {'input':>11} {'output':>11} {'seconds':>9}",
    ]
    statuses = [s for s in STATUS_ORDER if s in by_status] + sorted(
        s for s in by_status if s not in STATUS_ORDER
    )
    for status in statuses:
        rows = by_status[status]
        written = sum(r.output_size for r in rows)
        lines.append(
            f"{status:<26} {len(rows):>7} {this_run.get(status, 0):>9} "
            f"{human_bytes(sum(r.size for r in rows)):>11} "
            f"{human_bytes(written) if written else '-':>11} "
            f"{sum(r.seconds for r in rows):>9.1f}"
        )
    lines.append(
        f"{'total':<26} {len(report.records):>7} {len(report.this_run):>9} "
        f"{human_bytes(sum(r.size for r in report.records)):>11} "
        f"{human_bytes(sum(r.output_size for r in report.records)):>11} "
        f"{sum(r.seconds for r in report.records):>9.1f}"
    )
    if report.redone:
        lines += ["", "redone (choice changed since they were finished):"]
        lines += [f"  {path}: {why}" for path, why in report.redone[:attention_limit]]
        if len(report.redone) > attention_limit:
            lines.append(f"  ... and {len(report.redone) - attention_limit} more")
    attention = [
        r
        for r in report.records
        if r.status == FAILED or (r.status == SKIPPED and r.detail == SKIP_NO_PROFILE)
    ]
    if attention:
        lines += ["", "needs attention:"]
        for r in attention[:attention_limit]:
            why = r.detail if r.status == FAILED else "pass --profile ICC to convert it"
            lines.append(f"  {r.display_status:<20} {r.path}: {why}")
        if len(attention) > attention_limit:
            lines.append(f"  ... and {len(attention) - attention_limit} more in {SUMMARY_CSV}")
    if report.exit_code == EXIT_LEFT_WITHOUT_PROFILE:
        lines.append(
            f"exit {EXIT_LEFT_WITHOUT_PROFILE}: {_count(report.left_without_profile, 'slide')} "
            "left unconverted for lack of a profile"
        )
    dst = report.destination_dir
    lines += ["", f"journal {dst / JOURNAL_NAME}; summaries {dst / SUMMARY_CSV}, {SUMMARY_JSON}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- dry run


@dataclass(frozen=True)
class ProfileSeen:
    description: str
    sha256: str
    count: int
    outcome: str  # "convert", "identity", or "unusable: why"


@dataclass(frozen=True)
class Estimate:
    seconds: float
    workers: int
    basis: str


@dataclass(frozen=True)
class MigrationPlan:
    source_dir: Path
    destination_dir: Path
    slides: int
    total_bytes: int
    to_convert: int
    convert_bytes: int
    identity: int
    already_applied: int
    without_profile: int
    without_profile_converted: bool  # --profile given: they are converted too
    finished_earlier: int
    unreadable: tuple[tuple[str, str], ...]
    profiles: tuple[ProfileSeen, ...]
    override: str | None
    estimate: Estimate | None
    to_do: int
    to_do_bytes: int
    redone: tuple[tuple[str, str], ...] = ()  # finished slides whose choice changed, and why
    fallback: str | None = None
    # What this run would do with its slides: kind ("convert", "identity", ...) -> count.
    to_do_kinds: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "source_dir": str(self.source_dir),
            "destination_dir": str(self.destination_dir),
            "slides": self.slides,
            "total_bytes": self.total_bytes,
            "to_convert": self.to_convert,
            "convert_bytes": self.convert_bytes,
            "identity": self.identity,
            "already_applied": self.already_applied,
            "without_profile": self.without_profile,
            "without_profile_converted": self.without_profile_converted,
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "finished_earlier": self.finished_earlier,
            "to_do": self.to_do,
            "to_do_bytes": self.to_do_bytes,
            "to_do_kinds": dict(self.to_do_kinds),
            "profiles": [p.__dict__ for p in self.profiles],
            "profile_override": self.override,
            "fallback_profile": self.fallback,
            "redone": [{"path": path, "why": why} for path, why in self.redone],
            "estimate": None if self.estimate is None else self.estimate.__dict__,
        }


@dataclass(frozen=True)
class _Classified:
    found: FoundSlide
    slide: Slide | None
    kind: str  # "convert", "identity", "applied", "no profile", "unreadable"
    reason: str = ""


def plan_migration(options: MigrateOptions) -> MigrationPlan:
    """What ``run_migration`` would do, reading only the slides' IFDs (and a few tiles of one
    slide per compression for the time estimate). Nothing is written."""
    src, dst = _check_dirs(options)
    colours = _load_colours(options)
    found = discover(src, options.include, options.exclude, skip_dir=dst)
    journal = Journal.open_read_only(dst) if dst.is_dir() else None
    previous = {} if journal is None else journal.records()
    if journal is not None:
        journal.close()
    profiles: Counter[tuple[str, str]] = Counter()
    outcomes: dict[str, str] = {}  # profile sha256 -> convert / identity / unusable
    tables: dict[str, ColourTable] = {}
    classified: list[_Classified] = []
    for slide_found in found:
        try:
            with tiff.TiffReader(slide_found.path) as reader:
                slide = read_slide(reader)
            info = info_from_slide(slide)
            if not slide.is_aperio:
                raise SvsiccError(slide_found.path, "not an Aperio slide")
        except SvsiccError as exc:
            classified.append(_Classified(slide_found, None, "unreadable", exc.one_line()))
            continue
        if info.applied is not None:
            classified.append(_Classified(slide_found, slide, "applied"))
            continue
        embedded = find_embedded_profile(slide)
        if embedded is not None:
            try:
                seen = IccProfile.from_bytes(embedded[0], f"{slide_found.path}: tag 34675")
                profiles[(seen.description, seen.sha256)] += 1
            except ProfileError as exc:
                if colours.profile is None:
                    classified.append(_Classified(slide_found, None, "unreadable", exc.one_line()))
                    continue
                seen = None
        else:
            profiles[("(none)", "")] += 1
            seen = None
        effective = colours.profile or seen or colours.fallback
        if effective is None:
            classified.append(_Classified(slide_found, slide, "no profile"))
            continue
        outcome = outcomes.get(effective.sha256)
        if outcome is None:
            outcome = _profile_outcome(effective, colours, tables)
            outcomes[effective.sha256] = outcome
        kind = {"convert": "convert", "identity": "identity"}.get(outcome, "unreadable")
        classified.append(_Classified(slide_found, slide, kind, outcome))
    profile_rows = tuple(
        ProfileSeen(desc, sha, count, outcomes.get(sha, "no profile" if not sha else "convert"))
        for (desc, sha), count in sorted(profiles.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    if colours.profile is not None:
        # Every slide uses the override: the table of embedded profiles is informative only.
        profile_rows = tuple(
            ProfileSeen(p.description, p.sha256, p.count, "overridden by --profile")
            for p in profile_rows
        )
    profile_given = colours.chooses_for_unprofiled
    to_do, redo = _to_do([c.found for c in classified], previous, dst, colours)
    todo_paths = {s.rel_path for s in to_do}
    todo = [c for c in classified if c.found.rel_path in todo_paths]
    workers = _planned_workers(options, len(todo))
    estimate = _estimate(todo, colours, tables, workers)
    counts = Counter(c.kind for c in classified)
    return MigrationPlan(
        source_dir=src,
        destination_dir=dst,
        slides=len(found),
        total_bytes=sum(s.size for s in found),
        to_convert=counts["convert"],
        convert_bytes=sum(c.found.size for c in classified if c.kind == "convert"),
        identity=counts["identity"],
        already_applied=counts["applied"],
        without_profile=profiles[("(none)", "")],
        without_profile_converted=profile_given,
        finished_earlier=len(found) - len(todo),
        unreadable=tuple(
            (c.found.rel_path, c.reason) for c in classified if c.kind == "unreadable"
        ),
        profiles=profile_rows,
        override=None
        if colours.profile is None
        else f"{colours.profile.description} ({colours.profile.sha256[:12]})",
        estimate=estimate,
        to_do=len(todo),
        to_do_bytes=sum(c.found.size for c in todo),
        redone=tuple(sorted(redo.items())),
        fallback=None
        if colours.fallback is None
        else f"{colours.fallback.description} ({colours.fallback.sha256[:12]})",
        to_do_kinds=tuple(
            (kind, n) for kind in _KIND_LABELS if (n := sum(1 for c in todo if c.kind == kind))
        ),
    )


def _planned_workers(options: MigrateOptions, slides: int) -> int:
    if options.scheduler:
        return 0  # unknown without asking the cluster; the estimate is then CPU-seconds
    wanted = options.workers if options.workers is not None else default_workers()
    return max(1, min(wanted, slides or 1))


def _profile_outcome(profile: IccProfile, colours: _Colours, tables: dict[str, ColourTable]) -> str:
    """Whether ``profile`` maps to the target as identity, as apply decides it: "identity",
    "convert", or "unusable: why"."""
    intent = colours.intent or profile.default_intent
    if profile.sha256 == colours.target.sha256:
        return "identity"
    try:
        table = ColourTable.load_or_build(profile, colours.target, intent)
    except (SvsiccError, OSError, ValueError) as exc:
        return f"unusable: {exc}"
    tables[profile.sha256] = table
    return "identity" if table.max_deviation_from_identity() <= IDENTITY_TOLERANCE else "convert"


def _rewritten_pages(slide: Slide) -> list[Page]:
    return [p for p in slide.pages if p.role in (Role.LEVEL, Role.THUMBNAIL)]


def _pixels_to_rewrite(slide: Slide) -> int:
    return sum(
        p.segment_width * p.segment_height * sum(1 for c in p.byte_counts if c)
        for p in _rewritten_pages(slide)
    )


def measure_seconds_per_pixel(
    slide: Slide, table: ColourTable, tiles: int = _ESTIMATE_TILES
) -> tuple[float, int]:
    """Decode + transform + encode ``tiles`` level-0 tiles spread over the slide, as a worker
    would; return seconds per pixel and the number of tiles timed."""
    page = slide.pages[0]
    processor = SegmentProcessor(slide.path, [PageJob.for_page(page)], table)
    present = [i for i, count in enumerate(page.byte_counts) if count]
    chosen = present[:: max(1, len(present) // tiles)][:tiles]
    samples = []
    with tiff.TiffReader(slide.path) as reader:
        for i in chosen:
            task = SegmentTask.for_segment(page, i)
            samples.append((task, reader.read(task.offset, task.count, "tile", ifd=page.index)))
    processor.process(*samples[0])  # warm-up: codec set-up, first touch of the table
    started = time.perf_counter()
    for task, data in samples:
        processor.process(task, data)
    elapsed = time.perf_counter() - started
    return elapsed / sum(t.rows * t.cols for t, _ in samples), len(samples)


def _per_slide_overhead(table: ColourTable | None) -> float:
    """What apply spends per slide before any tile: loading the cached table and checking it
    for identity (apply does both for every slide)."""
    if table is None or table.file is None:
        return 0.0
    started = time.perf_counter()
    try:
        ColourTable.from_file(table.file).max_deviation_from_identity()
    except (OSError, ValueError):
        return 0.0
    return time.perf_counter() - started


def _hash_rate() -> float:
    data = bytes(32 * 1024 * 1024)
    started = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / max(1e-9, time.perf_counter() - started)


def _estimate(
    todo: list[_Classified], colours: _Colours, tables: dict[str, ColourTable], workers: int
) -> Estimate | None:
    convert = [c for c in todo if c.kind == "convert" and c.slide is not None]
    by_compression: dict[int, list[_Classified]] = {}
    for c in convert:
        assert c.slide is not None
        by_compression.setdefault(c.slide.pages[0].compression, []).append(c)
    cpu = 0.0
    basis = []
    for compression, group in sorted(by_compression.items()):
        measured = None
        for c in sorted(group, key=lambda c: -c.found.size):  # the largest that can be measured
            assert c.slide is not None
            table = _table_for(c.slide, colours, tables)
            if table is None:
                continue
            try:
                measured = measure_seconds_per_pixel(c.slide, table)
            except (SvsiccError, OSError):
                continue
            name = c.slide.pages[0].compression_name
            tiles = f"{measured[1]} tile{'' if measured[1] == 1 else 's'}"
            basis.append(
                f"{'uncompressed' if name == 'none' else name}: {tiles} of {c.found.rel_path}"
                f" at {measured[0] * 1e6:.3f} s/Mpixel"
            )
            break
        if measured is None:
            basis.append(f"compression {compression}: no slide could be measured")
            continue
        cpu += measured[0] * sum(_pixels_to_rewrite(c.slide) for c in group if c.slide)
    if not todo:
        return Estimate(0.0, workers, "nothing to do")
    applied = [c for c in todo if c.kind in ("convert", "identity")]
    overhead = _per_slide_overhead(next(iter(tables.values()), None))
    if applied and overhead:
        cpu += overhead * len(applied)
        basis.append(f"{overhead:.2f} s per slide to load its colour table")
    hashed = sum(c.found.size * (1 if c.kind == "no profile" else 2) for c in todo)
    rate = _hash_rate()
    cpu += hashed / rate
    basis.append(f"sha256 of inputs and outputs at {rate / 1e9:.2f} GB/s")
    seconds = cpu / workers if workers else cpu
    note = "; disk and network time not included"
    if not workers:
        note += "; CPU-seconds, divide by the cluster's threads"
    return Estimate(round(seconds, 3), workers, "; ".join(basis) + note)


def _table_for(
    slide: Slide, colours: _Colours, tables: dict[str, ColourTable]
) -> ColourTable | None:
    if colours.profile is not None:
        return tables.get(colours.profile.sha256)
    embedded = find_embedded_profile(slide)
    if embedded is None:
        return None
    with contextlib.suppress(ProfileError):
        return tables.get(IccProfile.from_bytes(embedded[0]).sha256)
    return None


# The dry run's kinds of slide, in the order it lists them, with what happens to them.
_KIND_LABELS = {
    "convert": "to convert",
    "identity": "identity",
    "applied": "already applied",
    "no profile": "without a profile",
    "unreadable": "unreadable",
}


def format_plan(plan: MigrationPlan) -> str:
    def row(label: str, count: int, note: str) -> str:
        return f"  {label:<22} {count:>7}  {note}"

    no_profile = (
        "converted with --profile or --fallback-profile"
        if plan.without_profile_converted
        else "skipped: nothing written (pass --profile ICC or --fallback-profile ICC)"
    )
    kinds = ", ".join(f"{_KIND_LABELS[k]} {n}" for k, n in plan.to_do_kinds) or "nothing"
    # The first block counts every slide found; the run leaves out those the journal says are
    # finished, so its line says how its slides split into the same kinds.
    lines = [
        f"svsicc migrate --dry-run {plan.source_dir} -> {plan.destination_dir}",
        row("slides found", plan.slides, human_bytes(plan.total_bytes)),
        row("  to convert", plan.to_convert, human_bytes(plan.convert_bytes)),
        row("  identity", plan.identity, "profile maps to sRGB unchanged: marked copy"),
        row("  already applied", plan.already_applied, "copied as they are"),
        row("  without a profile", plan.without_profile, no_profile),
        row("  unreadable", len(plan.unreadable), "will fail"),
        row("finished earlier", plan.finished_earlier, "in the journal: not redone"),
        row("to do in this run", plan.to_do, f"{human_bytes(plan.to_do_bytes)}: {kinds}"),
        "profiles seen (embedded):",
        f"  {'slides':>6}  {'description':<32} {'sha256':<12}  outcome",
    ]
    for p in plan.profiles:
        lines.append(f"  {p.count:>6}  {p.description[:32]:<32} {p.sha256[:12]:<12}  {p.outcome}")
    if plan.override:
        lines.append(f"--profile for every slide: {plan.override}")
    if plan.fallback:
        lines.append(f"--fallback-profile for slides without one: {plan.fallback}")
    for path, why in plan.redone:
        lines.append(f"redone as the choice changed: {path}: {why}")
    for path, reason in plan.unreadable:
        lines.append(f"unreadable: {path}: {reason}")
    if plan.estimate is not None:
        e = plan.estimate
        who = f"{e.workers} worker{'s' if e.workers != 1 else ''}" if e.workers else "1 thread"
        lines.append(f"estimated time: {_duration(e.seconds)} ({e.seconds:.1f} s) with {who}")
        lines.append(f"  measured: {e.basis}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- CLI
