"""``svsicc verify``: its arguments and handler (the work is in :mod:`svsicc.check.verify`)."""

from __future__ import annotations

import argparse
import json

from svsicc.check.margins import MARGINS
from svsicc.check.verify import EXIT_FAILED, EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="check a calibrated copy against its original (structure and colour)",
        description="Check that CALIBRATED is ORIGINAL with its ICC profile baked in: the same "
        "TIFF structure and untouched label/macro bytes, every tile decodes, and the pixels "
        "are within a small margin of the floor: LittleCMS applied to the original's pixels "
        "and re-encoded once at the original's own settings (per level PSNR >= floor - "
        f"{MARGINS.psnr_db} dB; mean |error|, dE2000 mean and p95 <= floor x {MARGINS.ratio} + "
        f"{MARGINS.mean_abs} / {MARGINS.delta_e_mean} / {MARGINS.delta_e_p95}; per tile PSNR >= "
        f"floor - {MARGINS.segment_psnr_db} dB and dE2000 mean <= floor x "
        f"{MARGINS.segment_ratio} + {MARGINS.segment_delta_e_mean}; lossless pages exact). "
        "Exit 0: passed; 1: verification failed; 2: bad input, or a copy made with another "
        "source profile than the one given (the line says which to pass).",
    )
    p.add_argument("original", help="the original slide")
    p.add_argument("calibrated", help="the copy svsicc apply wrote")
    p.add_argument(
        "--profile",
        metavar="ICC",
        help="the source profile the copy was made with: overrides the original's embedded "
        "one; its sha256 must match the copy's record",
    )
    p.add_argument(
        "--fallback-profile",
        metavar="ICC",
        help="the source profile, only when the original embeds none (as apply's option)",
    )
    p.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="check N random tiles per level instead of all (for big slides)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample choice (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no output, only the exit code")
    p.set_defaults(handler=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from svsicc.api import verify
    from svsicc.cli.dicom import in_dicom_words, is_dicom
    from svsicc.progress import ProgressBar

    bar = ProgressBar(
        f"verify {args.calibrated}", enabled=False if args.quiet or args.json else None
    )
    try:
        result = verify(
            args.original,
            args.calibrated,
            profile=args.profile,
            fallback_profile=args.fallback_profile,
            sample=args.sample,
            seed=args.seed,
            progress=bar,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        text = result.format()
        print(in_dicom_words(text) if is_dicom(args.original) else text)
    return EXIT_OK if result.ok else EXIT_FAILED
