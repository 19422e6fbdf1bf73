"""Where slides run: local worker processes or a Dask cluster, and the loop that feeds them."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svsicc.archive.journal import (
    FAILED,
    SlideRecord,
    utc_now,
)
from svsicc.archive.slide_job import SlideJob, migrate_slide
from svsicc.convert.worker_signals import shield_worker
from svsicc.exceptions import SvsiccError
from svsicc.tiff.output import temp_name
from svsicc.version import __version__

# How often the coordinator redraws the progress line while it waits for slides.
_TICK_SECONDS = 0.5


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
@dataclass
class LocalWorkerContext:
    """A local worker process's state: the output of the slide in hand, whose temporary file an
    orphaned worker removes before it exits."""

    slide_in_hand: Path | None = None


_local_worker = LocalWorkerContext()  # this process's, when it is a local migrate worker


def _local_worker_init(parent: int) -> None:
    # Ctrl-C and a batch system's SIGTERM reach the whole process group; the coordinator decides
    # what happens (it terminates the slides in hand itself).
    shield_worker(parent)
    threading.Thread(target=_watch_parent, args=(parent, _local_worker), daemon=True).start()


def _watch_parent(parent: int, context: LocalWorkerContext) -> None:
    """Exit when the coordinator is gone (kill -9): an orphan must not finish a slide the
    journal will redo, nor leave its temporary file behind."""
    while os.getppid() == parent:
        time.sleep(0.2)
    if (output := context.slide_in_hand) is not None:
        # The main thread cannot rename a file that no longer exists, so no output lands.
        with contextlib.suppress(OSError):
            os.unlink(temp_name(output))
    os._exit(1)


def _local_migrate_slide(job: SlideJob) -> SlideRecord:
    _local_worker.slide_in_hand = Path(job.output)
    try:
        return migrate_slide(job)
    finally:
        _local_worker.slide_in_hand = None


class Backend:
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


class NothingToDo(Backend):
    name = "no workers (nothing to do)"

    def close(self, interrupted: bool) -> None:
        pass


class LocalBackend(Backend):
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


class DaskBackend(Backend):
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
    return job.record(FAILED, detail=f"{job.source}: {reason}", finished_at=utc_now())


InFlight = dict["Future[SlideRecord]", tuple[SlideJob, bool]]


def run_jobs(
    jobs: Iterable[SlideJob],
    backend: Backend,
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
