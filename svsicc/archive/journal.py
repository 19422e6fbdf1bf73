"""The migration journal: one SQLite file in DST_DIR that says what happened to every slide.

Only the coordinating process writes it (workers, local or on a Dask cluster, return
:class:`SlideRecord` values). Every write is its own transaction with ``synchronous=FULL``, so a
kill -9 at any moment leaves the last committed state. The default rollback journal is used, not
WAL: WAL needs shared memory, which network file systems (where archives live) do not provide.

A slide's row holds its latest state only; the ``runs`` table keeps one row per invocation.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from svsicc.exceptions import OutputError
from svsicc.version import __version__

JOURNAL_NAME = "svsicc-journal.sqlite"
SCHEMA_VERSION = "2"
# Columns added since schema 1 (a journal of the previous version gains them on open).
_ADDED_IN_2 = ("target_description", "target_sha256")

RUNNING = "running"
DONE = "done"
SKIPPED = "skipped"
FAILED = "failed"
STATUSES = (RUNNING, DONE, SKIPPED, FAILED)

# Why a slide was skipped (the ``detail`` of a skipped row).
SKIP_ALREADY_APPLIED = "already applied"
SKIP_IDENTITY = "identity"
SKIP_NO_PROFILE = "no profile"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    source_dir TEXT NOT NULL,
    settings TEXT NOT NULL,
    coordinator TEXT NOT NULL,
    svsicc_version TEXT NOT NULL,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS slides (
    path TEXT PRIMARY KEY,
    source_path TEXT NOT NULL,
    output_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'skipped', 'failed')),
    detail TEXT NOT NULL DEFAULT '',
    source_sha256 TEXT NOT NULL DEFAULT '',
    output_sha256 TEXT NOT NULL DEFAULT '',
    output_size INTEGER NOT NULL DEFAULT 0,
    profile_description TEXT NOT NULL DEFAULT '',
    profile_sha256 TEXT NOT NULL DEFAULT '',
    profile_origin TEXT NOT NULL DEFAULT '',
    intent TEXT NOT NULL DEFAULT '',
    target_description TEXT NOT NULL DEFAULT '',
    target_sha256 TEXT NOT NULL DEFAULT '',
    segments_rewritten INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    seconds REAL NOT NULL DEFAULT 0,
    hash_seconds REAL NOT NULL DEFAULT 0,
    apply_seconds REAL NOT NULL DEFAULT 0,
    worker TEXT NOT NULL DEFAULT '',
    svsicc_version TEXT NOT NULL DEFAULT '',
    run_id INTEGER NOT NULL DEFAULT 0
);
"""


def utc_now() -> str:
    """An ISO 8601 UTC timestamp with microseconds (sorts as text)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class SlideRecord:
    """One slide's row: what was done to it, with hashes and timings.

    ``path`` is the slide's path relative to SRC_DIR (POSIX separators), the journal's key.
    ``detail`` is the skip reason (``SKIP_*``) or the failure's one-line reason.
    """

    path: str
    source_path: str
    output_path: str
    size: int
    mtime_ns: int
    status: str
    detail: str = ""
    source_sha256: str = ""
    output_sha256: str = ""
    output_size: int = 0
    profile_description: str = ""
    profile_sha256: str = ""
    profile_origin: str = ""
    intent: str = ""
    target_description: str = ""
    target_sha256: str = ""  # empty in rows written by schema 1: read the output's tag then
    segments_rewritten: int = 0
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    hash_seconds: float = 0.0
    apply_seconds: float = 0.0
    worker: str = ""
    svsicc_version: str = __version__
    run_id: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown slide status {self.status!r}")

    @property
    def display_status(self) -> str:
        """``done``, ``skipped: identity``, ``failed``...: how tables and summaries show it."""
        return f"{SKIPPED}: {self.detail}" if self.status == SKIPPED else self.status

    @property
    def finished(self) -> bool:
        return self.status in (DONE, SKIPPED)

    def with_changes(self, **changes: object) -> SlideRecord:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        values: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        values["display_status"] = self.display_status
        return values


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SlideRecord))


class Journal:
    """``with Journal.open(dst_dir) as journal: ...``; one writer (the coordinator) at a time."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, dst_dir: Path) -> Journal:
        path = dst_dir / JOURNAL_NAME
        try:
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA synchronous = FULL")
            # executescript commits on its own; the statements are idempotent.
            db.executescript(_SCHEMA)
            with _transaction(db):
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                    (SCHEMA_VERSION,),
                )
            schema = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
            if schema == "1":
                _upgrade_from_1(db)
                schema = SCHEMA_VERSION
        except sqlite3.DatabaseError as exc:
            raise OutputError(
                path,
                f"cannot use the journal: {exc}",
                hint="move the file away to start the journal afresh",
            ) from None
        if schema != SCHEMA_VERSION:
            db.close()
            raise OutputError(
                path, f"journal schema {schema} is not {SCHEMA_VERSION}; a newer svsicc wrote it"
            )
        return cls(path, db)

    @classmethod
    def open_read_only(cls, dst_dir: Path) -> Journal | None:
        """The journal for a dry run, or None when DST_DIR has none yet (nothing is created)."""
        path = dst_dir / JOURNAL_NAME
        if not path.is_file():
            return None
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            db.execute("SELECT count(*) FROM slides").fetchone()
        except sqlite3.DatabaseError as exc:
            raise OutputError(path, f"cannot read the journal: {exc}") from None
        return cls(path, db)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- runs ------------------------------------------------------------------------------------

    def start_run(self, source_dir: Path, settings: Mapping[str, object]) -> int:
        with _transaction(self._db):
            cursor = self._db.execute(
                "INSERT INTO runs (started_at, source_dir, settings, coordinator, svsicc_version)"
                " VALUES (?, ?, ?, ?, ?)",
                (utc_now(), str(source_dir), json.dumps(settings), this_process(), __version__),
            )
        run_id = cursor.lastrowid
        assert run_id is not None
        return run_id

    def finish_run(self, run_id: int, outcome: str) -> None:
        with _transaction(self._db):
            self._db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ? WHERE id = ?",
                (utc_now(), outcome, run_id),
            )

    # -- slides ----------------------------------------------------------------------------------

    def write(self, record: SlideRecord) -> None:
        """Insert or replace the slide's row (committed before returning)."""
        names = ", ".join(RECORD_FIELDS)
        marks = ", ".join("?" for _ in RECORD_FIELDS)
        with _transaction(self._db):
            self._db.execute(
                f"INSERT OR REPLACE INTO slides ({names}) VALUES ({marks})",
                tuple(getattr(record, name) for name in RECORD_FIELDS),
            )

    def records(self) -> dict[str, SlideRecord]:
        return {record.path: record for record in self._iter_records()}

    def _iter_records(self) -> Iterator[SlideRecord]:
        # A dry run reads a journal of schema 1 as it is (read-only): absent columns keep their
        # defaults.
        present = {row[1] for row in self._db.execute("PRAGMA table_info(slides)")}
        wanted = [name for name in RECORD_FIELDS if name in present]
        names = ", ".join(wanted)
        for row in self._db.execute(f"SELECT {names} FROM slides ORDER BY path"):
            yield SlideRecord(**dict(zip(wanted, row, strict=True)))


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Schema 1 -> 2: the target chosen per slide; old rows keep '' (unknown) until redone."""
    with _transaction(db):
        columns = {row[1] for row in db.execute("PRAGMA table_info(slides)")}
        for name in _ADDED_IN_2:
            if name not in columns:
                db.execute(f"ALTER TABLE slides ADD COLUMN {name} TEXT NOT NULL DEFAULT ''")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
