"""The small models and test set shipped with onnxlock (wheel: onnxlock/_models; checkout: models/)."""

from __future__ import annotations

from pathlib import Path

from .errors import OnnxlockError

_PACKAGE = Path(__file__).resolve().parent


def bundled_dir() -> Path:
    """The folder holding the bundled files, installed or in a source checkout."""
    for candidate in (_PACKAGE / "_models", _PACKAGE.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise OnnxlockError(f"no bundled models found (looked in {_PACKAGE / '_models'} and {_PACKAGE.parent / 'models'})")


def available(suffix: str = "") -> list[str]:
    """Names of the bundled files ending in ``suffix``."""
    return sorted(p.name for p in bundled_dir().iterdir() if p.is_file() and p.name.endswith(suffix))


def bundled_path(name: str) -> Path:
    """Path of the bundled file ``name`` (e.g. 'digits_test.npz'); a model's '.onnx' may be left off."""
    folder = bundled_dir()
    for candidate in (name, f"{name}.onnx"):
        if Path(candidate).name == candidate and (folder / candidate).is_file():
            return folder / candidate
    models = ", ".join(n.removesuffix(".onnx") for n in available(".onnx"))
    raise OnnxlockError(f"no bundled model or file {name!r} (models: {models})")
