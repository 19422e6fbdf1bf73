"""A DICOM WSI series: its instances, what each one is, how its frames are coded and where.

Input is a folder of instances or one instance file (its series is then the one read, from the
files of its folder). Only files are read, never written; every instance's header is read with
pydicom up to its Pixel Data, and its frames indexed (:mod:`.pixeldata`).
"""

from __future__ import annotations

import os
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from svsicc.dicom.detect import has_dicom_magic
from svsicc.dicom.pixeldata import FrameIndex, index_frames
from svsicc.dicom.syntax import (
    ENCAPSULATED,
    IMPLICIT_LITTLE,
    NATIVE,
    FrameCoding,
    frame_coding,
    transfer_syntax_name,
)
from svsicc.exceptions import DicomFormatError, UnsupportedLayoutError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
CONVERTED_FLAVORS = ("VOLUME", "THUMBNAIL")
KEPT_FLAVORS = ("LABEL", "OVERVIEW")  # another camera: pixels and profile stay as they are
_ORDER = {flavor: n for n, flavor in enumerate(CONVERTED_FLAVORS + KEPT_FLAVORS)}


@dataclass(frozen=True, eq=False)
class Instance:
    """One file of the series: its header (without Pixel Data) and its frames' places."""

    path: Path
    dataset: Dataset
    flavor: str  # ImageType value 3: VOLUME, THUMBNAIL, LABEL, OVERVIEW
    transfer_syntax: str
    photometric: str
    rows: int
    cols: int
    frames: FrameIndex
    coding: FrameCoding | None  # None: svsicc cannot re-encode these frames (see problem)
    coding_problem: str | None = None

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def converted(self) -> bool:
        """Whether apply converts this instance's pixels (pyramid levels and thumbnail)."""
        return self.flavor in CONVERTED_FLAVORS

    @property
    def size(self) -> tuple[int, int]:
        """Total pixel matrix (columns, rows)."""
        ds = self.dataset
        return int(ds.get("TotalPixelMatrixColumns", self.cols)), int(
            ds.get("TotalPixelMatrixRows", self.rows)
        )

    @property
    def file_size(self) -> int:
        return self.frames.file_size


@dataclass(frozen=True)
class Series:
    path: Path  # the folder
    series_uid: str
    instances: tuple[Instance, ...]
    others: tuple[Path, ...] = field(default=())  # files of the folder not in this series

    @property
    def input_bytes(self) -> int:
        return sum(i.file_size for i in self.instances)


def read_series(path: str | os.PathLike[str]) -> Series:
    """The WSI series at ``path``: a folder holding one series, or one instance file (its
    folder's instances of the same series). Raises :class:`DicomFormatError` (not DICOM,
    broken file) or :class:`UnsupportedLayoutError` (no WSI, several series)."""
    given = Path(path)
    _need_pydicom(given)
    if not given.exists():
        raise DicomFormatError(given, "no such file or folder")
    if given.is_file():
        if not has_dicom_magic(given):
            raise DicomFormatError(given, "not a DICOM file (no 'DICM' after the preamble)")
        folder, wanted = given.parent, str(_read_header(given)[0].get("SeriesInstanceUID", ""))
    else:
        folder, wanted = given, None
    headers: dict[str, list[tuple[Path, Dataset, int]]] = defaultdict(list)
    others: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or not has_dicom_magic(entry):
            if entry.is_file() and not entry.name.startswith("."):
                others.append(entry)
            continue
        ds, start = _read_header(entry)
        if str(ds.get("SOPClassUID", "")) != WSI_SOP_CLASS:
            others.append(entry)
            continue
        headers[str(ds.get("SeriesInstanceUID", ""))].append((entry, ds, start))
    if wanted is None:
        if not headers:
            raise UnsupportedLayoutError(
                given,
                "no VL Whole Slide Microscopy image in this folder",
                hint="give the folder holding the series' .dcm files",
            )
        if len(headers) > 1:
            raise UnsupportedLayoutError(
                given,
                f"the folder holds {len(headers)} WSI series",
                hint="give one .dcm file of the series to convert",
            )
        wanted = next(iter(headers))
    if wanted not in headers:
        raise UnsupportedLayoutError(given, "not a VL Whole Slide Microscopy image")
    for uid, files in headers.items():
        if uid != wanted:
            others.extend(p for p, _ds, _start in files)
    instances = [_instance(*found) for found in headers[wanted]]
    instances.sort(key=lambda i: (_ORDER[i.flavor], -i.size[0] * i.size[1], str(i.path)))
    if not any(i.flavor == "VOLUME" for i in instances):
        raise UnsupportedLayoutError(given, "the series has no VOLUME instance")
    return Series(folder, wanted, tuple(instances), tuple(sorted(others)))


def _need_pydicom(path: Path) -> None:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        raise UnsupportedLayoutError(
            path, "reading DICOM needs pydicom, which is not installed",
            hint="pip install 'svsicc[dicom]'",
        ) from None  # fmt: skip


def _read_header(path: Path) -> tuple[Dataset, int]:
    """The header up to the Pixel Data, and where the Pixel Data element's tag is (pydicom
    stops reading right before it)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as fh:
            return pydicom.dcmread(fh, stop_before_pixels=True), fh.tell()
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, struct.error) as exc:
        raise DicomFormatError(path, f"pydicom cannot read the header: {exc}") from None


def _instance(path: Path, ds: Dataset, start: int) -> Instance:
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    image_type = [str(v) for v in ds.get("ImageType", [])]
    flavor = image_type[2].upper() if len(image_type) > 2 else ""
    if flavor not in _ORDER:
        shown = "\\".join(image_type) or "(none)"
        raise UnsupportedLayoutError(
            path, f"image type {shown}: not VOLUME, THUMBNAIL, LABEL or OVERVIEW"
        )
    if ts not in ENCAPSULATED | NATIVE:
        raise UnsupportedLayoutError(
            path, f"transfer syntax {transfer_syntax_name(ts)} is not supported"
        )
    rows, cols = _number(path, ds, "Rows"), _number(path, ds, "Columns")
    frames = _number(path, ds, "NumberOfFrames", 1) or 1
    samples, bits = _number(path, ds, "SamplesPerPixel"), _number(path, ds, "BitsAllocated")
    photometric = str(_value(path, ds, "PhotometricInterpretation"))
    planar = _number(path, ds, "PlanarConfiguration", 0)
    coding: FrameCoding | str
    if samples != 3 or bits != 8 or int(ds.get("PixelRepresentation", 0)) != 0:
        coding = f"{samples} samples of {bits} bits; only 8-bit RGB is supported"
    else:
        coding = frame_coding(ts, photometric, planar)
    if flavor in CONVERTED_FLAVORS and isinstance(coding, str):
        raise UnsupportedLayoutError(path, f"{flavor}: {coding} cannot be converted")
    eot = ds.get("ExtendedOffsetTable")
    with open(path, "rb") as fh:
        index = index_frames(
            fh,
            path,
            start,
            frames,
            rows * cols * 3,
            explicit_vr=ts != IMPLICIT_LITTLE,
            extended_offsets=bytes(eot) if eot else None,
        )
    return Instance(
        path=path,
        dataset=ds,
        flavor=flavor,
        transfer_syntax=ts,
        photometric=photometric,
        rows=rows,
        cols=cols,
        frames=index,
        coding=None if isinstance(coding, str) else coding,
        coding_problem=coding if isinstance(coding, str) else None,
    )


def _value(path: Path, ds: Dataset, keyword: str, default: object = None) -> object:
    """An image attribute's value; a missing required one is an error in DICOM's words."""
    try:
        value = ds.get(keyword)
    except (TypeError, ValueError, KeyError, struct.error) as exc:  # pydicom converts on access
        raise DicomFormatError(path, f"{attribute_name(keyword)} cannot be read: {exc}") from None
    if value is None or value == "":
        if default is not None:
            return default
        raise DicomFormatError(
            path, f"{attribute_name(keyword)} is missing; the file is truncated or not an image"
        )
    return value


def _number(path: Path, ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = _value(path, ds, keyword, default)
    try:
        return int(str(value))
    except (TypeError, ValueError):
        problem = f"{attribute_name(keyword)} is {value!r}, not a number"
        raise DicomFormatError(path, problem) from None


def attribute_name(keyword: str) -> str:
    """``Rows (0028,0010)``: an attribute as DICOM names it."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
