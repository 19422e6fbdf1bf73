"""A DICOM WSI series in an archive is one slide: migrate converts it into a folder of the same
relative path, verifies it, records it, and a rerun leaves it alone; the Python API's apply,
verify and info take a series as the command line does."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from .conftest import CMU_SMALL, SCANSCOPE
from .conftest import run_cli as run

DICOM = Path(__file__).parent / "data" / "dicom"
CMU_SERIES = DICOM / "cmu1-scanscope"


def _archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "lab").mkdir(parents=True)
    shutil.copytree(CMU_SERIES, src / "lab" / "case-7")
    shutil.copytree(DICOM / "small-default", src / "srgb-series")  # embeds sRGB
    shutil.copyfile(CMU_SMALL, src / "lab" / "a.svs")
    return src


def _rows(dst: Path) -> dict[str, tuple[str, str]]:
    from svsicc.archive.journal import JOURNAL_NAME

    with sqlite3.connect(f"{(dst / JOURNAL_NAME).as_uri()}?mode=ro", uri=True) as db:
        return {p: (s, d) for p, s, d in db.execute("SELECT path, status, detail FROM slides")}


def test_migrate_converts_a_series_as_one_slide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = _archive(tmp_path), tmp_path / "dst"
    code, stdout, err = run(
        capsys, "migrate", src, dst, "--workers", "1", "--fallback-profile", SCANSCOPE, "--verify"
    )
    assert code == 0, stdout + err
    rows = _rows(dst)
    assert rows["lab/case-7"][0] == "done", rows
    assert rows["lab/a.svs"][0] == "done"
    copy = dst / "lab" / "case-7"
    assert copy.is_dir()
    assert len(list(copy.glob("*.dcm"))) == len(list(CMU_SERIES.glob("*.dcm")))
    code, stdout, _ = run(capsys, "info", copy, "--json")
    info = json.loads(stdout)
    assert info["applied"] is True
    assert info["applied_record"]["source_description"] == "ScanScope v1"
    code, stdout, err = run(capsys, "verify", CMU_SERIES, copy)
    assert code == 0, stdout + err
    # nothing left beside the copies
    assert not [p for p in (dst / "lab").iterdir() if p.name.startswith(".")]
    # an sRGB series maps to the target as identity: marked, no frame re-encoded
    assert rows["srgb-series"][0] == "skipped" and "identity" in rows["srgb-series"][1]

    # a rerun finds every slide finished and writes nothing
    before = {p: p.stat().st_mtime_ns for p in copy.iterdir()}
    code, stdout, err = run(
        capsys, "migrate", src, dst, "--workers", "1", "--fallback-profile", SCANSCOPE
    )
    assert code == 0, stdout + err
    assert {p: p.stat().st_mtime_ns for p in copy.iterdir()} == before


def test_migrate_dry_run_counts_a_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = _archive(tmp_path), tmp_path / "dst"
    code, stdout, err = run(capsys, "migrate", src, dst, "--dry-run", "--json")
    assert code == 0, stdout + err
    plan = json.loads(stdout)
    assert plan["slides"] == 3
    # the SVS embeds no profile (no --fallback-profile here); the series embeds ScanScope
    assert plan["to_convert"] == 1 and plan["identity"] == 1 and plan["without_profile"] == 1
    assert not dst.exists() or not any(dst.iterdir())


def test_the_python_api_takes_a_series(tmp_path: Path) -> None:
    import svsicc

    out = tmp_path / "copy"
    result = svsicc.apply(CMU_SERIES, out, workers=1)
    assert result.segments_rewritten > 0 and out.is_dir()
    assert svsicc.verify(CMU_SERIES, out).ok
    info = svsicc.info(out)
    assert info.applied is not None and info.applied.source_description == "ScanScope v1"
    with pytest.raises(svsicc.SvsiccError, match="in place"):
        svsicc.apply(CMU_SERIES, CMU_SERIES, in_place=True)


def test_a_series_folder_holding_other_slides_fails_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder is one series: a BIF beside the .dcm files would be left out, so the folder
    fails with a line naming it instead of being converted without it."""
    from tests.format_fixtures import write_ventana_bif

    src, dst = tmp_path / "src", tmp_path / "dst"
    shutil.copytree(CMU_SERIES, src / "case")
    write_ventana_bif(src / "case" / "extra.bif")
    code, stdout, err = run(capsys, "migrate", src, dst, "--workers", "1")
    assert code == 1, stdout + err
    status, detail = _rows(dst)["case"]
    assert status == "failed" and "extra.bif" in detail and "move the other slides" in detail
    assert not (dst / "case").exists()


def test_a_series_as_the_source_folder_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = tmp_path / "case-9", tmp_path / "dst"
    shutil.copytree(CMU_SERIES, src)
    code, stdout, err = run(capsys, "migrate", src, dst, "--workers", "1")
    assert code == 0, stdout + err
    assert _rows(dst)["case-9"][0] == "done"
    assert len(list((dst / "case-9").glob("*.dcm"))) == len(list(CMU_SERIES.glob("*.dcm")))
