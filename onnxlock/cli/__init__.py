"""The onnxlock command: ``main(argv)`` parses, dispatches to one verb module, and turns errors into one line."""

from __future__ import annotations

import argparse
import sys
import traceback

from .. import __version__
from ..errors import OnnxlockError
from . import attack, demo, inspect, lock, run, unlock

VERBS = {"lock": lock, "run": run, "unlock": unlock, "inspect": inspect, "demo": demo, "attack": attack}
# errors that mean bad input or a bad environment, not a bug: one line, no traceback
USER_ERRORS = (OnnxlockError, OSError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxlock", description="Lock ONNX models with confusion channels and an encrypted key; "
                                     "restore them exactly, in memory, at load time.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, module in VERBS.items():
        summary = module.__doc__.strip().splitlines()[0]
        sub = verbs.add_parser(name, help=summary, description=summary)
        # also accepted after the verb; SUPPRESS keeps it from resetting a --debug given before
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the full traceback on errors")
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]) and return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors; argparse has printed already
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"onnxlock: error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """The error's message on one line (onnxruntime and numpy messages can span several)."""
    if isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in message.splitlines() if part.strip())
