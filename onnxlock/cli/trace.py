"""Name the licensee whose copy a leaked locked model is, from the provider's own keys.

Evidence, strongest first: the suspect's SHA-256 is a key's model binding (exact, needs no
secret); else, with an identity or passphrase that opens the keys, the share of each key's sampled
values the suspect still holds (values only that lock has: its counterfeits, or its masked or
sign-flipped weights; survives re-saving and small weight edits). A restored model is the
original for every licensee: a lock leaves nothing in it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import KeyFormatError, ModelFormatError, OnnxlockError
from ..fileio import read_input, sha256_bytes
from ..graph.io import parse_model
from ..graph.patch import sample_fit
from ..key import load_identity, open_key, read_header
from ..key.envelope import FORMAT
from .common import print_json, warn

KEY_PREFIX = f"{FORMAT}/".encode("ascii")
MIN_FIT = 0.5  # a licensee is named when its fit is at least this ...
MIN_MARGIN = 0.25  # ... and this much above the next best


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suspect", metavar="SUSPECT.onnx", help="the leaked model")
    parser.add_argument("--keys", required=True, metavar="DIR", help="folder of the keys you issued (*.key)")
    parser.add_argument("--json", action="store_true", help="print the evidence as JSON")
    parser.add_argument("--identity", metavar="FILE",
                        help="your identity, if the keys are sealed to it (compares fingerprints)")
    parser.add_argument("--passphrase-env", metavar="NAME",
                        help="variable holding your passphrase, if the keys are sealed to one (compares fingerprints)")


def run(args: argparse.Namespace) -> int:
    secret = os.environ.get(args.passphrase_env) if args.passphrase_env else None
    identity = load_identity(args.identity, secret) if args.identity else None
    report = trace(read_input(args.suspect, "suspect model", ModelFormatError), key_files(args.keys),
                   identity=identity, passphrase=secret)
    if args.json:
        print_json(report)
    else:
        print_report(args.suspect, report)
    return 0


def key_files(folder: str | os.PathLike) -> list[Path]:
    """Every onnxlock key in ``folder`` (by its first line), sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise OnnxlockError(f"{folder} is not a folder")
    found = []
    for path in sorted(root.iterdir()):
        if path.is_file():
            with open(path, "rb") as handle:
                if handle.read(len(KEY_PREFIX)) == KEY_PREFIX:
                    found.append(path)
    if not found:
        raise OnnxlockError(f"no onnxlock keys in {folder}")
    return found


def trace(suspect: bytes, keys: list[Path], *, identity=None, passphrase: str | None = None) -> dict:
    """The evidence per key and a verdict: ``licensee`` (or None), ``confidence`` and ``reason``."""
    digest = sha256_bytes(suspect)
    rows = []
    for path in keys:
        try:
            header = read_header(read_input(path, "key", KeyFormatError))
        except OnnxlockError as exc:
            warn(f"skipping {path}: {exc}")
            continue
        rows.append({"key": str(path), "licensee": header.get("licensee"), "exact": header["model_sha256"] == digest,
                     "restored": None, "fit": None})
    exact = [r for r in rows if r["exact"]]
    if exact:
        names = sorted({str(r["licensee"]) for r in exact})
        return _verdict(rows, names[0] if len(names) == 1 else None, 1.0,
                        "the suspect's SHA-256 is the model binding of " + ", ".join(r["key"] for r in exact))
    if identity is None and passphrase is None:
        return _verdict(rows, None, 0.0, "no key is bound to this exact file; give --identity or "
                                         "--passphrase-env to compare fingerprints")
    model = parse_model(suspect, source="suspect model")
    for row in rows:
        try:
            secret = open_key(read_input(row["key"], "key", KeyFormatError), passphrase=passphrase, identity=identity)
        except OnnxlockError as exc:
            warn(f"cannot open {row['key']}: {exc}")
            continue
        row["restored"] = secret.get("restored_sha256") == digest
        row["fit"] = round(sample_fit(model, secret.get("fingerprint")), 4)
    if any(r["restored"] for r in rows):
        return _verdict(rows, None, 0.0, "the suspect is the restored original: it is the same for every "
                                         "licensee (a lock leaves no trace after restore)")
    fits = sorted((r for r in rows if r["fit"] is not None), key=lambda r: r["fit"], reverse=True)
    if not fits:
        return _verdict(rows, None, 0.0, "none of the keys opened with the given identity or passphrase")
    best, runner_up = fits[0]["fit"], fits[1]["fit"] if len(fits) > 1 else 0.0
    if best >= MIN_FIT and best - runner_up >= MIN_MARGIN:
        return _verdict(rows, fits[0]["licensee"], best,
                        f"it holds {best:.0%} of {fits[0]['key']}'s sampled values (next best {runner_up:.0%})")
    return _verdict(rows, None, best, f"no key's sampled values stand out (best {best:.0%}, next {runner_up:.0%})")


def _verdict(rows: list[dict], licensee: str | None, confidence: float, reason: str) -> dict:
    return {"licensee": licensee, "confidence": confidence, "reason": reason, "keys": rows}


def print_report(suspect: str, report: dict) -> None:
    if report["licensee"] is not None:
        print(f"{suspect}: licensed to {report['licensee']} (confidence {report['confidence']:.2f})")
    else:
        print(f"{suspect}: no licensee identified")
    print(f"  {report['reason']}")
    for row in report["keys"]:
        fit = "-" if row["fit"] is None else f"{row['fit']:.2f}"
        print(f"  {row['key']}: licensee {row['licensee'] or '-'}, exact {'yes' if row['exact'] else 'no'}, fit {fit}")
