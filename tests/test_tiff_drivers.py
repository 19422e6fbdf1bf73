"""Generic tiled TIFF and Ventana BIF through their drivers, on fixtures tifffile wrote from real
CMU pixels with the ScanScope profile (tests/format_fixtures.py), read back by OpenSlide.

The colour yardstick does not share svsicc's code: the ideal is Pillow's LittleCMS on the
original as OpenSlide decodes it, the floor is that ideal encoded once more by Pillow at the
fixture's own quality and sampling; the copy OpenSlide shows must land on that floor within the
margins svsicc verify uses (PSNR >= floor - 0.5 dB, mean |d| <= floor x 1.1 + 0.1).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from PIL import Image, ImageCms

from tests.format_fixtures import SCANSCOPE_PROFILE, write_generic_tiff, write_ventana_bif

from .conftest import assert_one_line_error, mean_abs, psnr
from .conftest import run_cli as run

RGB = npt.NDArray[np.uint8]
TAG_RECORD = 65300
OFFSET_TAGS = {273, 279, 324, 325}
QUALITY = 90


def _target_bytes() -> bytes:
    from svsicc.colour.transform import default_target

    return default_target().data


def littlecms(rgb: RGB) -> RGB:
    """The ideal: ScanScope -> the built-in sRGB, perceptual, through Pillow's LittleCMS."""
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(SCANSCOPE_PROFILE)),
        ImageCms.ImageCmsProfile(io.BytesIO(_target_bytes())),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )
    return np.asarray(ImageCms.applyTransform(Image.fromarray(rgb), transform))


def jpeg_floor(ideal: RGB, tile: tuple[int, int], subsampling: int, rgb_colourspace: bool) -> RGB:
    """The ideal encoded once more, tile by tile, by Pillow at the fixture's quality."""
    out = np.empty_like(ideal)
    th, tw = tile
    for y in range(0, ideal.shape[0], th):
        for x in range(0, ideal.shape[1], tw):
            block = ideal[y : y + th, x : x + tw]
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(block)).save(
                buf, "JPEG", quality=QUALITY, subsampling=subsampling, keep_rgb=rgb_colourspace
            )
            out[y : y + th, x : x + tw] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def openslide_level0(path: Path) -> tuple[str, bytes | None, RGB]:
    import openslide
    from openslide import lowlevel

    with openslide.OpenSlide(str(path)) as slide:
        vendor = slide.properties.get("openslide.vendor", "")
        # the bytes OpenSlide read (color_profile.tobytes() is LittleCMS's re-serialisation)
        profile = lowlevel.read_icc_profile(slide._osr) if slide.color_profile else None
        w, h = slide.level_dimensions[0]
        rgb = np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"))
    return vendor, profile, rgb


def assert_on_the_floor(copy: RGB, ideal: RGB, floor: RGB) -> None:
    assert psnr(copy, ideal) >= psnr(floor, ideal) - 0.5, (psnr(copy, ideal), psnr(floor, ideal))
    assert mean_abs(copy, ideal) <= mean_abs(floor, ideal) * 1.1 + 0.1
    # and the conversion happened: the copy is far nearer the ideal than the original was
    assert mean_abs(copy, ideal) < mean_abs(floor, ideal) + 1.0


def tag_values(path: Path) -> list[dict[int, object]]:
    with tifffile.TiffFile(path) as tif:
        return [{t.code: t.value for t in page.tags} for page in tif.pages]


def assert_only_pixels_and_marks_changed(src: Path, out: Path, level0: int) -> None:
    before, after = tag_values(src), tag_values(out)
    assert len(before) == len(after)
    for index, (b, a) in enumerate(zip(before, after, strict=True)):
        added = set(a) - set(b)
        assert added <= ({TAG_RECORD, 34675} if index == level0 else set()), (index, added)
        for code in set(b) - OFFSET_TAGS - {34675}:
            assert np.array_equal(np.asarray(b[code]), np.asarray(a[code])), (index, code)
        if 34675 in a and index == level0:
            assert bytes(a[34675]) == _target_bytes()  # type: ignore[arg-type]


GENERIC_OPENSLIDE = [("jpeg", "ycbcr"), ("jpeg", "rgb"), ("lzw", None), ("none", None)]


@pytest.mark.parametrize(("compression", "photometric"), GENERIC_OPENSLIDE)
def test_generic_tiff_converts_and_opens_in_openslide_with_srgb(
    compression: str,
    photometric: str | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = write_generic_tiff(
        tmp_path / "in.tif",
        compression=compression,  # type: ignore[arg-type]
        photometric=photometric,  # type: ignore[arg-type]
        quality=QUALITY,
    )
    out = tmp_path / "out.tif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 0, err
    assert_only_pixels_and_marks_changed(src, out, level0=0)

    vendor, profile, original = openslide_level0(src)
    assert vendor == "generic-tiff" and profile == SCANSCOPE_PROFILE
    vendor, profile, copy = openslide_level0(out)
    assert vendor == "generic-tiff"
    assert profile == _target_bytes()
    ideal = littlecms(original)
    if compression == "jpeg":
        floor = jpeg_floor(
            ideal, (256, 256), 2 if photometric == "ycbcr" else 0, photometric == "rgb"
        )
        assert_on_the_floor(copy, ideal, floor)
    else:
        # lossless: the copy is LittleCMS's output, level for level
        assert int(np.abs(copy.astype(int) - ideal).max()) <= 1
    assert mean_abs(copy, ideal) * 3 < mean_abs(original, ideal)

    code, stdout, err = run(capsys, "verify", src, out)
    assert code == 0, stdout + err
    code, stdout, _ = run(capsys, "info", out, "--json")
    info = json.loads(stdout)
    assert info["wsi_format"] == "generic tiled TIFF" and info["applied"] is True
    assert info["applied_record"]["source_description"] == "ScanScope v1"
    code, _, err = run(capsys, "apply", out, tmp_path / "again.tif")
    assert code == 3
    assert_one_line_error(err, "already applied")


@pytest.mark.parametrize("psnr", [45.0, None], ids=["lossy", "lossless"])
@pytest.mark.parametrize("compression", ["jp2k-33005", "jp2k-33003"])
def test_generic_tiff_jpeg2000_converts_and_verifies(
    compression: str, psnr: float | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenSlide's generic-tiff driver does not decode Aperio's JPEG 2000 codes (it refuses the
    original too), so these are judged by verify's independent floor and read by tifffile.
    Lossless 33003 stores 8-bit YCbCr: its floor is that rounding, not zero."""
    src = write_generic_tiff(
        tmp_path / "in.tif",
        compression=compression,  # type: ignore[arg-type]
        j2k_psnr=psnr,
    )
    out = tmp_path / "out.tif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 0, err
    assert_only_pixels_and_marks_changed(src, out, level0=0)
    code, stdout, err = run(capsys, "verify", src, out, "--json")
    assert code == 0, stdout + err
    report = json.loads(stdout)
    assert report["ok"] is True and len(report["levels"]) == 3
    for level in report["levels"]:
        if level["floor_psnr_db"] is None:  # lossless 33005: exact
            assert level["psnr_db"] is None or level["psnr_db"] >= 50
        else:
            assert level["psnr_db"] >= level["floor_psnr_db"] - 0.5


def test_generic_tiff_keeps_a_stripped_preview_and_adds_the_profile_to_level0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stripped IFD is no level for OpenSlide: kept byte for byte. A slide without a profile
    takes --fallback-profile, and level 0 gains tag 34675 with the target."""
    src = write_generic_tiff(
        tmp_path / "in.tif", compression="jpeg", profile=None, stripped_thumbnail=True
    )
    out = tmp_path / "out.tif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 2
    assert_one_line_error(err, "no embedded ICC profile", "--fallback-profile")
    assert not out.exists()
    scanscope = tmp_path / "scanscope.icc"
    scanscope.write_bytes(SCANSCOPE_PROFILE)
    code, _, err = run(capsys, "apply", src, out, "--fallback-profile", scanscope)
    assert code == 0, err
    assert_only_pixels_and_marks_changed(src, out, level0=0)
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(out) as b:
        assert not a.pages[1].is_tiled
        assert a.pages[1].asarray().tobytes() == b.pages[1].asarray().tobytes()
        assert 34675 not in b.pages[1].tags
    _, profile, _ = openslide_level0(out)
    assert profile == _target_bytes()
    code, stdout, err = run(capsys, "verify", src, out, "--profile", scanscope)
    assert code == 0, stdout + err


def test_ventana_bif_converts_keeping_xmp_and_macro(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_ventana_bif(tmp_path / "in.bif", quality=QUALITY)
    out = tmp_path / "out.bif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 0, err
    with tifffile.TiffFile(src) as tif:
        descriptions = [p.description for p in tif.pages]
    level0 = next(i for i, d in enumerate(descriptions) if d.startswith("level=0"))
    assert level0 == 2
    assert_only_pixels_and_marks_changed(src, out, level0=level0)
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(out) as b:
        # XMP of IFD 0 (iScan) and of level 0 (EncodeInfo) byte-identical
        for i in (0, level0):
            assert bytes(a.pages[i].tags[700].value) == bytes(b.pages[i].tags[700].value)
        # the macro (another camera) and the grey probability mask: stored bytes unchanged
        for i in (0, 1):
            pa, pb = a.pages[i], b.pages[i]
            for (oa, ca), (ob, cb) in zip(
                zip(pa.dataoffsets, pa.databytecounts, strict=True),
                zip(pb.dataoffsets, pb.databytecounts, strict=True),
                strict=True,
            ):
                a.filehandle.seek(oa)
                b.filehandle.seek(ob)
                assert a.filehandle.read(ca) == b.filehandle.read(cb)
        # levels re-encoded with the same JPEGTables and sampling
        for i in range(level0, len(a.pages)):
            assert a.pages[i].jpegtables == b.pages[i].jpegtables
            assert a.pages[i].tags[530].value == b.pages[i].tags[530].value

    vendor, profile, original = openslide_level0(src)
    assert vendor == "ventana" and profile == SCANSCOPE_PROFILE
    vendor, profile, copy = openslide_level0(out)
    assert vendor == "ventana" and profile == _target_bytes()
    ideal = littlecms(original)
    # BIF tiles are 256x320 frames laid edge to edge without overlap here
    assert_on_the_floor(copy, ideal, jpeg_floor(ideal, (320, 256), 2, False))
    code, stdout, err = run(capsys, "verify", src, out)
    assert code == 0, stdout + err
    code, stdout, _ = run(capsys, "info", out, "--json")
    info = json.loads(stdout)
    assert info["wsi_format"] == "Ventana BIF" and info["applied"] is True
    roles = [i["role"] for i in info["ifds"]]
    assert roles[:3] == ["macro", "other", "level"]


def test_ventana_bif_with_overlapping_frames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Overlaps need nothing special: each pixel is converted alone, so OpenSlide stitches the
    copy exactly as the original, and the stitched image lands on the floor of its frames."""
    src = write_ventana_bif(tmp_path / "in.bif", overlap=(24, 16), model="iscan", quality=QUALITY)
    out = tmp_path / "out.bif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 0, err
    import openslide

    with openslide.OpenSlide(str(src)) as a, openslide.OpenSlide(str(out)) as b:
        assert a.level_dimensions == b.level_dimensions
        assert {k: v for k, v in a.properties.items() if k.startswith("ventana.")} == {
            k: v for k, v in b.properties.items() if k.startswith("ventana.")
        }
        assert set(b.associated_images) == {"macro", "thumbnail"}
    _, profile, original = openslide_level0(src)
    _, profile, copy = openslide_level0(out)
    assert profile == _target_bytes()
    ideal = littlecms(original)
    assert mean_abs(copy, ideal) * 3 < mean_abs(original, ideal)
    code, stdout, err = run(capsys, "verify", src, out)
    assert code == 0, stdout + err


def test_ventana_untiled_level_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 'level=' page in strips: refused naming the IFD, nothing written."""
    from tests.format_fixtures import real_crop

    src = tmp_path / "strips.bif"
    xmp = b'<iScan Magnification="20"/>'
    tifffile.imwrite(
        src,
        real_crop(256, 320),
        description="level=0 mag=20 quality=90",
        photometric="rgb",
        rowsperstrip=64,
        extratags=[(700, 1, len(xmp), xmp, True)],
        iccprofile=SCANSCOPE_PROFILE,
        metadata=None,
    )
    out = tmp_path / "out.bif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 2
    assert_one_line_error(err, "strips.bif", "IFD 0", "stored in strips")
    assert not out.exists()


def test_migrate_takes_svs_bif_and_generic_tiff_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import CMU_SMALL

    src_dir = tmp_path / "src"
    src_dir.mkdir()
    shutil.copyfile(CMU_SMALL, src_dir / "a.svs")
    write_ventana_bif(src_dir / "b.bif")
    write_generic_tiff(src_dir / "c.tif", compression="jpeg")
    tifffile.imwrite(src_dir / "figure.tif", np.zeros((8, 8, 3), np.uint8))  # not a slide
    scanscope = tmp_path / "scanscope.icc"
    scanscope.write_bytes(SCANSCOPE_PROFILE)
    dst = tmp_path / "dst"
    code, stdout, err = run(
        capsys,
        "migrate",
        src_dir,
        dst,
        "--workers",
        "1",
        "--fallback-profile",
        scanscope,
        "--verify",
    )
    assert code == 0, stdout + err
    assert sorted(p.name for p in dst.iterdir() if not p.name.startswith(".")) >= [
        "a.svs",
        "b.bif",
        "c.tif",
    ]
    assert not (dst / "figure.tif").exists()
    for name, fmt in (("b.bif", "Ventana BIF"), ("c.tif", "generic tiled TIFF")):
        code, stdout, _ = run(capsys, "info", dst / name, "--json")
        info = json.loads(stdout)
        assert info["wsi_format"] == fmt and info["applied"] is True


def test_bench_and_report_take_a_bif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_ventana_bif(tmp_path / "in.bif")
    code, stdout, err = run(capsys, "bench", src, "--json")
    assert code == 0, err
    bench = json.loads(stdout)
    assert bench["segments_to_rewrite"] == 17 and bench["stages"]["decode"]["median_ms"] > 0
    assert bench["level0"]["tile_width"] == 256 and bench["profile_origin"] == "embedded (IFD 2)"
    out = tmp_path / "out.bif"
    assert run(capsys, "apply", src, out)[0] == 0
    code, stdout, err = run(capsys, "report", src, out, "-o", tmp_path / "report")
    assert code == 0, stdout + err
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Ventana" in html or "out.bif" in html


def test_subifd_pyramid_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Levels in SubIFDs (tag 330) are what tifffile, libvips and Bio-Formats read; converting
    only the main IFD would leave them in the scanner's colours under an sRGB tag."""
    from tests.format_fixtures import real_crop

    src = tmp_path / "subifds.tif"
    rgb = real_crop(512, 512)
    with tifffile.TiffWriter(src) as tif:
        tif.write(rgb, tile=(256, 256), subifds=1, iccprofile=SCANSCOPE_PROFILE, metadata=None)
        tif.write(rgb[::2, ::2], tile=(256, 256), subfiletype=1, metadata=None)
    out = tmp_path / "out.tif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 2
    assert_one_line_error(err, "subifds.tif", "SubIFDs (tag 330)")
    assert not out.exists()


def test_a_kept_page_sharing_bytes_with_a_converted_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_generic_tiff(tmp_path / "in.tif", compression="jpeg", stripped_thumbnail=True)
    with tifffile.TiffFile(src, mode="r+b") as tif:
        tile0 = (tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0])
        strips = tif.pages[1]
        n = len(strips.dataoffsets)
        # the preview's first strip made the very bytes of level 0's first tile
        strips.tags["StripOffsets"].overwrite((tile0[0],) + tuple(strips.dataoffsets[1:n]))
        strips.tags["StripByteCounts"].overwrite((tile0[1],) + tuple(strips.databytecounts[1:n]))
    out = tmp_path / "out.tif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 2
    assert_one_line_error(err, "IFD 1", "segment 0 of IFD 0, which is converted")
    assert not out.exists()


def test_generic_profile_only_on_a_lower_level_is_no_embedded_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenSlide reads a generic TIFF's profile from level 0 only; one on level 1 alone says
    nothing of level 0, so svsicc asks rather than guess."""
    from tests.format_fixtures import real_crop

    src = tmp_path / "l1.tif"
    rgb = real_crop(512, 512)
    with tifffile.TiffWriter(src) as tif:
        tif.write(rgb, tile=(256, 256), compression="jpeg", metadata=None)
        tif.write(
            rgb[::2, ::2],
            tile=(256, 256),
            compression="jpeg",
            subfiletype=1,
            iccprofile=SCANSCOPE_PROFILE,
            metadata=None,
        )
    out = tmp_path / "out.tif"
    code, _, err = run(capsys, "apply", src, out)
    assert code == 2
    assert_one_line_error(err, "no embedded ICC profile")
    assert not out.exists()
