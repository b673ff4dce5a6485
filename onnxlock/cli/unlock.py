"""Restore the original model from a locked model and its key, and write it (the owner's way back)."""

from __future__ import annotations

import argparse

from ..errors import KeyFormatError, ModelFormatError
from ..graph.io import save_model
from ..runtime import restore_model
from ..fileio import read_input
from . import passphrase
from .common import refuse_existing, settle_pair, writing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("locked", metavar="LOCKED", help="the locked ONNX model")
    parser.add_argument("--key", required=True, metavar="KEY", help="the model's key file")
    parser.add_argument("-o", "--output", required=True, metavar="RESTORED.onnx",
                        help="where to write the restored (plaintext) model")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    passphrase.add_identity_argument(parser)


def run(args: argparse.Namespace) -> int:
    refuse_existing(args.output, force=args.force, inputs=(args.locked, args.key))
    settle_pair(args.key)
    locked = read_input(args.locked, "locked model", ModelFormatError)
    key = read_input(args.key, "key", KeyFormatError)
    identity, secret = passphrase.get_identity(args)
    model = restore_model(locked, key, secret, identity=identity)
    with writing(args.output):
        save_model(model, args.output)
    print(f"restored {args.locked} -> {args.output}")
    return 0
