"""Shared fixtures: real files from tests/data and helpers that read slides the way users do."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
SCANSCOPE = DATA / "ScanScope_v1_from_CMU-Embed.icc"
APERIO_SRGB = DATA / "Aperio-embedded_sRGB_IEC61966-2.1_from_tcga-cr-7395.icc"
CMU_SMALL = DATA / "CMU-1-Small-Region.svs"
CMU_EMBED = DATA / "CMU-Embed.tif"
OPENSLIDE_SMALL = DATA / "openslide-python_small.svs"
TCGA = DATA / "tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture
def small_copy(tmp_path: Path) -> Path:
    """openslide-python's small.svs copied to tmp_path/in/ (for --in-place and the like)."""
    copy = tmp_path / "in" / "small.svs"
    copy.parent.mkdir()
    shutil.copyfile(OPENSLIDE_SMALL, copy)
    return copy


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """svsicc's main() in-process: (exit code, stdout, stderr)."""
    from svsicc.cli.main import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("svsicc: ")
    assert "Traceback" not in err and "unexpected error" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def segment_bytes(path: Path, page: int) -> list[bytes]:
    """The stored bytes of every tile or strip of IFD ``page``, read with tifffile."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        fh = tif.filehandle
        out = []
        for offset, count in zip(p.dataoffsets, p.databytecounts, strict=True):
            fh.seek(offset)
            out.append(fh.read(count))
        return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def openslide_levels(path: Path) -> list[np.ndarray]:
    """Every level as OpenSlide renders it (RGB), the pixels users see."""
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        return [
            np.asarray(slide.read_region((0, 0), level, size).convert("RGB"))
            for level, size in enumerate(slide.level_dimensions)
        ]


def openslide_thumbnail(path: Path) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        return np.asarray(slide.associated_images["thumbnail"].convert("RGB"))


@pytest.fixture(scope="session")
def scanscope_bytes() -> bytes:
    return SCANSCOPE.read_bytes()


@pytest.fixture(autouse=True)
def _private_table_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One colour-table cache for the whole session, never the user's ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "svsicc-cache"
    monkeypatch.setenv("SVSICC_CACHE_DIR", str(cache))
