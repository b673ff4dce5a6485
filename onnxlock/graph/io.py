"""Load and save ONNX models with clear errors; every write is atomic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from ..errors import ModelFormatError
from ..fileio import atomic_write_bytes, read_input

if TYPE_CHECKING:
    import onnx

MIN_OPSET, MAX_OPSET = 11, 22


def parse_model(data: bytes, *, source: str = "model", kind: type | None = None) -> onnx.ModelProto:
    """Parse serialized ONNX bytes, failing with a one-line ModelFormatError; ``kind``: the
    message class (onnx's ModelProto by default, the loader's ``proto.ModelProto``)."""
    if kind is None:
        import onnx
        kind = onnx.ModelProto
    model = kind()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ModelFormatError(f"{source} is not a valid ONNX file (truncated or corrupt): {exc}") from exc
    if not model.graph.node:
        raise ModelFormatError(f"{source} is not a valid ONNX file (no graph nodes)")
    return model


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load a model from disk, external data included."""
    path = Path(path)
    data = read_input(path, "model", ModelFormatError)
    model = parse_model(data, source=str(path))
    import onnx
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # onnx reports a missing or escaping data file as ValidationError
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFormatError(f"cannot load external data of {path}: {message}") from exc
    return model


def default_opset(model: onnx.ModelProto) -> int:
    """The opset version of the default ONNX domain."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelFormatError("model imports no default-domain opset")


def check_opset(model: onnx.ModelProto) -> int:
    """Return the default opset, refusing versions outside the supported range."""
    version = default_opset(model)
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise ModelFormatError(f"opset {version} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})")
    return version


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write a model atomically (temporary file in the same folder, then rename)."""
    data = model.SerializeToString()
    atomic_write_bytes(Path(path), data, mode=0o644)
