"""The public API's edge: a bug surfaces as one clear InternalError, bad input as itself.

``@guarded("locking {model}")`` on a public function lets OnnxlockError, OSErrors about the user's own
files or machine (see ``is_user_error``) and MemoryError through unchanged, and turns any other
exception into an ``InternalError`` raised ``from None``: a ``python -c`` user sees one line saying
what failed, on which file, where in onnxlock, and what to report; the original is kept as
``.original``. Set ONNXLOCK_DEBUG=1 to get the original exception raised instead.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import inspect
import os
from pathlib import Path


from .errors import InternalError, OnnxlockError
from .fileio import shown_path
from .proto import is_message

DEBUG_ENV = "ONNXLOCK_DEBUG"
REPORT = ("this is a bug in onnxlock: please report it with the traceback "
          "(onnxlock --debug, or ONNXLOCK_DEBUG=1 in Python) and, if you can share it, the model")
# the machine ran out of something or refused access: the user's environment, whatever the path
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                      errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM}
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_inside = contextvars.ContextVar("onnxlock_inside_api", default=False)


def guarded(action: str):
    """Decorate a public function; ``action`` names what it does, with ``{arg}`` fields for its arguments."""
    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if _inside.get():  # only the outermost public call speaks to the user
                return func(*args, **kwargs)
            token = _inside.set(True)
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                try:  # bound only now: it costs 50-70 us a call
                    bound = signature.bind(*args, **kwargs)
                except TypeError as wrong_call:  # the call itself was wrong: the caller's TypeError
                    raise wrong_call from None
                paths = [v for v in bound.arguments.values() if isinstance(v, (str, os.PathLike))]
                if os.environ.get(DEBUG_ENV) or is_user_error(exc, paths):
                    raise
                described = {name: describe(value) for name, value in bound.arguments.items()}
                raise internal_error(exc, action.format_map(described)) from None
            finally:
                _inside.reset(token)
        return wrapper
    return decorate


def is_user_error(exc: BaseException, paths=()) -> bool:
    """True for bad input or a bad environment, not a bug: an OnnxlockError (other than InternalError),
    MemoryError, an OSError saying the machine ran out of space, handles or permission, or any
    OSError about one of ``paths`` (the files the user named), their folders or a file beside them."""
    if isinstance(exc, OnnxlockError):
        return not isinstance(exc, InternalError)
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, OSError):
        return False
    if exc.errno in ENVIRONMENT_ERRNOS:
        return True
    named = {_absolute(f) for f in (exc.filename, exc.filename2) if isinstance(f, (str, bytes, os.PathLike))}
    given = [_absolute(p) for p in paths]
    near = {g for g in given} | {g.parent for g in given}  # the files and their folders
    return any(name in near or name.parent in near for name in named)


def internal_error(exc: BaseException, action: str) -> InternalError:
    """The one-line InternalError for ``exc`` raised while ``action``; the original message is left out."""
    return InternalError(f"internal error while {action}: {type(exc).__name__} at {where(exc)}; {REPORT}", exc)


def where(exc: BaseException) -> str:
    """'onnxlock/graph/groups.py:88 (source_axis)': the innermost onnxlock frame of the traceback,
    else the innermost frame."""
    import traceback  # (1.5 ms to import: only a bug pays it)
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    ours = [f for f in frames if _absolute(f.filename).is_relative_to(_PACKAGE_ROOT / "onnxlock")]
    frame = (ours or frames)[-1]
    path = _absolute(frame.filename)
    shown = path.relative_to(_PACKAGE_ROOT) if path.is_relative_to(_PACKAGE_ROOT) else path.name
    return f"{shown}:{frame.lineno} ({frame.name})"


def describe(value) -> str:
    """A short name for an argument in a message: the path, or what kind of object it is."""
    if isinstance(value, (str, os.PathLike)):
        return shown_path(value)
    if is_message(value, "ModelProto"):
        return f"model '{value.graph.name}'" if value.graph.name else "a model"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value):,} bytes"
    return type(value).__name__


def _absolute(path) -> Path:
    return Path(os.fsdecode(path)).absolute()
