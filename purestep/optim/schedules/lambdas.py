r"""User-defined factors: ``LambdaLR`` and ``MultiplicativeLR``.

``lr_lambda`` is called with the epoch: a Python ``int`` in eager CPU code (as in torch), a
0-d **float64** tensor holding that integer under ``torch.compile``/``vmap``/on an
accelerator (float64 so that ``0.95 ** epoch`` or ``epoch / 10`` stay in float64; an int64
tensor would promote them to float32). To compile, write it with operators and torch
functions (``torch.clamp``, ``torch.where``), not ``min``/``if`` on the epoch. Note that
``c / epoch`` (a Python number over the tensor) is ``epoch.reciprocal() * c`` in torch, two
roundings; ``torch.div(torch.tensor(c, dtype=torch.float64), epoch)`` rounds like Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules._base import Schedule
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["lambda_lr", "multiplicative_lr"]

LrLambda = Callable[[Any], Any]


def _check_callable(lr_lambda: Any) -> LrLambda:
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")
    return lr_lambda


def lambda_lr(lr_lambda: LrLambda) -> Schedule:
    r"""The base lr times a function of the epoch: ``torch.optim.lr_scheduler.LambdaLR``.

    .. math::

        \eta_t = \eta_0 \cdot \texttt{lr\_lambda}(t) \quad (t \ge 0, \text{ construction
        included})

    Not chainable (computed from the base lr). One ``Schedule`` per param group: torch's
    list of lambdas becomes one ``lambda_lr`` per group.

    Args:
        lr_lambda: factor as a function of the epoch (see the module doc for its argument).

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    fn = _check_callable(lr_lambda)

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        return base_lr * fn(epoch)

    return epoch_schedule("LambdaLR", get_lr)


def multiplicative_lr(lr_lambda: LrLambda) -> Schedule:
    r"""The current lr times a function of the epoch, every epoch:
    ``torch.optim.lr_scheduler.MultiplicativeLR``.

    .. math::

        \eta_0 = \text{the current lr}, \qquad
        \eta_t = \eta_{t-1} \cdot \texttt{lr\_lambda}(t) \quad (t \ge 1)

    ``reset`` (no closed form in torch) multiplies the current lr by ``lr_lambda(0)``.

    Args:
        lr_lambda: factor as a function of the epoch (see the module doc for its argument).

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    fn = _check_callable(lr_lambda)

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        return lr if is_initial else lr * fn(epoch)

    return epoch_schedule("MultiplicativeLR", get_lr)
