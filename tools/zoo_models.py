"""The torch architectures of the zoo, in small widths so each exports in seconds (random weights).

torchvision models are built from their own classes with small configs; the detector, U-Net,
BERT/DistilBERT/GPT-2-style transformers and recurrent models are written here in plain torch
(no ultralytics or transformers install). ``ARCHS`` maps a name to (factory, example inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from onnxlock.torch_compat import prepare_torchvision

prepare_torchvision()

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models import (  # noqa: E402
    convnext, densenet, efficientnet, mobilenetv2, mobilenetv3, regnet, resnet, shufflenetv2, squeezenet,
    swin_transformer, vision_transformer,
)

IMAGE = (1, 3, 32, 32)
VOCAB, SEQ, HIDDEN = 64, 8, 32


def image(size: int = 32) -> tuple[torch.Tensor, ...]:
    return (torch.rand(1, 3, size, size),)


def tokens() -> tuple[torch.Tensor, ...]:
    ids = torch.randint(0, VOCAB, (1, SEQ))
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    mask[0, -2:] = 0
    return ids, mask


# --- torchvision, small configs -----------------------------------------------------------------


def resnet_small() -> nn.Module:
    return resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)


def resnet_bottleneck() -> nn.Module:
    return resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], num_classes=10, width_per_group=16)


def efficientnet_small() -> nn.Module:
    setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return efficientnet.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=last)


def regnet_small() -> nn.Module:
    params = regnet.BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return regnet.RegNet(params, num_classes=10, stem_width=16)


def convnext_small() -> nn.Module:
    cfg = convnext.CNBlockConfig
    return convnext.ConvNeXt([cfg(16, 32, 1), cfg(32, 64, 1), cfg(64, None, 1)], num_classes=10)


def shufflenet_small() -> nn.Module:
    return shufflenetv2.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10)


def densenet_small() -> nn.Module:
    return densenet.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)


def vit_small() -> nn.Module:
    return vision_transformer.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10)


def swin_small() -> nn.Module:
    return swin_transformer.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                            window_size=[4, 4], stochastic_depth_prob=0.0, num_classes=10)


# --- written here ---------------------------------------------------------------------------------


class ConvBnSiLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())


class C2f(nn.Module):
    """YOLOv8's split/concat bottleneck block."""

    def __init__(self, c_in: int, c_out: int, n: int = 1):
        super().__init__()
        self.hidden = c_out // 2
        self.cv1 = ConvBnSiLU(c_in, 2 * self.hidden, 1)
        self.cv2 = ConvBnSiLU((2 + n) * self.hidden, c_out, 1)
        self.m = nn.ModuleList(nn.Sequential(ConvBnSiLU(self.hidden, self.hidden), ConvBnSiLU(self.hidden, self.hidden))
                               for _ in range(n))

    def forward(self, x):
        parts = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            parts.append(parts[-1] + block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.cv1, self.cv2 = ConvBnSiLU(c, c // 2, 1), ConvBnSiLU(c * 2, c, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class TinyYolo(nn.Module):
    """A YOLOv8-style detector: C2f backbone, SPPF, upsample/concat neck, three heads (box + class)."""

    def __init__(self, classes: int = 4, reg_max: int = 4):
        super().__init__()
        self.no = classes + 4 * reg_max
        self.stem = nn.Sequential(ConvBnSiLU(3, 8, 3, 2), ConvBnSiLU(8, 16, 3, 2), C2f(16, 16))
        self.down1 = nn.Sequential(ConvBnSiLU(16, 32, 3, 2), C2f(32, 32))
        self.down2 = nn.Sequential(ConvBnSiLU(32, 64, 3, 2), C2f(64, 64), SPPF(64))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.neck1, self.neck2 = C2f(64 + 32, 32), C2f(32 + 16, 16)
        self.heads = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(c, 16), nn.Conv2d(16, self.no, 1)) for c in (16, 32, 64))

    def forward(self, x):
        p3 = self.stem(x)
        p4 = self.down1(p3)
        p5 = self.down2(p4)
        n4 = self.neck1(torch.cat([self.up(p5), p4], 1))
        n3 = self.neck2(torch.cat([self.up(n4), p3], 1))
        return tuple(head(f).view(f.shape[0], self.no, -1) for head, f in zip(self.heads, (n3, n4, p5)))


class UNet(nn.Module):
    """Two-level U-Net: ConvTranspose upsampling and skip Concat."""

    def __init__(self, classes: int = 3):
        super().__init__()

        def double(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        self.enc1, self.enc2, self.mid = double(3, 16), double(16, 32), double(32, 64)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.dec2 = nn.ConvTranspose2d(64, 32, 2, 2), double(64, 32)
        self.up1, self.dec1 = nn.ConvTranspose2d(32, 16, 2, 2), double(32, 16)
        self.out = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


class DecomposedLayerNorm(nn.Module):
    """LayerNorm written out (ReduceMean, Sub, Pow, Sqrt, Div), as older exporters and TF emit it."""

    def __init__(self, dim: int, eps: float = 1e-12):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim)), eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.register_buffer("tril", torch.tril(torch.ones(SEQ, SEQ, dtype=torch.bool)), persistent=False)

    def forward(self, x, mask=None):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        if self.causal:
            scores = scores.masked_fill(~self.tril[:t, :t], float("-inf"))
        if mask is not None:
            scores = scores + (1.0 - mask[:, None, None, :].float()) * -10000.0
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        return self.o(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, norm: Callable[[int], nn.Module], gelu: str, causal: bool, pre: bool):
        super().__init__()
        self.attn, self.pre = Attention(dim, heads, causal), pre
        self.n1, self.n2 = norm(dim), norm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate=gelu), nn.Linear(2 * dim, dim))

    def forward(self, x, mask=None):
        if self.pre:  # GPT-2
            x = x + self.attn(self.n1(x), mask)
            return x + self.ff(self.n2(x))
        x = self.n1(x + self.attn(x, mask))  # BERT
        return self.n2(x + self.ff(x))


class TinyEncoder(nn.Module):
    """BERT-style (token+position+type embeddings, post-norm, erf GELU, pooler) or DistilBERT-style
    (no type embedding, decomposed LayerNorm) classifier over ids and an attention mask."""

    def __init__(self, distil: bool = False, layers: int = 2, classes: int = 3):
        super().__init__()
        norm = DecomposedLayerNorm if distil else nn.LayerNorm
        self.tok, self.pos = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(SEQ, HIDDEN)
        self.typ = None if distil else nn.Embedding(2, HIDDEN)
        self.norm = norm(HIDDEN)
        self.blocks = nn.ModuleList(Block(HIDDEN, 4, norm, "none", False, False) for _ in range(layers))
        self.pooler = None if distil else nn.Linear(HIDDEN, HIDDEN)
        self.cls = nn.Linear(HIDDEN, classes)
        self.register_buffer("positions", torch.arange(SEQ)[None], persistent=False)

    def forward(self, ids, mask):
        x = self.tok(ids) + self.pos(self.positions[:, : ids.shape[1]])
        if self.typ is not None:
            x = x + self.typ(torch.zeros_like(ids))
        x = self.norm(x)
        for block in self.blocks:
            x = block(x, mask)
        first = x[:, 0]
        if self.pooler is not None:
            first = torch.tanh(self.pooler(first))
        return self.cls(first)


class TinyGPT(nn.Module):
    """GPT-2-style: pre-norm, causal mask, tanh GELU, LM head tied to the token embedding."""

    def __init__(self, layers: int = 2):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(SEQ, HIDDEN)
        self.blocks = nn.ModuleList(Block(HIDDEN, 4, nn.LayerNorm, "tanh", True, True) for _ in range(layers))
        self.ln_f = nn.LayerNorm(HIDDEN)
        self.register_buffer("positions", torch.arange(SEQ)[None], persistent=False)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(self.positions[:, : ids.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


class Recurrent(nn.Module):
    """Linear -> LSTM or GRU -> Linear classifier over a feature sequence."""

    def __init__(self, cell: type[nn.Module], features: int = 16, hidden: int = 32):
        super().__init__()
        self.inp, self.rnn = nn.Linear(features, hidden), cell(hidden, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 5))

    def forward(self, x):
        y, _ = self.rnn(torch.relu(self.inp(x)))
        return self.head(y[:, -1])


def sequence() -> tuple[torch.Tensor, ...]:
    return (torch.rand(1, SEQ, 16),)


ARCHS: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple]]] = {
    "resnet": (resnet_small, image),
    "resnet_bottleneck": (resnet_bottleneck, image),
    "mobilenet_v2": (lambda: mobilenetv2.mobilenet_v2(width_mult=0.25, num_classes=10), image),
    "mobilenet_v3_small": (lambda: mobilenetv3.mobilenet_v3_small(width_mult=0.25, num_classes=10), image),
    "mobilenet_v3_large": (lambda: mobilenetv3.mobilenet_v3_large(width_mult=0.25, num_classes=10), image),
    "efficientnet": (efficientnet_small, image),
    "regnet": (regnet_small, image),
    "convnext": (convnext_small, image),
    "shufflenet_v2": (shufflenet_small, image),
    "squeezenet": (lambda: squeezenet.squeezenet1_1(num_classes=10), lambda: image(64)),
    "densenet": (densenet_small, image),
    "vit": (vit_small, image),
    "swin": (swin_small, image),
    "yolo": (TinyYolo, lambda: image(64)),
    "unet": (UNet, image),
    "bert": (TinyEncoder, tokens),
    "distilbert": (lambda: TinyEncoder(distil=True), tokens),
    "gpt2": (TinyGPT, lambda: tokens()[:1]),
    "lstm": (lambda: Recurrent(nn.LSTM), sequence),
    "gru": (lambda: Recurrent(nn.GRU), sequence),
}
