"""AdvParams stacked under confusion channels, checked against the thief's blind peel.

A thief who knows the stack deletes the channels that look counterfeit (evaluate.attacks.peel)
and, with them, some genuine ones. If those carry the weights AdvParams moved, the peel strips
both locks at once (seen on the digits transformer: 0.35 agreement after peeling the stack where
AdvParams alone kept 0.20). So the stacked pass runs the same peel on its lock, on the calibration
inputs, and while what the peel leaves agrees with the original more than the target, searches on
in the peeled model within the weight budget: every weight it moves there is a weight of the
stacked model (``peeled_positions`` maps one to the other), so the peel no longer strips it.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm import tqdm

from ..evaluate.damage import run
from ..graph.normalize import initializer_arrays

ROUNDS = 2  # top-ups at most, each between two peels (a peel and a search each)
EXACT_INDICES = 1 << 24  # float32 holds every integer up to here: larger tensors are not mapped


def peeled_positions(locked: onnx.ModelProto, peeled: onnx.ModelProto, removed: list,
                     names: list[str]) -> dict[str, np.ndarray]:
    """Per tensor of ``names`` that survives in ``peeled`` (``locked`` with the channels ``removed``
    deleted by Peeling.without), each of its elements' flat index in ``locked``. Found by peeling
    a probe whose tensors hold their own indices; a tensor whose mapped values are not exactly
    ``peeled``'s (a deletion that computes, not slices) is left out."""
    from ..evaluate.attacks.channels import Peeling

    sizes = {t.name: math.prod(t.dims) for t in locked.graph.initializer if t.name in names}
    mapped = [name for name in names if name in sizes and sizes[name] < EXACT_INDICES]
    probe = onnx.ModelProto()
    probe.CopyFrom(locked)
    for tensor in probe.graph.initializer:
        if tensor.name in mapped:
            index = np.arange(sizes[tensor.name], dtype=np.float32).reshape(tuple(tensor.dims))
            tensor.CopyFrom(numpy_helper.from_array(index, tensor.name))
    indices = initializer_arrays(Peeling.start(probe).without(removed).model)
    before, after = initializer_arrays(locked), initializer_arrays(peeled)
    positions = {}
    for name in mapped:
        if name in indices and name in after and indices[name].shape == after[name].shape:
            where = indices[name].reshape(-1).astype(np.int64)
            if np.array_equal(before[name].reshape(-1)[where], after[name].reshape(-1)):
                positions[name] = where
    return positions


def guard(advparams, onto: onnx.ModelProto, secret: dict, new_bits: dict, head, tactic, feeds: dict,
          target: float) -> tuple[dict, dict, list[dict]]:
    """Peel the stacked lock (``onto`` with ``new_bits`` written) as a thief would and top it up in
    what is left while that agrees with the original above ``target`` (within CLOSE_ENOUGH),
    for ROUNDS rounds at most. Returns the secret and new values of the state the peel left
    lowest (the first on a tie: a top-up can move what the next peel deletes), and one record
    per peel."""
    from ..evaluate.attacks.peel import peel
    from .advparams import CLOSE_ENOUGH, with_bits, weight_names

    rounds, states = [], []
    bar = tqdm(total=ROUNDS + 1, desc="peeling the stack as a thief would", disable=not advparams.progress,
               leave=False)
    for done in range(ROUNDS + 1):
        bar.update()
        locked = with_bits(secret, onto, new_bits)
        result = peel(locked, feeds)
        peeled = result.peeling.model
        agreement = head.agreement(run(peeled, feeds, advparams.threads)[0])
        rounds.append({"channels_removed": len(result.removed), "agreement_after_peel": round(agreement, 4)})
        states.append((agreement, done, secret, new_bits))
        if agreement <= target + CLOSE_ENOUGH or not result.removed or done == ROUNDS:
            break
        positions = peeled_positions(locked, peeled, result.removed, weight_names(locked))
        secret, new_bits, topped = advparams.top_up(peeled, secret, new_bits, head, tactic, feeds, target,
                                                     positions)
        rounds[-1].update(topped)
        if not topped["weights_added"] and topped["agreement_after"] >= agreement:
            break  # nothing left to move: the budget is spent
    bar.close()
    _, kept, secret, new_bits = min(states, key=lambda state: state[:2])
    rounds[kept]["kept"] = True
    return secret, new_bits, rounds
