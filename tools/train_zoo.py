"""Train and export the bundled onnxlock model zoo.

Trains four small classifiers on scikit-learn's 8x8 digits data set and
exports each to ONNX (opset 17, legacy TorchScript exporter):

    digits_mlp.onnx          Flatten + three Linear layers (exported as Gemm)
    digits_cnn.onnx          three Conv + BatchNorm blocks, MaxPool, two Linear
    digits_resnet.onnx       residual block + depthwise-separable stage + GAP
    digits_transformer.onnx  two-layer encoder over the 8 image rows as tokens

Every model takes one input ``pixels`` (float32 [batch,1,8,8], values in
[0,1]) and returns one output ``logits`` (float32 [batch,10]). BatchNorm is
kept as separate ``BatchNormalization`` nodes. The held-out split is written
to ``digits_test.npz`` (``pixels``, ``labels``) and a summary to ``README.md``.

Each export is checked with onnx.checker, run in onnxruntime on the test
split and compared with torch's logits.

Needs torch and scikit-learn (``pip install '.[train]'``):

    python tools/train_zoo.py [--out models] [--epochs N]
"""

from __future__ import annotations

import argparse
import collections
import math
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

OPSET = 17
SEED = 0
BATCH_SIZE = 64
LOGIT_ATOL = 1e-4
MAX_BYTES = 1 << 20


# ---------------------------------------------------------------- data


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train, x_test, y_train, y_test); x float32 [N,1,8,8] in [0,1]."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)


# ---------------------------------------------------------------- models


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, groups: int = 1) -> list[nn.Module]:
    """Conv (same padding, no bias) + BatchNorm + ReLU."""
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


def make_mlp() -> nn.Module:
    """Flatten -> 64-128-64-10 fully connected net."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128), nn.ReLU(),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def make_cnn() -> nn.Module:
    """Three Conv+BN+ReLU blocks with one MaxPool, then a two-layer head."""
    return nn.Sequential(
        *conv_bn_relu(1, 16),
        *conv_bn_relu(16, 32),
        nn.MaxPool2d(2),
        *conv_bn_relu(32, 32),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 Conv+BN layers with an identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + x)


def make_resnet() -> nn.Module:
    """Stem, residual block, depthwise-separable stage, global average pool."""
    return nn.Sequential(
        *conv_bn_relu(1, 16),
        ResidualBlock(16),
        *conv_bn_relu(16, 16, groups=16),   # depthwise
        *conv_bn_relu(16, 32, kernel=1),    # pointwise
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention written with plain MatMul/Softmax.

    Token count and head sizes are fixed so the export has static Reshapes.
    """

    def __init__(self, dim: int, heads: int, tokens: int):
        super().__init__()
        self.dim, self.heads, self.tokens, self.head_dim = dim, heads, tokens, dim // heads
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[B,T,D] -> [B,H,T,D/H]."""
        return x.reshape(-1, self.tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(-1, self.tokens, self.dim))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer."""

    def __init__(self, dim: int, heads: int, hidden: int, tokens: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, tokens)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Rows of the 8x8 image as 8 tokens -> 2 encoder layers -> mean pool."""

    def __init__(self, dim: int = 32, heads: int = 2, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.pos = nn.Parameter(torch.randn(1, 8, dim) * 0.02)
        self.layers = nn.Sequential(*(EncoderLayer(dim, heads, hidden, 8) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixels.reshape(-1, 8, 8)) + self.pos
        x = self.norm(self.layers(x))
        return self.head(x.mean(dim=1))


# name -> (builder, default epochs, learning rate, description, ops of note)
ZOO = {
    "digits_mlp": (make_mlp, 40, 3e-3, "Flatten, Linear 64-128-64-10", "Gemm"),
    "digits_cnn": (make_cnn, 20, 1e-3, "3x Conv+BN+ReLU, MaxPool, 2x Linear",
                   "Conv, BatchNormalization, MaxPool, Gemm"),
    "digits_resnet": (make_resnet, 30, 3e-3,
                      "stem, residual block, depthwise-separable stage, GAP, Linear",
                      "Conv (group=16), BatchNormalization, Add, GlobalAveragePool"),
    "digits_transformer": (TinyTransformer, 80, 2e-3,
                           "row tokens, 2 pre-norm encoder layers (2 heads), mean pool",
                           "LayerNormalization, MatMul, Softmax, Erf"),
}


# ---------------------------------------------------------------- training


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> None:
    """Train with Adam + cross-entropy on shuffled minibatches."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(BATCH_SIZE):
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Eval-mode logits as a numpy array."""
    return model.eval()(torch.from_numpy(x)).numpy()


def param_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- export + checks


def export(model: nn.Module, path: Path) -> None:
    """Export with the legacy exporter: Linear -> Gemm, BatchNorm left unfused."""
    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.PRESERVE,  # model is in eval: skips Conv+BN fusion
    )


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> node count of the main graph, sorted by name."""
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def verify(path: Path, x: np.ndarray, y: np.ndarray, expected: np.ndarray) -> tuple[float, dict]:
    """Check the ONNX file, run it in onnxruntime, compare with torch logits.

    Returns (held-out accuracy, op counts).
    """
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert path.stat().st_size < MAX_BYTES, f"{path} is {path.stat().st_size} bytes"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["pixels"]
    assert [o.name for o in model.graph.output] == ["logits"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(["logits"], {"pixels": x})
    diff = float(np.abs(logits - expected).max())
    assert diff <= LOGIT_ATOL, f"{path.name}: onnxruntime vs torch max |diff| {diff:.2e}"
    return float((logits.argmax(1) == y).mean()), op_counts(model)


# ---------------------------------------------------------------- outputs


CALIB_SIZE = 256


def write_splits(out: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Save the held-out split (digits_test.npz) and a calibration sample of the training split
    (digits_calib.npz: what an owner passes to `onnxlock lock --calib`; never used for scoring)."""
    np.savez_compressed(out / "digits_test.npz", pixels=x_test, labels=y_test)
    np.savez_compressed(out / "digits_calib.npz", pixels=x_train[:CALIB_SIZE], labels=y_train[:CALIB_SIZE])


def write_readme(out: Path, rows: list[tuple[str, str, int, str, float]], n_test: int) -> None:
    """Write models/README.md summarising the zoo."""
    lines = [
        "# Bundled models",
        "",
        "Small classifiers for scikit-learn's 8x8 digits, made by `tools/train_zoo.py`.",
        "Input `pixels`: float32 `[batch,1,8,8]`, values in [0,1]; output `logits`: float32 "
        f"`[batch,10]`. ONNX opset {OPSET}. `digits_test.npz` holds the held-out split "
        f"({n_test} images: `pixels` float32 `[N,1,8,8]`, `labels` int64 `[N]`); `digits_calib.npz` "
        f"holds {CALIB_SIZE} training images, the calibration data for `onnxlock lock --calib`.",
        "",
        "| file | architecture | params | ONNX ops of note | held-out acc. |",
        "|---|---|---:|---|---:|",
        *(f"| `{f}` | {a} | {p:,} | {o} | {acc:.2%} |" for f, a, p, o, acc in rows),
        "",
        "Accuracy is measured with onnxruntime on `digits_test.npz`.",
        "",
        "## Regenerate",
        "",
        "```sh",
        "pip install '.[train]'   # needs torch and scikit-learn",
        "python tools/train_zoo.py",
        "```",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="output directory")
    parser.add_argument("--epochs", type=int, help="override every model's epoch count")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)

    x_train, x_test, y_train, y_test = load_split()
    write_splits(args.out, x_train, y_train, x_test, y_test)

    rows = []
    for name, (build, epochs, lr, arch, notable) in ZOO.items():
        start = time.perf_counter()
        torch.manual_seed(SEED)
        model = build()
        train(model, x_train, y_train, args.epochs or epochs, lr)
        path = args.out / f"{name}.onnx"
        export(model, path)
        acc, ops = verify(path, x_test, y_test, torch_logits(model, x_test))
        size = path.stat().st_size
        print(f"{name}: acc {acc:.4f}, {param_count(model):,} params, {size:,} bytes, "
              f"{time.perf_counter() - start:.1f}s\n  ops {ops}")
        rows.append((path.name, arch, param_count(model), notable, acc))
    write_readme(args.out, rows, len(y_test))


if __name__ == "__main__":
    main()
