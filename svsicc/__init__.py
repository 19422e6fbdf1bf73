"""svsicc: bake a whole-slide scanner's ICC profile into the pixels of the slide (Aperio SVS,
generic tiled TIFF, Ventana BIF, DICOM WSI).

The Python API, one function per command (each docstring says what it takes, returns and
raises)::

    svsicc.apply(source, output, ...)            -> ApplyResult
    svsicc.verify(original, calibrated, ...)     -> VerifyResult
    svsicc.info(path)                            -> SlideInfo (DicomSeriesInfo for DICOM)
    svsicc.report(original, calibrated, out_dir) -> ReportResult
    svsicc.migrate(source_dir, destination_dir)  -> MigrationReport

Errors derive from :class:`SvsiccError`; ``str(error)`` spells options as keyword arguments.
Every name is imported on first use, so ``import svsicc`` loads none of numpy, Pillow or the
codecs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from svsicc.version import __version__

if TYPE_CHECKING:
    from svsicc.api import apply, info, report, verify
    from svsicc.archive.api import migrate
    from svsicc.archive.summary import MigrationReport
    from svsicc.check.figures import VerifyResult
    from svsicc.check.report_summary import ReportResult
    from svsicc.colour.transform import IccProfile, Intent
    from svsicc.convert.apply import ApplyResult, PageResult
    from svsicc.exceptions import (
        AlreadyAppliedError,
        Audience,
        OutputError,
        ProfileError,
        SvsiccError,
        TiffFormatError,
        TileDecodeError,
        UnsupportedLayoutError,
        VerificationError,
    )
    from svsicc.slide_info import SlideInfo

# Public name -> (module, attribute).
_LAZY: dict[str, tuple[str, str]] = {
    "apply": ("svsicc.api", "apply"),
    "verify": ("svsicc.api", "verify"),
    "info": ("svsicc.api", "info"),
    "report": ("svsicc.api", "report"),
    "migrate": ("svsicc.archive.api", "migrate"),
    "ApplyResult": ("svsicc.convert.apply", "ApplyResult"),
    "PageResult": ("svsicc.convert.apply", "PageResult"),
    "VerifyResult": ("svsicc.check.verify", "VerifyResult"),
    "SlideInfo": ("svsicc.slide_info", "SlideInfo"),
    "ReportResult": ("svsicc.check.report", "ReportResult"),
    "MigrationReport": ("svsicc.archive.migrate", "MigrationReport"),
    "IccProfile": ("svsicc.colour.transform", "IccProfile"),
    "Intent": ("svsicc.colour.transform", "Intent"),
    **{
        name: ("svsicc.exceptions", name)
        for name in (
            "AlreadyAppliedError",
            "Audience",
            "OutputError",
            "ProfileError",
            "SvsiccError",
            "TiffFormatError",
            "TileDecodeError",
            "UnsupportedLayoutError",
            "VerificationError",
        )
    },
}

__all__ = [
    "AlreadyAppliedError",
    "ApplyResult",
    "Audience",
    "IccProfile",
    "Intent",
    "MigrationReport",
    "OutputError",
    "PageResult",
    "ProfileError",
    "ReportResult",
    "SlideInfo",
    "SvsiccError",
    "TiffFormatError",
    "TileDecodeError",
    "UnsupportedLayoutError",
    "VerificationError",
    "VerifyResult",
    "__version__",
    "apply",
    "info",
    "migrate",
    "report",
    "verify",
]


def __getattr__(name: str) -> object:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'svsicc' has no attribute {name!r}") from None
    value: object = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
