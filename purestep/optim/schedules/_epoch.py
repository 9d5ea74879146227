"""The common shape of torch's epoch-driven schedulers, as a ``Schedule`` factory.

torch's ``LRScheduler`` keeps ``last_epoch`` and ``base_lrs``; its ``step()`` increments
``last_epoch`` and sets each group's lr to ``get_lr()``; construction runs one such step
with ``_is_initial`` set (``last_epoch`` -1 -> 0); ``_update_lr(0)`` (``SequentialLR`` at a
milestone) sets ``last_epoch = 0`` and uses ``_get_closed_form_lr()`` where the class has one.
Each schedule module supplies its ``get_lr`` (and closed form) as scalar-or-tensor functions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import Schedule, ScheduleState

# get_lr(base_lr, lr, epoch, is_initial) -> lr, with epoch the new last_epoch.
GetLr = Callable[[Scalar, Scalar, Scalar, bool], Scalar]
# closed_form(base_lr, epoch) -> lr.
ClosedForm = Callable[[Scalar, int], Scalar]


def epoch_schedule(
    kind: str,
    get_lr: GetLr,
    closed_form: ClosedForm | None = None,
    initial_lr: float | None = None,
) -> Schedule:
    """A ``Schedule`` over ``ScheduleState`` from the class's ``get_lr`` (and closed form).

    ``initial_lr``: for ``OneCycleLR``, which overwrites the group's ``initial_lr`` (its
    ``base_lr``) at construction.
    """

    def init(base_lr: float, lr: float) -> tuple[ScheduleState, float]:
        if initial_lr is not None:
            base_lr = initial_lr
        state = ScheduleState(last_epoch=ops.i64(0), base_lr=ops.f64(base_lr))
        return state, get_lr(ops.read(state.base_lr), lr, 0, True)  # type: ignore[return-value]

    def step(
        state: ScheduleState, lr: Scalar, metric: Scalar | None = None
    ) -> tuple[ScheduleState, Scalar]:
        last_epoch = state.last_epoch + 1
        new_lr = get_lr(ops.read(state.base_lr), lr, ops.epoch_value(last_epoch), False)
        return state._replace(last_epoch=last_epoch), new_lr

    def reset(state: ScheduleState, lr: Scalar) -> tuple[ScheduleState, Scalar]:
        last_epoch = torch.zeros_like(state.last_epoch)
        base_lr = ops.read(state.base_lr)
        if closed_form is not None:
            new_lr = closed_form(base_lr, 0)
        else:
            new_lr = get_lr(base_lr, lr, ops.epoch_value(last_epoch), False)
        return state._replace(last_epoch=last_epoch), new_lr

    one_cycles = int(kind == "OneCycleLR")
    return Schedule(ops.Init(init, kind, initial_lr, one_cycles), step, reset)
