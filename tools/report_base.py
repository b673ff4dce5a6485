"""The base-model attack (``onnxlock attack base``) on models fine-tuned from a base the thief holds.

The protected model is a bundled digits model fine-tuned for a new task (digits turned a quarter
turn, or with their intensities inverted: the base does poorly on either), written back into the
base's own graph so every tensor keeps its name, as fine-tuning a published checkpoint does. It is
locked with the default stack and with ``confusion,mask``; the thief runs the attack with the bundled model as the base and,
as a control, with the same architecture trained from other random weights on the original task
(a base the protected model did not come from). Judged on the held-out split, transformed.

    PYTHONPATH=. python tools/report_base.py [--only digits_cnn] [--seeds 3]
        -> reports/base_attack.{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_zoo import load_split  # noqa: E402
from onnxlock import lock_model  # noqa: E402
from onnxlock.bundled import bundled_path  # noqa: E402
from onnxlock.evaluate.attacks import suite  # noqa: E402
from onnxlock.evaluate.attacks.channels import accuracy  # noqa: E402
from onnxlock.evaluate.attacks.truth import truth_from_secret  # noqa: E402
from onnxlock.fileio import atomic_write_bytes, sha256_bytes  # noqa: E402
from onnxlock.graph.io import parse_model  # noqa: E402
from onnxlock.graph.normalize import normalize  # noqa: E402
from onnxlock.key import open_key  # noqa: E402
from onnxlock.torchbridge import TorchBridge  # noqa: E402

MODELS = ("digits_cnn", "digits_resnet", "digits_mlp", "digits_transformer")
TASKS = {"quarter_turn": lambda x: np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3))),
         "inverted": lambda x: np.ascontiguousarray(1.0 - x)}
PASSPHRASE = "report-base-attack"
METHODS = ("confusion,signflip", "confusion,mask")  # the default stack, and values masked instead of signs flipped
STEPS, BATCH, RATE = 600, 64, 1e-3
REPORTS = Path(__file__).resolve().parent.parent / "reports"


def trained(base: onnx.ModelProto, x: np.ndarray, y: np.ndarray, seed: int, fresh: bool = False) -> onnx.ModelProto:
    """``base`` (normalized) with its initializers trained on (x, y) through torch, BatchNorm
    statistics frozen (eval mode); ``fresh``: from re-drawn weights instead of the base's."""
    import torch

    bridge = TorchBridge(base)
    held = {name: [bridge._tensor(b) for b in bindings if "running" not in b.attribute]  # BatchNorm statistics stay
            for name, bindings in bridge.bindings.items()}
    torch.manual_seed(1_000_003 + seed)
    params = []
    for tensors in held.values():
        for tensor in tensors:
            if tensor.is_floating_point() and tensor.numel() > 1:
                if fresh:
                    with torch.no_grad():
                        scale = tensor.std() if tensor.numel() > 1 and tensor.std() > 0 else 0.1
                        tensor.copy_(torch.randn_like(tensor) * scale)
                tensor.requires_grad_(True)
                params.append(tensor)
    optimizer = torch.optim.Adam(params, lr=RATE)
    rng = np.random.default_rng(seed)
    for _ in range(STEPS if not fresh else 3 * STEPS):
        index = rng.choice(len(x), size=BATCH, replace=False)
        optimizer.zero_grad()
        logits = bridge.forward({bridge.input_names[0]: x[index]})[0]
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[index])).backward()
        optimizer.step()
    out = onnx.ModelProto()
    out.CopyFrom(bridge.model)
    for tensor in out.graph.initializer:
        bindings = bridge.bindings.get(tensor.name)
        if bindings and tensor.data_type == onnx.TensorProto.FLOAT:  # shape constants are not trained
            value = bridge._tensor(bindings[0]).detach().numpy()
            value = value.T if bindings[0].transposed else value.reshape(tuple(tensor.dims))
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(value).astype(np.float32), tensor.name))
    return out


def cases(name: str, task: str, seed: int, methods: list[str]) -> list[dict]:
    """One row per lock method of the same fine-tuned model (trained once)."""
    x_train, x_test, y_train, y_test = load_split()
    transform = TASKS[task]
    data = suite.Data({"pixels": transform(x_test)}, y_test)
    base = normalize(onnx.load(bundled_path(name)))
    tuned = trained(base, transform(x_train), y_train, seed)
    other = trained(base, x_train, y_train, seed + 1, fresh=True)
    accuracies = {"fine_tuned": round(accuracy(tuned, data.feeds, y_test), 4),
                  "base_as_it_is": round(accuracy(base, data.feeds, y_test), 4),
                  "other_model_on_its_own_task": round(accuracy(other, {"pixels": x_test}, y_test), 4)}
    rows = []
    for method in methods:
        locked = lock_model(tuned, passphrase=PASSPHRASE, kdf_params={"n": 2**12}, method=method,
                            calibration={"pixels": data.feeds["pixels"][:64]})
        model = parse_model(locked.model)
        truth = truth_from_secret(model, open_key(locked.key, passphrase=PASSPHRASE,
                                                  model_sha256=sha256_bytes(locked.model)))
        rows.append({"model": name, "task": task, "seed": seed, "method": method, "accuracy": accuracies,
                     "with_the_base": suite.run_base(model, base, data, truth),
                     "with_another_model": suite.run_base(model, other, data, truth)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["# Base-model attack", "",
             "Made by `tools/report_base.py`: a bundled digits model fine-tuned for a new task (same tensor names), "
             "locked with the default stack (and with `confusion,mask`), attacked with the bundled model as the base (and with an unrelated "
             "model of the same architecture as a control). Held-out split, transformed. Accuracy chance 0.10.", "",
             "| model | task | seed | lock | fine-tuned | base as it is | locked | with the base: counterfeits AUC, removed right, signs right, accuracy | with another model: same |",
             "|---|---|---:|---|---:|---:|---:|---|---|"]
    for r in rows:
        cells = []
        for label in ("with_the_base", "with_another_model"):
            a = r[label]
            cells.append(f"{a['counterfeit_auc']}, {a['removed_counterfeit']}/{a['counterfeits']}, "
                         f"{a['signs_right']}, {a['after']['accuracy']}")
        acc = r["accuracy"]
        lines.append(f"| {r['model']} | {r['task']} | {r['seed']} | {r['method']} | {acc['fine_tuned']} | {acc['base_as_it_is']} | "
                     f"{r['with_the_base']['before']['accuracy']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(MODELS))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--methods", default=";".join(METHODS), help="lock methods, ';'-separated")
    parser.add_argument("--out", default=str(REPORTS / "base_attack"))
    args = parser.parse_args()
    rows = []
    for name in args.only.split(","):
        for task in args.tasks.split(","):
            for seed in range(args.seeds):
                for row in cases(name, task, seed, args.methods.split(";")):
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    atomic_write_bytes(Path(args.out + ".json"), (json.dumps(rows, indent=1) + "\n").encode())
    atomic_write_bytes(Path(args.out + ".md"), markdown(rows).encode())


if __name__ == "__main__":
    main()
