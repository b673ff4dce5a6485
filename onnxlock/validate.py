"""Checks of the public API's arguments, made before any work and before onnxruntime sees them.

Each failure is an InvalidArgumentError (a ValueError too) or, for calibration arrays, an
InputDataError, naming the argument, the allowed range and the value given (never a secret).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .errors import InputDataError, InvalidArgumentError
from .key.recipients import SCRYPT_DEFAULTS, scrypt_params_problem
from .runtime.feeds import check_feeds, format_shape

if TYPE_CHECKING:
    import onnx

MAX_TRIES = 1000
SEED_LIMIT = 2**64


def check_lock_options(*, ratio, strategy, seed, tries, kdf_params) -> None:
    """The scalar options of lock_model."""
    from .passes.counterfeit import STRATEGIES  # (the lock's vocabulary: a load does not import it)
    if ratio is not None and (not _is_number(ratio) or not math.isfinite(ratio) or not 0 < ratio <= 1):
        raise InvalidArgumentError(f"ratio must be a number in (0, 1], got {ratio!r}")
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if seed is not None and not (_is_integer(seed) and 0 <= seed < SEED_LIMIT):
        raise InvalidArgumentError(f"seed must be a whole number from 0 to 2**64-1 (or None), got {seed!r}")
    if tries is not None and not (_is_integer(tries) and 1 <= tries <= MAX_TRIES):
        raise InvalidArgumentError(
            f"tries must be a whole number from 1 to {MAX_TRIES} (or None for automatic), got {tries!r}")
    if kdf_params is not None:
        if not isinstance(kdf_params, Mapping) or set(kdf_params) - set(SCRYPT_DEFAULTS):
            raise InvalidArgumentError(f"kdf_params must be a dict with keys among {', '.join(SCRYPT_DEFAULTS)}")
        problem = scrypt_params_problem(**{**SCRYPT_DEFAULTS, **kdf_params})
        if problem:
            raise InvalidArgumentError(f"kdf_params: {problem}")


def check_session_arguments(passphrase, sess_options) -> None:
    """The arguments of load_session the loader does not check itself (inputs and providers it does)."""
    if not callable(passphrase):
        check_passphrase(passphrase, optional=True)
    if sess_options is not None and not isinstance(sess_options, ort.SessionOptions):
        raise InvalidArgumentError(f"sess_options must be an onnxruntime.SessionOptions, got {_kind(sess_options)}")


def check_passphrase(passphrase, *, optional: bool = False) -> None:
    if optional and passphrase is None:
        return
    if not isinstance(passphrase, str) or not passphrase:
        raise InvalidArgumentError(f"passphrase must be a non-empty string, got {_kind(passphrase)}")


def check_model_argument(model) -> None:
    import onnx  # (the lock's: a load never asks)
    if not isinstance(model, (onnx.ModelProto, str, os.PathLike)):
        raise InvalidArgumentError(f"model must be an onnx.ModelProto or a path, got {_kind(model)}")


def check_path(name: str, value) -> None:
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentError(f"{name} must be a path, got {_kind(value)}")


def check_bytes(name: str, value) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"{name} must be bytes (the file's content), got {_kind(value)}")


def check_calibration(calibration, model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    """The calibration feeds, one finite, non-empty numpy array per model input, of its dtype and shape."""
    if calibration is None:
        return None
    if not isinstance(calibration, Mapping):
        raise InputDataError(f"calibration must be a dict of numpy arrays, one per model input, "
                             f"got {_kind(calibration)}")
    for name, array in calibration.items():
        if not isinstance(array, np.ndarray):
            raise InputDataError(f"calibration array {name!r} must be a numpy array, got {_kind(array)}")
    feeds, unused = check_feeds(dict(calibration), model, source="calibration")
    if unused:
        raise InputDataError(f"calibration has arrays that are not model inputs: {', '.join(map(str, unused))} "
                             f"(inputs: {', '.join(feeds)})")
    for name, array in feeds.items():
        if array.size == 0:
            raise InputDataError(f"calibration array '{name}' is empty (shape {format_shape(array.shape)}); "
                                 "give at least one sample")
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise InputDataError(f"calibration array '{name}' holds NaN or infinite values")
    return feeds


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _kind(value) -> str:
    return "None" if value is None else type(value).__name__
