"""Fuzzing the key path: mutated key files, headers, identities and authentic secrets.

Every case must open correctly or raise an OnnxlockError: never another exception, never a
wrong restore. X25519 identities keep each case cheap (no scrypt). Case counts are asserted,
so the total per run (10,500) is a fact of the suite, not a hope.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxlock import lock_model
from onnxlock.errors import OnnxlockError
from onnxlock.fileio import sha256_bytes
from onnxlock.key import X25519Identity, X25519Recipient, open_key, seal_for
from onnxlock.key.identity import identity_bytes, load_identity
from onnxlock.runtime.restore import unlock_bytes

from conftest import MODELS

IDENTITY = X25519Identity(bytes(range(1, 33)))
OTHER = X25519Identity(bytes(range(2, 34)))
CASES = {"key bytes": 4000, "header": 2500, "identity": 1500, "secret": 2500}


def fuzz_settings(cases: int):
    return settings(max_examples=cases, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def locked():
    """digits_transformer (its key has parameter and reshape edits) locked for IDENTITY and OTHER."""
    result = lock_model(MODELS / "digits_transformer.onnx", tries=1, seed=0, method="confusion",
                        recipients=[X25519Recipient(IDENTITY.public), X25519Recipient(OTHER.public)])
    restored = unlock_bytes(result.model, result.key, identity=IDENTITY)
    return result.model, result.key, open_key(result.key, identity=IDENTITY), restored


def check_open(key: bytes, model: bytes, restored: bytes, identity=IDENTITY) -> str:
    """Open and restore; the outcome is 'ok' (exactly right) or the OnnxlockError's class name."""
    try:
        data = unlock_bytes(model, key, identity=identity)
    except OnnxlockError as exc:
        return type(exc).__name__
    assert data == restored, "a mutated key restored a different model"
    return "ok"


# --- key files as bytes -------------------------------------------------------------------

# each 4 bytes drawn are one edit: operation, position (2 bytes), value; binary draws are cheap
edits = st.binary(min_size=4, max_size=16)
OPS = ("flip", "set", "insert", "delete", "truncate")


def mutate_bytes(data: bytes, ops: bytes) -> bytes:
    buf = bytearray(data)
    for j in range(0, len(ops) - 3, 4):
        op, where, value = OPS[ops[j] % len(OPS)], ops[j + 1] << 8 | ops[j + 2], ops[j + 3]
        i = where % (len(buf) + 1)
        if op == "flip" and i < len(buf):
            buf[i] ^= 1 << (value % 8)
        elif op == "set" and i < len(buf):
            buf[i] = value
        elif op == "insert":
            buf[i:i] = bytes([value])
        elif op == "delete" and i < len(buf):
            del buf[i]
        elif op == "truncate":
            del buf[i:]
    return bytes(buf)


def test_fuzz_key_bytes(locked):
    model, key, _, restored = locked
    outcomes = []

    @fuzz_settings(CASES["key bytes"])
    @given(edits)
    def case(ops):
        outcomes.append(check_open(mutate_bytes(key, ops), model, restored))

    case()
    assert len(outcomes) >= CASES["key bytes"]
    assert outcomes.count("ok") < len(outcomes) // 10  # almost every mutation is refused


# --- headers as JSON ----------------------------------------------------------------------

# flat on purpose: recursive strategies cost more to draw than a case costs to run
json_values = st.integers(-2**70, 2**70) | st.text(max_size=20) | st.sampled_from(
    [None, True, False, 1.5, -0.0, 1e308, "", "AAAA", "x25519", "scrypt", "onnxlock-key", "0" * 16, "ab" * 32,
     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "2999-01-01T00:00:00+00:00", [], {}, [1], [[]], {"type": "scrypt"},
     {"type": "x25519"}, 2**20, 2**31, 2**63, -1, 0])


def header_fields(header: dict) -> list[tuple]:
    """Paths of every field in the header, stanzas included."""
    paths = [(name,) for name in header]
    for i, stanza in enumerate(header["recipients"]):
        paths += [("recipients", i, name) for name in stanza]
    return paths


def test_fuzz_header(locked):
    model, key, _, restored = locked
    magic, header_line, payload, _ = key.split(b"\n")
    header = json.loads(header_line)
    paths = header_fields(header)
    outcomes = []

    @fuzz_settings(CASES["header"])
    @given(st.lists(st.tuples(st.sampled_from(paths), st.sampled_from(["set", "delete", "add"]), json_values),
                    min_size=1, max_size=3))
    def case(changes):
        edited = json.loads(header_line)
        for path, action, value in changes:
            parent = edited
            for step in path[:-1]:
                parent = parent[step] if isinstance(parent, (dict, list)) and (
                    isinstance(parent, dict) and step in parent or isinstance(parent, list) and step < len(parent)) else None
                if parent is None:
                    break
            if not isinstance(parent, dict):
                continue
            if action == "set":
                parent[path[-1]] = value
            elif action == "delete":
                parent.pop(path[-1], None)
            else:
                parent[f"{path[-1]}_"] = value
        line = json.dumps(edited, separators=(",", ":")).encode()
        outcomes.append(check_open(b"\n".join([magic, line, payload, b""]), model, restored))

    case()
    assert len(outcomes) >= CASES["header"]


# --- identity files -----------------------------------------------------------------------

def test_fuzz_identity(locked):
    model, key, _, restored = locked
    plain = identity_bytes(IDENTITY)
    outcomes = []

    @fuzz_settings(CASES["identity"])
    @given(edits)
    def case(ops):
        data = mutate_bytes(plain, ops)
        try:
            identity = load_identity(data)
        except OnnxlockError as exc:
            outcomes.append(type(exc).__name__)
            return
        outcomes.append(check_open(key, model, restored, identity))

    case()
    assert len(outcomes) >= CASES["identity"]


# --- authentic but malformed secrets ------------------------------------------------------

def secret_paths(value, path=()):
    """Paths to every value inside the secret's restore instructions (groups), and the groups themselves."""
    yield path
    if isinstance(value, dict):
        for name, item in value.items():
            yield from secret_paths(item, path + (name,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from secret_paths(item, path + (i,))


numbers = st.integers(-2**64, 2**64) | st.sampled_from([0, 1, -1, 2**31, 2**63, 2**40, 7, 64, 65, 128])
replacements = numbers | json_values | st.sampled_from(
    [["a", "n0", "group", 1], ["a", "n0", "axis", 1, 0], ["s", "x", 0, 1], ["p", "x", 0, 0, 2**31], [0, 1, 2]])


def test_fuzz_authentic_secret(locked):
    model, _, secret, restored = locked
    paths = [("groups",) + p for p in secret_paths(secret["groups"])] + [("method",), ("version",)]
    outcomes = []

    @fuzz_settings(CASES["secret"])
    @given(st.lists(st.tuples(st.sampled_from(paths), st.sampled_from(["set", "delete", "append", "scale"]),
                              replacements), min_size=1, max_size=3))
    def case(changes):
        edited = json.loads(json.dumps(secret))
        for path, action, value in changes:
            value = json.loads(json.dumps(value))  # a fresh copy: drawn lists may be shared
            parent = edited
            try:
                for step in path[:-1]:
                    parent = parent[step]
                target = parent[path[-1]]
            except (KeyError, IndexError, TypeError):
                continue
            if not isinstance(parent, (dict, list)):  # an earlier change replaced a container
                continue
            if action == "set":
                parent[path[-1]] = value
            elif action == "delete":
                del parent[path[-1]]
            elif action == "append" and isinstance(target, list):
                target.append(value)
            elif action == "scale" and type(target) is int:
                parent[path[-1]] = target * (value if type(value) is int else 2**31)
        key = seal_for([X25519Recipient(IDENTITY.public)], edited, model_sha256=sha256_bytes(model),
                       method="confusion")
        outcomes.append(check_open(key, model, restored))

    case()
    assert len(outcomes) >= CASES["secret"]
    assert "ModelMismatchError" in outcomes


def test_case_total_is_at_least_ten_thousand():
    assert sum(CASES.values()) >= 10_000
