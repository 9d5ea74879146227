"""Learning-rate schedules driving a rule's ``lr`` held in its state.

``scheduled(sgd(lr=0.1), schedules.step_lr(step_size=30, gamma=0.1))`` is the optimizer
plus the torch scheduler: the rule steps with the current lr, then the schedule computes
the next lr (torch's ``scheduler.step()`` after ``optimizer.step()``) and writes it into
the state. ``every=1`` steps the schedule with every optimizer step (per batch),
``every=n`` every n steps (per epoch of n batches), ``every=None`` only when you call
``schedule_step(opt_state, schedule)`` (per epoch by hand; ``ReduceLROnPlateau`` with the
metric).
One schedule per param group, each from that group's own base lr.

A schedule may drive the momentum too (``one_cycle_lr(cycle_momentum=True)``, as torch's
``OneCycleLR``): it is written into the rule's dynamic ``beta1`` (the Adam family) or
``momentum`` (SGD, RMSprop) alongside the lr, so that hyperparameter must be dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim.base import GradientTransformation, Optimizer, Params, Updates, as_optimizer
from purestep.optim.hyperparams import group_hyperparams, replace_group_hyperparams
from purestep.pytree import find_nodes, map_nodes, tree_map

if TYPE_CHECKING:
    from purestep.optim.schedules import Schedule

__all__ = ["ScheduledState", "schedule_step", "scheduled"]


class ScheduledState(NamedTuple):
    """``inner``: the rule's state (its lr is the scheduled one); ``schedules``: one schedule
    state per param group; ``steps``: optimizer steps taken."""

    inner: Any
    schedules: tuple[Any, ...]
    steps: torch.Tensor


def _per_group(schedule: Schedule | Sequence[Schedule], groups: int) -> tuple[Schedule, ...]:
    from purestep.optim.schedules import Schedule

    if isinstance(schedule, Schedule):
        return (schedule,) * groups
    listed = tuple(schedule)
    if len(listed) != groups or not all(isinstance(s, Schedule) for s in listed):
        raise ValueError(
            f"give one Schedule, or one per param group ({groups} groups), got {len(listed)}"
        )
    return listed


def _momentum_key(hyperparams: dict[str, torch.Tensor], group: int) -> str:
    """Which dynamic hyperparameter a momentum-cycling schedule drives: torch's
    ``OneCycleLR`` drives ``betas[0]`` where the optimizer has betas, else ``momentum``."""
    for key in ("beta1", "momentum"):
        if key in hyperparams:
            return key
    raise ValueError(
        f"param group {group}: this schedule cycles the momentum (one_cycle_lr with "
        "cycle_momentum=True, torch's default), which must be a dynamic hyperparameter of "
        "the rule: e.g. sgd(..., momentum=0.9, dynamic=('lr', 'momentum')), "
        "adam(..., dynamic=('lr', 'beta1')); or pass cycle_momentum=False. Dynamic here: "
        f"{sorted(hyperparams)}"
    )


def _written(
    sched: Schedule, state: Any, value: Any, hp: dict[str, torch.Tensor], group: int
) -> dict[str, torch.Tensor]:
    """``hp`` with the lr (and momentum, if ``sched`` drives it) a schedule step produced."""
    new = {**hp, "lr": _as_lr_tensor(value, hp["lr"])}
    if sched.momentum is not None:
        key = _momentum_key(hp, group)
        new[key] = _as_lr_tensor(sched.momentum(state), hp[key])
    return new


def _advance(
    schedules: tuple[Schedule, ...],
    states: tuple[Any, ...],
    inner: Any,
    metric: Any,
) -> tuple[tuple[Any, ...], Any]:
    groups = group_hyperparams(inner)
    new_states, new_groups = [], []
    for i, (sched, s, hp) in enumerate(zip(schedules, states, groups, strict=True)):
        s, value = sched.step(s, ops.host_value(hp["lr"]), metric)
        new_states.append(s)
        new_groups.append(_written(sched, s, value, hp, i))
    return tuple(new_states), replace_group_hyperparams(inner, new_groups)


def _as_lr_tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(dtype=like.dtype, device=like.device).reshape(())
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def scheduled(
    optimizer: Optimizer | GradientTransformation,
    schedule: Schedule | Sequence[Schedule],
    *,
    every: int | None = 1,
) -> Optimizer:
    """``optimizer`` with its learning rate(s) driven by ``schedule``.

    Args:
        optimizer: a rule whose state holds a dynamic ``lr`` (every purestep rule does by
            default), or several (param groups: one per group, in group order).
        schedule: a ``purestep.optim.schedules`` Schedule for all groups, or one per group.
        every: step the schedule after every ``every`` optimizer steps; ``None``: only on
            ``schedule_step``.

    Returns:
        An ``Optimizer`` whose state is ``ScheduledState``.
    """
    if isinstance(optimizer, GradientTransformation):
        optimizer = as_optimizer(optimizer)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"scheduled wraps an Optimizer, got {type(optimizer).__name__}")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"every must be a positive int or None, got {every!r}")
    rule = optimizer

    def init(params: Params) -> ScheduledState:
        inner = rule.init(params)
        groups = group_hyperparams(inner)
        if not groups:
            raise ValueError("the optimizer's state holds no dynamic 'lr' to schedule")
        schedules = _per_group(schedule, len(groups))
        states, new_groups = [], []
        for i, (sched, hp) in enumerate(zip(schedules, groups, strict=True)):
            base = float(hp["lr"])
            s, value = sched.init(base, base)
            states.append(s)
            new_groups.append(_written(sched, s, value, hp, i))
        return ScheduledState(
            replace_group_hyperparams(inner, new_groups),
            tuple(states),
            torch.zeros((), dtype=torch.int64, device=groups[0]["lr"].device),
        )

    def step(
        grads: Updates, state: ScheduledState, params: Params
    ) -> tuple[Params, ScheduledState]:
        new_params, inner = rule.step(grads, state.inner, params)
        steps = state.steps + 1
        if every is None:
            return new_params, ScheduledState(inner, state.schedules, steps)
        schedules = _per_group(schedule, len(state.schedules))
        due = ops.host_value(steps % every == 0) if every > 1 else True
        if not isinstance(due, torch.Tensor):
            if not due:
                return new_params, ScheduledState(inner, state.schedules, steps)
            states, inner = _advance(schedules, state.schedules, inner, None)
            return new_params, ScheduledState(inner, states, steps)
        states, advanced = _advance(schedules, state.schedules, inner, None)
        picked = _where(due, (states, advanced), (state.schedules, inner))
        return new_params, ScheduledState(picked[1], picked[0], steps)

    return Optimizer(init, step)


def _where(cond: torch.Tensor, if_true: Any, if_false: Any) -> Any:
    return tree_map(lambda a, b: torch.where(cond, a, b), if_true, if_false)


def schedule_step(
    opt_state: Any,
    schedule: Schedule | Sequence[Schedule],
    metric: float | torch.Tensor | None = None,
) -> Any:
    """Advance the schedules in ``opt_state`` by one ``scheduler.step()`` (``step(metric)``
    for ``ReduceLROnPlateau``) and write the new lrs; returns the new state (pure).

    ``schedule`` is the one given to ``scheduled`` (the state holds only tensors, not the
    functions), e.g. per epoch: ``opt_state = schedule_step(opt_state, plateau, val_loss)``.
    """
    if not find_nodes(opt_state, _is_scheduled):
        raise ValueError("schedule_step: this optimizer state has no scheduled() part")

    def advance(node: ScheduledState) -> ScheduledState:
        inner = map_nodes(advance, node.inner, _is_scheduled)  # a scheduled() inside this one
        states, inner = _advance(
            _per_group(schedule, len(node.schedules)), node.schedules, inner, metric
        )
        return ScheduledState(inner, states, node.steps)

    return map_nodes(advance, opt_state, _is_scheduled)


def _is_scheduled(node: Any) -> bool:
    return isinstance(node, ScheduledState)
