"""The plain words at the top of ``svsicc report``, and what its technical terms mean.

A pathologist opening the report should read first, without knowing IFDs or dE2000, what
calibration did to the colours: the shift of the mean tissue colour and of the glass white in
words ("tissue became redder and more magenta by about 12 levels; glass white unchanged"),
computed from the measured before/after colours, and whether the copy passed verification. The
technical figures follow, and each term they use is explained once (:data:`GLOSSARY`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from svsicc.check.figures import VerifyResult

Colour = tuple[float, float, float]

# Below this many 8-bit levels a shift is within JPEG noise: called "unchanged".
NOTICEABLE_LEVELS = 2.0
# Chromatic shift of each channel, up and down: what an observer calls it.
CHANNEL_WORDS = (("redder", "more cyan"), ("greener", "more magenta"), ("bluer", "more yellow"))

GLOSSARY: tuple[tuple[str, str], ...] = (
    (
        "level",
        "each of red, green and blue is stored as a number from 0 to 255; a change of 1 level "
        "is the smallest step there is.",
    ),
    (
        "IFD",
        "Image File Directory: one picture inside the slide file. IFD 0 is the full-resolution "
        "scan; the others are lower-resolution copies of it (pyramid levels), the thumbnail, "
        "the label photo and the macro photo of the whole glass slide.",
    ),
    (
        "tile, strip, segment",
        "a scan is stored in small squares (tiles, e.g. 240x240 pixels) or bands of rows "
        "(strips), each compressed on its own; a segment is either.",
    ),
    (
        "LittleCMS",
        "the open-source colour-management engine the copy is checked against: the exact "
        "conversion of the original's pixels with the scanner's profile.",
    ),
    (
        "PSNR",
        "peak signal-to-noise ratio, in decibels (dB): how close the copy's pixels are to that "
        "exact conversion. Higher is closer; above about 40 dB differences are invisible.",
    ),
    (
        "dE2000",
        "CIEDE2000, the standard measure of how different two colours look to a person: about 1 "
        "is the smallest difference a trained eye notices side by side; p95 is the value 95 % of "
        "the pixels stay under.",
    ),
)


def describe_shift(before: Colour, after: Colour) -> tuple[str, float]:
    """Words for the change ``before`` -> ``after`` and its size in levels (largest channel).

    The change splits into a lightness part (the mean of the three channel changes) and a
    chromatic part (what remains); each is named when it reaches NOTICEABLE_LEVELS, the
    chromatic part by its one or two largest channels ("redder", "more magenta").
    """
    delta = [a - b for a, b in zip(after, before, strict=True)]
    size = max(abs(d) for d in delta)
    if size < NOTICEABLE_LEVELS:
        return "unchanged", size
    light = sum(delta) / 3
    words = []
    if abs(light) >= NOTICEABLE_LEVELS:
        words.append("lighter" if light > 0 else "darker")
    chromatic = [d - light for d in delta]
    for k in sorted(range(3), key=lambda k: -abs(chromatic[k]))[:2]:
        if abs(chromatic[k]) >= NOTICEABLE_LEVELS:
            words.append(CHANNEL_WORDS[k][0 if chromatic[k] > 0 else 1])
    if not words:
        return "unchanged", size  # a few levels spread over the channels: nothing to name
    text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return text, size


def _rgb(colour: Colour) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in colour) + ")"


def summary_sentences(
    tissue: tuple[Colour, Colour] | None,
    glass: tuple[Colour, Colour] | None,
    identity: bool,
    passed: bool,
    worst_delta_e: float | None,
) -> list[str]:
    """The summary, one sentence each: tissue, glass, verification, what it means."""
    out = []
    if identity:
        out.append(
            "The scanner's profile already was sRGB: no pixel changed, the copy is only marked "
            "as calibrated."
        )
    if tissue is not None:
        words, size = describe_shift(*tissue)
        colours = f"mean tissue colour (R, G, B) {_rgb(tissue[0])} before, {_rgb(tissue[1])} after"
        if words == "unchanged":
            out.append(
                f"Tissue colour is practically unchanged (within {max(1.0, size):.0f} levels; "
                f"{colours})."
            )
        else:
            out.append(f"Tissue became {words} by about {size:.0f} levels of 255 ({colours}).")
    else:
        out.append("No tissue was found to describe its colour.")
    if glass is not None:
        words, size = describe_shift(*glass)
        if words == "unchanged":
            out.append(
                f"Glass white is practically unchanged (within {max(1.0, size):.0f} levels)."
            )
        else:
            out.append(f"Glass white became {words} by about {size:.0f} levels.")
    else:
        out.append("Too little bare glass was found to measure its white.")
    if passed:
        seen = (
            f" (largest mean colour difference {worst_delta_e:.1f} dE2000, where about 1 is the "
            "smallest difference an eye notices)"
            if worst_delta_e is not None and not identity
            else ""
        )
        out.append(
            "The copy was checked against the exact colour conversion and passed"
            f"{seen}: it shows the colours the scanner's profile means."
        )
    else:
        out.append(
            "The copy FAILED verification: it does not match the exact colour conversion; see "
            "the problems below."
        )
    out.append(
        "Viewers and image-analysis code that ignore colour profiles now show these calibrated "
        "colours; the slide's other content (label, macro photo, metadata) is unchanged."
    )
    return out


# A DICOM series has no IFDs or strips: its pictures are instances (files) stored in frames.
_DICOM_TERMS = {
    "IFD": (
        "instance",
        "one picture of the DICOM series, stored as one file. Instance 0 is the full-resolution "
        "scan; the others are lower-resolution copies of it (pyramid levels), the thumbnail, "
        "the label photo and the overview photo of the whole glass slide.",
    ),
    "tile, strip, segment": (
        "frame",
        "a scan is stored in small squares (frames, e.g. 240x240 pixels), each compressed on "
        "its own.",
    ),
}
DICOM_GLOSSARY: tuple[tuple[str, str], ...] = tuple(
    _DICOM_TERMS.get(term, (term, text)) for term, text in GLOSSARY
)


def report_sentences(report: ReportResult) -> list[str]:
    """The summary of a report: tissue from the level-0 region (the thumbnail's when the region
    shows none), glass from the thumbnail."""
    region = (report.region_before, report.region_after)
    thumb = (report.thumbnail_before, report.thumbnail_after)
    before, after = region if region[0].tissue_mean and region[1].tissue_mean else thumb
    tissue = None
    if before.tissue_mean is not None and after.tissue_mean is not None:
        tissue = (before.tissue_mean, after.tissue_mean)
    glass_b, glass_a = thumb[0].glass_white, thumb[1].glass_white
    glass = (glass_b, glass_a) if glass_b is not None and glass_a is not None else None
    v = report.verification
    worst = max((p.delta_e2000_mean for p in v.pages), default=None)
    return summary_sentences(tissue, glass, v.identity, v.ok, worst)


def summary_html(sentences: Sequence[str]) -> str:
    items = "".join(f"<li>{html.escape(s)}</li>" for s in sentences)
    return f'<section class="summary"><h2>In short</h2><ul>{items}</ul></section>'


def glossary_html(page_word: str = "IFD") -> str:
    """The terms, pages and segments in the words of the format (``page_word``: 'IFD' for TIFF,
    'instance' for DICOM)."""
    glossary = GLOSSARY if page_word == "IFD" else DICOM_GLOSSARY
    items = "".join(
        f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>" for term, text in glossary
    )
    return f'<h2>Terms used below</h2><dl class="terms">{items}</dl>'


@dataclass(frozen=True)
class ColourStats:
    """Glass white and mean tissue colour of one image (None: not found)."""

    glass_white: tuple[float, float, float] | None
    glass_fraction: float
    tissue_mean: tuple[float, float, float] | None
    tissue_fraction: float

    def to_dict(self) -> dict[str, object]:
        return {
            "glass_white": _rounded3(self.glass_white),
            "glass_fraction": round(self.glass_fraction, 4),
            "tissue_mean": _rounded3(self.tissue_mean),
            "tissue_fraction": round(self.tissue_fraction, 4),
        }


def _rounded3(value: tuple[float, float, float] | None) -> list[float] | None:
    return None if value is None else [round(v, 2) for v in value]


@dataclass(frozen=True)
class ReportResult:
    directory: Path
    index: Path
    images: dict[str, tuple[int, int]]  # file name -> (width, height)
    region: tuple[int, int, int, int]  # level-0 x, y, width, height
    overview_page: int
    thumbnail_before: ColourStats
    thumbnail_after: ColourStats
    region_before: ColourStats
    region_after: ColourStats
    difference_scale_thumbnail: int
    difference_scale_region: int
    verification: VerifyResult
    page_word: str = "IFD"  # what the slide's format calls a page: 'IFD', 'instance'

    @property
    def ok(self) -> bool:
        return self.verification.ok

    def to_dict(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "index": self.index.name,
            "images": {k: list(v) for k, v in self.images.items()},
            "region": dict(zip(("x", "y", "width", "height"), self.region, strict=True)),
            "overview_ifd": self.overview_page,
            "thumbnail": {
                "before": self.thumbnail_before.to_dict(),
                "after": self.thumbnail_after.to_dict(),
            },
            "tissue_region": {
                "before": self.region_before.to_dict(),
                "after": self.region_after.to_dict(),
            },
            "difference_scale": {
                "thumbnail": self.difference_scale_thumbnail,
                "region": self.difference_scale_region,
            },
            "verify": self.verification.to_dict(),
        }
