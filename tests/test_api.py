"""The public Python API: what ``import svsicc`` exposes, its documentation, that it stays
light, and errors whose option words fit the reader (Python keywords or command-line options).
"""

from __future__ import annotations

import inspect
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import svsicc
from svsicc.exceptions import OPTIONS, Audience, OutputError, ProfileError, SvsiccError, render

from .conftest import CMU_SMALL, SCANSCOPE

FUNCTIONS = {
    "apply": ("svsicc.api", "apply"),
    "verify": ("svsicc.api", "verify"),
    "info": ("svsicc.api", "info"),
    "report": ("svsicc.api", "report"),
    "migrate": ("svsicc.archive.api", "migrate"),
}
TYPES = [
    "ApplyResult",
    "PageResult",
    "VerifyResult",
    "SlideInfo",
    "ReportResult",
    "MigrationReport",
    "IccProfile",
    "Intent",
    "SvsiccError",
    "TiffFormatError",
    "UnsupportedLayoutError",
    "TileDecodeError",
    "ProfileError",
    "AlreadyAppliedError",
    "OutputError",
    "VerificationError",
]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_each_command_is_a_documented_function_of_the_package(name: str) -> None:
    module, attribute = FUNCTIONS[name]
    function = getattr(svsicc, name)
    assert function is getattr(sys.modules[module], attribute)
    assert name in svsicc.__all__
    doc = inspect.getdoc(function) or ""
    assert "Returns:" in doc and "Raises:" in doc, name


def test_result_and_error_types_are_exported() -> None:
    for name in TYPES:
        assert name in svsicc.__all__
        assert isinstance(getattr(svsicc, name), type), name
    for name in TYPES[8:]:
        assert issubclass(getattr(svsicc, name), svsicc.SvsiccError)
    assert set(svsicc.__all__) <= set(dir(svsicc))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = svsicc.nothing  # type: ignore[attr-defined]


def test_import_is_light_and_names_survive_any_import_order() -> None:
    """``import svsicc`` loads no heavy module; importing the submodules that share the public
    functions' names (before or after the package's attributes are read) leaves the functions
    in place."""
    code = "\n".join(
        [
            "import sys, svsicc",
            "heavy = {'numpy', 'PIL', 'imagecodecs', 'svsicc.convert.apply',"
            " 'svsicc.colour.transform'}",
            "assert not heavy & set(sys.modules), heavy & set(sys.modules)",
            "import svsicc.check.verify, svsicc.slide_info, svsicc.check.report,"
            " svsicc.archive.migrate, svsicc.convert.apply",
            "from svsicc.check.verify import Margins",
            "from svsicc import info, apply",
            "names = ('apply', 'verify', 'info', 'report', 'migrate')",
            "assert all(callable(getattr(svsicc, n)) for n in names)",
            "assert info.__name__ == 'info' and apply.__module__ == 'svsicc.api'",
            "print('ok')",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


# -- option words per audience -----------------------------------------------------------------


def test_python_callers_get_keyword_arguments_and_the_cli_gets_options(tmp_path: Path) -> None:
    output = tmp_path / "o.svs"
    output.write_bytes(b"keep me")
    with pytest.raises(OutputError) as raised:
        svsicc.apply(CMU_SMALL, output, profile=SCANSCOPE)
    error = raised.value
    assert str(error) == f"{output}: output exists (pass overwrite=True to replace it)"
    assert (
        error.one_line(Audience.CLI) == f"{output}: OUTPUT exists (pass --overwrite to replace it)"
    )
    assert output.read_bytes() == b"keep me"
    # The template survives a process boundary (errors come back from workers pickled).
    again = pickle.loads(pickle.dumps(error))
    assert again.one_line(Audience.CLI) == error.one_line(Audience.CLI)
    assert str(again) == str(error)


def test_the_same_slide_without_profile_in_both_words(tmp_path: Path) -> None:
    source = tmp_path / "cmu.svs"
    shutil.copyfile(CMU_SMALL, source)
    with pytest.raises(ProfileError) as raised:
        svsicc.apply(source, tmp_path / "o.svs")
    python = "(pass profile=<ICC file> (or fallback_profile=<ICC file>) with the scanner's profile)"
    cli = "(pass --profile FILE (or --fallback-profile FILE) with the scanner's profile)"
    assert python in str(raised.value)
    assert cli in raised.value.one_line(Audience.CLI)


@pytest.mark.parametrize("audience", list(Audience))
def test_every_option_reference_renders(audience: Audience) -> None:
    for name, option in OPTIONS.items():
        spelt = render(f"use {{{name}}} here", audience)
        assert spelt == f"use {option.spelt_for(audience)} here"
        assert "{" not in spelt
    # Braces that are not option references (a file name, a value) are left alone.
    assert render("{not_an_option} and {'a': 1}", audience) == "{not_an_option} and {'a': 1}"


def test_cli_spelling_reaches_stderr(tmp_path: Path) -> None:
    source = tmp_path / "cmu.svs"
    shutil.copyfile(CMU_SMALL, source)
    done = subprocess.run(
        [sys.executable, "-m", "svsicc.cli", "apply", str(source), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"svsicc: {source}: OUTPUT is the input file (choose another OUTPUT, or pass --in-place)\n"
    )


# -- migrate from Python -------------------------------------------------------------------------


def test_migrate_from_python(tmp_path: Path) -> None:
    source_dir = tmp_path / "src"
    (source_dir / "lab").mkdir(parents=True)
    shutil.copyfile(CMU_SMALL, source_dir / "lab" / "cmu.svs")
    with pytest.raises(SvsiccError, match=r"^workers must be at least 1, not 0$"):
        svsicc.migrate(source_dir, tmp_path / "dst", workers=0)
    with pytest.raises(OutputError, match="destination_dir is source_dir"):
        svsicc.migrate(source_dir, source_dir)
    report = svsicc.migrate(source_dir, tmp_path / "dst", profile=SCANSCOPE, workers=1)
    assert isinstance(report, svsicc.MigrationReport)
    assert [(r.path, r.status) for r in report.this_run] == [("lab/cmu.svs", "done")]
    assert report.exit_code == 0
    copy = svsicc.info(tmp_path / "dst" / "lab" / "cmu.svs")
    assert copy.applied is not None and copy.applied.source_description == "ScanScope v1"
    # The profile policy and the verification, as on the command line: CMU-1-Small-Region
    # embeds no profile, so the fallback is used, and each copy is verified before it lands.
    report = svsicc.migrate(
        source_dir, tmp_path / "dst2", fallback_profile=SCANSCOPE, verify=8, workers=1
    )
    assert [(r.path, r.status, r.profile_origin) for r in report.this_run] == [
        ("lab/cmu.svs", "done", "--fallback-profile")
    ]
