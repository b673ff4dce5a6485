"""Differentiable counterparts of the health measures (health.py), as losses through a TorchBridge:
what a thief without labels can take the gradient of. Lower is healthier.

- ``output``: -(soft diversity + confidence) / 2 of the first output's class scores: the entropy of
  the batch's mean predicted distribution over log(classes), and the mean top-1 probability.
- ``batchnorm``: the mismatch between each BatchNormalization's running statistics and its input's
  batch statistics (the exponent of health.batchnorm_fit), read by hooks on the torch module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from ...torchbridge import TorchBridge

LOSSES = ("output", "batchnorm")
EPS = 1e-5  # as health.batchnorm_fit


def class_scores(output: np.ndarray) -> bool:
    """Whether an output holds class scores on its last axis (what ``output`` needs)."""
    return output.ndim >= 2 and output.shape[-1] > 1 and np.issubdtype(output.dtype, np.floating)


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


def output_loss(probabilities_given: bool) -> Callable[[list], object]:
    import torch

    def loss(outputs):
        scores = outputs[0].reshape(-1, outputs[0].shape[-1])
        p = scores.clamp_min(0) if probabilities_given else torch.softmax(scores, -1)
        mean = p.mean(0)
        diversity = -(mean * torch.log(mean.clamp_min(1e-12))).sum() / np.log(p.shape[-1])
        return -(diversity + p.max(-1).values.mean()) / 2
    return loss


@contextmanager
def health_loss(bridge: TorchBridge, measure: str, feeds: dict[str, np.ndarray]) -> Iterator[Callable[[list], object]]:
    """The loss ``measure`` as a function of the bridge's outputs, valid inside the block (the
    ``batchnorm`` hooks are removed after it)."""
    import torch

    if measure == "output":
        with torch.no_grad():
            first = bridge.forward(feeds)[0].numpy()
        given = bool(first.min() >= 0 and np.allclose(first.sum(-1), 1.0, atol=1e-3))  # as health.probabilities
        yield output_loss(given)
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
