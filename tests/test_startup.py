"""What a run pays before its first tile: the modules apply imports, and the LittleCMS reading of
a profile that start-up does without Pillow's Python layer."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import ImageCms

from svsicc.colour import transform
from svsicc.colour.transform import IccProfile
from svsicc.exceptions import ProfileError

from .conftest import CMU_SMALL, DATA, SCANSCOPE

PROFILES = sorted(DATA.glob("*.icc"))


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_description_is_what_imagecms_reads(path: Path) -> None:
    data = path.read_bytes()
    expected = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(data)))
    assert transform._littlecms_description(data) == expected.strip()


def test_littlecms_version_is_what_pillow_reports() -> None:
    from PIL import features

    assert transform._littlecms_version() == str(features.version("littlecms2"))


def test_a_profile_littlecms_cannot_read_is_refused() -> None:
    data = bytearray((DATA / "sRGB-v2-magic.icc").read_bytes())
    data[128:132] = (0xFFFF).to_bytes(4, "big")  # a tag count running past the end
    with pytest.raises(ProfileError, match="LittleCMS cannot read the ICC profile"):
        IccProfile.from_bytes(bytes(data), "broken.icc")


def test_apply_runs_without_pillow_image_numpy_random_or_tempfile(tmp_path: Path) -> None:
    """A run whose table is cached needs none of them: each cost start-up time (PIL.Image about
    15 ms, numpy.random 8 ms, tempfile 5 ms here) and a regression would go unseen otherwise."""
    script = (
        "import json, sys\n"
        "from svsicc.cli.main import main\n"
        f"code = main(['apply', {str(CMU_SMALL)!r}, {str(tmp_path / 'out.svs')!r}, "
        f"'--profile', {str(SCANSCOPE)!r}, '--workers', '1', '--quiet'])\n"
        "print(json.dumps([code, sorted(m for m in ('PIL.Image', 'PIL.ImageCms', "
        "'numpy.random', 'tempfile', 'importlib.resources') if m in sys.modules)]))\n"
    )
    # The first process builds the table (Pillow's LittleCMS); the second finds it cached.
    for _ in range(2):
        (tmp_path / "out.svs").unlink(missing_ok=True)
        done = subprocess.run(
            [sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0
    assert loaded == []
