r"""Cosine annealing: ``CosineAnnealingLR`` and ``CosineAnnealingWarmRestarts``."""

from __future__ import annotations

import math

import torch

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import Schedule, WarmRestartsState
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["cosine_annealing_lr", "cosine_annealing_warm_restarts"]


def cosine_annealing_lr(T_max: int, eta_min: float = 0.0) -> Schedule:
    r"""Cosine annealing from the base lr to ``eta_min`` over ``T_max`` epochs, then back up
    and so on (no restarts): ``torch.optim.lr_scheduler.CosineAnnealingLR``.

    torch's recursive form, which this follows (so it composes like torch's), is

    .. math::

        \eta_t = \eta_{\min} + (\eta_{t-1} - \eta_{\min})
        \frac{1 + \cos(\pi t / T_{\max})}{1 + \cos(\pi (t-1) / T_{\max})},

    except at :math:`t - 1 - T_{\max} \equiv 0 \pmod{2T_{\max}}` (the bottom of a cycle, where
    the ratio is 0/0): :math:`\eta_t = \eta_{t-1} + (\eta_0 - \eta_{\min})
    (1 - \cos(\pi/T_{\max}))/2`. :math:`\eta_0` (construction) is the current lr. Closed form
    (used by ``reset``): :math:`\eta_{\min} + (\eta_0 - \eta_{\min})(1 + \cos(\pi t/T_{\max}))/2`.

    Args:
        T_max: half-period in epochs (a non-zero int).
        eta_min: the minimum lr.

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    T_max = ops.integer("T_max", T_max)
    eta_min = ops.number("eta_min", eta_min)
    ops.require(T_max != 0, f"Expected non-zero integer T_max, but got {T_max}")

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        if is_initial:
            return lr
        return ops.select(
            (epoch - 1 - T_max) % (2 * T_max) == 0,
            lambda: lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2,
            lambda: (
                (1 + ops.cos(math.pi * epoch / T_max))
                / (1 + ops.cos(math.pi * (epoch - 1) / T_max))
                * (lr - eta_min)
                + eta_min
            ),
        )

    def closed_form(base_lr: Scalar, epoch: int) -> Scalar:
        return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2

    return epoch_schedule("CosineAnnealingLR", get_lr, closed_form)


def cosine_annealing_warm_restarts(
    T_0: int,
    T_mult: int = 1,
    eta_min: float = 0.0,
) -> Schedule:
    r"""SGDR: cosine annealing restarted every :math:`T_i` epochs, :math:`T_i` growing by
    ``T_mult`` per restart: ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``.

    .. math::

        \eta_t = \eta_{\min} + (\eta_0 - \eta_{\min})\,\frac{1 + \cos(\pi T_{cur}/T_i)}{2}

    with :math:`T_{cur}` the epochs since the last restart; each step does
    :math:`T_{cur} \mathrel{+}= 1` and, when :math:`T_{cur} \ge T_i`,
    :math:`T_{cur} \leftarrow T_{cur} \bmod T_i,\ T_i \leftarrow T_i\,T_{mult}`
    (torch's ``step()`` without an epoch argument). Not chainable in torch either: the lr is
    computed from :math:`\eta_0` (the base lr), not from the current lr.

    Args:
        T_0: length of the first cycle (a positive int).
        T_mult: growth factor of the cycle length (an int >= 1).
        eta_min: the minimum lr.

    Returns:
        A ``Schedule`` whose state is ``WarmRestartsState`` (``T_cur``, ``T_i`` int64).
    """
    if not isinstance(T_0, int | float) or isinstance(T_0, bool):
        raise TypeError(f"T_0 must be an int, got {type(T_0).__name__} ({T_0!r:.40})")
    if not isinstance(T_mult, int | float) or isinstance(T_mult, bool):
        raise TypeError(f"T_mult must be an int, got {type(T_mult).__name__} ({T_mult!r:.40})")
    ops.require(
        not (T_0 <= 0 or not isinstance(T_0, int)),
        f"Expected positive integer T_0, but got {T_0}",
    )
    ops.require(
        not (T_mult < 1 or not isinstance(T_mult, int)),
        f"Expected integer T_mult >= 1, but got {T_mult}",
    )
    ops.require(
        isinstance(eta_min, float | int),
        f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}",
    )
    eta_min = ops.number("eta_min", eta_min)

    def get_lr(base_lr: Scalar, t_cur: Scalar, t_i: Scalar) -> Scalar:
        return eta_min + (base_lr - eta_min) * (1 + ops.cos(math.pi * t_cur / t_i)) / 2

    def lr_of(state: WarmRestartsState) -> Scalar:
        return get_lr(
            ops.read(state.base_lr), ops.epoch_value(state.T_cur), ops.epoch_value(state.T_i)
        )

    def init(base_lr: float, lr: float) -> tuple[WarmRestartsState, float]:
        state = WarmRestartsState(
            last_epoch=ops.i64(0), base_lr=ops.f64(base_lr), T_cur=ops.i64(0), T_i=ops.i64(T_0)
        )
        return state, lr_of(state)  # type: ignore[return-value]

    def step(
        state: WarmRestartsState, lr: Scalar, metric: Scalar | None = None
    ) -> tuple[WarmRestartsState, Scalar]:
        t_cur = ops.read(state.T_cur) + 1
        t_i = ops.read(state.T_i)
        restart = t_cur >= t_i
        t_cur, t_i = ops.select(restart, lambda: (t_cur % t_i, t_i * T_mult), lambda: (t_cur, t_i))
        new = state._replace(
            last_epoch=state.last_epoch + 1,
            T_cur=ops.as_state(t_cur, state.T_cur),
            T_i=ops.as_state(t_i, state.T_i),
        )
        return new, lr_of(new)

    def reset(state: WarmRestartsState, lr: Scalar) -> tuple[WarmRestartsState, Scalar]:
        # No closed form in torch: _update_lr(0) keeps T_cur and T_i and calls get_lr().
        new = state._replace(last_epoch=torch.zeros_like(state.last_epoch))
        return new, lr_of(new)

    return Schedule(ops.Init(init, "CosineAnnealingWarmRestarts"), step, reset)
