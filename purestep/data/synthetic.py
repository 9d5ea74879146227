"""More seed datasets, generated in code: Gaussian blobs (classification) and token
sequences (language modelling)."""

from __future__ import annotations

import torch

__all__ = ["make_blobs", "make_tokens"]


def make_blobs(
    n: int, seed: int = 0, *, n_features: int = 16, n_classes: int = 4, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points around ``n_classes`` random centres: ``x`` float32 ``(n, n_features)``,
    ``y`` int64 class ids (a ``CrossEntropyLoss`` target)."""
    if n <= 0 or n_features <= 0 or n_classes <= 1:
        raise ValueError(
            f"need n > 0, n_features > 0, n_classes > 1; got {n}, {n_features}, {n_classes}"
        )
    gen = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(
        n_classes, n_features, generator=torch.Generator().manual_seed(12345)
    )
    y = torch.randint(0, n_classes, (n,), generator=gen)
    x = centres[y] + spread * torch.randn(n, n_features, generator=gen)
    return x, y


def make_tokens(
    n: int, seed: int = 0, *, vocab: int = 64, seq: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences where each token is the previous plus a per-sequence stride (mod
    ``vocab``), so a model can learn them: inputs ``(n, seq)`` and next-token targets."""
    if n <= 0 or vocab <= 1 or seq <= 0:
        raise ValueError(f"need n > 0, vocab > 1, seq > 0; got {n}, {vocab}, {seq}")
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (n, 1), generator=gen)
    stride = torch.randint(1, 4, (n, 1), generator=gen)
    tokens = (start + stride * torch.arange(seq + 1)) % vocab
    return tokens[:, :-1], tokens[:, 1:]
