"""Deterministic batching: the order of an epoch is a function of ``(seed, epoch)`` alone.

So a run can stop anywhere and resume at ``(epoch, batch)`` with exactly the batches an
uninterrupted run would have seen (``Batches.epoch(epoch, start=batch)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

__all__ = ["Batches", "epoch_order", "iterate_batches", "num_batches"]


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


class Batches:
    """The mini-batches of a dataset, epoch by epoch, in a seeded order.

    Args:
        data: equal-length tensors ``(inputs..., targets)``, or a map-style
            ``torch.utils.data.Dataset`` whose samples ``default_collate`` can stack.
        batch_size: examples per batch.
        seed: with the epoch number, picks the order (``epoch_order``).
        shuffle: permute every epoch; else keep the data's order.
        drop_last: drop a final short batch.
        device: move each batch there.
        shard: ``(rank, world_size)`` for data-parallel training: every rank walks the same
            global batches (the order depends on ``seed`` and the epoch only, never on the
            world size) and takes its contiguous slice of each (``tensor_split``), so the
            ranks' shards of a batch are disjoint and together the whole global batch.
            ``batch_size`` is the global batch size and must be divisible by
            ``world_size``; a final short batch (``drop_last=False``) is split as evenly
            as it goes and must hold at least ``world_size`` examples.

    ``batches.epoch(e, start=b)`` yields epoch ``e`` from batch ``b`` on; iterating the
    object itself yields epoch 0. ``len(batches)`` is the number of batches per epoch.
    """

    def __init__(
        self,
        data: Sequence[torch.Tensor] | Dataset[Any],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        device: str | torch.device | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.shard = _check_shard(shard, batch_size)
        if isinstance(data, Dataset):
            self._tensors: tuple[torch.Tensor, ...] | None = None
            self._dataset: Dataset[Any] | None = data
            n = len(data)  # type: ignore[arg-type]
        else:
            tensors = tuple(data)
            if not tensors:
                raise ValueError("Batches needs at least one tensor")
            for i, t in enumerate(tensors):
                if not isinstance(t, torch.Tensor):
                    raise TypeError(f"data[{i}] must be a tensor, got {type(t).__name__}")
                if len(t) != len(tensors[0]):
                    raise ValueError(
                        f"data[{i}] has length {len(t)}, data[0] has {len(tensors[0])}"
                    )
            if device is not None:
                tensors = tuple(t.to(device) for t in tensors)
            self._tensors, self._dataset = tensors, None
            n = len(tensors[0])
        self.num_examples = n
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = torch.device(device) if device is not None else None
        if len(self) == 0:
            raise ValueError(
                f"{n} examples make no batch of {batch_size} with drop_last=True; "
                "use a smaller batch_size"
            )
        self._check_last()

    def __len__(self) -> int:
        return num_batches(self.num_examples, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self.epoch(0)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Any, ...]]:
        """Epoch ``epoch``'s batches from index ``start`` on."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in [0, {len(self)}], got {start}")
        order = (
            epoch_order(self.num_examples, self.seed, epoch)
            if self.shuffle
            else torch.arange(self.num_examples)
        )
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.shard is not None:
                rank, world = self.shard
                idx = idx.tensor_split(world)[rank]
            yield self._take(idx)

    def sharded(self, rank: int, world_size: int) -> Batches:
        """The same batches, rank ``rank``'s shard of each (see ``shard``)."""
        twin = object.__new__(Batches)
        twin.__dict__.update(self.__dict__)
        twin.shard = _check_shard((rank, world_size), self.batch_size)
        twin._check_last()
        return twin

    def _check_last(self) -> None:
        last = self.num_examples - (len(self) - 1) * self.batch_size
        if self.shard is not None and last < self.shard[1]:
            raise ValueError(
                f"the last batch of each epoch holds {last} examples ({self.num_examples} "
                f"examples in batches of {self.batch_size}), fewer than the {self.shard[1]} "
                "ranks it is split across: use drop_last=True or another batch_size"
            )

    def _take(self, idx: torch.Tensor) -> tuple[Any, ...]:
        if self._tensors is not None:
            if self._tensors[0].device.type != "cpu":
                idx = idx.to(self._tensors[0].device)
            return tuple(t[idx] for t in self._tensors)
        assert self._dataset is not None
        batch = default_collate([self._dataset[int(i)] for i in idx])
        out = tuple(batch) if isinstance(batch, list | tuple) else (batch,)
        if self.device is not None:
            out = tuple(x.to(self.device) if isinstance(x, torch.Tensor) else x for x in out)
        return out


def _check_shard(shard: Any, batch_size: int) -> tuple[int, int] | None:
    """``shard`` validated: None, or ``(rank, world_size)`` with ``world_size`` dividing
    ``batch_size``."""
    if shard is None:
        return None
    if (
        not isinstance(shard, tuple | list)
        or len(shard) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in shard)
    ):
        raise TypeError(f"shard must be a (rank, world_size) pair of ints, got {shard!r}")
    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: need 0 <= rank < world_size, got rank {rank}, world_size {world}")
    if batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) is not divisible by the world size "
            f"{world}: every rank must get an equal shard"
        )
    return (rank, world)
