"""The report's pictures: side-by-side panels, signed difference maps and their overlays, colour
bars and per-channel histograms, drawn with Pillow at a readable minimum size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from svsicc.check.figures import RGB

HEADER = 28  # pixels above each picture for its caption

GAP = 8  # between panels

LEGEND_HEIGHT = 56

HISTOGRAM_PANEL = (512, 180)

MAX_MAP_PANEL = 512

# Narrowest picture panel: a caption or legend needs this much room.
MIN_PANEL = 256

CHANNELS = ("R", "G", "B")

CHANNEL_COLOURS = ((214, 39, 40), (44, 160, 44), (31, 119, 180))


def luminance(rgb: RGB) -> npt.NDArray[np.float32]:
    x = rgb.astype(np.float32)
    out: npt.NDArray[np.float32] = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    return out


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _caption(image: Image.Image, text: str, x: int, y: int, size: int = 16) -> None:
    ImageDraw.Draw(image).text((x, y), text, fill=(0, 0, 0), font=_font(size))


def enlarge(values: npt.NDArray[Any], min_width: int) -> npt.NDArray[Any]:
    """``values`` repeated a whole number of times along both axes to be ``min_width`` wide."""
    factor = -(-min_width // max(1, values.shape[1]))
    if factor <= 1:
        return values
    return np.repeat(np.repeat(values, factor, axis=0), factor, axis=1)


def _text_width(text: str, size: int) -> int:
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return int(np.ceil(probe.textlength(text, font=_font(size)))) + 8


def side_by_side(before: RGB, after: RGB, left: str, right: str) -> Image.Image:
    need = max(MIN_PANEL, _text_width(left, 16), _text_width(right, 16))
    before, after = enlarge(before, need), enlarge(after, need)
    h, w = before.shape[:2]
    # Both halves on the same 8x8 JPEG grid: equal pixels stay equal after compression.
    gap = GAP + (-(w + GAP)) % 8
    canvas = Image.new("RGB", (2 * w + gap, h + HEADER), (255, 255, 255))
    canvas.paste(Image.fromarray(before), (0, HEADER))
    canvas.paste(Image.fromarray(after), (w + gap, HEADER))
    _caption(canvas, left, 4, 5)
    _caption(canvas, right, w + gap + 4, 5)
    return canvas


def diverging(values: npt.NDArray[np.floating], scale: float) -> RGB:
    """Blue (-scale) - white (0) - red (+scale); values beyond the scale saturate."""
    t = np.clip(values / scale, -1.0, 1.0)
    out = np.full((*t.shape, 3), 255.0)
    negative, positive = t < 0, t > 0
    fade = 255.0 * (1.0 - np.abs(t))
    out[..., 0] = np.where(negative, fade, 255.0)
    out[..., 1] = np.where(negative | positive, fade, 255.0)
    out[..., 2] = np.where(positive, fade, 255.0)
    rgb: RGB = np.rint(out).astype(np.uint8)
    return rgb


def colour_bar(width: int, scale: int, label: str) -> Image.Image:
    bar_w = min(width - 40, 512)
    bar = diverging(np.linspace(-scale, scale, bar_w)[None, :].repeat(16, axis=0), scale)
    image = Image.new("RGB", (width, LEGEND_HEIGHT), (255, 255, 255))
    left = (width - bar_w) // 2
    image.paste(Image.fromarray(bar), (left, 4))
    draw = ImageDraw.Draw(image)
    draw.rectangle((left - 1, 3, left + bar_w, 20), outline=(0, 0, 0))
    font = _font(13)
    for fraction in (-1.0, -0.5, 0.0, 0.5, 1.0):
        x = left + round((fraction + 1) / 2 * (bar_w - 1))
        draw.line((x, 20, x, 24), fill=(0, 0, 0))
        value = fraction * scale
        text = f"{value:+.1f}" if value % 1 else f"{value:+.0f}"
        if fraction == 0:
            text = "0"
        tw = draw.textlength(text, font=font)
        draw.text((x - tw / 2, 25), text, fill=(0, 0, 0), font=font)
    tw = draw.textlength(label, font=font)
    draw.text(((width - tw) / 2, 40), label, fill=(0, 0, 0), font=font)
    return image


def symmetric_scale(diff: npt.NDArray[np.int16]) -> int:
    """The legend's bound: the 99.5th percentile of |difference| over all channels, at least 1."""
    if not diff.size:
        return 1
    return max(1, int(np.ceil(np.percentile(np.abs(diff), 99.5))))


def block_mean(values: npt.NDArray[np.number[Any]], factor: int) -> npt.NDArray[np.float64]:
    if factor <= 1:
        return values.astype(np.float64)
    h, w = values.shape[0] // factor * factor, values.shape[1] // factor * factor
    trimmed = values[:h, :w].astype(np.float64)
    shape = (h // factor, factor, w // factor, factor, *values.shape[2:])
    out: npt.NDArray[np.float64] = trimmed.reshape(shape).mean(axis=(1, 3))
    return out


def difference_maps(diff: npt.NDArray[np.floating], scale: int, title: str) -> Image.Image:
    """Three channel panels of a signed difference, with a legend."""
    diff = enlarge(diff, MIN_PANEL)
    h, w = diff.shape[:2]
    width = 3 * w + 2 * GAP
    canvas = Image.new("RGB", (width, HEADER + h + LEGEND_HEIGHT + HEADER), (255, 255, 255))
    _caption(canvas, title, 4, 5)
    for k, name in enumerate(CHANNELS):
        x = k * (w + GAP)
        canvas.paste(Image.fromarray(diverging(diff[..., k], scale)), (x, 2 * HEADER))
        _caption(canvas, f"{name}: calibrated - original", x + 4, HEADER + 5, 14)
    legend = colour_bar(
        width, scale, "calibrated - original, 8-bit levels (blue lower, red higher)"
    )
    canvas.paste(legend, (0, 2 * HEADER + h))
    return canvas


def overlays(tissue: RGB, diff: npt.NDArray[np.floating], scale: int, title: str) -> Image.Image:
    """Rows: positive part (red) and negative part (blue) of each channel, over faded tissue."""
    tissue, diff = enlarge(tissue, MIN_PANEL), enlarge(diff, MIN_PANEL)
    h, w = diff.shape[:2]
    grey = luminance(tissue)[..., None].repeat(3, axis=-1)
    base = 0.45 * grey + 0.55 * 255.0
    width = 3 * w + 2 * GAP
    height = HEADER + 2 * (HEADER + h) + LEGEND_HEIGHT
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    _caption(canvas, title, 4, 5)
    # The legend's end colours, so the bar reads the same on both kinds of map.
    red, blue = np.array([255.0, 0.0, 0.0]), np.array([0.0, 0.0, 255.0])
    for row, (sign, colour, word) in enumerate(((1, red, "higher"), (-1, blue, "lower"))):
        y = HEADER + row * (HEADER + h)
        for k, name in enumerate(CHANNELS):
            alpha = np.clip(sign * diff[..., k] / scale, 0.0, 1.0)[..., None]
            picture = np.rint(base * (1 - alpha) + colour * alpha).astype(np.uint8)
            x = k * (w + GAP)
            canvas.paste(Image.fromarray(picture), (x, y + HEADER))
            _caption(canvas, f"{name} {word} after calibration", x + 4, y + 5, 14)
    legend = colour_bar(width, scale, "opacity: |calibrated - original| up to the scale (levels)")
    canvas.paste(legend, (0, height - LEGEND_HEIGHT))
    return canvas


def histogram_panel(before: RGB, after: RGB, channel: int, title: str) -> Image.Image:
    pw, ph = HISTOGRAM_PANEL
    panel = Image.new("RGB", (pw, ph), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    counts = [
        np.sqrt(np.bincount(img[..., channel].ravel(), minlength=256).astype(np.float64))
        for img in (before, after)
    ]
    top = max(1.0, max(float(c.max()) for c in counts))
    left, right, upper, lower = 4, pw - 4, 22, ph - 18
    scale_x = (right - left) / 256
    scale_y = (lower - upper) / top

    def points(c: npt.NDArray[np.float64]) -> list[tuple[float, float]]:
        return [(left + (v + 0.5) * scale_x, lower - c[v] * scale_y) for v in range(256)]

    draw.polygon([(left, lower), *points(counts[0]), (right, lower)], fill=(200, 200, 200))
    draw.line(points(counts[1]), fill=CHANNEL_COLOURS[channel], width=2)
    draw.line((left, lower, right, lower), fill=(0, 0, 0))
    font = _font(12)
    for v in (0, 64, 128, 192, 255):
        x = left + (v + 0.5) * scale_x
        draw.line((x, lower, x, lower + 3), fill=(0, 0, 0))
        text_w = draw.textlength(str(v), font=font)
        text_x = min(max(0.0, x - text_w / 2), pw - text_w - 1)
        draw.text((text_x, lower + 4), str(v), fill=(0, 0, 0), font=font)
    draw.text((left, 3), title, fill=(0, 0, 0), font=_font(13))
    return panel


def histograms(rows: Sequence[tuple[str, RGB, RGB]]) -> Image.Image:
    pw, ph = HISTOGRAM_PANEL
    width = 3 * pw + 2 * GAP
    height = HEADER + len(rows) * (ph + GAP)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    _caption(
        canvas,
        "Per-channel histograms: original (grey area) vs calibrated (line); sqrt(count) axis",
        4,
        5,
    )
    for r, (name, before, after) in enumerate(rows):
        for k in range(3):
            panel = histogram_panel(before, after, k, f"{name}: {CHANNELS[k]}")
            canvas.paste(panel, (k * (pw + GAP), HEADER + r * (ph + GAP)))
    return canvas
