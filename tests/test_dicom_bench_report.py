"""``svsicc bench`` and ``svsicc report`` on DICOM WSI series: the bundled CMU-1-Small-Region
series (wsidicomizer, ScanScope v1, JPEG) and the copy apply writes of it."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")

from svsicc.check.report import FILES  # noqa: E402
from svsicc.check.structure import SlidePixels, open_slide  # noqa: E402
from svsicc.dicom.apply import apply_dicom  # noqa: E402
from svsicc.dicom.pixels import SeriesPixels, frame_places  # noqa: E402
from svsicc.dicom.series import read_series  # noqa: E402
from tests.conftest import CMU_SMALL, DATA, assert_one_line_error, run_cli, sha256  # noqa: E402

CMU = DATA / "dicom" / "cmu1-scanscope"
PICTURES = [name for name in FILES if name.endswith((".jpg", ".png"))]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SVSICC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "svsicc-cache"))
        yield tmp_path_factory.mktemp("dicom-report")


@pytest.fixture(scope="module")
def cmu_copy(work: Path) -> Path:
    out = work / "cmu-srgb"
    apply_dicom(CMU, out, workers=1)
    return out


def listing(folder: Path) -> list[tuple[str, str]]:
    return sorted((p.name, sha256(p)) for p in folder.iterdir())


def converted_frames() -> tuple[int, int]:
    """(frames, pixels) of every VOLUME and THUMBNAIL instance, read by pydicom."""
    frames = pixels = 0
    for path in CMU.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.ImageType[2] in ("VOLUME", "THUMBNAIL"):
            n = int(ds.NumberOfFrames)
            frames += n
            pixels += n * int(ds.Rows) * int(ds.Columns)
    return frames, pixels


def test_bench_json_on_the_series_folder(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = listing(CMU)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "bench", CMU, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert listing(CMU) == before and not list(tmp_path.iterdir())
    # 200 asked for, the VOLUME instance has 130 frames: every one of them.
    assert report["tiles_sampled"] == 130
    assert report["level0"] == {
        "width": 2220,
        "height": 2967,
        "tile_width": 240,
        "tile_height": 240,
        "compression": "JPEG",
    }
    for name, cost in report["stages"].items():
        assert cost["median_ms"] > 0 and cost["mean_ms"] > 0, name
    stage_sum = sum(c["mean_ms"] for c in report["stages"].values())
    assert stage_sum == pytest.approx(report["total"]["mean_ms"], rel=1e-6)
    frames, pixels = converted_frames()
    assert frames == 130 + 1  # the thumbnail is one frame; label and overview are kept
    assert report["segments_to_rewrite"] == frames
    assert report["megapixels_to_rewrite"] == pytest.approx(pixels / 1e6)
    assert report["profile"] == "ScanScope v1" and report["identity"] is False
    assert report["profile_origin"].startswith("embedded")
    assert report["estimated_seconds_one_core"] > 0


def test_bench_text_on_one_file_speaks_of_frames(capsys: pytest.CaptureFixture[str]) -> None:
    one_file = next(CMU.glob("*.dcm"))
    code, out, err = run_cli(capsys, "bench", one_file, "--tiles", "7")
    assert code == 0, err
    assert "7 frames sampled across level 0" in out and "131 frames" in out
    assert "240x240 frames, JPEG" in out and "frames/s" in out
    assert "tile" not in out and "segment" not in out


def test_bench_refuses_a_copy_like_apply(
    cmu_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "bench", cmu_copy)
    assert code == 3 and out == ""
    assert_one_line_error(err, "already applied")


def test_report_on_the_copy(work: Path, cmu_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = work / "report"
    code, stdout, err = run_cli(capsys, "report", CMU, cmu_copy, "-o", out, "--sample", "8")
    assert code == 0, err
    assert "report written (verified)" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    text = (out / "index.html").read_text(encoding="utf-8")
    for name in PICTURES:
        assert f'src="{name}"' in text
        with Image.open(out / name) as picture:
            assert picture.width > 100 and picture.height > 100
    assert "PASSED" in text and "<th>instance</th>" in text and "<dt>instance</dt>" in text
    assert "IFD" not in text
    saved = json.loads((out / "report.json").read_text())
    assert saved["overview_ifd"] == 1  # the THUMBNAIL instance, after the VOLUME
    assert saved["verify"]["ok"] is True
    region = saved["region"]
    assert (region["width"], region["height"]) == (1024, 1024)
    # ScanScope v1 on H&E, as for the SVS: tissue redder and bluer, glass nearly unchanged.
    before, after = (saved["tissue_region"][k]["tissue_mean"] for k in ("before", "after"))
    assert after[0] - before[0] > 5 and after[2] - before[2] > 5


def test_frames_assemble_to_the_svs_pixels() -> None:
    """The series was made from CMU-1-Small-Region.svs keeping its JPEG tiles: a window across
    frame edges and the thumbnail read from frames equal the TIFF reading of the same slide."""
    reader, slide = open_slide(CMU_SMALL)
    with reader, SeriesPixels(read_series(CMU)) as series:
        tiff = SlidePixels(reader, slide)
        box = (200, 470, 300, 50)  # straddles frame columns 0-2 and rows 1-2
        assert np.array_equal(series.region(series.level0, *box), tiff.region(slide.level0, *box))
        thumbnail = next(p for p in series.pages if p.role == "thumbnail")
        assert np.array_equal(series.page_rgb(thumbnail), tiff.page_rgb(slide.pages[1]))


def test_sparse_frames_are_placed_by_their_position() -> None:
    """TILED_SPARSE: each frame where its Plane Position (Slide) says, here in reverse order."""
    series = read_series(CMU)
    volume = series.instances[0]
    full = frame_places(volume)
    ds = copy.deepcopy(volume.dataset)
    ds.DimensionOrganizationType = "TILED_SPARSE"
    items = []
    for n in reversed(range(len(full))):
        x, y = full[n]
        where = pydicom.Dataset()
        where.ColumnPositionInTotalImagePixelMatrix = x + 1
        where.RowPositionInTotalImagePixelMatrix = y + 1
        item = pydicom.Dataset()
        item.PlanePositionSlideSequence = [where]
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    frames = volume.frames
    reordered = replace(frames, frames=tuple(reversed(frames.frames)))
    sparse = replace(volume, dataset=ds, frames=reordered)
    assert frame_places(sparse) == {len(full) - 1 - n: xy for n, xy in full.items()}
    with SeriesPixels(series) as a, SeriesPixels(replace(series, instances=(sparse,))) as b:
        box = (230, 230, 500, 300)
        assert np.array_equal(a.region(a.level0, *box), b.region(b.level0, *box))


def test_report_on_copies_that_were_not_converted(
    work: Path, cmu_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The original copied to another folder: svsicc never wrote it, a usage error as for TIFF.
    plain = work / "plain-copy"
    shutil.copytree(CMU, plain)
    never = work / "never"
    code, out, err = run_cli(capsys, "report", CMU, plain, "-o", never)
    assert code == 2 and out == ""
    assert_one_line_error(err, "records no source profile")
    assert not never.exists()
    # Marked as converted, but the VOLUME frames are the original's: written, and failed.
    forged = work / "forged"
    shutil.copytree(cmu_copy, forged)
    for path in forged.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        if ds.ImageType[2] == "VOLUME":
            original = next(
                pydicom.dcmread(p)
                for p in CMU.glob("*.dcm")
                if pydicom.dcmread(p, stop_before_pixels=True).ImageType[2] == "VOLUME"
            )
            ds.PixelData = original.PixelData
            ds.save_as(path)
    out_dir = work / "forged-report"
    code, out, err = run_cli(capsys, "report", CMU, forged, "-o", out_dir, "--sample", "6")
    assert code == 1, err
    assert "VERIFICATION FAILED" in out and "problem: instance 0 (volume)" in out
    assert "IFD" not in out
    text = (out_dir / "index.html").read_text(encoding="utf-8")
    assert "FAILED" in text and "instance 0 (volume): frame " in text
    assert not [p for p in work.iterdir() if p.name.startswith(".svsicc-report-")]
