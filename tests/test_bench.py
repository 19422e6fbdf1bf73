"""``svsicc bench``: per-stage cost on the user's own slide, writing nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

import svsicc
from svsicc.check.bench import STAGES, bench_slide, sample_indices
from svsicc.cli.main import main
from tests.synthetic import load_real_pixels, mosaic, preset, write_slide

from .conftest import CMU_SMALL, SCANSCOPE, sha256


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder holding only a copy of CMU-1-Small-Region (no embedded profile)."""
    here = tmp_path / "slides"
    here.mkdir()
    shutil.copyfile(CMU_SMALL, here / "cmu.svs")
    return here


def listing(path: Path) -> list[tuple[str, int, int]]:
    return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_report_on_a_real_slide_writes_nothing(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slide = folder / "cmu.svs"
    before, digest = listing(folder), sha256(slide)
    monkeypatch.chdir(folder)
    code, out, err = run_cli(["bench", str(slide), "--profile", str(SCANSCOPE), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert listing(folder) == before
    assert sha256(slide) == digest

    assert set(report["stages"]) == set(STAGES) == {"read", "decode", "colour", "encode", "write"}
    for name, cost in report["stages"].items():
        assert cost["median_ms"] > 0 and cost["mean_ms"] > 0, name
    total = report["total"]
    assert total["median_ms"] > 0 and total["mean_ms"] > 0
    # The stages are timed back to back: they add up to the total of each tile.
    stage_sum = sum(c["mean_ms"] for c in report["stages"].values())
    assert stage_sum == pytest.approx(total["mean_ms"], rel=1e-6)
    assert report["tiles_per_second_one_core"] == pytest.approx(1000 / total["mean_ms"])
    assert report["megapixels_per_second_one_core"] > 0
    # 200 asked for, the slide has 130 level-0 tiles: every one of them.
    assert report["tiles_sampled"] == 130
    assert report["level0"] == {
        "width": 2220,
        "height": 2967,
        "tile_width": 240,
        "tile_height": 240,
        "compression": "JPEG",
    }
    assert report["profile"] == "ScanScope v1" and report["profile_origin"] == "--profile"
    assert report["intent"] == "perceptual" and report["identity"] is False
    assert report["estimated_seconds_one_core"] > 0
    assert report["estimated_seconds_all_cores_ideal"] > 0
    assert report["cores"] >= 1 and report["table_seconds"] >= 0
    from svsicc.colour.transform import colour_path

    assert report["colour_path"] == colour_path()
    assert report["colour_path"].startswith(("C gather", "numpy fallback"))


def test_counts_the_segments_apply_rewrites(folder: Path, tmp_path: Path) -> None:
    slide = folder / "cmu.svs"
    result = bench_slide(slide, profile=SCANSCOPE, tiles=5)
    assert result.tiles_sampled == 5
    applied = svsicc.apply(slide, tmp_path / "applied.svs", profile=SCANSCOPE, workers=1)
    assert result.segments_to_rewrite == applied.segments_rewritten == 130 + 48
    # Tiles are padded to 240x240; the thumbnail's 48 strips are 574 wide, 16 rows each.
    assert result.pixels_to_rewrite == 130 * 240 * 240 + 574 * 768


def test_text_report(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        ["bench", str(folder / "cmu.svs"), "--profile", str(SCANSCOPE), "--tiles", "20"], capsys
    )
    assert code == 0, err
    for word in ("read", "decode", "colour", "encode", "write (memory)", "total", "tiles/s"):
        assert word in out
    assert "20 tiles sampled" in out and "178 segments" in out


def test_embedded_profile_is_used_like_apply(tmp_path: Path) -> None:
    path = tmp_path / "at2.svs"
    pixels = mosaic(load_real_pixels(), 960, 720, seed=1)
    write_slide(path, pixels, preset("at2", profile=SCANSCOPE.read_bytes(), downsamples=(1,)))
    result = bench_slide(path, tiles=3)
    assert result.profile.description == "ScanScope v1"
    assert result.profile_origin == "embedded (IFD 0)"
    assert result.tiles_sampled == 3 and result.tile_width == 240


def test_no_profile_is_a_one_line_error(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = listing(folder)
    code, out, err = run_cli(["bench", str(folder / "cmu.svs")], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(folder / "cmu.svs") in err and "--profile" in err
    assert listing(folder) == before


def test_already_applied_slide_is_refused_like_apply(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    applied = tmp_path / "applied.svs"
    svsicc.apply(folder / "cmu.svs", applied, profile=SCANSCOPE, workers=1)
    code, out, err = run_cli(["bench", str(applied), "--profile", str(SCANSCOPE)], capsys)
    assert code == 3 and out == ""
    assert "already applied" in err and err.count("\n") == 1


def test_bad_arguments(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(folder / "cmu.svs"), "--tiles", "0"])
    assert exit_info.value.code == 2
    assert "--tiles" in capsys.readouterr().err
    code, out, err = run_cli(["bench", str(folder / "missing.svs")], capsys)
    assert code == 2 and "missing.svs" in err and "no such file" in err


def test_sample_spreads_over_the_slide() -> None:
    assert sample_indices(5, 200) == [0, 1, 2, 3, 4]
    picked = sample_indices(1000, 5)
    assert picked == [0, 250, 500, 749, 999]
    assert len(sample_indices(10_000, 200)) == 200


def test_benchmark_script_runs_end_to_end(tmp_path: Path) -> None:
    """benchmarks/bench_apply.py on tiny slides: every variant svsicc ships runs and is reported.

    Ratios on slides this small mean nothing (the exit code says whether targets were met), so
    only the report's shape and the runs' JSON are checked; libvips needs the bench extra.
    """
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "benchmarks" / "bench_apply.py"
    runs_file = tmp_path / "runs.json"
    variants = ("floor", "floor-2", "svsicc-1", "svsicc-2", "naive")
    done = subprocess.run(
        [sys.executable, str(script), "--size", "1024", "--reps", "1", "--no-check",
         "--variants", ",".join(variants), "--work", str(tmp_path / "work"),
         "--small", "480x600", "--j2k-size", "768",
         "--marginal-styles", "at2,gt450,jp2k-33005",
         "--bench-tiles", "20", "--json", str(runs_file)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SVSICC_CACHE_DIR": os.environ["SVSICC_CACHE_DIR"]},
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    report = done.stdout
    for style in ("at2", "gt450"):
        for variant in variants:
            assert f"{style}-1024" in report and variant in report
        assert re.search(rf"^{style} +t\(floor\)/t\(svsicc-1\) = +[\d.]+", report, re.M)
        assert re.search(rf"^{style}: interleaved .* t\(floor\)/t\(svsicc\) = [\d.]+", report, re.M)
        assert re.search(
            rf"^{style} +1-to-2-worker ratio, no target: codec floor t\(floor\)/t\(floor-2\) = "
            r"[\d.]+, svsicc t\(svsicc-1\)/t\(svsicc-2\) = [\d.]+$",
            report,
            re.M,
        )
    # The independent codec floor against the svsicc command line, per segment and start-up.
    number = r"-?[\d.]+"
    for style in ("at2", "gt450", "jp2k-33005"):
        # Start-up only for JPEG: a JPEG 2000 tile's cost depends on its content too much for
        # the intercept to mean anything.
        startup = "n/a +n/a" if style.startswith("jp2k") else f"{number} +{number}"
        assert re.search(
            rf"^{style} +\d+/\d+ +{number} +{number} +{number} +{startup} +[\d.]+$", report, re.M
        ), report
        verdict = rf"^{style} +floor/svsicc per segment = +{number} +target >= 0.85 (PASS|FAIL) .*"
        if style.startswith("jp2k"):
            verdict += rf"from CPU time {number}\)$"
        else:
            verdict += (
                rf"svsicc start-up {number} s +target < 0.15 (PASS|FAIL) +\(CPU time: svsicc "
                rf"{number} s, floor {number} s\)$"
            )
        assert re.search(verdict, report, re.M), report
    process_runs = json.loads(runs_file.read_text())["process_runs"]
    assert len(process_runs) == 3 * 2 * 2  # styles x sizes x (floor, svsicc)
    assert {r["variant"] for r in process_runs} == {"codec-floor", "svsicc-cli"}
    runs = json.loads(runs_file.read_text())["runs"]
    assert len(runs) == 2 * len(variants)
    assert {r["variant"] for r in runs} == set(variants)
    assert all(r["seconds"] > 0 for r in runs)


@pytest.mark.parametrize("style", ["at2", "gt450"])
def test_codec_floor_uses_no_svsicc_and_reencodes_what_apply_rewrites(
    tmp_path: Path, style: str
) -> None:
    """benchmarks/codec_floor.py, the yardstick, runs with svsicc unimportable and re-encodes
    every level tile and thumbnail strip (not label or macro) at the source's own quality."""
    import subprocess
    import sys

    from svsicc.drivers import read_slide
    from svsicc.tiff import file as tiff
    from svsicc.tiff.slide import Role

    src = write_slide(
        tmp_path / f"{style}.svs", mosaic(load_real_pixels(), 700, 500, seed=3), preset(style)
    )
    script = Path(__file__).parent.parent / "benchmarks" / "codec_floor.py"
    runner = (
        "import runpy, sys; sys.modules['svsicc'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    out = tmp_path / "floor.out"
    done = subprocess.run(
        [sys.executable, "-c", runner, str(script), str(src), str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with tiff.TiffReader(src) as reader:
        pages = read_slide(reader).pages
        expected = [
            c for p in pages if p.role in (Role.LEVEL, Role.THUMBNAIL) for c in p.byte_counts if c
        ]
    summary = json.loads(done.stdout)
    assert summary["segments"] == len(expected)
    assert summary["bytes"] == out.stat().st_size
    # The first re-encoded stream carries the first source tile's tables and sampling.
    from svsicc.codecs.jpeg_stream import SOF0, TableSet, split_header

    data = out.read_bytes()
    first = data[: data.index(b"\xff\xd9") + 2]
    with tiff.TiffReader(src) as reader:
        page = pages[0]
        source = reader.read(page.offsets[0], page.byte_counts[0])
        tables = TableSet.from_jpeg_tables(page.jpeg_tables)
    source_segments, _ = split_header(source)
    made_segments, _ = split_header(first)
    wanted = tables.merged(TableSet.from_segments(source_segments)).quant
    assert TableSet.from_segments(made_segments).quant == wanted
    sof = [s.payload for s in source_segments if s.marker == SOF0][0]
    made_sof = [s.payload for s in made_segments if s.marker == SOF0][0]
    assert made_sof[7::3] == sof[7::3]  # sampling factors of each component
