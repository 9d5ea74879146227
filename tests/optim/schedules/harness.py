"""Drive a real torch optimizer + scheduler and our Schedules side by side."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import torch

from purestep.optim.schedules import Schedule

# A run: the group lrs after construction and after each step, then the name of the
# exception that stopped it early (None if it ran to the end).
Run = tuple[list[list[float]], str | None]


def optimizer(lrs: Sequence[float]) -> torch.optim.SGD:
    """SGD over one 1-element parameter per group, group ``i`` with lr ``lrs[i]``."""
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def group_lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [float(g["lr"]) for g in opt.param_groups]


def step_torch(opt: torch.optim.Optimizer, sched: Any, metric: float | None = None) -> None:
    opt.step()  # no gradients: a no-op that tells the scheduler the optimizer stepped
    if metric is None:
        sched.step()
    else:
        sched.step(metric)


def run_torch(
    lrs: Sequence[float],
    make: Callable[[torch.optim.Optimizer], Any],
    steps: int,
    metrics: Sequence[float] | None = None,
) -> Run:
    out: list[list[float]] = []
    try:
        opt = optimizer(lrs)
        sched = make(opt)
        out.append(group_lrs(opt))
        for t in range(steps):
            step_torch(opt, sched, None if metrics is None else metrics[t])
            out.append(group_lrs(opt))
    except (ValueError, ZeroDivisionError, OverflowError) as e:
        return out, type(e).__name__
    return out, None


def run_ours(
    lrs: Sequence[float],
    schedules: Sequence[Schedule],
    steps: int,
    metrics: Sequence[float] | None = None,
    *,
    as_tensor: bool = False,
) -> Run:
    """The same with one Schedule per group (the lr passed as a 0-d float64 tensor if
    ``as_tensor``)."""
    out: list[list[float]] = []
    try:
        states, cur = [], []
        for lr, sched in zip(lrs, schedules, strict=True):
            state, new = sched.init(lr, lr)
            states.append(state)
            cur.append(torch.tensor(new, dtype=torch.float64) if as_tensor else new)
        out.append([float(x) for x in cur])
        for t in range(steps):
            metric = None if metrics is None else metrics[t]
            for g, sched in enumerate(schedules):
                states[g], cur[g] = sched.step(states[g], cur[g], metric)
            out.append([float(x) for x in cur])
    except (ValueError, ZeroDivisionError, OverflowError) as e:
        return out, type(e).__name__
    return out, None


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def same(x: float, y: float) -> bool:
    return bits(x) == bits(y) or (math.isnan(x) and math.isnan(y))


def first_difference(a: Run, b: Run) -> str | None:
    """None when both runs are bitwise equal (any NaN equal to any NaN) and stopped the same
    way, else where they differ."""
    (la, ea), (lb, eb) = a, b
    for t, (ra, rb) in enumerate(zip(la, lb, strict=False)):
        for g, (x, y) in enumerate(zip(ra, rb, strict=True)):
            if not same(x, y):
                return f"step {t}, group {g}: torch {x!r} vs ours {y!r}"
    if len(la) != len(lb) or ea != eb:
        return f"torch stopped after {len(la)} ({ea}), ours after {len(lb)} ({eb})"
    return None


def assert_same(a: Run, b: Run) -> None:
    diff = first_difference(a, b)
    assert diff is None, diff
