"""Authentic but malformed secrets: every size and index is checked before use, so the loader
raises ModelMismatchError (one line), never MemoryError, OverflowError, KeyError or TypeError."""

import copy

import pytest

from onnxlock import lock_model
from onnxlock.errors import KeyFormatError, ModelMismatchError
from onnxlock.fileio import sha256_bytes
from onnxlock.key import X25519Identity, X25519Recipient, open_key, seal_for
from onnxlock.runtime.restore import unlock_bytes

from conftest import MODELS

IDENTITY = X25519Identity(bytes(range(3, 35)))


@pytest.fixture(scope="module")
def locked():
    result = lock_model(MODELS / "digits_transformer.onnx", tries=1, seed=0, method="confusion",
                        recipients=[X25519Recipient(IDENTITY.public)])
    return result.model, open_key(result.key, identity=IDENTITY)


def first(secret, kind):
    return next(e for g in secret["groups"] for e in g["edits"] if e[0] == kind)


def set_p(index, value):
    def edit(secret):
        first(secret, "p")[index] = value
    return edit


def set_s(index, value):
    def edit(secret):
        first(secret, "s")[index] = value
    return edit


def set_positions(value):
    def edit(secret):
        secret["groups"][0]["positions"] = value
    return edit


CASES = {
    "block 2**31 (once allocated 22 GB)": set_p(4, 2**31),
    "offset beyond the axis": set_p(3, 10**6),
    "negative offset": set_p(3, -1),
    "axis out of range": set_p(2, 9),
    "huge axis": set_p(2, 2**70),
    "float block": set_p(4, 1.5),
    "string axis": set_p(2, "0"),
    "copies without period": lambda s: first(s, "p").extend([2, 0]),
    "edit arity": lambda s: first(s, "p").append(1),
    "unknown tensor": set_p(1, "no-such-tensor"),
    "position past 2**63": set_positions([2**64]),
    "negative position": set_positions([-1]),
    "unsorted positions": set_positions([3, 1]),
    "bool position": set_positions([True]),
    "empty positions": set_positions([]),
    "positions not a list": set_positions({"a": 1}),
    "shape step overflow": set_s(3, 2**62),
    "shape dim out of range": set_s(2, 99),
    "attribute on a missing node": lambda s: s["groups"][0]["edits"].append(["a", "nope", "group", 1]),
    "attribute item out of range": lambda s: s["groups"][0]["edits"].append(
        ["a", s["groups"][0]["edits"][0][1], "axis", 1, 5]),
    "groups missing": lambda s: s.pop("groups"),
    "groups not a list": lambda s: s.update(groups="x"),
    "group not an object": lambda s: s.update(groups=[[1, 2]]),
    "edit not a list": lambda s: s["groups"][0]["edits"].append("p"),
}


@pytest.mark.parametrize("name", CASES)
def test_malformed_secret_is_one_clean_error(locked, name):
    model, secret = locked
    edited = copy.deepcopy(secret)
    CASES[name](edited)
    key = seal_for([X25519Recipient(IDENTITY.public)], edited, model_sha256=sha256_bytes(model), method="confusion")
    with pytest.raises((ModelMismatchError, KeyFormatError)) as err:
        unlock_bytes(model, key, identity=IDENTITY)
    assert "\n" not in str(err.value)


def test_unknown_method_types_are_format_errors(locked):
    model, secret = locked
    for method in ([], {}, 3, None):
        key = seal_for([X25519Recipient(IDENTITY.public)], dict(secret, method=method),
                       model_sha256=sha256_bytes(model), method="confusion")
        with pytest.raises(KeyFormatError, match="unknown method"):
            unlock_bytes(model, key, identity=IDENTITY)
