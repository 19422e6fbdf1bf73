"""svsicc report: the folder exists, opens offline, and its pictures show what changed.

Reports are made from real applies of tests/data slides; pictures are read back with Pillow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import svsicc
from svsicc.check.report import FILES, make_report, otsu_threshold
from svsicc.check.report_pictures import GAP, HEADER, HISTOGRAM_PANEL, LEGEND_HEIGHT, diverging
from svsicc.check.report_summary import ReportResult
from svsicc.cli.main import main

DATA = Path(__file__).parent / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
APERIO_SRGB = DATA / "Aperio-embedded_sRGB_IEC61966-2.1_from_tcga-cr-7395.icc"
SCANSCOPE = DATA / "ScanScope_v1_from_CMU-Embed.icc"
PICTURES = [name for name in FILES if name.endswith((".png", ".jpg"))]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SVSICC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "svsicc-cache"))
        yield tmp_path_factory.mktemp("report")


@pytest.fixture(scope="module")
def cmu_calibrated(work: Path) -> Path:
    out = work / "cmu-calibrated.svs"
    svsicc.apply(CMU, out, profile=SCANSCOPE, workers=1)
    return out


@pytest.fixture(scope="module")
def cmu_report(work: Path, cmu_calibrated: Path) -> ReportResult:
    return make_report(CMU, cmu_calibrated, work / "cmu-report", profile=SCANSCOPE)


@pytest.fixture(scope="module")
def identity_report(work: Path) -> ReportResult:
    """CMU-1 "calibrated" from Aperio's own sRGB profile: identity mode, no pixel changes."""
    copy = work / "cmu-identity.svs"
    assert svsicc.apply(CMU, copy, profile=APERIO_SRGB, workers=1).identity
    return make_report(CMU, copy, work / "identity-report", profile=APERIO_SRGB, region_size=512)


def panel(picture: Path, top: int, height: int, width: int, index: int) -> np.ndarray:
    """Pixels of channel panel ``index`` of a difference map (captions and legend excluded)."""
    pixels = np.asarray(Image.open(picture).convert("RGB"))
    left = index * (width + GAP)
    return pixels[top : top + height, left : left + width]


def test_every_file_is_written_with_the_expected_size(cmu_report: ReportResult) -> None:
    folder = cmu_report.directory
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    for name in PICTURES:
        with Image.open(folder / name) as image:
            # Photographs and maps as JPEG; the histograms are line art.
            assert image.format == ("PNG" if name == "histograms.png" else "JPEG")
            assert image.size == cmu_report.images[name]
    # As PNG this report took 9.5 MB for a 1.9 MB slide.
    assert sum(p.stat().st_size for p in folder.iterdir()) < 4_000_000
    thumb_w, thumb_h = 574, 768  # CMU-1-Small-Region's thumbnail (IFD 1)
    assert cmu_report.overview_page == 1
    # The gap grows to 10 px so that both halves sit on the same 8x8 JPEG grid.
    assert cmu_report.images["thumbnail_before_after.jpg"] == (2 * thumb_w + 10, thumb_h + HEADER)
    assert cmu_report.images["region_before_after.jpg"] == (2 * 1024 + GAP, 1024 + HEADER)
    pw, ph = HISTOGRAM_PANEL
    assert cmu_report.images["histograms.png"] == (3 * pw + 2 * GAP, HEADER + 2 * (ph + GAP))
    # Maps are at most 512 px a side: the thumbnail halved (287x384), the region in 2x2 means.
    assert cmu_report.images["difference_thumbnail.jpg"] == (
        3 * 287 + 2 * GAP,
        2 * HEADER + 384 + LEGEND_HEIGHT,
    )
    assert cmu_report.images["difference_region.jpg"] == (
        3 * 512 + 2 * GAP,
        2 * HEADER + 512 + LEGEND_HEIGHT,
    )
    assert cmu_report.images["overlay_region.jpg"] == (
        3 * 512 + 2 * GAP,
        HEADER + 2 * (HEADER + 512) + LEGEND_HEIGHT,
    )


def test_index_opens_offline(cmu_report: ReportResult) -> None:
    text = cmu_report.index.read_text(encoding="utf-8")
    links = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sorted(set(links)) == sorted(set(PICTURES) | {"report.json"})
    for link in links:
        assert "://" not in link and not link.startswith(("/", "data:", ".."))
        assert (cmu_report.directory / link).is_file()
    lowered = text.lower()
    for remote in ("<script", "<link", "@import", "url(", "http:", "https:"):
        assert remote not in lowered


def test_index_shows_verify_figures_and_colours(cmu_report: ReportResult) -> None:
    text = cmu_report.index.read_text(encoding="utf-8")
    assert cmu_report.ok and "PASSED" in text
    level0 = cmu_report.verification.pages[0]
    assert level0.psnr is not None and f"{level0.psnr:.2f}" in text
    assert f"{level0.delta_e2000_mean:.3f}" in text
    assert "Glass white" in text and "Mean tissue colour" in text
    saved = json.loads((cmu_report.directory / "report.json").read_text())
    assert saved["verify"]["ok"] is True
    assert [level["index"] for level in saved["verify"]["levels"]] == [0, 1]
    assert saved["thumbnail"]["before"]["glass_white"] == list(
        cmu_report.thumbnail_before.glass_white or ()
    )


def test_glass_and_tissue_colours(cmu_report: ReportResult) -> None:
    before, after = cmu_report.thumbnail_before, cmu_report.thumbnail_after
    assert before.glass_white is not None and after.glass_white is not None
    assert min(before.glass_white) > 225  # CMU-1's glass: about (246, 243, 243)
    assert before.glass_fraction > 0.3 and before.tissue_fraction > 0.15
    # ScanScope v1 keeps the glass within a few levels and saturates H&E: R and B rise.
    assert max(abs(a - b) for a, b in zip(after.glass_white, before.glass_white, strict=True)) < 6
    assert before.tissue_mean is not None and after.tissue_mean is not None
    assert after.tissue_mean[0] - before.tissue_mean[0] > 5
    assert after.tissue_mean[2] - before.tissue_mean[2] > 5
    x, y, w, h = cmu_report.region
    assert (w, h) == (1024, 1024) and 0 <= x <= 2220 - w and 0 <= y <= 2967 - h
    assert cmu_report.region_before.tissue_fraction > 0.5  # the region is mostly tissue


def test_identity_gives_blank_maps_where_a_transform_does_not(
    identity_report: ReportResult, cmu_report: ReportResult
) -> None:
    assert identity_report.ok and identity_report.verification.identity
    assert identity_report.difference_scale_thumbnail == 1  # the smallest scale: no change
    for report, blank in ((identity_report, True), (cmu_report, False)):
        folder = report.directory
        thumb_w, _ = report.images["thumbnail_before_after.jpg"]
        map_w = (report.images["difference_thumbnail.jpg"][0] - 2 * GAP) // 3
        map_h = report.images["difference_thumbnail.jpg"][1] - 2 * HEADER - LEGEND_HEIGHT
        region_h = report.images["difference_region.jpg"][1] - 2 * HEADER - LEGEND_HEIGHT
        region_w = (report.images["difference_region.jpg"][0] - 2 * GAP) // 3
        for k in range(3):
            thumb = panel(folder / "difference_thumbnail.jpg", 2 * HEADER, map_h, map_w, k)
            region = panel(folder / "difference_region.jpg", 2 * HEADER, region_h, region_w, k)
            for pixels in (thumb, region):
                white = (pixels == 255).all(axis=-1).mean()
                if blank:
                    assert white == 1.0
                else:
                    assert white < 0.9  # the real transform changes most of the slide
        before_after = np.asarray(Image.open(folder / "thumbnail_before_after.jpg").convert("RGB"))
        half = 574  # the thumbnail's width; the gap is 8 to 15 px so both halves align to 8
        left = before_after[HEADER:, :half]
        right = before_after[HEADER:, -half:]
        # JPEG: the halves are not on the same 8x8 grid, so "equal" is within codec noise.
        same = np.abs(left.astype(np.int16) - right.astype(np.int16)).mean()
        assert same < 0.2 if blank else same > 2, same


def test_diverging_scale_is_white_at_zero_and_symmetric() -> None:
    values = np.array([-10.0, -5.0, 0.0, 5.0, 10.0, 40.0])
    colours = diverging(values, 10)
    assert colours[2].tolist() == [255, 255, 255]
    assert colours[0].tolist() == [0, 0, 255] and colours[4].tolist() == [255, 0, 0]
    assert colours[1].tolist() == [128, 128, 255] and colours[3].tolist() == [255, 128, 128]
    assert colours[5].tolist() == [255, 0, 0]  # beyond the scale saturates
    assert 100 < otsu_threshold(np.array([30.0] * 50 + [240.0] * 50, np.float32)) < 240


def test_cli_writes_report_and_exit_codes(
    work: Path, cmu_calibrated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = work / "cli-report"
    args = ["report", str(CMU), str(cmu_calibrated), "-o", str(out), "--profile", str(SCANSCOPE)]
    assert main([*args, "--sample", "4", "--region-size", "256"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert "report written (verified)" in capsys.readouterr().out
    with Image.open(out / "region_before_after.jpg") as image:
        # 256 px is narrower than the caption "original, level 0 at (x, y), 256x256": doubled.
        assert image.size == (2 * 512 + GAP, 512 + HEADER)
    # Comparing the original with itself is a usage error (the second file was not written by
    # svsicc apply): one line, exit 2, no report.
    same = work / "same-report"
    assert main(["report", str(CMU), str(CMU), "-o", str(same), "--profile", str(SCANSCOPE),
                 "--sample", "4", "--region-size", "128"]) == 2  # fmt: skip
    assert "records no source profile" in capsys.readouterr().err
    assert not same.exists()


def test_bad_input_leaves_nothing(
    work: Path, cmu_calibrated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = work / "never"
    assert main(["report", str(work / "missing.svs"), str(cmu_calibrated), "-o", str(target)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not target.exists()
    a_file = work / "a-file"
    a_file.write_text("x")
    assert main(["report", str(CMU), str(cmu_calibrated), "-o", str(a_file),
                 "--profile", str(SCANSCOPE)]) == 2  # fmt: skip
    assert "not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "x"
    assert not [p for p in work.iterdir() if p.name.startswith(".svsicc-report-")]


def test_summary_in_plain_words_then_terms_explained_once(cmu_report: ReportResult) -> None:
    text = cmu_report.index.read_text(encoding="utf-8")
    summary = text[text.index('<section class="summary">') : text.index("</section>")]
    # First on the page, before any technical term.
    assert text.index("</section>") < text.index("Technical details") < text.index("IFD")
    before = cmu_report.region_before.tissue_mean
    after = cmu_report.region_after.tissue_mean
    assert before is not None and after is not None
    size = max(abs(a - b) for a, b in zip(after, before, strict=True))
    # ScanScope v1 on H&E: R and B rise, G falls relative to them: lighter, more magenta.
    assert f"Tissue became lighter, more magenta and bluer by about {size:.0f} levels" in summary
    assert "Glass white is practically unchanged (within 2 levels)" in summary
    assert "checked against the exact colour conversion and passed" in summary
    for term in ("IFD", "PSNR", "dE2000", "segment", "dB"):
        assert term not in re.sub(r"dE2000, where about 1", "", summary)
    for term in ("level", "IFD", "tile, strip, segment", "LittleCMS", "PSNR", "dE2000"):
        assert text.count(f"<dt>{term}</dt>") == 1
    assert text.index("Terms used below") < text.index("Verification figures")


def test_describe_shift_words() -> None:
    from svsicc.check.report_summary import describe_shift

    # delta (12, -2, 10): lightness +6.7; chromatic (+5.3, -8.7, +3.3): magenta, then red.
    assert describe_shift((150, 90, 130), (162, 88, 140)) == (
        "lighter, more magenta and redder",
        12,
    )
    # delta (10, -5, -2): lightness +1 (not named); chromatic (+9, -6, -3).
    assert describe_shift((150, 90, 130), (160, 85, 128)) == ("redder and more magenta", 10)
    assert describe_shift((200, 200, 200), (190, 190, 190)) == ("darker", 10)
    assert describe_shift((246, 243, 243), (244, 242, 242)) == ("unchanged", 2)


def test_tiny_slide_pictures_have_room_for_their_labels(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 16x16 slide: every picture is enlarged (whole pixels) to at least MIN_PANEL a panel."""
    from svsicc.check.report_pictures import MIN_PANEL

    small = DATA / "openslide-python_small.svs"
    copy = work / "tiny.svs"
    svsicc.apply(small, copy, profile=SCANSCOPE, workers=1)
    out = work / "tiny-report"
    main(["report", str(small), str(copy), "-o", str(out), "--profile", str(SCANSCOPE)])
    capsys.readouterr()
    sizes = json.loads((out / "report.json").read_text())["images"]
    assert sizes["thumbnail_before_after.jpg"][0] >= 2 * MIN_PANEL
    for name in ("difference_thumbnail.jpg", "difference_region.jpg", "overlay_region.jpg"):
        assert sizes[name][0] >= 3 * MIN_PANEL, name
    with Image.open(out / "thumbnail_before_after.jpg") as image:
        pixels = np.asarray(image.convert("RGB"))[HEADER:]
    # Whole-pixel enlargement: 16 px became blocks of 16x16 (JPEG leaves them near-flat).
    block = pixels[32:48, 32:48].astype(np.int16)
    assert np.abs(block - block.mean(axis=(0, 1))).max() < 12
