"""``svsicc bench``: its arguments and handler (the work is in :mod:`svsicc.check.bench`)."""

from __future__ import annotations

import argparse
import json

from svsicc.check.bench import DEFAULT_TILES, bench_slide, format_bench


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from svsicc.cli.main import add_colour_options

    p = sub.add_parser(
        "bench",
        help="time each stage of apply per tile on a slide, writing nothing",
        description="Sample level-0 tiles across SLIDE and time read, decode, colour, encode and "
        "write (to memory) for each on one core. Writes no file (the colour-table cache apart).",
    )
    p.add_argument(
        "input",
        metavar="SLIDE",
        help="the slide (.svs / .tif, or a DICOM series: its folder or one .dcm); read-only",
    )
    add_colour_options(p)
    p.add_argument(
        "--tiles",
        type=_positive_int,
        default=DEFAULT_TILES,
        metavar="N",
        help=f"level-0 tiles (DICOM: frames) to sample (default {DEFAULT_TILES})",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_run_bench)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _run_bench(args: argparse.Namespace) -> int:
    from svsicc.cli.dicom import in_dicom_words, is_dicom

    series = is_dicom(args.input)
    if series:
        from svsicc.dicom.bench import bench_dicom as run
    else:
        run = bench_slide
    result = run(
        args.input,
        profile=args.profile,
        target=args.target,
        intent=args.intent,
        tiles=args.tiles,
        fallback_profile=args.fallback_profile,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        text = format_bench(result)
        print(in_dicom_words(text) if series else text)
    return 0
