r"""Polynomial decay to zero: ``PolynomialLR``."""

from __future__ import annotations

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import Schedule
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["polynomial_lr"]


def polynomial_lr(total_iters: int = 5, power: float = 1.0) -> Schedule:
    r"""Decay the lr polynomially to 0 over ``total_iters`` epochs:
    ``torch.optim.lr_scheduler.PolynomialLR``.

    .. math::

        \eta_t = \eta_{t-1}\left(\frac{1 - t/T}{1 - (t-1)/T}\right)^{p}
        \quad (1 \le t \le T), \qquad \eta_t = \eta_{t-1} \quad (t > T)

    Closed form (used by ``reset``): :math:`\eta_0 (1 - \min(T, t)/T)^p`.

    Args:
        total_iters: :math:`T`, the number of decaying epochs.
        power: :math:`p`, the power of the polynomial.

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    total_iters = ops.integer("total_iters", total_iters)
    power = ops.number("power", power)

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        def decay() -> Scalar:
            ratio = (1.0 - epoch / total_iters) / (1.0 - (epoch - 1) / total_iters)
            return lr * ops.pow_(ratio, power)

        return ops.select(ops.logical_or(is_initial, epoch > total_iters), lambda: lr, decay)

    def closed_form(base_lr: Scalar, epoch: int) -> Scalar:
        return base_lr * (1.0 - min(total_iters, epoch) / total_iters) ** power

    return epoch_schedule("PolynomialLR", get_lr, closed_form)
