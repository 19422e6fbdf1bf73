"""A DICOM WSI series in an archive: one folder of ``.dcm`` files is one slide.

migrate finds a series by its folder (any folder holding ``.dcm`` files, not descended into:
:mod:`svsicc.archive.discover`), hashes it as a whole (each file's sha256 under its name, in name
order), and writes its copy as a folder of the same relative path under DST_DIR through
:func:`svsicc.apply` (which hands it to :func:`svsicc.dicom.apply.apply_dicom`, whose temporary
folder is renamed into place only when complete). :data:`DICOM_SERIES` is what
:mod:`svsicc.archive.slide_job` needs of it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from svsicc.archive.discover import series_files, sha256_file, slides_beside_series
from svsicc.archive.slide_job import SlideKind
from svsicc.exceptions import OutputError, UnsupportedLayoutError
from svsicc.tiff.record import AppliedRecord


def sha256_folder(folder: Path) -> str:
    """One digest for a folder: each file's name and sha256, in name order."""
    digest = hashlib.sha256()
    for path in series_files(folder):
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in series_files(folder))


def _read_series(source: Path) -> tuple[AppliedRecord | None, bool]:
    from svsicc.dicom.info import dicom_info

    others = slides_beside_series(source)
    if others:
        raise UnsupportedLayoutError(
            source,
            f"a DICOM series folder that also holds {', '.join(others)}; migrate converts a "
            "series folder as one slide and would leave those out",
            hint="move the other slides to a folder of their own",
        )
    info = dicom_info(source)
    return info.applied, info.profile is not None


def _series_marked(path: Path) -> bool:
    from svsicc.dicom.info import dicom_info

    return dicom_info(path).applied is not None


def _remove_folder(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def copy_series_as_is(source: Path, output: Path) -> tuple[str, int]:
    """Copy the series folder byte for byte (through a temporary folder renamed into place);
    return its folder digest and size."""
    from svsicc.dicom.output import TempFolder

    with TempFolder(output) as temp:
        for path in series_files(source):
            try:
                shutil.copyfile(path, temp.path / path.name)
            except OSError as exc:
                raise OutputError(output, f"cannot copy {path.name}: {exc.strerror}") from None
        digest = sha256_folder(temp.path)
        temp.commit()
    return digest, folder_size(output)


DICOM_SERIES = SlideKind(
    _read_series, sha256_folder, copy_series_as_is, _series_marked, _remove_folder
)
