"""Per-segment work (read, decode, colour, encode) and the pool that spreads it over cores.

Work is shipped to worker processes as small descriptors (offsets, not pixels): each worker opens
the input read-only itself and loads the colour table once from its cache file, so only encoded
bytes travel back. One ordered consumer in the parent writes the results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .codecs import AdaptiveCodec, SegmentCodec
from .codecs.jpeg import JpegCodec, JpegFormatError
from .codecs.lossless import LosslessCodec, LosslessFormatError
from .colour import ColourTable
from .exceptions import SvsiccError, TileDecodeError, UnsupportedLayoutError
from .slide import Page

COMPRESSION_JPEG = 7
COMPRESSION_JP2K_YCBCR = 33003
COMPRESSION_JP2K_RGB = 33005
SUPPORTED_COMPRESSIONS = (1, 5, COMPRESSION_JPEG, COMPRESSION_JP2K_YCBCR, COMPRESSION_JP2K_RGB)
# Segments read per in-process batch; each is decoded, coloured and encoded before the next
# (see SegmentProcessor.process_many).
IN_PROCESS_BATCH = 16
# Each pool batch costs its worker ~2 ms between batches (result pickled through a pipe, next
# task fetched). Measured with 2 workers on 2,400-2,700-tile slides, alternating: 128-segment
# batches took 4-7% less wall time than 32 or 256 (fewer gaps; the slide's tail still ends in
# quarter batches, see tapered). The window then holds about 8 x 128 x 20 KB of results.
MAX_POOL_BATCH = 128
# Pages with an adaptive codec (JPEG 2000 rate control): the parent encodes WARMUP_SEGMENTS of
# each, spread over the page; every later batch, of a size that does not depend on the worker
# count, starts from what the codec learned there. Output bytes are then the same for any
# --workers.
WARMUP_SEGMENTS = 16
ADAPTIVE_BATCH = 32
CODEC_ERRORS = (JpegFormatError, LosslessFormatError, ValueError, RuntimeError)


@dataclass(frozen=True)
class PageJob:
    """What a worker needs to decode and re-encode one page's segments."""

    index: int
    compression: int
    photometric: int
    predictor: int
    jpeg_tables: bytes | None

    @classmethod
    def for_page(cls, page: Page) -> PageJob:
        return cls(page.index, page.compression, page.photometric, page.predictor, page.jpeg_tables)


@dataclass(frozen=True)
class SegmentTask:
    page: int
    segment: int
    offset: int
    count: int
    rows: int
    cols: int

    @classmethod
    def for_segment(cls, page: Page, index: int) -> SegmentTask:
        """Segment ``index`` of ``page``, with its shape (edge segments may be clipped)."""
        rows, cols = page.segment_shape(index)
        return cls(page.index, index, page.offsets[index], page.byte_counts[index], rows, cols)


@dataclass(frozen=True)
class BadSegment:
    """A segment kept as it was because it could not be decoded (``on_bad_tile="keep"``)."""

    page: int
    segment: int
    reason: str


@dataclass(frozen=True)
class BatchTask:
    slide: str
    table_file: str
    pages: tuple[PageJob, ...]
    segments: tuple[SegmentTask, ...]
    keep_bad: bool
    learned: tuple[tuple[int, object], ...] = ()  # (page, AdaptiveCodec.learned_state())


def make_codec(job: PageJob) -> SegmentCodec:
    if job.compression == COMPRESSION_JPEG:
        return JpegCodec(job.jpeg_tables, job.photometric)
    if job.compression in (1, 5):
        return LosslessCodec(job.compression, job.predictor)
    if job.compression in (COMPRESSION_JP2K_YCBCR, COMPRESSION_JP2K_RGB):
        from .codecs.jpeg2k import Jpeg2000Codec

        codec: SegmentCodec = Jpeg2000Codec(job.compression)
        return codec
    raise UnsupportedLayoutError(None, f"compression {job.compression} is not supported")


class SegmentProcessor:
    """Decode, transform and re-encode segments of one slide."""

    def __init__(
        self,
        path: str | Path,
        pages: Iterable[PageJob],
        table: ColourTable,
        keep_bad: bool = False,
    ) -> None:
        self.path = Path(path)
        self._codecs: dict[int, SegmentCodec] = {}
        for job in pages:
            try:
                self._codecs[job.index] = make_codec(job)
            except CODEC_ERRORS as exc:
                raise UnsupportedLayoutError(self.path, str(exc), ifd=job.index) from None
        self._adaptive = {
            page: codec for page, codec in self._codecs.items() if isinstance(codec, AdaptiveCodec)
        }
        self._table = table
        self._keep_bad = keep_bad

    def codec(self, page: int) -> SegmentCodec:
        return self._codecs[page]

    def adaptive_pages(self) -> set[int]:
        return set(self._adaptive)

    def learned(self) -> dict[int, object]:
        return {page: codec.learned_state() for page, codec in self._adaptive.items()}

    def restore(self, learned: Iterable[tuple[int, object]]) -> None:
        for page, state in learned:
            self._adaptive[page].restore_state(state)

    def process(self, task: SegmentTask, data: bytes) -> bytes | BadSegment:
        return self.process_many([task], [data])[0]

    def process_many(
        self, tasks: Sequence[SegmentTask], datas: Sequence[bytes]
    ) -> list[bytes | BadSegment]:
        """Each segment decoded, coloured and encoded before the next one is read.

        Tile by tile, the decoded pixels are still in L2 when the colour stage and the encoder
        read them. Stage by stage (decode 16, colour 16, encode 16) was measured 9% slower on
        this machine, 13% for decode and encode alone: 16 tiles of pixels (4 MB) do not fit in
        L2, and beyond L2 every access costs DRAM latency here, table lines included.
        """
        return [self._process_one(t, d) for t, d in zip(tasks, datas, strict=True)]

    def _process_one(self, task: SegmentTask, data: bytes) -> bytes | BadSegment:
        pixels = self._decode(task, data)
        if isinstance(pixels, BadSegment):
            return pixels
        return self._encode(task, self._table.apply_bgrx(pixels, in_place=True), "RGBX", data)

    def _decode(self, task: SegmentTask, data: bytes) -> np.ndarray | BadSegment:
        try:
            return self._codecs[task.page].decode(data, task.rows, task.cols)
        except SvsiccError as exc:
            raise self._located(exc, task) from None
        except CODEC_ERRORS as exc:
            if self._keep_bad:
                return BadSegment(task.page, task.segment, str(exc))
            raise TileDecodeError(
                self.path, f"cannot decode: {exc}", ifd=task.page, tile=task.segment
            ) from None

    def _encode(self, task: SegmentTask, pixels: np.ndarray, layout: str, source: bytes) -> bytes:
        try:
            return self._codecs[task.page].encode(pixels, layout, source)
        except SvsiccError as exc:
            raise self._located(exc, task) from None
        except CODEC_ERRORS as exc:
            raise UnsupportedLayoutError(
                self.path, f"cannot re-encode: {exc}", ifd=task.page, tile=task.segment
            ) from None

    def _located(self, exc: SvsiccError, task: SegmentTask) -> SvsiccError:
        """The same error, naming this slide, IFD and tile where the codec could not."""
        if exc.path is not None:
            return exc
        return type(exc)(self.path, exc.problem, ifd=task.page, tile=task.segment, hint=exc.hint)


class SeekableReader(Protocol):
    def seek(self, offset: int, /) -> object: ...

    def read(self, size: int, /) -> bytes: ...


def read_segment(fh: SeekableReader, task: SegmentTask) -> bytes:
    fh.seek(task.offset)
    return fh.read(task.count)


# -- worker processes ----------------------------------------------------------------------------

_worker_state: dict[str, object] = {}


def _worker_table(task: BatchTask) -> ColourTable:
    cached = _worker_state.get("table")
    if isinstance(cached, ColourTable) and _worker_state.get("table_file") == task.table_file:
        return cached
    table = ColourTable.from_file(Path(task.table_file))
    _worker_state["table"] = table
    _worker_state["table_file"] = task.table_file
    return table


def _worker_processor(task: BatchTask) -> SegmentProcessor:
    """The processor for this task's slide, kept for the slide's next batch."""
    key = (task.slide, task.table_file, task.pages, task.keep_bad)
    processor = _worker_state.get("processor")
    if _worker_state.get("key") != key or not isinstance(processor, SegmentProcessor):
        processor = SegmentProcessor(task.slide, task.pages, _worker_table(task), task.keep_bad)
        _worker_state["processor"] = processor
        _worker_state["key"] = key
    return processor


def _read_all(task: BatchTask) -> list[bytes]:
    # Opened per batch, not kept: a worker must not hold a slide (or a deleted temporary copy
    # of one) open after its last batch.
    with open(task.slide, "rb") as fh:
        return [read_segment(fh, seg) for seg in task.segments]


def run_batch(task: BatchTask) -> list[bytes | BadSegment]:
    processor = _worker_processor(task)
    datas = _read_all(task)
    processor.restore(task.learned)
    return processor.process_many(task.segments, datas)


def run_warmup(task: BatchTask) -> tuple[list[bytes | BadSegment], dict[int, object]]:
    """One adaptive page's sample, through codecs that have seen nothing before it."""
    processor = SegmentProcessor(task.slide, task.pages, _worker_table(task), task.keep_bad)
    results = processor.process_many(task.segments, _read_all(task))
    page = task.segments[0].page
    return results, {page: processor.learned()[page]}


_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the pool may fork a worker.

    A KeyboardInterrupt raised inside fork's at-fork hooks is swallowed ("Exception ignored"),
    so the interrupt would be half lost; held here, it is delivered right after, in our code.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED_SIGNALS)


def _init_worker(parent: int) -> None:
    import time

    # The parent handles Ctrl-C and shuts the pool down; workers must not die mid-batch first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the CLI's SIGTERM handler; the pool needs SIGTERM to kill it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Forked while the parent held these (_interrupts_deferred): take them again.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED_SIGNALS)

    def exit_with_parent() -> None:
        # After a kill -9 of the parent nobody shuts the pool down: do not linger holding the
        # input and a 64 MB table.
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True, name="svsicc-orphan-watch").start()


class WorkerPool:
    """A process pool that can be reused across slides (a migration keeps one)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            import multiprocessing

            # fork is fast and shares the imported modules; workers hold no threads of ours.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def batched(tasks: list[SegmentTask], size: int) -> Iterator[tuple[SegmentTask, ...]]:
    for start in range(0, len(tasks), size):
        yield tuple(tasks[start : start + size])


def tapered(tasks: list[SegmentTask], size: int, workers: int) -> Iterator[tuple[SegmentTask, ...]]:
    """Batches of ``size``, the last ``size * workers`` tasks in quarter batches: one worker
    finishing a whole batch while the others are idle is what a slide's tail costs."""
    head = max(0, len(tasks) - size * workers)
    yield from batched(tasks[:head], size)
    yield from batched(tasks[head:], max(1, size // 4))


def process_segments(
    slide: Path,
    pages: tuple[PageJob, ...],
    tasks: list[SegmentTask],
    table: ColourTable,
    table_file: Path | None,
    pool: WorkerPool | None,
    keep_bad: bool,
    fh: SeekableReader,
) -> Iterator[tuple[SegmentTask, bytes | BadSegment]]:
    """Yield (task, new bytes) in task order, computed in-process or on the pool."""
    processor = SegmentProcessor(slide, pages, table, keep_bad)
    on_pool = pool if pool is not None and pool.workers > 1 else None

    def template() -> BatchTask:
        """What every pool task shares; each batch fills in its segments (and learned states)."""
        return BatchTask(str(slide), _share_table(table, table_file), pages, (), keep_bad)

    adaptive = processor.adaptive_pages()
    if not adaptive:
        if on_pool is None:
            yield from _in_process(processor, batched(tasks, IN_PROCESS_BATCH), fh, ())
        else:
            size = max(4, min(MAX_POOL_BATCH, len(tasks) // (on_pool.workers * 8) or 4))
            yield from _on_pool(on_pool, template(), tapered(tasks, size, on_pool.workers))
        return
    # Warm-up: a sample of each adaptive page's segments; on a pool, one page per worker.
    samples: list[list[int]] = []
    for page in sorted(adaptive):
        ours = [i for i, t in enumerate(tasks) if t.page == page]
        # Spread over the page: its first tiles are often all glass, a poor model of the rest.
        samples.append(
            sorted({ours[k * len(ours) // WARMUP_SEGMENTS] for k in range(WARMUP_SEGMENTS)})
        )
    groups = [tuple(tasks[i] for i in sample) for sample in samples]
    if on_pool is None:
        results = [result for _, result in _in_process(processor, groups, fh, ())]
        learned = tuple(processor.learned().items())
    else:
        results, learned = _warm_up_on_pool(on_pool, template(), groups)
    warm = dict(zip((i for sample in samples for i in sample), results, strict=True))
    batches = batched([t for i, t in enumerate(tasks) if i not in warm], ADAPTIVE_BATCH)
    if on_pool is None:
        stream = _in_process(processor, batches, fh, learned)
    else:
        stream = _on_pool(on_pool, dataclasses.replace(template(), learned=learned), batches)
    for i, task in enumerate(tasks):
        yield (task, warm.pop(i)) if i in warm else next(stream)


def _in_process(
    processor: SegmentProcessor,
    batches: Iterable[tuple[SegmentTask, ...]],
    fh: SeekableReader,
    learned: tuple[tuple[int, object], ...],
) -> Iterator[tuple[SegmentTask, bytes | BadSegment]]:
    for group in batches:
        datas = [read_segment(fh, task) for task in group]
        processor.restore(learned)
        yield from zip(group, processor.process_many(group, datas), strict=True)


def _share_table(table: ColourTable, table_file: Path | None) -> str:
    """The table file workers load, after handing ``table`` itself to workers forked later."""
    if table_file is None:
        raise ValueError("a worker pool needs the colour table as a file")
    # Workers forked from here share this copy instead of loading their own (64 MB each).
    _worker_state["table"] = table
    _worker_state["table_file"] = str(table_file)
    return str(table_file)


def _warm_up_on_pool(
    pool: WorkerPool, template: BatchTask, groups: list[tuple[SegmentTask, ...]]
) -> tuple[list[bytes | BadSegment], tuple[tuple[int, object], ...]]:
    """Each adaptive page's sample as one pool task: the results in order, and the states."""
    executor = pool.executor()
    futures: list[Future[tuple[list[bytes | BadSegment], dict[int, object]]]] = []
    try:
        for group in groups:
            with _interrupts_deferred():
                futures.append(
                    executor.submit(run_warmup, dataclasses.replace(template, segments=group))
                )
        results: list[bytes | BadSegment] = []
        learned: dict[int, object] = {}
        for future in futures:
            done, state = future.result()
            results += done
            learned.update(state)
        return results, tuple(sorted(learned.items(), key=lambda item: item[0]))
    finally:
        for future in futures:
            future.cancel()


def _on_pool(
    pool: WorkerPool, template: BatchTask, batches: Iterable[tuple[SegmentTask, ...]]
) -> Iterator[tuple[SegmentTask, bytes | BadSegment]]:
    executor = pool.executor()
    window: deque[tuple[tuple[SegmentTask, ...], Future[list[bytes | BadSegment]]]] = deque()
    # A bounded window keeps memory flat however large the slide is.
    limit = pool.workers * 4

    def submit(batch: tuple[SegmentTask, ...]) -> None:
        task = dataclasses.replace(template, segments=batch)
        with _interrupts_deferred():
            window.append((batch, executor.submit(run_batch, task)))

    try:
        for batch in batches:
            submit(batch)
            if len(window) >= limit:
                yield from _drain_one(window)
        while window:
            yield from _drain_one(window)
    finally:
        for _, future in window:
            future.cancel()


def _drain_one(
    window: deque[tuple[tuple[SegmentTask, ...], Future[list[bytes | BadSegment]]]],
) -> Iterator[tuple[SegmentTask, bytes | BadSegment]]:
    batch, future = window.popleft()
    yield from zip(batch, future.result(), strict=True)


ProgressCallback = Callable[[int, int], None]
