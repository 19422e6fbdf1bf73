"""``migrate --dry-run``: what a run would do, the profiles seen, and a time estimate."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from svsicc.archive.discover import FoundSlide, discover
from svsicc.archive.journal import (
    Journal,
)
from svsicc.archive.options import (
    Colours,
    MigrateOptions,
    check_dirs,
    load_colours,
)
from svsicc.archive.resume import slides_to_do
from svsicc.archive.summary import human_bytes
from svsicc.colour.transform import ColourTable, IccProfile
from svsicc.convert.engine import PageJob, SegmentProcessor, SegmentTask, default_workers
from svsicc.convert.plan import find_embedded_profile, maps_as_identity
from svsicc.drivers import read_slide
from svsicc.exceptions import ProfileError, SvsiccError
from svsicc.progress import duration_text
from svsicc.tiff import file as tiff
from svsicc.tiff.slide import Page, Role, Slide

# Tiles decoded, transformed and encoded to estimate the per-pixel cost in a dry run.
_ESTIMATE_TILES = 12


@dataclass(frozen=True)
class ProfileSeen:
    description: str
    sha256: str
    count: int
    outcome: str  # "convert", "identity", or "unusable: why"


@dataclass(frozen=True)
class Estimate:
    seconds: float
    workers: int
    basis: str


@dataclass(frozen=True)
class MigrationPlan:
    source_dir: Path
    destination_dir: Path
    slides: int
    total_bytes: int
    to_convert: int
    convert_bytes: int
    identity: int
    already_applied: int
    without_profile: int
    without_profile_converted: bool  # --profile given: they are converted too
    finished_earlier: int
    unreadable: tuple[tuple[str, str], ...]
    profiles: tuple[ProfileSeen, ...]
    override: str | None
    estimate: Estimate | None
    to_do: int
    to_do_bytes: int
    redone: tuple[tuple[str, str], ...] = ()  # finished slides whose choice changed, and why
    fallback: str | None = None
    # What this run would do with its slides: kind ("convert", "identity", ...) -> count.
    to_do_kinds: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "source_dir": str(self.source_dir),
            "destination_dir": str(self.destination_dir),
            "slides": self.slides,
            "total_bytes": self.total_bytes,
            "to_convert": self.to_convert,
            "convert_bytes": self.convert_bytes,
            "identity": self.identity,
            "already_applied": self.already_applied,
            "without_profile": self.without_profile,
            "without_profile_converted": self.without_profile_converted,
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "finished_earlier": self.finished_earlier,
            "to_do": self.to_do,
            "to_do_bytes": self.to_do_bytes,
            "to_do_kinds": dict(self.to_do_kinds),
            "profiles": [p.__dict__ for p in self.profiles],
            "profile_override": self.override,
            "fallback_profile": self.fallback,
            "redone": [{"path": path, "why": why} for path, why in self.redone],
            "estimate": None if self.estimate is None else self.estimate.__dict__,
        }


@dataclass(frozen=True)
class _Classified:
    found: FoundSlide
    slide: Slide | None
    kind: str  # "convert", "identity", "applied", "no profile", "unreadable"
    reason: str = ""


def plan_migration(options: MigrateOptions) -> MigrationPlan:
    """What ``run_migration`` would do, reading only the slides' IFDs (and a few tiles of one
    slide per compression for the time estimate). Nothing is written."""
    src, dst = check_dirs(options)
    colours = load_colours(options)
    found = discover(src, options.include, options.exclude, skip_dir=dst)
    journal = Journal.open_read_only(dst) if dst.is_dir() else None
    previous = {} if journal is None else journal.records()
    if journal is not None:
        journal.close()
    profiles: Counter[tuple[str, str]] = Counter()
    outcomes: dict[str, str] = {}  # profile sha256 -> convert / identity / unusable
    tables: dict[str, ColourTable] = {}
    classified: list[_Classified] = []
    for slide_found in found:
        try:
            slide, applied, embedded = _read_for_plan(slide_found.path)
        except SvsiccError as exc:
            classified.append(_Classified(slide_found, None, "unreadable", exc.one_line()))
            continue
        if applied:
            classified.append(_Classified(slide_found, slide, "applied"))
            continue
        if embedded is not None:
            try:
                seen = IccProfile.from_bytes(embedded, f"{slide_found.path}: embedded profile")
                profiles[(seen.description, seen.sha256)] += 1
            except ProfileError as exc:
                if colours.profile is None:
                    classified.append(_Classified(slide_found, None, "unreadable", exc.one_line()))
                    continue
                seen = None
        else:
            profiles[("(none)", "")] += 1
            seen = None
        effective = colours.profile or seen or colours.fallback
        if effective is None:
            classified.append(_Classified(slide_found, slide, "no profile"))
            continue
        outcome = outcomes.get(effective.sha256)
        if outcome is None:
            outcome = _profile_outcome(effective, colours, tables)
            outcomes[effective.sha256] = outcome
        kind = {"convert": "convert", "identity": "identity"}.get(outcome, "unreadable")
        classified.append(_Classified(slide_found, slide, kind, outcome))
    profile_rows = tuple(
        ProfileSeen(desc, sha, count, outcomes.get(sha, "no profile" if not sha else "convert"))
        for (desc, sha), count in sorted(profiles.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    if colours.profile is not None:
        # Every slide uses the override: the table of embedded profiles is informative only.
        profile_rows = tuple(
            ProfileSeen(p.description, p.sha256, p.count, "overridden by --profile")
            for p in profile_rows
        )
    profile_given = colours.chooses_for_unprofiled
    to_do, redo = slides_to_do([c.found for c in classified], previous, dst, colours)
    todo_paths = {s.rel_path for s in to_do}
    todo = [c for c in classified if c.found.rel_path in todo_paths]
    workers = _planned_workers(options, len(todo))
    estimate = _estimate(todo, colours, tables, workers)
    counts = Counter(c.kind for c in classified)
    return MigrationPlan(
        source_dir=src,
        destination_dir=dst,
        slides=len(found),
        total_bytes=sum(s.size for s in found),
        to_convert=counts["convert"],
        convert_bytes=sum(c.found.size for c in classified if c.kind == "convert"),
        identity=counts["identity"],
        already_applied=counts["applied"],
        without_profile=profiles[("(none)", "")],
        without_profile_converted=profile_given,
        finished_earlier=len(found) - len(todo),
        unreadable=tuple(
            (c.found.rel_path, c.reason) for c in classified if c.kind == "unreadable"
        ),
        profiles=profile_rows,
        override=None
        if colours.profile is None
        else f"{colours.profile.description} ({colours.profile.sha256[:12]})",
        estimate=estimate,
        to_do=len(todo),
        to_do_bytes=sum(c.found.size for c in todo),
        redone=tuple(sorted(redo.items())),
        fallback=None
        if colours.fallback is None
        else f"{colours.fallback.description} ({colours.fallback.sha256[:12]})",
        to_do_kinds=tuple(
            (kind, n) for kind in _KIND_LABELS if (n := sum(1 for c in todo if c.kind == kind))
        ),
    )


def _read_for_plan(path: Path) -> tuple[Slide | None, bool, bytes | None]:
    """(the TIFF slide, or None for a DICOM series; whether svsicc converted it already; the
    embedded profile's bytes)."""
    if path.is_dir():
        from svsicc.dicom.info import dicom_info

        info = dicom_info(path)
        if info.profile_error is not None and info.applied is None:
            raise ProfileError(path, f"the optical path's ICC profile: {info.profile_error}")
        return None, info.applied is not None, None if info.profile is None else info.profile.data
    with tiff.TiffReader(path) as reader:
        slide = read_slide(reader)
    found = find_embedded_profile(slide)
    return slide, slide.applied is not None, None if found is None else found[0]


def _planned_workers(options: MigrateOptions, slides: int) -> int:
    if options.scheduler:
        return 0  # unknown without asking the cluster; the estimate is then CPU-seconds
    wanted = options.workers if options.workers is not None else default_workers()
    return max(1, min(wanted, slides or 1))


def _profile_outcome(profile: IccProfile, colours: Colours, tables: dict[str, ColourTable]) -> str:
    """Whether ``profile`` maps to the target as identity, as apply decides it: "identity",
    "convert", or "unusable: why"."""
    intent = colours.intent or profile.default_intent
    if profile.sha256 == colours.target.sha256:
        return "identity"  # no table to build
    try:
        table = ColourTable.load_or_build(profile, colours.target, intent)
    except (SvsiccError, OSError, ValueError) as exc:
        return f"unusable: {exc}"
    tables[profile.sha256] = table
    return "identity" if maps_as_identity(profile, colours.target, table) else "convert"


def _rewritten_pages(slide: Slide) -> list[Page]:
    return [p for p in slide.pages if p.role in (Role.LEVEL, Role.THUMBNAIL)]


def _pixels_to_rewrite(slide: Slide) -> int:
    return sum(
        p.segment_width * p.segment_height * sum(1 for c in p.byte_counts if c)
        for p in _rewritten_pages(slide)
    )


def measure_seconds_per_pixel(
    slide: Slide, table: ColourTable, tiles: int = _ESTIMATE_TILES
) -> tuple[float, int]:
    """Decode + transform + encode ``tiles`` level-0 tiles spread over the slide, as a worker
    would; return seconds per pixel and the number of tiles timed."""
    page = slide.level0
    processor = SegmentProcessor(slide.path, [PageJob.for_page(page)], table)
    present = [i for i, count in enumerate(page.byte_counts) if count]
    chosen = present[:: max(1, len(present) // tiles)][:tiles]
    samples = []
    with tiff.TiffReader(slide.path) as reader:
        for i in chosen:
            task = SegmentTask.for_segment(page, i)
            samples.append((task, reader.read(task.offset, task.count, "tile", ifd=page.index)))
    processor.process(*samples[0])  # warm-up: codec set-up, first touch of the table
    started = time.perf_counter()
    for task, data in samples:
        processor.process(task, data)
    elapsed = time.perf_counter() - started
    return elapsed / sum(t.rows * t.cols for t, _ in samples), len(samples)


def _per_slide_overhead(table: ColourTable | None) -> float:
    """What apply spends per slide before any tile: loading the cached table and checking it
    for identity (apply does both for every slide)."""
    if table is None or table.file is None:
        return 0.0
    started = time.perf_counter()
    try:
        ColourTable.from_file(table.file).max_deviation_from_identity()
    except (OSError, ValueError):
        return 0.0
    return time.perf_counter() - started


def _hash_rate() -> float:
    data = bytes(32 * 1024 * 1024)
    started = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / max(1e-9, time.perf_counter() - started)


def _estimate(
    todo: list[_Classified], colours: Colours, tables: dict[str, ColourTable], workers: int
) -> Estimate | None:
    convert = [c for c in todo if c.kind == "convert" and c.slide is not None]
    by_compression: dict[int, list[_Classified]] = {}
    for c in convert:
        assert c.slide is not None
        by_compression.setdefault(c.slide.level0.compression, []).append(c)
    cpu = 0.0
    basis = []
    for compression, group in sorted(by_compression.items()):
        measured = None
        for c in sorted(group, key=lambda c: -c.found.size):  # the largest that can be measured
            assert c.slide is not None
            table = _table_for(c.slide, colours, tables)
            if table is None:
                continue
            try:
                measured = measure_seconds_per_pixel(c.slide, table)
            except (SvsiccError, OSError):
                continue
            name = c.slide.level0.compression_name
            tiles = f"{measured[1]} tile{'' if measured[1] == 1 else 's'}"
            basis.append(
                f"{'uncompressed' if name == 'none' else name}: {tiles} of {c.found.rel_path}"
                f" at {measured[0] * 1e6:.3f} s/Mpixel"
            )
            break
        if measured is None:
            basis.append(f"compression {compression}: no slide could be measured")
            continue
        cpu += measured[0] * sum(_pixels_to_rewrite(c.slide) for c in group if c.slide)
    if not todo:
        return Estimate(0.0, workers, "nothing to do")
    series = sum(1 for c in todo if c.kind == "convert" and c.slide is None)
    if series:
        basis.append(f"{series} DICOM series: pixels not measured, hashing only")
    applied = [c for c in todo if c.kind in ("convert", "identity")]
    overhead = _per_slide_overhead(next(iter(tables.values()), None))
    if applied and overhead:
        cpu += overhead * len(applied)
        basis.append(f"{overhead:.2f} s per slide to load its colour table")
    hashed = sum(c.found.size * (1 if c.kind == "no profile" else 2) for c in todo)
    rate = _hash_rate()
    cpu += hashed / rate
    basis.append(f"sha256 of inputs and outputs at {rate / 1e9:.2f} GB/s")
    seconds = cpu / workers if workers else cpu
    note = "; disk and network time not included"
    if not workers:
        note += "; CPU-seconds, divide by the cluster's threads"
    return Estimate(round(seconds, 3), workers, "; ".join(basis) + note)


def _table_for(
    slide: Slide, colours: Colours, tables: dict[str, ColourTable]
) -> ColourTable | None:
    if colours.profile is not None:
        return tables.get(colours.profile.sha256)
    embedded = find_embedded_profile(slide)
    if embedded is None:
        return None
    with contextlib.suppress(ProfileError):
        return tables.get(IccProfile.from_bytes(embedded[0]).sha256)
    return None


# The dry run's kinds of slide, in the order it lists them, with what happens to them.
_KIND_LABELS = {
    "convert": "to convert",
    "identity": "identity",
    "applied": "already applied",
    "no profile": "without a profile",
    "unreadable": "unreadable",
}


def format_plan(plan: MigrationPlan) -> str:
    def row(label: str, count: int, note: str) -> str:
        return f"  {label:<22} {count:>7}  {note}"

    no_profile = (
        "converted with --profile or --fallback-profile"
        if plan.without_profile_converted
        else "skipped: nothing written (pass --profile ICC or --fallback-profile ICC)"
    )
    kinds = ", ".join(f"{_KIND_LABELS[k]} {n}" for k, n in plan.to_do_kinds) or "nothing"
    # The first block counts every slide found; the run leaves out those the journal says are
    # finished, so its line says how its slides split into the same kinds.
    lines = [
        f"svsicc migrate --dry-run {plan.source_dir} -> {plan.destination_dir}",
        row("slides found", plan.slides, human_bytes(plan.total_bytes)),
        row("  to convert", plan.to_convert, human_bytes(plan.convert_bytes)),
        row("  identity", plan.identity, "profile maps to sRGB unchanged: marked copy"),
        row("  already applied", plan.already_applied, "copied as they are"),
        row("  without a profile", plan.without_profile, no_profile),
        row("  unreadable", len(plan.unreadable), "will fail"),
        row("finished earlier", plan.finished_earlier, "in the journal: not redone"),
        row("to do in this run", plan.to_do, f"{human_bytes(plan.to_do_bytes)}: {kinds}"),
        "profiles seen (embedded):",
        f"  {'slides':>6}  {'description':<32} {'sha256':<12}  outcome",
    ]
    for p in plan.profiles:
        lines.append(f"  {p.count:>6}  {p.description[:32]:<32} {p.sha256[:12]:<12}  {p.outcome}")
    if plan.override:
        lines.append(f"--profile for every slide: {plan.override}")
    if plan.fallback:
        lines.append(f"--fallback-profile for slides without one: {plan.fallback}")
    for path, why in plan.redone:
        lines.append(f"redone as the choice changed: {path}: {why}")
    for path, reason in plan.unreadable:
        lines.append(f"unreadable: {path}: {reason}")
    if plan.estimate is not None:
        e = plan.estimate
        who = f"{e.workers} worker{'s' if e.workers != 1 else ''}" if e.workers else "1 thread"
        lines.append(f"estimated time: {duration_text(e.seconds)} ({e.seconds:.1f} s) with {who}")
        lines.append(f"  measured: {e.basis}")
    return "\n".join(lines)
