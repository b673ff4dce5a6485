"""Fine-tuning the locked file with a little labelled data, against the same architecture trained
from scratch (re-initialised) on the same data and steps. Needs torch (the ``[train]`` extra).

If the locked weights are worth anything to a thief, fine-tuning them beats training from scratch.
Two starts from the file: its weights as they are, and its magnitudes with the signs learned (the
sign flips keep every magnitude: each weight of rank 2 or more becomes |w| x tanh(theta), theta
drawn at random and trained, so the thief keeps what magnitudes say and bets nothing on the signs).
Scratch is trained at each start's learning rate and keeps the better: a start must win by what the
file holds, not by a faster rate.
"""

from __future__ import annotations

import numpy as np
import onnx

FRACTIONS = (0.01, 0.1)
STEPS = 300
BATCH = 32
LEARNING_RATE = 1e-3
SIGN_LEARNING_RATE = 1e-2  # theta moves through tanh: at 1e-3 the signs barely learn in 300 steps
SIGN_START = 0.5  # theta starts uniform in +-SIGN_START: random signs, magnitudes scaled by up to tanh(0.5)
RATES = (LEARNING_RATE, SIGN_LEARNING_RATE)
# (start, learning rate) per run: scratch gets every rate a start from the file gets, and its better
# result is the baseline (else a start's edge could be only its faster rate, not what the file holds)
RUNS = (("locked", LEARNING_RATE), ("signs", SIGN_LEARNING_RATE)) + tuple(("scratch", rate) for rate in RATES)
# torch seeds of fresh draws (scratch weights, random signs) are offset from the caller's: models are
# commonly trained from seed 0 or 42, and torch.manual_seed(0) would redraw the bundled models'
# own initial weights (the original's init is not the thief's to have)
INIT_SEED = 1_000_003


def to_torch(model: onnx.ModelProto):
    """The model as a trainable torch module (torchbridge.convert); every float tensor of more than
    one value is a parameter."""
    import torch

    from ...torchbridge import convert

    module = convert(model)
    for owner in module.modules():  # onnx2torch keeps initializers of plain ops (MatMul, Add) as buffers
        for name, buffer in list(owner.named_buffers(recurse=False)):
            if buffer.is_floating_point() and buffer.numel() > 1 and "running" not in name:
                del owner._buffers[name]
                owner.register_parameter(name, torch.nn.Parameter(buffer.clone()))
    return module


def reinitialise(module, seed: int) -> None:
    """Fresh weights: each layer's own initialisation; promoted tensors like a Linear layer's."""
    import torch

    torch.manual_seed(INIT_SEED + seed)
    for owner in module.modules():
        if hasattr(owner, "reset_parameters"):
            owner.reset_parameters()
        elif hasattr(owner, "reset_running_stats"):
            owner.reset_running_stats()
        for name, parameter in owner.named_parameters(recurse=False):
            if hasattr(owner, "reset_parameters"):
                continue
            with torch.no_grad():
                if parameter.ndim >= 2:
                    bound = 1.0 / np.sqrt(parameter.shape[-2])
                    parameter.uniform_(-bound, bound)
                else:
                    parameter.zero_()


def learn_signs(module, seed: int) -> None:
    """Keep each weight's magnitude (rank 2 and more) and make its sign trainable: |w| x tanh(theta),
    theta drawn uniform in +-SIGN_START."""
    import torch
    from torch.nn.utils import parametrize

    class Signed(torch.nn.Module):
        def __init__(self, magnitude):
            super().__init__()
            self.register_buffer("magnitude", magnitude)

        def forward(self, theta):
            return self.magnitude * torch.tanh(theta)

    generator = torch.Generator().manual_seed(INIT_SEED + seed)
    for owner in list(module.modules()):
        for name, parameter in list(owner.named_parameters(recurse=False)):
            if parameter.ndim < 2:
                continue
            magnitude = parameter.detach().abs().clone()
            with torch.no_grad():
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * SIGN_START)
            parametrize.register_parametrization(owner, name, Signed(magnitude))


def train(module, x: np.ndarray, y: np.ndarray, steps: int, seed: int, rate: float = LEARNING_RATE) -> None:
    import torch

    generator = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=rate)
    module.train()
    for _ in range(steps):
        index = generator.choice(len(x), size=min(BATCH, len(x)), replace=False)
        optimizer.zero_grad()
        logits = module(torch.from_numpy(x[index]))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y[index]))
        loss.backward()
        optimizer.step()


def torch_accuracy(module, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    module.eval()
    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())


def finetune_attack(locked: onnx.ModelProto, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                    test_y: np.ndarray, fractions=FRACTIONS, steps: int = STEPS, seed: int = 0) -> list[dict]:
    """Per fraction of the training data: held-out accuracy after fine-tuning the locked model as
    it is and with its signs learned (``learn_signs``), and after training the re-initialised
    architecture at each of their learning rates (the better is ``accuracy_scratch``), with the
    same samples and steps; ``advantage`` is the better start from the file over scratch."""
    results = []
    for fraction in fractions:
        count = max(2, int(round(fraction * len(train_x))))
        index = np.random.default_rng(seed).choice(len(train_x), size=count, replace=False)
        scores = {}
        for start, rate in RUNS:
            module = to_torch(locked)
            if start == "scratch":
                reinitialise(module, seed)
            elif start == "signs":
                learn_signs(module, seed)
            train(module, train_x[index], train_y[index], steps, seed, rate)
            scores[start, rate] = torch_accuracy(module, test_x, test_y)
        best = max(scores["locked", LEARNING_RATE], scores["signs", SIGN_LEARNING_RATE])
        scratch = max(scores["scratch", rate] for rate in RATES)
        results.append({"fraction": fraction, "samples": count, "steps": steps,
                        "accuracy_finetuned": round(scores["locked", LEARNING_RATE], 4),
                        "accuracy_signs_learned": round(scores["signs", SIGN_LEARNING_RATE], 4),
                        "accuracy_scratch": round(scratch, 4),
                        "accuracy_scratch_by_rate": {str(rate): round(scores["scratch", rate], 4) for rate in RATES},
                        "advantage": round(best - scratch, 4)})
    return results
