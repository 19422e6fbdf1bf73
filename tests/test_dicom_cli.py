"""DICOM WSI through the command line: apply, info, verify, and bad input in one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")

from svsicc.dicom.apply import apply_dicom  # noqa: E402
from svsicc.exceptions import DicomFormatError  # noqa: E402
from tests.conftest import DATA, assert_one_line_error, run_cli  # noqa: E402

DICOM = DATA / "dicom"
SMALL = DICOM / "small-j2k-ict"
CMU = DICOM / "cmu1-scanscope"


def left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_apply_info_verify(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    one_file = next(SMALL.glob("*.dcm"))  # one .dcm names its series
    code, stdout, err = run_cli(capsys, "apply", one_file, out, "--verify", "--quiet")
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "apply", SMALL, tmp_path / "copy2", "--verify")
    assert code == 0, err
    assert "2 instances, 2 frames rewritten" in stdout
    assert "verified OK" in stdout and "IFD" not in stdout
    code, stdout, _ = run_cli(capsys, "info", out)
    assert code == 0
    assert "applied: yes, 'A98C' -> 'sRGB', perceptual intent, transformed" in stdout
    assert "scnr" in stdout
    code, stdout, _ = run_cli(capsys, "info", SMALL, "--json")
    facts = json.loads(stdout)
    assert facts["wsi_format"] == "DICOM WSI" and facts["applied"] is False
    assert [i["flavor"] for i in facts["instances"]] == ["VOLUME", "THUMBNAIL"]
    code, stdout, _ = run_cli(capsys, "verify", SMALL, out)
    assert code == 0 and ": OK (" in stdout and "instance 0 volume" in stdout
    code, stdout, _ = run_cli(capsys, "verify", SMALL, out, "--json")
    assert json.loads(stdout)["ok"] is True
    assert left_behind(tmp_path) == ["copy", "copy2"]


def test_verify_fails_a_copy_without_color_space(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    apply_dicom(SMALL, out, workers=1)
    volume = next(p for p in out.glob("*.dcm") if pydicom.dcmread(p).ImageType[2] == "VOLUME")
    ds = pydicom.dcmread(volume)
    del ds.OpticalPathSequence[0].ColorSpace
    ds.save_as(volume)
    code, stdout, _ = run_cli(capsys, "verify", SMALL, out)
    assert code == 1
    assert f"instance 0: {volume.name}: OpticalPathSequence[0] ColorSpace (0028,2002)" in stdout


def test_command_line_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "SVSICC_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "svsicc", "info", str(CMU)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "profile: 'ScanScope v1'" in done.stdout and "applied: no" in done.stdout


def test_already_applied_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    apply_dicom(SMALL, tmp_path / "once", workers=1)
    code, _, err = run_cli(capsys, "apply", tmp_path / "once", tmp_path / "twice")
    assert code == 3
    assert_one_line_error(err, "already applied")
    assert left_behind(tmp_path) == ["once"]


def test_a_file_that_is_not_dicom(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fake = tmp_path / "slide.dcm"
    fake.write_bytes(b"not DICOM at all" * 20)
    code, _, err = run_cli(capsys, "apply", fake, tmp_path / "out")
    assert code == 2
    assert_one_line_error(err, "not a DICOM file")
    assert left_behind(tmp_path) == ["slide.dcm"]


def test_a_folder_without_a_slide(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no slide here")
    code, _, err = run_cli(capsys, "apply", tmp_path / "in", tmp_path / "out")
    assert code == 2
    assert_one_line_error(err, "no VL Whole Slide Microscopy image")
    assert left_behind(tmp_path) == ["in"]


def test_a_truncated_frame(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(CMU, broken)
    volume = max(broken.glob("*.dcm"), key=lambda p: p.stat().st_size)
    os.truncate(volume, volume.stat().st_size * 2 // 3)
    code, _, err = run_cli(capsys, "apply", broken, tmp_path / "out")
    assert code == 2
    assert_one_line_error(err, volume.name, "truncated")
    assert left_behind(tmp_path) == ["broken"]


def test_a_truncated_header_names_the_missing_attribute(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(CMU, broken)
    first = sorted(broken.glob("*.dcm"))[0]
    (broken / "trunc.dcm").write_bytes(first.read_bytes()[:1000])  # cut before Rows
    code, _, err = run_cli(capsys, "apply", broken, tmp_path / "out")
    assert code == 2
    line = assert_one_line_error(
        err, "trunc.dcm", "Rows (0028,0010) is missing", "truncated or not an image"
    )
    assert "object has no attribute" not in line
    assert left_behind(tmp_path) == ["broken"]


def test_two_series_need_a_choice(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for series in (SMALL, DICOM / "small-native"):
        for path in series.glob("*.dcm"):
            shutil.copyfile(path, mixed / path.name)
    code, _, err = run_cli(capsys, "apply", mixed, tmp_path / "out")
    assert code == 2
    assert_one_line_error(err, "2 WSI series", "give one .dcm file")
    chosen = next(DICOM.joinpath("small-native").glob("*.dcm")).name
    code, stdout, err = run_cli(
        capsys, "apply", mixed / chosen, tmp_path / "out", "--json", "--verify"
    )
    assert code == 0, err
    facts = json.loads(stdout)
    assert facts["pages"][0]["compression"] == "Explicit VR Little Endian"
    assert facts["verification"]["ok"] is True
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_output_rules(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli(capsys, "apply", SMALL, out, "--quiet")
    assert code == 2
    assert_one_line_error(err, "exists", "--overwrite")
    code, _, err = run_cli(capsys, "apply", SMALL, out, "--overwrite", "--quiet")
    assert code == 0, err  # an empty folder is replaced
    code, _, err = run_cli(capsys, "apply", SMALL, out, "--overwrite", "--quiet")
    assert code == 0, err  # and so is an svsicc copy
    assert len(list(out.glob("*.dcm"))) == 2
    code, _, err = run_cli(capsys, "apply", SMALL, "--in-place")
    assert code == 2
    assert_one_line_error(err, "in place")
    assert left_behind(tmp_path) == ["out"]


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_overwrite_never_removes_the_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    series = tmp_path / "p1" / "in"
    shutil.copytree(CMU, series)
    before = digests(tmp_path)
    for output, words in (
        (tmp_path / "p1", "holds the input folder"),
        (tmp_path, "holds the input folder"),
        (series, "is the input folder"),
        (series / "copy", "is inside the input folder"),
    ):
        for given in (series, next(series.glob("*.dcm"))):
            code, _, err = run_cli(capsys, "apply", given, output, "--overwrite", "--quiet")
            assert code == 2, (output, given)
            assert_one_line_error(err, str(output), words)
            assert digests(tmp_path) == before
            assert left_behind(tmp_path) == ["p1"] and left_behind(series.parent) == ["in"]


def test_overwrite_replaces_only_an_svsicc_copy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(SMALL, other)  # another copy of the original: not svsicc's
    (other / "notes.txt").write_text("keep me")
    before = digests(other)
    code, _, err = run_cli(capsys, "apply", CMU, other, "--overwrite", "--quiet")
    assert code == 2
    line = assert_one_line_error(
        err, "holds files that are not an svsicc copy: ", "notes.txt", "choose another folder"
    )
    assert sorted(p.name for p in SMALL.glob("*.dcm"))[0] in line
    assert digests(other) == before and left_behind(tmp_path) == ["other"]
    copy = tmp_path / "copy"
    apply_dicom(SMALL, copy, workers=1)
    (copy / "sub").mkdir()  # a copy holds no folder
    code, _, err = run_cli(capsys, "apply", CMU, copy, "--overwrite", "--quiet")
    assert code == 2
    assert_one_line_error(err, "not an svsicc copy: sub/")
    (copy / "sub").rmdir()
    (copy / ".DS_Store").write_bytes(b"")  # hidden files do not count
    code, _, err = run_cli(capsys, "apply", CMU, copy, "--overwrite", "--quiet")
    assert code == 0, err
    assert len(list(copy.glob("*.dcm"))) == 4


def test_output_naming_a_dcm_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "apply", SMALL, tmp_path / "x.dcm", "--quiet")
    assert code == 2
    assert_one_line_error(err, "x.dcm", "must be a folder", "give a folder name")
    assert left_behind(tmp_path) == []
    named = tmp_path / "series.dcm"  # a folder so named (migrate mirrors it): its copy may be too
    shutil.copytree(SMALL, named)
    code, _, err = run_cli(capsys, "apply", named, tmp_path / "copy.dcm", "--quiet")
    assert code == 0, err
    assert left_behind(tmp_path) == ["copy.dcm", "series.dcm"]


def test_an_interrupted_apply_leaves_nothing(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(KeyboardInterrupt):
        apply_dicom(CMU, tmp_path / "out", workers=1, cancel=cancel)
    assert left_behind(tmp_path) == []


def test_a_stale_temporary_folder_is_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".out.999999.svsicc-tmp"
    stale.mkdir()
    (stale / ".lock").write_bytes(b"")
    apply_dicom(SMALL, tmp_path / "out", workers=1)
    assert left_behind(tmp_path) == ["out"]


def test_broken_offset_table_is_one_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(SMALL, broken)
    for path in broken.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.ExtendedOffsetTable = (12345).to_bytes(8, "little")
        ds.save_as(path)
    with pytest.raises(DicomFormatError, match="starts no fragment"):
        apply_dicom(broken, tmp_path / "out")
    assert left_behind(tmp_path) == ["broken"]


def test_a_damaged_frame_fails_or_is_kept(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from svsicc.dicom.series import read_series

    damaged = tmp_path / "damaged"
    shutil.copytree(CMU, damaged)
    volume = read_series(damaged).instances[0]
    offset, length = volume.frames.frames[5][0]
    with open(volume.path, "r+b") as fh:
        fh.seek(offset + length // 2)
        fh.write(b"\xff\xd9" * 8)  # EOI markers inside the entropy-coded data
    code, _, err = run_cli(capsys, "apply", damaged, tmp_path / "out")
    assert code == 2
    assert_one_line_error(err, volume.path.name, "frame 5", "Corrupt JPEG data")
    assert left_behind(tmp_path) == ["damaged"]
    code, stdout, err = run_cli(capsys, "apply", damaged, tmp_path / "out", "--on-bad-tile", "keep")
    assert code == 0, err
    assert "kept undecodable instance 0 frame 5" in stdout
    code, stdout, _ = run_cli(capsys, "info", tmp_path / "out")
    assert "1 frame(s) kept unconverted (undecodable in the original): instance 0 frame 5" in stdout
    code, stdout, _ = run_cli(capsys, "verify", damaged, tmp_path / "out", "--sample", "4")
    assert code == 0, stdout
