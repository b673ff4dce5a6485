"""onnxlock: lock ONNX models with confusion channels and an encrypted key; restore them exactly at load time."""

from .errors import (
    InputDataError, InternalError, InvalidArgumentError, KeyAuthError, KeyExpiredError, KeyFormatError,
    ModelFormatError, ModelMismatchError, OnnxlockError, UnsafeOptionError, UnsupportedGraphError,
)
from .lazy import lazy_exports

__version__ = "0.1.0"

# imported on first use: a service that only loads models skips the lock-time imports
__getattr__, __dir__ = lazy_exports(__name__, {
    "lock_model": ".lock", "write_locked": ".lock", "LockedModel": ".lock", "keygen": ".key.identity",
    "load_session": ".runtime", "restore_model": ".runtime"})

__all__ = [
    "lock_model", "write_locked", "LockedModel", "load_session", "restore_model", "keygen",
    "OnnxlockError", "ModelFormatError", "UnsupportedGraphError", "KeyFormatError", "KeyAuthError",
    "ModelMismatchError", "KeyExpiredError", "UnsafeOptionError", "InputDataError", "InvalidArgumentError",
    "InternalError",
]
