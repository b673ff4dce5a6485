"""The loader's second round: the sign flip's fast form, what the fast path verifies for a lock that
transforms every weight (method confusion,signflip), and exact outputs on every optimisation level."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import ModelMismatchError, load_session, lock_model, write_locked
from onnxlock.key import open_key, read_header, seal
from onnxlock.passes import flip_signs as flip_module
from onnxlock.passes import secret_layers
from onnxlock.passes.flip_signs import flip_signs, keystream_bits
from onnxlock.runtime import fast
from onnxlock.runtime.restore import RESTORED_TENSORS
from onnxlock.runtime.source import LockedSource
from onnxlock.runtime.touches import Scratch, needs_digest, restore_array
from onnxlock.runtime.wire import scan

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

MODEL_NAMES = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]
LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
METHOD = "confusion,signflip"


def reference_flip(values: np.ndarray, seed: bytes, name: str) -> np.ndarray:
    """The definition: XOR each value's sign byte with its keystream bit."""
    flipped = values.copy()
    width = values.dtype.itemsize
    sign = 0 if values.dtype.byteorder == ">" else width - 1
    flipped.view(np.uint8).reshape(-1, width)[:, sign] ^= keystream_bits(seed, name, values.size) << 7
    return flipped


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<f8", ">f4"])
def test_chunked_flip_equals_the_keystream_across_chunks(dtype, monkeypatch):
    monkeypatch.setattr(flip_module, "FLIP_CHUNK", 64)  # many chunks, and a ragged last one
    values = np.random.default_rng(0).standard_normal((37, 29)).astype(dtype)
    values.flat[:4] = [0.0, -0.0, np.inf, np.nan]
    want = reference_flip(values, bytes(range(32)), "w")
    out = np.empty_like(values)
    readonly = values.copy()
    readonly.flags.writeable = False
    flip_signs(readonly, bytes(range(32)), "w", out=out)
    assert out.tobytes() == want.tobytes()
    flip_signs(values, bytes(range(32)), "w")  # in place
    assert values.tobytes() == want.tobytes()
    assert np.mean(want.view(np.uint8) != readonly.view(np.uint8)) > 0.05  # about half the signs moved


@pytest.fixture(scope="module")
def every_weight(tmp_path_factory):
    """The four digits models locked with confusion channels and sign flips, at an explicit ratio
    that leaves some layer groups without channels (tensors only the sign flips touch)."""
    folder = tmp_path_factory.mktemp("signflip")
    result = {}
    for name in MODEL_NAMES:
        locked = lock_model(MODELS / f"{name}.onnx", passphrase=PASSPHRASE, seed=0, kdf_params=CHEAP_KDF,
                            tries=1, method=METHOD, ratio=0.02)
        result[name] = (folder / f"{name}.onnx", folder / f"{name}.key")
        write_locked(locked, *result[name])
    return result


@pytest.fixture(params=["whole", "skeleton"])
def layout(request, monkeypatch):
    """Small models are restored whole; with INLINE_BYTES 0 they take the large models' skeleton path."""
    if request.param == "skeleton":
        monkeypatch.setattr(fast, "INLINE_BYTES", 0)
    return request.param


def outputs(session, digits):
    return session.run(None, {i.name: digits[i.name][:64] for i in session.get_inputs()})


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_weight_restored_bit_identical(name, level, layout, every_weight, digits, fast_calls):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = load_session(*every_weight[name], passphrase=PASSPHRASE, providers="cpu", sess_options=options)
    plain = ort.InferenceSession(str(MODELS / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
    assert fast_calls and fast_calls[-1] is not None
    assert all(np.array_equal(a, b) for a, b in zip(outputs(session, digits), outputs(plain, digits)))


def test_shortcuts_equal_the_recorded_digests(every_weight):
    """Every touched tensor the fast path restores by shortcut equals what passes.restore gave at
    lock time, signflip-only tensors included (the fast path does not re-hash those)."""
    from onnxlock.runtime.touches import tensor_digest
    model_path, key_path = every_weight["digits_resnet"]
    secret = open_key(key_path.read_bytes(), passphrase=PASSPHRASE)
    data = model_path.read_bytes()
    spans = {span.name: span for span in scan(data).initializers}
    assert set(secret[RESTORED_TENSORS]) - needs_digest(secret)  # some tensors only signflip touches
    scratch = Scratch()
    for name, digest in secret[RESTORED_TENSORS].items():
        assert tensor_digest(restore_array(secret, name, spans[name].array(data))) == digest
        # the same through a scratch buffer reused from tensor to tensor, and never returned in it
        restored = restore_array(secret, name, spans[name].array(data), scratch)
        assert tensor_digest(restored) == digest and not scratch.holds(restored)


def forge_digest(key_path, pick) -> bytes:
    secret = open_key(key_path.read_bytes(), passphrase=PASSPHRASE)
    name = pick(secret)
    secret[RESTORED_TENSORS][name] = "0" * 64
    header = read_header(key_path.read_bytes())
    return seal(secret, model_sha256=header["model_sha256"], method=header["method"], passphrase=PASSPHRASE,
                kdf_params=CHEAP_KDF)


def test_what_the_fast_path_verifies(layout, every_weight, digits):
    """Confusion channels and sign flips are undone by the passes' own array code, so the fast
    path checks no digest for their tensors (the file hash and the key's tag bind everything the
    code reads: a forged digest goes unread there) and verify='full' still checks every one.
    (Where a shortcut is not the pass's own code, AdvParams, test_loader_fast checks the digest.)"""
    model_path, key_path = every_weight["digits_resnet"]
    assert needs_digest(open_key(key_path.read_bytes(), passphrase=PASSPHRASE)) == set()
    forged = forge_digest(key_path, lambda secret: sorted(secret[RESTORED_TENSORS])[0])
    session = load_session(model_path, forged, passphrase=PASSPHRASE, providers="cpu")
    plain = ort.InferenceSession(str(MODELS / "digits_resnet.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(outputs(session, digits)[0], outputs(plain, digits)[0])
    with pytest.raises(ModelMismatchError, match="does not match the original"):
        load_session(model_path, forged, passphrase=PASSPHRASE, providers="cpu", verify="full")


def test_a_signflip_layer_names_every_weight(every_weight):
    secret = open_key(every_weight["digits_cnn"][1].read_bytes(), passphrase=PASSPHRASE)
    assert [layer["method"] for layer in secret_layers(secret)] == ["confusion", "signflip"]


@pytest.mark.parametrize("given", ["path", "bytes"])
def test_a_span_read_is_a_writable_copy_of_its_bytes(every_weight, given):
    """What the loader restores in place: a copy of the span's bytes read from the file (or the
    bytes given), never the mapped or given buffer itself."""
    path = every_weight["digits_cnn"][0]
    source = LockedSource(path if given == "path" else path.read_bytes(), ModelMismatchError)
    try:
        span = max(scan(source.buffer).initializers, key=lambda s: s.nbytes)
        read = source.read(*span.data)
        assert read.flags.writeable and read.tobytes() == bytes(source.buffer[span.data[0]:span.data[1]])
        read[:] = 0
        assert span.array(source.buffer).any()  # the source is untouched
    finally:
        source.close()


@pytest.mark.parametrize("threads", ["available", "refused"])
@pytest.mark.parametrize("defer", [True, False])
def test_the_locked_file_hash_is_the_files_sha256(tmp_path, monkeypatch, threads, defer):
    """A 64 KiB-4 MiB file is hashed in a thread of its own (started at once or by start_hash);
    where the process can start no thread, in the caller's."""
    import _thread
    import hashlib

    if threads == "refused":
        def refuse(*_):
            raise RuntimeError("can't start new thread")
        monkeypatch.setattr(_thread, "start_new_thread", refuse)
    path = tmp_path / "model.bin"
    path.write_bytes(np.random.default_rng(0).bytes(200_000))
    source = LockedSource(path, ModelMismatchError, defer=defer)
    try:
        source.start_hash()
        assert source.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    finally:
        source.close()
