"""``svsicc report``: its arguments and handler (the work is in :mod:`svsicc.check.report`)."""

from __future__ import annotations

import argparse
import json

from svsicc.check.report import DEFAULT_REGION_SIZE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write pictures and figures of what calibration changed (index.html + PNGs)",
        description="Verify CALIBRATED against ORIGINAL and write to DIR an index.html that opens "
        "offline, with before/after pictures, histograms, blue-white-red difference maps, glass "
        "white and tissue colour, and the verify figures. Exit 0: written and verified; 1: "
        "written but verification failed; 2: bad input.",
    )
    p.add_argument("original", help="the original slide (a DICOM series: its folder or one .dcm)")
    p.add_argument("calibrated", help="the copy svsicc apply wrote")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the report folder")
    p.add_argument(
        "--profile", metavar="ICC", help="the source profile (when the original embeds none)"
    )
    p.add_argument(
        "--sample", type=int, metavar="N", help="verify N random tiles per level instead of all"
    )
    p.add_argument(
        "--region-size",
        type=int,
        default=DEFAULT_REGION_SIZE,
        metavar="PX",
        help=f"side of the full-resolution region (default {DEFAULT_REGION_SIZE})",
    )
    p.add_argument("--json", action="store_true", help="print the report's numbers as JSON")
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from svsicc.api import report as build
    from svsicc.cli.dicom import in_dicom_words, is_dicom

    words = in_dicom_words if is_dicom(args.original) else _as_is
    report = build(
        args.original,
        args.calibrated,
        args.output,
        profile=args.profile,
        sample=args.sample,
        region_size=args.region_size,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        state = "verified" if report.ok else "VERIFICATION FAILED"
        print(f"{report.index}: report written ({state})")
        if not report.ok:
            for problem in report.verification.problems:
                print(f"  problem: {words(problem)}")
    return 0 if report.ok else 1


def _as_is(text: str) -> str:
    return text
