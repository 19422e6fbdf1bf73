"""Temporary-file liveness is told by a lock held by the writer, not by its process id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from svsicc.archive.lock import remove_stale_temps_under
from svsicc.tiff import output
from svsicc.tiff.output import TEMP_SUFFIX, TempOutput, temp_name

# A second real process that creates and locks the temporary file for OUTPUT, as a writer does.
HOLDER = """
import sys, time
from pathlib import Path
from svsicc.tiff.output import create_locked, temp_name
path = temp_name(Path(sys.argv[1]), sys.argv[2])
create_locked(path)
print(path, flush=True)
time.sleep(120)
"""


def start_holder(out: Path, purpose: str = "") -> tuple[subprocess.Popen[str], Path]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), purpose], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    line = holder.stdout.readline().strip()
    assert line, "the holder did not start"
    return holder, Path(line)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def state(pid: int) -> str:
    # /proc/PID/stat: "pid (comm) S ..."; comm may hold spaces, the state follows the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_temp_file_of_a_live_holder_is_kept(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "o.svs"
    holder, temp = start_holder(out)
    holders.append(holder)
    twin_holder, twin = start_holder(out, "bigtiff")
    holders.append(twin_holder)
    assert output.remove_stale_temps(out) == []
    assert remove_stale_temps_under(tmp_path) == []
    # A writer into the same destination starts beside it and leaves it alone.
    with TempOutput(out) as mine:
        assert mine.path != temp
        assert temp.exists() and twin.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([temp.name, twin.name])


def test_temp_file_of_a_zombie_is_removed(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    """A killed writer nobody reaps (PID 1 without an init in a container) still passes the
    old ``kill(pid, 0)`` test; it holds no lock any more."""
    out = tmp_path / "o.svs"
    holder, temp = start_holder(out)
    holders.append(holder)
    os.kill(holder.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while state(holder.pid) != "Z":
        assert time.monotonic() < deadline, "the holder did not become a zombie"
        time.sleep(0.01)
    os.kill(holder.pid, 0)  # a zombie: its pid looks alive
    assert output.remove_stale_temps(out) == [temp]
    assert not temp.exists()
    assert state(holder.pid) == "Z"  # removed while the zombie was still there


def test_temp_file_named_by_a_reused_pid_is_removed(tmp_path: Path) -> None:
    """The pid in the name belongs to a live, unrelated process that holds no lock on it."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "o.svs"
        temp = out.with_name(f".o.svs.{sleeper.pid}{TEMP_SUFFIX}")
        temp.write_bytes(b"x" * 100)
        twin = out.with_name(f".o.svs.{sleeper.pid}.bigtiff{TEMP_SUFFIX}")
        twin.write_bytes(b"x")
        assert sorted(remove_stale_temps_under(tmp_path)) == sorted([temp, twin])
        assert list(tmp_path.iterdir()) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_own_stale_temp_is_removed_and_own_live_one_kept(tmp_path: Path) -> None:
    out = tmp_path / "o.svs"
    temp_name(out).write_bytes(b"left by an earlier call in this process")
    with TempOutput(out) as first:
        assert first.path == temp_name(out)  # the stale one was removed to make room
        other = tmp_path / "p.svs"
        with TempOutput(other) as second:
            assert output.remove_stale_temps(out) == []
            assert remove_stale_temps_under(tmp_path) == []
            assert first.path.exists() and second.path.exists()
            assert first.file is not None
            first.file.write(b"still ours")
            first.commit()
        assert out.read_bytes() == b"still ours"
    assert [p.name for p in tmp_path.iterdir()] == ["o.svs"]


def test_lock_survives_another_open_and_close_in_the_writer(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    """apply --verify reads the finished temporary file through its own open: a classic POSIX
    record lock would be dropped when that closes, and the file taken for stale."""
    out = tmp_path / "o.svs"
    with TempOutput(out) as mine:
        with open(mine.path, "rb"):
            pass
        checker = subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path;"
             " from svsicc.tiff.output import remove_stale_temps;"
             "print(len(remove_stale_temps(Path(sys.argv[1]))))", str(out)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert checker.stdout.strip() == "0"
        assert mine.path.exists()
