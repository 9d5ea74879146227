"""Schedules and states from torch.optim.lr_scheduler objects, to continue them functionally.

``schedule_from_torch(scheduler)`` configures one ``Schedule`` per param group from the
scheduler's attributes; ``schedule_state_from_torch(scheduler, i)`` reads group ``i``'s state
(``last_epoch``, ``base_lrs[i]``, counters ...). A scheduler that has already stepped then
continues bitwise: ``schedule.step(state, group["lr"], metric)`` gives torch's next lr.
"""

from __future__ import annotations

from typing import Any

import torch.optim.lr_scheduler as tls

from purestep._compat import (
    child_schedulers,
    one_cycle_anneal_strategy,
    one_cycle_phases,
    sequential_milestones,
)
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import (
    ChainedState,
    PlateauState,
    Schedule,
    ScheduleState,
    SequentialState,
    WarmRestartsState,
)
from purestep.optim.schedules.compose import chained_scheduler, sequential_lr
from purestep.optim.schedules.constant import constant_lr
from purestep.optim.schedules.cosine import cosine_annealing_lr, cosine_annealing_warm_restarts
from purestep.optim.schedules.exponential import exponential_lr
from purestep.optim.schedules.lambdas import lambda_lr, multiplicative_lr
from purestep.optim.schedules.linear import linear_lr
from purestep.optim.schedules.one_cycle import one_cycle_from_phases
from purestep.optim.schedules.plateau import reduce_on_plateau
from purestep.optim.schedules.polynomial import polynomial_lr
from purestep.optim.schedules.step import multi_step_lr, step_lr

__all__ = ["cycles_momentum", "schedule_from_torch", "schedule_state_from_torch"]

_EPOCH_CLASSES: tuple[type, ...] = (
    tls.StepLR,
    tls.MultiStepLR,
    tls.ConstantLR,
    tls.LinearLR,
    tls.ExponentialLR,
    tls.PolynomialLR,
    tls.CosineAnnealingLR,
    tls.LambdaLR,
    tls.MultiplicativeLR,
    tls.OneCycleLR,
)
_SUPPORTED: tuple[type, ...] = (
    *_EPOCH_CLASSES,
    tls.CosineAnnealingWarmRestarts,
    tls.ReduceLROnPlateau,
    tls.SequentialLR,
    tls.ChainedScheduler,
)


def _check_supported(scheduler: Any) -> None:
    # Exact classes only: a subclass may override get_lr/step.
    if type(scheduler) not in _SUPPORTED:
        names = ", ".join(c.__name__ for c in _SUPPORTED)
        raise ValueError(
            f"no Schedule for {type(scheduler).__name__}: supported classes are {names}"
        )


def _one_schedule(s: Any, group: int) -> Schedule:
    _check_supported(s)
    cls = type(s)
    if cls is tls.StepLR:
        return step_lr(s.step_size, s.gamma)
    if cls is tls.MultiStepLR:
        return multi_step_lr(list(s.milestones.elements()), s.gamma)
    if cls is tls.ConstantLR:
        return constant_lr(s.factor, s.total_iters)
    if cls is tls.LinearLR:
        return linear_lr(s.start_factor, s.end_factor, s.total_iters)
    if cls is tls.ExponentialLR:
        return exponential_lr(s.gamma)
    if cls is tls.PolynomialLR:
        return polynomial_lr(s.total_iters, s.power)
    if cls is tls.CosineAnnealingLR:
        return cosine_annealing_lr(s.T_max, s.eta_min)
    if cls is tls.CosineAnnealingWarmRestarts:
        return cosine_annealing_warm_restarts(s.T_0, s.T_mult, s.eta_min)
    if cls is tls.LambdaLR:
        return lambda_lr(s.lr_lambdas[group])
    if cls is tls.MultiplicativeLR:
        return multiplicative_lr(s.lr_lambdas[group])
    if cls is tls.OneCycleLR:
        values = s.optimizer.param_groups[group]
        phases = [
            (float(p["end_step"]), float(values[p["start_lr"]]), float(values[p["end_lr"]]))
            for p in one_cycle_phases(s)
        ]
        momenta = None
        if s.cycle_momentum:
            momenta = [
                (float(values[p["start_momentum"]]), float(values[p["end_momentum"]]))
                for p in one_cycle_phases(s)
            ]
        return one_cycle_from_phases(
            phases,
            s.total_steps,
            one_cycle_anneal_strategy(s),
            float(values["initial_lr"]),
            momenta,
        )
    if cls is tls.ReduceLROnPlateau:
        return reduce_on_plateau(
            mode=s.mode,
            factor=s.factor,
            patience=s.patience,
            threshold=s.threshold,
            threshold_mode=s.threshold_mode,
            cooldown=s.cooldown,
            min_lr=s.min_lrs[group],
            eps=s.eps,
        )
    children = [_one_schedule(c, group) for c in child_schedulers(s)]
    if cls is tls.SequentialLR:
        return sequential_lr(children, sequential_milestones(s))
    return chained_scheduler(children)


def schedule_from_torch(scheduler: Any) -> list[Schedule]:
    """One ``Schedule`` per param group, configured like ``scheduler``.

    Args:
        scheduler: a ``torch.optim.lr_scheduler`` object of a supported class (``StepLR``,
            ``MultiStepLR``, ``ConstantLR``, ``LinearLR``, ``ExponentialLR``,
            ``PolynomialLR``, ``CosineAnnealingLR``, ``CosineAnnealingWarmRestarts``,
            ``LambdaLR``, ``MultiplicativeLR``, ``OneCycleLR`` (cycling the momentum or
            not), ``ReduceLROnPlateau``, ``SequentialLR``,
            ``ChainedScheduler`` of those); anything else (``CyclicLR``, subclasses) raises
            ``ValueError`` naming the class.

    Returns:
        ``[schedule for group 0, schedule for group 1, ...]``.
    """
    _check_supported(scheduler)
    return [_one_schedule(scheduler, g) for g in range(len(scheduler.optimizer.param_groups))]


def cycles_momentum(scheduler: Any) -> bool:
    """Whether ``scheduler`` (or a scheduler inside it) is a ``OneCycleLR`` that cycles the
    optimizer's momentum / ``betas[0]`` (``cycle_momentum=True``, torch's default)."""
    _check_supported(scheduler)
    if type(scheduler) is tls.OneCycleLR:
        return bool(scheduler.cycle_momentum)
    if type(scheduler) in (tls.SequentialLR, tls.ChainedScheduler):
        return any(cycles_momentum(c) for c in child_schedulers(scheduler))
    return False


def _int_attr(s: Any, name: str) -> int:
    value = getattr(s, name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(
            f"{type(s).__name__}.{name} is {value!r}, not an integer (stepped with an epoch "
            "argument?): cannot convert"
        )
    return value


def schedule_state_from_torch(scheduler: Any, group_index: int) -> Any:
    """The state of group ``group_index`` of ``scheduler``, for ``schedule_from_torch``'s
    schedule of that group: continue with ``step(state, group["lr"], metric)``.

    Args:
        scheduler: see ``schedule_from_torch``.
        group_index: the param group.

    Returns:
        A ``ScheduleState``, ``WarmRestartsState``, ``PlateauState``, ``SequentialState`` or
        ``ChainedState`` (matching the schedule's ``init``).
    """
    _check_supported(scheduler)
    s, g = scheduler, group_index
    cls = type(s)
    if cls in _EPOCH_CLASSES:
        return ScheduleState(
            last_epoch=ops.i64(_int_attr(s, "last_epoch")), base_lr=ops.f64(float(s.base_lrs[g]))
        )
    if cls is tls.CosineAnnealingWarmRestarts:
        return WarmRestartsState(
            last_epoch=ops.i64(_int_attr(s, "last_epoch")),
            base_lr=ops.f64(float(s.base_lrs[g])),
            T_cur=ops.i64(_int_attr(s, "T_cur")),
            T_i=ops.i64(_int_attr(s, "T_i")),
        )
    if cls is tls.ReduceLROnPlateau:
        return PlateauState(
            last_epoch=ops.i64(_int_attr(s, "last_epoch")),
            best=ops.f64(float(s.best)),
            num_bad_epochs=ops.i64(_int_attr(s, "num_bad_epochs")),
            cooldown_counter=ops.i64(_int_attr(s, "cooldown_counter")),
        )
    states = tuple(schedule_state_from_torch(c, g) for c in child_schedulers(s))
    if cls is tls.SequentialLR:
        return SequentialState(last_epoch=ops.i64(_int_attr(s, "last_epoch")), states=states)
    return ChainedState(states=states)
