"""onnxlock: lock ONNX models with confusion channels and an encrypted key; restore them exactly at load time."""

from typing import TYPE_CHECKING

from .errors import (
    InputDataError, InternalError, InvalidArgumentError, KeyAuthError, KeyExpiredError, KeyFormatError,
    ModelFormatError, ModelMismatchError, OnnxlockError, UnsafeOptionError, UnsupportedGraphError,
)
from .lazy import lazy_exports

if TYPE_CHECKING:  # the lazy names, for type checkers and editors
    from .key.identity import keygen
    from .lock import LockedModel, lock_model, write_locked
    from .runtime import load_session, restore_model

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
