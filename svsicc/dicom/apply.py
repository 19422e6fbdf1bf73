"""``apply`` for a DICOM WSI series: a new series in OUTPUT whose VOLUME and THUMBNAIL frames are
converted to the target profile and re-encoded with the source's own settings.

Per instance: the header is the source's (read and written by pydicom) with new UIDs, the
target profile in its optical paths and svsicc's record (:mod:`.marking`); the Pixel Data holds
the new frames behind rebuilt offset tables (:mod:`.pixeldata`). LABEL and OVERVIEW instances
(another camera) and identity copies keep their Pixel Data element byte for byte. Whatever
follows the Pixel Data in a file is copied as it is.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from svsicc.codecs.codes import Compression
from svsicc.colour.transform import ColourTable, IccProfile, Intent
from svsicc.convert.apply import ApplyResult, PageResult
from svsicc.convert.engine import (
    BadSegment,
    PageJob,
    ProgressCallback,
    SegmentTask,
    WorkerPool,
    default_workers,
    process_segments,
)
from svsicc.convert.plan import (
    ORIGIN_EMBEDDED,
    ConversionPlan,
    ProfileChoice,
    ProfileSource,
    maps_as_identity,
)
from svsicc.dicom import marking
from svsicc.dicom.output import TempFolder, check_output
from svsicc.dicom.pixeldata import (
    FrameIndex,
    copy_range,
    offset_tables,
    read_frame,
    write_encapsulated,
)
from svsicc.dicom.series import Instance, Series, read_series
from svsicc.dicom.syntax import LOSSY_METHOD, transfer_syntax_name
from svsicc.exceptions import (
    OutputError,
    ProfileError,
    SvsiccError,
    UnsupportedLayoutError,
)
from svsicc.tiff.record import refuse_reapplying
from svsicc.version import __version__

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def apply_dicom(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    profile: ProfileSource = None,
    target: ProfileSource = None,
    intent: Intent | str | None = None,
    fallback_profile: ProfileSource = None,
    overwrite: bool = False,
    workers: int | None = None,
    keep_bad_tiles: bool = False,
    progress: ProgressCallback | None = None,
    pool: WorkerPool | None = None,
    before_commit: Callable[[Path, ApplyResult], None] | None = None,
    on_plan: Callable[[ConversionPlan], None] | None = None,
    cancel: threading.Event | None = None,
) -> ApplyResult:
    """Write the folder ``output``: the DICOM WSI series at ``source`` (a folder, or one of
    its .dcm files) with every VOLUME and THUMBNAIL frame converted from the optical path's ICC
    profile to ``target`` (default: the compact sRGB, as an input-class 'scnr' profile).

    The options mean what they mean for :func:`svsicc.apply`. ``output`` is built in a
    temporary folder beside it and renamed into place when complete; after any error neither
    remains. Returns an :class:`ApplyResult` whose pages are the instances, in the order of
    :func:`~svsicc.dicom.series.read_series` (``role`` the flavor, ``layout`` "frames").

    Raises:
        DicomFormatError: not DICOM, or a broken file (a frame cut short...).
        UnsupportedLayoutError: no WSI series, several series in a folder, a transfer syntax
            or photometric interpretation svsicc cannot re-encode.
        ProfileError, AlreadyAppliedError, OutputError, TileDecodeError,
        VerificationError: as for :func:`svsicc.apply`.
    """
    started = time.perf_counter()
    src, dst = Path(source), Path(output)
    choice = ProfileChoice.load(profile, fallback_profile, target, intent)
    series = read_series(src)
    check_output(src, dst, overwrite)
    refuse_applied(series)
    plan = series_plan(series, choice)
    if on_plan is not None:
        on_plan(plan)
    table = ColourTable.load_or_build(plan.source, plan.target, plan.intent)
    identity = maps_as_identity(plan.source, plan.target, table)
    marks = marking.Marks(
        plan.source,
        plan.target,
        plan.intent,
        identity,
        f"svsicc {__version__}",
        color_space=marking.color_space(plan.target),
    )
    mapping = new_uids(series)
    converting = [] if identity else [i for i in series.instances if i.converted]
    n_workers = default_workers() if workers is None else max(1, workers)
    pooled = n_workers > 1 and bool(converting) and table.file is not None
    own_pool = pool is None and pooled
    run_pool = WorkerPool(n_workers) if own_pool else (pool if pooled else None)
    counter = _Progress(progress, sum(len(i.frames.frames) for i in converting))
    try:
        with TempFolder(dst, cancel) as temp:
            pages: list[PageResult] = []
            bad: list[BadSegment] = []
            for number, instance in enumerate(series.instances):
                job = _Job(number, instance, instance in converting, temp.path)
                page, kept = _write_instance(job, marks, mapping, table, run_pool,
                                             keep_bad_tiles, counter, cancel)  # fmt: skip
                pages.append(page)
                bad.extend(kept)
            result = ApplyResult(
                source=src,  # as given: a file names its series in a folder of several
                output=dst,
                profile=plan.source,
                profile_origin=plan.origin,
                target=plan.target,
                intent=plan.intent,
                identity=identity,
                pages=tuple(pages),
                input_bytes=series.input_bytes,
                output_bytes=sum(f.stat().st_size for f in temp.path.iterdir()),
                seconds=0.0,
                bad_segments=tuple(bad),
                workers=run_pool.workers if run_pool is not None else 1,
                replaced_profile=plan.replaced,
            )
            if before_commit is not None:
                before_commit(temp.path, result)
            temp.commit()
    finally:
        if own_pool and run_pool is not None:
            run_pool.close()
    values = dict(result.__dict__)
    values["seconds"] = time.perf_counter() - started
    return ApplyResult(**values)


def refuse_applied(series: Series) -> None:
    for instance in series.instances:
        refuse_reapplying(instance.path, marking.applied_record(instance.dataset))


def embedded_profile(series: Series) -> tuple[IccProfile, str] | None:
    """The profile of the converted instances' optical path (they must agree), and where."""
    found: dict[bytes, Instance] = {}
    for instance in series.instances:
        if not instance.converted:
            continue
        ds = instance.dataset
        paths = list(ds.get("OpticalPathSequence", []))
        if len(paths) > 1:
            raise UnsupportedLayoutError(
                instance.path, f"{len(paths)} optical paths; svsicc converts brightfield RGB "
                "images with one"
            )  # fmt: skip
        for holder in [*paths, ds]:
            if "ICCProfile" in holder:
                found.setdefault(bytes(holder.ICCProfile), instance)
    if not found:
        return None
    if len(found) > 1:
        raise ProfileError(
            series.path,
            f"the VOLUME and THUMBNAIL instances carry {len(found)} different ICC profiles",
            hint="pass {profile} to choose the source profile",
        )
    data, instance = next(iter(found.items()))
    where = f"{ORIGIN_EMBEDDED} ({instance.path.name} optical path)"
    return IccProfile.from_bytes(data, f"{instance.path}: ICC Profile"), where


def series_plan(series: Series, choice: ProfileChoice) -> ConversionPlan:
    """The conversion plan of ``series``: apply's policy, the target as a 'scnr' profile."""
    target = marking.scanner_class(choice.target_profile)
    return choice.plan_for(series.path, lambda: embedded_profile(series), target=target)


def new_uids(series: Series) -> dict[str, str]:
    """Old -> new for every UID that names something of this series: instances, the series,
    the pyramid, concatenations (the study, frame of reference and dimension organisation
    stay: the copy is the same slide in the same space)."""
    from pydicom.uid import generate_uid

    mapping: dict[str, str] = {}
    for instance in series.instances:
        ds = instance.dataset
        for keyword in (
            "SOPInstanceUID",
            "SeriesInstanceUID",
            "PyramidUID",
            "ConcatenationUID",
            "SOPInstanceUIDOfConcatenationSource",
        ):
            value = ds.get(keyword)
            if value and str(value) not in mapping:
                mapping[str(value)] = str(generate_uid())
    return mapping


class _Progress:
    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def tick(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


@dataclass(frozen=True)
class _Job:
    """One instance to write: its number in the series, whether its frames are converted."""

    number: int
    instance: Instance
    convert: bool
    folder: Path


def output_name(instance: Instance, new_uid: str) -> str:
    """The source's file name; an old SOP Instance UID in it becomes the new one."""
    return instance.path.name.replace(instance.sop_instance_uid, new_uid)


def _write_instance(
    job: _Job,
    marks: marking.Marks,
    mapping: dict[str, str],
    table: ColourTable,
    pool: WorkerPool | None,
    keep_bad: bool,
    counter: _Progress,
    cancel: threading.Event | None,
) -> tuple[PageResult, list[BadSegment]]:
    instance = job.instance
    ds = copy.deepcopy(instance.dataset)  # a shallow copy would share its elements
    marking.remap_uids(ds, mapping)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    index = instance.frames
    target = job.folder / output_name(instance, str(ds.SOPInstanceUID))
    spool_path = job.folder / f".frames-{job.number}.spool"
    lengths: list[int] = []
    bad: list[BadSegment] = []
    try:
        with open(instance.path, "rb") as source, open(target, "xb") as out:
            if job.convert:
                with open(spool_path, "w+b") as spool:
                    for data, kept in _converted_frames(job, source, table, pool, keep_bad):
                        spool.write(data)
                        lengths.append(len(data))
                        if kept is not None:
                            bad.append(kept)
                        counter.tick()
                        if cancel is not None and cancel.is_set():
                            raise KeyboardInterrupt
                    kept_pairs = tuple((job.number, b.segment) for b in bad)
                    frame_marks = marks if not kept_pairs else _with_kept(marks, kept_pairs)
                    _describe_new_frames(ds, instance, lengths, spool)
                    marking.mark_instance(ds, frame_marks, instance.sop_instance_uid, True)
                    _set_offset_tables(ds, index, lengths)
                    _write_header(ds, out)
                    _write_frames(out, source, index, lengths, spool)
            else:
                marking.mark_instance(ds, marks, instance.sop_instance_uid, instance.converted)
                _write_header(ds, out)
                copy_range(source, out, index.element_start, index.file_size)
    except OSError as exc:
        raise OutputError(target, f"cannot write the copy: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool_path)
    rewritten = len(lengths) - len(bad)
    page = PageResult(
        index=job.number,
        role=instance.flavor.lower(),
        compression=transfer_syntax_name(instance.transfer_syntax),
        segments=len(index.frames),
        rewritten=rewritten,
        empty=0,
        kept_bad=len(bad),
        bytes_before=index.data_bytes,
        bytes_after=sum(lengths) if job.convert else index.data_bytes,
        layout="frames",
    )
    return page, bad


def _with_kept(marks: marking.Marks, kept: tuple[tuple[int, int], ...]) -> marking.Marks:
    return replace(marks, kept=kept)


def _converted_frames(
    job: _Job,
    source: BinaryIO,
    table: ColourTable,
    pool: WorkerPool | None,
    keep_bad: bool,
) -> Iterator[tuple[bytes, BadSegment | None]]:
    """Each frame's new bytes in frame order (a bad one's original bytes, with why)."""
    instance = job.instance
    index = instance.frames
    assert instance.coding is not None
    page = PageJob(job.number, instance.coding.compression, instance.coding.photometric, 1, None)
    tasks = [
        SegmentTask(job.number, n, fragments[0][0], index.frame_length(n), instance.rows,
                    instance.cols)
        for n, fragments in enumerate(index.frames)
    ]  # fmt: skip
    reader = _FrameReader(source, index)
    on_pool = pool if index.single_fragment else None
    table_file = table.file if on_pool is not None else None
    stream = process_segments(
        instance.path, (page,), tasks, table, table_file, on_pool, keep_bad, reader
    )
    try:
        with contextlib.closing(stream):
            for task, result in stream:
                if isinstance(result, BadSegment):
                    yield read_frame(source, index, task.segment), result
                else:
                    yield bytes(result), None
    except SvsiccError as exc:
        # The engine names IFD and tile; a DICOM file has frames.
        where = f"frame {exc.tile}: " if exc.tile is not None else ""
        raise type(exc)(instance.path, where + exc.problem, hint=exc.hint) from None


class _FrameReader:
    """What process_segments reads through: a task's offset is its frame's first fragment, and
    a read returns the whole frame (fragments joined)."""

    def __init__(self, fh: BinaryIO, index: FrameIndex) -> None:
        self._fh, self._index = fh, index
        self._frames = {fragments[0][0]: n for n, fragments in enumerate(index.frames)}
        self._offset = 0

    def seek(self, offset: int) -> None:
        self._offset = offset

    def read(self, size: int) -> bytes:
        return read_frame(self._fh, self._index, self._frames[self._offset])


def _describe_new_frames(
    ds: Dataset, instance: Instance, lengths: list[int], spool: BinaryIO
) -> None:
    """One more lossy step in Lossy Image Compression Ratio/Method when the re-encode lost."""
    coding = instance.coding
    if coding is None or not coding.lossy or not lengths:
        return
    if coding.compression != Compression.JPEG:  # JPEG 2000: a reversible stream lost nothing
        from svsicc.codecs.jpeg2k import parse_header

        spool.seek(0)
        if parse_header(spool.read(lengths[0])).coding.reversible:
            return
    raw = instance.rows * instance.cols * 3 * len(lengths)
    marking.append_lossy_step(
        ds, raw / max(sum(lengths), 1), LOSSY_METHOD[instance.transfer_syntax]
    )


def _set_offset_tables(ds: Dataset, index: FrameIndex, lengths: list[int]) -> None:
    if not index.encapsulated:
        return
    tables = offset_tables(index.offset_table, lengths)
    if tables.extended is not None:
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = tables.extended
    else:
        for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in ds:
                delattr(ds, keyword)


def _write_header(ds: Dataset, out: BinaryIO) -> None:
    """Preamble, file meta and every element before the Pixel Data, written by pydicom in the
    source's transfer syntax."""
    import pydicom

    pydicom.dcmwrite(out, ds, enforce_file_format=True)


def _write_frames(
    out: BinaryIO, source: BinaryIO, index: FrameIndex, lengths: list[int], spool: BinaryIO
) -> None:
    """The Pixel Data element with the spooled frames, then what followed it in the source."""

    def frames() -> Iterator[bytes]:
        spool.seek(0)
        for length in lengths:
            yield spool.read(length)

    if index.encapsulated:
        basic = offset_tables(index.offset_table, lengths).basic
        write_encapsulated(out, index.header, basic, frames())
    else:
        out.write(index.header)
        for frame in frames():
            out.write(frame)
        # the element's own padding (an odd length made even), as stored
        copy_range(source, out, index.frames[-1][-1][0] + index.frames[-1][-1][1], index.end)
    copy_range(source, out, index.end, index.file_size)
