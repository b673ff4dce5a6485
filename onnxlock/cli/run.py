"""Run a locked model on the arrays of an .npz file, with its key; write the outputs as an .npz."""

from __future__ import annotations

import argparse

import onnxruntime as ort

from ..errors import OnnxlockError
from ..runtime import load_session
from ..runtime.feeds import format_shape, write_npz
from ..runtime.providers import CHOICES
from ..runtime.session import ORT_ERRORS
from . import passphrase
from .common import read_npz_feeds, refuse_existing, settle_pair, writing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("locked", metavar="LOCKED", help="the locked ONNX model")
    parser.add_argument("--key", required=True, metavar="KEY", help="the model's key file")
    parser.add_argument("--input", required=True, metavar="BATCH.npz",
                        help="one array per model input, named after it; other arrays are ignored")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                        help="where to write the outputs, one array per model output")
    parser.add_argument("--provider", choices=CHOICES, default="auto",
                        help="execution provider (default: auto, CUDA when available; one warning line on fallback)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    passphrase.add_identity_argument(parser)


def run(args: argparse.Namespace) -> int:
    refuse_existing(args.output, force=args.force, inputs=(args.locked, args.key, args.input))
    settle_pair(args.key)
    identity, secret = passphrase.get_identity(args)
    session = load_session(args.locked, args.key, passphrase=secret, identity=identity, providers=args.provider)
    feeds = read_npz_feeds(args.input, session)
    outputs = dict(zip((o.name for o in session.get_outputs()), infer(session, feeds)))
    with writing(args.output):
        write_npz(args.output, outputs)
    shapes = ", ".join(f"{name} {format_shape(a.shape)}" for name, a in outputs.items())
    print(f"ran {args.locked} on {session.get_providers()[0]} -> {args.output} ({shapes})")
    return 0


def infer(session: ort.InferenceSession, feeds: dict) -> list:
    """session.run, with onnxruntime's failures (e.g. inconsistent dynamic dims) as one-line errors."""
    try:
        return session.run(None, feeds)
    except ORT_ERRORS as exc:
        raise OnnxlockError(f"onnxruntime could not run the model: {exc}") from exc
