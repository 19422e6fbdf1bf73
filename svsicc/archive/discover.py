"""Finding the slides of an archive: .svs and .bif files, and .tif/.tiff files of a format svsicc
converts (Aperio, generic tiled TIFF, Ventana BIF), by content."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from svsicc.exceptions import SvsiccError
from svsicc.tiff import file as tiff
from svsicc.tiff.formats import APERIO, GENERIC_TILED, VENTANA, guess_format

SLIDE_SUFFIXES = (".svs", ".bif")

TIFF_SUFFIXES = (".tif", ".tiff")
CONVERTED_TIFF_FORMATS = (APERIO, GENERIC_TILED, VENTANA)

HASH_CHUNK = 8 * 1024 * 1024


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
    ``.tif``/``.tiff`` files whose content is a format svsicc converts. Hidden files (``._x.svs``
    resource forks, temporary files) and ``skip_dir`` (DST_DIR inside SRC_DIR) are left out."""
    found: list[FoundSlide] = []
    skip = None if skip_dir is None else os.path.realpath(skip_dir)
    for dirpath, dirnames, filenames in os.walk(source_dir):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) != skip
        )
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


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
