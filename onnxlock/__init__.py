"""onnxlock: lock ONNX models with confusion channels and an encrypted key; restore them exactly at load time."""

from .errors import (
    InputDataError, InternalError, InvalidArgumentError, KeyAuthError, KeyExpiredError, KeyFormatError,
    ModelFormatError, ModelMismatchError, OnnxlockError, UnsafeOptionError, UnsupportedGraphError,
)
from .key.identity import keygen
from .lock import LockedModel, lock_model, write_locked
from .runtime import load_session, restore_model

__version__ = "0.1.0"

__all__ = [
    "lock_model", "write_locked", "LockedModel", "load_session", "restore_model", "keygen",
    "OnnxlockError", "ModelFormatError", "UnsupportedGraphError", "KeyFormatError", "KeyAuthError",
    "ModelMismatchError", "KeyExpiredError", "UnsafeOptionError", "InputDataError", "InvalidArgumentError",
    "InternalError",
]
