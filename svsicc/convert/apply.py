"""``svsicc.apply``: write a copy of a slide whose pixels are converted to the target profile.

The copy keeps every byte of the input except the rewritten segments, their offset/byte-count
arrays, tag 34675 and the format driver's record (Aperio: the ImageDescription; generic TIFF and
Ventana: a private tag on level 0, :mod:`svsicc.tiff.record`). Rewritten segments are laid back
into the space the old ones occupied, in file order; a segment that no longer fits is appended at
the end.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from svsicc.codecs import registry
from svsicc.codecs.codes import Compression
from svsicc.colour.transform import ColourTable, IccProfile, Intent
from svsicc.convert.engine import (
    BadSegment,
    Encoded,
    PageJob,
    ProgressCallback,
    SegmentTask,
    WorkerPool,
    default_workers,
    process_segments,
)
from svsicc.convert.plan import ConversionPlan, ProfileChoice, ProfileSource, maps_as_identity
from svsicc.drivers import driver_of, read_slide
from svsicc.exceptions import (
    OutputError,
    TiffFormatError,
    UnsupportedLayoutError,
)
from svsicc.tiff import file as tiff
from svsicc.tiff.driver import Marks
from svsicc.tiff.output import (
    TempOutput,
    bigtiff_twin,
    copy_ranges,
    gaps,
    output_error,
)
from svsicc.tiff.record import refuse_reapplying
from svsicc.tiff.slide import Page, Role, Slide

# Gaps this small between rewritten segments are alignment padding, reusable once checked free.
MAX_PADDING_GAP = 64


@dataclass(frozen=True)
class PageResult:
    index: int
    role: str
    compression: str
    segments: int
    rewritten: int
    empty: int
    kept_bad: int
    bytes_before: int
    bytes_after: int
    layout: str = "tiled"  # or "stripped": what the segments are

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`apply` did."""

    source: Path
    output: Path
    profile: IccProfile
    profile_origin: str
    target: IccProfile
    intent: Intent
    identity: bool
    pages: tuple[PageResult, ...]
    input_bytes: int
    output_bytes: int
    seconds: float
    bad_segments: tuple[BadSegment, ...] = field(default=())
    workers: int = 1  # processes that decoded, converted and encoded
    replaced_profile: IccProfile | None = None  # the embedded profile --profile overrode

    @property
    def segments_per_second(self) -> float:
        return self.segments_rewritten / self.seconds if self.seconds > 0 else 0.0

    @property
    def segments_rewritten(self) -> int:
        return sum(p.rewritten for p in self.pages)

    @property
    def size_ratio(self) -> float:
        return self.output_bytes / self.input_bytes if self.input_bytes else 1.0

    def to_dict(self) -> dict[str, object]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "profile": self.profile.summary(),
            "profile_origin": self.profile_origin,
            "replaced_profile": None
            if self.replaced_profile is None
            else self.replaced_profile.summary(),
            "target": self.target.summary(),
            "intent": self.intent.label,
            "identity": self.identity,
            "pages": [p.to_dict() for p in self.pages],
            "segments_rewritten": self.segments_rewritten,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "size_ratio": round(self.size_ratio, 4),
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "segments_per_second": round(self.segments_per_second, 1),
            "bad_segments": [b.__dict__ for b in self.bad_segments],
        }


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
    """The TIFF path of ``svsicc.apply`` (:func:`svsicc.api.apply`, whose docstring says what
    every option means, what it returns and raises): Aperio SVS, generic tiled TIFF and Ventana
    BIF, by content."""
    started = time.perf_counter()
    src = Path(source)
    dst = Path(output)
    _check_paths(src, dst, in_place, overwrite)
    choice = ProfileChoice.load(profile, fallback_profile, target, intent)
    with tiff.TiffReader(src) as reader:
        slide = read_slide(reader)
        refuse_unless_applicable(src, slide)
        plan = choice.plan(slide)
        if on_plan is not None:
            on_plan(plan)
        source_profile, origin = plan.source, plan.origin
        target_profile, chosen_intent = plan.target, plan.intent
        table = ColourTable.load_or_build(source_profile, target_profile, chosen_intent)
        identity = maps_as_identity(source_profile, target_profile, table)
        rewrite = [] if identity else pages_to_rewrite(slide, include_associated)
        marks = Marks(source_profile, target_profile, chosen_intent, identity)
        n_workers = default_workers() if workers is None else max(1, workers)
        own_pool = pool is None and n_workers > 1 and bool(rewrite)
        run_pool = WorkerPool(n_workers) if own_pool else pool
        try:
            with TempOutput(dst, cancel) as out:
                try:
                    pages, bad = _write_copy(
                        reader, slide, rewrite, table, marks, out, run_pool, keep_bad_tiles,
                        progress,
                    )  # fmt: skip
                # -- BigTIFF promotion hook (issue 7; svsicc.tiff.output.bigtiff_twin) ------------
                except tiff.ClassicTiffLimitError:
                    # The classic copy would pass 4 GiB: write it again from a BigTIFF twin.
                    with bigtiff_twin(reader, out) as twin:
                        big = read_slide(twin, driver_of(slide))
                        pages, bad = _write_copy(
                            twin, big, [big.pages[p.index] for p in rewrite], table, marks, out,
                            run_pool, keep_bad_tiles, progress,
                        )  # fmt: skip
                # -- end of BigTIFF promotion hook -------------------------------------------
                except OSError as exc:
                    raise output_error(dst, exc) from None
                assert out.file is not None
                out.file.flush()
                result = ApplyResult(
                    source=src,
                    output=dst,
                    profile=source_profile,
                    profile_origin=origin,
                    target=target_profile,
                    intent=chosen_intent,
                    identity=identity,
                    pages=pages,
                    input_bytes=reader.file_size,
                    output_bytes=os.fstat(out.file.fileno()).st_size,
                    seconds=0.0,
                    bad_segments=bad,
                    workers=run_pool.workers if run_pool is not None else 1,
                    replaced_profile=plan.replaced,
                )
                if before_commit is not None:
                    before_commit(out.path, result)
                out.commit()
        finally:
            if own_pool and run_pool is not None:
                run_pool.close()
    return _with_seconds(result, time.perf_counter() - started)


def _with_seconds(result: ApplyResult, seconds: float) -> ApplyResult:
    values = dict(result.__dict__)
    values["seconds"] = seconds
    return ApplyResult(**values)


def refuse_unless_applicable(src: Path, slide: Slide) -> None:
    """Apply works on slides whose profile was not applied yet."""
    refuse_reapplying(src, slide.applied)


def _check_paths(src: Path, dst: Path, in_place: bool, overwrite: bool) -> None:
    if not src.exists():
        if dst.is_file() and not in_place:
            # The usual cause: the two paths swapped. Say which comes first.
            raise TiffFormatError(
                src,
                "no such file",
                hint=f"INPUT comes first: svsicc apply INPUT OUTPUT; {dst} exists and would be "
                "the INPUT",
            )
        raise TiffFormatError(src, "no such file")
    same = dst.exists() and os.path.samefile(src, dst)
    if in_place:
        if not same:
            raise OutputError(dst, "{in_place} needs {output} to be the input file itself")
        return
    if same:
        raise OutputError(
            dst, "{output} is the input file", hint="choose another {output}, or pass {in_place}"
        )
    if dst.is_dir():
        raise OutputError(dst, "{output} is a directory; give a file name")
    if dst.exists() and not overwrite:
        raise OutputError(dst, "{output} exists", hint="pass {overwrite} to replace it")
    if not dst.parent.is_dir():
        raise OutputError(dst, "the output folder does not exist")


def pages_to_rewrite(slide: Slide, include_associated: bool) -> list[Page]:
    roles = {Role.LEVEL, Role.THUMBNAIL}
    if include_associated:
        roles |= {Role.LABEL, Role.MACRO}
    pages = [p for p in slide.pages if p.role in roles]
    for page in pages:
        _check_supported(slide.path, page)
    return pages


def _check_supported(path: Path, page: Page) -> None:
    if not registry.is_supported(page.compression):
        raise UnsupportedLayoutError(
            path, f"compression {page.compression} is not supported", ifd=page.index
        )
    if page.samples_per_pixel != 3 or any(b != 8 for b in page.bits_per_sample):
        raise UnsupportedLayoutError(
            path,
            f"{page.samples_per_pixel} samples of {page.bits_per_sample} bits; only 8-bit RGB "
            "is supported",
            ifd=page.index,
        )
    if page.planar != 1:
        raise UnsupportedLayoutError(path, "planar (separate) sample layout", ifd=page.index)
    if page.predictor not in (1, 2):
        raise UnsupportedLayoutError(path, f"predictor {page.predictor}", ifd=page.index)


@dataclass
class _Placement:
    """Lays new segments back into the freed space, in file order; appends what does not fit."""

    blocks: list[tuple[int, int]]
    patcher: tiff.TiffPatcher
    _block: int = 0
    _cursor: int = 0

    def place(self, original_offset: int, data: Encoded) -> int:
        while self._block < len(self.blocks) and self.blocks[self._block][1] <= original_offset:
            self._block += 1
        if self._block < len(self.blocks):
            start, end = self.blocks[self._block]
            self._cursor = max(self._cursor, start)
            if self._cursor + len(data) <= end:
                offset = self._cursor
                self.patcher.write_at(offset, data)
                self._cursor += len(data)
                return offset
        return self.patcher.append(data)


def _refuse_shared_with_kept(
    slide: Slide, rewrite: list[Page], receivers: dict[tuple[int, int], list[tuple[int, int]]]
) -> None:
    """A kept page (label, macro, a page in strips) whose segment is the very bytes of a
    converted one would change with it: refuse rather than convert a page that must stay."""
    converted = {p.index for p in rewrite}
    for page in slide.pages:
        if page.index in converted:
            continue
        for i, (off, cnt) in enumerate(zip(page.offsets, page.byte_counts, strict=True)):
            if cnt and (off, cnt) in receivers:
                other_ifd, other = receivers[(off, cnt)][0]
                raise UnsupportedLayoutError(
                    slide.path,
                    f"its bytes are also segment {other} of IFD {other_ifd}, which is converted;"
                    " this page is kept as it is, so the two cannot share them",
                    ifd=page.index,
                    tile=i,
                )


def _free_blocks(slide: Slide, extents: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge the rewritten segments' extents into blocks; small unreferenced gaps join them.

    read_slide has already refused partial overlaps (slide.check_extents), so the extents are
    disjoint or identical.
    """
    protected = _protected_extents(slide, {(o, o + c) for o, c in extents})
    blocks: list[tuple[int, int]] = []
    for start, count in sorted(set(extents)):
        end = start + count
        if (
            blocks
            and start - blocks[-1][1] <= MAX_PADDING_GAP
            and not _intersects(protected, blocks[-1][1], start)
        ):
            blocks[-1] = (blocks[-1][0], end)
        else:
            blocks.append((start, end))
    return blocks


def _protected_extents(slide: Slide, rewritten: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every byte range something other than a rewritten segment refers to, merged."""
    st = slide.structure
    extents = [(0, 16 if st.bigtiff else 8)]
    for ifd in st.ifds:
        extents.append((ifd.offset, ifd.end))
        for entry in ifd.entries.values():
            if not entry.inline:
                extents.append((entry.value_offset, entry.value_offset + entry.nbytes))
    for page in slide.pages:
        for off, cnt in zip(page.offsets, page.byte_counts, strict=True):
            if cnt and (off, off + cnt) not in rewritten:
                extents.append((off, off + cnt))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(extents):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _intersects(disjoint: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) meets any of the sorted, disjoint extents."""
    i = bisect.bisect_left(disjoint, (end, end)) - 1
    return i >= 0 and disjoint[i][1] > start


def _write_copy(
    reader: tiff.TiffReader,
    slide: Slide,
    rewrite: list[Page],
    table: ColourTable,
    marks: Marks,
    out: TempOutput,
    pool: WorkerPool | None,
    keep_bad: bool,
    progress: ProgressCallback | None,
) -> tuple[tuple[PageResult, ...], tuple[BadSegment, ...]]:
    assert out.file is not None
    fh = out.file
    # Identical extents shared by several segments are processed once.
    receivers: dict[tuple[int, int], list[tuple[int, int]]] = {}
    tasks: list[SegmentTask] = []
    for page in rewrite:
        for i, (off, cnt) in enumerate(zip(page.offsets, page.byte_counts, strict=True)):
            if not cnt:
                continue
            key = (off, cnt)
            if key not in receivers:
                receivers[key] = []
                tasks.append(SegmentTask.for_segment(page, i))
            receivers[key].append((page.index, i))
    tasks.sort(key=lambda t: t.offset)
    _refuse_shared_with_kept(slide, rewrite, receivers)
    blocks = _free_blocks(slide, list(receivers))
    size = reader.file_size
    os.ftruncate(fh.fileno(), size)
    copy_ranges(reader.fileno(), fh.fileno(), list(gaps(size, blocks)))
    patcher = tiff.TiffPatcher(fh, slide.structure, out.destination)
    placement = _Placement(blocks, patcher)
    new_offsets = {p.index: list(p.offsets) for p in rewrite}
    new_counts = {p.index: list(p.byte_counts) for p in rewrite}
    rewritten = dict.fromkeys(new_offsets, 0)
    bad: list[BadSegment] = []
    kept: list[tuple[int, int]] = []  # every (IFD, segment) holding a kept segment's bytes
    # Pages whose tiles svsicc's OpenJPEG binding may encode (lossy or subsampled JPEG 2000):
    # the mark names that library's version once an output tile shows it was used.
    binding_pages = {
        p.index
        for p in rewrite
        if p.compression in (Compression.JPEG2000_YCBCR, Compression.JPEG2000_RGB)
    }
    binding_used = False
    jobs = tuple(PageJob.for_page(p) for p in rewrite)
    table_file = _table_file_for_workers(table, pool)
    try:
        # Closed on the way out, not whenever the exception that stopped the loop is freed: a
        # stopped stream gives its pool's ring space back, and the pool must still be open then.
        with contextlib.closing(
            process_segments(
                slide.path, jobs, tasks, table, table_file, pool, keep_bad, _ReaderFile(reader)
            )
        ) as processed:
            for done, (task, result) in enumerate(processed, start=1):
                data: Encoded
                if isinstance(result, BadSegment):
                    bad.append(result)
                    data = reader.read(task.offset, task.count, "segment", ifd=task.page)
                else:
                    data = result
                    if task.page in binding_pages and not binding_used:
                        binding_used = _encoded_by_binding(data)
                offset = placement.place(task.offset, data)
                for page_index, segment in receivers[(task.offset, task.count)]:
                    new_offsets[page_index][segment] = offset
                    new_counts[page_index][segment] = len(data)
                    rewritten[page_index] += 1
                    if isinstance(result, BadSegment):
                        kept.append((page_index, segment))
                if out.cancel is not None and out.cancel.is_set():
                    raise KeyboardInterrupt
                if progress is not None:
                    progress(done, len(tasks))
    finally:
        if table_file is not None and table_file != table.file:
            os.unlink(table_file)
    for page in rewrite:
        _patch_ints(patcher, page.ifd.entries[page.offsets_tag], new_offsets[page.index])
        _patch_ints(patcher, page.ifd.entries[page.byte_counts_tag], new_counts[page.index])
    library = _binding_version() if binding_used else None
    rewritten_pages = {p.index for p in rewrite}
    converted = rewritten_pages | (
        {p.index for p in slide.pages if p.role in (Role.LEVEL, Role.THUMBNAIL)}
        if marks.identity
        else set()
    )
    final_marks = replace(marks, library=library, kept=tuple(sorted(kept)))
    driver_of(slide).mark(reader, slide, converted, patcher, final_marks)
    bad_by_page = {p.index: sum(1 for b in bad if b.page == p.index) for p in rewrite}
    results = tuple(
        PageResult(
            index=p.index,
            role=p.role.value,
            compression=p.compression_name,
            segments=len(p.offsets),
            rewritten=rewritten.get(p.index, 0) - bad_by_page.get(p.index, 0),
            empty=sum(1 for c in p.byte_counts if not c),
            kept_bad=bad_by_page.get(p.index, 0),
            bytes_before=sum(p.byte_counts),
            bytes_after=sum(new_counts[p.index]),
            layout=p.kind,
        )
        for p in rewrite
    )
    return results, tuple(bad)


class _ReaderFile:
    """The minimal file interface ``process_segments`` reads through, bounds-checked."""

    def __init__(self, reader: tiff.TiffReader) -> None:
        self._reader = reader
        self._offset = 0

    def seek(self, offset: int) -> None:
        self._offset = offset

    def read(self, size: int) -> bytes:
        return self._reader.read(self._offset, size, "segment")


def _table_file_for_workers(table: ColourTable, pool: WorkerPool | None) -> Path | None:
    if pool is None or pool.workers == 1:
        return None
    if table.file is not None:
        return table.file
    # The cache was not writable: hand the table to workers through a private file.
    import tempfile

    fd, name = tempfile.mkstemp(prefix="svsicc-table-", suffix=".npy")
    with os.fdopen(fd, "wb") as fh:
        import numpy as np

        np.save(fh, table.table)
    return Path(name)


def _patch_ints(patcher: tiff.TiffPatcher, entry: tiff.TiffEntry, values: list[int]) -> None:
    largest = max(values, default=0)
    if patcher.structure.bigtiff:
        type_ = entry.type if largest < 2 ** (8 * tiff.TYPE_SIZES[entry.type]) else tiff.TYPE_LONG8
    else:
        type_ = (
            tiff.TYPE_SHORT if entry.type == tiff.TYPE_SHORT and largest < 2**16 else tiff.TYPE_LONG
        )
    if largest >= tiff.CLASSIC_LIMIT and not patcher.structure.bigtiff:
        raise OutputError(patcher.path, "offsets past 4 GiB do not fit a classic TIFF")
    data = tiff.pack_ints(patcher.structure.byteorder, type_, values)
    patcher.overwrite(entry, type_, len(values), data)


def _encoded_by_binding(stream: Encoded) -> bool:
    from svsicc.codecs.jpeg2k import encoded_by_binding

    return encoded_by_binding(stream)


def _binding_version() -> str | None:
    """The binding's library, None when it does not load: lossy tiles were then encoded by
    imagecodecs (a subsampled tile would have been refused)."""
    from svsicc.codecs import openjpeg

    try:
        return f"OpenJPEG {openjpeg.version()}"
    except openjpeg.OpenJpegUnavailable:
        return None
