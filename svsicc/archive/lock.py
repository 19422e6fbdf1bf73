"""One coordinator per DST_DIR (an exclusive lock file) and the sweep of stale temporary files."""

from __future__ import annotations

import fcntl
import os
import re
import socket
from pathlib import Path

from svsicc.archive.journal import (
    utc_now,
)
from svsicc.exceptions import OutputError
from svsicc.tiff.output import TEMP_SUFFIX, remove_stale_temps

LOCK_NAME = ".svsicc-migrate.lock"

_TEMP_PATTERN = re.compile(rf"^\.(?P<name>.+)\.\d+(?:\.[a-z]+)?{re.escape(TEMP_SUFFIX)}$")


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
