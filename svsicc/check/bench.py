"""``svsicc bench SLIDE``: what each stage of ``apply`` costs per tile on this slide.

It runs apply's own pieces (the TIFF reader, the codec of the page, the colour table) on a sample
of level-0 tiles spread over the slide, times each stage separately on one core, and writes
nothing: new tiles go to a buffer in memory. The only file it may create is the colour-table cache
that ``apply`` uses too (``SVSICC_CACHE_DIR``, default ``~/.cache/svsicc``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svsicc.codecs import SegmentCodec
from svsicc.colour.transform import ColourOut, ColourTable, IccProfile, Intent, colour_path
from svsicc.convert.apply import pages_to_rewrite, refuse_unless_applicable
from svsicc.convert.engine import CODEC_ERRORS, PageJob, default_workers, make_codec
from svsicc.convert.plan import ProfileChoice, ProfileSource, maps_as_identity
from svsicc.drivers import read_slide
from svsicc.exceptions import (
    SvsiccError,
    TileDecodeError,
    UnsupportedLayoutError,
)
from svsicc.tiff import file as tiff
from svsicc.tiff.slide import Page

DEFAULT_TILES = 200
STAGES = ("read", "decode", "colour", "encode", "write")


@dataclass(frozen=True)
class StageCost:
    """Milliseconds per tile of one stage over the sampled tiles."""

    name: str
    median_ms: float
    mean_ms: float

    @classmethod
    def from_ns(cls, name: str, samples: Sequence[int]) -> StageCost:
        return cls(name, statistics.median(samples) / 1e6, statistics.fmean(samples) / 1e6)

    def to_dict(self) -> dict[str, float]:
        return {"median_ms": self.median_ms, "mean_ms": self.mean_ms}


@dataclass(frozen=True)
class BenchResult:
    slide: Path
    profile: IccProfile
    profile_origin: str
    target: IccProfile
    intent: Intent
    identity: bool  # apply would mark the slide but rewrite no pixel
    level0_width: int
    level0_height: int
    tile_width: int
    tile_height: int
    compression: str
    tiles_sampled: int
    stages: tuple[StageCost, ...]
    total: StageCost
    table_seconds: float
    segments_to_rewrite: int
    pixels_to_rewrite: int
    cores: int
    colour_path: str  # the C gather or the numpy fallback, and why

    @property
    def tiles_per_second(self) -> float:
        """One core; from the mean, since throughput is what a whole slide sums up."""
        return 1000.0 / self.total.mean_ms if self.total.mean_ms > 0 else 0.0

    @property
    def estimated_seconds_one_core(self) -> float:
        """Every segment apply rewrites, priced per pixel at the sampled level-0 cost."""
        ms_per_pixel = self.total.mean_ms / (self.tile_width * self.tile_height)
        return ms_per_pixel * self.pixels_to_rewrite / 1000.0

    def to_dict(self) -> dict[str, object]:
        return {
            "slide": str(self.slide),
            "profile": self.profile.description,
            "profile_origin": self.profile_origin,
            "target": self.target.description,
            "intent": self.intent.label,
            "identity": self.identity,
            "level0": {
                "width": self.level0_width,
                "height": self.level0_height,
                "tile_width": self.tile_width,
                "tile_height": self.tile_height,
                "compression": self.compression,
            },
            "tiles_sampled": self.tiles_sampled,
            "stages": {s.name: s.to_dict() for s in self.stages},
            "total": self.total.to_dict(),
            "tiles_per_second_one_core": self.tiles_per_second,
            "megapixels_per_second_one_core": self.tiles_per_second
            * self.tile_width
            * self.tile_height
            / 1e6,
            "table_seconds": self.table_seconds,
            "segments_to_rewrite": self.segments_to_rewrite,
            "megapixels_to_rewrite": self.pixels_to_rewrite / 1e6,
            "estimated_seconds_one_core": self.estimated_seconds_one_core,
            "cores": self.cores,
            "colour_path": self.colour_path,
            "estimated_seconds_all_cores_ideal": self.estimated_seconds_one_core / self.cores,
        }


def sample_indices(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``range(count)`` (all of them if there are fewer)."""
    if wanted >= count:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, wanted).round()})


def bench_slide(
    path: str | os.PathLike[str],
    *,
    profile: ProfileSource = None,
    target: ProfileSource = None,
    intent: Intent | str | None = None,
    tiles: int = DEFAULT_TILES,
    fallback_profile: ProfileSource = None,
) -> BenchResult:
    """Time read, decode, colour, encode and write (to memory) on ``tiles`` level-0 tiles."""
    if tiles < 1:
        raise SvsiccError(Path(path), f"--tiles must be at least 1, not {tiles}")
    src = Path(path)
    choice = ProfileChoice.load(profile, fallback_profile, target, intent)
    with tiff.TiffReader(src) as reader:
        slide = read_slide(reader)
        refuse_unless_applicable(src, slide)
        plan = choice.plan(slide)
        source_profile, origin = plan.source, plan.origin
        target_profile, chosen_intent = plan.target, plan.intent
        # apply's own checks: the pages it would rewrite, refusing what it would refuse.
        pages = pages_to_rewrite(slide, include_associated=False)
        started = time.perf_counter()
        table = ColourTable.load_or_build(source_profile, target_profile, chosen_intent)
        table_seconds = time.perf_counter() - started
        identity = maps_as_identity(source_profile, target_profile, table)
        level0 = slide.level0
        stages, total, sampled = _time_stages(reader, level0, table, tiles)
        extents = {
            (off, cnt): page.segment_shape(i)
            for page in pages
            for i, (off, cnt) in enumerate(zip(page.offsets, page.byte_counts, strict=True))
            if cnt
        }
    return BenchResult(
        slide=src,
        profile=source_profile,
        profile_origin=origin,
        target=target_profile,
        intent=chosen_intent,
        identity=identity,
        level0_width=level0.width,
        level0_height=level0.height,
        tile_width=level0.segment_width,
        tile_height=level0.segment_height,
        compression=level0.compression_name,
        tiles_sampled=sampled,
        stages=stages,
        total=total,
        table_seconds=table_seconds,
        segments_to_rewrite=0 if identity else len(extents),
        pixels_to_rewrite=0 if identity else sum(r * c for r, c in extents.values()),
        cores=default_workers(),
        colour_path=colour_path(),
    )


def _time_stages(
    reader: tiff.TiffReader, page: Page, table: ColourTable, wanted: int
) -> tuple[tuple[StageCost, ...], StageCost, int]:
    filled = [i for i, count in enumerate(page.byte_counts) if count]
    if not filled:
        raise UnsupportedLayoutError(reader.path, "level 0 has no tile data to measure", ifd=0)
    chosen = [filled[i] for i in sample_indices(len(filled), wanted)]

    def read(index: int) -> bytes:
        return reader.read(page.offsets[index], page.byte_counts[index], "tile", ifd=page.index)

    def decode_error(index: int, exc: Exception) -> SvsiccError:
        return TileDecodeError(reader.path, f"cannot decode: {exc}", ifd=page.index, tile=index)

    codec = make_codec(PageJob.for_page(page))
    return time_stages(chosen, read, page.segment_shape, codec, table, decode_error)


def time_stages(
    chosen: Sequence[int],
    read: Callable[[int], bytes],
    shape: Callable[[int], tuple[int, int]],
    codec: SegmentCodec,
    table: ColourTable,
    decode_error: Callable[[int, Exception], SvsiccError],
) -> tuple[tuple[StageCost, ...], StageCost, int]:
    """Time each stage on the segments ``chosen`` (at least one): ``read(i)`` returns segment
    ``i``'s stored bytes, ``shape(i)`` its (rows, cols) as the codec decodes it, and
    ``decode_error`` the error to raise when it does not decode. Any format's segments (TIFF
    tiles, DICOM frames) go through this one loop, so their figures compare."""
    sink = bytearray(1 << 20)
    colour_out = ColourOut()  # as apply's engine: BGRX in place, RGB into one reused buffer
    layout = codec.decoded_layout
    samples: dict[str, list[int]] = {name: [] for name in STAGES}
    totals: list[int] = []
    clock = time.perf_counter_ns

    def one(index: int) -> tuple[int, int, int, int, int, int]:
        nonlocal sink
        rows, cols = shape(index)
        t0 = clock()
        data = read(index)
        t1 = clock()
        try:
            pixels = codec.decode(data, rows, cols)
        except CODEC_ERRORS as exc:
            raise decode_error(index, exc) from None
        t2 = clock()
        converted = table.apply(pixels, layout, colour_out.for_pixels(pixels, layout))
        t3 = clock()
        encoded = codec.encode(converted, "RGBX", data)
        t4 = clock()
        if len(encoded) > len(sink):
            sink = bytearray(2 * len(encoded))
        memoryview(sink)[: len(encoded)] = encoded
        t5 = clock()
        return t0, t1, t2, t3, t4, t5

    # The first tile pays one-off costs (stream settings parsed, codec buffers allocated).
    one(chosen[0])
    for index in chosen:
        marks = one(index)
        for name, start, end in zip(STAGES, marks, marks[1:], strict=False):
            samples[name].append(end - start)
        totals.append(marks[-1] - marks[0])
    stages = tuple(StageCost.from_ns(name, samples[name]) for name in STAGES)
    return stages, StageCost.from_ns("total", totals), len(chosen)


# -- command line ---------------------------------------------------------------------------------


def format_bench(result: BenchResult) -> str:
    r = result
    lines = [
        f"{r.slide}: level 0 {r.level0_width}x{r.level0_height}, "
        f"{r.tile_width}x{r.tile_height} tiles, {r.compression}",
        f"profile {r.profile.description!r} ({r.profile_origin}) -> {r.target.description!r} "
        f"({r.intent.label}); colour table ready in {r.table_seconds:.2f} s",
        f"colour path: {r.colour_path}",
        f"{r.tiles_sampled} tiles sampled across level 0, one core:",
        f"  {'stage':<16}{'median ms':>10}{'mean ms':>10}{'share':>8}",
    ]
    for stage in r.stages:
        share = 100 * stage.mean_ms / r.total.mean_ms if r.total.mean_ms else 0.0
        label = "write (memory)" if stage.name == "write" else stage.name
        lines.append(f"  {label:<16}{stage.median_ms:>10.3f}{stage.mean_ms:>10.3f}{share:>7.0f}%")
    lines.append(f"  {'total':<16}{r.total.median_ms:>10.3f}{r.total.mean_ms:>10.3f}")
    megapixels = r.tiles_per_second * r.tile_width * r.tile_height / 1e6
    lines.append(f"{r.tiles_per_second:,.0f} tiles/s ({megapixels:.1f} MP/s) on one core")
    if r.identity:
        lines.append(
            "the profile is (within one level) the target: apply would only mark the slide"
        )
    else:
        one_core = r.estimated_seconds_one_core
        lines.append(
            f"whole slide: {r.segments_to_rewrite:,} segments ({r.pixels_to_rewrite / 1e6:,.0f} MP)"
            f" ~{one_core:,.1f} s on one core, ~{one_core / r.cores:,.1f} s on {r.cores} cores "
            "if they scale perfectly (the disk write is not included)"
        )
    return "\n".join(lines)
