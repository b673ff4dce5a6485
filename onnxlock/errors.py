"""The errors onnxlock raises; the CLI prints their message on one line and exits 1 (2 for InternalError)."""


class OnnxlockError(Exception):
    """Base of every error onnxlock raises on bad input."""


class ModelFormatError(OnnxlockError):
    """The model file is missing, truncated, corrupt or not ONNX."""


class UnsupportedGraphError(OnnxlockError):
    """The graph holds something a pass cannot handle soundly (named in the message)."""


class KeyFormatError(OnnxlockError):
    """The key file is malformed: bad magic, bad header, missing field."""


class KeyAuthError(OnnxlockError):
    """Authentication failed: wrong passphrase or corrupted key. Deliberately says nothing more."""


class ModelMismatchError(OnnxlockError):
    """The key belongs to another locked model."""


class KeyExpiredError(OnnxlockError):
    """The key's licence period is over."""


class InputDataError(OnnxlockError):
    """An input data file is missing an input, or an array has the wrong shape or type."""


class UnsafeOptionError(OnnxlockError):
    """A session option would write the restored model to disk."""


class InvalidArgumentError(OnnxlockError, ValueError):
    """An argument of the public API (or a CLI option) is out of range or of the wrong type; named in the message."""


class InternalError(OnnxlockError):
    """A bug: an unexpected exception reached the public API's edge or the CLI.

    The message says what was being done, on which file, and where it failed; it never repeats the
    original message (that could hold secret values). ``original`` is the exception itself.
    """

    def __init__(self, message: str, original: BaseException):
        super().__init__(message)
        self.original = original
