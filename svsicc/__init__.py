"""svsicc: bake a whole-slide scanner's ICC profile into the pixels of Aperio SVS files."""

from __future__ import annotations

__version__ = "0.1.0"

from .apply import ApplyResult, PageResult, apply  # noqa: E402
from .colour import IccProfile, Intent  # noqa: E402
from .exceptions import (  # noqa: E402
    AlreadyAppliedError,
    OutputError,
    ProfileError,
    SvsiccError,
    TiffFormatError,
    TileDecodeError,
    UnsupportedLayoutError,
)

__all__ = [
    "AlreadyAppliedError",
    "ApplyResult",
    "IccProfile",
    "Intent",
    "OutputError",
    "PageResult",
    "ProfileError",
    "SvsiccError",
    "TiffFormatError",
    "TileDecodeError",
    "UnsupportedLayoutError",
    "__version__",
    "apply",
]
