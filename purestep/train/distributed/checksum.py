"""A cheap check that the replicas of a data-parallel job still hold the same state.

Data-parallel training is only right while every rank holds bitwise the same params,
buffers and optimizer state: a rank-dependent code path, a nondeterministic kernel or a
missed all-reduce lets them drift apart silently, and the run then trains N different
models. ``check_replicas`` catches it: two 64-bit fingerprints per tensor (the sum of its
bit patterns, and the sum weighted by position, so a swap of two values shows too),
computed where the tensors live, gathered from every rank in one collective, compared
with rank 0's. A mismatch raises ``ReplicaDriftError`` on every rank, naming the first
tensor that differs.
"""

from __future__ import annotations

from typing import Any

import torch

from purestep.core.state import TrainState
from purestep.pytree import tree_named_leaves
from purestep.train.distributed.faults import guard

__all__ = ["ReplicaDriftError", "check_replicas", "fingerprints"]

_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}
# Position weights cycle below this prime, so equal values at different places differ.
_CYCLE = 65521


class ReplicaDriftError(RuntimeError):
    """The ranks of a data-parallel job no longer hold the same state."""

    def __init__(self, message: str, name: str, ranks: tuple[int, ...]) -> None:
        super().__init__(message)
        self.name, self.ranks = name, ranks


def _named(state: TrainState, include_rng: bool) -> list[tuple[str, torch.Tensor]]:
    named = [(name.lstrip("."), leaf) for name, leaf in tree_named_leaves(state)]
    return [(n, t) for n, t in named if include_rng or n != "rng"]


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Two int64 sums over ``t``'s bit patterns (wrapping, so exact in any order)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bool:
        bits = t.to(torch.int64)
    elif t.is_floating_point() or t.is_complex():
        bits = t.view(_BITS[t.element_size()] if not t.is_complex() else torch.int64)
        bits = bits.to(torch.int64)
    else:
        bits = t.to(torch.int64)
    flat = bits.reshape(-1)
    weights = torch.arange(flat.numel(), device=flat.device, dtype=torch.int64) % _CYCLE + 1
    return torch.stack([flat.sum(), (flat * weights).sum()])


def fingerprints(state: TrainState, *, include_rng: bool = True) -> tuple[list[str], torch.Tensor]:
    """Names of the state's tensors (``params['fc.weight']``, ``opt_state.exp_avg[...]``,
    ``step``, ``rng``) and their fingerprints, an int64 tensor ``[len(names), 2]``."""
    named = _named(state, include_rng)
    if not named:
        return [], torch.zeros((0, 2), dtype=torch.int64)
    device = state.device
    rows = [_fingerprint(t).to(device) for _, t in named]
    return [n for n, _ in named], torch.stack(rows)


def check_replicas(
    state: TrainState, *, when: str = "", include_rng: bool = True, group: Any = None
) -> None:
    """Raise ``ReplicaDriftError`` (on every rank) if any rank's ``state`` differs from
    rank 0's, naming the first differing tensor in the state's order. ``when`` says where
    in the run (e.g. ``"after step 200"``); ``include_rng=False`` for per-rank random
    streams. A no-op outside a multi-process job."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return
    names, local = fingerprints(state, include_rng=include_rng)
    if dist.get_backend(group) != "nccl":
        local = local.cpu()
    world = dist.get_world_size(group)
    gathered = [torch.empty_like(local) for _ in range(world)]
    with guard("the replica check"):
        dist.all_gather(gathered, local, group=group)
    table = torch.stack(gathered).cpu()  # [world, tensors, 2]
    differs = (table != table[0]).any(dim=2)  # [world, tensors]
    bad = differs.any(dim=0).nonzero().flatten().tolist()
    if not bad:
        return
    first = bad[0]
    ranks = tuple(int(r) for r in differs[:, first].nonzero().flatten().tolist())
    others = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
    where = f" {when}" if when else ""
    rank_list = ", ".join(str(r) for r in ranks)
    raise ReplicaDriftError(
        f"the data-parallel replicas drifted apart{where}: {names[first]} on rank "
        f"{rank_list} differs from rank 0's{others}. Every rank must hold bitwise the same "
        "state: look for code that depends on the rank, a nondeterministic kernel, or a "
        "state that was not the same on every rank at the start (broadcast_state)",
        names[first],
        ranks,
    )
