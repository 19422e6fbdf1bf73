"""The output folder's life: built in a temporary folder beside OUTPUT, renamed into place only
when complete, removed after any error, and cleaned up by the next run after a kill -9.

The temporary folder is ``.<OUTPUT name>.<pid>.svsicc-tmp``; its writer holds an exclusive
``flock`` on the ``.lock`` file inside for its whole life, so a folder whose lock can be taken
is stale (its writer died) and is removed by the next run to the same OUTPUT.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
from pathlib import Path
from types import TracebackType

from svsicc.exceptions import OutputError

TEMP_SUFFIX = ".svsicc-tmp"
LOCK_NAME = ".lock"


def check_output(source: Path, output: Path, overwrite: bool) -> None:
    """OUTPUT must be a folder that is not the input's, and new unless ``overwrite``."""
    if output.exists() and not output.is_dir():
        raise OutputError(output, "{output} exists and is not a folder; give a folder for DICOM")
    folder = source if source.is_dir() else source.parent
    if output.exists() and os.path.samefile(folder, output):
        raise OutputError(
            output, "{output} is the input folder", hint="give another folder for the copy"
        )
    if output.exists() and not overwrite:
        raise OutputError(output, "{output} exists", hint="pass {overwrite} to replace it")
    if not output.parent.is_dir():
        raise OutputError(output, "the output's parent folder does not exist")


class TempFolder:
    """``with TempFolder(OUTPUT) as temp: ...; temp.commit()``: nothing at OUTPUT unless
    committed; the temporary folder is gone either way."""

    def __init__(self, destination: Path, cancel: threading.Event | None = None) -> None:
        self.destination = destination
        self.cancel = cancel
        self.path = destination.with_name(f".{destination.name}.{os.getpid()}{TEMP_SUFFIX}")
        self._lock: int | None = None
        self._committed = False

    def __enter__(self) -> TempFolder:
        remove_stale(self.destination)
        try:
            if self.path.exists():
                shutil.rmtree(self.path)  # ours from an earlier call in this process
            self.path.mkdir()
            self._lock = os.open(self.path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._cleanup()
            raise OutputError(self.destination, f"cannot create the output: {exc}") from None
        return self

    def commit(self) -> None:
        """Rename the finished folder into place (an existing OUTPUT, allowed by the caller's
        ``overwrite``, is moved aside first and removed after)."""
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / LOCK_NAME)
        old = None
        try:
            if self.destination.exists():
                old = self.destination.with_name(
                    f".{self.destination.name}.{os.getpid()}.old{TEMP_SUFFIX}"
                )
                os.rename(self.destination, old)
            os.rename(self.path, self.destination)
        except OSError as exc:
            if old is not None and not self.destination.exists():
                os.rename(old, self.destination)
            raise OutputError(self.destination, f"cannot rename the output: {exc}") from None
        self._committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if not self._committed:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def remove_stale(destination: Path) -> None:
    """Remove temporary folders for ``destination`` whose writer is gone (their lock is free)."""
    pattern = f".{destination.name}.*{TEMP_SUFFIX}"
    for candidate in destination.parent.glob(pattern):
        if not candidate.is_dir():
            continue
        try:
            fd = os.open(candidate / LOCK_NAME, os.O_RDWR)
        except FileNotFoundError:
            continue  # being committed, or not ours to judge
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it (or the file system keeps no locks: keep it)
        finally:
            os.close(fd)
        shutil.rmtree(candidate, ignore_errors=True)
