"""Verdicts with a strong source profile, and the profile policy of svsicc.convert.plan.

The strong profiles are real ICC v2 profiles written byte by byte: a matrix/TRC one
(``tests.synthetic.matrix_trc_profile``), linear light with sRGB primaries, which lifts mid-grey
128 to about 188 in sRGB, as strong as a real Aperio AT2 profile (128 -> 191), and the same
transform as a scanner-class 16-bit LUT (``lut_profile``, mft2 A2B0), as Aperio builds theirs.
Fixed limits failed correct copies made with such profiles; verify now judges them against the
floor.
Every copy is written by the real ``svsicc apply``; tampered copies are real copies with one
tile's data or offsets changed.
"""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

import svsicc
from svsicc.check.verify import verify
from svsicc.drivers import read_slide
from svsicc.tiff import file as tiff
from tests.synthetic import (
    SlideSpec,
    load_real_pixels,
    lut_profile,
    matrix_trc_profile,
    mosaic,
    preset,
    write_slide,
)

from .conftest import OPENSLIDE_SMALL, SCANSCOPE, assert_one_line_error, run_cli

SRGB = Path(__file__).parent / "data" / "sRGB-v2-magic.icc"


@pytest.fixture(scope="module")
def strong(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("icc") / "linear-srgb.icc"
    path.write_bytes(matrix_trc_profile())
    return path


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return mosaic(load_real_pixels(), 960, 720, seed=1)


@pytest.fixture(scope="module")
def strong_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("icc") / "linear-srgb-lut.icc"
    path.write_bytes(lut_profile())
    return path


@pytest.mark.parametrize("kind", ["matrix", "lut"])
def test_written_profile_is_real_and_strong(kind: str, strong: Path, strong_lut: Path) -> None:
    path = strong if kind == "matrix" else strong_lut
    # LittleCMS itself, through Pillow, not svsicc's table: the profile must load and be strong.
    transform = ImageCms.buildTransform(
        ImageCms.getOpenProfile(io.BytesIO(path.read_bytes())),
        ImageCms.getOpenProfile(str(SRGB)),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )
    greys = Image.fromarray(np.array([[[0] * 3, [128] * 3, [255] * 3]], np.uint8))
    out = np.asarray(ImageCms.applyTransform(greys, transform))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 2].tolist() == [255, 255, 255]
    assert np.abs(out[0, 1].astype(int) - 188).max() <= 1  # linear 0.502 -> sRGB 0.735
    profile = svsicc.colour.transform.IccProfile.from_file(path)
    assert profile.description.startswith("Linear sRGB")
    # The LUT profile is a scanner profile with nothing but A2B0, as Aperio's are.
    assert (path.read_bytes()[12:16], b"A2B0" in path.read_bytes()) == (
        (b"mntr", False) if kind == "matrix" else (b"scnr", True)
    )


def swap_in(copy: Path, out: Path, page: int, tile: int, data: bytes) -> Path:
    """``copy`` with tile ``tile`` of IFD ``page`` pointing at ``data`` appended at the end."""
    shutil.copyfile(copy, out)
    with tiff.TiffReader(out) as reader:
        p = read_slide(reader).pages[page]
        offsets = p.ifd.entries[tiff.TAG_TILE_OFFSETS]
        counts = p.ifd.entries[tiff.TAG_TILE_BYTE_COUNTS]
        order = reader.structure.byteorder
    with open(out, "r+b") as fh:
        end = fh.seek(0, 2)
        fh.write(data)
        for entry, value in ((offsets, end), (counts, len(data))):
            fmt = {tiff.TYPE_LONG: "I", tiff.TYPE_LONG8: "Q"}[entry.type]
            fh.seek(entry.value_offset + struct.calcsize(fmt) * tile)
            fh.write(struct.pack(("<" if order == "<" else ">") + fmt, value))
    return out


def stored(path: Path, page: int, tile: int) -> bytes:
    with tiff.TiffReader(path) as reader:
        p = read_slide(reader).pages[page]
        return reader.read(p.offsets[tile], p.byte_counts[tile], "segment", ifd=page)


CASES = {
    "at2-q30": preset("at2", quality=30),
    "at2-q30-lut": preset("at2", quality=30),
    "gt450-420-q91-lut": preset("gt450", quality=91, subsampling="4:2:0"),
    "at2-q95": preset("at2", quality=95),
    "gt450-420-q30": preset("gt450", quality=30, subsampling="4:2:0"),
    "gt450-422-q91": preset("gt450", quality=91, subsampling="4:2:2"),
    "jp2k-33005": preset("jp2k-33005", j2k_psnr=40),
    "jp2k-33003-422": preset("jp2k-33003", j2k_chroma=(2, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_strong_profile_copies_pass_and_tampered_tiles_fail(
    case: str,
    strong: Path,
    strong_lut: Path,
    pixels: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec: SlideSpec = CASES[case]
    if case.endswith("-lut"):
        strong = strong_lut  # LittleCMS's LUT path, as real scanner profiles take
    original = write_slide(tmp_path / "orig.svs", pixels, spec.__class__(**{
        **spec.__dict__, "profile": None, "icc_name": None, "downsamples": (1, 4)}))  # fmt: skip
    copy = tmp_path / "copy.svs"
    code, out, err = run_cli(
        capsys, "apply", original, copy, "--profile", strong, "--verify", "--workers", "1"
    )
    assert code == 0, err
    verified = [line for line in out.splitlines() if "verification" in line]
    assert len(verified) == 1 and "verification passed" in verified[0], out
    assert "floor" in verified[0]
    result = verify(original, copy, profile=strong)
    assert result.ok, result.problems
    pages = {p.index: p for p in result.pages}
    assert {p.role for p in result.pages} == {"level", "thumbnail"}
    for p in result.pages:
        assert p.floor_psnr is not None and p.psnr is not None
        assert p.psnr >= p.floor_psnr - 0.5, p
    assert pages[1].role == "thumbnail"
    assert pages[1].segments_checked == pages[1].segments_total  # every strip, always

    # One level-0 tile replaced by the original's unconverted tile: caught and named.
    tile = 5
    tampered = swap_in(copy, tmp_path / "tampered.svs", 0, tile, stored(original, 0, tile))
    failed = verify(original, tampered, profile=strong)
    assert not failed.ok
    assert any(f"IFD 0 (level): segment {tile}:" in line for line in failed.problems), failed
    assert not any("IFD 1" in line for line in failed.problems)
    code, out, _err = run_cli(capsys, "verify", original, tampered, "--profile", strong)
    assert code == 1 and f"segment {tile}:" in out and "FAIL" in out

    # A tile gone missing (byte count 0): named, even when it is not among the sampled ones.
    missing = swap_in(copy, tmp_path / "missing.svs", 0, 7, b"")
    failed = verify(original, missing, profile=strong, sample=1, seed=0)
    assert not failed.ok
    assert "IFD 0, segment 7: segment 7 is empty in the copy only" in failed.problems

    # Two tiles swapped: both named.
    first, second = stored(copy, 0, 2), stored(copy, 0, 9)
    swapped = swap_in(copy, tmp_path / "swapped.svs", 0, 2, second)
    swapped = swap_in(swapped, tmp_path / "swapped2.svs", 0, 9, first)
    failed = verify(original, swapped, profile=strong)
    named = " ".join(failed.problems)
    assert not failed.ok and "segment 2:" in named and "segment 9:" in named, failed.problems


def test_fixed_limits_would_have_failed_correct_copies(
    strong: Path, pixels: np.ndarray, tmp_path: Path
) -> None:
    """The reason for the floor: a correct Q=30 copy under the strong profile sits below the old
    38 dB / 2.0 limits (measured 34.6-37.3 dB, mean 1.7-2.4), exactly on its floor."""
    original = write_slide(tmp_path / "q30.svs", pixels, preset("at2", quality=30))
    copy = tmp_path / "q30-copy.svs"
    svsicc.apply(original, copy, profile=strong, workers=1)
    result = verify(original, copy, profile=strong)
    assert result.ok, result.problems
    assert min(p.psnr or 99 for p in result.pages) < 38
    for p in result.pages:
        assert p.psnr is not None and p.floor_psnr is not None
        assert abs(p.psnr - p.floor_psnr) < 0.2 and abs(p.mean_abs - p.floor_mean_abs) < 0.05


def test_tiny_real_slide_passes_apply_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """openslide-python's small test slide measured mean |d| 2.06 against the old 2.0 limit."""
    copy = tmp_path / "small.svs"
    code, out, err = run_cli(
        capsys, "apply", OPENSLIDE_SMALL, copy, "--profile", SCANSCOPE, "--verify"
    )
    assert code == 0, err
    assert "verification passed" in out
    assert copy.exists()


# -- the profile policy ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_slide(tmp_path_factory: pytest.TempPathFactory, pixels: np.ndarray) -> Path:
    folder = tmp_path_factory.mktemp("embedded")
    return write_slide(
        folder / "scanscope.svs",
        pixels[:480, :640],
        preset("at2", profile=SCANSCOPE.read_bytes(), downsamples=(1, 4)),
    )


def test_profile_override_is_said_on_stderr(
    embedded_slide: Path, strong: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "overridden.svs"
    code, _out, err = run_cli(capsys, "apply", embedded_slide, copy, "--profile", strong)
    assert code == 0
    assert_one_line_error(
        err, str(embedded_slide), "--profile 'Linear sRGB", "replaces the embedded profile",
        "'ScanScope v1'",
    )  # fmt: skip
    # The same profile as the embedded one replaces nothing: nothing said.
    code, _out, err = run_cli(
        capsys, "apply", embedded_slide, tmp_path / "same.svs", "--profile", SCANSCOPE
    )
    assert code == 0 and err == ""

    # verify of that copy without --profile: a usage error naming what the copy records.
    code, out, err = run_cli(capsys, "verify", embedded_slide, copy)
    assert code == 2 and out == ""
    assert_one_line_error(
        err, "records source profile 'Linear sRGB (gamma 1.0, test)'", "not 'ScanScope v1'",
        "embedded (IFD 0)", "pass --profile FILE with 'Linear sRGB (gamma 1.0, test)'",
    )  # fmt: skip
    assert run_cli(capsys, "verify", embedded_slide, copy, "--profile", strong)[0] == 0
    # A copy made with the embedded profile, checked with a wrong --profile: told to drop it.
    code, _out, err = run_cli(
        capsys, "verify", embedded_slide, tmp_path / "same.svs", "--profile", strong
    )
    assert code == 2
    assert_one_line_error(err, "records source profile 'ScanScope v1'", "leave out --profile")


def test_fallback_profile_only_for_slides_without_one(
    embedded_slide: Path,
    strong: Path,
    pixels: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bare = write_slide(tmp_path / "bare.svs", pixels[:480, :640], preset("at2", downsamples=(1,)))
    with_fallback = svsicc.apply(bare, tmp_path / "bare-copy.svs", fallback_profile=strong)
    assert with_fallback.profile_origin == "--fallback-profile"
    assert with_fallback.profile.description.startswith("Linear sRGB")
    kept = svsicc.apply(embedded_slide, tmp_path / "emb-copy.svs", fallback_profile=strong)
    assert kept.profile_origin == "embedded (IFD 0)"
    assert kept.profile.description == "ScanScope v1"
    assert kept.replaced_profile is None
    # verify follows the same policy.
    code, out, err = run_cli(
        capsys, "verify", bare, tmp_path / "bare-copy.svs", "--fallback-profile", strong,
        "--sample", "4",
    )  # fmt: skip
    assert code == 0, err
    assert "OK" in out.splitlines()[0]
    assert verify(embedded_slide, tmp_path / "emb-copy.svs", fallback_profile=strong).ok
    # Without any: one line, and the hint names both options.
    code, _out, err = run_cli(capsys, "apply", bare, tmp_path / "none.svs")
    assert code == 2
    assert_one_line_error(err, "no embedded ICC profile", "--fallback-profile")
    # bench takes the same options.
    code, out, err = run_cli(capsys, "bench", bare, "--fallback-profile", strong, "--tiles", "2")
    assert code == 0, err
    assert "--fallback-profile" in out


def test_identity_copy_lines_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import TCGA

    copy = tmp_path / "identity.svs"
    assert svsicc.apply(TCGA, copy, workers=1).identity
    code, out, _err = run_cli(capsys, "verify", TCGA, copy)
    assert code == 0
    assert "0 segments decoded" not in out
    assert "363 segments compared byte for byte" in out
    assert out.count("byte-identical") == 3
