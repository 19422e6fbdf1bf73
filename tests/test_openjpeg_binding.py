"""Loading svsicc's OpenJPEG binding: which libraries it takes, what it refuses and why, what a
slide needing it does without it, and the library version in the applied mark.

Loader cases use real shared objects: the OpenJPEG imagecodecs ships, the C maths library (a
real library that is not OpenJPEG) and a name that does not exist.
"""

from __future__ import annotations

import ctypes.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import svsicc
from svsicc.codecs import openjpeg
from svsicc.codecs import openjpeg_library as loader
from svsicc.exceptions import UnsupportedLayoutError
from svsicc.slide_info import format_info, slide_info
from tests.synthetic import load_real_pixels, preset, write_slide

from .conftest import SCANSCOPE

NOT_OPENJPEG = ctypes.util.find_library("m") or "libm.so.6"


@pytest.fixture(scope="module")
def real_library() -> str:
    """The path of the OpenJPEG the binding finds without any override."""
    return loader.load(loader.candidates()).path


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The binding's cached library is forgotten before and after, so a test's environment
    decides what is loaded and later tests load the default again."""
    monkeypatch.delenv(loader.ENV_LIBRARY, raising=False)
    openjpeg._loaded.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    openjpeg._loaded.cache_clear()


def test_a_missing_name_is_refused_naming_it() -> None:
    with pytest.raises(loader.OpenJpegUnavailable, match=r"no-such-openjp2\.so: cannot load"):
        loader.load(["no-such-openjp2.so"])


def test_a_real_library_that_is_not_openjpeg_is_refused() -> None:
    with pytest.raises(loader.OpenJpegUnavailable, match=r"not OpenJPEG \(no opj_version\)"):
        loader.load([NOT_OPENJPEG])


def test_a_version_outside_the_range_is_refused(real_library: str) -> None:
    version = loader.load([real_library]).version
    with pytest.raises(loader.OpenJpegUnavailable, match=rf"OpenJPEG {version}, need 9\.1"):
        loader.load([real_library], minimum=(9, 1), below=(10, 0))
    with pytest.raises(loader.OpenJpegUnavailable, match="below 2.0"):
        loader.load([real_library], minimum=(1, 0), below=(2, 0))


def test_the_first_usable_candidate_wins_after_the_refused_ones(real_library: str) -> None:
    found = loader.load(["no-such-openjp2.so", NOT_OPENJPEG, real_library])
    assert found.path == real_library
    assert loader.parse_version(found.version) >= (2, 1, 0)
    # The bundled copies carry the version in their file name (libopenjp2-<hash>.so.2.5.4).
    assert Path(real_library).name.endswith(found.version)


def test_every_reason_is_listed_when_nothing_loads() -> None:
    with pytest.raises(loader.OpenJpegUnavailable) as raised:
        loader.load(["no-such-openjp2.so", NOT_OPENJPEG])
    assert "no-such-openjp2.so: cannot load" in str(raised.value)
    assert f"{NOT_OPENJPEG}: not OpenJPEG" in str(raised.value)


def test_the_environment_override_is_the_only_candidate(
    fresh_loader: pytest.MonkeyPatch, real_library: str
) -> None:
    fresh_loader.setenv(loader.ENV_LIBRARY, real_library)
    assert loader.candidates() == [real_library]
    assert openjpeg.version() == loader.load([real_library]).version
    openjpeg._loaded.cache_clear()
    fresh_loader.setenv(loader.ENV_LIBRARY, NOT_OPENJPEG)
    with pytest.raises(loader.OpenJpegUnavailable) as raised:
        openjpeg.library()
    # No silent fall-back to the bundled copy: the message names the variable and its value.
    assert str(raised.value) == (
        f"no usable OpenJPEG library: {loader.ENV_LIBRARY}={NOT_OPENJPEG}: "
        "not OpenJPEG (no opj_version)"
    )


def test_without_override_bundled_copies_come_before_system_names() -> None:
    found = loader.candidates()
    names = loader.system_names()
    assert set(names) <= set(found)
    assert all(found.index(n) > 0 for n in names)  # imagecodecs' copy is installed here


@pytest.mark.parametrize(
    ("system", "first"),
    [("Linux", "libopenjp2.so.7"), ("Darwin", "libopenjp2.7.dylib"), ("Windows", "openjp2.dll")],
)
def test_system_names_per_platform(system: str, first: str) -> None:
    assert loader.system_names(system)[0] == first


@pytest.mark.parametrize(
    ("text", "number"),
    [("2.5.4", (2, 5, 4)), ("2.1", (2, 1, 0)), ("2.3.1-dev", (2, 3, 1)), ("", None), ("x", None)],
)
def test_parse_version(text: str, number: tuple[int, int, int] | None) -> None:
    assert loader.parse_version(text) == number


# -- a slide with and without the binding --------------------------------------------------------


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real CMU pixels as 33003 with 4:2:2 chroma (needs the binding), 33003 4:4:4 and 33005
    (lossy: through the binding when it loads, else imagecodecs) and lossless 33005
    (imagecodecs alone), written while the binding is available."""
    folder = tmp_path_factory.mktemp("binding")
    crop = np.ascontiguousarray(load_real_pixels()[1150:1406, 640:1152])
    specs = {
        "422": preset("jp2k-33003", j2k_chroma=(2, 1), downsamples=(1,)),
        "444": preset("jp2k-33003", downsamples=(1,)),
        "rgb": preset("jp2k-33005", downsamples=(1,)),
        "lossless": preset("jp2k-33005", j2k_lossless=True, downsamples=(1,)),
    }
    return {name: write_slide(folder / f"{name}.svs", crop, spec) for name, spec in specs.items()}


def test_without_a_library_only_subsampled_tiles_are_refused(
    fresh_loader: pytest.MonkeyPatch, slides: dict[str, Path], tmp_path: Path
) -> None:
    fresh_loader.setenv(loader.ENV_LIBRARY, str(tmp_path / "missing-libopenjp2.so.7"))
    output = tmp_path / "422.svs"
    with pytest.raises(UnsupportedLayoutError) as raised:
        svsicc.apply(slides["422"], output, profile=SCANSCOPE, workers=1)
    line = raised.value.one_line()
    assert line.startswith(f"{slides['422']}, IFD 0, tile 0: a JPEG 2000 tile with subsampled")
    assert f"{loader.ENV_LIBRARY}={tmp_path / 'missing-libopenjp2.so.7'}: cannot load" in line
    assert f"(set {loader.ENV_LIBRARY} to the path of an OpenJPEG 2.1 or later" in line
    assert "\n" not in line
    assert not output.exists() and list(tmp_path.iterdir()) == []
    for name in ("444", "rgb"):
        # Lossy tiles fall back to imagecodecs' target PSNR, searched per tile.
        copy = tmp_path / f"{name}.svs"
        result = svsicc.apply(slides[name], copy, profile=SCANSCOPE, workers=1)
        assert result.segments_rewritten >= 2 and not result.bad_segments
        assert svsicc.verify(slides[name], copy, profile=SCANSCOPE).ok
        info = slide_info(copy)
        assert info.applied is not None and info.applied.by == f"svsicc {svsicc.__version__}"


@pytest.mark.parametrize("name", ["422", "444", "rgb"])
def test_the_mark_names_the_library_that_encoded(
    slides: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """Subsampled tiles need the binding; lossy ones are encoded through it when it loads."""
    svsicc.apply(slides[name], tmp_path / "copy.svs", profile=SCANSCOPE, workers=1)
    with_binding = slide_info(tmp_path / "copy.svs")
    assert with_binding.applied is not None
    expected = f"svsicc {svsicc.__version__} with OpenJPEG {openjpeg.version()}"
    assert with_binding.applied.by == expected
    assert f"by {expected}" in format_info(with_binding)


def test_the_mark_names_no_library_when_imagecodecs_encoded(
    slides: dict[str, Path], tmp_path: Path
) -> None:
    svsicc.apply(slides["lossless"], tmp_path / "lossless.svs", profile=SCANSCOPE, workers=1)
    without = slide_info(tmp_path / "lossless.svs")
    assert without.applied is not None and without.applied.by == f"svsicc {svsicc.__version__}"
