"""``info`` for a DICOM WSI series: its instances, its profile, whether svsicc converted it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from svsicc.colour.transform import IccProfile
from svsicc.dicom import marking
from svsicc.dicom.series import Instance, read_series
from svsicc.dicom.syntax import transfer_syntax_name
from svsicc.exceptions import ProfileError
from svsicc.tiff.record import AppliedRecord

WSI_FORMAT = "DICOM WSI"


@dataclass(frozen=True)
class InstanceInfo:
    file: str
    flavor: str
    width: int
    height: int
    frame_size: tuple[int, int]
    frames: int
    transfer_syntax: str
    photometric: str
    offset_table: str
    data_bytes: int
    icc_bytes: int
    convertible: str | None  # None: svsicc can re-encode its frames; else why not

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "frame_size": list(self.frame_size)}


@dataclass(frozen=True)
class DicomSeriesInfo:
    """What :func:`dicom_info` found: the series, its profile and svsicc's record."""

    path: Path
    series_uid: str
    study_uid: str
    profile: IccProfile | None
    profile_error: str | None
    applied: AppliedRecord | None
    instances: tuple[InstanceInfo, ...]
    others: tuple[str, ...]  # files of the folder that are not this series

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "format": "DICOM",
            "wsi_format": WSI_FORMAT,
            "convertible": all(
                i.convertible is None for i in self.instances if i.flavor in ("VOLUME", "THUMBNAIL")
            ),
            "series_instance_uid": self.series_uid,
            "study_instance_uid": self.study_uid,
            "profile": None if self.profile is None else self.profile.summary(),
            "profile_error": self.profile_error,
            "applied": self.applied is not None,
            "applied_record": None if self.applied is None else self.applied.to_dict(),
            "instances": [i.to_dict() for i in self.instances],
            "other_files": list(self.others),
        }

    def format_text(self) -> str:
        lines = [f"{self.path}  (DICOM WSI series {self.series_uid}, {len(self.instances)} "
                 "instances)"]  # fmt: skip
        if self.profile is not None:
            lines += self.profile.text_lines("in the optical path")
        else:
            lines.append(f"profile: {self.profile_error or 'none embedded'}")
        if self.applied is not None:
            lines += self.applied.text_lines(
                "frame(s)", lambda instance, frame: f"instance {instance} frame {frame}"
            )
        else:
            lines.append("applied: no")
        lines.append("instances:")
        for n, i in enumerate(self.instances):
            size = f"{i.width}x{i.height}"
            frame = f"{i.frame_size[0]}x{i.frame_size[1]}"
            why = f"; cannot convert: {i.convertible}" if i.convertible else ""
            lines.append(
                f"  {n}: {i.flavor.lower():<9} {size:>13} frames {frame:>9} x{i.frames:<6} "
                f"{i.transfer_syntax}, {i.photometric}, {i.offset_table} offset table"
                + (f", ICC {i.icc_bytes:,} B" if i.icc_bytes else "")
                + f"  {i.file}{why}"
            )
        if self.others:
            lines.append(f"other files in the folder (not this series): {len(self.others)}")
        return "\n".join(lines)


def dicom_info(path: str | os.PathLike[str]) -> DicomSeriesInfo:
    """What the series at ``path`` (a folder, or one of its .dcm files) holds: its instances,
    the optical path's ICC profile and svsicc's record if svsicc made it. Only reads.

    Raises:
        DicomFormatError, UnsupportedLayoutError: as :func:`~svsicc.dicom.series.read_series`.
    """
    from svsicc.dicom.apply import embedded_profile

    series = read_series(path)
    profile, error = None, None
    try:
        found = embedded_profile(series)
        profile = None if found is None else found[0]
    except ProfileError as exc:
        error = f"unreadable or ambiguous ({exc.problem})"
    applied = next(
        (r for i in series.instances if (r := marking.applied_record(i.dataset)) is not None),
        None,
    )
    first = series.instances[0].dataset
    return DicomSeriesInfo(
        path=series.path,
        series_uid=series.series_uid,
        study_uid=str(first.get("StudyInstanceUID", "")),
        profile=profile,
        profile_error=error,
        applied=applied,
        instances=tuple(_instance_info(i) for i in series.instances),
        others=tuple(p.name for p in series.others),
    )


def _instance_info(instance: Instance) -> InstanceInfo:
    width, height = instance.size
    icc = max((len(p) for p in _profiles(instance)), default=0)
    return InstanceInfo(
        file=instance.path.name,
        flavor=instance.flavor,
        width=width,
        height=height,
        frame_size=(instance.cols, instance.rows),
        frames=len(instance.frames.frames),
        transfer_syntax=transfer_syntax_name(instance.transfer_syntax),
        photometric=instance.photometric,
        offset_table=instance.frames.offset_table,
        data_bytes=instance.frames.data_bytes,
        icc_bytes=icc,
        convertible=instance.coding_problem,
    )


def _profiles(instance: Instance) -> list[bytes]:
    ds = instance.dataset
    return [
        bytes(h.ICCProfile) for h in [*ds.get("OpticalPathSequence", []), ds] if "ICCProfile" in h
    ]
