"""What verify measured: per-page figures beside their floor's, findings, the result and its
wording, and the judgement of a page or segment against the margins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from svsicc.check.margins import MARGINS, Margins, psnr_from_mse, psnr_text
from svsicc.colour.ciede2000 import delta_e2000_srgb
from svsicc.colour.transform import IccProfile, Intent
from svsicc.tiff.record import AppliedRecord
from svsicc.tiff.slide import Page

RGB = npt.NDArray[np.uint8]

# dE2000 percentiles come from a histogram of this resolution (bounded memory on any slide).
DELTA_E_BIN = 0.01

DELTA_E_BINS = 10_000  # up to dE 100; larger values land in the last bin

# CIEDE2000 is ~40 numpy passes per pixel, the bulk of a full verify's time: its statistics use
# every DELTA_E_STRIDE-th pixel of every DELTA_E_STRIDE-th row (a quarter). On CMU-1-Small-Region
# that moves the mean by 0.002 and the 95th percentile by 0.01; PSNR and abs errors use all.
DELTA_E_STRIDE = 2


@dataclass(frozen=True)
class Finding:
    """One reason verification failed (``kind``: structure, profile, decode, colour)."""

    kind: str
    message: str
    ifd: int | None = None
    tile: int | None = None

    def text(self) -> str:
        where = []
        if self.ifd is not None:
            where.append(f"IFD {self.ifd}")
        if self.tile is not None:
            where.append(f"segment {self.tile}")
        return (", ".join(where) + ": " if where else "") + self.message

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "ifd": self.ifd, "tile": self.tile, "message": self.message}


@dataclass(frozen=True)
class PageFigures:
    """The colour figures of one converted page (a pyramid level, the thumbnail...)."""

    index: int
    role: str
    compression: str
    lossless: bool
    method: str  # "pixels": decoded and compared; "bytes": identity mode, segments compared
    segments_total: int
    segments_checked: int
    pixels: int
    psnr: float | None  # None: no difference at all (infinite PSNR)
    mean_abs: float
    max_abs: int
    bias: tuple[float, float, float]  # mean signed error (copy - expected) of R, G, B
    delta_e2000_mean: float
    delta_e2000_p95: float
    worst_segment: int | None
    worst_segment_psnr: float | None
    worst_segment_delta_e2000: float
    # The same figures for the floor: the ideal re-encoded once at the original's settings
    # (svsicc.check.floor); equal to the ideal (inf, 0...) on lossless pages.
    floor_psnr: float | None = None
    floor_mean_abs: float = 0.0
    floor_delta_e2000_mean: float = 0.0
    floor_delta_e2000_p95: float = 0.0
    problems: tuple[str, ...] = ()
    # Checked segments the original cannot decode, kept byte for byte in the copy (apply
    # --on-bad-tile keep): not converted, and not counted against the copy.
    kept: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "role": self.role,
            "compression": self.compression,
            "lossless": self.lossless,
            "method": self.method,
            "segments_total": self.segments_total,
            "segments_checked": self.segments_checked,
            "pixels": self.pixels,
            "psnr_db": _rounded(self.psnr, 3),
            "floor_psnr_db": _rounded(self.floor_psnr, 3),
            "mean_abs": round(self.mean_abs, 4),
            "floor_mean_abs": round(self.floor_mean_abs, 4),
            "max_abs": self.max_abs,
            "bias_rgb": [round(v, 4) for v in self.bias],
            "delta_e2000_mean": round(self.delta_e2000_mean, 4),
            "floor_delta_e2000_mean": round(self.floor_delta_e2000_mean, 4),
            "delta_e2000_p95": round(self.delta_e2000_p95, 4),
            "floor_delta_e2000_p95": round(self.floor_delta_e2000_p95, 4),
            "worst_segment": None
            if self.worst_segment is None
            else {
                "index": self.worst_segment,
                "psnr": _rounded(self.worst_segment_psnr, 3),
                "delta_e2000_mean": round(self.worst_segment_delta_e2000, 4),
            },
            "kept_unconverted": list(self.kept),
            "ok": self.ok,
            "problems": list(self.problems),
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class VerifyResult:
    original: Path
    calibrated: Path
    record: AppliedRecord | None
    source_profile: IccProfile | None
    target_profile: IccProfile | None
    intent: Intent | None
    identity: bool
    sample: int | None
    ifds: int
    segments_decoded: int
    unchanged_pages: tuple[int, ...]  # pages whose segments were required byte-identical
    converted_associated: tuple[int, ...]  # label/macro pages found converted
    findings: tuple[Finding, ...]
    pages: tuple[PageFigures, ...]
    seconds: float
    margins: Margins = field(default=MARGINS)

    @property
    def ok(self) -> bool:
        return not self.findings and all(p.ok for p in self.pages)

    @property
    def problems(self) -> list[str]:
        """Every reason for failure, one line each."""
        lines = [f.text() for f in self.findings]
        for page in self.pages:
            lines.extend(f"IFD {page.index} ({page.role}): {p}" for p in page.problems)
        return lines

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "original": str(self.original),
            "calibrated": str(self.calibrated),
            "record": None if self.record is None else self.record.to_dict(),
            "source_profile": None
            if self.source_profile is None
            else self.source_profile.summary(),
            "target_profile": None
            if self.target_profile is None
            else self.target_profile.summary(),
            "intent": None if self.intent is None else self.intent.label,
            "mode": "identity" if self.identity else "transformed",
            "sample": self.sample,
            "margins": self.margins.to_dict(),
            "structure": {
                "ifds": self.ifds,
                "segments_decoded": self.segments_decoded,
                "unchanged_pages": list(self.unchanged_pages),
                "converted_associated_pages": list(self.converted_associated),
                "ok": not [f for f in self.findings if f.kind in ("structure", "decode")],
            },
            "findings": [f.to_dict() for f in self.findings],
            "problems": self.problems,
            "levels": [p.to_dict() for p in self.pages],
            "seconds": round(self.seconds, 3),
        }

    def summary_line(self) -> str:
        """One line for ``apply --verify``: the verdict and the page closest to its floor."""
        head = "verified OK" if self.ok else "verification FAILED"
        sampled = f"{self.sample} tiles per level" if self.sample else "every tile"
        if self.identity:
            detail = "identity copy: every checked segment byte-identical"
        else:
            detail = self.closest_to_floor()
        return f"{head} ({len(self.pages)} pages, {sampled}; {detail})"

    def closest_to_floor(self) -> str:
        """The lossy page whose PSNR sits closest to (or furthest under) its floor's."""
        lossy = [p for p in self.pages if p.method == "pixels" and not p.lossless and p.psnr]
        if not lossy:
            return "lossless pages exact" if self.ok else "no lossy page"
        worst = min(lossy, key=lambda p: (p.psnr or 0.0) - (p.floor_psnr or 0.0))
        return (
            f"closest to its floor IFD {worst.index} ({worst.role}): PSNR "
            f"{psnr_text(worst.psnr)} dB, floor {psnr_text(worst.floor_psnr)} dB"
        )

    def format(self) -> str:
        head = "OK" if self.ok else "FAILED"
        what = ""
        if self.source_profile is not None and self.target_profile is not None:
            what = (
                f" ({self.source_profile.description!r} -> {self.target_profile.description!r}, "
                f"{self.intent.label if self.intent is not None else '?'}, "
                f"{'identity' if self.identity else 'transformed'})"
            )
        lines = [f"{self.calibrated} vs {self.original}: {head}{what}"]
        sampled = f", {self.sample} sampled per level" if self.sample else ""
        # Identity copies are checked by their bytes, never decoded: say so, not "0 decoded".
        compared = sum(p.segments_checked for p in self.pages if p.method == "bytes")
        checked = (
            f"{compared} segments compared byte for byte"
            if self.identity
            else f"{self.segments_decoded} segments decoded"
        )
        lines.append(
            f"structure: {self.ifds} IFDs, {checked}{sampled}, "
            f"unchanged pages {list(self.unchanged_pages) or '-'}"
            + (
                f", converted label/macro {list(self.converted_associated)}"
                if self.converted_associated
                else ""
            )
        )
        for p in self.pages:
            where = f"  IFD {p.index} {p.role:<9} {p.segments_checked}/{p.segments_total} segments"
            fail = "" if p.ok else "  FAIL"
            if p.method == "bytes":
                lines.append(f"{where} byte-identical{fail}" if p.ok else f"{where}{fail}")
                continue
            if p.lossless:
                lines.append(f"{where} lossless, max |d| {p.max_abs}{fail}")
                continue
            lines.append(
                f"{where} PSNR {psnr_text(p.psnr)} dB, floor {psnr_text(p.floor_psnr)} dB; "
                f"mean |d| {p.mean_abs:.2f}, floor {p.floor_mean_abs:.2f}; dE2000 mean "
                f"{p.delta_e2000_mean:.2f}, floor {p.floor_delta_e2000_mean:.2f}; p95 "
                f"{p.delta_e2000_p95:.2f}, floor {p.floor_delta_e2000_p95:.2f}{fail}"
            )
            if p.kept:
                lines.append(
                    f"    not converted: {len(p.kept)} segment(s) the original cannot decode, "
                    f"kept as they were: {', '.join(str(n) for n in p.kept)}"
                )
        lines.extend(f"  problem: {text}" for text in self.problems)
        return "\n".join(lines)


@dataclass
class Accumulator:
    samples: int = 0
    pixels: int = 0
    delta_e_pixels: int = 0
    signed: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(3, np.int64))
    squared: float = 0.0
    absolute: float = 0.0
    max_abs: int = 0
    delta_e_sum: float = 0.0
    delta_e_hist: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(DELTA_E_BINS, np.int64)
    )
    max_delta_e: float = 0.0
    worst: int | None = None
    worst_psnr: float | None = None
    worst_delta_e: float = -1.0

    def add(self, index: int, got: RGB, want: RGB) -> tuple[float | None, float]:
        diff = got.astype(np.int32) - want.astype(np.int32)
        squared = float(np.square(diff).sum(dtype=np.int64))
        magnitude = np.abs(diff)
        absolute = float(magnitude.sum(dtype=np.int64))
        step = DELTA_E_STRIDE
        delta_e = delta_e2000_srgb(got[::step, ::step], want[::step, ::step]).ravel()
        n = diff.size
        self.samples += n
        self.pixels += n // 3
        self.delta_e_pixels += delta_e.size
        self.squared += squared
        self.absolute += absolute
        self.signed += diff.reshape(-1, 3).sum(axis=0, dtype=np.int64)
        self.max_abs = max(self.max_abs, int(magnitude.max(initial=0)))
        self.delta_e_sum += float(delta_e.sum())
        self.max_delta_e = max(self.max_delta_e, float(delta_e.max(initial=0.0)))
        bins = np.minimum((delta_e / DELTA_E_BIN).astype(np.int64), DELTA_E_BINS - 1)
        self.delta_e_hist += np.bincount(bins, minlength=DELTA_E_BINS)
        seg_psnr = psnr_from_mse(squared / n) if n else None
        seg_delta_e = float(delta_e.mean()) if delta_e.size else 0.0
        if seg_delta_e > self.worst_delta_e:
            self.worst, self.worst_psnr, self.worst_delta_e = index, seg_psnr, seg_delta_e
        return seg_psnr, seg_delta_e

    def psnr(self) -> float | None:
        return psnr_from_mse(self.squared / self.samples) if self.samples else None

    def mean_abs(self) -> float:
        return self.absolute / self.samples if self.samples else 0.0

    def delta_e_mean(self) -> float:
        return self.delta_e_sum / self.delta_e_pixels if self.delta_e_pixels else 0.0

    def percentile(self, q: float) -> float:
        total = int(self.delta_e_hist.sum())
        if not total:
            return 0.0
        cumulative = np.cumsum(self.delta_e_hist)
        bin_index = int(np.searchsorted(cumulative, q * total))
        # The bin's upper edge never under-reports; the largest value seen caps it.
        return min((bin_index + 1) * DELTA_E_BIN, self.max_delta_e)


def _bias(acc: Accumulator) -> tuple[float, float, float]:
    if not acc.pixels:
        return (0.0, 0.0, 0.0)
    r, g, b = (float(v) / acc.pixels for v in acc.signed)
    return (r, g, b)


def segment_problem(
    psnr: float | None,
    delta_e: float,
    floor_psnr: float | None,
    floor_delta_e: float,
    m: Margins,
) -> str | None:
    """Why one segment is out of its floor's margins (None: it is within them)."""
    low_psnr = psnr is not None and psnr < m.segment_psnr_limit(floor_psnr)
    high_delta_e = delta_e > floor_delta_e * m.segment_ratio + m.segment_delta_e_mean
    if not (low_psnr or high_delta_e):
        return None
    return (
        f"PSNR {psnr_text(psnr)} dB (floor {psnr_text(floor_psnr)} dB), mean dE2000 "
        f"{delta_e:.2f} (floor {floor_delta_e:.2f})"
    )


def page_figures(
    po: Page, decoded: int, acc: Accumulator, floor: Accumulator, lossless: bool
) -> PageFigures:
    return figures_of(
        po.index, po.role.value, po.compression_name, len(po.offsets), decoded, acc, floor, lossless
    )


def figures_of(
    index: int,
    role: str,
    compression: str,
    segments: int,
    decoded: int,
    acc: Accumulator,
    floor: Accumulator,
    lossless: bool,
) -> PageFigures:
    """A page's (or DICOM instance's) figures from its accumulators."""
    return PageFigures(
        index=index,
        role=role,
        compression=compression,
        lossless=lossless,
        method="pixels",
        segments_total=segments,
        segments_checked=decoded,
        pixels=acc.pixels,
        psnr=acc.psnr(),
        mean_abs=acc.mean_abs(),
        max_abs=acc.max_abs,
        bias=_bias(acc),
        delta_e2000_mean=acc.delta_e_mean(),
        delta_e2000_p95=acc.percentile(0.95),
        worst_segment=acc.worst,
        worst_segment_psnr=acc.worst_psnr,
        worst_segment_delta_e2000=max(acc.worst_delta_e, 0.0),
        floor_psnr=floor.psnr(),
        floor_mean_abs=floor.mean_abs(),
        floor_delta_e2000_mean=floor.delta_e_mean(),
        floor_delta_e2000_p95=floor.percentile(0.95),
    )


def page_problems(f: PageFigures, m: Margins) -> list[str]:
    """Why a page is out of its floor's margins (lossless pages: any difference at all)."""
    if f.lossless:
        if not f.max_abs:
            return []
        return [
            f"lossless compression but the pixels differ from the expectation by up to "
            f"{f.max_abs} (mean {f.mean_abs:.3f})"
        ]
    problems = []
    if f.psnr is not None and f.psnr < m.page_psnr_limit(f.floor_psnr):
        problems.append(
            f"PSNR {f.psnr:.2f} dB < {m.page_psnr_limit(f.floor_psnr):.2f} dB (floor "
            f"{psnr_text(f.floor_psnr)} dB - {m.psnr_db} dB)"
        )
    checks = (
        ("mean |error|", f.mean_abs, f.floor_mean_abs, m.mean_abs),
        ("mean dE2000", f.delta_e2000_mean, f.floor_delta_e2000_mean, m.delta_e_mean),
        ("95th-percentile dE2000", f.delta_e2000_p95, f.floor_delta_e2000_p95, m.delta_e_p95),
    )
    for name, value, floor, slack in checks:
        limit = floor * m.ratio + slack
        if value > limit:
            problems.append(
                f"{name} {value:.3f} > {limit:.3f} (floor {floor:.3f} x {m.ratio} + {slack})"
            )
    return problems


def identity_figures(po: Page, checked: int, differing: list[int]) -> PageFigures:
    problems = tuple(
        f"segment {n} differs; identity mode must keep every byte" for n in differing[:10]
    )
    return PageFigures(
        index=po.index,
        role=po.role.value,
        compression=po.compression_name,
        lossless=True,
        method="bytes",
        segments_total=len(po.offsets),
        segments_checked=checked,
        pixels=0,
        psnr=None,
        mean_abs=0.0,
        max_abs=0,
        bias=(0.0, 0.0, 0.0),
        delta_e2000_mean=0.0,
        delta_e2000_p95=0.0,
        worst_segment=None,
        worst_segment_psnr=None,
        worst_segment_delta_e2000=0.0,
        problems=problems,
    )
