"""The command line: every error is one line naming the file, a non-zero exit, no output left."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

from .conftest import (
    CMU_EMBED,
    CMU_SMALL,
    DATA,
    OPENSLIDE_SMALL,
    SCANSCOPE,
    TCGA,
    assert_one_line_error,
    sha256,
)
from .conftest import run_cli as run


def test_apply_then_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "embed_srgb.tif"
    code, stdout, _ = run(capsys, "apply", CMU_EMBED, out, "--quiet")
    assert code == 0 and stdout == ""
    code, stdout, _ = run(capsys, "info", out, "--json")
    info = json.loads(stdout)
    assert info["applied"] is True
    assert info["profile"]["description"] == "sRGB"
    assert info["applied_record"]["source_description"] == "ScanScope v1"
    code, stdout, _ = run(capsys, "info", CMU_EMBED, "--json")
    info = json.loads(stdout)
    assert info["applied"] is False and info["profile"]["size"] == 141992
    assert [i["role"] for i in info["ifds"]] == ["level"]
    code, stdout, _ = run(capsys, "info", CMU_SMALL)
    assert "profile: none embedded" in stdout and "applied: no" in stdout
    assert "3: macro" in stdout and "2: label" in stdout


def test_apply_json_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(
        capsys, "apply", OPENSLIDE_SMALL, tmp_path / "o.svs", "--profile", SCANSCOPE, "--json"
    )
    result = json.loads(stdout)
    assert code == 0
    assert result["profile"]["description"] == "ScanScope v1"
    assert result["intent"] == "perceptual"
    assert [p["index"] for p in result["pages"]] == [0, 1]
    assert result["pages"][0]["rewritten"] == 1
    assert result["workers"] >= 1
    # "seconds" is rounded to the millisecond, which on a 10 ms run moves the rate by 5%.
    fastest = result["segments_rewritten"] / (result["seconds"] - 0.0005)
    slowest = result["segments_rewritten"] / (result["seconds"] + 0.0005)
    assert slowest - 0.05 <= result["segments_per_second"] <= fastest + 0.05


def test_apply_summary_reports_rate_and_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("apply", CMU_SMALL, tmp_path / "o.svs", "--profile", SCANSCOPE, "--workers", "2")
    code, stdout, _ = run(capsys, *args)
    assert code == 0
    assert re.search(r"130 tiles and 48 strips rewritten \([\d,]+/s, 2 workers\)", stdout), stdout


def test_no_profile_asks_for_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "apply", CMU_SMALL, tmp_path / "o.svs")
    assert code == 2
    assert_one_line_error(err, str(CMU_SMALL), "no embedded ICC profile", "--profile")
    assert list(tmp_path.iterdir()) == []


def test_already_applied_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first.tif"
    assert run(capsys, "apply", CMU_EMBED, first, "--quiet")[0] == 0
    code, _, err = run(capsys, "apply", first, tmp_path / "second.tif", "--profile", SCANSCOPE)
    assert code == 3
    assert_one_line_error(err, "first.tif", "already applied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.tif"]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d.joinpath("x.svs").write_bytes(b"hello, not a tiff" * 10), "not a TIFF"),
        (lambda d: d.joinpath("x.svs").write_bytes(CMU_SMALL.read_bytes()[:600_000]), "truncated"),
        (lambda d: d.joinpath("x.svs").write_bytes(b""), "not a TIFF"),
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_bad_input_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, needle: str
) -> None:  # type: ignore[no-untyped-def]
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    make(src_dir)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(
        capsys, "apply", src_dir / "x.svs", out_dir / "o.svs", "--profile", SCANSCOPE
    )
    assert code == 2
    assert_one_line_error(err, "x.svs", needle)
    assert list(out_dir.iterdir()) == []


def test_broken_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.icc"
    garbage.write_bytes(os.urandom(4000))
    truncated = tmp_path / "truncated.icc"
    truncated.write_bytes(SCANSCOPE.read_bytes()[:70_000])
    for profile, needle in (
        (garbage, "acsp"),
        (truncated, "truncated"),
        (DATA / "sGrey-v4.icc", "RGB profile is required"),
    ):
        code, _, err = run(
            capsys, "apply", OPENSLIDE_SMALL, tmp_path / "o.svs", "--profile", profile
        )
        assert code == 2
        assert_one_line_error(err, profile.name, needle)
        assert not (tmp_path / "o.svs").exists()


def test_garbage_embedded_profile_names_the_ifd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken_icc.tif"
    data = bytearray(CMU_EMBED.read_bytes())
    with tifffile.TiffFile(CMU_EMBED) as tif:
        tag = tif.pages[0].tags[34675]
        offset = tag.valueoffset
    data[offset + 36 : offset + 40] = b"XXXX"  # the 'acsp' signature
    broken.write_bytes(bytes(data))
    code, _, err = run(capsys, "apply", broken, tmp_path / "o.tif")
    assert code == 2
    assert_one_line_error(err, "IFD 0 tag 34675", "acsp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken_icc.tif"]


def test_undecodable_tile_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken_tile.svs"
    data = bytearray(CMU_SMALL.read_bytes())
    with tifffile.TiffFile(CMU_SMALL) as tif:
        offset = tif.pages[0].dataoffsets[7]
    data[offset + 3] = 0xC2  # SOF0 -> SOF2: a progressive frame header without its scans
    broken.write_bytes(bytes(data))
    out = tmp_path / "o.svs"
    code, _, err = run(capsys, "apply", broken, out, "--profile", SCANSCOPE, "--workers", "1")
    assert code == 2
    assert_one_line_error(err, "broken_tile.svs", "IFD 0", "tile 7")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken_tile.svs"]


def test_unsupported_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A TIFF in strips with no whole-slide vendor marks is no slide: refused, named."""
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, tifffile.imread(CMU_EMBED), description="not aperio")
    code, _, err = run(capsys, "apply", plain, tmp_path / "o.tif", "--profile", SCANSCOPE)
    assert code == 2
    assert_one_line_error(err, "plain.tif", "svsicc does not convert a plain TIFF")
    assert not (tmp_path / "o.tif").exists()


def test_output_equal_to_input_needs_in_place(
    small_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sha256(small_copy)
    code, _, err = run(capsys, "apply", small_copy, small_copy, "--profile", SCANSCOPE)
    assert code == 2
    assert_one_line_error(err, "OUTPUT is the input file", "--in-place")
    assert sha256(small_copy) == before
    code, _, _ = run(
        capsys, "apply", small_copy, small_copy, "--profile", SCANSCOPE, "--in-place", "--quiet"
    )
    assert code == 0
    assert sha256(small_copy) != before
    assert sorted(p.name for p in small_copy.parent.iterdir()) == ["small.svs"]
    code, stdout, _ = run(capsys, "info", small_copy, "--json")
    assert json.loads(stdout)["applied"] is True


def test_existing_output_needs_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.svs"
    out.write_bytes(b"keep me")
    code, _, err = run(capsys, "apply", OPENSLIDE_SMALL, out, "--profile", SCANSCOPE)
    assert code == 2
    assert_one_line_error(err, "OUTPUT exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert run(capsys, "apply", OPENSLIDE_SMALL, out, "--profile", SCANSCOPE, "--overwrite")[0] == 0
    assert out.read_bytes()[:2] == b"II"


def test_input_is_never_opened_for_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    read_only = tmp_path / "ro.svs"
    shutil.copyfile(TCGA, read_only)
    read_only.chmod(0o444)
    before = sha256(read_only)
    assert run(capsys, "apply", read_only, tmp_path / "o.svs", "--quiet")[0] == 0
    assert sha256(read_only) == before


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "svsicc.cli.main",
            "apply",
            str(tmp_path / "missing.svs"),
            str(tmp_path / "o.svs"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"svsicc: {tmp_path / 'missing.svs'}: no such file"


def test_marked_description_keeps_original_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.svs"
    assert run(capsys, "apply", CMU_SMALL, out, "--profile", SCANSCOPE, "--quiet")[0] == 0
    with tifffile.TiffFile(CMU_SMALL) as a, tifffile.TiffFile(out) as b:
        old, new = a.pages[0].description, b.pages[0].description
    assert new.startswith(old)
    assert new[len(old) :].startswith("|ICC Profile = sRGB|ICC Profile Applied = ScanScope v1|")
    # The relocated IFD 0 is still first and everything after it is linked as before.
    header = out.read_bytes()[:8]
    assert struct.unpack("<H", header[2:4])[0] == 42


def test_apply_verify_checks_before_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "verified.svs"
    code, stdout, err = run(
        capsys, "apply", CMU_SMALL, out, "--profile", SCANSCOPE, "--verify", "4", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["segments_rewritten"] == 178
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verified.svs"]


def test_frame_header_claiming_a_huge_tile_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "huge_sof.svs"
    data = bytearray(CMU_SMALL.read_bytes())
    with tifffile.TiffFile(CMU_SMALL) as tif:
        offset = tif.pages[0].dataoffsets[11]
    data[offset + 7 : offset + 11] = b"\xff\xf0\xff\xf0"  # SOF0 height and width: 65520x65520
    broken.write_bytes(bytes(data))
    code, _, err = run(capsys, "apply", broken, tmp_path / "o.svs", "--profile", SCANSCOPE)
    assert code == 2
    assert_one_line_error(err, "IFD 0", "tile 11", "65520x65520, expected 240x240")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge_sof.svs"]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_version_names_the_colour_path() -> None:
    from svsicc import __version__
    from svsicc.colour.transform import native_gather_available

    proc = _python("from svsicc.cli.main import main; main(['--version'])")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"svsicc {__version__}"
    expected = "C gather (svsicc.colour._native)" if native_gather_available() else "numpy fallback"
    assert lines[1].startswith(f"colour path: {expected}")
    # Without the extension: the fallback, its cost and why it runs.
    proc = _python(
        "import sys; sys.modules['svsicc.colour._native'] = None\n"
        "from svsicc.cli.main import main; main(['--version'])"
    )
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(
        r"colour path: numpy fallback, colour stage 6-13x slower \(C extension not built: "
        r".*svsicc\.colour\._native.*; reinstall with a C compiler\)",
        proc.stdout.splitlines()[1],
    ), proc.stdout


def test_apply_imports_no_other_subcommand(tmp_path: Path) -> None:
    """Start-up: a one-worker apply imports neither verify, report, migrate or bench nor the
    process pool's modules (their imports cost more than apply's own set-up); the full parser
    still lists every subcommand."""
    args = ["apply", str(CMU_SMALL), str(tmp_path / "o.svs"), "--profile", str(SCANSCOPE)]
    proc = _python(
        "import sys; from svsicc.cli.main import main\n"
        f"code = main({[*args, '--workers', '1', '--quiet']!r})\n"
        "print(code, sorted(m for m in sys.modules if m.startswith(('svsicc.', 'multi', 'conc'))))"
    )
    code, modules = proc.stdout.split(" ", 1)
    assert code == "0" and "svsicc.convert.apply" in modules, proc.stdout + proc.stderr
    for other in (
        "svsicc.check.verify",
        "svsicc.check.report",
        "svsicc.archive.migrate",
        "svsicc.check.bench",
    ):
        assert f"'{other}'" not in modules
    assert "multiprocessing" not in modules and "concurrent" not in modules
    listed = _python("from svsicc.cli.main import main; main(['--help'])").stdout
    for command in ("apply", "info", "bench", "migrate", "verify", "report"):
        assert re.search(rf"^ +{command} ", listed, re.M), listed
