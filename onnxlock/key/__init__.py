"""Key envelope: seals a small JSON secret into an encrypted, versioned file bound to a model hash.

Knows nothing about ONNX; see ``envelope`` for the file format, ``recipients`` for key wrapping
and ``identity`` for device identity and public key files. docs/key-format.md is the spec.
"""

from onnxlock.key.envelope import SealedKey, open_key, open_with, parse_key, read_header, rekey, seal, seal_for
from onnxlock.key.identity import (
    identity_bytes, load_identity, load_recipient, parse_identity, parse_public, public_text,
)
from onnxlock.key.recipients import (
    Recipient, ScryptRecipient, X25519Identity, X25519Recipient, check_passphrase,
)

__all__ = ["SealedKey", "open_key", "open_with", "parse_key", "read_header", "rekey", "seal", "seal_for", "Recipient", "ScryptRecipient",
           "X25519Identity", "X25519Recipient", "check_passphrase", "identity_bytes", "load_identity",
           "load_recipient", "parse_identity", "parse_public", "public_text"]
