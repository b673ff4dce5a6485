"""The loader: decrypt the key, restore the model in memory, create the onnxruntime session."""

from .restore import restore_model, unlock_bytes
from .session import load_session, select_providers

__all__ = ["restore_model", "unlock_bytes", "load_session", "select_providers"]
