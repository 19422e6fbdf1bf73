"""The ``svsicc`` command line.

Each subcommand lives in a module with ``register(subparsers)``; the handler it sets returns an
exit code. Every :class:`SvsiccError` becomes one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, cast

from svsicc.convert.plan import ConversionPlan
from svsicc.exceptions import (
    AlreadyAppliedError,
    Audience,
    Interrupted,
    SvsiccError,
    VerificationError,
)
from svsicc.version import __version__

if TYPE_CHECKING:
    from svsicc.check.figures import VerifyResult

if TYPE_CHECKING:
    from svsicc.check.figures import VerifyResult
    from svsicc.convert.apply import ApplyResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_ALREADY_APPLIED = 3

# Modules that add subcommands besides apply and info.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "svsicc.cli.bench",
    "svsicc.cli.migrate",
    "svsicc.cli.verify",
    "svsicc.cli.report",
)

Handler = Callable[[argparse.Namespace], int]

APPLY_USAGE = "svsicc apply INPUT OUTPUT [options]"


class _Parser(argparse.ArgumentParser):
    """argparse with svsicc's error style: one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join((self.usage or self.format_usage().removeprefix("usage: ")).split())
        usage = usage.replace("%(prog)s", self.prog)
        # A generated usage of a many-option command wraps over lines: point at --help instead.
        shown = usage if len(usage) <= 100 else f"see {self.prog} --help"
        where = self.prog.removeprefix("svsicc").strip()
        self.exit(
            EXIT_ERROR, f"svsicc: {where + ': ' if where else ''}{message} (usage: {shown})\n"
        )


def at_least_one(what: str = "") -> Callable[[str], int]:
    """An argparse type for a count that must be a whole number >= 1 (--workers, --verify N)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what}must be a whole number, not {text!r}"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what}must be at least 1, not {value}")
        return value

    return parse


def add_workers_option(parser: argparse.ArgumentParser, help: str) -> None:
    """--workers N, validated alike by every subcommand that has it."""
    parser.add_argument("--workers", type=at_least_one(), default=None, metavar="N", help=help)


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    """--profile and --fallback-profile: the policy of svsicc.convert.plan, shared by every
    command."""
    parser.add_argument(
        "--profile",
        metavar="ICC",
        help="source profile for every slide: overrides an embedded one (said on stderr when "
        "they differ)",
    )
    parser.add_argument(
        "--fallback-profile",
        metavar="ICC",
        help="source profile only for slides that embed none",
    )


def add_verify_option(parser: argparse.ArgumentParser, on_failure: str) -> None:
    """--verify [N], shared by apply and migrate."""
    parser.add_argument(
        "--verify",
        nargs="?",
        const=64,
        type=at_least_one("N (tiles per level) "),
        metavar="N",
        help="verify the copy against its original (N random tiles per level, default 64) "
        f"before it is renamed into place; {on_failure}",
    )


def add_colour_options(parser: argparse.ArgumentParser) -> None:
    """--profile, --fallback-profile, --target and --intent, shared by apply, migrate, bench."""
    add_profile_options(parser)
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
        usage=APPLY_USAGE,
        help="write a copy of a slide with its ICC profile baked into the pixels",
        description="Convert every pyramid level and the thumbnail from the slide's ICC "
        "profile to sRGB, keeping every other byte, and mark the copy as applied.",
    )
    p.add_argument("input", metavar="INPUT", help="the slide (.svs / .tif); opened read-only")
    p.add_argument(
        "output",
        metavar="OUTPUT",
        nargs="?",
        help="the copy to write (omit it with --in-place)",
    )
    add_colour_options(p)
    p.add_argument(
        "--in-place",
        action="store_true",
        help="replace INPUT (through a temporary file); OUTPUT, if given, must be INPUT itself",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_workers_option(p, "processes (default: all cores)")
    p.add_argument(
        "--include-associated",
        action="store_true",
        help="also convert the label and macro images (they come from another camera)",
    )
    p.add_argument(
        "--on-bad-tile",
        choices=["fail", "keep"],
        default="fail",
        help="what to do with a tile that cannot be decoded or is damaged (default: fail the "
        "slide; keep: keep its bytes and record it in the copy)",
    )
    add_verify_option(p, "a copy that fails is not kept (exit 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(handler=_run_apply)


def _run_apply(args: argparse.Namespace) -> int:
    from svsicc.api import apply
    from svsicc.cli.dicom import in_dicom_words, is_dicom
    from svsicc.progress import ProgressBar

    # A DICOM series goes through the same apply (it hands the series to its driver); only the
    # words differ: instances and frames.
    series = is_dicom(args.input)
    if args.output is None and not args.in_place:
        raise SvsiccError(
            args.input,
            "OUTPUT is missing",
            hint="give the folder to write the new series to"
            if series
            else f"usage: {APPLY_USAGE}, or svsicc apply INPUT --in-place to replace INPUT",
        )
    output = args.input if args.in_place and args.output in (None, "-") else args.output
    bar = ProgressBar(f"svsicc {args.input}", enabled=False if args.quiet else None)
    check = None
    verified: list[VerifyResult] = []
    if args.verify is not None:
        from svsicc.api import verify_before_commit

        check = verify_before_commit(args.verify, on_result=verified.append)
    try:
        result = apply(
            args.input,
            output,
            profile=args.profile,
            fallback_profile=args.fallback_profile,
            target=args.target,
            intent=args.intent,
            in_place=args.in_place,
            overwrite=args.overwrite,
            workers=args.workers,
            include_associated=args.include_associated,
            keep_bad_tiles=args.on_bad_tile == "keep",
            progress=bar,
            before_commit=check,
            on_plan=lambda plan: _say_override(plan, args.input),
            cancel=args.cancel,
        )
    finally:
        bar.close()
    if args.json:
        payload = result.to_dict()
        if verified:
            payload["verification"] = verified[0].to_dict()
        print(json.dumps(payload, indent=2))
    elif not args.quiet and series:
        frames = result.segments_rewritten
        what = (
            "identity: no pixel changed, series marked"
            if result.identity
            else f"{_plural(frames, 'frame')} rewritten"
        )
        print(
            f"{result.output}: {result.profile.description!r} -> {result.target.description!r} "
            f"({result.intent.label}), {_plural(len(result.pages), 'instance')}, {what}, size "
            f"x{result.size_ratio:.3f}, {result.seconds:.1f} s"
        )
        for bad in result.bad_segments:
            print(f"  kept undecodable instance {bad.page} frame {bad.segment}: {bad.reason}")
        if verified:
            print(f"  {in_dicom_words(verified[0].summary_line())}")
    elif not args.quiet:
        what = (
            "identity: no pixel changed, copy marked"
            if result.identity
            else f"{_rewritten(result)} rewritten "
            f"({result.segments_per_second:,.0f}/s, {_plural(result.workers, 'worker')})"
        )
        print(
            f"{result.output}: {result.profile.description!r} -> {result.target.description!r} "
            f"({result.intent.label}), {what}, size x{result.size_ratio:.3f}, "
            f"{result.seconds:.1f} s"
        )
        for bad in result.bad_segments:
            print(f"  kept undecodable IFD {bad.page} tile {bad.segment}: {bad.reason}")
        if verified:
            print(f"  {_verification_line(verified[0])}")
    return EXIT_OK


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _rewritten(result: ApplyResult) -> str:
    """'178 tiles', '1 tile and 12 strips': what a user calls the pieces of an image."""
    tiles = sum(p.rewritten for p in result.pages if p.layout == "tiled")
    strips = result.segments_rewritten - tiles
    parts = [_plural(tiles, "tile")] if tiles or not strips else []
    parts += [_plural(strips, "strip")] if strips else []
    return " and ".join(parts)


def _verification_line(outcome: VerifyResult) -> str:
    """One line saying what a passing ``apply --verify`` checked."""
    head = (
        f"verification passed: same TIFF structure ({_plural(outcome.ifds, 'IFD')}), "
        "label and macro untouched"
    )
    if outcome.identity:
        return f"{head}, every tile byte-identical to the original"
    checked = sum(p.segments_checked for p in outcome.pages)
    return (
        f"{head}, every tile readable; {checked:,} tiles and strips within the floor of "
        f"LittleCMS applied to the original and re-encoded once ({outcome.closest_to_floor()})"
    )


def _say_override(plan: ConversionPlan, path: str) -> None:
    """--profile replacing an embedded profile is said before the work starts, on stderr."""
    notice = plan.override_notice(path)
    if notice is not None:
        print(notice, file=sys.stderr, flush=True)


def _register_info(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "info",
        help="show a slide's profile, whether it was applied, its IFDs; any other TIFF's "
        "format, pages and profile, and why svsicc cannot convert it",
    )
    p.add_argument("input")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from svsicc.cli import dicom

    if dicom.is_dicom(args.input):
        return dicom.run_info(args)
    from svsicc.slide_info import SlideInfo, describe, format_info

    info = describe(args.input)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(format_info(info) if isinstance(info, SlideInfo) else info.format_text())
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
        from svsicc.colour.transform import colour_path

        print(f"svsicc {__version__}\ncolour path: {colour_path()}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or when ``command`` names a subcommand, one that knows only that one:
    importing every subcommand's module (verify, report, migrate, bench) to run ``apply`` cost
    more start-up than apply's own set-up."""
    parser = _Parser(
        prog="svsicc",
        description="Bake a whole-slide scanner's ICC profile into the pixels of Aperio SVS files.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version and the colour path, and exit"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show a traceback for unexpected errors"
    )
    # Subcommands are _Parser too (argparse's default: the parent's class); typed as the base
    # class the subcommand modules' register() functions take.
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    if command in (None, "apply"):
        _register_apply(sub)
    if command in (None, "info"):
        _register_info(sub)
    for name in SUBCOMMAND_MODULES:
        if command in (None, name):
            importlib.import_module(name).register(sub)
    for subparser in sub.choices.values():
        # "rerun with --debug" is read as "add --debug": accept it after the subcommand too.
        # SUPPRESS keeps the top-level value when the subcommand does not see the option.
        subparser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names, when it names a known one and asks for nothing global
    (--help and --version want the whole parser)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    before = argv[: list(argv).index(first)] if first is not None else argv
    if any(a not in ("--debug",) for a in before):
        return None
    return first if first in ("apply", "info", *SUBCOMMAND_MODULES) else None


def _interrupt_handler(
    received: list[int], cancel: threading.Event
) -> Callable[[int, FrameType | None], None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        # Unwind like Ctrl-C so every temporary file is removed on the way out; the event makes
        # sure nothing is renamed into place even if a library swallows the KeyboardInterrupt.
        received.append(signum)
        cancel.set()
        raise KeyboardInterrupt

    return interrupt


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, but an unknown option is reported with its subcommand's usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        chosen: argparse.ArgumentParser = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(str(getattr(args, "command", "")), parser)
        chosen.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    args = _parse(parser, argv)
    received: list[int] = []  # the signals that interrupted the run
    args.cancel = threading.Event()  # handed to apply: an interrupt commits nothing
    interrupt = _interrupt_handler(received, args.cancel)
    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt)  # an inherited SIG_IGN is respected
    handler: Handler = args.handler
    try:
        return handler(args)
    except AlreadyAppliedError as exc:
        print(f"svsicc: {exc.one_line(Audience.CLI)}", file=sys.stderr)
        return EXIT_ALREADY_APPLIED
    except VerificationError as exc:
        print(f"svsicc: {exc.one_line(Audience.CLI)}", file=sys.stderr)
        return EXIT_FAILED
    except SvsiccError as exc:
        print(f"svsicc: {exc.one_line(Audience.CLI)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        # The shell's convention: 128 + the signal (130 SIGINT, 143 SIGTERM).
        signum = received[0] if received else signal.SIGINT
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        text = exc.one_line(what) if isinstance(exc, Interrupted) else f"{what}; {Interrupted.LEFT}"
        print(f"svsicc: {text}", file=sys.stderr)
        return 128 + signum
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


def run() -> NoReturn:
    """The console entry point (``svsicc``, ``python -m svsicc``): :func:`main`, then exit.

    After an interrupt, everything is cleaned up when :func:`main` returns 130 or 143. CPython
    remembers a KeyboardInterrupt that crossed certain C frames on its way to our handler and, at
    exit, kills itself with SIGINT whatever code was asked for (seen as exit -2 about one run in
    ten with two workers); so the interrupted exit leaves directly with the shell's code.
    """
    code = main()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
