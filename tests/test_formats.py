"""Other scanners' TIFFs: ``info`` describes them, ``apply`` refuses those svsicc does not convert
naming the format, and takes generic tiled TIFF and Ventana BIF through their drivers.

The fixtures carry only what real NDPI, Philips and Ventana files are recognised by (written by
tifffile from real CMU pixels), under a neutral file name, so the decision is the content's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.synthetic import ForeignKind, load_real_pixels, write_foreign_wsi

from .conftest import DATA, assert_one_line_error
from .conftest import run_cli as run

NAMES: dict[ForeignKind, str] = {
    "ndpi": "Hamamatsu NDPI",
    "philips": "Philips TIFF",
    "ventana": "Ventana BIF",
    "tiled": "generic tiled TIFF",
    "plain": "plain TIFF",
}


REFUSED: list[ForeignKind] = ["ndpi", "philips", "plain"]


@pytest.fixture(params=REFUSED)
def foreign(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    kind: ForeignKind = request.param
    rgb = load_real_pixels("CMU-Embed.tif")[:256, :320]
    icc = (DATA / "sRGB-v4.icc").read_bytes() if kind in ("philips", "plain") else None
    # Every fixture is named like an Aperio slide: only the content may decide.
    return write_foreign_wsi(tmp_path / "slide.svs", rgb, kind, icc=icc), kind


def test_info_describes_any_tiff(
    foreign: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, kind = foreign
    code, stdout, err = run(capsys, "info", path)
    assert code == 0, err
    assert f"format: {NAMES[kind]}" in stdout
    assert "svsicc cannot convert it: svsicc converts Aperio SVS, generic tiled TIFF" in stdout
    assert "0:       320x256" in stdout and "1:       160x128" in stdout
    layout = "stripped     320x256 x1 " if kind in ("ndpi", "plain") else "tiled     128x128 x6 "
    assert layout in stdout
    with_profile = kind in ("philips", "plain")
    assert ("profile: 'sRGB', 480 bytes, on IFD 0" in stdout) is with_profile
    assert ("profile: none embedded" in stdout) is not with_profile
    code, stdout, _ = run(capsys, "info", path, "--json")
    info = json.loads(stdout)
    assert info["wsi_format"] == NAMES[kind] and info["convertible"] is False
    assert [(i["width"], i["compression"]) for i in info["ifds"]] == [(320, "JPEG"), (160, "JPEG")]
    assert (info["profile"] is not None) is with_profile


def test_apply_refuses_naming_the_format(
    foreign: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, kind = foreign
    out = tmp_path / "out.svs"
    code, _, err = run(capsys, "apply", path, out, "--profile", DATA / "sRGB-v4.icc")
    assert code == 2
    assert_one_line_error(err, "slide.svs", f"svsicc does not convert a {NAMES[kind]}")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["ventana", "tiled"])
def test_converted_formats_are_read_by_their_driver(
    kind: ForeignKind, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The minimal Ventana and generic fixtures (one tiled level each, a second IFD) are read by
    their drivers: info names the format and says the file is convertible."""
    rgb = load_real_pixels("CMU-Embed.tif")[:256, :320]
    path = write_foreign_wsi(tmp_path / "slide.svs", rgb, kind)
    code, stdout, err = run(capsys, "info", path, "--json")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["wsi_format"] == NAMES[kind] and info["convertible"] is True
    assert info["ifds"][0]["role"] == "level" and info["applied"] is False


def test_info_on_an_aperio_slide_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "info", DATA / "CMU-1-Small-Region.svs", "--json")
    assert code == 0
    info = json.loads(stdout)
    assert info["wsi_format"] == "Aperio SVS" and info["convertible"] is True


def test_info_on_an_aperio_file_svsicc_refuses_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An Aperio description on a stripped IFD 0: described, with the reason apply gives."""
    import tifffile

    path = tmp_path / "stripped.svs"
    rgb = load_real_pixels("CMU-Embed.tif")[:64, :64]
    tifffile.imwrite(path, rgb, photometric="rgb", description="Aperio Image Library v12.4.0")
    code, stdout, _ = run(capsys, "info", path)
    assert code == 0
    assert "format: Aperio SVS" in stdout
    assert "svsicc cannot convert it: IFD 0 is not tiled" in stdout
