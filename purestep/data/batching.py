"""Deterministic batching: the order of an epoch is a function of ``(seed, epoch)`` alone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

__all__ = ["epoch_order", "iterate_batches", "num_batches"]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` used in ``epoch`` (int64, CPU)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    # Mix seed and epoch so neighbouring seeds/epochs give unrelated orders.
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9) % (2**63 - 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed))


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches ``iterate_batches`` yields for ``n`` examples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    tensors: Sequence[torch.Tensor],
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield ``tuple(t[idx] for t in tensors)`` batch by batch.

    Args:
        tensors: equal-length tensors (e.g. ``(x, y)``).
        batch_size: examples per batch.
        seed, epoch: pick the order (when ``shuffle``).
        shuffle: permute with ``epoch_order(n, seed, epoch)``; else keep the order.
        drop_last: drop a final short batch.
        start: index of the first batch to yield (to resume inside an epoch).
    """
    if not tensors:
        raise ValueError("iterate_batches needs at least one tensor")
    n = len(tensors[0])
    for i, t in enumerate(tensors):
        if len(t) != n:
            raise ValueError(f"tensors[{i}] has length {len(t)}, tensors[0] has {n}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    order = epoch_order(n, seed, epoch) if shuffle else torch.arange(n)
    for b in range(start, num_batches(n, batch_size, drop_last)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        yield tuple(t[idx] for t in tensors)
