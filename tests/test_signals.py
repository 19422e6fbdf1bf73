"""SIGINT and SIGTERM sent to the whole process group, as Ctrl-C, ``timeout``, Slurm and systemd
send them: a clean exit (130 / 143, one line, no traceback) with nothing left behind, from every
long-running command, with two workers where the command has workers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import svsicc
from svsicc.tiff.output import TEMP_SUFFIX
from tests.synthetic import load_real_pixels, mosaic, preset, write_slide

from .conftest import SCANSCOPE

SCANSCOPE_BYTES = SCANSCOPE.read_bytes()


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A mosaic AT2 slide of ~1300 distinct tiles (seconds of work on two idle cores), in a
    folder of its own for migrate, and its converted copy for verify and report."""
    folder = tmp_path_factory.mktemp("signals")
    pixels = mosaic(load_real_pixels(), 9600, 7200, seed=7)
    spec = preset("at2", profile=SCANSCOPE_BYTES, downsamples=(1, 4), with_label=False,
                  with_macro=False)  # fmt: skip
    (folder / "src" / "a").mkdir(parents=True)
    source = write_slide(folder / "src" / "a" / "slow.svs", pixels, spec)
    shutil.copyfile(source, folder / "src" / "slow2.svs")
    copy = folder / "converted.svs"
    svsicc.apply(source, copy, workers=2)
    return source, copy


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(f"*{TEMP_SUFFIX}")]


def holds_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (so it runs our code, handlers installed)."""
    with os.scandir(f"/proc/{pid}/fd") as fds:
        for fd in fds:
            try:
                if os.readlink(fd.path) == str(path):
                    return True
            except OSError:
                continue
    return False


def run_and_signal(
    command: list[str], sig: signal.Signals, started: Callable[[int], bool]
) -> tuple[int, str, str]:
    """Start ``svsicc`` in a session of its own, wait until ``started(pid)``, then send ``sig``
    to its whole process group (the workers get it too)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "svsicc.cli", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not started(process.pid):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the command did not get going"
            time.sleep(0.02)
        # Mid-run: let the pool start and a few batches go.
        time.sleep(0.5)
        assert process.poll() is None, "finished before it could be interrupted"
        os.killpg(process.pid, sig)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, out, err


def assert_clean_exit(code: int, err: str, sig: signal.Signals) -> None:
    expected, what = (143, "terminated") if sig == signal.SIGTERM else (130, "interrupted")
    assert code == expected, f"exit {code}, stderr: {err!r}"
    assert "Traceback" not in err and "Exception" not in err, err
    assert err.strip() == f"svsicc: {what}; no output was left behind"


SIGNALS = [signal.SIGINT, signal.SIGTERM]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_apply_with_two_workers(
    tmp_path: Path, slides: tuple[Path, Path], sig: signal.Signals
) -> None:
    source, _ = slides
    out = tmp_path / "o.svs"
    code, _, err = run_and_signal(
        ["apply", str(source), str(out), "--quiet", "--workers", "2"],
        sig,
        lambda pid: bool(temp_files(tmp_path)),
    )
    assert_clean_exit(code, err, sig)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_migrate_with_two_workers(
    tmp_path: Path, slides: tuple[Path, Path], sig: signal.Signals
) -> None:
    source, _ = slides
    dst = tmp_path / "dst"
    code, _, err = run_and_signal(
        ["migrate", str(source.parent.parent), str(dst), "--quiet", "--workers", "2"],
        sig,
        lambda pid: bool(dst.exists() and temp_files(dst)),
    )
    # Migrate says what stays and how to resume instead of "no output was left behind".
    expected, what = (143, "terminated") if sig == signal.SIGTERM else (130, "interrupted")
    assert code == expected, f"exit {code}, stderr: {err!r}"
    assert "Traceback" not in err and "Exception" not in err, err
    said = re.fullmatch(
        rf"svsicc: {what}; (\d+) slides? finished in this run stay in {re.escape(str(dst))} "
        r"\(in the journal\), \d+ slides? in progress removed, \d+ slides? not started; run the "
        r"same command again to resume",
        err.strip(),
    )
    assert said, err
    assert temp_files(dst) == []
    assert len(list(dst.rglob("*.svs"))) == int(said.group(1))  # only finished slides landed


@pytest.mark.parametrize("command", ["verify", "report"])
def test_verify_and_report(tmp_path: Path, slides: tuple[Path, Path], command: str) -> None:
    source, copy = slides
    extra = ["-o", str(tmp_path / "report")] if command == "report" else []
    for sig in SIGNALS:
        code, _, err = run_and_signal(
            [command, str(source), str(copy), *extra], sig, lambda pid: holds_open(pid, copy)
        )
        assert_clean_exit(code, err, sig)
        assert list(tmp_path.iterdir()) == []
