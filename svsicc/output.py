"""The output file's life: a temporary file beside the destination, renamed into place only when
complete, removed after any error, and cleaned up by the next run after a kill -9."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .exceptions import OutputError

TEMP_SUFFIX = ".svsicc-tmp"
_COPY_CHUNK = 16 * 1024 * 1024


def temp_name(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.{os.getpid()}{TEMP_SUFFIX}")


def remove_stale_temps(destination: Path) -> list[Path]:
    """Remove temporary files left for ``destination`` by runs whose process is gone."""
    pattern = re.compile(rf"^\.{re.escape(destination.name)}\.(\d+){re.escape(TEMP_SUFFIX)}$")
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

    def commit(self) -> None:
        assert self.file is not None
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
    """Copy byte ranges [start, end) from src to the same offsets in dst."""
    for start, end in ranges:
        offset = start
        while offset < end:
            size = min(_COPY_CHUNK, end - offset)
            copied = _copy_chunk(src_fd, dst_fd, offset, size)
            if copied <= 0:
                raise OSError(errno.EIO, f"short copy at offset {offset}")
            offset += copied


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
