r"""Exponential decay: ``ExponentialLR``."""

from __future__ import annotations

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import Schedule
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["exponential_lr"]


def exponential_lr(gamma: float) -> Schedule:
    r"""Multiply the lr by ``gamma`` every epoch: ``torch.optim.lr_scheduler.ExponentialLR``.

    .. math::

        \eta_t = \gamma\,\eta_{t-1} \quad (t \ge 1), \qquad \eta_0 = \text{the current lr}
        \qquad (\text{closed form: } \eta_0\gamma^t)

    Args:
        gamma: multiplicative decay factor (required, as in torch).

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    gamma = ops.number("gamma", gamma)

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        return lr if is_initial else lr * gamma

    def closed_form(base_lr: Scalar, epoch: int) -> Scalar:
        return base_lr * gamma**epoch

    return epoch_schedule("ExponentialLR", get_lr, closed_form)
