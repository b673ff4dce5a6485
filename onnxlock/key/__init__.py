"""Key envelope: seals a small JSON secret into an encrypted, versioned file bound to a model hash.

Knows nothing about ONNX; see ``envelope`` for the file format and ``recipients`` for key wrapping.
"""

from onnxlock.key.envelope import open_key, open_with, read_header, seal, seal_for
from onnxlock.key.recipients import Recipient, ScryptRecipient

__all__ = ["open_key", "open_with", "read_header", "seal", "seal_for", "Recipient", "ScryptRecipient"]
