"""A dependency-free progress line for terminals: shown only on a TTY, only for long jobs."""

from __future__ import annotations

import sys
import time
from typing import TextIO

# Short jobs finish before a bar would help; showing one would only add noise to logs.
SHOW_AFTER_SECONDS = 2.0


def duration_text(seconds: float) -> str:
    """``m:ss``, or ``XhYYm`` from an hour on (progress bars, ETAs, summaries)."""
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    def __init__(
        self,
        label: str,
        unit: str = "tiles",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self.started
        if elapsed < SHOW_AFTER_SECONDS or (now - self._last_draw < 0.2 and done < total):
            return
        self._last_draw = now
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        text = (
            f"\r{self.label} [{bar}] {done}/{total} {self.unit} "
            f"{rate:,.0f} {self.unit}/s ETA {duration_text(eta)}{extra}"
        )
        self.stream.write(text[:160])
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
