"""Differentiable counterparts of the health measures (health.py), as losses through a TorchBridge:
what a thief without labels can take the gradient of. Lower is healthier.

- ``output``: -(soft diversity + confidence) / 2 of the first output's class scores: the entropy of
  the batch's mean predicted distribution over log(classes), and the mean top-1 probability, both
  of softmax(logits / T), T (detached, at least 1) bringing the median gap between a sample's
  largest and smallest logit down to MAX_GAP: a broken lock can saturate the softmax (gaps of 1e8
  on the stacked PP-OCR classifier), where the plain probabilities have no gradient at all. A
  graph that ends in Softmax is differentiated at its input (``expose_logits``).
- ``batchnorm``: the mismatch between each BatchNormalization's running statistics and its input's
  batch statistics (the exponent of health.batchnorm_fit), read by hooks on the torch module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import onnx

from ...torchbridge import TorchBridge

LOSSES = ("output", "batchnorm")
EPS = 1e-5  # as health.batchnorm_fit
MAX_GAP = 20.0  # the typical logit gap the temperature brings the softmax down to: exp(-20) still has a gradient


def class_scores(output: np.ndarray) -> bool:
    """Whether an output holds class scores on its last axis (what ``output`` needs)."""
    return output.ndim >= 2 and output.shape[-1] > 1 and np.issubdtype(output.dtype, np.floating)


def expose_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the Softmax that makes its first output (through Identity nodes) turned into
    an Identity, so the output is the logits; ``model`` itself when there is none. Initializers
    keep their names and layout: gradients and weight positions are the locked file's."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(model.graph.output[0].name)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Softmax":
        return model
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    softmax = next(n for n in exposed.graph.node if list(n.output) == list(node.output))
    softmax.op_type = "Identity"
    del softmax.attribute[:]
    return exposed


def _batchnorms(bridge: TorchBridge) -> list:
    import torch

    return [m for m in bridge.module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            and m.running_mean is not None and m.running_var is not None]


def available(bridge: TorchBridge, feeds: dict[str, np.ndarray]) -> list[str]:
    """The losses that apply to the bridge's model."""
    import torch

    with torch.no_grad():
        first = bridge.forward(feeds)[0].numpy()
    return [name for name, applies in (("output", class_scores(first)), ("batchnorm", bool(_batchnorms(bridge))))
            if applies]


def output_loss(outputs):
    import torch

    logits = outputs[0].reshape(-1, outputs[0].shape[-1])
    gaps = logits.detach().max(-1).values - logits.detach().min(-1).values
    temperature = (gaps.median() / MAX_GAP).clamp_min(1.0)
    p = torch.softmax(logits / temperature, -1)
    mean = p.mean(0)
    diversity = -(mean * torch.log(mean.clamp_min(1e-12))).sum() / np.log(p.shape[-1])
    return -(diversity + p.max(-1).values.mean()) / 2


@contextmanager
def health_loss(bridge: TorchBridge, measure: str) -> Iterator[Callable[[list], object]]:
    """The loss ``measure`` as a function of the outputs of a bridge built on expose_logits(model),
    valid inside the block (the ``batchnorm`` hooks are removed after it)."""
    import torch

    if measure == "output":
        yield output_loss
        return
    if measure != "batchnorm":
        raise ValueError(f"unknown health loss {measure!r} (have: {', '.join(LOSSES)})")
    terms = []

    def hook(module, inputs):
        x = inputs[0].double().transpose(0, 1).reshape(inputs[0].shape[1], -1)
        var = module.running_var.double() + EPS
        terms.append((((x.mean(1) - module.running_mean.double()) ** 2 / var)
                      + torch.log((x.var(1, unbiased=False) + EPS) / var) ** 2).mean())

    handles = [m.register_forward_pre_hook(hook) for m in _batchnorms(bridge)]
    try:
        def loss(outputs):
            value = torch.stack(terms).mean()
            terms.clear()
            return value
        yield loss
    finally:
        for handle in handles:
            handle.remove()
