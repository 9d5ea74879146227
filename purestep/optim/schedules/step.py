r"""Step decays: ``StepLR`` and ``MultiStepLR``.

Both are recursive in torch (the current lr times :math:`\gamma` at a decay epoch), so they
compose with other changes to the lr; ``reset`` uses their closed forms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import Schedule
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["multi_step_lr", "step_lr"]


def step_lr(step_size: int, gamma: float = 0.1) -> Schedule:
    r"""Decay the lr by ``gamma`` every ``step_size`` epochs: ``torch.optim.lr_scheduler.StepLR``.

    .. math::

        \eta_t = \gamma\,\eta_{t-1} \text{ if } t > 0 \text{ and } t \bmod
        \texttt{step\_size} = 0, \text{ else } \eta_{t-1}
        \qquad (\text{closed form: } \eta_t = \eta_0\,\gamma^{\lfloor t/\texttt{step\_size}
        \rfloor})

    Args:
        step_size: period of the decay, in epochs (a positive int; torch does not check it and
            fails with ``ZeroDivisionError`` at the first step for 0).
        gamma: multiplicative decay factor.

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    step_size = ops.integer("step_size", step_size)
    gamma = ops.number("gamma", gamma)
    ops.require(step_size > 0, f"Expected positive integer step_size, but got {step_size}")

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        keep = ops.logical_or(epoch == 0, epoch % step_size != 0)
        return ops.select(keep, lambda: lr, lambda: lr * gamma)

    def closed_form(base_lr: Scalar, epoch: int) -> Scalar:
        return base_lr * gamma ** (epoch // step_size)

    return epoch_schedule("StepLR", get_lr, closed_form)


def multi_step_lr(milestones: Iterable[int], gamma: float = 0.1) -> Schedule:
    r"""Decay the lr by ``gamma`` at each milestone: ``torch.optim.lr_scheduler.MultiStepLR``.

    .. math::

        \eta_t = \gamma^{c(t)}\,\eta_{t-1} \text{ if } c(t) > 0 \text{ else } \eta_{t-1}

    with :math:`c(t)` the number of times epoch :math:`t` appears in ``milestones`` (a
    repeated milestone decays by :math:`\gamma^{c}` at once, as in torch; a milestone 0
    applies at construction). Closed form: :math:`\eta_0\gamma^{\#\{m \le t\}}`.

    Args:
        milestones: epoch indices (ints, any order, repeats allowed).
        gamma: multiplicative decay factor.

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    if isinstance(milestones, str | bytes) or not isinstance(milestones, Iterable):
        raise TypeError(f"milestones must be an iterable of ints, got {type(milestones).__name__}")
    counts = Counter(ops.integer("milestones[]", m) for m in milestones)
    gamma = ops.number("gamma", gamma)
    factors = {m: gamma**c for m, c in counts.items()}
    ordered = sorted(counts.elements())

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        return ops.select(
            ops.is_in(epoch, factors),
            lambda: lr * ops.lookup(epoch, factors, 1.0),
            lambda: lr,
        )

    def closed_form(base_lr: Scalar, epoch: int) -> Scalar:
        return base_lr * gamma ** ops.count_at_most(ordered, epoch)

    return epoch_schedule("MultiStepLR", get_lr, closed_form)
