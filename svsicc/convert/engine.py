"""Per-segment work (read, decode, colour, encode) and the pool that spreads it over cores.

Work is shipped to worker processes as small descriptors (offsets, not pixels): each worker opens
the input read-only itself and loads the colour table once from its cache file, so only encoded
bytes travel back. One ordered consumer in the parent writes the results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

import numpy as np

from svsicc.codecs import AdaptiveCodec, SegmentCodec, registry
from svsicc.colour.transform import ColourOut, ColourTable
from svsicc.convert.worker_signals import interrupts_deferred, shield_worker
from svsicc.exceptions import CodecError, SvsiccError, TileDecodeError, UnsupportedLayoutError
from svsicc.tiff.slide import Page

if TYPE_CHECKING:
    # multiprocessing and concurrent.futures are imported when a pool starts: a one-worker
    # apply never needs them, and importing them was a quarter of svsicc's start-up imports.
    from concurrent.futures import Future, ProcessPoolExecutor

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
# What a codec raises for bad data (or a library that refuses it); anything else is a bug and
# must surface as one, never as a "bad tile" that --on-bad-tile keep would silently keep.
CODEC_ERRORS = (CodecError,)


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


# A segment's new bytes: ``bytes``, or a view into a result ring that is valid only until the
# next item is taken from the stream that yielded it.
Encoded: TypeAlias = bytes | memoryview
# (task, new bytes or why they were kept) in task order; closed, it gives back what it holds.
SegmentStream: TypeAlias = Generator[tuple[SegmentTask, Encoded | BadSegment], None, None]


@dataclass(frozen=True)
class RingBatch:
    """A batch whose encoded segments a worker left in its result ring, back to back."""

    ring: int
    start: int  # position in the ring's byte stream (it wraps at the ring's capacity)
    items: tuple[int | BadSegment, ...]  # each segment's size, or why it was kept

    @property
    def size(self) -> int:
        return sum(item for item in self.items if isinstance(item, int))


def make_codec(job: PageJob) -> SegmentCodec:
    """The registry's codec for ``job``'s page."""
    if not registry.is_supported(job.compression):
        raise UnsupportedLayoutError(None, f"compression {job.compression} is not supported")
    return registry.make_codec(
        registry.PageCoding(job.compression, job.jpeg_tables, job.photometric, job.predictor)
    )


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
        self._colour_out = ColourOut()  # a processor serves one thread

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
        layout = self._codecs[task.page].decoded_layout
        coloured = self._table.apply(pixels, layout, self._colour_out.for_pixels(pixels, layout))
        # RGBX from the colour table; packed RGB only from a stage that leaves RGB pixels as they
        # are (the benchmark's floor without a colour stage).
        return self._encode(task, coloured, "RGBX" if coloured.shape[-1] == 4 else "RGB", data)

    def _decode(self, task: SegmentTask, data: bytes) -> np.ndarray | BadSegment:
        try:
            return self._codecs[task.page].decode(data, task.rows, task.cols)
        except CODEC_ERRORS as exc:
            if self._keep_bad:
                return BadSegment(task.page, task.segment, exc.problem)
            raise TileDecodeError(
                self.path, f"cannot decode: {exc.problem}", ifd=task.page, tile=task.segment
            ) from None
        except SvsiccError as exc:
            raise self._located(exc, task) from None

    def _encode(self, task: SegmentTask, pixels: np.ndarray, layout: str, source: bytes) -> bytes:
        try:
            return self._codecs[task.page].encode(pixels, layout, source)
        except CODEC_ERRORS as exc:
            raise UnsupportedLayoutError(
                self.path, f"cannot re-encode: {exc.problem}", ifd=task.page, tile=task.segment
            ) from None
        except SvsiccError as exc:
            raise self._located(exc, task) from None

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


# -- result rings ------------------------------------------------------------------------------

# Per worker. A batch is up to 128 segments of ~20 KB; one that does not fit travels pickled.
RING_BYTES = 8 << 20


class ResultRings:
    """Shared memory through which forked workers hand back a batch's encoded segments.

    Pickled through the pool's pipe, a batch's bytes are copied four more times, each into fresh
    memory (pickle buffer, pipe, receive buffer, unpickled objects), and fresh pages fault in at
    ~3 us each on the reference VM. Instead each worker copies a batch into its own ring and
    returns only the sizes (:class:`RingBatch`); the writer writes straight from the ring and
    then marks the batch consumed. Measured on fresh 2-worker applies, alternating 10 runs each
    against pickled results: AT2-style 1.285 -> 1.222 s, GT450-style 0.963 -> 0.937 s.

    A worker never waits for ring space: a batch that does not fit is returned pickled, as
    without rings. The ring positions only grow; a batch never wraps (it starts over at the
    ring's beginning instead), so each one is a single slice.
    """

    def __init__(self, workers: int, capacity: int = RING_BYTES) -> None:
        self.workers = workers
        self.capacity = capacity
        # int64 counters: the next ring to claim, each ring's consumed and produced positions.
        self._header = -(-8 * (1 + 2 * workers) // mmap.PAGESIZE) * mmap.PAGESIZE
        # Anonymous and shared: forked workers inherit it; it goes away with the last user.
        self._map = mmap.mmap(-1, self._header + workers * capacity)
        # Aligned native 8-byte loads and stores: a counter is never read half-written.
        self._counters = memoryview(self._map)[: self._header].cast("q")
        import multiprocessing

        self._lock = multiprocessing.get_context("fork").Lock()
        self._view: memoryview | None = None
        self._closed = False
        self.batches_received = 0  # parent side: how many batches came through a ring

    def _counter(self, slot: int) -> int:
        return int(self._counters[slot])

    def _set_counter(self, slot: int, value: int) -> None:
        self._counters[slot] = value

    def _offset(self, ring: int, position: int) -> int:
        return self._header + ring * self.capacity + position % self.capacity

    def unread(self, ring: int) -> int:
        """Bytes a worker left in ``ring`` that the writer has not consumed yet."""
        return self._counter(1 + self.workers + ring) - self._counter(1 + ring)

    # worker side

    def claim(self) -> int | None:
        """This worker's ring, or None when every ring is taken."""
        with self._lock:
            ring = self._counter(0)
            if ring >= self.workers:
                return None
            self._set_counter(0, ring + 1)
        return ring

    def put(self, ring: int, results: Sequence[bytes | BadSegment]) -> RingBatch | None:
        """Copy ``results`` into ``ring`` after what it holds; None if they do not fit."""
        size = sum(len(r) for r in results if not isinstance(r, BadSegment))
        start = self._counter(1 + self.workers + ring)  # produced so far
        if start % self.capacity + size > self.capacity:
            start += self.capacity - start % self.capacity
        if size > self.capacity or start + size - self._counter(1 + ring) > self.capacity:
            return None
        offset = self._offset(ring, start)
        items: list[int | BadSegment] = []
        for result in results:
            if isinstance(result, BadSegment):
                items.append(result)
                continue
            self._map[offset : offset + len(result)] = result
            offset += len(result)
            items.append(len(result))
        self._set_counter(1 + self.workers + ring, start + size)
        return RingBatch(ring, start, tuple(items))

    # parent side

    def segments(self, batch: RingBatch) -> Iterator[Encoded | BadSegment]:
        """The batch's segments as views into the ring, valid until :meth:`consume`."""
        if self._view is None:
            self._view = memoryview(self._map)
        offset = self._offset(batch.ring, batch.start)
        for item in batch.items:
            if isinstance(item, BadSegment):
                yield item
            else:
                yield self._view[offset : offset + item]
                offset += item
        self.batches_received += 1

    def consume(self, batch: RingBatch) -> None:
        """Give the batch's space back to its worker (nothing to give once the pool is closed)."""
        if self._closed:
            return
        slot = 1 + batch.ring
        self._set_counter(slot, max(self._counter(slot), batch.start + batch.size))

    def close(self) -> None:
        self._closed = True
        if self._view is not None:
            self._view.release()
            self._view = None
        self._counters.release()
        with contextlib.suppress(BufferError):  # a view still held somewhere: unmapped by GC
            self._map.close()


# -- worker processes ----------------------------------------------------------------------------


@dataclass
class SharedTable:
    """The colour table a pool's parent hands to the workers it forks from now on: they inherit
    it through the pool's initializer instead of loading their own 64 MB copy."""

    table: ColourTable | None = None
    table_file: str | None = None


@dataclass
class WorkerContext:
    """What one pool worker keeps between batches. Set up by the pool's initializer
    (:func:`_init_worker`) in the worker process; the parent never writes it."""

    ring: _ClaimedRing | None = None
    table: ColourTable | None = None
    table_file: str | None = None
    processor: SegmentProcessor | None = None
    processor_key: tuple[object, ...] | None = None


_worker = WorkerContext()  # this process's, when it is a pool worker


def _worker_table(task: BatchTask) -> ColourTable:
    if _worker.table is not None and _worker.table_file == task.table_file:
        return _worker.table
    _worker.table = ColourTable.from_file(Path(task.table_file))
    _worker.table_file = task.table_file
    return _worker.table


def _worker_processor(task: BatchTask) -> SegmentProcessor:
    """The processor for this task's slide, kept for the slide's next batch."""
    key = (task.slide, task.table_file, task.pages, task.keep_bad)
    if _worker.processor is None or _worker.processor_key != key:
        _worker.processor = SegmentProcessor(
            task.slide, task.pages, _worker_table(task), task.keep_bad
        )
        _worker.processor_key = key
    return _worker.processor


def _read_all(task: BatchTask) -> list[bytes]:
    # Opened per batch, not kept: a worker must not hold a slide (or a deleted temporary copy
    # of one) open after its last batch.
    with open(task.slide, "rb") as fh:
        return [read_segment(fh, seg) for seg in task.segments]


def run_batch(task: BatchTask) -> list[bytes | BadSegment] | RingBatch:
    processor = _worker_processor(task)
    datas = _read_all(task)
    processor.restore(task.learned)
    results = processor.process_many(task.segments, datas)
    claimed = _worker.ring
    if claimed is None:
        return results
    return claimed.rings.put(claimed.ring, results) or results


@dataclass(frozen=True)
class _ClaimedRing:
    """The result ring this worker process claimed."""

    rings: ResultRings
    ring: int


def run_warmup(task: BatchTask) -> tuple[list[bytes | BadSegment], dict[int, object]]:
    """One adaptive page's sample, through codecs that have seen nothing before it."""
    processor = SegmentProcessor(task.slide, task.pages, _worker_table(task), task.keep_bad)
    results = processor.process_many(task.segments, _read_all(task))
    page = task.segments[0].page
    return results, {page: processor.learned()[page]}


def _init_worker(parent: int, rings: ResultRings | None, shared: SharedTable | None) -> None:
    import time

    if rings is not None and (ring := rings.claim()) is not None:
        _worker.ring = _ClaimedRing(rings, ring)
    if shared is not None:
        _worker.table, _worker.table_file = shared.table, shared.table_file

    # The parent handles Ctrl-C and SIGTERM and shuts the pool down; workers must not die
    # mid-batch first (forked while the parent held both, see interrupts_deferred).
    shield_worker(parent)

    def exit_with_parent() -> None:
        # After a kill -9 of the parent nobody shuts the pool down: do not linger holding the
        # input and a 64 MB table.
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True, name="svsicc-orphan-watch").start()


class WorkerPool:
    """A process pool that can be reused across slides (``apply(pool=...)``), one at a time.

    Not for two slides at once from two threads: each worker's result ring has one reader.
    """

    def __init__(self, workers: int, ring_bytes: int = RING_BYTES) -> None:
        self.workers = max(1, workers)
        self.ring_bytes = ring_bytes
        self.rings: ResultRings | None = None
        # Forked workers see it as it is when they are forked (the pool forks on demand).
        self.shared = SharedTable()
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork is fast and shares the imported modules; workers hold no threads of ours.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            # Spawned workers could not inherit the rings: their results travel pickled.
            self.rings = ResultRings(self.workers, self.ring_bytes) if method == "fork" else None
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_init_worker,
                # Spawned workers would get the table pickled: they load it from its file.
                initargs=(os.getpid(), self.rings, self.shared if method == "fork" else None),
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self.rings is not None:
            self.rings.close()
            self.rings = None

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
) -> SegmentStream:
    """Yield (task, new bytes) in task order, computed in-process or on the pool.

    New bytes may be a view into a pool's result ring: use it before taking the next item.
    """
    processor = SegmentProcessor(slide, pages, table, keep_bad)
    on_pool = pool if pool is not None and pool.workers > 1 else None

    def template(pool: WorkerPool) -> BatchTask:
        """What every pool task shares; each batch fills in its segments (and learned states)."""
        return BatchTask(str(slide), _share_table(pool, table, table_file), pages, (), keep_bad)

    adaptive = processor.adaptive_pages()
    if not adaptive:
        if on_pool is None:
            yield from _in_process(processor, batched(tasks, IN_PROCESS_BATCH), fh, ())
        else:
            size = max(4, min(MAX_POOL_BATCH, len(tasks) // (on_pool.workers * 8) or 4))
            yield from _on_pool(on_pool, template(on_pool), tapered(tasks, size, on_pool.workers))
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
        results, learned = _warm_up_on_pool(on_pool, template(on_pool), groups)
    warm = dict(zip((i for sample in samples for i in sample), results, strict=True))
    batches = batched([t for i, t in enumerate(tasks) if i not in warm], ADAPTIVE_BATCH)
    stream: SegmentStream
    if on_pool is None:
        stream = _in_process(processor, batches, fh, learned)
    else:
        stream = _on_pool(on_pool, dataclasses.replace(template(on_pool), learned=learned), batches)
    with contextlib.closing(stream):
        for i, task in enumerate(tasks):
            yield (task, warm.pop(i)) if i in warm else next(stream)


def _in_process(
    processor: SegmentProcessor,
    batches: Iterable[tuple[SegmentTask, ...]],
    fh: SeekableReader,
    learned: tuple[tuple[int, object], ...],
) -> Generator[tuple[SegmentTask, bytes | BadSegment], None, None]:
    for group in batches:
        datas = [read_segment(fh, task) for task in group]
        processor.restore(learned)
        yield from zip(group, processor.process_many(group, datas), strict=True)


def _share_table(pool: WorkerPool, table: ColourTable, table_file: Path | None) -> str:
    """The table file workers load, after handing ``table`` itself to workers forked later."""
    if table_file is None:
        raise ValueError("a worker pool needs the colour table as a file")
    pool.shared.table, pool.shared.table_file = table, str(table_file)
    return str(table_file)


def _warm_up_on_pool(
    pool: WorkerPool, template: BatchTask, groups: list[tuple[SegmentTask, ...]]
) -> tuple[list[bytes | BadSegment], tuple[tuple[int, object], ...]]:
    """Each adaptive page's sample as one pool task: the results in order, and the states."""
    executor = pool.executor()
    futures: list[Future[tuple[list[bytes | BadSegment], dict[int, object]]]] = []
    try:
        for group in groups:
            with interrupts_deferred():
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


BatchFuture: TypeAlias = "Future[list[bytes | BadSegment] | RingBatch]"


def _on_pool(
    pool: WorkerPool, template: BatchTask, batches: Iterable[tuple[SegmentTask, ...]]
) -> SegmentStream:
    executor = pool.executor()
    rings = pool.rings
    window: deque[tuple[tuple[SegmentTask, ...], BatchFuture]] = deque()
    # A bounded window keeps memory flat however large the slide is.
    limit = pool.workers * 4

    def submit(batch: tuple[SegmentTask, ...]) -> None:
        task = dataclasses.replace(template, segments=batch)
        with interrupts_deferred():
            window.append((batch, executor.submit(run_batch, task)))

    try:
        for batch in batches:
            submit(batch)
            if len(window) >= limit:
                yield from _drain_one(window, rings)
        while window:
            yield from _drain_one(window, rings)
    finally:
        for _, future in window:
            future.cancel()
        if rings is not None:
            _release_unread(window, rings)


def _drain_one(
    window: deque[tuple[tuple[SegmentTask, ...], BatchFuture]], rings: ResultRings | None
) -> SegmentStream:
    batch, future = window[0]
    result = future.result()
    # Popped only now: a batch whose wait was interrupted stays for _release_unread.
    window.popleft()
    if not isinstance(result, RingBatch):
        yield from zip(batch, result, strict=True)
        return
    if rings is None:
        raise RuntimeError("a worker returned a ring batch to a pool without rings")
    try:
        yield from zip(batch, rings.segments(result), strict=True)
    finally:
        # Also when the consumer stops mid-batch: the worker's next batches need the space.
        rings.consume(result)


def _release_unread(
    window: deque[tuple[tuple[SegmentTask, ...], BatchFuture]], rings: ResultRings
) -> None:
    """Give back the ring space of batches nobody will read, after the consumer stopped early.

    Cancelled batches never ran; the others may already sit in their worker's ring, and on a
    pool kept for the next slide (``apply(pool=...)``) that worker's batches need the space.
    Waiting for them costs at most the few batches already handed to workers, and only on this
    error path.
    """
    for _, future in window:
        if future.cancelled():
            continue
        try:
            result = future.result()
        except Exception:  # a failed or broken batch left nothing in a ring
            continue
        if isinstance(result, RingBatch):
            rings.consume(result)


ProgressCallback = Callable[[int, int], None]
