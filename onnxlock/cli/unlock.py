"""Restore the original model from a locked model and its key, and write it (the owner's way back)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import KeyFormatError, ModelFormatError
from ..filepair import NewFile, write_files
from ..graph.external import read_data, split
from ..graph.io import save_model
from ..runtime import restore_model, wire
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
    data = external_data_of(args.locked, locked)
    model = restore_model(locked, key, secret, identity=identity, data=data)
    if data is None:
        with writing(args.output):
            save_model(model, args.output)
    else:  # written as it came: the weights in OUTPUT.data beside it
        data_path = Path(args.output).parent / (Path(args.output).name + ".data")
        refuse_existing(data_path, force=args.force, inputs=(args.locked, args.key))
        graph, weights = split(model, data_path.name)
        with writing(args.output, data_path):
            write_files([NewFile(data_path, weights, 0o644), NewFile(args.output, graph, 0o644)], overwrite=args.force)
    print(f"restored {args.locked} -> {args.output}")
    return 0


def external_data_of(path: str, locked: bytes) -> bytes | None:
    """The bytes of the locked model's external data file beside it, if its graph names one."""
    try:
        names = {span.location for span in wire.scan(locked).initializers} - {None}
    except (wire.WireError, UnicodeDecodeError):
        return None  # not a locked model onnxlock wrote: restoring it says what is wrong
    if not names:
        return None
    if len(names) > 1:
        raise ModelFormatError(f"{path} points to {len(names)} external data files; a locked model has one")
    return read_data(path, names.pop())
