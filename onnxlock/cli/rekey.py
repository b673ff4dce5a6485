"""Re-wrap a key for other recipients (new devices, a new passphrase): same secret, no re-lock."""

from __future__ import annotations

import argparse
import os

from ..errors import KeyFormatError, OnnxlockError
from ..fileio import atomic_write_bytes, read_input
from ..key import ScryptRecipient, check_passphrase, load_recipient, rekey
from ..key.envelope import parse_expires
from . import passphrase
from .common import refuse_existing, writing

NEW_PASSPHRASE_ENV = "ONNXLOCK_NEW_PASSPHRASE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY", help="the key to re-wrap (it must open with --identity or the passphrase)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the new key")
    parser.add_argument("--recipient", action="append", default=[], metavar="PUB",
                        help="public key file (or its text) that opens the new key; repeatable")
    parser.add_argument("--new-passphrase-env", metavar="NAME",
                        help=f"also seal the new key under the passphrase in this variable (e.g. {NEW_PASSPHRASE_ENV})")
    parser.add_argument("--expires", metavar="DATE",
                        help="new expiry: YYYY-MM-DD (through that day, UTC), an ISO time, or 'never' "
                             "(default: keep the old one)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    passphrase.add_identity_argument(parser)


def run(args: argparse.Namespace) -> int:
    refuse_existing(args.output, force=args.force, inputs=(args.key, args.identity, *args.recipient))
    recipients = [load_recipient(r) for r in args.recipient]
    if args.new_passphrase_env:
        value = os.environ.get(args.new_passphrase_env)
        if not value:
            raise OnnxlockError(f"{args.new_passphrase_env} is not set")
        recipients.insert(0, ScryptRecipient(check_passphrase(value)))
    if not recipients:
        raise OnnxlockError("give at least one --recipient or --new-passphrase-env")
    data = read_input(args.key, "key", KeyFormatError)
    identity, secret = passphrase.get_identity(args)
    opens_with = [i for i in (identity, None if secret is None else ScryptRecipient(secret)) if i is not None]
    expiry = {} if args.expires is None else {"expires": None if args.expires == "never" else parse_expires(args.expires)}
    new_key = rekey(data, opens_with, recipients, **expiry)
    with writing(args.output):
        atomic_write_bytes(args.output, new_key, mode=0o600)
    print(f"re-wrapped {args.key} -> {args.output} for {len(recipients)} recipient(s)")
    return 0
