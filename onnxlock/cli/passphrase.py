"""Passphrases and identities, shared by every verb that opens or seals a key: an environment
variable, else a terminal prompt; ``--identity`` (or ONNXLOCK_IDENTITY / ONNXLOCK_IDENTITY_FILE)
for a device key."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from ..errors import KeyAuthError, OnnxlockError
from ..key import X25519Identity, check_passphrase, parse_identity
from ..key.identity import IDENTITY_ENV, IDENTITY_FILE_ENV, identity_data, identity_from_env
from ..runtime.session import PASSPHRASE_ENV


def add_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--passphrase-env NAME``."""
    parser.add_argument("--passphrase-env", metavar="NAME", default=PASSPHRASE_ENV,
                        help=f"environment variable holding the passphrase (default: {PASSPHRASE_ENV}); "
                             "when it is unset, a terminal is prompted")


def add_identity_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--identity FILE`` and ``--passphrase-env``: open the key with a device identity or a passphrase."""
    parser.add_argument("--identity", metavar="FILE",
                        help="identity file from 'onnxlock keygen' (a passphrase-protected one takes "
                             f"the passphrase); without it, the identity in {IDENTITY_ENV} (its text) or "
                             f"{IDENTITY_FILE_ENV} (its path) if set, else the passphrase")
    add_argument(parser)


def get_passphrase(args: argparse.Namespace, *, confirm: bool = False, new: bool = False) -> str:
    """The passphrase from ``args.passphrase_env``, else asked on the terminal (twice if ``confirm``).
    A ``new`` passphrase (one that will protect something) must be long enough."""
    value = _from_env(args.passphrase_env) or _prompt(args.passphrase_env, confirm)
    return check_passphrase(value) if new else value


def optional_passphrase(args: argparse.Namespace) -> str | None:
    """The passphrase if its environment variable is set, else None (no prompt)."""
    return _from_env(args.passphrase_env)


def get_identity(args: argparse.Namespace) -> tuple[X25519Identity | None, str | None]:
    """The identity named by ``--identity``, else by the environment (prompting for a protected
    one's passphrase on a terminal), and the passphrase, if any, to try on the key as well."""
    passphrase = optional_passphrase(args)
    source = args.identity if args.identity is not None else identity_from_env()
    if source is None:
        return None, passphrase or get_passphrase(args)
    data = identity_data(source)
    try:
        return parse_identity(data, passphrase), passphrase
    except KeyAuthError:
        if passphrase is not None or not sys.stdin.isatty():
            raise
    passphrase = _prompt(args.passphrase_env, confirm=False)
    return parse_identity(data, passphrase), passphrase


def _from_env(name: str) -> str | None:
    return os.environ.get(name) or None


def _prompt(name: str, confirm: bool) -> str:
    if not sys.stdin.isatty():
        raise OnnxlockError(f"no passphrase: set {name}, use --passphrase-env NAME, or run on a terminal")
    value = getpass.getpass("Passphrase: ")
    if not value:
        raise OnnxlockError("the passphrase must not be empty")
    if confirm and getpass.getpass("Passphrase (again): ") != value:
        raise OnnxlockError("the passphrases do not match")
    return value
