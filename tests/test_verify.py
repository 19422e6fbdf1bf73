"""svsicc verify: CIEDE2000 against the published pairs, and verdicts on real applied slides.

Every copy checked here is written by the real ``svsicc.convert.apply`` (or is a real apply's output
with bytes deliberately broken), never mocked.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

import svsicc
from svsicc.api import verify_before_commit
from svsicc.check.figures import VerifyResult
from svsicc.check.verify import verify
from svsicc.cli.main import main
from svsicc.colour.ciede2000 import delta_e2000, delta_e2000_srgb, srgb_to_lab
from svsicc.drivers import read_slide
from svsicc.exceptions import ProfileError, VerificationError
from svsicc.tiff import file as tiff
from tests.synthetic import load_real_pixels, preset, write_slide

from .conftest import assert_one_line_error

DATA = Path(__file__).parent / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
TCGA = DATA / "tcga-cr-7395-01a-01-ts1.svs"
SCANSCOPE = DATA / "ScanScope_v1_from_CMU-Embed.icc"
ADOBE = DATA / "AdobeCompat-v2.icc"
LEVEL_KEYS = (
    "index", "psnr_db", "floor_psnr_db", "mean_abs", "floor_mean_abs", "max_abs",
    "delta_e2000_mean", "floor_delta_e2000_mean", "delta_e2000_p95", "floor_delta_e2000_p95",
)  # fmt: skip

# Sharma, Wu & Dalal (2005), Table 1: L1 a1 b1, L2 a2 b2, dE00 (all 34 pairs).
SHARMA_PAIRS = np.array([
    [50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425],
    [50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615],
    [50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412],
    [50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000],
    [50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000],
    [50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000],
    [50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669],
    [50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669],
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792],
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792],
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195],
    [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195],
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045],
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045],
    [50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461],
    [50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065],
    [50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492],
    [50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977],
    [50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030],
    [50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535],
    [50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000],
    [50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000],
    [50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000],
    [50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000],
    [60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644],
    [63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630],
    [61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731],
    [35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645],
    [22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373],
    [36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146],
    [90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441],
    [90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381],
    [6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377],
    [2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082],
])  # fmt: skip


# -- CIEDE2000 ----------------------------------------------------------------------------------


def test_ciede2000_matches_all_published_pairs() -> None:
    lab1, lab2, expected = SHARMA_PAIRS[:, :3], SHARMA_PAIRS[:, 3:6], SHARMA_PAIRS[:, 6]
    # The table gives 4 decimals: agreement to rounding is the most it can show.
    assert np.abs(delta_e2000(lab1, lab2) - expected).max() < 1e-4
    assert np.abs(delta_e2000(lab2, lab1) - expected).max() < 1e-4  # symmetric
    assert delta_e2000(lab1, lab2).dtype == np.float64
    single = [float(delta_e2000(a, b)) for a, b in zip(lab1, lab2, strict=True)]
    np.testing.assert_allclose(single, expected, atol=1e-4)


def test_ciede2000_float32_path_agrees() -> None:
    lab1 = SHARMA_PAIRS[:, :3].astype(np.float32)
    lab2 = SHARMA_PAIRS[:, 3:6].astype(np.float32)
    got = delta_e2000(lab1, lab2)
    assert got.dtype == np.float32
    assert np.abs(got - SHARMA_PAIRS[:, 6]).max() < 2e-4
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50_000, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-4, 5, a.shape), 0, 255).astype(np.uint8)
    exact = delta_e2000_srgb(a, b, np.float64)
    assert np.abs(delta_e2000_srgb(a, b) - exact).max() < 1e-3
    assert (delta_e2000_srgb(a, a) == 0).all()


def test_srgb_to_lab_known_values() -> None:
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    lab = srgb_to_lab(rgb)
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(lab[2], [53.2408, 80.0925, 67.2032], atol=1e-3)
    np.testing.assert_allclose(lab[3], [32.2970, 79.1875, -107.8602], atol=1e-3)


# -- fixtures: real applies -------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for this module's slides, with the colour-table cache kept out of ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SVSICC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "svsicc-cache"))
        yield tmp_path_factory.mktemp("verify")


@pytest.fixture(scope="module")
def calibrated(work: Path) -> Path:
    out = work / "cmu-calibrated.svs"
    svsicc.apply(CMU, out, profile=SCANSCOPE, workers=1)
    return out


@pytest.fixture(scope="module")
def passed(calibrated: Path) -> VerifyResult:
    return verify(CMU, calibrated, profile=SCANSCOPE)


def marked_untransformed_copy(original: Path, calibrated: Path, out: Path) -> Path:
    """The original's bytes with the calibrated copy's IFD 0 description and ICC tag.

    Structurally what apply writes, but no pixel was converted: verify must see it.
    """
    shutil.copyfile(original, out)
    with tiff.TiffReader(calibrated) as reader:
        first = read_slide(reader).pages[0]
        description, icc = first.description, first.icc_profile
    assert description is not None and icc is not None
    with tiff.TiffReader(original) as reader, open(out, "r+b") as fh:
        page = read_slide(reader).pages[0]
        patcher = tiff.TiffPatcher(fh, reader.structure, out)
        text = description.encode("latin-1") + b"\x00"
        entry = page.ifd.entries[tiff.TAG_IMAGE_DESCRIPTION]
        patcher.overwrite(entry, tiff.TYPE_ASCII, len(text), text)
        patcher.relocate_ifd_with_extra_entry(
            reader, page.ifd, tiff.TAG_ICC_PROFILE, tiff.TYPE_UNDEFINED, len(icc), icc
        )
    return out


def segment_extent(path: Path, page: int, segment: int) -> tuple[int, int]:
    with tiff.TiffReader(path) as reader:
        p = read_slide(reader).pages[page]
        return p.offsets[segment], p.byte_counts[segment]


def damaged_copy(source: Path, out: Path, page: int, segment: int, at: float, data: bytes) -> Path:
    shutil.copyfile(source, out)
    offset, count = segment_extent(out, page, segment)
    with open(out, "r+b") as fh:
        fh.seek(offset + int(count * at))
        fh.write(data)
    return out


# -- passing copies ---------------------------------------------------------------------------


def test_real_apply_passes_with_figures_per_level(passed: VerifyResult) -> None:
    assert passed.ok, passed.problems
    assert passed.findings == ()
    assert not passed.identity
    assert passed.source_profile is not None
    assert passed.source_profile.description == "ScanScope v1"
    assert passed.intent is not None and passed.intent.label == "perceptual"
    assert [(p.index, p.role) for p in passed.pages] == [(0, "level"), (1, "thumbnail")]
    assert passed.unchanged_pages == (2, 3)  # label and macro bytes identical
    assert passed.segments_decoded == 130 + 48  # every tile and thumbnail strip decoded
    level0 = passed.pages[0]
    assert level0.segments_checked == level0.segments_total == 130
    assert level0.pixels == 2220 * 2967  # padding of edge tiles excluded
    # One JPEG re-encode at the source's own Q=30 tables: measured 41.2 dB, dE2000 1.17 / 2.52.
    assert level0.psnr is not None and 39 < level0.psnr < 45
    assert 0.5 < level0.mean_abs < 2.0
    assert 0.6 < level0.delta_e2000_mean < 1.5
    assert level0.delta_e2000_mean < level0.delta_e2000_p95 < 3.5
    assert not level0.lossless


def test_json_has_ok_levels_and_structure(
    calibrated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["verify", str(CMU), str(calibrated), "--profile", str(SCANSCOPE), "--json",
                 "--sample", "12"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["ok"] is True
    for level in out["levels"]:
        assert set(LEVEL_KEYS) <= set(level)
        assert isinstance(level["psnr_db"], float) and isinstance(level["floor_psnr_db"], float)
        # Made like the floor (the source's own tables), the copy lands on it.
        assert abs(level["psnr_db"] - level["floor_psnr_db"]) < 0.2
    assert [level["index"] for level in out["levels"]] == [0, 1]
    assert out["levels"][0]["segments_checked"] == 12  # sampled
    assert out["levels"][1]["segments_checked"] == 48  # the thumbnail is always whole
    assert out["structure"]["ok"] is True
    assert out["structure"]["unchanged_pages"] == [2, 3]
    assert out["findings"] == [] and out["problems"] == []
    assert out["record"]["source_sha256"] == out["source_profile"]["sha256"]
    assert out["mode"] == "transformed" and out["sample"] == 12


def test_sample_is_seeded(calibrated: Path) -> None:
    first = verify(CMU, calibrated, profile=SCANSCOPE, sample=6, seed=3)
    again = verify(CMU, calibrated, profile=SCANSCOPE, sample=6, seed=3)
    other = verify(CMU, calibrated, profile=SCANSCOPE, sample=6, seed=4)
    assert first.pages[0].to_dict() == again.pages[0].to_dict()
    assert first.pages[0].mean_abs != other.pages[0].mean_abs


def test_gt450_and_lzw_synthetic_slides_pass(work: Path, scanscope_bytes: bytes) -> None:
    pixels = load_real_pixels()[:768, :1024]
    for style in ("gt450", "lzw"):
        original = write_slide(
            work / f"{style}.svs",
            pixels,
            preset(style, profile=scanscope_bytes, downsamples=(1, 4)),
        )
        copy = work / f"{style}-calibrated.svs"
        svsicc.apply(original, copy, workers=1)
        result = verify(original, copy)  # the profile is embedded: no --profile needed
        assert result.ok, (style, result.problems)
        levels = [p for p in result.pages if p.role == "level"]
        assert [p.index for p in levels] == [0, 2]
        if style == "lzw":  # lossless: the pixels are exactly LittleCMS's
            assert all(p.lossless and p.max_abs == 0 and p.psnr is None for p in levels)
        else:  # YCbCr 4:2:0 at Q=91: measured 44.3 dB
            assert all(p.psnr is not None and p.psnr > 40 for p in levels)


def test_identity_mode_requires_identical_bytes(work: Path) -> None:
    copy = work / "tcga-identity.svs"
    result = svsicc.apply(TCGA, copy, workers=1)
    assert result.identity
    checked = verify(TCGA, copy)
    assert checked.ok, checked.problems
    assert checked.identity
    assert {p.method for p in checked.pages} == {"bytes"}
    assert [p.segments_checked for p in checked.pages] == [252, 48, 63]
    broken = damaged_copy(copy, work / "tcga-identity-broken.svs", 2, 10, 0.5, b"\x00\x01\x02")
    failed = verify(TCGA, broken)
    assert not failed.ok
    assert failed.pages[2].problems == ("segment 10 differs; identity mode must keep every byte",)


# -- copies that must fail --------------------------------------------------------------------


def test_marked_but_untransformed_copy_fails(work: Path, calibrated: Path) -> None:
    fake = marked_untransformed_copy(CMU, calibrated, work / "marked-only.svs")
    result = verify(CMU, fake, profile=SCANSCOPE, sample=20)
    assert not result.ok
    assert result.findings == ()  # structurally perfect: only the pixels give it away
    level0 = result.pages[0]
    assert level0.psnr is not None and level0.psnr < 36
    assert level0.mean_abs > 2.0
    assert any(p.startswith("PSNR") for p in level0.problems)


def test_the_original_itself_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify", str(CMU), str(CMU), "--profile", str(SCANSCOPE), "--sample", "8"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert_one_line_error(captured.err, "records no source profile", "svsicc apply did not write")


def test_copy_made_with_another_profile_is_a_usage_error(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = work / "cmu-adobe.svs"
    svsicc.apply(CMU, wrong, profile=ADOBE, workers=1)
    code = main(["verify", str(CMU), str(wrong), "--profile", str(SCANSCOPE), "--sample", "4"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert_one_line_error(
        captured.err,
        "records source profile 'A98C'",
        "not 'ScanScope v1'",
        "pass --profile FILE with 'A98C'",
    )
    # Checked against its own profile, the same copy is right.
    assert verify(CMU, wrong, profile=ADOBE, sample=20).ok


def test_one_corrupted_tile_fails(work: Path, calibrated: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    broken = damaged_copy(calibrated, work / "one-bad-tile.svs", 0, 57, 0.5, noise)
    result = verify(CMU, broken, profile=SCANSCOPE)
    assert not result.ok
    # Noise in its entropy-coded data: libjpeg would decode it with a warning and grey blocks;
    # svsicc takes the warning for what it is.
    [finding] = result.findings
    assert (finding.kind, finding.ifd, finding.tile) == ("decode", 0, 57)
    assert "damaged data, libjpeg: Corrupt JPEG data" in finding.message
    assert result.pages[1].ok  # the thumbnail is fine


def test_one_wrong_tile_fails(work: Path, calibrated: Path) -> None:
    """Tile 57 of the copy holds another tile's sound stream: it decodes, to the wrong pixels."""
    with tifffile.TiffFile(calibrated) as tif:
        counts = list(tif.pages[0].databytecounts)
    smallest = min(range(len(counts)), key=counts.__getitem__)
    assert counts[smallest] < counts[57]
    offset, count = segment_extent(calibrated, 0, smallest)
    with open(calibrated, "rb") as fh:
        fh.seek(offset)
        other = fh.read(count)
    broken = damaged_copy(calibrated, work / "one-wrong-tile.svs", 0, 57, 0.0, other)
    result = verify(CMU, broken, profile=SCANSCOPE)
    assert not result.ok
    assert result.findings == ()
    level0 = result.pages[0]
    assert level0.worst_segment == 57
    assert level0.worst_segment_psnr is not None and level0.worst_segment_psnr < 20
    assert any(p.startswith("segment 57:") for p in level0.problems)
    assert result.pages[1].ok


def test_undecodable_tile_fails_even_when_not_sampled(work: Path, calibrated: Path) -> None:
    broken = damaged_copy(calibrated, work / "no-soi.svs", 0, 57, 0.0, b"\x00\x00\x00\x00")
    full = verify(CMU, broken, profile=SCANSCOPE)
    assert not full.ok
    assert [(f.kind, f.ifd, f.tile) for f in full.findings] == [("decode", 0, 57)]
    sampled = verify(CMU, broken, profile=SCANSCOPE, sample=3, seed=0)
    assert not sampled.ok
    # Found by the marker check of unsampled segments, not by decoding it.
    assert [(f.tile, f.message) for f in sampled.findings] == [(57, "starts with 0000, not ffd8")]


def test_changed_label_and_changed_tag_fail(work: Path, calibrated: Path) -> None:
    label = damaged_copy(calibrated, work / "label.svs", 2, 3, 0.5, b"\xaa\xbb\xcc")
    result = verify(CMU, label, profile=SCANSCOPE, sample=4)
    assert not result.ok
    assert 2 not in result.unchanged_pages
    # A changed ImageDescription of the macro (IFD 3) is a structural difference.
    tagged = work / "tag.svs"
    shutil.copyfile(calibrated, tagged)
    with tiff.TiffReader(tagged) as reader:
        page = read_slide(reader).pages[3]
    entry = page.ifd.entries[tiff.TAG_IMAGE_DESCRIPTION]
    assert page.description is not None and "macro" in page.description
    with open(tagged, "r+b") as fh:
        fh.seek(entry.value_offset + page.description.index("macro"))
        fh.write(b"MACRO")
    result = verify(CMU, tagged, profile=SCANSCOPE, sample=4)
    assert not result.ok
    assert [(f.kind, f.ifd) for f in result.findings] == [("structure", 3)]
    assert "ImageDescription" in result.findings[0].message


# -- bad input and apply --verify ---------------------------------------------------------------


def test_bad_input_exits_2(
    calibrated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(tmp_path / "missing.svs"), str(calibrated)]) == 2
    assert "no such file" in capsys.readouterr().err
    # CMU embeds no profile: the record's profile must be supplied.
    assert main(["verify", str(CMU), str(calibrated)]) == 2
    assert "pass --profile FILE" in capsys.readouterr().err
    assert main(["verify", str(calibrated), str(CMU), "--profile", str(SCANSCOPE)]) == 2
    assert "ORIGINAL is itself a calibrated copy" in capsys.readouterr().err
    assert main(["verify", str(CMU), str(calibrated), "--sample", "0"]) == 2
    assert main(["verify", str(CMU), str(calibrated), "--profile", str(DATA / "sGrey-v4.icc")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "an RGB profile is required" in err


def test_verify_before_commit_passes_and_fails(work: Path) -> None:
    seen: list[VerifyResult] = []
    good = work / "checked.svs"
    svsicc.apply(CMU, good, profile=SCANSCOPE, workers=1,
                 before_commit=verify_before_commit(8, on_result=seen.append))  # fmt: skip
    assert good.exists() and len(seen) == 1 and seen[0].ok and seen[0].sample == 8
    refused = work / "refused.svs"
    with pytest.raises(ProfileError) as wrong_profile:
        svsicc.apply(CMU, refused, profile=SCANSCOPE, workers=1,
                     before_commit=verify_before_commit(8, profile=ADOBE))  # fmt: skip
    assert "records source profile 'ScanScope v1'" in wrong_profile.value.one_line()
    assert not refused.exists()

    def break_one_tile(temp: Path, result: svsicc.ApplyResult) -> None:
        offset, count = segment_extent(temp, 0, 57)
        with open(temp, "r+b") as fh:
            fh.seek(offset + count // 2)
            fh.write(bytes(64))
        verify_before_commit(None)(temp, result)

    with pytest.raises(VerificationError) as caught:
        svsicc.apply(CMU, refused, profile=SCANSCOPE, workers=1, before_commit=break_one_tile)
    assert isinstance(caught.value, svsicc.SvsiccError)
    assert "verification failed, nothing was written" in caught.value.one_line()
    assert "segment 57" in caught.value.one_line()
    assert not refused.exists()
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []  # no temp left
