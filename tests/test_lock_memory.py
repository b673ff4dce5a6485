"""A keyed lock on its own (the default, mask) is applied to the serialized model, not inside a
parsed one: the same bytes as the pass on the model, and a peak memory of about three times the
model instead of seven (the figures live in tools/bench_lock.py; the bound here only catches a
return of the extra copies)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock import lock_model
from onnxlock.graph.external import attach
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import normalize
from onnxlock.key import open_key
from onnxlock.passes import FlipSignsPass, MaskPass
from onnxlock.runtime.inplace import restore_serialized
from onnxlock.runtime.touches import tensor_digest

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

PASSES = {"mask": MaskPass, "signflip": FlipSignsPass}


def _secret(locked) -> dict:
    return open_key(locked.key, passphrase=PASSPHRASE)


@pytest.mark.parametrize("method", ["mask", "signflip"])
@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_serialized_lock_is_the_pass_applied_to_the_model(name, method):
    locked = lock_model(MODELS / f"{name}.onnx", passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, method=method)
    secret = _secret(locked)
    original = normalize(load_model(MODELS / f"{name}.onnx"))
    expected = PASSES[method].restore(original, secret)  # the pass's own XOR, on the parsed model
    assert locked.model == expected.SerializeToString()
    assert secret["restored_sha256"] == hashlib.sha256(original.SerializeToString()).hexdigest()
    arrays = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    assert secret["restored_tensors"] == {n: tensor_digest(arrays[n]) for n in secret["tensors"]}
    assert len(secret["fingerprint"]) > 0
    inits = {t.name: numpy_helper.to_array(t) for t in expected.graph.initializer}
    assert all(np.float32(inits[n].reshape(-1)[i]) == np.float32(v) for n, i, v in secret["fingerprint"])


def test_serialized_lock_with_external_data(tmp_path):
    locked = lock_model(MODELS / "digits_cnn.onnx", passphrase=PASSPHRASE, kdf_params=CHEAP_KDF,
                        external_data="weights.bin")
    secret = _secret(locked)
    model = attach(onnx.load_from_string(locked.model), locked.data, "weights.bin")
    expected = MaskPass.restore(normalize(load_model(MODELS / "digits_cnn.onnx")), secret)
    got = {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}
    assert got == {t.name: numpy_helper.to_array(t).tobytes() for t in expected.graph.initializer}
    assert "restored_sha256" not in secret and set(secret["restored_tensors"]) == set(secret["tensors"])


def _typed_weights() -> onnx.ModelProto:
    """A MatMul whose weight is stored as float_data, not raw bytes."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 4], np.linspace(-1, 1, 32).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "typed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_typed_weights_are_locked_in_the_parsed_model():
    model = _typed_weights()
    locked = lock_model(model, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF)
    secret = _secret(locked)
    assert secret["tensors"] == ["w"]
    assert locked.model == MaskPass.restore(normalize(model), secret).SerializeToString()
    assert restore_serialized(normalize(model).SerializeToString(), secret) is None  # no raw bytes to scan


def test_restore_serialized_leaves_confusion_to_the_parsed_model():
    locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=PASSPHRASE, kdf_params=CHEAP_KDF,
                        method="confusion,mask", tries=1, seed=0)
    assert restore_serialized(locked.model, _secret(locked)) is None


PEAK = """
import os, sys
from onnxlock import lock_model

def status(field):  # VmHWM, not ru_maxrss: that one carries the parent's peak over exec
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field + ":")) << 10

lock_model(sys.argv[3], passphrase=sys.argv[2], kdf_params={"n": 2**12}, seed=0)  # every lazy import done
base = status("VmRSS")
lock_model(sys.argv[1], passphrase=sys.argv[2], kdf_params={"n": 2**12}, seed=0)
print((status("VmHWM") - base) / os.path.getsize(sys.argv[1]))
"""


def _mlp(path) -> None:
    """12 MatMul layers of 4 MiB each, written to ``path``."""
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for i in range(12):
        inits.append(numpy_helper.from_array(rng.standard_normal((1024, 1024), dtype=np.float32) * 0.03, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 1024])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_default_lock_peak_memory_stays_under_four_and_a_half_models(tmp_path):
    """In a fresh process: the lock of a 48 MiB model by path peaks under 4.5x the model above the
    process before it (7.2x with the parsed-model lock, the full checker and graph-surgeon's
    exports; 3.3x measured now)."""
    _mlp(tmp_path / "mlp.onnx")
    out = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / "mlp.onnx"), PASSPHRASE,
                          str(MODELS / "digits_mlp.onnx")], check=True,
                         capture_output=True, text=True).stdout.split()[-1]
    assert 1.0 < float(out) < 4.5
