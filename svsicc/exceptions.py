"""Every error svsicc raises on purpose derives from :class:`SvsiccError`.

Errors carry the file (and IFD / tile where it applies) as data, and render as one line that
names the file and says what is wrong, so the command line can print them without a traceback.

A problem or hint that names an option writes it as a reference, ``{overwrite}``, rendered per
audience (:class:`Audience`): ``str(error)`` and ``one_line()`` speak to Python callers ("pass
overwrite=True to replace it"), ``one_line(Audience.CLI)`` to the command line ("pass
--overwrite to replace it"). :data:`OPTIONS` holds both spellings of every option referred to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Audience(Enum):
    """Who reads an error: options are spelt as keyword arguments or as command-line words."""

    PYTHON = "python"
    CLI = "cli"


@dataclass(frozen=True)
class Option:
    """One option or argument as a Python caller and as a command-line user spell it."""

    python: str
    cli: str

    def spelt_for(self, audience: Audience) -> str:
        return self.python if audience is Audience.PYTHON else self.cli


OPTIONS: dict[str, Option] = {
    "overwrite": Option("overwrite=True", "--overwrite"),
    "in_place": Option("in_place=True", "--in-place"),
    "profile": Option("profile=<ICC file>", "--profile FILE"),
    "fallback_profile": Option("fallback_profile=<ICC file>", "--fallback-profile FILE"),
    "output": Option("output", "OUTPUT"),
    "original": Option("original", "ORIGINAL"),
    "sample": Option("sample", "--sample"),
    "region_size": Option("region_size", "--region-size"),
    "scheduler": Option("scheduler", "--scheduler"),
    "workers": Option("workers", "--workers"),
    "source_dir": Option("source_dir", "SRC_DIR"),
    "destination_dir": Option("destination_dir", "DST_DIR"),
    "verify_call": Option("svsicc.verify()", "svsicc verify"),
    "apply_verify": Option("a before_commit check", "--verify"),
}

# Only names in OPTIONS are replaced: any other brace (a file name, a quoted value) stays.
_REFERENCE = re.compile(r"\{([a-z_]+)\}")


def render(text: str, audience: Audience = Audience.PYTHON) -> str:
    """``text`` with every ``{option}`` reference spelt for ``audience``."""

    def spelt(match: re.Match[str]) -> str:
        option = OPTIONS.get(match.group(1))
        return match.group(0) if option is None else option.spelt_for(audience)

    return _REFERENCE.sub(spelt, text)


class SvsiccError(Exception):
    """Base class: a problem with a file or a request, described in one line.

    ``path``, ``ifd``, ``tile``, ``problem`` and ``hint`` are data; ``problem`` and ``hint``
    may hold ``{option}`` references (see the module docstring), which ``str(error)`` renders
    for Python callers.
    """

    def __init__(
        self,
        path: str | Path | None,
        problem: str,
        *,
        ifd: int | None = None,
        tile: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.ifd = ifd
        self.tile = tile
        self.hint = hint
        super().__init__(self.one_line())

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (worker pool, Dask); keep their data.
        return (_rebuild, (type(self), self.path, self.problem, self.ifd, self.tile, self.hint))

    def one_line(self, audience: Audience = Audience.PYTHON) -> str:
        """File, IFD, tile, problem and hint on one line, options spelt for ``audience``."""
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.ifd is not None:
            where.append(f"IFD {self.ifd}")
        if self.tile is not None:
            where.append(f"tile {self.tile}")
        problem = render(self.problem, audience)
        text = ": ".join([", ".join(where), problem]) if where else problem
        if self.hint:
            text += f" ({render(self.hint, audience)})"
        return text.replace("\n", " ")


def _rebuild(
    cls: type[SvsiccError],
    path: Path | None,
    problem: str,
    ifd: int | None,
    tile: int | None,
    hint: str | None,
) -> SvsiccError:
    return cls(path, problem, ifd=ifd, tile=tile, hint=hint)


class TiffFormatError(SvsiccError):
    """The file is not a TIFF, or its structure is broken (offsets, counts, loops)."""


class DicomFormatError(SvsiccError):
    """The input is not DICOM, or a DICOM file's structure is broken (pixel data items,
    offset tables, frame counts, a file cut short)."""


class UnsupportedLayoutError(SvsiccError):
    """A valid TIFF whose layout or compression svsicc does not handle."""


class TileDecodeError(SvsiccError):
    """A tile or strip could not be decoded."""


class CodecError(SvsiccError):
    """A segment's bytes that a codec cannot decode, or cannot re-encode faithfully.

    Codecs raise it (or a subclass) for every failure of the data or of the library they wrap
    (imagecodecs, Pillow, OpenJPEG), translated at their boundary; anything else escaping a codec
    is a bug. Codecs do not know the file or the segment's place in it, so the problem comes
    first and the engine names the slide, IFD and tile.
    """

    def __init__(
        self,
        problem: str,
        path: str | Path | None = None,
        *,
        ifd: int | None = None,
        tile: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(path, problem, ifd=ifd, tile=tile, hint=hint)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_codec,
            (type(self), self.problem, self.path, self.ifd, self.tile, self.hint),
        )


def _rebuild_codec(
    cls: type[CodecError],
    problem: str,
    path: Path | None,
    ifd: int | None,
    tile: int | None,
    hint: str | None,
) -> CodecError:
    return cls(problem, path, ifd=ifd, tile=tile, hint=hint)


class ProfileError(SvsiccError):
    """The ICC profile is missing, unreadable, or unusable for an RGB transform."""


class AlreadyAppliedError(SvsiccError):
    """The slide's profile was already baked into its pixels by svsicc."""


class OutputError(SvsiccError):
    """The output cannot be written (same as input, disk full, permissions...)."""


class VerificationError(SvsiccError):
    """A calibrated copy does not match its original."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, unwound like Ctrl-C; says what it left behind.

    A KeyboardInterrupt so that every ``finally`` and ``with`` on the way out runs and library
    code treats it as an interrupt. The command line prints ``one_line`` with "interrupted" or
    "terminated" for the signal that came.
    """

    LEFT = "no output was left behind"

    def one_line(self, what: str = "interrupted") -> str:
        return f"{what}; {self.LEFT}"
