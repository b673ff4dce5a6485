"""The onnxlock command: ``main(argv)`` parses, dispatches to one verb module, and turns errors into one line.

Exit status: 0 done; 1 bad input or environment (usage, files, data, keys, a full disk: see
``guard.is_user_error``; a closed output pipe, quietly); 2 an internal error, a bug to report; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from .. import __version__
from ..errors import InternalError
from ..guard import internal_error, is_user_error

# each verb is a module of this package; a command imports only the one it names (``onnxlock run``
# then imports what a load needs, not the lock and the attacks: ~0.3 s of its start)
VERBS = ("lock", "run", "unlock", "inspect", "demo", "keygen", "rekey", "trace", "attack")
BAD_INPUT, INTERNAL, INTERRUPTED = 1, 2, 130
# the arguments that name the user's files: an OSError about them is bad input, not a bug
PATH_ARGUMENTS = ("model", "output", "key", "calib", "input", "locked", "file", "workdir", "identity", "keys", "recipient", "data", "test")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser with every verb, or, given ``verb``, with only that one's arguments (the others
    are bare names, so that a usage error still lists them)."""
    parser = argparse.ArgumentParser(
        prog="onnxlock", description="Lock ONNX models with confusion channels and an encrypted key; "
                                     "restore them exactly, in memory, at load time.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in VERBS:
        if verb not in (None, name):
            verbs.add_parser(name)
            continue
        module = importlib.import_module(f".{name}", __name__)
        summary = module.__doc__.strip().splitlines()[0]
        sub = verbs.add_parser(name, help=summary, description=summary)
        # also accepted after the verb; SUPPRESS keeps it from resetting a --debug given before
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the full traceback on errors")
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def named_verb(argv: list[str]) -> str | None:
    """The verb ``argv`` names (its first word not an option), if it is one; else None."""
    words = [word for word in argv if not word.startswith("-")]
    return words[0] if words and words[0] in VERBS else None


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]) and return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(named_verb(argv)).parse_args(argv)
    except SystemExit as exc:  # --help and --version (0), usage errors; argparse has printed already
        return 0 if not exc.code else BAD_INPUT
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # the reader went away (``onnxlock inspect ... | head``): stop quietly
        _drop_stdout()
        return BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line
        return report(exc, args)


def _drop_stdout() -> None:
    """Point stdout at the null device, so that flushing it at exit does not fail again (the
    recipe of Python's signal documentation)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing to flush
        pass


def report(exc: Exception, args: argparse.Namespace) -> int:
    """Print ``exc`` as one line (and its traceback with --debug); return the exit status."""
    paths = [value for name in PATH_ARGUMENTS if isinstance(value := getattr(args, name, None), str)]
    if not is_user_error(exc, paths):  # a bug: said as the command and its file, even if the API said it first
        subject = next(iter(paths), None)
        original = exc.original if isinstance(exc, InternalError) else exc
        exc = internal_error(original, f"running '{args.verb}'" + (f" on {subject}" if subject else ""))
    internal = isinstance(exc, InternalError)
    if args.debug:
        traceback.print_exception(exc.original if internal else exc)
    prefix = "onnxlock: " if internal else "onnxlock: error: "
    print(prefix + one_line(exc), file=sys.stderr)
    return INTERNAL if internal else BAD_INPUT


def one_line(exc: BaseException) -> str:
    """The error's message on one line (onnxruntime and numpy messages can span several)."""
    if isinstance(exc, MemoryError):
        message = "out of memory" + (f": {exc}" if str(exc) else "")
    elif isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in message.splitlines() if part.strip())
