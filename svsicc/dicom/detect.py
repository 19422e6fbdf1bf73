"""Whether an input is DICOM, told without importing pydicom (SVS users pay nothing for it)."""

from __future__ import annotations

import os
from pathlib import Path

PREAMBLE = 128
MAGIC = b"DICM"


def has_dicom_magic(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    try:
        with open(path, "rb") as fh:
            fh.seek(PREAMBLE)
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def is_dicom_input(path: str | os.PathLike[str]) -> bool:
    """Whether svsicc should treat ``path`` as a DICOM WSI series: a folder (a slide svsicc
    reads as TIFF is always one file), a DICOM Part 10 file, or a file named .dcm (which the
    DICOM reader then refuses in DICOM's words if it is not one)."""
    p = Path(path)
    if p.is_dir():
        return True
    return p.is_file() and (p.suffix.lower() == ".dcm" or has_dicom_magic(p))
