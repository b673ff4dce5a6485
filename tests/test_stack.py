"""Stacked secrets: layers restored last-applied first; malformed stacks refused cleanly."""

from __future__ import annotations

import onnx
import pytest

from onnxlock.errors import KeyFormatError
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnxlock.passes import WidenChannelsPass, restore, secret_layers, stack_secrets

from conftest import MODELS


def _same_weights(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    left, right = initializer_arrays(a), initializer_arrays(b)
    return left.keys() == right.keys() and all(left[n].tobytes() == right[n].tobytes() for n in left)


def test_two_stacked_layers_restore_in_reverse_order():
    original = normalize(load_model(MODELS / "digits_cnn.onnx"))
    first = WidenChannelsPass(ratio=0.05, seed=0, tries=1)(original)
    second = WidenChannelsPass(ratio=0.05, seed=1, tries=1)(first.model)
    secret = stack_secrets([first.secret, second.secret])
    assert _same_weights(restore(second.model, secret), original)
    try:  # restored in the wrong order, the patches do not give the original back
        wrong = restore(second.model, stack_secrets([second.secret, first.secret]))
    except Exception:
        return
    assert not _same_weights(wrong, original)


def test_plain_secret_is_a_stack_of_one():
    result = WidenChannelsPass(ratio=0.05, seed=0, tries=1)(normalize(load_model(MODELS / "digits_cnn.onnx")))
    assert secret_layers(result.secret) == [result.secret]
    assert _same_weights(restore(result.model, result.secret), restore(result.model, stack_secrets([result.secret])))


@pytest.mark.parametrize("secret", [
    {"method": "stack", "version": 1, "layers": []},
    {"method": "stack", "version": 1, "layers": "x"},
    {"method": "stack", "version": 1, "layers": [{"method": "stack", "layers": []}]},
    {"method": "stack", "version": 1, "layers": [{"method": "nonesuch"}]},
    {"method": "stack", "version": 1, "layers": [{"method": "confusion"}] * 9},
])
def test_malformed_stacks_are_key_format_errors(secret):
    model = normalize(load_model(MODELS / "digits_mlp.onnx"))
    with pytest.raises(KeyFormatError):
        restore(model, secret)
