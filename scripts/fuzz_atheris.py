#!/usr/bin/env python
"""Longer fuzzing of ``svsicc apply`` than the CI test (tests/test_fuzz.py), outside CI.

Each input is judged exactly as in the test: a clear one-line error (exit 2/3) or a valid output,
nothing left in the output folder, the input unchanged. Anything else is saved under --crashes
with a note of what went wrong.

With atheris installed (``pip install atheris``; it needs clang to build) the mutations are
coverage guided::

    python scripts/fuzz_atheris.py --atheris -- -max_total_time=3600

Without it, the seeded random mutator of the test runs for --count mutants::

    python scripts/fuzz_atheris.py --count 5000 --seed 1
"""

from __future__ import annotations

import sys
from pathlib import Path

# The fixture builder lives in tests/: it ships with the repository, not with the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from svsicc.cli.main import main as svsicc_main  # noqa: E402
from tests.test_fuzz import Seed, check_one, describe, mutate  # noqa: E402


def build_seeds(folder: Path) -> list[Seed]:
    from tests.synthetic import DATA_DIR, load_real_pixels, preset, write_slide

    embedded = (DATA_DIR / "AdobeCompat-v2.icc").read_bytes()
    pixels = np.ascontiguousarray(load_real_pixels()[1200:1584, 900:1412])
    at2 = write_slide(
        folder / "at2.svs", pixels[:, :480],
        preset("at2", profile=embedded, downsamples=(1, 2), with_macro=False),
    )  # fmt: skip
    gt450 = write_slide(
        folder / "gt450.svs", pixels,
        preset("gt450", profile=embedded, downsamples=(1,), with_label=False, with_macro=False),
    )  # fmt: skip
    small = folder / "small.svs"
    small.write_bytes((DATA_DIR / "openslide-python_small.svs").read_bytes())
    profile = str(DATA_DIR / "ScanScope_v1_from_CMU-Embed.icc")
    return [
        describe("openslide-small", small, ("--profile", profile)),
        describe("at2", at2, ()),
        describe("gt450", gt450, ()),
    ]


def run_in_process(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = svsicc_main(list(args))
    return code, err.getvalue()


class Judge:
    def __init__(self, work: Path, crashes: Path) -> None:
        self.work = work
        self.crashes = crashes
        self.counts: Counter[str] = Counter()
        self.case = 0

    def __call__(self, name: str, data: bytes, extra_args: tuple[str, ...], what: str) -> str:
        self.case += 1
        folder = self.work / f"case{self.case}"
        (folder / "in").mkdir(parents=True)
        (folder / "out").mkdir()
        source = folder / "in" / f"{name}.svs"
        source.write_bytes(data)
        args = extra_args + (("--on-bad-tile", "keep") if self.case % 3 == 0 else ())
        outcome = check_one(source, folder / "out", args, run_in_process)
        self.counts[outcome.kind] += 1
        if outcome.kind == "anything else":
            self.crashes.mkdir(parents=True, exist_ok=True)
            saved = self.crashes / f"{name}-{self.case}.svs"
            saved.write_bytes(data)
            saved.with_suffix(".txt").write_text(f"{what}\nargs: {args}\n{outcome.detail}\n")
            print(f"ANYTHING ELSE {saved}: {outcome.detail}", flush=True)
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        folder.rmdir()
        return outcome.kind


def random_run(seeds: list[Seed], judge: Judge, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    for i in range(count):
        source = seeds[i % len(seeds)]
        what, data = mutate(source, rng)
        judge(source.name, data, source.extra_args, what)
        if (i + 1) % 200 == 0:
            rate = (i + 1) / (time.monotonic() - started)
            print(f"{i + 1} mutants, {dict(judge.counts)}, {rate:.1f}/s", flush=True)


def atheris_run(seeds: list[Seed], judge: Judge, libfuzzer_args: list[str]) -> None:
    import atheris

    def one_input(data: bytes) -> None:
        if len(data) < 2:
            return
        source = seeds[data[0] % len(seeds)]
        # Overlay the fuzzer's bytes on the seed at an offset it chooses: the slide stays
        # mostly valid, so the mutations reach deep into the pipeline.
        body = bytearray(source.data)
        start = int.from_bytes(data[1:2], "little") * len(body) // 256
        patch = data[2:]
        body[start : start + len(patch)] = patch
        if judge(source.name, bytes(body), source.extra_args, f"atheris overlay at {start}") == (
            "anything else"
        ):
            raise RuntimeError("svsicc misbehaved; the input is saved")

    # Coverage feedback from the Python code loaded so far (svsicc, tifffile); the codecs are
    # C libraries and stay uninstrumented.
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="random mutants (no atheris)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--atheris", action="store_true", help="coverage-guided with atheris")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("libfuzzer_args", nargs="*", help="after --: passed to libFuzzer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="svsicc-fuzz-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("SVSICC_CACHE_DIR", str(work / "cache"))
        seeds = build_seeds(work)
        judge = Judge(work / "cases", args.crashes)
        if args.atheris:
            atheris_run(seeds, judge, args.libfuzzer_args)
        else:
            random_run(seeds, judge, args.count, args.seed)
        print(f"done: {judge.case} mutants, {dict(judge.counts)}")
        return 1 if judge.counts["anything else"] else 0


if __name__ == "__main__":
    sys.exit(main())
