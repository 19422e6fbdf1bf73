"""``svsicc migrate``: its arguments and handler (the work is in :mod:`svsicc.archive.migrate`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from svsicc.archive.dry_run import format_plan, plan_migration
from svsicc.archive.journal import (
    JOURNAL_NAME,
)
from svsicc.archive.migrate import run_migration
from svsicc.archive.options import MigrateOptions
from svsicc.archive.summary import format_summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from svsicc.cli.main import add_colour_options, add_verify_option, add_workers_option

    p = sub.add_parser(
        "migrate",
        help="apply every slide of a folder tree into a mirrored tree, resumably",
        description="Find the slides under SRC_DIR (.svs, and .tif/.tiff with an Aperio "
        "description), apply each into the same place under DST_DIR, and keep a journal "
        f"({JOURNAL_NAME}) there so that running the same command again resumes. Exit 0 when "
        "every slide went well; 1 when any failed in this run; otherwise 4 when any slide found "
        "is still unconverted for lack of a profile (rerun with --profile); 130 interrupted, "
        "143 terminated.",
        epilog="Statuses: done; skipped: identity (the profile maps to sRGB unchanged: a marked "
        "copy is still written); skipped: already applied (copied byte for byte); skipped: no "
        "profile (nothing written; a later run with --profile converts them); failed (with the "
        "reason; retried by the next run). Finished slides are not redone unless their source "
        "changed or their output is gone. Summaries: summary.csv and summary.json in DST_DIR.",
    )
    p.add_argument("source_dir", metavar="SRC_DIR", help="the archive; opened read-only")
    p.add_argument("destination_dir", metavar="DST_DIR", help="where the mirrored tree goes")
    add_colour_options(p)
    add_workers_option(
        p, "slides at a time in the local pool (default: all cores; not used with --scheduler)"
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only paths (relative to SRC_DIR) matching GLOB; '*' crosses folders, a pattern "
        "without '/' matches file names; repeatable",
    )
    p.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip matches; repeatable"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and an estimated time; write nothing",
    )
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run the slides on this Dask cluster (its workers must see the same paths)",
    )
    add_verify_option(p, "a copy that fails is not kept (status failed)")
    p.add_argument("--json", action="store_true", help="print the plan or the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line, no summary table")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    options = MigrateOptions(
        source_dir=Path(args.source_dir),
        destination_dir=Path(args.destination_dir),
        profile=args.profile,
        fallback_profile=args.fallback_profile,
        target=args.target,
        intent=args.intent,
        workers=args.workers,
        verify=args.verify,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        scheduler=args.scheduler,
        quiet=args.quiet or args.json,
    )
    if args.dry_run:
        plan = plan_migration(options)
        print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
        return 0
    # A MigrationInterrupted goes up to the command line, which knows which signal came.
    report = run_migration(options)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        print(format_summary(report))
    return report.exit_code
