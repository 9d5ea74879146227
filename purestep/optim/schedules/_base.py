"""The ``Schedule`` interface and the state shapes the schedules share.

A ``Schedule`` is torch.optim.lr_scheduler's state machine for ONE param group's learning
rate, written as three pure functions over an immutable state (a NamedTuple of 0-d tensors:
epochs and counters int64, learning rates and metrics float64):

* ``init(base_lr, lr) -> (state, lr)``: what constructing the torch scheduler does to the
  group. ``base_lr`` is the group's ``initial_lr`` (torch's ``base_lrs[i]``), ``lr`` its
  current lr (equal to ``base_lr`` unless an earlier scheduler on the same optimizer changed
  it, as in ``ChainedScheduler``). Returns the state after torch's initial step
  (``last_epoch == 0``) and the lr that step sets. Runs eagerly on Python floats.
* ``step(state, lr, metric) -> (state, lr)``: one ``scheduler.step()`` (or
  ``ReduceLROnPlateau.step(metric)``; every other schedule ignores ``metric``), from the
  group's current lr to the next one, with torch's own (recursive, "chainable") formula.
* ``reset(state, lr) -> (state, lr)``: what ``SequentialLR`` does to a scheduler at its
  milestone, torch's ``scheduler._update_lr(0)``: ``last_epoch = 0`` and the closed-form lr
  at epoch 0 where the class has one, else its ``get_lr()``.
* ``momentum``: None for a schedule of the lr alone. ``one_cycle_lr(cycle_momentum=True)``
  also drives the group's momentum (SGD's and RMSprop's ``momentum``, the Adam family's
  ``betas[0]``), as torch's ``OneCycleLR`` does: ``momentum(state)`` is the value the
  group holds once ``init``/``step`` returned ``state`` (``scheduled`` writes it into the
  rule's dynamic ``momentum`` or ``beta1``).

``lr``, ``metric`` and the state values are Python numbers in eager CPU code (read with
``purestep.optim._scalar_ops.host_value``), where every result is bitwise torch's; under
``torch.compile``, ``vmap`` or on an accelerator they are 0-d tensors and the same formulas
run as tensor arithmetic with ``torch.where`` in place of ``if`` (no recompiles as the
epoch advances). Compiled by inductor on the CPU that is still bitwise torch's (tested);
in eager tensor code (``vmap``) it is bitwise except that eager CPU ``torch.cos`` (SLEEF) can
differ from ``math.cos`` by 1 ulp in the cosine schedules (observed <= 9e-16 relative);
on CUDA, equal up to rounding (cos, pow and division by a scalar round differently there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from purestep.optim._scalar_ops import Scalar

__all__ = [
    "ChainedState",
    "PlateauState",
    "Schedule",
    "ScheduleState",
    "SequentialState",
    "WarmRestartsState",
]


class Schedule(NamedTuple):
    """One param group's lr schedule: ``init``, ``step`` and ``reset``, and the ``momentum``
    it drives besides the lr, if any (see the module doc)."""

    init: Callable[[float, float], tuple[Any, float]]
    step: Callable[[Any, Scalar, Scalar | None], tuple[Any, Scalar]]
    reset: Callable[[Any, Scalar], tuple[Any, Scalar]]
    momentum: Callable[[Any], Scalar] | None = None


class ScheduleState(NamedTuple):
    """State of the epoch-driven schedules: ``last_epoch`` (0-d int64, torch's attribute of
    that name) and ``base_lr`` (0-d float64, torch's ``base_lrs[i]``)."""

    last_epoch: torch.Tensor
    base_lr: torch.Tensor


class WarmRestartsState(NamedTuple):
    """``CosineAnnealingWarmRestarts``: ``ScheduleState`` plus ``T_cur`` (epochs since the last
    restart) and ``T_i`` (length of the current cycle), both 0-d int64."""

    last_epoch: torch.Tensor
    base_lr: torch.Tensor
    T_cur: torch.Tensor
    T_i: torch.Tensor


class PlateauState(NamedTuple):
    """``ReduceLROnPlateau``: ``last_epoch``, ``num_bad_epochs`` and ``cooldown_counter``
    (0-d int64) and ``best`` (0-d float64, starts at +inf in min mode, -inf in max mode)."""

    last_epoch: torch.Tensor
    best: torch.Tensor
    num_bad_epochs: torch.Tensor
    cooldown_counter: torch.Tensor


class SequentialState(NamedTuple):
    """``SequentialLR``: its own ``last_epoch`` and one state per child schedule."""

    last_epoch: torch.Tensor
    states: tuple[Any, ...]


class ChainedState(NamedTuple):
    """``ChainedScheduler``: one state per child schedule."""

    states: tuple[Any, ...]
