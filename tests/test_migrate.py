"""svsicc migrate on a real mixed archive: statuses, outputs, journal, summaries, resume after
kill -9, the lock, the dry-run plan, and the same archive on a real Dask cluster."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

import svsicc
from svsicc.archive.discover import discover
from svsicc.archive.journal import JOURNAL_NAME
from svsicc.archive.lock import LOCK_NAME
from svsicc.cli.main import main
from tests.synthetic import load_real_pixels, preset, write_slide

from .conftest import CMU_EMBED, CMU_SMALL, SCANSCOPE, TCGA, sha256

PROFILE = SCANSCOPE.read_bytes()

# The mixed archive: relative path -> the journal status migrate must give it (no --profile).
EXPECTED = {
    "lab1/2019/at2-embedded.svs": "done",  # AT2 layout, profile in IFD 0 only
    "lab1/2019/at2-bare.svs": "skipped: no profile",  # AT2 without profile: needs --profile
    "lab1/CMU-Embed.tif": "done",  # a .tif with an Aperio description (ImageScope export)
    "lab2/gt450/scan 01.svs": "done",  # GT450 layout, profile on every level and thumbnail
    "tcga/tcga-cr-7395-01a-01-ts1.svs": "skipped: identity",  # real, embedded HP sRGB
    "cmu/CMU-1-Small-Region.svs": "skipped: no profile",  # real, no profile
    "broken/truncated.svs": "failed",
    "done-before/applied.svs": "skipped: already applied",
}
NOT_SLIDES = ("lab1/plain.tif", "lab1/readme.txt", "lab2/._resource-fork.svs")


def _crop(y: int, x: int, h: int, w: int) -> np.ndarray:
    return np.ascontiguousarray(load_real_pixels()[y : y + h, x : x + w])


def build_archive(root: Path, work: Path) -> Path:
    for folder in ("lab1/2019", "lab2/gt450", "tcga", "cmu", "broken", "done-before"):
        (root / folder).mkdir(parents=True)
    write_slide(
        root / "lab1/2019/at2-embedded.svs",
        _crop(900, 500, 720, 960),
        preset("at2", profile=PROFILE),
    )
    write_slide(
        root / "lab1/2019/at2-bare.svs",
        _crop(1500, 900, 480, 720),
        preset("at2", profile=None, icc_name=None),
    )
    write_slide(
        root / "lab2/gt450/scan 01.svs",
        _crop(1200, 300, 768, 1024),
        preset("gt450", profile=PROFILE),
    )
    shutil.copy(CMU_EMBED, root / "lab1/CMU-Embed.tif")
    shutil.copy(TCGA, root / "tcga")
    shutil.copy(CMU_SMALL, root / "cmu")
    broken = write_slide(
        work / "whole.svs", _crop(400, 400, 720, 960), preset("gt450", profile=PROFILE)
    )
    data = broken.read_bytes()
    (root / "broken/truncated.svs").write_bytes(data[: len(data) * 6 // 10])
    write_slide(work / "to-apply.svs", _crop(200, 1100, 480, 720), preset("gt450", profile=PROFILE))
    svsicc.apply(work / "to-apply.svs", root / "done-before/applied.svs", workers=1)
    tifffile.imwrite(root / "lab1/plain.tif", _crop(0, 0, 64, 64))  # not Aperio: ignored
    (root / "lab1/readme.txt").write_text("not a slide\n")
    (root / "lab2/._resource-fork.svs").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    return root


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # conftest's private cache is per test; module fixtures and subprocesses need it too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SVSICC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "svsicc-cache"))
        yield


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, cache_env: None) -> Path:
    root = build_archive(tmp_path_factory.mktemp("archive"), tmp_path_factory.mktemp("work"))
    # Every test checks at its end that no original was touched.
    return root


def source_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in root.rglob("*") if p.is_file()}


def journal_rows(dst: Path) -> dict[str, dict[str, object]]:
    db = sqlite3.connect(f"{(dst / JOURNAL_NAME).as_uri()}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return {row["path"]: dict(row) for row in db.execute("SELECT * FROM slides")}
    finally:
        db.close()


def display(row: dict[str, object]) -> str:
    return f"skipped: {row['detail']}" if row["status"] == "skipped" else str(row["status"])


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*svsicc-tmp*")]


@dataclass(frozen=True)
class Run:
    dst: Path
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    code = main(["migrate", *args])
    captured = capsys.readouterr()
    return Run(Path(args[1]), code, captured.out, captured.err)


@pytest.fixture(scope="module")
def local_run(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    dst = tmp_path_factory.mktemp("local") / "migrated"
    result = subprocess.run(
        [sys.executable, "-m", "svsicc.cli", "migrate", str(archive), str(dst), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(dst, result.returncode, result.stdout, result.stderr)


# -- the mixed archive -------------------------------------------------------------------------


def test_mixed_archive_statuses_outputs_and_summaries(archive: Path, local_run: Run) -> None:
    before = source_hashes(archive)
    dst = local_run.dst
    print(local_run.out)
    assert local_run.code == 1, local_run.err  # the truncated slide failed
    # One line per failure on stderr, naming the file; no traceback.
    assert local_run.err.count("svsicc: failed: ") == 1
    assert "broken/truncated.svs" in local_run.err and "Traceback" not in local_run.err

    rows = journal_rows(dst)
    assert {path: display(row) for path, row in rows.items()} == EXPECTED
    for path, row in rows.items():
        source, output = archive / path, dst / path
        assert row["source_path"] == str(source) and row["output_path"] == str(output)
        assert row["size"] == source.stat().st_size
        assert row["svsicc_version"] == svsicc.__version__
        assert row["finished_at"] >= row["started_at"] != ""
        if row["status"] == "failed":
            assert "truncated" in str(row["detail"]) and str(source) in str(row["detail"])
            assert not output.exists()
            continue
        assert row["source_sha256"] == sha256(source)
        if row["detail"] == "no profile":
            assert not output.exists()  # nothing converted: the gap stays visible
            continue
        assert row["output_sha256"] == sha256(output)
        assert row["output_size"] == output.stat().st_size
        assert row["profile_sha256"] and row["profile_description"]

    # The already-applied slide is copied byte for byte.
    assert sha256(dst / "done-before/applied.svs") == sha256(archive / "done-before/applied.svs")
    # Converted and identity copies open with OpenSlide and carry the mark.
    modes = {
        "lab1/2019/at2-embedded.svs": "transformed",
        "lab2/gt450/scan 01.svs": "transformed",
        "tcga/tcga-cr-7395-01a-01-ts1.svs": "identity (pixels unchanged)",
        "done-before/applied.svs": "transformed",
    }
    for path, mode in modes.items():
        with openslide.OpenSlide(str(dst / path)) as slide:
            assert slide.properties["aperio.ICC Profile Applied Mode"] == mode
            w, h = slide.dimensions
            region = np.asarray(slide.read_region((w // 2 - 64, h // 2 - 64), 0, (128, 128)))
            assert region[..., 3].min() == 255 and region[..., :3].std() > 5
    for path in ("lab1/2019/at2-embedded.svs", "lab2/gt450/scan 01.svs"):
        assert rows[path]["profile_description"] == "ScanScope v1"
        assert int(str(rows[path]["segments_rewritten"])) > 0
        # converted: the pixels differ from the original's
        with (
            openslide.OpenSlide(str(archive / path)) as a,
            openslide.OpenSlide(str(dst / path)) as b,
        ):
            assert (
                a.read_region((0, 0), 0, (64, 64)).tobytes()
                != b.read_region((0, 0), 0, (64, 64)).tobytes()
            )
    # OpenSlide 4.0.1 cannot read CMU-Embed.tif's uncompressed 592x592 tile (original included):
    # check that copy with tifffile.
    with tifffile.TiffFile(dst / "lab1/CMU-Embed.tif") as tif:
        assert "ICC Profile Applied = ScanScope v1" in tif.pages[0].description
        assert tif.pages[0].asarray().shape == (590, 590, 3)
    tcga = rows["tcga/tcga-cr-7395-01a-01-ts1.svs"]
    assert tcga["profile_description"] == "sRGB IEC61966-2.1" and tcga["segments_rewritten"] == 0

    # The summary table as printed.
    out = local_run.out
    assert "done                             3         3" in out
    assert "skipped: no profile              2         2" in out
    assert "failed                           1         1" in out
    assert "total                            8         8" in out
    assert "cmu/CMU-1-Small-Region.svs: pass --profile ICC to convert it" in out
    # summary.csv and summary.json hold every slide.
    with open(dst / "summary.csv", newline="") as fh:
        table = {r["path"]: r for r in csv.DictReader(fh)}
    assert {p: r["display_status"] for p, r in table.items()} == EXPECTED
    assert (
        table["lab1/CMU-Embed.tif"]["output_sha256"] == rows["lab1/CMU-Embed.tif"]["output_sha256"]
    )
    summary = json.loads((dst / "summary.json").read_text())
    assert summary["run"]["processed"] == 8 and summary["run"]["finished_earlier"] == 0
    # A failure outranks the slides left without a profile: exit 1, not 4.
    assert (summary["run"]["exit_code"], summary["run"]["left_without_profile"]) == (1, 2)
    assert "exit 4" not in out
    # The header is printed once (the run's first line), not again above the table.
    assert out.count(f"svsicc migrate {local_run.dst.parent.parent}") <= 1
    assert out.count(" -> ") == 1
    assert summary["statuses"] == {
        "done": 3,
        "skipped: no profile": 2,
        "skipped: identity": 1,
        "skipped: already applied": 1,
        "failed": 1,
    }
    assert {s["path"] for s in summary["slides"]} == set(EXPECTED)
    # Nothing but slides, the journal, the lock and summaries; no temporary file.
    written = {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()}
    outputs = {p for p, s in EXPECTED.items() if s not in ("failed", "skipped: no profile")}
    assert written == outputs | {JOURNAL_NAME, LOCK_NAME, "summary.csv", "summary.json"}
    assert source_hashes(archive) == before


def test_resume_with_profile_converts_only_the_skipped_ones(
    archive: Path, local_run: Run, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A copy of the first run's DST elsewhere: a moved DST_DIR resumes where it was.
    dst = tmp_path / "moved"
    shutil.copytree(local_run.dst, dst)
    before = journal_rows(dst)

    # The dry run sees what the journal says.
    plan = run_cli(capsys, str(archive), str(dst), "--dry-run", "--json")
    numbers = json.loads(plan.out)
    assert (numbers["finished_earlier"], numbers["to_do"]) == (7, 1)  # only the failed one

    # A second run with --profile for the AT2 folder converts the slide without a profile and
    # redoes nothing else; the failed slide is outside --include, so the run succeeds.
    run = run_cli(
        capsys,
        str(archive),
        str(dst),
        "--profile",
        str(SCANSCOPE),
        "--include",
        "lab1/2019/*",
        "--workers",
        "1",
    )
    assert run.code == 0, run.err
    after = journal_rows(dst)
    assert display(after["lab1/2019/at2-bare.svs"]) == "done"
    assert after["lab1/2019/at2-bare.svs"]["profile_origin"] == "--profile"
    assert after["lab1/2019/at2-bare.svs"]["run_id"] == 2
    for path in set(EXPECTED) - {"lab1/2019/at2-bare.svs"}:
        assert after[path] == before[path]  # untouched, at2-embedded included
    assert "1 finished earlier, not redone" in run.out
    with openslide.OpenSlide(str(dst / "lab1/2019/at2-bare.svs")) as slide:
        assert slide.properties["aperio.ICC Profile Applied"] == "ScanScope v1"


def test_slides_left_without_a_profile_exit_4(
    archive: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A pipeline must not take "skipped: no profile" for "converted", in any run."""
    dst = tmp_path / "dst"
    select = ("--include", "cmu/*", "--include", "lab1/CMU-Embed.tif", "--workers", "1")
    first = run_cli(capsys, str(archive), str(dst), *select)
    assert first.code == 4, first.err
    assert "exit 4: 1 slide left unconverted for lack of a profile" in first.out
    again = run_cli(capsys, str(archive), str(dst), *select, "--json")
    assert again.code == 4  # nothing redone, but the slide is still unconverted
    assert json.loads(again.out)["run"]["left_without_profile"] == 1
    fixed = run_cli(capsys, str(archive), str(dst), *select, "--profile", str(SCANSCOPE))
    assert fixed.code == 0, fixed.err
    # Only the slides this run looks at count: one outside --include does not.
    other = run_cli(capsys, str(archive), str(dst), "--include", "tcga/*", "--workers", "1")
    assert other.code == 0


def test_dry_run_text_explains_its_counts(
    archive: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dst = tmp_path / "dst"
    select = ("--include", "cmu/*", "--include", "lab1/*", "--include", "tcga/*")
    fresh = run_cli(capsys, str(archive), str(dst), *select, "--dry-run").out
    assert fresh.splitlines()[0].startswith("svsicc migrate --dry-run ")
    assert fresh.count(" -> ") == 1  # the header once
    assert "  slides found                 5" in fresh
    assert (
        "    to convert                 2" in fresh and "    identity                   1" in fresh
    )
    assert re.search(
        r"to do in this run +5 .*: to convert 2, identity 1, without a profile 2$", fresh, re.M
    ), fresh
    # Uncompressed pages are named so, not "from none"; one tile is singular.
    assert "from none" not in fresh
    assert re.search(r"measured: .*uncompressed: \d+ tiles? of lab1/CMU-Embed.tif", fresh), fresh
    # After one slide is done, the archive's counts stay and the run's share says what is left.
    done = run_cli(capsys, str(archive), str(dst), "--include", "lab1/CMU-E*", "--workers", "1")
    assert done.code == 0, done.err
    plan = run_cli(capsys, str(archive), str(dst), *select, "--dry-run").out
    assert "    to convert                 2" in plan
    assert "  finished earlier             1  in the journal: not redone" in plan
    assert re.search(
        r"to do in this run +4 .*: to convert 1, identity 1, without a profile 2$", plan, re.M
    ), plan


def test_dry_run_plan_numbers(
    archive: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dst = tmp_path / "not-created"
    run = run_cli(capsys, str(archive), str(dst), "--dry-run", "--json", "--workers", "2")
    assert run.code == 0
    plan = json.loads(run.out)
    slides = [archive / p for p in EXPECTED]
    assert plan["slides"] == 8
    assert plan["total_bytes"] == sum(p.stat().st_size for p in slides)
    assert (plan["to_convert"], plan["identity"], plan["already_applied"]) == (3, 1, 1)
    assert plan["without_profile"] == 2 and not plan["without_profile_converted"]
    assert [u["path"] for u in plan["unreadable"]] == ["broken/truncated.svs"]
    assert (plan["finished_earlier"], plan["to_do"]) == (0, 8)
    converted = ("lab1/2019/at2-embedded.svs", "lab1/CMU-Embed.tif", "lab2/gt450/scan 01.svs")
    assert plan["convert_bytes"] == sum((archive / p).stat().st_size for p in converted)
    seen = {(p["description"], p["count"], p["outcome"]) for p in plan["profiles"]}
    assert seen == {
        ("ScanScope v1", 3, "convert"),  # the truncated slide's profile is unreadable
        ("sRGB IEC61966-2.1", 1, "identity"),
        ("(none)", 2, "no profile"),
    }
    estimate = plan["estimate"]
    assert estimate["workers"] == 2 and 0 < estimate["seconds"] < 60
    assert "tiles of lab2/gt450/scan 01.svs" in estimate["basis"]  # the largest JPEG slide
    assert not dst.exists()  # a dry run writes nothing

    text = run_cli(capsys, str(archive), str(dst), "--dry-run", "--profile", str(SCANSCOPE))
    print(text.out)
    assert "  slides found                 8" in text.out
    assert "    without a profile          2  converted with --profile" in text.out
    assert "--profile for every slide: ScanScope v1" in text.out
    assert "estimated time: " in text.out


def test_discovery_patterns(archive: Path) -> None:
    every = [s.rel_path for s in discover(archive)]
    assert every == sorted(EXPECTED)  # .txt, non-Aperio .tif and ._ files are not slides
    assert [s.rel_path for s in discover(archive, include=["lab1/*"])] == [
        "lab1/2019/at2-bare.svs",
        "lab1/2019/at2-embedded.svs",
        "lab1/CMU-Embed.tif",
    ]
    no_tif = [s.rel_path for s in discover(archive, exclude=["*.tif", "broken/*"])]
    assert no_tif == sorted(set(EXPECTED) - {"lab1/CMU-Embed.tif", "broken/truncated.svs"})


# -- kill -9, resume, lock ---------------------------------------------------------------------


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error, FileNotFoundError):
            if condition():  # type: ignore[operator]
                return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def slow_archive(tmp_path_factory: pytest.TempPathFactory, cache_env: None) -> Path:
    """Six GT450 slides of 1600x1200 in two folders: a run lasts long enough to interrupt."""
    src = tmp_path_factory.mktemp("slow")
    for i in range(6):
        folder = src / f"batch{i % 2}"
        folder.mkdir(exist_ok=True)
        pixels = _crop(100 + 150 * i, 100 + 100 * i, 1200, 1600)
        write_slide(folder / f"slide{i}.svs", pixels, preset("gt450", profile=PROFILE))
    return src


def pool_workers(coordinator: int) -> list[int]:
    """The coordinator's spawned pool processes (not its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == coordinator and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
    return found


def migrate_command(src: Path, dst: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "svsicc.cli", "migrate", str(src), str(dst), *extra]


def test_kill_9_mid_run_then_resume_and_the_lock(slow_archive: Path, tmp_path: Path) -> None:
    src, dst = slow_archive, tmp_path / "dst"
    before = source_hashes(src)
    command = migrate_command(src, dst, "--workers", "1")
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The lock: a second migrate on the same DST refuses while the first runs.
        wait_for(
            lambda: any(r["status"] == "running" for r in journal_rows(dst).values()),
            60,
            "the first slide to start",
        )
        second = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert first.poll() is None, "the first run ended before the lock could be tested"
        assert second.returncode == 2
        assert (
            second.stderr.count("\n") == 1 and "another svsicc migrate is running" in second.stderr
        )
        assert f"pid {first.pid} " in second.stderr
        assert f"(held by pid {first.pid} on host {socket.gethostname()} since " in second.stderr

        wait_for(
            lambda: any(r["status"] == "done" for r in journal_rows(dst).values()),
            60,
            "the first slide to finish",
        )
        # Kill while the next slide is being written: its temporary file exists.
        wait_for(lambda: temp_files(dst), 60, "the next slide's temporary file")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        print("temporary files right after the kill:", [p.name for p in temp_files(dst)])
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    killed = journal_rows(dst)
    finished = {p: r for p, r in killed.items() if r["status"] == "done"}
    interrupted = [p for p, r in killed.items() if r["status"] == "running"]
    assert finished and interrupted and len(killed) < 6
    print(f"killed with {len(finished)} done, {len(interrupted)} running: {interrupted}")
    # The orphaned worker notices and exits (removing its temporary file on the way).
    worker_pid = int(str(next(iter(finished.values()))["worker"]).rsplit(":", 1)[1])
    wait_for(lambda: not pid_alive(worker_pid), 10, "the orphaned worker to exit")
    assert temp_files(dst) == []  # it removed the temporary file of the slide it had in hand
    # No partial file under a final name: every slide in DST is complete and marked.
    for path in dst.rglob("*.svs"):
        with openslide.OpenSlide(str(path)) as slide:
            assert slide.properties["aperio.ICC Profile Applied Mode"] == "transformed"
    # A temporary file left by some dead process beside a finished slide: resume removes it.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    done_path = next(iter(finished))
    planted = (dst / done_path).with_name(f".{Path(done_path).name}.{dead.pid}.svsicc-tmp")
    planted.write_bytes(b"partial")
    finished_outputs = {p: (dst / p).stat().st_mtime_ns for p in finished}

    resumed = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    print({k: report["run"][k] for k in ("processed", "finished_earlier", "stale_temps_removed")})
    assert report["run"]["finished_earlier"] == len(finished)
    assert report["run"]["processed"] == 6 - len(finished)
    assert report["run"]["stale_temps_removed"] >= 1
    rows = journal_rows(dst)
    assert all(r["status"] == "done" for r in rows.values()) and len(rows) == 6
    for path, row in finished.items():
        assert rows[path] == row  # not redone
        assert (dst / path).stat().st_mtime_ns == finished_outputs[path]
    for path in interrupted:
        assert rows[path]["run_id"] == 2  # started over by the resume
    for path, row in rows.items():
        assert row["output_sha256"] == sha256(dst / path)
    assert temp_files(dst) == []
    assert source_hashes(src) == before


def test_a_worker_killed_mid_slide_costs_nothing(slow_archive: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    run = subprocess.Popen(
        migrate_command(slow_archive, dst, "--workers", "2", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: any(r["status"] == "done" for r in journal_rows(dst).values()),
            60,
            "the first slide to finish",
        )
        wait_for(lambda: len(pool_workers(run.pid)) == 2, 10, "two pool workers")
        first_pool = pool_workers(run.pid)
        victim = first_pool[0]
        os.kill(victim, signal.SIGKILL)  # as the kernel's OOM killer or a codec segfault would
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    rows = journal_rows(dst)
    assert len(rows) == 6 and all(r["status"] == "done" for r in rows.values())
    # The slides in flight were retried in a new pool.
    pids = {int(str(r["worker"]).rsplit(":", 1)[1]) for r in rows.values()}
    assert pids - set(first_pool)
    for path, row in rows.items():
        assert row["output_sha256"] == sha256(dst / path)
    assert json.loads(out)["run"]["processed"] == 6
    assert temp_files(dst) == []


def test_sigterm_stops_cleanly(slow_archive: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    run = subprocess.Popen(
        migrate_command(slow_archive, dst, "--workers", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: any(r["status"] == "done" for r in journal_rows(dst).values()),
            60,
            "the first slide to finish",
        )
        workers = pool_workers(run.pid)
        run.send_signal(signal.SIGTERM)
        _out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 143
    last = err.strip().splitlines()[-1]
    # What stays and what a rerun does, not "no output was left behind": finished slides stay.
    done = sum(1 for r in journal_rows(dst).values() if r["status"] == "done")
    assert re.fullmatch(
        rf"svsicc: terminated; {done} slides? finished in this run stay in {re.escape(str(dst))} "
        r"\(in the journal\), \d+ slides? in progress removed, \d+ slides? not started; run the "
        r"same command again to resume",
        last,
    ), last
    assert workers and not any(pid_alive(pid) for pid in workers)
    assert (
        temp_files(dst) == []
    )  # the slides in hand were stopped and their temporary files removed
    rows = journal_rows(dst)
    assert {r["status"] for r in rows.values()} <= {"done", "running"}
    db = sqlite3.connect(dst / JOURNAL_NAME)
    assert db.execute("SELECT outcome FROM runs").fetchall() == [("interrupted",)]
    db.close()


# -- Dask --------------------------------------------------------------------------------------


def test_dask_cluster_gives_the_same_journal(
    archive: Path, local_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distributed import Client, LocalCluster

    dst = tmp_path / "dask"
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        worker_pids = set(client.run(os.getpid).values())
        run = run_cli(capsys, str(archive), str(dst), "--scheduler", cluster.scheduler_address)
    print(run.out)
    assert run.code == 1, run.err  # the truncated slide, as locally
    assert "Dask at tcp://127.0.0.1:" in run.out and "(2 workers, 2 threads)" in run.out
    rows = journal_rows(dst)
    local = journal_rows(local_run.dst)
    assert {p: display(r) for p, r in rows.items()} == EXPECTED
    for path, row in rows.items():
        # The same bytes as the local run, computed on the cluster's workers.
        assert row["output_sha256"] == local[path]["output_sha256"]
        assert row["source_sha256"] == local[path]["source_sha256"]
        assert int(str(row["worker"]).rsplit(":", 1)[1]) in worker_pids
    assert len({r["worker"] for r in rows.values()}) == 2  # both workers took slides
    assert temp_files(dst) == []
