"""``svsicc bench`` on a DICOM WSI series: what each stage of ``apply`` costs per frame.

The same measurement as for a TIFF slide (:mod:`svsicc.check.bench`, whose timing loop runs
here): apply's own pieces (the frame index, the codec of the instance's coding, the colour
table) on frames sampled across the largest VOLUME instance, one core, nothing written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from svsicc.check.bench import DEFAULT_TILES, BenchResult, sample_indices, time_stages
from svsicc.colour.transform import ColourTable, Intent, colour_path
from svsicc.convert.engine import PageJob, default_workers, make_codec
from svsicc.convert.plan import ProfileChoice, ProfileSource, maps_as_identity
from svsicc.dicom.apply import refuse_applied, series_plan
from svsicc.dicom.pixeldata import read_frame
from svsicc.dicom.series import read_series
from svsicc.dicom.syntax import short_name
from svsicc.exceptions import SvsiccError, TileDecodeError


def bench_dicom(
    path: str | os.PathLike[str],
    *,
    profile: ProfileSource = None,
    target: ProfileSource = None,
    intent: Intent | str | None = None,
    tiles: int = DEFAULT_TILES,
    fallback_profile: ProfileSource = None,
) -> BenchResult:
    """:func:`svsicc.check.bench.bench_slide` for the DICOM series at ``path`` (a folder or one
    of its files): ``level0`` is the largest VOLUME instance (its total pixel matrix and frame
    size), ``tiles`` its frames to sample, and the segments to rewrite every VOLUME and
    THUMBNAIL frame, as apply rewrites them."""
    src = Path(path)
    if tiles < 1:
        raise SvsiccError(src, f"--tiles must be at least 1, not {tiles}")
    choice = ProfileChoice.load(profile, fallback_profile, target, intent)
    series = read_series(src)
    refuse_applied(series)  # apply would refuse it (exit 3), so there is nothing to time
    plan = series_plan(series, choice)
    started = time.perf_counter()
    table = ColourTable.load_or_build(plan.source, plan.target, plan.intent)
    table_seconds = time.perf_counter() - started
    identity = maps_as_identity(plan.source, plan.target, table)
    # read_series puts VOLUME instances first, the largest first.
    level0 = series.instances[0]
    assert level0.coding is not None  # read_series refuses a VOLUME it cannot re-encode
    coding = level0.coding
    codec = make_codec(PageJob(0, coding.compression, coding.photometric, 1, None))
    frames = level0.frames
    chosen = sample_indices(len(frames.frames), tiles)

    def shape(_index: int) -> tuple[int, int]:
        return level0.rows, level0.cols  # every frame is whole; edge frames are padded

    def decode_error(index: int, exc: Exception) -> SvsiccError:
        return TileDecodeError(level0.path, f"frame {index}: cannot decode: {exc}")

    with open(level0.path, "rb") as fh:
        stages, total, sampled = time_stages(
            chosen, lambda n: read_frame(fh, frames, n), shape, codec, table, decode_error
        )
    converted = [i for i in series.instances if i.converted]
    segments = sum(len(i.frames.frames) for i in converted)
    pixels = sum(len(i.frames.frames) * i.rows * i.cols for i in converted)
    width, height = level0.size
    return BenchResult(
        slide=src,
        profile=plan.source,
        profile_origin=plan.origin,
        target=plan.target,
        intent=plan.intent,
        identity=identity,
        level0_width=width,
        level0_height=height,
        tile_width=level0.cols,
        tile_height=level0.rows,
        compression=short_name(level0.transfer_syntax),
        tiles_sampled=sampled,
        stages=stages,
        total=total,
        table_seconds=table_seconds,
        segments_to_rewrite=0 if identity else segments,
        pixels_to_rewrite=0 if identity else pixels,
        cores=default_workers(),
        colour_path=colour_path(),
    )
