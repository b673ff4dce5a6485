"""Make a device identity: NAME (the X25519 private key, owner-only) and NAME.pub (give it to the model owner)."""

from __future__ import annotations

import argparse

from ..key.identity import keygen, public_text
from . import passphrase
from .common import writing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="NAME",
                        help="where to write the identity; the public key goes to NAME.pub")
    parser.add_argument("--protect", action="store_true",
                        help="encrypt the identity under a passphrase (scrypt); it is asked for at each use")
    parser.add_argument("--force", action="store_true", help="overwrite an existing identity")
    passphrase.add_argument(parser)


def run(args: argparse.Namespace) -> int:
    secret = passphrase.get_passphrase(args, confirm=True, new=True) if args.protect else None
    with writing(args.output, f"{args.output}.pub"):
        recipient = keygen(args.output, passphrase=secret, force=args.force)
    print(f"identity: {args.output}{' (passphrase-protected)' if secret else ''}; keep it on the device")
    print(f"public key: {args.output}.pub; lock with --recipient {args.output}.pub")
    print(public_text(recipient))
    return 0
