r"""Reduce the lr when a metric stops improving: ``ReduceLROnPlateau``."""

from __future__ import annotations

import math
from typing import Any

import torch

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import PlateauState, Schedule

__all__ = ["reduce_on_plateau"]


def reduce_on_plateau(
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0,
    eps: float = 1e-8,
) -> Schedule:
    r"""Multiply the lr by ``factor`` after more than ``patience`` epochs without
    improvement: ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    Each ``step(state, lr, metric)``, with :math:`m` the metric:

    1. :math:`m` is *better* than ``best`` when (``rel``/``abs`` × ``min``/``max``)
       :math:`m < \mathrm{best}(1 - \theta)`, :math:`m < \mathrm{best} - \theta`,
       :math:`m > \mathrm{best}(1 + \theta)`, :math:`m > \mathrm{best} + \theta`
       (:math:`\theta` = ``threshold``; ``best`` starts at :math:`\pm\infty`). Better:
       ``best = m``, ``num_bad_epochs = 0``; else ``num_bad_epochs += 1``.
    2. In cooldown (``cooldown_counter > 0``): ``cooldown_counter -= 1`` and
       ``num_bad_epochs = 0``.
    3. If ``num_bad_epochs > patience``: :math:`\eta' = \max(\eta\cdot\texttt{factor},
       \texttt{min\_lr})`, applied only if :math:`\eta - \eta' > \texttt{eps}`;
       then ``cooldown_counter = cooldown``, ``num_bad_epochs = 0``.

    ``init`` leaves the lr as it is (torch's constructor does not step). ``step`` requires
    ``metric`` (``ValueError`` if None). ``reset`` is not supported (torch's
    ``SequentialLR``/``ChainedScheduler`` reject this scheduler too).

    Args:
        mode: ``"min"`` (lower metric is better) or ``"max"``.
        factor: the multiplier, < 1.
        patience: number of bad epochs tolerated before a reduction.
        threshold: :math:`\theta`, the margin of a significant improvement.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: epochs after a reduction during which bad epochs are not counted (an int).
        min_lr: lower bound on this group's lr (one ``Schedule`` per group: torch's list of
            ``min_lr`` becomes one ``reduce_on_plateau`` per group).
        eps: smallest reduction applied.

    Returns:
        A ``Schedule`` whose state is ``PlateauState``.
    """
    factor = ops.number("factor", factor)
    ops.require(not factor >= 1.0, "Factor should be < 1.0.")
    if isinstance(min_lr, list | tuple):
        raise TypeError(
            "min_lr must be a number: one Schedule drives one param group, so give each "
            "group its own reduce_on_plateau(min_lr=...)"
        )
    min_lr = ops.number("min_lr", min_lr)
    bad_epochs_allowed = ops.number("patience", patience)
    cooldown = ops.integer("cooldown", cooldown)
    eps = ops.number("eps", eps)
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {type(mode).__name__}")
    if not isinstance(threshold_mode, str):
        raise TypeError(f"threshold_mode must be a str, got {type(threshold_mode).__name__}")
    ops.require(mode in {"min", "max"}, "mode " + mode + " is unknown!")
    ops.require(
        threshold_mode in {"rel", "abs"}, "threshold mode " + threshold_mode + " is unknown!"
    )
    threshold = ops.number("threshold", threshold)
    mode_worse = math.inf if mode == "min" else -math.inf

    def is_better(a: Scalar, best: Scalar) -> Any:
        if mode == "min" and threshold_mode == "rel":
            rel_epsilon = 1.0 - threshold
            return a < best * rel_epsilon
        if mode == "min" and threshold_mode == "abs":
            return a < best - threshold
        if mode == "max" and threshold_mode == "rel":
            rel_epsilon = threshold + 1.0
            return a > best * rel_epsilon
        return a > best + threshold

    def init(base_lr: float, lr: float) -> tuple[PlateauState, float]:
        state = PlateauState(
            last_epoch=ops.i64(0),
            best=ops.f64(mode_worse),
            num_bad_epochs=ops.i64(0),
            cooldown_counter=ops.i64(0),
        )
        return state, lr

    def step(
        state: PlateauState, lr: Scalar, metric: Scalar | None = None
    ) -> tuple[PlateauState, Scalar]:
        if metric is None:
            raise ValueError(
                "reduce_on_plateau: step(state, lr, metric) needs the metric (got metric=None)"
            )
        # torch: float(metrics); a tensor metric stays a tensor (as float64) off the eager path.
        if isinstance(metric, torch.Tensor):
            current = ops.read(metric.to(torch.float64))
        else:
            current = float(metric)
        best = ops.read(state.best)
        num_bad = ops.read(state.num_bad_epochs)
        cooldown_counter = ops.read(state.cooldown_counter)

        better = is_better(current, best)
        best, num_bad = ops.select(better, lambda: (current, 0), lambda: (best, num_bad + 1))
        in_cooldown = cooldown_counter > 0
        cooldown_counter, num_bad = ops.select(
            in_cooldown, lambda: (cooldown_counter - 1, 0), lambda: (cooldown_counter, num_bad)
        )

        def reduce() -> tuple[Scalar, Scalar, Scalar]:
            old_lr = lr
            new_lr = ops.select(
                min_lr > old_lr * factor, lambda: min_lr, lambda: old_lr * factor
            )  # Python's max(old_lr * factor, min_lr)
            applied = ops.select(old_lr - new_lr > eps, lambda: new_lr, lambda: old_lr)
            return applied, cooldown, 0

        lr, cooldown_counter, num_bad = ops.select(
            num_bad > bad_epochs_allowed, reduce, lambda: (lr, cooldown_counter, num_bad)
        )
        new = PlateauState(
            last_epoch=state.last_epoch + 1,
            best=ops.as_state(best, state.best),
            num_bad_epochs=ops.as_state(num_bad, state.num_bad_epochs),
            cooldown_counter=ops.as_state(cooldown_counter, state.cooldown_counter),
        )
        return new, lr

    def reset(state: PlateauState, lr: Scalar) -> tuple[PlateauState, Scalar]:
        raise NotImplementedError(
            "reduce_on_plateau has no reset: torch's SequentialLR does not accept ReduceLROnPlateau"
        )

    return Schedule(ops.Init(init, "ReduceLROnPlateau"), step, reset)
