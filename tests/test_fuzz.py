"""A seeded, bounded fuzz of ``svsicc apply`` (issue 7).

A few hundred mutants of small real-bytes slides (tests/data/openslide-python_small.svs and small
synthetic AT2 and GT450 slides made of real pixels): truncations, byte flips and "interesting"
values in the header, the IFD tables, the tag values and the tile data, each located through
svsicc's own parser. Every mutant goes through the command line entry point in-process, and each
must end in one of two ways:

* a clear error: exit 2 or 3, exactly one line on stderr (file descriptor 2, so C libraries'
  noise counts too) starting with ``svsicc:``, never "unexpected error" or a traceback; or
* a valid output: exit 0, nothing on stderr, the copy opens with tifffile, every page whose
  input tifffile can decode decodes in the output too, and svsicc reads its own output back.

In both cases the output folder holds nothing else (no temporary file) and the input's sha256 is
unchanged. Counts are printed (``pytest -s``); anything else fails the test with examples.
``scripts/fuzz_atheris.py`` runs the same check for longer, outside CI.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

from svsicc.cli.main import main
from svsicc.colour.transform import ColourTable
from svsicc.slide_info import slide_info
from svsicc.tiff import file as tiff
from tests.synthetic import DATA_DIR, load_real_pixels, preset, write_slide

SEED = 20250607
CASES = {"openslide-small": 80, "at2": 110, "gt450": 70, "at2-bigtiff": 60}
# It takes about 30 s here; the bound only catches a hang or a runaway allocation.
TIME_BUDGET = 120.0
SCANSCOPE = DATA_DIR / "ScanScope_v1_from_CMU-Embed.icc"
# A small embedded profile: flips rarely land in it, and a mutated one that still parses costs
# one colour-table build (about a second) rather than many.
EMBEDDED = (DATA_DIR / "AdobeCompat-v2.icc").read_bytes()


@dataclass(frozen=True)
class Region:
    """Byte ranges of one kind in a slide, where mutations are aimed."""

    name: str
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    regions: tuple[Region, ...]
    entries: tuple[tuple[int, int], ...]  # (entry offset, classic/BigTIFF entry size)
    extra_args: tuple[str, ...]


def describe(name: str, path: Path, extra_args: tuple[str, ...]) -> Seed:
    """The regions of ``path`` that mutations aim at, found with svsicc's parser."""
    data = path.read_bytes()
    with tiff.TiffReader(path) as reader:
        st = reader.structure
        header = (0, 16 if st.bigtiff else 8)
        tables = tuple((ifd.offset, ifd.end) for ifd in st.ifds)
        values: list[tuple[int, int]] = []
        segments: list[tuple[int, int]] = []
        segment_heads: list[tuple[int, int]] = []
        entries = []
        for ifd in st.ifds:
            for e in ifd.entries.values():
                entries.append((e.entry_offset, st.entry_size))
                if not e.inline and e.tag != tiff.TAG_ICC_PROFILE:
                    values.append((e.value_offset, e.value_offset + e.nbytes))
            for offsets_tag, counts_tag in tiff.SEGMENT_TAG_PAIRS.items():
                offsets = reader.ints(ifd, offsets_tag) or ()
                counts = reader.ints(ifd, counts_tag) or ()
                for off, cnt in zip(offsets, counts, strict=False):
                    if cnt:
                        segments.append((off, off + cnt))
                        segment_heads.append((off, off + min(cnt, 40)))
    regions = (
        Region("header", (header,)),
        Region("ifd", tables),
        Region("value", tuple(values)),
        Region("segment head", tuple(segment_heads)),
        Region("segment", tuple(segments)),
    )
    return Seed(name, data, tuple(r for r in regions if r.ranges), tuple(entries), extra_args)


INTERESTING_32 = (0, 1, 2, 7, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def mutate(seed: Seed, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutant of ``seed`` and a short description of what was done."""
    data = bytearray(seed.data)
    kind = rng.choice(["truncate", "flip", "flip", "flip", "entry", "entry"])
    if kind == "truncate":
        cut = int(rng.integers(0, len(data)))
        return f"truncate at {cut}", bytes(data[:cut])
    if kind == "entry":
        offset, size = seed.entries[int(rng.integers(len(seed.entries)))]
        # Classic entry: tag(2) type(2) count(4) value(4); BigTIFF: counts and values of 8.
        field = rng.choice(["type", "count", "value"])
        wide = size == 20
        position = offset + {"type": 2, "count": 4, "value": 12 if wide else 8}[field]
        if field == "type":
            value = int(rng.choice([0, 1, 2, 3, 4, 7, 13, 16, 17, 99]))
            struct.pack_into("<H", data, position, value)
        else:
            choices = [*INTERESTING_32, len(data), len(data) - 1, len(data) // 2]
            value = int(rng.choice(choices))
            struct.pack_into("<Q" if wide else "<I", data, position, value)
        return f"entry at {offset}: {field} = {value}", bytes(data)
    region = seed.regions[int(rng.integers(len(seed.regions)))]
    start, stop = region.ranges[int(rng.integers(len(region.ranges)))]
    flips = []
    for _ in range(int(rng.integers(1, 4))):
        position = int(rng.integers(start, stop))
        data[position] ^= int(rng.integers(1, 256))
        flips.append(position)
    return f"flip {region.name} at {flips}", bytes(data)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "valid output", "clear error", "anything else"
    detail: str


def check_one(
    source: Path, out_dir: Path, extra_args: tuple[str, ...], run: Callable[..., tuple[int, str]]
) -> Outcome:
    """Apply ``source`` into the empty ``out_dir`` and judge the result."""
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    output = out_dir / "out.svs"
    code, err = run("apply", str(source), str(output), "--quiet", "--workers", "1", *extra_args)
    if hashlib.sha256(source.read_bytes()).hexdigest() != before:
        return Outcome("anything else", "the input changed")
    left = sorted(p.name for p in out_dir.iterdir())
    lines = err.strip().splitlines()
    if code in (2, 3):
        if left:
            return Outcome("anything else", f"error but files left: {left}")
        if len(lines) != 1 or not lines[0].startswith("svsicc: "):
            return Outcome("anything else", f"error output not one line: {err!r}")
        if "unexpected error" in err or "Traceback" in err:
            return Outcome("anything else", lines[0])
        # Grouped by what is wrong, not where: numbers become N.
        return Outcome("clear error", re.sub(r"\d+", "N", lines[0].split(": ")[-1])[:80])
    if code != 0:
        return Outcome("anything else", f"exit {code}: {err!r}")
    if left != ["out.svs"] or err:
        return Outcome("anything else", f"success but files {left}, stderr {err!r}")
    problem = output_problem(source, output)
    output.unlink()
    if problem:
        return Outcome("anything else", problem)
    return Outcome("valid output", "")


def output_problem(source: Path, output: Path) -> str | None:
    """Why ``output`` is not a valid copy of ``source``, or None.

    tifffile is the yardstick only where it reads the input: a mutant tifffile itself cannot
    open (or a page it cannot decode) owes nothing to svsicc.
    """
    try:
        slide_info(output)
    except Exception as exc:  # noqa: BLE001 - any failure to read our own output is the finding
        return f"svsicc cannot read its output: {exc}"
    try:
        with tifffile.TiffFile(source) as tin:
            pages_in = len(tin.pages)
            decodable = [i for i, page in enumerate(tin.pages) if _decodes(page)]
    except Exception:  # noqa: BLE001
        return None
    try:
        with tifffile.TiffFile(output) as tout:
            if len(tout.pages) != pages_in:
                return f"{pages_in} pages in, {len(tout.pages)} out"
            for index in decodable:
                tout.pages[index].asarray()
    except Exception as exc:  # noqa: BLE001
        return f"tifffile reads the input but not the output: {type(exc).__name__}: {exc}"
    return None


def _decodes(page: tifffile.TiffPage | tifffile.TiffFrame) -> bool:
    """Whether tifffile decodes the page (not tried beyond 64 Mpx: a mutated ImageLength can
    make tifffile allocate gigabytes for a page svsicc reads with another geometry)."""
    try:
        if int(np.prod(page.shape, dtype=np.int64)) > 1 << 26:
            return False
        page.asarray()
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    folder = tmp_path_factory.mktemp("fuzz-seeds")
    pixels = np.ascontiguousarray(load_real_pixels()[1200:1584, 900:1412])
    at2 = write_slide(
        folder / "at2.svs", pixels[:, :480],
        preset("at2", profile=EMBEDDED, downsamples=(1, 2), tile_size=240, with_macro=False),
    )  # fmt: skip
    gt450 = write_slide(
        folder / "gt450.svs", pixels,
        preset("gt450", profile=EMBEDDED, downsamples=(1,), with_label=False, with_macro=False),
    )  # fmt: skip
    big = write_slide(
        folder / "at2-bigtiff.svs", pixels[:240, :480],
        preset("at2", profile=EMBEDDED, downsamples=(1,), bigtiff=True, with_label=False,
               with_macro=False),
    )  # fmt: skip
    small = Path(shutil.copyfile(DATA_DIR / "openslide-python_small.svs", folder / "small.svs"))
    return [
        describe("openslide-small", small, ("--profile", str(SCANSCOPE))),
        describe("at2", at2, ()),
        describe("gt450", gt450, ()),
        describe("at2-bigtiff", big, ()),
    ]


@pytest.fixture
def fast_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load each colour table once per test instead of once per mutant (about 30 ms each).

    The table is LittleCMS's transform for (source, target, intent), whatever the slide; the
    fuzz is about the file, so reusing the loaded table changes nothing it checks.
    """
    loaded: dict[tuple[str, str, int], ColourTable] = {}
    original = ColourTable.load_or_build.__func__  # type: ignore[attr-defined]

    def cached(cls: type[ColourTable], source, target, intent, cache=True):  # type: ignore[no-untyped-def]
        key = (source.sha256, target.sha256, int(intent))
        if key not in loaded:
            loaded[key] = original(cls, source, target, intent, cache)
        return loaded[key]

    monkeypatch.setattr(ColourTable, "load_or_build", classmethod(cached))


def test_fuzz_apply(
    seeds: list[Seed],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    fast_tables: None,
) -> None:
    rng = np.random.default_rng(SEED)

    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capfd.readouterr().err

    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    per_seed: dict[str, Counter[str]] = {}
    others: list[str] = []
    started = time.monotonic()
    case = 0
    for seed in seeds:
        per_seed[seed.name] = Counter()
        for _ in range(CASES[seed.name]):
            case += 1
            what, data = mutate(seed, rng)
            folder = tmp_path / f"case{case}"
            (folder / "in").mkdir(parents=True)
            (folder / "out").mkdir()
            source = folder / "in" / f"{seed.name}.svs"
            source.write_bytes(data)
            args = seed.extra_args + (("--on-bad-tile", "keep") if case % 3 == 0 else ())
            outcome = check_one(source, folder / "out", args, run)
            counts[outcome.kind] += 1
            per_seed[seed.name][outcome.kind] += 1
            if outcome.kind == "clear error":
                errors[outcome.detail] += 1
            elif outcome.kind == "anything else":
                others.append(f"{seed.name} case {case} ({what}): {outcome.detail}")
            if sorted(p.name for p in (folder / "in").iterdir()) != [source.name]:
                others.append(f"{seed.name} case {case} ({what}): files left beside the input")
            shutil.rmtree(folder)
    seconds = time.monotonic() - started
    with capfd.disabled():
        print(f"\nfuzz: {case} mutants in {seconds:.1f} s: " + ", ".join(
            f"{kind} {counts[kind]}" for kind in ("valid output", "clear error", "anything else")
        ))  # fmt: skip
        for name, seed_counts in per_seed.items():
            print(f"  {name}: {dict(seed_counts)}")
        print("  most common errors:")
        for detail, n in errors.most_common(12):
            print(f"    {n:4d}  {detail}")
        for line in others[:20]:
            print(f"  ANYTHING ELSE: {line}")
    assert not others, "\n".join(others[:20])
    assert counts["valid output"] > 20 and counts["clear error"] > 50  # the fuzz reaches both
    assert seconds < TIME_BUDGET
