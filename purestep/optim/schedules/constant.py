r"""A constant factor for a while: ``ConstantLR``."""

from __future__ import annotations

import math

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import Schedule
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["constant_lr"]


def constant_lr(factor: float = 1.0 / 3, total_iters: int = 5) -> Schedule:
    r"""Scale the lr by ``factor`` until epoch ``total_iters``:
    ``torch.optim.lr_scheduler.ConstantLR``.

    .. math::

        \eta_0 = \texttt{factor}\cdot\eta, \qquad
        \eta_t = \eta_{t-1}/\texttt{factor} \text{ (as } \eta_{t-1}\cdot(1/\texttt{factor})
        \text{) at } t = \texttt{total\_iters}, \text{ else } \eta_{t-1}

    Closed form: :math:`\eta_0(\texttt{factor} + [t \ge \texttt{total\_iters}]
    (1 - \texttt{factor}))`.

    Args:
        factor: the multiplier, in [0, 1]. With ``factor=0`` torch raises
            ``ZeroDivisionError`` at epoch ``total_iters``; this schedule gives ``inf`` there.
        total_iters: the epoch at which the factor is undone.

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    factor = ops.number("factor", factor)
    total_iters = ops.integer("total_iters", total_iters)
    ops.require(
        not (factor > 1.0 or factor < 0),
        "Constant multiplicative factor expected to be between 0 and 1.",
    )
    inverse = 1.0 / factor if factor != 0 else math.inf

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        return ops.select(
            epoch == 0,
            lambda: lr * factor,
            lambda: ops.select(epoch != total_iters, lambda: lr, lambda: lr * inverse),
        )

    def closed_form(base_lr: Scalar, epoch: int) -> Scalar:
        return base_lr * (factor + (epoch >= total_iters) * (1 - factor))

    return epoch_schedule("ConstantLR", get_lr, closed_form)
