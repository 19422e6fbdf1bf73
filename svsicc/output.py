"""The output file's life: a temporary file beside the destination, renamed into place only when
complete, removed after any error, and cleaned up by the next run after a kill -9.

Temporary files are named ``.<destination name>.<pid>[.<purpose>].svsicc-tmp`` so that the next
run for the same destination can tell which ones belong to a dead process. Copies skip the holes
of sparse inputs, so a sparse file stays sparse (and costs no time to copy).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from . import tiff
from .exceptions import OutputError

TEMP_SUFFIX = ".svsicc-tmp"
# Set by the command line's SIGINT/SIGTERM handler. Checked before every rename, so an interrupt
# whose KeyboardInterrupt was swallowed by library code still leaves no output behind.
INTERRUPTED = threading.Event()
_COPY_CHUNK = 16 * 1024 * 1024


def temp_name(destination: Path, purpose: str = "") -> Path:
    """The temporary file for ``destination``; ``purpose`` ([a-z]+) tells several apart."""
    if purpose and not re.fullmatch(r"[a-z]+", purpose):
        raise ValueError(f"temporary file purpose must be lowercase letters, not {purpose!r}")
    middle = f".{purpose}" if purpose else ""
    return destination.with_name(f".{destination.name}.{os.getpid()}{middle}{TEMP_SUFFIX}")


def remove_stale_temps(destination: Path) -> list[Path]:
    """Remove temporary files left for ``destination`` by runs whose process is gone."""
    pattern = re.compile(
        rf"^\.{re.escape(destination.name)}\.(\d+)(?:\.[a-z]+)?{re.escape(TEMP_SUFFIX)}$"
    )
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(destination.parent):
            match = pattern.match(entry.name)
            if match and not _pid_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers (an earlier call in this process) are stale too
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TempOutput:
    """``with TempOutput(dst) as out: ... out.commit()``: dst appears only on commit."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        self.path = temp_name(destination)
        self.file: BinaryIO | None = None
        self._committed = False

    def __enter__(self) -> TempOutput:
        remove_stale_temps(self.destination)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise OutputError(
                self.destination, f"cannot create a temporary file beside it: {exc.strerror}"
            ) from None
        self.file = os.fdopen(fd, "w+b")
        return self

    def reset(self) -> None:
        """Empty the temporary file, to write the copy again from scratch."""
        assert self.file is not None
        self.file.flush()
        self.file.seek(0)
        self.file.truncate()

    def commit(self) -> None:
        assert self.file is not None
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.path, self.destination)
        except OSError as exc:
            raise output_error(self.destination, exc) from None
        self._committed = True

    def __exit__(self, *exc: object) -> None:
        if self._committed:
            return
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def output_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(path, "no space left on the device while writing the copy")
    return OutputError(path, f"cannot write the copy: {exc.strerror or exc}")


def copy_ranges(src_fd: int, dst_fd: int, ranges: Sequence[tuple[int, int]]) -> None:
    """Copy byte ranges [start, end) from src to the same offsets in dst.

    Holes of a sparse src are skipped where dst has a hole too (it reads as zeros there, e.g.
    after ftruncate of a new file), so sparse inputs stay sparse and cost nothing to copy.
    """
    for start, end in ranges:
        for data_start, data_end in _data_ranges(src_fd, dst_fd, start, end):
            offset = data_start
            while offset < data_end:
                size = min(_COPY_CHUNK, data_end - offset)
                copied = _copy_chunk(src_fd, dst_fd, offset, size)
                if copied <= 0:
                    raise OSError(errno.EIO, f"short copy at offset {offset}")
                offset += copied


def _data_ranges(src_fd: int, dst_fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The parts of [start, end) that must be copied: all but holes of src that dst shares."""
    position = start
    for data, hole in _file_data(src_fd, start, end):
        # Over a hole of src, copy (zeros) only where dst holds bytes.
        yield from _file_data(dst_fd, position, data)
        yield data, hole
        position = hole
    yield from _file_data(dst_fd, position, end)


def _file_data(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The ranges of [start, end) that are not holes of ``fd`` (all of it if nobody can tell)."""
    position = start
    while position < end:
        data = min(_seek(fd, position, os.SEEK_DATA, end), end)
        if data >= end:
            return
        hole = min(_seek(fd, data, os.SEEK_HOLE, end), end)
        if hole <= data:
            hole = end  # the file system cannot tell: all of it
        yield data, hole
        position = hole


def _seek(fd: int, offset: int, whence: int, limit: int) -> int:
    """lseek with SEEK_DATA / SEEK_HOLE; ``limit`` when there is no more data, ``offset`` (copy
    everything) where the file system cannot tell."""
    try:
        return os.lseek(fd, offset, whence)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return limit
        return offset if whence == os.SEEK_DATA else limit


def _copy_chunk(src_fd: int, dst_fd: int, offset: int, size: int) -> int:
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(src_fd, dst_fd, size, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
    data = os.pread(src_fd, size, offset)
    return os.pwrite(dst_fd, data, offset)


def gaps(size: int, holes: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The ranges of [0, size) outside the sorted, disjoint ``holes``."""
    position = 0
    for start, end in holes:
        if start > position:
            yield position, start
        position = max(position, end)
    if position < size:
        yield position, size


@contextlib.contextmanager
def bigtiff_twin(reader: tiff.TiffReader, out: TempOutput) -> Iterator[tiff.TiffReader]:
    """A BigTIFF copy of the classic TIFF ``reader`` reads, beside ``out``'s destination.

    For a copy that would pass 4 GiB: ``out`` is emptied, the twin (same data at the same
    offsets, BigTIFF header and IFDs, see :func:`svsicc.tiff.promote_to_bigtiff`) is written as
    a temporary file and opened; it is removed on exit, and a kill -9 leaves it for the next run
    to remove like any temporary file. OS errors inside (disk full) become :class:`OutputError`.
    """
    path = temp_name(out.destination, "bigtiff")
    try:
        out.reset()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "w+b") as fh:
                os.ftruncate(fh.fileno(), reader.file_size)
                copy_ranges(reader.fileno(), fh.fileno(), [(0, reader.file_size)])
                tiff.promote_to_bigtiff(reader, fh)
            with tiff.TiffReader(path) as twin:
                yield twin
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    except OSError as exc:
        raise output_error(out.destination, exc) from None
