"""The output folder's life: built in a temporary folder beside OUTPUT, renamed into place only
when complete, removed after any error, and cleaned up by the next run after a kill -9.

OUTPUT (:func:`check_output`) is a folder apart from the input's: not it, not a folder holding
it, not one inside it, not a new name ending in .dcm (unless the input folder's does).
``overwrite`` replaces an empty folder or an svsicc copy (every visible file a DICOM instance
carrying svsicc's record), nothing else, so the original series is never opened for writing or
removed.

The temporary folder is ``.<OUTPUT name>.<pid>.svsicc-tmp``; its writer holds an exclusive
``flock`` on the ``.lock`` file inside for its whole life, so a folder whose lock can be taken
is stale (its writer died) and is removed by the next run to the same OUTPUT.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import threading
from pathlib import Path
from types import TracebackType

from svsicc.dicom.detect import has_dicom_magic
from svsicc.exceptions import OutputError

TEMP_SUFFIX = ".svsicc-tmp"
LOCK_NAME = ".lock"
FILE_SUFFIXES = (".dcm", ".dicom")  # an OUTPUT so named is a file name, not a folder


def check_output(source: Path, output: Path, overwrite: bool) -> None:
    """OUTPUT must be a folder apart from the input's (not it, not inside it, not holding it),
    and new unless ``overwrite``, which replaces only an empty folder or an svsicc copy: the
    original series is never written to or removed."""
    if output.exists() and not output.is_dir():
        raise OutputError(output, "{output} exists and is not a folder; give a folder for DICOM")
    folder = source if source.is_dir() else source.parent
    named_as_file = output.suffix.lower() in FILE_SUFFIXES and not output.is_dir()
    if named_as_file and folder.suffix.lower() != output.suffix.lower():  # migrate mirrors names
        raise OutputError(
            output,
            "{output} must be a folder: the copy is a series of .dcm files",
            hint="give a folder name",
        )
    clash = _overlap(folder, output)
    if clash is not None:
        raise OutputError(output, clash, hint="give a folder outside the input's for the copy")
    if output.exists() and not overwrite:
        raise OutputError(output, "{output} exists", hint="pass {overwrite} to replace it")
    if output.exists():
        foreign = not_a_copy(output)
        if foreign:
            shown = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            )
            raise OutputError(
                output,
                f"{{output}} holds files that are not an svsicc copy: {shown}; choose another "
                "folder or empty it",
            )
    if not output.parent.is_dir():
        raise OutputError(output, "the output's parent folder does not exist")


def _overlap(folder: Path, output: Path) -> str | None:
    """Why ``output`` may not be written beside ``folder`` (the input's): the same folder, one
    holding it, or one inside it (the temporary folder and the copy would land in the
    original's). Links are followed."""
    inside, out = folder.resolve(), output.resolve()
    if out == inside or (output.exists() and os.path.samefile(folder, output)):
        return "{output} is the input folder"
    if out in inside.parents:
        return f"{{output}} holds the input folder {folder}"
    if inside in out.parents:
        return f"{{output}} is inside the input folder {folder}"
    return None


def not_a_copy(output: Path) -> list[str]:
    """The names in the folder ``output`` that keep it from being replaced: anything but a
    DICOM instance carrying svsicc's record (hidden files aside; any folder counts)."""
    foreign = []
    for entry in sorted(output.iterdir()):
        if entry.is_dir():
            foreign.append(entry.name + "/")
        elif entry.name.startswith("."):
            continue
        elif not _carries_record(entry):
            foreign.append(entry.name)
    return foreign


def _carries_record(path: Path) -> bool:
    """A DICOM file whose header holds svsicc's record (private block or derivation)."""
    if not path.is_file() or not has_dicom_magic(path):
        return False
    import pydicom
    from pydicom.errors import InvalidDicomError

    from svsicc.dicom import marking

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, struct.error):
        return False  # a file pydicom cannot read is no instance of a copy
    return marking.applied_record(ds) is not None


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
