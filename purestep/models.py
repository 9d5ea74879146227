"""Small reference models: the demo's, the parity checks', and the benchmark workloads'.

Each builder takes keyword arguments (so YAML configs can name them) and a ``seed`` that
fixes the initial weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MODELS",
    "TinyLM",
    "build_model",
    "cnn",
    "convnet",
    "layernorm_mlp",
    "linear",
    "mlp",
    "resnet8",
    "tiny_lm",
]


def _seeded(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)


def mlp(
    in_features: int = 64,
    hidden: Sequence[int] = (64, 64),
    out_features: int = 1,
    dropout: float = 0.0,
    flatten_output: bool | None = None,
    seed: int | None = 0,
) -> nn.Module:
    """Linear/ReLU stack (dropout after each hidden layer). With ``out_features=1`` the
    output is flattened to ``(N,)``, the shape ``BCEWithLogitsLoss`` targets have."""
    _seeded(seed)
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    if flatten_output if flatten_output is not None else out_features == 1:
        layers.append(nn.Flatten(0))
    return nn.Sequential(*layers)


def linear(in_features: int = 1, out_features: int = 1, seed: int | None = 0) -> nn.Module:
    """One ``nn.Linear``: linear regression (``mse``) or logistic regression. With
    ``out_features=1`` the output is flattened to ``(N,)``, the shape of a 1-d target."""
    _seeded(seed)
    layer = nn.Linear(in_features, out_features)
    return nn.Sequential(layer, nn.Flatten(0)) if out_features == 1 else nn.Sequential(layer)


def layernorm_mlp(
    width: int = 128,
    depth: int = 24,
    in_features: int | None = None,
    out_features: int = 10,
    seed: int | None = 0,
) -> nn.Module:
    """``depth`` blocks of Linear + LayerNorm + GELU (benchmark W2)."""
    _seeded(seed)
    layers: list[nn.Module] = []
    if in_features is not None and in_features != width:
        layers.append(nn.Linear(in_features, width))
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.GELU()]
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def cnn(
    in_channels: int = 1,
    channels: int = 8,
    image_size: int = 8,
    out_features: int = 10,
    seed: int | None = 0,
) -> nn.Module:
    """Two conv + BatchNorm + ReLU layers, global pooling, a linear head."""
    _seeded(seed)
    del image_size  # any size works (adaptive pooling); accepted for configs' clarity
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * channels, out_features),
    )


def convnet(
    in_channels: int = 1,
    channels: Sequence[int] = (16, 32),
    image_size: int = 16,
    out_features: int = 10,
    hidden: int = 64,
    dropout: float = 0.0,
    seed: int | None = 0,
) -> nn.Module:
    """The tutorials' small CNN: per entry of ``channels`` a 3x3 conv (no bias) + BatchNorm +
    ReLU + 2x2 max-pool, then a flattened hidden layer (dropout before the head) and a linear
    head. ``image_size`` (the input side) fixes the flattened width. With
    ``out_features=1`` the output is ``(N,)``, what ``BCEWithLogitsLoss`` takes."""
    _seeded(seed)
    if not channels:
        raise ValueError("channels must name at least one conv layer")
    side = image_size
    layers: list[nn.Module] = []
    width = in_channels
    for c in channels:
        if side < 2:
            raise ValueError(
                f"image_size={image_size} is too small for {len(channels)} 2x2 poolings"
            )
        # No conv bias: the BatchNorm after it subtracts the mean, so a bias would get only
        # a rounding-level gradient (which Adam's first steps turn into full-size moves).
        conv = nn.Conv2d(width, c, 3, padding=1, bias=False)
        layers += [conv, nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        width, side = c, side // 2
    layers += [nn.Flatten(), nn.Linear(width * side * side, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, out_features))
    if out_features == 1:
        layers.append(nn.Flatten(0))
    return nn.Sequential(*layers)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet8(
    in_channels: int = 3, width: int = 16, out_features: int = 10, seed: int | None = 0
) -> nn.Module:
    """ResNet-8 for 32x32 images: a stem and three stages of one basic block (benchmark W3)."""
    _seeded(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        _BasicBlock(width, width, 1),
        _BasicBlock(width, 2 * width, 2),
        _BasicBlock(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, out_features),
    )


class _CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, seq: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model={d} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask", torch.tril(torch.ones(seq, seq, dtype=torch.bool)), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        mask: torch.Tensor = self.mask  # type: ignore[assignment]
        att = att.masked_fill(~mask[:t, :t], float("-inf")).softmax(dim=-1)
        return self.proj((self.dropout(att) @ v).transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, seq: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = _CausalSelfAttention(d, heads, seq, dropout)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A decoder-only transformer LM whose output layer shares the embedding matrix."""

    def __init__(
        self,
        vocab: int = 64,
        d_model: int = 32,
        heads: int = 2,
        seq: int = 16,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(seq, d_model) * 0.02)
        self.blocks = nn.Sequential(*(_Block(d_model, heads, seq, dropout) for _ in range(layers)))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.tok.weight
        nn.init.normal_(
            self.tok.weight, std=0.02
        )  # tied: a unit-variance init would blow up logits

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        return self.head(self.ln(self.blocks(x)))


def tiny_lm(
    vocab: int = 64,
    d_model: int = 32,
    heads: int = 2,
    seq: int = 16,
    layers: int = 2,
    dropout: float = 0.1,
    seed: int | None = 0,
) -> nn.Module:
    """``TinyLM`` with seeded initial weights (benchmark W5 at d_model=512, layers=6)."""
    _seeded(seed)
    return TinyLM(vocab, d_model, heads, seq, layers, dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "linear": linear,
    "layernorm_mlp": layernorm_mlp,
    "cnn": cnn,
    "convnet": convnet,
    "resnet8": resnet8,
    "tiny_lm": tiny_lm,
}


def build_model(name: str, **kwargs: object) -> nn.Module:
    """A model from ``MODELS`` by name, or from ``"package.module:function"``."""
    if ":" in name:
        import importlib

        from purestep._trust import import_allowed

        import_allowed(name, "model")
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model {name!r} cannot be imported: {err}") from err
    elif name in MODELS:
        factory = MODELS[name]
    else:
        raise ValueError(
            f"unknown model {name!r}; built in: {sorted(MODELS)}, or 'module:function'"
        )
    try:
        model = factory(**kwargs)
    except TypeError as err:
        raise ValueError(f"model {name!r} rejected its arguments {kwargs}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r} built a {type(model).__name__}, not an nn.Module")
    return model
