"""migrate and the profile choice: --fallback-profile, reruns that equal a fresh run, the journal
schema upgrade, and migrate --verify.

Every slide is a real file from ``tests.synthetic`` (real pixels); every copy is written by the
real ``svsicc.convert.apply``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from svsicc.archive.journal import FAILED, JOURNAL_NAME, SCHEMA_VERSION, Journal
from svsicc.archive.slide_job import SlideJob, migrate_slide
from svsicc.codecs.jpeg import JpegCodec
from tests.synthetic import load_real_pixels, matrix_trc_profile, preset, write_slide

from .conftest import SCANSCOPE, run_cli, sha256


def _pixels(y: int, x: int) -> np.ndarray:
    return np.ascontiguousarray(load_real_pixels()[y : y + 480, x : x + 640])


@pytest.fixture()
def archive(tmp_path: Path) -> tuple[Path, Path]:
    """SRC with a slide embedding ScanScope v1 and a slide embedding none; a strong profile."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    write_slide(
        src / "a/embedded.svs",
        _pixels(900, 500),
        preset("at2", profile=SCANSCOPE.read_bytes(), downsamples=(1, 4)),
    )
    write_slide(
        src / "bare.svs",
        _pixels(1500, 900),
        preset("at2", profile=None, icc_name=None, downsamples=(1, 4)),
    )
    strong = tmp_path / "linear.icc"
    strong.write_bytes(matrix_trc_profile())
    return src, strong


def outputs(dst: Path) -> dict[str, str]:
    return {
        p.relative_to(dst).as_posix(): sha256(p) for p in sorted(dst.rglob("*.svs")) if p.is_file()
    }


def rows(dst: Path) -> dict[str, dict[str, object]]:
    with Journal.open(dst) as journal:
        return {path: r.to_dict() for path, r in journal.records().items()}


def test_reruns_equal_a_fresh_run_of_the_same_command(
    archive: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, strong = archive
    dst = tmp_path / "dst"
    # Run 1: embedded profiles only; the bare slide is skipped.
    # Exit 4: a slide was left without a profile.
    assert run_cli(capsys, "migrate", src, dst, "--workers", "1", "--json")[0] == 4
    first = rows(dst)
    assert first["a/embedded.svs"]["profile_description"] == "ScanScope v1"
    assert first["a/embedded.svs"]["target_description"] == "sRGB"
    assert len(str(first["a/embedded.svs"]["target_sha256"])) == 64
    assert first["a/embedded.svs"]["intent"] == "perceptual"
    assert first["bare.svs"]["detail"] == "no profile"

    # Run 2: --fallback-profile converts the bare slide only; the embedded one keeps its choice.
    code, out, _err = run_cli(
        capsys, "migrate", src, dst, "--fallback-profile", strong, "--workers", "1", "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert report["run"]["redone"] == [] and report["run"]["processed"] == 1
    second = rows(dst)
    assert second["bare.svs"]["profile_origin"] == "--fallback-profile"
    assert second["a/embedded.svs"] == first["a/embedded.svs"]

    # Run 3: --profile overrides every slide; the embedded slide is redone and the summary says
    # why; the bare one was already made with that profile and is not.
    code, out, err = run_cli(capsys, "migrate", src, dst, "--profile", strong, "--workers", "1")
    assert code == 0
    assert "1 redone as the profile, target or intent chosen changed" in out
    assert "a/embedded.svs: profile 'ScanScope v1' -> 'Linear sRGB (gamma 1.0, test)'" in out
    assert "replaces the embedded profile 'ScanScope v1'" in err
    third = rows(dst)
    assert third["a/embedded.svs"]["profile_description"] == "Linear sRGB (gamma 1.0, test)"
    assert "replaces embedded 'ScanScope v1'" in str(third["a/embedded.svs"]["profile_origin"])
    assert third["bare.svs"]["run_id"] == second["bare.svs"]["run_id"]

    # The same command on an empty DST_DIR writes the same files, byte for byte.
    fresh = tmp_path / "fresh"
    assert run_cli(capsys, "migrate", src, fresh, "--profile", strong, "--workers", "1")[0] == 0
    assert outputs(dst) == outputs(fresh) and len(outputs(dst)) == 2

    # Run 4, the first command again: back to ScanScope for the embedded slide, and the bare
    # slide's copy goes, as a fresh run of that command writes none.
    code, out, _err = run_cli(capsys, "migrate", src, dst, "--workers", "1")
    assert code == 4 and "2 redone as the profile" in out
    assert "no source profile is chosen for it now" in out
    fresh = tmp_path / "fresh-plain"
    assert run_cli(capsys, "migrate", src, fresh, "--workers", "1", "--quiet")[0] == 4
    assert outputs(dst) == outputs(fresh) and list(outputs(dst)) == ["a/embedded.svs"]

    # An intent change is a changed choice too; the dry run says so before anything is done.
    code, out, _err = run_cli(capsys, "migrate", src, dst, "--intent", "relative", "--dry-run")
    assert code == 0
    assert "redone as the choice changed: a/embedded.svs: intent perceptual -> relative" in out


def test_journal_of_the_previous_version_is_upgraded(
    archive: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, _strong = archive
    dst = tmp_path / "dst"
    assert run_cli(capsys, "migrate", src, dst, "--workers", "1", "--quiet")[0] == 4
    before = outputs(dst)
    # Make it a schema-1 journal: no target columns, schema '1'.
    db = sqlite3.connect(dst / JOURNAL_NAME)
    db.execute("ALTER TABLE slides DROP COLUMN target_description")
    db.execute("ALTER TABLE slides DROP COLUMN target_sha256")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    db.commit()
    db.close()
    # A dry run reads it as it is, and finds nothing to redo (the target is read from the copy).
    code, out, _err = run_cli(capsys, "migrate", src, dst, "--dry-run", "--json")
    assert code == 0 and json.loads(out)["redone"] == [] and json.loads(out)["to_do"] == 0
    code, out, _err = run_cli(capsys, "migrate", src, dst, "--workers", "1")
    assert code == 4 and "redone as" not in out and "0 slides" in out
    assert outputs(dst) == before
    db = sqlite3.connect(dst / JOURNAL_NAME)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "2"
    assert SCHEMA_VERSION == "2"
    columns = {row[1] for row in db.execute("PRAGMA table_info(slides)")}
    db.close()
    assert {"target_description", "target_sha256"} <= columns


def test_migrate_verify_passes_correct_copies(
    archive: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, strong = archive
    dst = tmp_path / "dst"
    code, out, err = run_cli(
        capsys, "migrate", src, dst, "--fallback-profile", strong, "--verify", "4",
        "--workers", "1", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["statuses"] == {"done": 2}
    assert json.loads(out)["run"]["processed"] == 2


def test_migrate_verify_refuses_a_broken_copy(
    archive: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer bug (one tile left unconverted) is caught before the copy lands."""
    src, _strong = archive
    real_encode = JpegCodec.encode
    calls = {"n": 0}

    def one_tile_unconverted(
        self: JpegCodec, pixels: np.ndarray, layout: str, source_tile: bytes
    ) -> bytes:
        calls["n"] += 1
        return source_tile if calls["n"] == 3 else real_encode(self, pixels, layout, source_tile)

    monkeypatch.setattr(JpegCodec, "encode", one_tile_unconverted)
    slide = src / "a/embedded.svs"
    output = tmp_path / "out/embedded.svs"
    job = SlideJob(
        rel_path="a/embedded.svs",
        source=str(slide),
        output=str(output),
        size=slide.stat().st_size,
        mtime_ns=slide.stat().st_mtime_ns,
        profile=None,
        target=None,
        intent=None,
        verify=None,
    )
    unchecked = migrate_slide(job)
    assert unchecked.status == "done"  # without --verify the broken copy lands
    output.unlink()
    calls["n"] = 0
    record = migrate_slide(SlideJob(**{**job.__dict__, "verify": 1000}))
    assert record.status == FAILED
    assert "verification failed, nothing was written" in record.detail
    assert re.search(r"IFD \d+ \((level|thumbnail)\): segment \d+: PSNR", record.detail)
    assert not output.exists()
    assert [p.name for p in output.parent.iterdir()] == []  # no temporary file either
