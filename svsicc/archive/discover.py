"""Finding the slides of an archive: .svs and .bif files, .tif/.tiff files of a format svsicc
converts (Aperio, generic tiled TIFF, Ventana BIF), by content, and DICOM WSI series (a folder
holding .dcm files is one slide)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from svsicc.exceptions import SvsiccError, TiffFormatError
from svsicc.tiff import file as tiff
from svsicc.tiff.formats import APERIO, GENERIC_TILED, VENTANA, guess_format

SLIDE_SUFFIXES = (".svs", ".bif")

TIFF_SUFFIXES = (".tif", ".tiff")
CONVERTED_TIFF_FORMATS = (APERIO, GENERIC_TILED, VENTANA)

HASH_CHUNK = 8 * 1024 * 1024
DICOM_SUFFIX = ".dcm"


@dataclass(frozen=True)
class FoundSlide:
    """A slide discovered under SRC_DIR; ``rel_path`` uses POSIX separators."""

    rel_path: str
    path: Path
    size: int
    mtime_ns: int


def matches(rel_path: str, patterns: Sequence[str]) -> bool:
    """Glob match on the path relative to SRC_DIR (``*`` crosses ``/``), or on the file name
    for a pattern without ``/``: ``--exclude '*.tif'``, ``--include 'lab1/*'``."""
    name = rel_path.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(rel_path, p) or ("/" not in p and fnmatch.fnmatchcase(name, p))
        for p in patterns
    )


def is_convertible_tiff(path: Path) -> bool:
    """Whether a .tif/.tiff is of a format svsicc converts, by content (unreadable: no). A
    plain or unknown TIFF in an archive is somebody's figure, not a slide to report as failed."""
    try:
        with tiff.TiffReader(path) as reader:
            return guess_format(reader).name in CONVERTED_TIFF_FORMATS
    except SvsiccError:
        return False


def discover(
    source_dir: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_dir: Path | None = None,
) -> list[FoundSlide]:
    """Slides under ``source_dir`` in path order: every ``.svs`` and ``.bif``, and the
    ``.tif``/``.tiff`` files whose content is a format svsicc converts, and every folder below
    ``source_dir`` holding ``.dcm`` files (a DICOM series). Hidden files (``._x.svs``
    resource forks, temporary files) and ``skip_dir`` (DST_DIR inside SRC_DIR) are left out."""
    found: list[FoundSlide] = []
    skip = None if skip_dir is None else os.path.realpath(skip_dir)
    for dirpath, dirnames, filenames in os.walk(source_dir):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) != skip
        )
        if holds_series(filenames):
            # A DICOM WSI series: the folder is the slide; what is below it is not looked at.
            dirnames[:] = []
            folder = Path(dirpath)
            rel = folder.relative_to(source_dir).as_posix()
            if rel == ".":  # SRC_DIR is the series itself: its copy is DST_DIR/<its name>
                rel = Path(os.path.realpath(source_dir)).name
            if (include and not matches(rel, include)) or (exclude and matches(rel, exclude)):
                continue
            try:
                files = [p.stat() for p in series_files(folder)]
            except (OSError, SvsiccError):
                continue
            size = sum(st.st_size for st in files)
            mtime = max((st.st_mtime_ns for st in files), default=0)
            found.append(FoundSlide(rel, folder, size, mtime))
            continue
        for name in sorted(filenames):
            suffix = os.path.splitext(name)[1].lower()
            if name.startswith(".") or suffix not in SLIDE_SUFFIXES + TIFF_SUFFIXES:
                continue
            path = Path(dirpath, name)
            rel = path.relative_to(source_dir).as_posix()
            if include and not matches(rel, include):
                continue
            if exclude and matches(rel, exclude):
                continue
            try:
                st = path.stat()
            except OSError:
                continue  # vanished or a dangling link: nothing to migrate
            if suffix in TIFF_SUFFIXES and not is_convertible_tiff(path):
                continue
            found.append(FoundSlide(rel, path, st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda s: s.rel_path)


def series_files(folder: Path) -> list[Path]:
    """The .dcm files of a series folder, in name order (what its hash and size cover)."""
    return [folder / n for n in _visible_files(folder) if n.lower().endswith(DICOM_SUFFIX)]


def slides_beside_series(folder: Path) -> list[str]:
    """Names of other slide files in a series folder: migrate converts the folder as one
    series, so it refuses the folder rather than leave them out unsaid."""
    suffixes = SLIDE_SUFFIXES + TIFF_SUFFIXES
    return [n for n in _visible_files(folder) if os.path.splitext(n)[1].lower() in suffixes]


def _visible_files(folder: Path) -> list[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise TiffFormatError(folder, f"cannot list the folder: {exc.strerror}") from None
    return [n for n in names if not n.startswith(".") and (folder / n).is_file()]


def holds_series(filenames: list[str]) -> bool:
    return any(n.lower().endswith(DICOM_SUFFIX) and not n.startswith(".") for n in filenames)


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
