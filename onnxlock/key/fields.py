"""Checked access to fields of parsed key JSON; every problem becomes a precise KeyFormatError."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from onnxlock.errors import KeyFormatError

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object", type(None): "null"}


def b64encode(data: bytes) -> str:
    """Standard base64 without newlines."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict, canonical standard base64 (unused low bits of the last character zero, as age
    requires: a key has one spelling); raises ValueError on anything else."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64") from exc
    if b64encode(data) != text:
        raise ValueError("non-canonical base64")
    return data


def field(obj: dict, name: str, kinds: type | tuple[type, ...], where: str) -> Any:
    """Return ``obj[name]``, which must exist and be exactly one of ``kinds`` (so bool is not int)."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if name not in obj:
        raise KeyFormatError(f"{where} field '{name}' missing")
    value = obj[name]
    if type(value) not in kinds:
        expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
        raise KeyFormatError(f"{where} field '{name}' must be {expected}")
    return value


def b64_field(obj: dict, name: str, length: int, where: str) -> bytes:
    """Decode the base64 string field ``name``, which must hold exactly ``length`` bytes."""
    try:
        raw = b64decode(field(obj, name, str, where))
    except ValueError:
        raise KeyFormatError(f"{where} field '{name}' is not valid base64") from None
    if len(raw) != length:
        raise KeyFormatError(f"{where} field '{name}' must be {length} bytes, got {len(raw)}")
    return raw


def exact_fields(obj: dict, names: tuple[str, ...], where: str) -> None:
    """Require every field in ``names`` and no other: an unknown field would be silently ignored."""
    for name in names:
        if name not in obj:
            raise KeyFormatError(f"{where} field '{name}' missing")
    extra = sorted(set(obj) - set(names))
    if extra:
        raise KeyFormatError(f"{where} has unknown field '{extra[0]}'")


def json_object(data: bytes, what: str, **loads_options) -> dict:
    """``data`` parsed as a JSON object; anything else is a KeyFormatError naming ``what``."""
    try:
        value = json.loads(data.decode("utf-8"), **loads_options)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise KeyFormatError(f"{what} is not valid JSON") from None
    if type(value) is not dict:
        raise KeyFormatError(f"{what} is not a JSON object")
    return value
