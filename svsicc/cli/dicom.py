"""The command line for DICOM WSI series: apply, info, verify, bench and report hand a folder
(or a .dcm file) here (the dispatch is the first lines of each command's handler; the work is
in :mod:`svsicc.dicom`)."""

from __future__ import annotations

import argparse
import json
import sys

from svsicc.exceptions import SvsiccError

EXIT_OK = 0
EXIT_FAILED = 1


def is_dicom(path: str | None) -> bool:
    from svsicc.dicom.detect import is_dicom_input

    return path is not None and is_dicom_input(path)


def run_apply(args: argparse.Namespace) -> int:
    from svsicc.check.figures import VerifyResult
    from svsicc.dicom.apply import apply_dicom
    from svsicc.progress import ProgressBar

    if args.in_place:
        raise SvsiccError(
            args.input,
            "a DICOM series cannot be converted in place",
            hint="give an OUTPUT folder: the copy is a new series",
        )
    if args.output is None:
        raise SvsiccError(args.input, "OUTPUT is missing", hint="give the folder to write")
    if args.include_associated:
        raise SvsiccError(
            args.input, "--include-associated is not supported for DICOM: LABEL and OVERVIEW "
            "instances are kept as they are"
        )  # fmt: skip
    check = None
    verified: list[VerifyResult] = []
    if args.verify is not None:
        from svsicc.dicom.verify import in_dicom_words, verify_before_commit

        check = verify_before_commit(args.verify, on_result=verified.append)
    bar = ProgressBar(f"svsicc {args.input}", enabled=False if args.quiet else None)
    try:
        result = apply_dicom(
            args.input,
            args.output,
            profile=args.profile,
            fallback_profile=args.fallback_profile,
            target=args.target,
            intent=args.intent,
            overwrite=args.overwrite,
            workers=args.workers,
            keep_bad_tiles=args.on_bad_tile == "keep",
            progress=bar,
            before_commit=check,
            on_plan=lambda plan: _say_override(plan.override_notice(args.input)),
            cancel=args.cancel,
        )
    finally:
        bar.close()
    if args.json:
        payload = result.to_dict()
        if verified:
            payload["verification"] = verified[0].to_dict()
        print(json.dumps(payload, indent=2))
    elif not args.quiet:
        frames = result.segments_rewritten
        what = (
            "identity: no pixel changed, series marked"
            if result.identity
            else f"{frames:,} frame{'' if frames == 1 else 's'} rewritten"
        )
        print(
            f"{result.output}: {result.profile.description!r} -> {result.target.description!r} "
            f"({result.intent.label}), {len(result.pages)} instances, {what}, size "
            f"x{result.size_ratio:.3f}, {result.seconds:.1f} s"
        )
        for bad in result.bad_segments:
            print(f"  kept undecodable instance {bad.page} frame {bad.segment}: {bad.reason}")
        if verified:
            print(f"  {in_dicom_words(verified[0].summary_line())}")
    return EXIT_OK


def _say_override(notice: str | None) -> None:
    if notice is not None:
        print(notice, file=sys.stderr, flush=True)


def run_info(args: argparse.Namespace) -> int:
    from svsicc.dicom.info import dicom_info

    info = dicom_info(args.input)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.format_text())
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from svsicc.dicom.verify import format_result, verify_dicom
    from svsicc.progress import ProgressBar

    bar = ProgressBar(
        f"verify {args.calibrated}", enabled=False if args.quiet or args.json else None
    )
    try:
        result = verify_dicom(
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
        print(format_result(result))
    return EXIT_OK if result.ok else EXIT_FAILED


def run_bench(args: argparse.Namespace) -> int:
    from svsicc.check.bench import format_bench
    from svsicc.dicom.bench import bench_dicom
    from svsicc.dicom.verify import in_dicom_words

    result = bench_dicom(
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
        print(in_dicom_words(format_bench(result)))
    return EXIT_OK
