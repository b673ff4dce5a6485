"""Lock a model: write the locked model (safe to ship) and its encrypted key (keep it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..graph import external
from ..graph.io import load_model
from ..errors import InputDataError
from ..key.envelope import parse_expires
from ..lock import DEFAULT_METHOD, METHODS, lock_model, parse_methods, write_locked
from ..passes.advparams import DEFAULT_MAX_WEIGHTS
from ..runtime.feeds import check_feeds, load_npz
from ..passes.confusion import DEFAULT_TRIES
from ..passes.counterfeit import DEFAULT_STRATEGY, STRATEGIES
from . import passphrase
from .common import percent, print_json, refuse_existing, warn, writing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="the ONNX model to lock")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the locked model")
    parser.add_argument("--key", required=True, metavar="KEY", help="where to write the key (owner-only permissions)")
    parser.add_argument("--method", default=DEFAULT_METHOD, metavar="M[,M...]",
                        help=f"protection passes, comma-separated, from {', '.join(METHODS)} (applied in that "
                             f"order, restored in reverse; default: {DEFAULT_METHOD})")
    parser.add_argument("--max-weights", type=int, default=DEFAULT_MAX_WEIGHTS,
                        help=f"advparams: most weights changed (default: {DEFAULT_MAX_WEIGHTS})")
    parser.add_argument("--no-peel-guard", dest="peel_guard", action="store_false",
                        help="confusion,advparams: do not check the stack against a thief's blind peel and top it "
                             "up (faster; the check can take minutes on a large model)")
    parser.add_argument("--ratio", type=float, default=None,
                        help="parameter budget for confusion channels, as a share of the model's (default: 0.02; "
                             "with signflip in the stack, enough for one channel in every layer group, up to 0.15)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY,
                        help=f"how counterfeit weights are drawn (default: {DEFAULT_STRATEGY})")
    parser.add_argument("--tries", type=int, default=DEFAULT_TRIES,
                        help="random draws tried per layer group, the most damaging kept "
                             "(default: 32 for small models down to 4 from a million parameters)")
    parser.add_argument("--seed", type=int, help="random seed, for a reproducible lock")
    parser.add_argument("--calib", metavar="DATA.npz",
                        help="calibration inputs, one array per model input named after it, and for "
                             "advparams optionally 'labels' (default: random inputs)")
    parser.add_argument("--recipient", action="append", default=[], metavar="PUB",
                        help="public key file from 'onnxlock keygen' (or its text) that opens the key; "
                             "repeatable. With recipients, a passphrase is added only if its variable is set")
    parser.add_argument("--expires", metavar="DATE",
                        help="the key stops opening after DATE (YYYY-MM-DD, through that day UTC; or an ISO time)")
    parser.add_argument("--licensee", metavar="NAME",
                        help="the customer this copy is for: a fresh lock, named in the key for 'onnxlock trace'")
    parser.add_argument("--external-data", action="store_true",
                        help="store the locked model's weights in OUTPUT.data beside it (ONNX external data; "
                             "automatic for models of 1 GB and more, needed past protobuf's 2 GiB)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output and key files")
    parser.add_argument("--json", action="store_true", help="print the lock report as JSON")
    passphrase.add_argument(parser)


def run(args: argparse.Namespace) -> int:
    refuse_existing(args.output, args.key, force=args.force, inputs=(args.model, args.calib))
    methods = parse_methods(args.method)
    model = load_model(args.model)
    data_name = None
    if args.external_data or model.ByteSize() >= external.AUTO_BYTES:
        data_name = Path(args.output).name + ".data"
        refuse_existing(Path(args.output).parent / data_name, force=args.force, inputs=(args.model, args.calib))
    calibration, labels = read_calibration(args.calib, model, "advparams" in methods)
    expires = parse_expires(args.expires) if args.expires else None
    secret = (passphrase.optional_passphrase(args) if args.recipient
              else passphrase.get_passphrase(args, confirm=True, new=True))
    locked = lock_model(model, passphrase=secret, recipients=args.recipient, expires=expires,
                        licensee=args.licensee, ratio=args.ratio, strategy=args.strategy, seed=args.seed,
                        calibration=calibration, tries=args.tries, progress=sys.stderr.isatty(),
                        method=args.method, max_weights=args.max_weights, labels=labels,
                        external_data=data_name, peel_guard=args.peel_guard)
    with writing(args.output, args.key):
        write_locked(locked, args.output, args.key, force=args.force)
    if args.json:
        print_json(locked.report)
    else:
        print_summary(args, locked.report)
    return 0


def read_calibration(path, model, with_labels: bool) -> tuple[dict | None, np.ndarray | None]:
    """Calibration feeds and, when advparams can use them, the npz's integer 'labels' (else None)."""
    if not path:
        return None, None
    arrays = load_npz(path)
    labels = arrays.pop("labels", None) if with_labels else None
    feeds, unused = check_feeds(arrays, model, source=str(path))
    if unused:
        warn(f"ignoring arrays in {path} that are not model inputs: {', '.join(unused)}")
    if labels is not None and (labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer)
                               or any(len(labels) != len(a) for a in feeds.values())):
        raise InputDataError(f"{path}: 'labels' must be integers, one per calibration sample")
    return feeds, labels


def print_summary(args: argparse.Namespace, report: dict) -> None:
    print(f"locked {args.model} -> {args.output} (key: {args.key})")
    for layer in report.get("layers", [report]):
        PRINTERS.get(layer["method"], print_layer)(args, layer)
    for skipped in report.get("skipped", []) if "layers" in report else []:  # a lone method's are its own
        print(f"  {skipped['method']} skipped: {skipped['reason']}")
    if args.licensee:
        print(f"  licensed to {args.licensee}: keep a copy of the key to trace leaks ('onnxlock trace')")
    if args.recipient:
        also = " or the passphrase" if passphrase.optional_passphrase(args) else ""
        print(f"  the key opens for any of {len(args.recipient)} recipient(s){also} (onnxlock run --identity ...)")
    else:
        print("  keep the key and its passphrase safe: without both the model cannot be restored")


def print_advparams(args: argparse.Namespace, report: dict) -> None:
    print(f"  advparams: {report['weights_changed']} weights changed in {report['layers_changed']} of "
          f"{report['layers_total']} layers; calibration agreement {report['calibration_agreement_before']:.3f} "
          f"-> {report['calibration_agreement_after']:.3f}")


def print_confusion(args: argparse.Namespace, report: dict) -> None:
    inputs = "calibration data" if args.calib else "random inputs"
    print(f"  {report['groups_widened']} of {report['groups_total']} layer groups widened, "
          f"+{report['params_added']} parameters (+{percent(report['params_added'], report['params_original'])})")
    print(f"  damage on {inputs}: {report['calibration_damage']:.3f} (0 = unchanged, 1 = unrelated outputs)")
    if report.get("skipped"):
        print(f"  {len(report['skipped'])} layer group(s) left unwidened: every draw gave implausible outputs")


def print_signflip(args: argparse.Namespace, report: dict) -> None:
    print(f"  signflip: signs of {report['weights_locked']:,} values in {report['tensors']} tensors flipped by the key")


def print_mask(args: argparse.Namespace, report: dict) -> None:
    print(f"  mask: {report['weights_locked']:,} values in {report['tensors']} tensors (weights, biases, "
          "normalisation parameters) masked by the key")


def print_layer(args: argparse.Namespace, report: dict) -> None:
    print(f"  {report['method']}: applied")


PRINTERS = {"confusion": print_confusion, "advparams": print_advparams, "signflip": print_signflip, "mask": print_mask}
