"""svsicc against an independent codec floor, per segment and at start-up.

The floor is ``codec_floor.py`` beside this file (imagecodecs decode and re-encode of every level
and thumbnail tile, bare writes, no svsicc code); svsicc is the installed command line,
``svsicc apply SRC DST --workers 1``. Both run as whole processes, timed from outside (interpreter
start-up, imports and per-slide set-up included), on a small and a large slide of each style,
floor and svsicc alternating (which goes first swaps every repetition). From the medians:

* marginal cost per segment = (t(large) - t(small)) / (segments(large) - segments(small)), which
  leaves start-up out; the ratio floor / svsicc of these is the per-segment target (>= 0.85);
* start-up = t(small) - segments(small) x marginal cost: the time at zero segments (< 0.15 s for
  svsicc), for the JPEG styles only: a JPEG 2000 tile's cost depends on its content far more
  (glass against tissue), so the small and large slides' mix moves that intercept by seconds.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOOR_SCRIPT = Path(__file__).resolve().with_name("codec_floor.py")
VARIANTS = ("codec-floor", "svsicc-cli")
PER_SEGMENT_TARGET = 0.85  # floor / svsicc, marginal cost per segment
STARTUP_TARGET = 0.15  # seconds, svsicc


@dataclass(frozen=True)
class SizedSlide:
    style: str
    label: str  # "small" or "large"
    path: Path
    segments: int  # what apply rewrites (every level tile and thumbnail strip)


@dataclass(frozen=True)
class ProcessRun:
    variant: str
    style: str
    label: str
    seconds: float  # wall time of the whole process, from outside
    cpu_seconds: float  # user + system time of the process (and any children it waited for)


def command(variant: str, src: Path, dst: Path) -> list[str]:
    if variant == "codec-floor":
        return [sys.executable, str(FLOOR_SCRIPT), str(src), str(dst)]
    # The console script pip installed beside this interpreter: what a user runs.
    svsicc = Path(sys.executable).with_name("svsicc")
    return [str(svsicc), "apply", str(src), str(dst), "--workers", "1", "--overwrite", "--quiet"]


def run_once(variant: str, slide: SizedSlide, work: Path, env: dict[str, str]) -> ProcessRun:
    output = work / f"marginal-{variant}-{slide.path.stem}.out"
    output.unlink(missing_ok=True)
    # Bytecode cached as on any installed copy (pip compiles it; an editable install writes it on
    # first import), kept in the work folder: with PYTHONDONTWRITEBYTECODE set, every run would
    # compile svsicc's sources again (~0.15 s here) and time the compiler.
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        command(variant, slide.path, output), env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    output.unlink(missing_ok=True)
    os.sync()  # what the run left dirty must not slow the next one
    if done.returncode != 0:
        raise SystemExit(f"{variant} on {slide.path} failed:\n{done.stderr[-3000:]}")
    if variant == "codec-floor":
        floor_segments = json.loads(done.stdout.strip().splitlines()[-1])["segments"]
        if floor_segments != slide.segments:  # the two must do the same work
            raise SystemExit(
                f"codec floor re-encoded {floor_segments} segments of {slide.path}, "
                f"svsicc rewrites {slide.segments}"
            )
    return ProcessRun(variant, slide.style, slide.label, seconds, cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    pairs: Sequence[tuple[SizedSlide, SizedSlide]],
    reps: int,
    work: Path,
    env: dict[str, str],
    log: Callable[[str], None],
) -> list[ProcessRun]:
    runs: list[ProcessRun] = []
    for rep in range(reps):
        order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
        for pair in pairs:
            for slide in pair:
                for variant in order:
                    run = run_once(variant, slide, work, env)
                    runs.append(run)
                    log(
                        f"  rep {rep + 1} {slide.style:<11}{slide.label:<6}{variant:<12}"
                        f"{run.seconds:7.2f} s"
                    )
    return runs


@dataclass(frozen=True)
class Marginal:
    per_segment_ms: float
    startup_s: float


def marginal(small: SizedSlide, large: SizedSlide, t_small: float, t_large: float) -> Marginal:
    per_segment = (t_large - t_small) / (large.segments - small.segments)
    return Marginal(1000 * per_segment, t_small - small.segments * per_segment)


def report(
    pairs: Sequence[tuple[SizedSlide, SizedSlide]], runs: Sequence[ProcessRun]
) -> tuple[list[str], bool]:
    """One line per style: marginal ms per segment, the ratio, start-up; and the verdicts."""

    def seconds(variant: str, slide: SizedSlide, cpu: bool = False) -> list[float]:
        return [
            r.cpu_seconds if cpu else r.seconds
            for r in runs
            if r.variant == variant and r.style == slide.style and r.label == slide.label
        ]

    lines = [
        f"{'style':<11}{'segments':>14}{'floor ms/seg':>13}{'svsicc ms/seg':>14}"
        f"{'floor/svsicc':>13}{'start-up floor s':>17}{'svsicc s':>9}{'whole runs':>11}"
    ]
    verdicts: list[str] = []
    all_pass = True
    for small, large in pairs:
        found = {(v, s.label): seconds(v, s) for v in VARIANTS for s in (small, large)}
        if not all(found.values()):
            continue
        medians = {key: statistics.median(values) for key, values in found.items()}
        floor = marginal(
            small, large, medians["codec-floor", "small"], medians["codec-floor", "large"]
        )
        mine = marginal(
            small, large, medians["svsicc-cli", "small"], medians["svsicc-cli", "large"]
        )
        ratio = floor.per_segment_ms / mine.per_segment_ms
        # The same ratio from single repetitions: its spread shows the noise.
        single = [
            marginal(small, large, fs, fl).per_segment_ms
            / marginal(small, large, ss, sl).per_segment_ms
            for fs, fl, ss, sl in zip(
                found["codec-floor", "small"], found["codec-floor", "large"],
                found["svsicc-cli", "small"], found["svsicc-cli", "large"], strict=True,
            )
        ]  # fmt: skip
        whole = medians["codec-floor", "large"] / medians["svsicc-cli", "large"]
        # The same from CPU time: other tenants' load inflates it less than wall time.
        cpu = {
            (v, s.label): statistics.median(seconds(v, s, cpu=True))
            for v in VARIANTS
            for s in (small, large)
        }
        floor_cpu = marginal(small, large, cpu["codec-floor", "small"], cpu["codec-floor", "large"])
        mine_cpu = marginal(small, large, cpu["svsicc-cli", "small"], cpu["svsicc-cli", "large"])
        cpu_ratio = floor_cpu.per_segment_ms / mine_cpu.per_segment_ms
        has_startup = not small.style.startswith("jp2k")
        startups = (
            f"{floor.startup_s:>17.3f}{mine.startup_s:>9.3f}"
            if has_startup
            else f"{'n/a':>17}{'n/a':>9}"
        )
        lines.append(
            f"{small.style:<11}{f'{small.segments}/{large.segments}':>14}"
            f"{floor.per_segment_ms:>13.3f}{mine.per_segment_ms:>14.3f}{ratio:>13.3f}"
            f"{startups}{whole:>11.3f}"
        )
        per_segment_ok = ratio >= PER_SEGMENT_TARGET
        startup_ok = mine.startup_s < STARTUP_TARGET or not has_startup
        all_pass &= per_segment_ok and startup_ok
        verdict = (
            f"{small.style:<11} floor/svsicc per segment = {ratio:5.3f}  target >= "
            f"{PER_SEGMENT_TARGET} {'PASS' if per_segment_ok else 'FAIL'}  (single repetitions "
            f"{min(single):.3f}-{max(single):.3f}, from CPU time {cpu_ratio:.3f})"
        )
        if has_startup:
            verdict += (
                f"; svsicc start-up {mine.startup_s:.3f} s  "
                f"target < {STARTUP_TARGET} {'PASS' if startup_ok else 'FAIL'}"
                f"  (CPU time: svsicc {mine_cpu.startup_s:.3f} s, "
                f"floor {floor_cpu.startup_s:.3f} s)"
            )
        verdicts.append(verdict)
    return lines + verdicts, all_pass


def interleaved_line(style: str, path: Path, table: Any, chunk: int = 32) -> str:
    """The independent floor's re-encode against svsicc's per-segment work (decode, colour,
    encode), over every level-0 tile in one process, alternating every ``chunk`` tiles: both
    see the same seconds of a noisy machine, so this ratio is the steadiest one. Neither side
    reads the file or writes (the tiles are read beforehand), so the file work, start-up and
    set-up are out of it."""
    import tifffile
    from codec_floor import reencoder

    from svsicc.convert.engine import PageJob, SegmentProcessor, SegmentTask
    from svsicc.drivers import read_slide
    from svsicc.tiff import file as tiff

    with tiff.TiffReader(path) as reader:
        page = read_slide(reader).pages[0]
        tasks = [
            SegmentTask.for_segment(page, i)
            for i in range(len(page.offsets))
            if page.byte_counts[i]
        ]
        datas = [reader.read(t.offset, t.count) for t in tasks]
    with tifffile.TiffFile(path) as tif:
        first_page = tif.pages.first
        floor = reencoder(first_page, datas[0])
    svsicc = SegmentProcessor(path, [PageJob.for_page(page)], table)
    spent = {"floor": 0.0, "svsicc": 0.0}
    for start in range(0, len(tasks), chunk):
        names = ["floor", "svsicc"] if (start // chunk) % 2 == 0 else ["svsicc", "floor"]
        for name in names:
            began = time.perf_counter()
            if name == "floor":
                for data in datas[start : start + chunk]:
                    floor(data)
            else:
                svsicc.process_many(tasks[start : start + chunk], datas[start : start + chunk])
            spent[name] += time.perf_counter() - began
    per_tile = {name: 1000 * seconds / len(tasks) for name, seconds in spent.items()}
    return (
        f"{style}: independent floor and svsicc interleaved in one process, {chunk}-tile chunks "
        f"over all {len(tasks)} level-0 tiles: floor {per_tile['floor']:.3f} ms/tile, svsicc "
        f"{per_tile['svsicc']:.3f} ms/tile, floor/svsicc = {spent['floor'] / spent['svsicc']:.3f}"
    )
