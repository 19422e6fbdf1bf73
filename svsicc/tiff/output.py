"""The output file's life: a temporary file beside the destination, renamed into place only when
complete, removed after any error, and cleaned up by the next run after a kill -9.

Temporary files are named ``.<destination name>.<pid>[.<purpose>].svsicc-tmp``. The pid only
keeps the names of concurrent writers apart; whether a temporary file is still being written is
told by a lock: its writer holds an exclusive lock on it for its whole life, and a temporary
file nobody holds a lock on is stale. That stays true for a writer that is a zombie (the kernel
drops its locks when it dies, reaped or not), for a pid reused by an unrelated process, and for
a writer on another host of a shared file system (NFS carries the lock to the server).

Copies skip the holes of sparse inputs, so a sparse file stays sparse (and costs no time to copy).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from svsicc.exceptions import OutputError
from svsicc.tiff import file as tiff

TEMP_SUFFIX = ".svsicc-tmp"
# Set by the command line's SIGINT/SIGTERM handler. Checked before every rename, so an interrupt
# whose KeyboardInterrupt was swallowed by library code still leaves no output behind.
_COPY_CHUNK = 16 * 1024 * 1024
# Open file description locks (Linux): owned by the open file, not by the process, so opening
# and closing the same file elsewhere in the writer (apply --verify reads the finished temporary
# file) does not drop the writer's lock, as it would drop a classic POSIX record lock. Elsewhere
# lockf, with the temporary files this process holds never opened a second time here.
_OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)
# Temporary files this process holds (and locks): never judged, never opened again.
_HELD: set[str] = set()
# Errors that mean "this file system keeps no locks" (NFS mounted with nolock and no lockd...).
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def temp_name(destination: Path, purpose: str = "") -> Path:
    """The temporary file for ``destination``; ``purpose`` ([a-z]+) tells several apart."""
    if purpose and not re.fullmatch(r"[a-z]+", purpose):
        raise ValueError(f"temporary file purpose must be lowercase letters, not {purpose!r}")
    middle = f".{purpose}" if purpose else ""
    return destination.with_name(f".{destination.name}.{os.getpid()}{middle}{TEMP_SUFFIX}")


def _try_lock(fd: int) -> bool | None:
    """An exclusive lock on the whole file: True taken, False held by someone else, None when
    the file system keeps no locks."""
    try:
        if _OFD_SETLK is not None:
            # struct flock: l_type, l_whence, l_start, l_len (0: to the end), l_pid (0 for OFD).
            fcntl.fcntl(fd, _OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        if exc.errno in _NO_LOCKS:
            return None
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def create_locked(path: Path) -> int:
    """Create ``path`` (it must not exist) and lock it; the lock lives as long as the fd.

    Between the creation and the lock another run's cleanup may see the file unlocked and remove
    it: the lock is then taken on a file no longer at ``path``, and creation starts over.
    """
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        locked = _try_lock(fd)
        if locked is not False and _same_file(fd, path):
            _HELD.add(str(path))
            return fd  # locked, or on a file system without locks: the best there is
        os.close(fd)
        time.sleep(0.01)
    raise OSError(errno.EBUSY, "another process keeps taking the temporary file")


def release(fd: int, path: Path, *, remove: bool) -> None:
    """Close a file from :func:`create_locked`, removing it first when ``remove`` (so that it is
    never seen unlocked)."""
    if remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    _HELD.discard(str(path))
    os.close(fd)


def remove_stale_temps(destination: Path) -> list[Path]:
    """Remove the temporary files for ``destination`` that no process holds a lock on."""
    pattern = re.compile(
        rf"^\.{re.escape(destination.name)}\.\d+(?:\.[a-z]+)?{re.escape(TEMP_SUFFIX)}$"
    )
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(destination.parent):
            if pattern.match(entry.name) and _remove_if_unlocked(Path(entry.path)):
                removed.append(Path(entry.path))
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    if str(path) in _HELD:
        return False
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # Not lockable (a live writer) or cannot tell (no locks here): keep it.
        if _try_lock(fd) is not True or not _same_file(fd, path):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class TempOutput:
    """``with TempOutput(dst) as out: ... out.commit()``: dst appears only on commit."""

    def __init__(self, destination: Path, cancel: threading.Event | None = None) -> None:
        self.destination = destination
        # Set by whoever interrupts the run: nothing is renamed into place then, even if a
        # library swallowed the KeyboardInterrupt on the way.
        self.cancel = cancel
        self.path = temp_name(destination)
        self.file: BinaryIO | None = None
        self._committed = False

    def __enter__(self) -> TempOutput:
        remove_stale_temps(self.destination)
        try:
            fd = create_locked(self.path)
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
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            # Renamed while still open (and locked): the temporary file is never seen unlocked.
            os.replace(self.path, self.destination)
        except OSError as exc:
            raise output_error(self.destination, exc) from None
        self._committed = True
        _HELD.discard(str(self.path))
        with contextlib.suppress(OSError):
            self.file.close()

    def __exit__(self, *exc: object) -> None:
        if self._committed:
            return
        # Removed before it is closed: closing drops the lock.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        _HELD.discard(str(self.path))
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()


def output_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(path, "no space left on the device while writing the copy")
    return OutputError(path, f"cannot write the copy: {exc.strerror or exc}")


def copy_ranges(src_fd: int, dst_fd: int, ranges: Sequence[tuple[int, int]]) -> None:
    """Copy byte ranges [start, end) from src to the same offsets in dst.

    Holes of a sparse src are skipped where dst has a hole too (it reads as zeros there, e.g.
    after ftruncate of a new file), so sparse inputs stay sparse and cost nothing to copy.

    Both file positions are left where they were: finding holes moves them (lseek SEEK_DATA /
    SEEK_HOLE), and the buffered file objects around these fds read and write from where they
    believe the position is. (A reader whose position was left at the end of the file read a
    segment lying at the very end short.)
    """
    positions = [(fd, os.lseek(fd, 0, os.SEEK_CUR)) for fd in (src_fd, dst_fd)]
    try:
        _copy_ranges(src_fd, dst_fd, ranges)
    finally:
        for fd, position in positions:
            os.lseek(fd, position, os.SEEK_SET)


def _copy_ranges(src_fd: int, dst_fd: int, ranges: Sequence[tuple[int, int]]) -> None:
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
    offsets, BigTIFF header and IFDs, see :func:`svsicc.tiff.file.promote_to_bigtiff`) is written as
    a temporary file and opened; it is removed on exit, and a kill -9 leaves it for the next run
    to remove like any temporary file. OS errors inside (disk full) become :class:`OutputError`.
    """
    path = temp_name(out.destination, "bigtiff")
    try:
        out.reset()
        fd = create_locked(path)
        try:
            # Kept open to the end: its lock tells other runs the twin is in use.
            with os.fdopen(fd, "w+b", closefd=False) as fh:
                os.ftruncate(fh.fileno(), reader.file_size)
                copy_ranges(reader.fileno(), fh.fileno(), [(0, reader.file_size)])
                tiff.promote_to_bigtiff(reader, fh)
            twin = tiff.TiffReader(path)
            try:
                yield twin
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                twin.close()
        finally:
            release(fd, path, remove=True)
    except OSError as exc:
        raise output_error(out.destination, exc) from None
