#!/usr/bin/env python3
"""How fast svsicc applies a profile, against the codec floor, Pillow per tile and libvips.

Builds large realistic slides with :mod:`tests.synthetic` (AT2-style RGB-colourspace JPEG and
GT450-style YCbCr JPEG, level 0 of ``--size`` pixels square plus two reduced levels, thumbnail,
label and macro; tiles cut from the real CMU-1 pixels, no two level-0 tiles alike; the real
ScanScope v1 profile embedded) and times, alternating the variants within each repetition:

  floor     read -> decode -> re-encode -> write through apply's own writer, no colour work
  floor-2   svsicc.apply(workers=2) with the colour stage made a no-op: the floor on the pool
  svsicc-1  svsicc.apply(workers=1)
  svsicc-2  svsicc.apply(workers=2)
  naive     as floor, plus Pillow ImageCms.applyTransform per tile (transform built once)
  libvips   pyvips: tiffload level 0, icc_transform to sRGB (perceptual), tiffsave tiled pyramid
            JPEG at the slide's quality (libvips picks YCbCr 4:2:0 below Q90, RGB 4:4:4 from
            Q90: see benchmarks/README.md), 2 threads

Each run is a fresh subprocess, so its peak RSS is its own. Ratios are of medians over the
repetitions; the ratio of the fastest runs and the per-repetition range show the noise.
``--memory`` also compares apply's peak RSS on a 2x larger slide (4x the pixels).

Run: .venv/bin/python benchmarks/bench_apply.py [--size 12000] [--reps 7] [--memory]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The fixture builder lives in tests/: it ships with the repository, not with the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import hashlib
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import marginal  # benchmarks/marginal.py, beside this script
import numpy as np

if TYPE_CHECKING:
    from svsicc.colour.transform import ColourTable

REPO = Path(__file__).resolve().parent.parent
PROFILE_FILE = REPO / "tests" / "data" / "ScanScope_v1_from_CMU-Embed.icc"
VARIANTS = ("floor", "floor-2", "svsicc-1", "svsicc-2", "naive", "libvips")
STYLES = ("at2", "gt450")
MARGINAL_STYLES = ("at2", "gt450", "jp2k-33005")
# Bump when the slides this script builds change, so cached ones are rebuilt.
BUILD_VERSION = 1


@dataclass(frozen=True)
class Target:
    """A time ratio ``numerator / denominator`` (seconds over seconds) and its floor or ceiling."""

    numerator: str
    denominator: str
    minimum: float | None  # None: printed, no target
    meaning: str


TARGETS = (
    Target(
        "floor",
        "svsicc-1",
        None,
        "apply's own writer without the colour stage against svsicc(1); the target is on the "
        "independent codec floor (benchmarks/codec_floor.py), per segment",
    ),
    Target("svsicc-1", "svsicc-2", 1.7, "2 workers are at least 1.7x faster than 1"),
    Target("naive", "svsicc-1", 1.6, "Pillow ImageCms per tile takes at least 1.6x svsicc(1)"),
    Target("libvips", "svsicc-2", 2.0, "libvips takes at least 2x svsicc(2) (both on 2 cores)"),
)


# ------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class BuiltSlide:
    style: str
    size: int
    path: Path
    tile: int
    quality: int
    bigtiff: bool
    level0_tiles: int
    segments: int  # what apply rewrites: every tile of every level plus the thumbnail strips
    megapixels: float  # level 0

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "path": str(self.path)}


def slide_spec(style: str, size: int) -> Any:
    from tests.synthetic import Style, preset

    # Past ~4 GB a classic TIFF cannot hold the file; AT2 Q70 stays far below at 24000.
    return preset(cast(Style, style), profile=PROFILE_FILE.read_bytes(), bigtiff=size > 40000)


def build_slide(work: Path, style: str, size: int, height: int | None = None) -> BuiltSlide:
    """Build (or reuse) ``work/<style>-<size>.svs`` (``<style>-<size>x<height>.svs`` when not
    square); the stamp file records what was built."""
    from tests.synthetic import load_real_pixels, mosaic, write_slide

    height = size if height is None else height
    spec = slide_spec(style, max(size, height))
    path = work / (f"{style}-{size}.svs" if height == size else f"{style}-{size}x{height}.svs")
    stamp = path.with_suffix(".stamp")
    wanted = f"{BUILD_VERSION} {spec!r} seed={size}" + ("" if height == size else f"x{height}")
    wanted = hashlib.sha256(wanted.encode()).hexdigest()
    if not (path.is_file() and stamp.is_file() and stamp.read_text() == wanted):
        started = time.perf_counter()
        pixels_file = work / f".{style}-{size}.pixels"
        # A memmap keeps the builder's memory flat for the 24000 px slides of --memory.
        rgb = np.lib.format.open_memmap(pixels_file, "w+", np.uint8, (height, size, 3))
        mosaic(load_real_pixels(), size, height, seed=size, out=rgb)
        tmp = path.with_suffix(".building")
        write_slide(tmp, rgb, spec)
        del rgb
        pixels_file.unlink()
        tmp.replace(path)
        stamp.write_text(wanted)
        print(
            f"built {path} ({path.stat().st_size / 1e6:,.0f} MB) in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return describe_slide(path, style, size, spec.tile_size, spec.quality, spec.bigtiff)


def describe_slide(
    path: Path, style: str, size: int, tile: int, quality: int, bigtiff: bool
) -> BuiltSlide:
    from svsicc.drivers import read_slide
    from svsicc.tiff import file as tiff
    from svsicc.tiff.slide import Role

    with tiff.TiffReader(path) as reader:
        slide = read_slide(reader)
        rewritten = [p for p in slide.pages if p.role in (Role.LEVEL, Role.THUMBNAIL)]
        extents = {
            (o, c) for p in rewritten for o, c in zip(p.offsets, p.byte_counts, strict=True) if c
        }
        level0 = slide.pages[0]
        digests = {
            hashlib.blake2b(reader.read(o, c), digest_size=16).digest()
            for o, c in zip(level0.offsets, level0.byte_counts, strict=True)
        }
    # JPEG 2000 at the synthetic PSNR smooths the +-1 dither of blank glass away: equal tiles
    # there are the codec's doing (and no cache serves them), so only JPEG slides are held to it.
    if len(digests) != len(level0.offsets) and not style.startswith("jp2k"):
        raise SystemExit(f"{path}: {len(level0.offsets) - len(digests)} level-0 tiles repeat")
    return BuiltSlide(
        style=style,
        size=size,
        path=path,
        tile=tile,
        quality=quality,
        bigtiff=bigtiff,
        level0_tiles=len(level0.offsets),
        segments=len(extents),
        megapixels=level0.width * level0.height / 1e6,
    )


# ------------------------------------------------------------------------------- variants
# Each runs in a child process (``--child``) and prints one JSON line.


class NoColour:
    """The floor's colour stage: none. Duck-types :class:`svsicc.colour.transform.ColourTable`.

    The decoded pixels go to the encoder untouched: BGRX read as RGBX, packed RGB as RGB (the
    engine encodes a 3-channel result as RGB). The codec work is svsicc's, including its
    zero-copy hand-over to Pillow (handing Pillow BGRX would add an unpacking copy svsicc never
    makes: ~0.1 ms a tile that would flatter svsicc). Red and blue may come out exchanged; the
    floor's output is only timed, never looked at.
    """

    def apply(self, pixels: np.ndarray, layout: str, out: np.ndarray | None = None) -> np.ndarray:
        return pixels


class NaiveTransform:
    """The colour stage of the literature's recipe: LittleCMS through Pillow on every tile.

    Duck-types :class:`svsicc.colour.transform.ColourTable` so the rest of the pipeline (decode,
    encode, writer) is exactly apply's.
    """

    def __init__(self, profile: bytes) -> None:
        import io

        from PIL import ImageCms

        from svsicc.colour.transform import default_target

        # The same target as svsicc's, so only the way the colour stage is computed differs.
        self.transform = ImageCms.buildTransform(
            ImageCms.ImageCmsProfile(io.BytesIO(profile)),
            ImageCms.ImageCmsProfile(io.BytesIO(default_target().data)),
            "RGB",
            "RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
        )

    def apply(self, pixels: np.ndarray, layout: str, out: np.ndarray | None = None) -> np.ndarray:
        # out is a permission, not a duty: the recipe returns Pillow's new image.
        from PIL import Image, ImageCms

        rows, cols = pixels.shape[:2]
        pixels = np.ascontiguousarray(pixels)
        image = Image.frombuffer("RGB", (cols, rows), pixels, "raw", layout, 0, 1)
        converted = ImageCms.applyTransform(image, self.transform)
        assert converted is not None
        return np.frombuffer(converted.tobytes("raw", "RGBX"), np.uint8).reshape(rows, cols, 4)


def copy_with_colour_stage(src: Path, dst: Path, table: Any) -> dict[str, float]:
    """apply's writer (``svsicc.convert.apply._write_copy``) with ``table`` as the colour stage,
    one core.

    ``table=NoColour()`` is the floor: decode and re-encode only.
    """
    import importlib

    from svsicc.colour.transform import IccProfile, Intent, default_target
    from svsicc.drivers import read_slide
    from svsicc.tiff import file as tiff
    from svsicc.tiff.driver import Marks
    from svsicc.tiff.output import TempOutput

    # ``svsicc.convert.apply`` the attribute is the function; the module is needed here.
    apply_module = importlib.import_module("svsicc.convert.apply")
    profile = IccProfile.from_file(PROFILE_FILE)
    with tiff.TiffReader(src) as reader:
        slide = read_slide(reader)
        rewrite = apply_module.pages_to_rewrite(slide, False)
        marks = Marks(profile, default_target(), Intent.PERCEPTUAL, False)
        with TempOutput(dst) as out:
            apply_module._write_copy(reader, slide, rewrite, table, marks, out, None, False, None)
            committing = time.perf_counter()
            out.commit()
            return {"commit_seconds": time.perf_counter() - committing}


def run_libvips(src: Path, dst: Path, tile: int, quality: int, bigtiff: bool) -> None:
    import pyvips

    image = pyvips.Image.tiffload(str(src), page=0)
    converted = image.icc_transform(
        "srgb", input_profile=str(PROFILE_FILE), embedded=False, intent="perceptual"
    )
    converted.tiffsave(
        str(dst),
        tile=True,
        tile_width=tile,
        tile_height=tile,
        pyramid=True,
        compression="jpeg",
        Q=quality,
        # YCbCr 4:2:0 for both: libvips 8.18's rgbjpeg=True writes RGB-tagged tiles with a
        # subsampled first component that libvips, libtiff and OpenSlide all decode ~60/255 off.
        bigtiff=bigtiff,
    )


def _cpu_seconds() -> float:
    """User + system time of this process and of its waited-for children (pool workers)."""
    return float(
        sum(
            getattr(resource.getrusage(who), field)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for field in ("ru_utime", "ru_stime")
        )
    )


def child_main(args: argparse.Namespace) -> None:
    src, dst = Path(args.slide), Path(args.output)
    extra: dict[str, float] = {}
    # Imports before the clock starts, for every variant alike: the timings are of the work.
    if args.child == "libvips":
        import pyvips  # noqa: F401
    else:
        import PIL.ImageCms  # noqa: F401
        import PIL.JpegImagePlugin  # noqa: F401

        import svsicc.convert.apply  # noqa: F401
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if args.child == "floor":
        extra = copy_with_colour_stage(src, dst, NoColour())
    elif args.child == "naive":
        extra = copy_with_colour_stage(src, dst, NaiveTransform(PROFILE_FILE.read_bytes()))
    elif args.child == "floor-2":
        import svsicc
        from svsicc.colour.transform import ColourTable

        # Patched before the pool forks, so its workers run the floor's no-op colour stage.
        ColourTable.apply = NoColour.apply  # type: ignore[method-assign,assignment]
        result = svsicc.apply(src, dst, workers=2)
        extra = {"segments": float(result.segments_rewritten)}
    elif args.child in ("svsicc-1", "svsicc-2"):
        import svsicc

        result = svsicc.apply(src, dst, workers=int(args.child[-1]))
        extra = {"segments": float(result.segments_rewritten)}
    elif args.child == "libvips":
        run_libvips(src, dst, args.tile, args.quality, args.bigtiff)
    else:
        raise SystemExit(f"unknown variant {args.child}")
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    # VmHWM, not RUSAGE_SELF: Linux carries ru_maxrss over exec(), so a child's would include
    # the benchmark driver's memory at fork time.
    status = Path("/proc/self/status").read_text()
    own = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    # Pool workers are forked from this process and waited for at shutdown; their peak RSS counts
    # the pages they share with it (the colour table loaded before the fork, for instance).
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu, "rss_kb": own, "worker_rss_kb": workers}
            | extra
        )
    )


@dataclass(frozen=True)
class Run:
    variant: str
    style: str
    size: int
    seconds: float
    cpu_seconds: float  # user + system of the process and its pool workers, imports excluded
    rss_mb: float
    worker_rss_mb: float
    # CPU time taken from this virtual machine by other guests while the run ran (both
    # cores; start-up included): interference the run's own timings cannot show.
    steal_seconds: float
    extra: dict[str, float]


def _steal_seconds() -> float:
    """CPU time the hypervisor gave other guests, all CPUs (Linux /proc/stat), or NaN."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def run_child(variant: str, slide: BuiltSlide, work: Path, env: dict[str, str]) -> Run:
    output = work / f"out-{variant}-{slide.style}-{slide.size}.tif"
    output.unlink(missing_ok=True)
    command = [
        sys.executable, __file__, "--child", variant, "--slide", str(slide.path),
        "--output", str(output), "--tile", str(slide.tile), "--quality", str(slide.quality),
        "--style", slide.style,
    ] + (["--bigtiff"] if slide.bigtiff else [])  # fmt: skip
    steal_before = _steal_seconds()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    steal = _steal_seconds() - steal_before
    output.unlink(missing_ok=True)
    # Flush what the run left dirty so it does not slow the next one.
    os.sync()
    if done.returncode != 0:
        raise SystemExit(f"{variant} on {slide.path} failed:\n{done.stderr[-3000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(
        variant=variant,
        style=slide.style,
        size=slide.size,
        seconds=data.pop("seconds"),
        cpu_seconds=data.pop("cpu_seconds"),
        rss_mb=data.pop("rss_kb") / 1024,
        worker_rss_mb=data.pop("worker_rss_kb") / 1024,
        steal_seconds=steal,
        extra=data,
    )


# ------------------------------------------------------------------------------- report


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def runs_of(runs: Sequence[Run], slide: BuiltSlide, variant: str) -> list[Run]:
    return [
        r for r in runs if r.style == slide.style and r.size == slide.size and r.variant == variant
    ]


def speed_table(slides: Sequence[BuiltSlide], runs: Sequence[Run], variants: Sequence[str]) -> str:
    lines = [
        f"{'slide':<12}{'variant':<10}{'median s':>9}{'min s':>7}{'max s':>7}{'cpu s':>7}"
        f"{'ms/tile':>9}{'MP/s':>7}{'RSS MB':>8}{'worker MB':>10}{'steal s':>8}"
    ]
    for slide in slides:
        for variant in variants:
            mine = runs_of(runs, slide, variant)
            if not mine:
                continue
            seconds = [r.seconds for r in mine]
            mid = median(seconds)
            workers = max(r.worker_rss_mb for r in mine)
            lines.append(
                f"{slide.style + '-' + str(slide.size):<12}{variant:<10}{mid:>9.2f}"
                f"{min(seconds):>7.2f}{max(seconds):>7.2f}"
                f"{median([r.cpu_seconds for r in mine]):>7.2f}"
                f"{1000 * mid / slide.segments:>9.3f}{slide.megapixels / mid:>7.1f}"
                f"{max(r.rss_mb for r in mine):>8.0f}"
                + (f"{workers:>10.0f}" if workers > 0 else f"{'-':>10}")
                + f"{median([r.steal_seconds for r in mine]):>8.2f}"
            )
    return "\n".join(lines)


def ratio_lines(slides: Sequence[BuiltSlide], runs: Sequence[Run]) -> tuple[list[str], bool]:
    lines, all_pass = [], True
    for slide in slides:
        for target in TARGETS:
            top = [r.seconds for r in runs_of(runs, slide, target.numerator)]
            bottom = [r.seconds for r in runs_of(runs, slide, target.denominator)]
            if not top or not bottom:
                continue
            # Measured here: a core's speed swings by up to 1.7x over a few seconds, independently
            # on each core, so every run is slowed by some share of that. With the variants
            # alternating, the medians see the same noise (the lower-variance estimate); the
            # fastest runs catch the luckiest seconds of each variant, so they are shown, not used.
            value = median(top) / median(bottom)
            paired = [a / b for a, b in zip(top, bottom, strict=True)]
            if target.minimum is None:
                verdict = "no target"
            else:
                verdict = f"target >= {target.minimum:<4} "
                verdict += "PASS" if value >= target.minimum else "FAIL"
                all_pass &= value >= target.minimum
            text = (
                f"{slide.style:<6} t({target.numerator})/t({target.denominator}) = {value:5.3f}"
                f"  {verdict}"
                f"  fastest runs {min(top) / min(bottom):.2f},"
                f" per rep {min(paired):.2f}...{max(paired):.2f}"
            )
            if "svsicc-2" not in (target.numerator, target.denominator):
                # Both sides on one core: CPU time is what a quiet machine's wall time would be.
                cpu_top = median([r.cpu_seconds for r in runs_of(runs, slide, target.numerator)])
                cpu_bottom = median(
                    [r.cpu_seconds for r in runs_of(runs, slide, target.denominator)]
                )
                if target.numerator == "libvips":
                    cpu_top = float("nan")
                text += f"  (CPU-time ratio {cpu_top / cpu_bottom:.2f})"
            lines.append(text)
    for target in TARGETS:
        lines.append(f"  t({target.numerator})/t({target.denominator}): {target.meaning}")
    lines += scaling_lines(slides, runs)
    return lines, all_pass


def scaling_lines(slides: Sequence[BuiltSlide], runs: Sequence[Run]) -> list[str]:
    """The codec floor's own 1-to-2-worker ratio beside svsicc's: context, no target.

    floor-2 is apply's pool with nothing to convert, so it shares every cost of running on two
    cores (pool start, result transfer, one writer, fsync) and whatever the host takes from
    either core during the run. A low svsicc ratio next to an equally low floor ratio is the
    machine, not the colour stage.
    """
    lines = []
    for slide in slides:
        medians = {
            v: median([r.seconds for r in runs_of(runs, slide, v)])
            for v in ("floor", "floor-2", "svsicc-1", "svsicc-2")
        }
        if any(math.isnan(value) for value in medians.values()):  # a variant was not run
            continue
        lines.append(
            f"{slide.style:<6} 1-to-2-worker ratio, no target: codec floor "
            f"t(floor)/t(floor-2) = {medians['floor'] / medians['floor-2']:.3f}, svsicc "
            f"t(svsicc-1)/t(svsicc-2) = {medians['svsicc-1'] / medians['svsicc-2']:.3f}"
        )
    return lines


def stage_breakdown(slide: BuiltSlide, tiles: int) -> tuple[str, Any]:
    """svsicc bench on the slide: where a tile's time goes, one core, nothing written."""
    from svsicc.check.bench import bench_slide, format_bench

    result = bench_slide(slide.path, tiles=tiles)
    return format_bench(result), result


def interleaved_line(slide: BuiltSlide, table: ColourTable, chunk: int = 32) -> str:
    """floor against svsicc's colour stage in one process, alternating every ``chunk`` tiles.

    Both share each few seconds of the machine's speed, so this ratio is nearly free of the
    noise that whole runs see; it prices the colour stage alone (no table load, no set-up).
    """
    from svsicc.convert.engine import PageJob, SegmentProcessor, SegmentTask
    from svsicc.drivers import read_slide
    from svsicc.tiff import file as tiff

    with tiff.TiffReader(slide.path) as reader:
        page = read_slide(reader).pages[0]
        job = PageJob.for_page(page)
        tasks = [SegmentTask.for_segment(page, i) for i in range(len(page.offsets))]
        datas = [reader.read(t.offset, t.count) for t in tasks]
    processors = {
        "floor": SegmentProcessor(slide.path, [job], NoColour()),  # type: ignore[arg-type]
        "svsicc": SegmentProcessor(slide.path, [job], table),
    }
    spent = dict.fromkeys(processors, 0.0)
    for start in range(0, len(tasks), chunk):
        # Alternate which goes first, so neither always follows the other's cache footprint.
        names = list(processors) if (start // chunk) % 2 == 0 else list(reversed(processors))
        for name in names:
            began = time.perf_counter()
            processors[name].process_many(
                tasks[start : start + chunk], datas[start : start + chunk]
            )
            spent[name] += time.perf_counter() - began
    per_tile = {name: 1000 * seconds / len(tasks) for name, seconds in spent.items()}
    return (
        f"{slide.style}: interleaved in one process, {chunk}-tile chunks over all "
        f"{len(tasks)} level-0 tiles: floor {per_tile['floor']:.3f} ms/tile, svsicc "
        f"{per_tile['svsicc']:.3f} ms/tile, t(floor)/t(svsicc) = "
        f"{spent['floor'] / spent['svsicc']:.2f} (colour stage in context "
        f"{per_tile['svsicc'] - per_tile['floor']:.3f} ms/tile)"
    )


def overhead_lines(
    slides: Sequence[BuiltSlide], runs: Sequence[Run], benches: dict[str, Any], table: ColourTable
) -> list[str]:
    """svsicc(1) minus the floor, against what the stage costs predict."""
    started = time.perf_counter()
    table.is_identity(1)  # what apply runs once per slide
    identity_check = time.perf_counter() - started
    lines = []
    for slide in slides:
        floor = [r.seconds for r in runs_of(runs, slide, "floor")]
        one = [r.seconds for r in runs_of(runs, slide, "svsicc-1")]
        bench = benches.get(slide.style)
        if not floor or not one or bench is None:
            continue
        colour_ms = next(s.mean_ms for s in bench.stages if s.name == "colour")
        colour = colour_ms * slide.segments / 1000
        lines.append(
            f"{slide.style}: t(svsicc-1) - t(floor) = {median(one) - median(floor):.2f} s; "
            f"colour stage {colour_ms:.3f} ms x {slide.segments} segments = {colour:.2f} s; "
            f"per-slide identity check (table.is_identity) {identity_check:.3f} s"
        )
    return lines


def jpeg_layout(tile: bytes, photometric: int) -> str:
    """What a JPEG tile in a TIFF holds, e.g. "YCbCr 4:2:0": Photometric decides the colourspace
    (as libtiff and OpenSlide decide), the frame header the sampling."""
    at = tile.find(b"\xff\xc0")
    if at < 0:
        return "not baseline JPEG"
    sampling = {0x11: "4:4:4", 0x21: "4:2:2", 0x22: "4:2:0"}.get(tile[at + 11], hex(tile[at + 11]))
    return f"{'YCbCr' if photometric == 6 else 'RGB'} {sampling}"


def colour_check(slide: BuiltSlide, work: Path, env: dict[str, str]) -> str:
    """How far each output's level 0 is from LittleCMS applied to the decoded original."""
    import tifffile

    from svsicc.colour.transform import IccProfile, Intent, default_target, reference_transform

    size = min(2048, slide.size)
    with tifffile.TiffFile(slide.path) as tif:
        original = np.ascontiguousarray(tif.pages[0].asarray()[:size, :size, :3])
    ideal = reference_transform(
        original, IccProfile.from_file(PROFILE_FILE), default_target(), Intent.PERCEPTUAL
    ).astype(np.int16)
    parts = []
    for variant in ("svsicc-1", "naive", "libvips"):
        out = work / f"check-{variant}-{slide.style}.tif"
        out.unlink(missing_ok=True)
        command = [sys.executable, __file__, "--child", variant, "--slide", str(slide.path),
                   "--output", str(out), "--tile", str(slide.tile),
                   "--quality", str(slide.quality), "--style", slide.style]  # fmt: skip
        subprocess.run(command, env=env, capture_output=True, check=True)
        with tifffile.TiffFile(out) as tif:
            page = tif.pages.first
            level0 = np.asarray(page.asarray()[:size, :size, :3], np.int16)
            stream = tif.filehandle
            stream.seek(page.dataoffsets[0])
            tile = stream.read(page.databytecounts[0])
            layout = jpeg_layout(tile, int(page.photometric))
        out.unlink()
        parts.append(f"{variant} {float(np.abs(level0 - ideal).mean()):.2f} ({layout})")
    moved = float(np.abs(ideal - original.astype(np.int16)).mean())
    return (
        f"{slide.style}: level 0 ({size}x{size}) mean |output - LittleCMS(original)| /255: "
        + ", ".join(parts)
        + f" (the conversion itself moves pixels by {moved:.2f})"
    )


def memory_check(work: Path, env: dict[str, str], style: str, small: int, reps: int) -> list[str]:
    large = 2 * small
    slides = [build_slide(work, style, size) for size in (small, large)]
    lines = []
    all_runs: list[Run] = []
    for _ in range(reps):
        for slide in slides:
            for variant in ("svsicc-1", "svsicc-2"):
                all_runs.append(run_child(variant, slide, work, env))
    for variant in ("svsicc-1", "svsicc-2"):
        peaks = {}
        for slide in slides:
            mine = [r for r in all_runs if r.size == slide.size and r.variant == variant]
            peaks[slide.size] = (
                median([r.rss_mb for r in mine]),
                median([r.worker_rss_mb for r in mine]),
            )
        (main_s, worker_s), (main_l, worker_l) = peaks[small], peaks[large]
        growth = main_l - main_s
        worker_growth = worker_l - worker_s if variant == "svsicc-2" else 0.0
        worst = max(growth, worker_growth)
        verdict = "PASS" if worst <= 50 else "FAIL"
        lines.append(
            f"{style} {variant}: peak RSS {small}px {main_s:.0f} MB -> {large}px {main_l:.0f} MB "
            f"(+{growth:.0f} MB)"
            + (
                f"; largest worker {worker_s:.0f} -> {worker_l:.0f} MB (+{worker_growth:.0f} MB)"
                if variant == "svsicc-2"
                else ""
            )
            + f"   target growth <= 50 MB {verdict}"
        )
    return lines


# ------------------------------------------------------------------------------- main


def sized(slide: BuiltSlide, label: str) -> marginal.SizedSlide:
    return marginal.SizedSlide(slide.style, label, slide.path, slide.segments)


def machine_line() -> str:
    import imagecodecs
    import PIL
    from PIL import features

    import svsicc

    try:
        import pyvips

        libvips = f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    except ImportError:  # only the libvips variant needs it (pip install '.[bench]')
        libvips = "libvips not installed"
    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} cores, load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; "
        f"python {sys.version.split()[0]}, numpy {np.__version__}, svsicc {svsicc.__version__}, "
        f"imagecodecs {imagecodecs.__version__} ({imagecodecs.jpeg8_version()}), "
        f"Pillow {PIL.__version__} (LittleCMS {features.version('littlecms2')}), {libvips}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/svsicc-bench"),
        help="folder for the slides, outputs and colour-table cache",
    )
    p.add_argument("--size", type=int, default=12000, help="level-0 width = height (pixels)")
    p.add_argument("--reps", type=int, default=7, help="repetitions (ratios are of medians)")
    p.add_argument("--styles", default=",".join(STYLES), help="comma list of at2, gt450")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants")
    p.add_argument(
        "--memory",
        action="store_true",
        help="also compare apply's peak RSS at 2x --size (builds larger slides)",
    )
    p.add_argument("--json", type=Path, help="also write every run to this JSON file")
    p.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip comparing each variant's level 0 with LittleCMS on the original",
    )
    p.add_argument(
        "--bench-tiles", type=int, default=400, help="tiles svsicc bench samples per slide"
    )
    p.add_argument(
        "--marginal-styles",
        default=",".join(MARGINAL_STYLES),
        help="styles timed against the independent codec floor, per segment ('' for none)",
    )
    p.add_argument(
        "--small",
        default="2220x2967",
        help="WIDTHxHEIGHT of the small slide of the per-segment comparison",
    )
    p.add_argument(
        "--j2k-size",
        type=int,
        default=6000,
        help="level-0 width = height of the large JPEG 2000 slide (JPEG styles use --size)",
    )
    # Internal: one timed variant in a fresh process.
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--slide", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, help=argparse.SUPPRESS)
    p.add_argument("--quality", type=int, help=argparse.SUPPRESS)
    p.add_argument("--style", help=argparse.SUPPRESS)
    p.add_argument("--bigtiff", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    styles = [s for s in args.styles.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    marginal_styles = [s for s in args.marginal_styles.split(",") if s]
    for name in [*styles, *variants]:
        if name not in STYLES + VARIANTS:
            raise SystemExit(f"unknown style or variant {name!r}")
    for name in marginal_styles:
        if name not in ("at2", "gt450", "jp2k-33003", "jp2k-33005"):
            raise SystemExit(f"unknown style {name!r} for --marginal-styles")
    try:
        small_width, small_height = (int(v) for v in args.small.split("x"))
    except ValueError:
        raise SystemExit(f"--small wants WIDTHxHEIGHT, not {args.small!r}") from None
    needs_vips = "libvips" in variants or args.check
    if needs_vips and importlib.util.find_spec("pyvips") is None:
        raise SystemExit(
            "the libvips variant and the colour check need pyvips: pip install -e '.[bench]', "
            "or pass --variants without libvips and --no-check"
        )
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SVSICC_CACHE_DIR=str(work / "cache"))
    os.environ["SVSICC_CACHE_DIR"] = env["SVSICC_CACHE_DIR"]
    print(machine_line(), flush=True)

    from svsicc.colour.transform import ColourTable, IccProfile, Intent, default_target

    # Every svsicc run then loads the table from the cache, as on any run after the first.
    table = ColourTable.load_or_build(
        IccProfile.from_file(PROFILE_FILE), default_target(), Intent.PERCEPTUAL
    )
    slides = [build_slide(work, style, args.size) for style in styles]
    for s in slides:
        print(
            f"{s.path.name}: {s.size}x{s.size}, {s.tile}px tiles, Q={s.quality}, "
            f"{s.level0_tiles} level-0 tiles (all distinct), {s.segments} segments rewritten, "
            f"{s.path.stat().st_size / 1e6:,.0f} MB",
            flush=True,
        )
    pairs = [
        (
            sized(build_slide(work, style, small_width, small_height), "small"),
            sized(
                build_slide(work, style, args.j2k_size if "jp2k" in style else args.size), "large"
            ),
        )
        for style in marginal_styles
    ]
    benches: dict[str, Any] = {}
    for slide in slides:
        text, benches[slide.style] = stage_breakdown(slide, args.bench_tiles)
        print(text, flush=True)
    runs: list[Run] = []
    process_runs: list[marginal.ProcessRun] = []
    for rep in range(args.reps if variants else 0):
        # Rotate the order so that no variant always runs first or last.
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for slide in slides:
            for variant in order:
                run = run_child(variant, slide, work, env)
                runs.append(run)
                print(
                    f"  rep {rep + 1} {slide.style:<6}{variant:<9}{run.seconds:7.2f} s "
                    f"RSS {run.rss_mb:5.0f} MB",
                    flush=True,
                )
    if pairs:
        print("independent codec floor (benchmarks/codec_floor.py) and svsicc apply --workers 1,")
        print("whole processes, alternating:", flush=True)
        process_runs = marginal.measure(pairs, args.reps, work, env, lambda s: print(s, flush=True))
    print()
    print("ms/tile = median wall seconds / segments apply rewrites (all levels + thumbnail")
    print("strips); MP/s = level-0 megapixels / median wall seconds; RSS = peak of the main")
    print("process; worker MB = largest pool worker; steal s = CPU time other guests took from")
    print("this machine during the run (median). Times exclude interpreter start-up and imports.")
    print(speed_table(slides, runs, variants))
    print()
    lines, all_pass = ratio_lines(slides, runs)
    print(
        "ratios of median wall times over the repetitions (higher is better for svsicc); the "
        "ratio of each variant's fastest run and the range within single repetitions show the "
        "noise:"
    )
    print("\n".join(lines))
    if pairs:
        print()
        print(
            "per segment against the independent codec floor (imagecodecs decode + encode at the "
            "source's quality, sampling and colourspace, bare writes; whole processes timed from "
            "outside, medians): ms/seg = (t(large) - t(small)) / (segments(large) - "
            "segments(small)); start-up = t(small) - segments(small) x ms/seg; whole runs = "
            "t(floor)/t(svsicc) on the large slide"
        )
        lines, marginal_pass = marginal.report(pairs, process_runs)
        print("\n".join(lines))
        all_pass &= marginal_pass
        for _, large in pairs:
            print(marginal.interleaved_line(large.style, large.path, table), flush=True)
    print()
    print("\n".join(overhead_lines(slides, runs, benches, table)))
    for slide in slides:
        print(interleaved_line(slide, table), flush=True)
    floors = [r for r in runs if r.variant == "floor" and "commit_seconds" in r.extra]
    if floors:
        commit = median([r.extra["commit_seconds"] for r in floors])
        print(
            f"(fsync + rename at commit, inside floor and svsicc, not libvips: median "
            f"{commit:.2f} s)"
        )
    if args.check:
        print()
        for slide in slides:
            print(colour_check(slide, work, env), flush=True)
    if args.memory:
        print()
        print(f"memory: apply on {args.size}px vs {2 * args.size}px level 0")
        for style in styles:
            for line in memory_check(work, env, style, args.size, max(1, min(args.reps, 2))):
                print(line)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "slides": [s.to_dict() for s in slides],
                    "runs": [r.__dict__ for r in runs],
                    "process_runs": [r.__dict__ for r in process_runs],
                },
                indent=2,
            )
        )
    print()
    print("all ratio targets met" if all_pass else "some ratio targets missed")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
