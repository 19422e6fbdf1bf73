"""``svsicc report``: pictures and figures that show what calibration did to one slide.

Writes into a folder an ``index.html`` that opens offline (inline style, relative links to
pictures in the same folder, nothing fetched) and a ``report.json`` with the same numbers. The
page opens with a plain-language summary (:mod:`svsicc.check.report_summary`), then:

- ``thumbnail_before_after.jpg`` and ``region_before_after.jpg``: the thumbnail (the whole slide)
  and a full-resolution level-0 region, original left, calibrated right. The region is the window
  with the most, and most saturated, tissue on the original's thumbnail.
- ``histograms.png``: per-channel histograms, original (grey) against calibrated (colour), of
  the thumbnail and of the region, on a square-root count axis so tails stay visible.
- ``difference_thumbnail.jpg`` and ``difference_region.jpg``: the signed difference
  calibrated - original per channel on a blue-white-red scale (white = no change, red = the
  calibrated copy is higher), symmetric, shared by the three channels and printed on a legend.
  Region maps are area means over 2x2 blocks, so codec noise does not hide the systematic shift.
- ``overlay_region.jpg``: the positive (red) and negative (blue) parts of each channel's
  difference over a faded grey copy of the tissue, opacity proportional to the change.
- a table of the glass white (per-channel median of the background found on the thumbnail) and
  the mean tissue colour, before and after, and the :mod:`svsicc.check.verify` figures.

Pictures are drawn with Pillow only; no plotting library is needed. Photographs and maps are
JPEG (quality 85, no chroma subsampling, so captions and colour edges stay sharp): as PNG the
report of a 1.9 MB slide took 9.5 MB. Histograms are line art and stay PNG. A panel narrower
than its caption (a tiny slide or region) is enlarged by whole-pixel repetition.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from svsicc.check.figures import RGB, PageFigures, VerifyResult
from svsicc.check.report_pictures import (
    MAX_MAP_PANEL,
    block_mean,
    difference_maps,
    histograms,
    luminance,
    overlays,
    side_by_side,
    symmetric_scale,
)
from svsicc.check.report_pixels import OpenPixels, open_tiff_pixels, overview_page, twin_page
from svsicc.check.report_summary import (
    ColourStats,
    ReportResult,
    glossary_html,
    report_sentences,
    summary_html,
)
from svsicc.check.verify import verify
from svsicc.colour.transform import IccProfile
from svsicc.exceptions import OutputError
from svsicc.tiff.slide import Role

DEFAULT_REGION_SIZE = 1024
JPEG_OPTIONS: dict[str, Any] = {"quality": 85, "subsampling": 0, "optimize": True}
# Glass: the bright side of an Otsu split of luminance, and nearly grey (max - min of RGB).
GLASS_MAX_CHROMA = 24
# Tissue darker than this is pen, dust or the slide edge, not stain.
TISSUE_MIN_LUMINANCE = 40
# Below this share of the thumbnail the "glass" found is noise, and no glass white is reported.
MIN_GLASS_FRACTION = 0.005

FILES = (
    "thumbnail_before_after.jpg",
    "region_before_after.jpg",
    "histograms.png",
    "difference_thumbnail.jpg",
    "difference_region.jpg",
    "overlay_region.jpg",
    "index.html",
    "report.json",
)


# -- analysis ---------------------------------------------------------------------------------


def chroma(rgb: RGB) -> npt.NDArray[np.int16]:
    out: npt.NDArray[np.int16] = rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)
    return out


def otsu_threshold(values: npt.NDArray[np.float32]) -> float:
    """The threshold that best splits ``values`` (0..255) into two classes."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256)
    hist = hist.astype(np.float64)
    total = hist.sum()
    if not total:
        return 128.0
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight - mean * total) ** 2 / (weight * (total - weight))
    between = np.nan_to_num(between, nan=0.0, posinf=0.0)
    # Empty bins between the classes make a plateau of equally good splits: take its middle.
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(best[0] + best[-1]) / 2 + 0.5


@dataclass(frozen=True)
class Masks:
    glass: npt.NDArray[np.bool_]
    tissue: npt.NDArray[np.bool_]


def masks(rgb: RGB, threshold: float | None = None) -> Masks:
    """Glass (bright, grey) and tissue (darker than the split, not black) of an image."""
    lum = luminance(rgb)
    split = otsu_threshold(lum) if threshold is None else threshold
    glass = (lum > split) & (chroma(rgb) <= GLASS_MAX_CHROMA)
    tissue = (lum <= split) & (lum >= TISSUE_MIN_LUMINANCE)
    return Masks(glass, tissue)


def colour_stats(rgb: RGB, where: Masks) -> ColourStats:
    pixels = rgb.reshape(-1, 3)
    glass = where.glass.ravel()
    tissue = where.tissue.ravel()
    n = max(1, pixels.shape[0])
    glass_white = None
    if glass.sum() >= MIN_GLASS_FRACTION * n:
        r, g, b = (float(v) for v in np.median(pixels[glass], axis=0))
        glass_white = (r, g, b)
    tissue_mean = None
    if tissue.any():
        r, g, b = (float(v) for v in pixels[tissue].mean(axis=0))
        tissue_mean = (r, g, b)
    return ColourStats(glass_white, float(glass.sum()) / n, tissue_mean, float(tissue.sum()) / n)


def choose_region(
    overview: RGB, level_size: tuple[int, int], size: int
) -> tuple[int, int, int, int]:
    """Level-0 (x, y, width, height) of the window with the most, most saturated tissue.

    Scored on the overview (thumbnail): each tissue pixel counts its chroma, glass counts 0.
    """
    level_w, level_h = level_size
    width, height = min(size, level_w), min(size, level_h)
    oh, ow = overview.shape[:2]
    sx, sy = ow / level_w, oh / level_h
    win_w = max(1, min(ow, round(width * sx)))
    win_h = max(1, min(oh, round(height * sy)))
    score = np.where(masks(overview).tissue, chroma(overview), 0).astype(np.float64)
    integral = np.zeros((oh + 1, ow + 1))
    integral[1:, 1:] = score.cumsum(axis=0).cumsum(axis=1)
    sums = (
        integral[win_h:, win_w:]
        - integral[:-win_h, win_w:]
        - integral[win_h:, :-win_w]
        + integral[:-win_h, :-win_w]
    )
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    x = min(max(0, round(left / sx)), level_w - width)
    y = min(max(0, round(top / sy)), level_h - height)
    return int(x), int(y), int(width), int(height)


# -- drawing ----------------------------------------------------------------------------------


# -- the report -------------------------------------------------------------------------------


def _panel_factor(size: int) -> int:
    return max(1, -(-size // MAX_MAP_PANEL))


def make_report(
    original: str | os.PathLike[str],
    calibrated: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    profile: str | os.PathLike[str] | bytes | IccProfile | None = None,
    sample: int | None = None,
    region_size: int = DEFAULT_REGION_SIZE,
) -> ReportResult:
    """Verify ``calibrated`` against ``original`` and write the report folder ``out_dir``
    (``index.html`` and its pictures; ``profile`` and ``sample`` as for :func:`verify`,
    ``region_size`` the side of the full-resolution region shown, at least 16).

    The folder is assembled in a temporary sibling and its files moved in at the end, so a
    failure leaves nothing half written. Existing files of other names in ``out_dir`` stay.

    Returns:
        A :class:`ReportResult`: the files written, the region shown, colour statistics
        before and after, and the verification (whose ``ok`` says whether the copy passed).

    Raises:
        OutputError: ``out_dir`` is not a folder, its parent does not exist, it cannot be
            written, or ``region_size`` is below 16.
        UnsupportedLayoutError: a level of ``calibrated`` does not match the original's size.
        SvsiccError: whatever :func:`verify` raises for bad input.
    """
    destination = report_folder(out_dir, region_size)
    result = verify(original, calibrated, profile=profile, sample=sample)
    sources = (Path(original), Path(calibrated))
    return write_report(result, sources, open_tiff_pixels, destination, region_size)


def report_folder(out_dir: str | os.PathLike[str], region_size: int) -> Path:
    """``out_dir`` checked before anything is verified: a folder or nothing, in a folder."""
    destination = Path(out_dir)
    if destination.exists() and not destination.is_dir():
        raise OutputError(destination, "exists and is not a folder")
    if not destination.parent.is_dir():
        raise OutputError(destination, "its parent folder does not exist")
    if region_size < 16:
        raise OutputError(destination, f"{{region_size}} {region_size} is too small (minimum 16)")
    return destination


def write_report(
    verification: VerifyResult,
    sources: tuple[Path, Path],
    open_pixels: OpenPixels,
    destination: Path,
    region_size: int,
) -> ReportResult:
    """The report of ``verification`` written to ``destination`` (checked by
    :func:`report_folder`); ``open_pixels`` opens the original and the copy (``sources``) in
    their format. Assembled in a temporary sibling and moved in at the end."""
    staging = Path(tempfile.mkdtemp(prefix=".svsicc-report-", dir=destination.parent))
    try:
        report = _write(verification, sources, open_pixels, staging, destination, region_size)
        destination.mkdir(exist_ok=True)
        for name in FILES:
            os.replace(staging / name, destination / name)
    except OSError as exc:
        raise OutputError(destination, f"cannot write the report: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _write(
    verification: VerifyResult,
    sources: tuple[Path, Path],
    open_pixels: OpenPixels,
    folder: Path,
    destination: Path,
    region_size: int,
) -> ReportResult:
    with open_pixels(sources[0]) as orig, open_pixels(sources[1]) as cal:
        overview = overview_page(orig)
        level0 = orig.level0
        for page in (overview, level0):
            twin_page(orig, cal, page)
        thumb_before = orig.page_rgb(overview)
        thumb_after = cal.page_rgb(cal.pages[overview.index])
        box = choose_region(thumb_before, (level0.width, level0.height), region_size)
        region_before = orig.region(level0, *box)
        region_after = cal.region(cal.level0, *box)
        page_word, words = orig.page_word, orig.in_own_words

    images: dict[str, Image.Image] = {}
    name = "thumbnail" if overview.role is Role.THUMBNAIL else f"{page_word} {overview.index}"
    images["thumbnail_before_after.jpg"] = side_by_side(
        thumb_before, thumb_after, f"original ({name})", f"calibrated ({name})"
    )
    x, y, w, h = box
    where = f"level 0 at ({x}, {y}), {w}x{h}"
    images["region_before_after.jpg"] = side_by_side(
        region_before, region_after, f"original, {where}", "calibrated, same region"
    )
    images["histograms.png"] = histograms(
        [("whole slide (thumbnail)", thumb_before, thumb_after),
         ("tissue region (level 0)", region_before, region_after)]
    )  # fmt: skip
    thumb_diff = thumb_after.astype(np.int16) - thumb_before.astype(np.int16)
    thumb_factor = _panel_factor(max(thumb_diff.shape[:2]))
    thumb_map = block_mean(thumb_diff, thumb_factor)
    thumb_scale = symmetric_scale(thumb_diff)
    images["difference_thumbnail.jpg"] = difference_maps(
        thumb_map, thumb_scale, f"Whole slide ({name}): signed difference per channel"
    )
    region_diff = region_after.astype(np.int16) - region_before.astype(np.int16)
    region_factor = max(2, _panel_factor(max(region_diff.shape[:2])))
    region_map = block_mean(region_diff, region_factor)
    region_scale = symmetric_scale(np.rint(region_map).astype(np.int16))
    images["difference_region.jpg"] = difference_maps(
        region_map,
        region_scale,
        f"Tissue region: signed difference per channel ({region_factor}x{region_factor} means)",
    )
    small_tissue = np.rint(block_mean(region_before, region_factor)).astype(np.uint8)
    images["overlay_region.jpg"] = overlays(
        small_tissue, region_map, region_scale, "Tissue region: where each channel went up or down"
    )
    for file_name, picture in images.items():
        if file_name.endswith(".jpg"):
            picture.save(folder / file_name, **JPEG_OPTIONS)
        else:
            picture.save(folder / file_name, compress_level=1)  # 3x faster than 6, 5 % larger

    thumb_masks = masks(thumb_before)
    region_masks = masks(region_before, otsu_threshold(luminance(thumb_before)))
    report = ReportResult(
        directory=destination,
        index=destination / "index.html",
        images={k: v.size for k, v in images.items()},
        region=box,
        overview_page=overview.index,
        thumbnail_before=colour_stats(thumb_before, thumb_masks),
        thumbnail_after=colour_stats(thumb_after, thumb_masks),
        region_before=colour_stats(region_before, region_masks),
        region_after=colour_stats(region_after, region_masks),
        difference_scale_thumbnail=thumb_scale,
        difference_scale_region=region_scale,
        verification=verification,
        page_word=page_word,
    )
    (folder / "index.html").write_text(render_html(report, words), encoding="utf-8")
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return report


# -- HTML -------------------------------------------------------------------------------------


def _swatch(colour: tuple[float, float, float] | None) -> str:
    if colour is None:
        return "<td>n/a</td>"
    r, g, b = (round(v) for v in colour)
    text = f"({colour[0]:.1f}, {colour[1]:.1f}, {colour[2]:.1f})"
    return (
        f'<td><span class="sw" style="background:rgb({r},{g},{b})"></span>{html.escape(text)}</td>'
    )


def _change(
    before: tuple[float, float, float] | None, after: tuple[float, float, float] | None
) -> str:
    if before is None or after is None:
        return "<td></td>"
    delta = ", ".join(f"{a - b:+.1f}" for a, b in zip(after, before, strict=True))
    return f"<td>({delta})</td>"


def _colour_rows(report: ReportResult) -> str:
    rows = [
        ("Glass white (thumbnail, median of background)", "glass_white", report.thumbnail_before,
         report.thumbnail_after),
        ("Mean tissue colour (thumbnail)", "tissue_mean", report.thumbnail_before,
         report.thumbnail_after),
        ("Mean tissue colour (level-0 region)", "tissue_mean", report.region_before,
         report.region_after),
    ]  # fmt: skip
    out = []
    for label, attr, before, after in rows:
        b, a = getattr(before, attr), getattr(after, attr)
        out.append(f"<tr><th>{html.escape(label)}</th>{_swatch(b)}{_swatch(a)}{_change(b, a)}</tr>")
    return "\n".join(out)


def _figure_row(p: PageFigures) -> str:
    psnr = "&infin;" if p.psnr is None else f"{p.psnr:.2f}"
    if p.floor_psnr is not None:
        psnr += f" (floor {p.floor_psnr:.2f})"
    status = "ok" if p.ok else "FAIL"
    cells = [
        str(p.index), html.escape(p.role), html.escape(p.compression),
        f"{p.segments_checked}/{p.segments_total}", psnr, f"{p.mean_abs:.3f}", str(p.max_abs),
        f"{p.delta_e2000_mean:.3f}", f"{p.delta_e2000_p95:.2f}",
        f'<span class="{status.lower()}">{status}</span>',
    ]  # fmt: skip
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1600px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;font-variant-numeric:tabular-nums}
.sw{display:inline-block;width:1.2em;height:1.2em;border:1px solid #444;vertical-align:middle;
margin-right:.4em}
.ok{color:#176617;font-weight:bold}.fail{color:#b00;font-weight:bold}
img{max-width:100%;border:1px solid #ddd}figure{margin:0 0 2em}figcaption{color:#444}
code{background:#f3f3f3;padding:0 .2em}
.summary{font-size:1.15em;background:#f6f8fb;border:1px solid #cdd6e4;padding:.2em 1em;
max-width:60em}.summary li{margin:.35em 0}
.terms{max-width:60em}.terms dt{font-weight:bold;margin-top:.4em}.terms dd{margin-left:1.5em}
"""


def _as_is(text: str) -> str:
    return text


def render_html(report: ReportResult, words: Callable[[str], str] = _as_is) -> str:
    """The page; ``words`` puts verification lines in the slide format's words."""
    v = report.verification
    esc = html.escape
    verdict = '<span class="ok">PASSED</span>' if v.ok else '<span class="fail">FAILED</span>'
    source = v.source_profile.description if v.source_profile else "unknown"
    target = v.target_profile.description if v.target_profile else "unknown"
    intent = v.intent.label if v.intent is not None else "unknown"
    problems = "".join(f"<li>{esc(words(p))}</li>" for p in v.problems) or "<li>none</li>"
    t = v.margins
    sampled = f" {v.sample} random tiles per level." if v.sample else ""
    x, y, w, h = report.region
    figures = [
        ("thumbnail_before_after.jpg", "The whole slide (thumbnail): original left, calibrated "
         "right."),
        ("region_before_after.jpg", f"A full-resolution tissue region (level 0, x={x}, y={y}, "
         f"{w}x{h} pixels), chosen as the window with the most and most saturated tissue."),
        ("histograms.png", "Per-channel histograms, original (grey area) against calibrated "
         "(coloured line), for the whole slide and the tissue region."),
        ("difference_thumbnail.jpg", "Signed difference calibrated - original per channel, whole "
         f"slide; white is no change, the scale is +/-{report.difference_scale_thumbnail} levels."),
        ("difference_region.jpg", "Signed difference per channel in the tissue region (block "
         f"means); scale +/-{report.difference_scale_region} levels."),
        ("overlay_region.jpg", "Where each channel went up (red, top row) or down (blue, bottom "
         "row) after calibration, over the tissue."),
    ]  # fmt: skip
    blocks = "\n".join(
        f'<figure><img src="{esc(name)}" alt="{esc(name)}">'
        f"<figcaption>{esc(text)}</figcaption></figure>"
        for name, text in figures
    )
    rows = "\n".join(_figure_row(p) for p in v.pages)
    summary = summary_html(report_sentences(report))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>svsicc report: {esc(v.calibrated.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>Colour calibration report</h1>
{summary}
<h2>Technical details</h2>
<table>
<tr><th>Original</th><td><code>{esc(str(v.original))}</code></td></tr>
<tr><th>Calibrated</th><td><code>{esc(str(v.calibrated))}</code></td></tr>
<tr><th>Transform</th><td>{esc(source)} &rarr; {esc(target)}, {esc(intent)} intent,
{"identity (pixels unchanged)" if v.identity else "pixels transformed"}</td></tr>
<tr><th>Verification</th><td>{verdict}</td></tr>
</table>
<h2>Glass and tissue colour</h2>
<table><tr><th></th><th>original</th><th>calibrated</th><th>change (R, G, B)</th></tr>
{_colour_rows(report)}
</table>
{glossary_html(report.page_word)}
<h2>Verification figures</h2>
<p>Calibrated pixels against LittleCMS applied to the original's pixels (the ideal), beside
the floor: the ideal re-encoded once at the original's own settings. Margins per page: PSNR
&ge; floor &minus; {t.psnr_db} dB; mean |error|, dE2000 mean and p95 &le; floor &times; {t.ratio}
+ {t.mean_abs} / {t.delta_e_mean} / {t.delta_e_p95}; per segment PSNR &ge; floor &minus;
{t.segment_psnr_db} dB and dE2000 mean &le; floor &times; {t.segment_ratio} +
{t.segment_delta_e_mean}; lossless compressions exact.{sampled}</p>
<table><tr><th>{esc(report.page_word)}</th><th>role</th><th>compression</th>\
<th>{esc(words("segments"))}</th><th>PSNR dB</th>
<th>mean |error|</th><th>max |error|</th><th>dE2000 mean</th><th>dE2000 p95</th><th></th></tr>
{rows}
</table>
<p>Problems:</p><ul>{problems}</ul>
<h2>Pictures</h2>
{blocks}
<p>Made by svsicc; numbers also in <a href="report.json">report.json</a>.</p>
</body></html>
"""


# -- command line -----------------------------------------------------------------------------
