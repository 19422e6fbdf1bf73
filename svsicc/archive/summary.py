"""What a migration did: the run's report, its progress line, summary.csv/json and the table."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from svsicc.archive.journal import (
    DONE,
    FAILED,
    JOURNAL_NAME,
    RECORD_FIELDS,
    RUNNING,
    SKIP_ALREADY_APPLIED,
    SKIP_IDENTITY,
    SKIP_NO_PROFILE,
    SKIPPED,
    SlideRecord,
)
from svsicc.archive.options import (
    EXIT_FAILED,
    EXIT_LEFT_WITHOUT_PROFILE,
)
from svsicc.progress import duration_text
from svsicc.tiff.output import TempOutput, output_error
from svsicc.version import __version__

SUMMARY_CSV = "summary.csv"

SUMMARY_JSON = "summary.json"

STATUS_ORDER = (
    DONE,
    f"{SKIPPED}: {SKIP_IDENTITY}",
    f"{SKIPPED}: {SKIP_ALREADY_APPLIED}",
    f"{SKIPPED}: {SKIP_NO_PROFILE}",
    FAILED,
    RUNNING,
)


def human_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


class ArchiveProgress:
    """One line across the archive: slides done/total, bytes, GB/s, ETA (by bytes), failures.
    Drawn only on a terminal, only once the run has lasted a couple of seconds."""

    SHOW_AFTER = 2.0

    def __init__(self, slides: int, total_bytes: int, enabled: bool, stream: TextIO) -> None:
        self.slides, self.total_bytes = slides, total_bytes
        self.done = self.done_bytes = self.failed = 0
        self.enabled, self.stream = enabled, stream
        self.started = time.monotonic()
        self._drawn = False

    def add(self, record: SlideRecord) -> None:
        self.done += 1
        self.done_bytes += record.size
        self.failed += record.status == FAILED

    def draw(self) -> None:
        elapsed = time.monotonic() - self.started
        if not self.enabled or elapsed < self.SHOW_AFTER:
            return
        rate = self.done_bytes / elapsed
        eta = (self.total_bytes - self.done_bytes) / rate if rate > 0 else 0.0
        text = (
            f"svsicc migrate {self.done}/{self.slides} slides, "
            f"{human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)}, "
            f"{human_bytes(rate)}/s, ETA {duration_text(eta) if rate > 0 else '?'}, "
            f"{self.failed} failed"
        )
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r" + text[:width] + "\033[K")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Wipe the line (before printing something else, and at the end)."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False


@dataclass(frozen=True)
class MigrationReport:
    source_dir: Path
    destination_dir: Path
    backend: str
    started_at: str
    finished_at: str
    seconds: float
    found: int
    finished_earlier: int
    this_run: tuple[SlideRecord, ...]
    records: tuple[SlideRecord, ...]  # the journal's every row after the run
    stale_temps_removed: int
    redone: tuple[tuple[str, str], ...] = ()  # (path, why) of slides redone as choices changed
    # Slides found by this run whose journal row says "skipped: no profile", this run's or not.
    left_without_profile: int = 0

    @property
    def failed(self) -> int:
        return sum(1 for r in self.this_run if r.status == FAILED)

    @property
    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAILED
        return EXIT_LEFT_WITHOUT_PROFILE if self.left_without_profile else 0

    def to_dict(self) -> dict[str, object]:
        return {
            "svsicc_version": __version__,
            "source_dir": str(self.source_dir),
            "destination_dir": str(self.destination_dir),
            "journal": str(self.destination_dir / JOURNAL_NAME),
            "run": {
                "backend": self.backend,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "seconds": round(self.seconds, 3),
                "slides_found": self.found,
                "finished_earlier": self.finished_earlier,
                "processed": len(self.this_run),
                "input_bytes": sum(r.size for r in self.this_run),
                "stale_temps_removed": self.stale_temps_removed,
                "redone": [{"path": path, "why": why} for path, why in self.redone],
                "left_without_profile": self.left_without_profile,
                "exit_code": self.exit_code,
                "statuses": dict(Counter(r.display_status for r in self.this_run)),
            },
            "statuses": dict(Counter(r.display_status for r in self.records)),
            "slides": [r.to_dict() for r in self.records],
        }


def counted(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def write_summaries(report: MigrationReport) -> None:
    """summary.csv (one row per slide in the journal) and summary.json, each renamed into place."""
    dst = report.destination_dir
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("display_status", *RECORD_FIELDS))
    for record in report.records:
        writer.writerow((record.display_status, *(getattr(record, f) for f in RECORD_FIELDS)))
    _write_atomically(dst / SUMMARY_CSV, text.getvalue())
    _write_atomically(dst / SUMMARY_JSON, json.dumps(report.to_dict(), indent=2) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    # Through a locked temporary file like a slide's, so no other run takes it for stale.
    with TempOutput(path) as out:
        assert out.file is not None
        try:
            out.file.write(text.encode("utf-8"))
        except OSError as exc:
            raise output_error(path, exc) from None
        out.commit()


def format_summary(report: MigrationReport, attention_limit: int = 100) -> str:
    """The table printed at the end: the archive's state per status (this run's share beside
    it), then every slide that needs someone's attention (failed, no profile)."""
    by_status: dict[str, list[SlideRecord]] = {}
    for record in report.records:
        by_status.setdefault(record.display_status, []).append(record)
    this_run = Counter(r.display_status for r in report.this_run)
    rate = sum(r.size for r in report.this_run) / report.seconds if report.seconds > 0 else 0.0
    # No "svsicc migrate SRC -> DST" header: the run's first line already said it.
    lines = [
        f"this run: {len(report.this_run)} slides in {report.seconds:.1f} s "
        f"({human_bytes(rate)}/s) on {report.backend}; {report.finished_earlier} finished "
        f"earlier, not redone"
        + (
            f"; {report.stale_temps_removed} stale temporary files removed"
            if report.stale_temps_removed
            else ""
        )
        + (
            f"; {len(report.redone)} redone as the profile, target or intent chosen changed"
            if report.redone
            else ""
        ),
        "",
        f"{'status':<26} {'slides':>7} {'this run':>9} {'input':>11} {'output':>11} {'seconds':>9}",
    ]
    statuses = [s for s in STATUS_ORDER if s in by_status] + sorted(
        s for s in by_status if s not in STATUS_ORDER
    )
    for status in statuses:
        rows = by_status[status]
        written = sum(r.output_size for r in rows)
        lines.append(
            f"{status:<26} {len(rows):>7} {this_run.get(status, 0):>9} "
            f"{human_bytes(sum(r.size for r in rows)):>11} "
            f"{human_bytes(written) if written else '-':>11} "
            f"{sum(r.seconds for r in rows):>9.1f}"
        )
    lines.append(
        f"{'total':<26} {len(report.records):>7} {len(report.this_run):>9} "
        f"{human_bytes(sum(r.size for r in report.records)):>11} "
        f"{human_bytes(sum(r.output_size for r in report.records)):>11} "
        f"{sum(r.seconds for r in report.records):>9.1f}"
    )
    if report.redone:
        lines += ["", "redone (choice changed since they were finished):"]
        lines += [f"  {path}: {why}" for path, why in report.redone[:attention_limit]]
        if len(report.redone) > attention_limit:
            lines.append(f"  ... and {len(report.redone) - attention_limit} more")
    attention = [
        r
        for r in report.records
        if r.status == FAILED or (r.status == SKIPPED and r.detail == SKIP_NO_PROFILE)
    ]
    if attention:
        lines += ["", "needs attention:"]
        for r in attention[:attention_limit]:
            why = r.detail if r.status == FAILED else "pass --profile ICC to convert it"
            lines.append(f"  {r.display_status:<20} {r.path}: {why}")
        if len(attention) > attention_limit:
            lines.append(f"  ... and {len(attention) - attention_limit} more in {SUMMARY_CSV}")
    if report.exit_code == EXIT_LEFT_WITHOUT_PROFILE:
        lines.append(
            f"exit {EXIT_LEFT_WITHOUT_PROFILE}: {counted(report.left_without_profile, 'slide')} "
            "left unconverted for lack of a profile"
        )
    dst = report.destination_dir
    lines += ["", f"journal {dst / JOURNAL_NAME}; summaries {dst / SUMMARY_CSV}, {SUMMARY_JSON}"]
    return "\n".join(lines)
