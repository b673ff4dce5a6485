"""Describe a key file (its header, never the sealed secret) or an ONNX model."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..errors import OnnxlockError
from ..graph.io import default_opset, load_model
from ..key import read_header
from ..key.envelope import FORMAT
from ..passes.confusion import parameter_count
from ..runtime.feeds import TensorSpec, format_shape, specs_from_values
from ..fileio import read_input, sha256_file
from .common import print_json, settle_pair

KEY_PREFIX = f"{FORMAT}/".encode("ascii")
# header stanza fields worth showing; 'wrapped' (the encrypted file key) and nonces are left out
_RECIPIENT_FIELDS = ("type", "n", "r", "p", "salt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a key file or an ONNX model")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def run(args: argparse.Namespace) -> int:
    settle_pair(args.file)  # a key whose lock was interrupted: finish or undo that write first
    info = describe(Path(args.file))
    if args.json:
        print_json(info)
    else:
        print_text(info)
    return 0


def describe(path: Path) -> dict:
    """What ``inspect`` shows about ``path``."""
    try:
        with open(path, "rb") as f:
            is_key = f.read(len(KEY_PREFIX)) == KEY_PREFIX
    except OSError as exc:
        raise OnnxlockError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return describe_key(path) if is_key else describe_model(path)


def describe_key(path: Path) -> dict:
    header = read_header(read_input(path, "key", OnnxlockError))
    return {
        "kind": "key",
        "file": str(path),
        "format": header["format"],
        "version": header["version"],
        "method": header["method"],
        "model_sha256": header["model_sha256"],
        "created": header["created"],
        "expires": header["expires"],
        "recipients": [{k: stanza[k] for k in _RECIPIENT_FIELDS if k in stanza} for stanza in header["recipients"]],
    }


def describe_model(path: Path) -> dict:
    model = load_model(path)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    return {
        "kind": "model",
        "file": str(path),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "opset": default_opset(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [_spec(s) for s in specs_from_values(graph.input, skip=initializers)],
        "outputs": [_spec(s) for s in specs_from_values(graph.output)],
        "parameters": parameter_count(model),
        "nodes": len(graph.node),
        "ops": dict(Counter(node.op_type for node in graph.node).most_common()),
    }


def _spec(spec: TensorSpec) -> dict:
    return {"name": spec.name, "shape": None if spec.shape is None else list(spec.shape),
            "dtype": None if spec.dtype is None else spec.dtype.name}


def print_text(info: dict) -> None:
    if info["kind"] == "key":
        _print_key(info)
    else:
        _print_model(info)


def _print_key(info: dict) -> None:
    print(f"{info['file']}: onnxlock key ({info['format']} version {info['version']}, method {info['method']})")
    print(f"  for model sha256 {info['model_sha256']}")
    print(f"  created {info['created']}, expires {info['expires'] or 'never'}")
    for stanza in info["recipients"]:
        params = ", ".join(f"{k}={v}" for k, v in stanza.items() if k not in ("type", "salt"))
        print(f"  recipient: {stanza['type']}" + (f" ({params})" if params else ""))


def _print_model(info: dict) -> None:
    print(f"{info['file']}: ONNX model, opset {info['opset']}, {info['nodes']} nodes, "
          f"{info['parameters']:,} parameters, {info['size_bytes']:,} bytes")
    print(f"  sha256 {info['sha256']}")
    for role in ("inputs", "outputs"):
        for spec in info[role]:
            print(f"  {role[:-1]:<6} {spec['name']}: {spec['dtype']} {format_shape(spec['shape'])}")
    print("  ops: " + ", ".join(f"{op} x{n}" for op, n in info["ops"].items()))
    print("  a locked model looks like any other; it is locked with a key whose model_sha256 matches the sha256 above")
