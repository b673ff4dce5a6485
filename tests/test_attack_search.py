"""The adaptive search attack's machinery: deleting the true channels one by one gives the original back."""

from __future__ import annotations

import numpy as np
import pytest

from onnxlock.evaluate.attacks import removal_patch, search_attack
from onnxlock.graph.channels import ParamEdit
from onnxlock.evaluate.damage import run
from onnxlock.graph.groups import find_groups
from onnxlock.graph.normalize import import_graph, initializer_arrays, normalize
from onnxlock.graph.patch import narrow
from onnxlock.passes import WidenChannelsPass

from test_attention_heads import attention_model
from test_groups import CONV_RELU_CONV, make, randn


@pytest.mark.parametrize("build", [lambda: make(CONV_RELU_CONV, 17, **randn(1, w1=(4, 3, 3, 3), b1=(4,),
                                                                            w2=(5, 4, 3, 3))),
                                   attention_model], ids=["conv", "attention"])
def test_removing_the_true_channels_one_by_one_restores_the_original(build):
    model = build()
    result = WidenChannelsPass(ratio=0.5, seed=2, tries=2)(model)
    locked = result.model
    for secret in reversed(result.secret["groups"]):
        for position in reversed(secret["positions"]):
            group = next(g for g in find_groups(import_graph(locked)) if g.widenable and owns(g, secret))
            locked = narrow(locked, removal_patch(group, position))
    original, restored = initializer_arrays(normalize(model)), initializer_arrays(locked)
    assert all(restored[k].tobytes() == v.tobytes() for k, v in original.items())


def owns(group, secret) -> bool:
    """Whether ``group`` widens the tensor named by the secret's first parameter edit."""
    first = next(e for e in secret["edits"] if e[0] == "p")[1]
    return any(isinstance(e, ParamEdit) and e.constant.name == first for e in group.edits)


def test_search_attack_counts_trials_and_keeps_a_valid_model():
    model = make(CONV_RELU_CONV, 17, **randn(1, w1=(4, 3, 3, 3), b1=(4,), w2=(5, 4, 3, 3)))
    result = WidenChannelsPass(ratio=0.5, seed=0, tries=2)(model)
    widened = {g["group"]: g["added"] for g in result.report["groups"]}
    feeds = {"x": np.random.default_rng(0).random((16, 3, 8, 8)).astype(np.float32)}
    labels = run(model, feeds)[0].argmax(-1)  # the original's decisions, per pixel row
    attack = search_attack(result.model, widened, feeds, labels)
    widths = sum(g["channels"] + g["added"] for g in result.report["groups"])
    assert 0 < attack["trials"] <= widths * max(widened.values())
    assert run(attack["model"], feeds)[0].shape == run(model, feeds)[0].shape
