"""The errors onnxlock raises; the CLI prints their message on one line and exits 1."""


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
