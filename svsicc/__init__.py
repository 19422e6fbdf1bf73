"""svsicc: bake a whole-slide scanner's ICC profile into the pixels of Aperio SVS files.

The Python API, one function per command (each docstring says what it takes, returns and
raises)::

    svsicc.apply(source, output, ...)            -> ApplyResult
    svsicc.verify(original, calibrated, ...)     -> VerifyResult
    svsicc.info(path)                            -> SlideInfo
    svsicc.report(original, calibrated, out_dir) -> ReportResult
    svsicc.migrate(source_dir, destination_dir)  -> MigrationReport

Errors derive from :class:`SvsiccError`; ``str(error)`` spells options as keyword arguments.
Every name is imported on first use, so ``import svsicc`` loads none of numpy, Pillow or the
codecs.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import migrate
    from .apply import ApplyResult, PageResult, apply
    from .colour import IccProfile, Intent
    from .exceptions import (
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
    from .info import SlideInfo
    from .info import slide_info as info
    from .migrate import MigrationReport
    from .report import ReportResult
    from .report import make_report as report
    from .verify import VerifyResult, verify

# Public name -> (module, attribute).
_LAZY: dict[str, tuple[str, str]] = {
    "apply": ("svsicc.apply", "apply"),
    "verify": ("svsicc.verify", "verify"),
    "info": ("svsicc.info", "slide_info"),
    "report": ("svsicc.report", "make_report"),
    "migrate": ("svsicc.api", "migrate"),
    "ApplyResult": ("svsicc.apply", "ApplyResult"),
    "PageResult": ("svsicc.apply", "PageResult"),
    "VerifyResult": ("svsicc.verify", "VerifyResult"),
    "SlideInfo": ("svsicc.info", "SlideInfo"),
    "ReportResult": ("svsicc.report", "ReportResult"),
    "MigrationReport": ("svsicc.migrate", "MigrationReport"),
    "IccProfile": ("svsicc.colour", "IccProfile"),
    "Intent": ("svsicc.colour", "Intent"),
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


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        # Loading the submodule svsicc.apply (verify, info, report, migrate) makes the import
        # system bind it to the package attribute of the same name; that name belongs to the
        # public function, whatever was imported first.
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
