"""The loader: decrypt the key, restore the model in memory, create the onnxruntime session."""

from .providers import ProviderFallbackWarning, select_providers
from .restore import restore_model, unlock_bytes
from .session import load_session

__all__ = ["restore_model", "unlock_bytes", "load_session", "select_providers", "ProviderFallbackWarning"]
