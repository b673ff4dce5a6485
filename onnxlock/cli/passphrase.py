"""The passphrase, shared by every verb that needs one: an environment variable, else a terminal prompt."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from ..errors import OnnxlockError
from ..runtime.session import PASSPHRASE_ENV


def add_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--passphrase-env NAME``."""
    parser.add_argument("--passphrase-env", metavar="NAME", default=PASSPHRASE_ENV,
                        help=f"environment variable holding the passphrase (default: {PASSPHRASE_ENV}); "
                             "when it is unset, a terminal is prompted")


def get_passphrase(args: argparse.Namespace, *, confirm: bool = False) -> str:
    """The passphrase from ``args.passphrase_env``, else asked on the terminal (twice if ``confirm``)."""
    name = args.passphrase_env
    value = os.environ.get(name)
    if value:
        return value
    if not sys.stdin.isatty():
        raise OnnxlockError(f"no passphrase: set {name}, use --passphrase-env NAME, or run on a terminal")
    value = getpass.getpass("Passphrase: ")
    if not value:
        raise OnnxlockError("the passphrase must not be empty")
    if confirm and getpass.getpass("Passphrase (again): ") != value:
        raise OnnxlockError("the passphrases do not match")
    return value
