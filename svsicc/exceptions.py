"""Every error svsicc raises on purpose derives from :class:`SvsiccError`.

Errors carry the file (and IFD / tile where it applies) as data, and render as one line that
names the file and says what is wrong, so the command line can print them without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SvsiccError(Exception):
    """Base class: a problem with a file or a request, described in one line."""

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

    def one_line(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.ifd is not None:
            where.append(f"IFD {self.ifd}")
        if self.tile is not None:
            where.append(f"tile {self.tile}")
        text = ": ".join([", ".join(where), self.problem]) if where else self.problem
        if self.hint:
            text += f" ({self.hint})"
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
