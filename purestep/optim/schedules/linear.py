r"""Linear warm-up or decay of a multiplicative factor: ``LinearLR``."""

from __future__ import annotations

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import Schedule
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["linear_lr"]


def linear_lr(
    start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> Schedule:
    r"""Move the lr's factor linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` epochs: ``torch.optim.lr_scheduler.LinearLR``.

    With :math:`s` = ``start_factor``, :math:`e` = ``end_factor``, :math:`T` = ``total_iters``:

    .. math::

        \eta_0 = s\,\eta, \qquad
        \eta_t = \eta_{t-1}\left(1 + \frac{e - s}{T s + (t - 1)(e - s)}\right)
        \quad (1 \le t \le T), \qquad \eta_t = \eta_{t-1} \quad (t > T)

    Closed form (used by ``reset``): :math:`\eta_0 (s + (e - s)\min(T, t)/T)`.

    Args:
        start_factor: factor at epoch 0, in (0, 1].
        end_factor: factor from epoch ``total_iters`` on, in [0, 1].
        total_iters: number of epochs of the ramp.

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    start_factor = ops.number("start_factor", start_factor)
    end_factor = ops.number("end_factor", end_factor)
    total_iters = ops.integer("total_iters", total_iters)
    ops.require(
        not (start_factor > 1.0 or start_factor <= 0),
        "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.",
    )
    ops.require(
        not (end_factor > 1.0 or end_factor < 0),
        "Ending multiplicative factor expected to be between 0 and 1.",
    )
    delta = end_factor - start_factor

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        return ops.select(
            epoch == 0,
            lambda: lr * start_factor,
            lambda: ops.select(
                ops.logical_or(is_initial, epoch > total_iters),
                lambda: lr,
                lambda: (
                    lr * (1.0 + ops.div(delta, total_iters * start_factor + (epoch - 1) * delta))
                ),
            ),
        )

    def closed_form(base_lr: Scalar, epoch: int) -> Scalar:
        return base_lr * (start_factor + delta * min(total_iters, epoch) / total_iters)

    return epoch_schedule("LinearLR", get_lr, closed_form)
