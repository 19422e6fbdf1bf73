"""The ``svsicc`` command line.

Each subcommand lives in a module with ``register(subparsers)``; the handler it sets returns an
exit code. Every :class:`SvsiccError` becomes one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from . import __version__
from .exceptions import AlreadyAppliedError, SvsiccError, VerificationError
from .output import INTERRUPTED

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_ALREADY_APPLIED = 3

# Modules that add subcommands besides apply and info.
SUBCOMMAND_MODULES: tuple[str, ...] = ("bench", "migrate", "verify", "report")

Handler = Callable[[argparse.Namespace], int]


def add_colour_options(parser: argparse.ArgumentParser) -> None:
    """--profile, --target and --intent, shared by apply and migrate."""
    parser.add_argument(
        "--profile", metavar="ICC", help="source profile: overrides or supplies the embedded one"
    )
    parser.add_argument(
        "--target", metavar="ICC", help="target profile (default: a compact ICC v2 sRGB)"
    )
    parser.add_argument(
        "--intent",
        choices=["perceptual", "relative", "saturation", "absolute"],
        help="rendering intent (default: the source profile's own)",
    )


def _register_apply(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "apply",
        help="write a copy of a slide with its ICC profile baked into the pixels",
        description="Convert every pyramid level and the thumbnail from the slide's ICC "
        "profile to sRGB, keeping every other byte, and mark the copy as applied.",
    )
    p.add_argument("input", help="the slide (.svs / .tif); opened read-only")
    p.add_argument("output", help="the copy to write")
    add_colour_options(p)
    p.add_argument(
        "--in-place", action="store_true", help="replace INPUT (through a temporary file)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument(
        "--include-associated",
        action="store_true",
        help="also convert the label and macro images (they come from another camera)",
    )
    p.add_argument(
        "--on-bad-tile",
        choices=["fail", "keep"],
        default="fail",
        help="what to do with a tile that cannot be decoded (default: fail the slide)",
    )
    p.add_argument(
        "--verify",
        nargs="?",
        const=64,
        type=int,
        metavar="N",
        help="verify the copy against the original (N random tiles per level, default 64) "
        "before it is renamed into place; a copy that fails is not kept (exit 1)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(handler=_run_apply)


def _run_apply(args: argparse.Namespace) -> int:
    from .apply import apply
    from .progress import ProgressBar

    output = args.input if args.in_place and args.output in (None, "-") else args.output
    bar = ProgressBar(f"svsicc {args.input}", enabled=False if args.quiet else None)
    check = None
    if args.verify is not None:
        from .verify import verify_before_commit

        check = verify_before_commit(args.verify)
    try:
        result = apply(
            args.input,
            output,
            profile=args.profile,
            target=args.target,
            intent=args.intent,
            in_place=args.in_place,
            overwrite=args.overwrite,
            workers=args.workers,
            include_associated=args.include_associated,
            keep_bad_tiles=args.on_bad_tile == "keep",
            progress=bar,
            before_commit=check,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        what = (
            "identity: no pixel changed, copy marked"
            if result.identity
            else f"{result.segments_rewritten} segments rewritten "
            f"({result.segments_per_second:,.0f}/s, {result.workers} "
            f"worker{'s' if result.workers > 1 else ''})"
        )
        print(
            f"{result.output}: {result.profile.description!r} -> {result.target.description!r} "
            f"({result.intent.label}), {what}, size x{result.size_ratio:.3f}, "
            f"{result.seconds:.1f} s"
        )
        for bad in result.bad_segments:
            print(f"  kept undecodable IFD {bad.page} tile {bad.segment}: {bad.reason}")
    return EXIT_OK


def _register_info(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="show a slide's profile, whether it was applied, its IFDs")
    p.add_argument("input")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .info import format_info, slide_info

    info = slide_info(args.input)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(format_info(info))
    return EXIT_OK


class _VersionAction(argparse.Action):
    """--version: the version and which colour gather runs (C or the numpy fallback, and why).

    Computed when asked for, so that building the parser does not import numpy."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from .colour import colour_path

        print(f"svsicc {__version__}\ncolour path: {colour_path()}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or when ``command`` names a subcommand, one that knows only that one:
    importing every subcommand's module (verify, report, migrate, bench) to run ``apply`` cost
    more start-up than apply's own set-up."""
    parser = argparse.ArgumentParser(
        prog="svsicc",
        description="Bake a whole-slide scanner's ICC profile into the pixels of Aperio SVS files.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version and the colour path, and exit"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show a traceback for unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in (None, "apply"):
        _register_apply(sub)
    if command in (None, "info"):
        _register_info(sub)
    for name in SUBCOMMAND_MODULES:
        if command in (None, name):
            importlib.import_module(f"svsicc.{name}").register(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names, when it names a known one and asks for nothing global
    (--help and --version want the whole parser)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    before = argv[: list(argv).index(first)] if first is not None else argv
    if any(a not in ("--debug",) for a in before):
        return None
    return first if first in ("apply", "info", *SUBCOMMAND_MODULES) else None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C so every temporary file is removed on the way out; the flag makes sure
    # nothing is renamed into place even if a library swallows the KeyboardInterrupt.
    INTERRUPTED.set()
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)  # an inherited SIG_IGN is respected
    handler: Handler = args.handler
    try:
        return handler(args)
    except AlreadyAppliedError as exc:
        print(f"svsicc: {exc.one_line()}", file=sys.stderr)
        return EXIT_ALREADY_APPLIED
    except VerificationError as exc:
        print(f"svsicc: {exc.one_line()}", file=sys.stderr)
        return EXIT_FAILED
    except SvsiccError as exc:
        print(f"svsicc: {exc.one_line()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("svsicc: interrupted; no output was left behind", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if args.debug:
            raise
        where = getattr(args, "input", None)
        prefix = f"{where}: " if where else ""
        print(
            f"svsicc: {prefix}unexpected error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for a traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
