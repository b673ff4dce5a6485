"""Names a package exports but imports on first use (PEP 562), so that loading a locked model
does not import the lock-time machinery (graph surgery, calibration, progress bars)."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, where: dict[str, str]):
    """A package's ``__getattr__`` and ``__dir__`` for the names in ``where`` (name -> module,
    relative to ``package``): each is imported when first asked for, then kept."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))
    return __getattr__, __dir__
