"""What a new user types: the command line's arguments, as the first hour tries them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from svsicc.colour.transform import default_target

from .conftest import CMU_SMALL, OPENSLIDE_SMALL, SCANSCOPE, TCGA, assert_one_line_error, sha256
from .conftest import run_cli as run


def _main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """run_cli, counting argparse's exits (SystemExit) as exit codes."""
    try:
        return run(capsys, *args)
    except SystemExit as exc:
        captured = capsys.readouterr()
        return int(exc.code or 0), captured.out, captured.err


def test_in_place_needs_no_output(small_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sha256(small_copy)
    code, stdout, err = _main(capsys, "apply", small_copy, "--in-place", "--profile", SCANSCOPE)
    assert code == 0, err
    assert stdout.startswith(f"{small_copy}: 'ScanScope v1' -> 'sRGB'")
    assert sha256(small_copy) != before
    assert sorted(p.name for p in small_copy.parent.iterdir()) == ["small.svs"]
    # Without --in-place a missing OUTPUT is one line that shows both forms.
    code, _, err = _main(capsys, "apply", small_copy)
    assert code == 2
    assert_one_line_error(
        err, "OUTPUT is missing", "svsicc apply INPUT OUTPUT", "svsicc apply INPUT --in-place"
    )
    # --in-place with an OUTPUT other than INPUT is refused, as before.
    other = small_copy.parent / "other.svs"
    code, _, err = _main(capsys, "apply", small_copy, other, "--in-place")
    assert code == 2
    assert_one_line_error(err, "--in-place needs OUTPUT to be the input file itself")
    assert not other.exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("apply", "IN", "OUT", "--workers", "0"), ("apply: argument --workers", "at least 1")),
        (("apply", "IN", "OUT", "--workers", "-3"), ("--workers", "at least 1, not -3")),
        (("apply", "IN", "OUT", "--workers", "two"), ("--workers", "whole number, not 'two'")),
        (("migrate", "SRC", "DST", "--workers", "0"), ("migrate: argument --workers", "at least")),
        (("apply", "IN", "OUT", "--verify", "0"), ("argument --verify", "N (tiles per level)")),
    ],
    ids=["apply-0", "apply-negative", "apply-word", "migrate-0", "verify-0"],
)
def test_counts_are_checked_alike(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    paths = {"IN": str(CMU_SMALL), "OUT": str(tmp_path / "o.svs"), "SRC": str(tmp_path)}
    paths["DST"] = str(tmp_path / "dst")
    code, _, err = _main(capsys, *(paths.get(a, a) for a in args))
    assert code == 2
    line = assert_one_line_error(err, *needles)
    assert "--sample" not in line
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_show_input_then_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(capsys, "apply")
    assert code == 2
    assert_one_line_error(err, "required: INPUT", "usage: svsicc apply INPUT OUTPUT [options]")
    code, _, err = _main(capsys, "apply", "a.svs", "b.svs", "--no-such-option")
    assert code == 2
    assert_one_line_error(err, "--no-such-option", "usage: svsicc apply INPUT OUTPUT")


def test_swapped_arguments_say_input_comes_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slide = tmp_path / "in.svs"
    shutil.copyfile(OPENSLIDE_SMALL, slide)
    before = sha256(slide)
    missing = tmp_path / "out.svs"
    code, _, err = _main(capsys, "apply", missing, slide, "--profile", SCANSCOPE)
    assert code == 2
    assert_one_line_error(err, "out.svs: no such file", "INPUT comes first", "in.svs exists")
    assert sha256(slide) == before and not missing.exists()


def test_debug_after_the_subcommand(tmp_path: Path) -> None:
    """As a user runs it: the console script, --debug where the hint puts it."""
    svsicc = Path(sys.executable).with_name("svsicc")
    command = [str(svsicc)] if svsicc.exists() else [sys.executable, "-m", "svsicc.cli"]
    proc = subprocess.run(
        [*command, "apply", str(tmp_path / "missing.svs"), str(tmp_path / "o.svs"), "--debug"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2  # the expected error, not "unrecognized arguments: --debug"
    assert proc.stderr.strip() == f"svsicc: {tmp_path / 'missing.svs'}: no such file"
    args_first = [*command, "--debug", "info", str(tmp_path / "missing.svs")]
    proc = subprocess.run(args_first, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_debug_after_the_subcommand_reaches_the_handler() -> None:
    from svsicc.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["apply", "a", "b", "--debug"]).debug is True
    assert parser.parse_args(["--debug", "apply", "a", "b"]).debug is True
    assert parser.parse_args(["apply", "a", "b"]).debug is False


def test_verify_says_it_passed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.svs"
    code, stdout, err = _main(
        capsys, "apply", CMU_SMALL, out, "--profile", SCANSCOPE, "--verify", "4", "--workers", "1"
    )
    assert code == 0, err
    first, second = stdout.splitlines()
    assert "130 tiles and 48 strips rewritten" in first and "1 worker)" in first
    assert second.startswith("  verification passed: same TIFF structure (4 IFDs), label and ")
    assert "tiles and strips within the floor of LittleCMS applied to the original" in second
    assert re.search(r"closest to its floor IFD \d \(\w+\): PSNR ([\d.]+) dB, floor \1 dB", second)
    # Identity copies say what identity verification means.
    code, stdout, _ = _main(capsys, "apply", TCGA, tmp_path / "t.svs", "--verify")
    assert code == 0
    assert stdout.splitlines()[1].endswith("every tile byte-identical to the original")
    # Without --verify nothing claims a verification.
    code, stdout, _ = _main(capsys, "apply", CMU_SMALL, tmp_path / "n.svs", "--profile", SCANSCOPE)
    assert code == 0 and "verification" not in stdout


def test_one_tile_is_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _main(
        capsys, "apply", OPENSLIDE_SMALL, tmp_path / "o.svs", "--profile", SCANSCOPE
    )
    assert code == 0
    assert "1 tile and 1 strip rewritten" in stdout


@pytest.mark.parametrize(
    ("source", "extra"),
    [(TCGA, ()), (CMU_SMALL, ("--profile", str(SCANSCOPE)))],
    ids=["identity-tcga", "transformed-cmu"],
)
def test_every_page_keeps_its_profile_in_openslide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: Path, extra: tuple[str, ...]
) -> None:
    """The thumbnail's profile in OpenSlide is the copy's profile, its description names it."""
    import openslide
    import tifffile

    out = tmp_path / "copy.svs"
    assert _main(capsys, "apply", source, out, *extra, "--quiet")[0] == 0
    target = default_target().data
    with openslide.OpenSlide(str(out)) as slide:
        assert slide.color_profile is not None
        assert slide.color_profile.profile.profile_description == "sRGB"
        thumbnail = slide.associated_images["thumbnail"]
        assert thumbnail.info.get("icc_profile") == target
    with tifffile.TiffFile(out) as tif:
        named = {
            page.index: part.split(" = ", 1)[1]
            for page in tif.pages
            for part in page.description.split("|")
            if part.startswith("ICC Profile = ")
        }
    assert named and set(named.values()) == {"sRGB"}, named


def test_apply_docstring_covers_the_python_api() -> None:
    """Python callers read help(svsicc.apply): every keyword, the result and the errors."""
    import svsicc

    doc = svsicc.apply.__doc__ or ""
    for needed in (
        "workers:", "progress:", "pool:", "before_commit:", "Returns:", "ApplyResult",
        "Raises:", "TiffFormatError", "UnsupportedLayoutError", "ProfileError",
        "AlreadyAppliedError", "OutputError", "TileDecodeError", "VerificationError",
    ):  # fmt: skip
        assert needed in doc, needed
