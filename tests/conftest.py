"""Shared fixtures: the bundled digits model locked once (cheap KDF), and an in-process CLI runner."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from onnxlock import lock_model, write_locked
from onnxlock.cli import main
from onnxlock.runtime.session import PASSPHRASE_ENV

MODELS = Path(__file__).resolve().parent.parent / "models"
PASSPHRASE = "correct horse battery staple"
CHEAP_KDF = {"n": 2**12}  # the smallest scrypt cost the key format accepts; tests only


@dataclass(frozen=True)
class Locked:
    original: Path
    model: Path
    key: Path


def _lock(original: Path, folder: Path, seed: int) -> Locked:
    locked = lock_model(original, passphrase=PASSPHRASE, seed=seed, kdf_params=CHEAP_KDF)
    folder.mkdir(parents=True)
    result = Locked(original, folder / "locked.onnx", folder / "model.key")
    write_locked(locked, result.model, result.key)
    return result


@pytest.fixture(scope="session")
def locked_mlp(tmp_path_factory) -> Locked:
    """digits_mlp locked once for the session."""
    return _lock(MODELS / "digits_mlp.onnx", tmp_path_factory.mktemp("locked") / "a", seed=0)


@pytest.fixture(scope="session")
def locked_mlp_again(tmp_path_factory) -> Locked:
    """The same model locked a second time: another locked file, another key."""
    return _lock(MODELS / "digits_mlp.onnx", tmp_path_factory.mktemp("locked") / "b", seed=1)


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    with np.load(MODELS / "digits_test.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture
def passphrase_env(monkeypatch) -> str:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    return PASSPHRASE


@pytest.fixture
def outdir(tmp_path) -> Path:
    """An empty folder for a command's outputs."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``onnxlock ARGS...`` in-process; returns exit code, stdout and stderr."""
    def invoke(*args) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return invoke



@pytest.fixture
def fast_calls(monkeypatch):
    """Records whether each load took the loader's fast path (fast.prepare returned something)."""
    from onnxlock.runtime import fast

    calls, prepare = [], fast.prepare
    monkeypatch.setattr(fast, "prepare", lambda *args: calls.append(prepare(*args)) or calls[-1])
    return calls


def reference_keystream(version: int, seed: bytes, name: str, nbytes: int) -> bytes:
    """The mask's keystream, written from its definition with cryptography's own HKDF and ChaCha20:
    version 1, HKDF info 'onnxlock mask v1\\0' + name and a zero nonce; version 2, HKDF info
    'onnxlock mask v2', the RFC 8439 nonce SHA-256(name)[:12] and block counter 1."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = b"onnxlock mask v1\0" + name.encode() if version == 1 else b"onnxlock mask v2"
    key = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(seed)
    nonce = bytes(16) if version == 1 else (1).to_bytes(4, "little") + hashlib.sha256(name.encode()).digest()[:12]
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(bytes(nbytes))
