r"""The 1cycle policy: ``OneCycleLR``, the learning rate and (by default) the momentum."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import Schedule, ScheduleState
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["one_cycle_lr"]

# (end_step, start_lr, end_lr) of one phase, the lrs already resolved for the group.
Phase = tuple[float, float, float]
# (start_momentum, end_momentum) of one phase.
MomentumPhase = tuple[float, float]


def _anneal_cos(start: float, end: float, pct: Scalar) -> Scalar:
    cos_out = ops.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _anneal_linear(start: float, end: float, pct: Scalar) -> Scalar:
    return (end - start) * pct + start


def _check_count(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r:.40})")


def one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""The 1cycle learning rate policy: ``torch.optim.lr_scheduler.OneCycleLR``.

    With :math:`\eta_{init} = \texttt{max\_lr}/\texttt{div\_factor}` and
    :math:`\eta_{min} = \eta_{init}/\texttt{final\_div\_factor}`, and :math:`N` =
    ``total_steps`` (or ``epochs * steps_per_epoch``), the lr at step :math:`t` anneals within
    the phase containing :math:`t`:

    * two phases: :math:`\eta_{init} \to \texttt{max\_lr}` until step
      :math:`pN - 1`, then :math:`\texttt{max\_lr} \to \eta_{min}` until :math:`N - 1`;
    * ``three_phase``: :math:`\eta_{init} \to \texttt{max\_lr}` until :math:`pN - 1`,
      :math:`\texttt{max\_lr} \to \eta_{init}` until :math:`2pN - 2`, then
      :math:`\eta_{init} \to \eta_{min}` until :math:`N - 1`;

    with :math:`p` = ``pct_start``, ``pct`` the fraction of the phase done, and the anneal
    ``cos``: :math:`e + (s - e)/2\,(1 + \cos \pi\,\mathrm{pct})` or ``linear``:
    :math:`(e - s)\,\mathrm{pct} + s`. Not chainable: computed from the step number alone.
    Like torch it overwrites the group's ``initial_lr`` with :math:`\eta_{init}` (so schedules
    composed after it take that as their base lr). Stepping past ``total_steps`` raises
    torch's ``ValueError`` in eager code; under compile/vmap the last phase extrapolates.

    **Momentum**: with ``cycle_momentum=True`` (torch's default) the momentum anneals
    inversely to the lr, in the same phases and with the same ``pct``: ``max_momentum`` ->
    ``base_momentum`` while the lr rises, back to ``max_momentum`` while it falls (three
    phases: then held at ``max_momentum``). As in torch it is the optimizer's ``momentum``
    (SGD, RMSprop) or ``betas[0]`` (the Adam family): under ``scheduled`` the rule must keep
    that hyperparameter dynamic, e.g. ``sgd(lr=0.1, momentum=0.9, dynamic=("lr",
    "momentum"))`` or ``adam(dynamic=("lr", "beta1"))``; ``scheduled`` writes it after
    every schedule step (``Schedule.momentum``). Like torch, the first value (after ``init``)
    is the annealing formula at step 0.

    Args:
        max_lr: the peak lr of this param group (one ``Schedule`` per group: torch's list of
            ``max_lr`` becomes one ``one_cycle_lr`` per group).
        total_steps: steps in the cycle; or give ``epochs`` and ``steps_per_epoch``.
        epochs: with ``steps_per_epoch``, ``total_steps = epochs * steps_per_epoch``.
        steps_per_epoch: see ``epochs``.
        pct_start: fraction of the cycle spent increasing the lr (a float in [0, 1]).
        anneal_strategy: ``"cos"`` or ``"linear"``.
        cycle_momentum: also cycle the momentum / beta1 (see above).
        base_momentum: the lowest momentum, reached at the lr's peak.
        max_momentum: the highest momentum, at the start and the end of the cycle.
        div_factor: ``initial lr = max_lr / div_factor``.
        final_div_factor: ``min lr = initial lr / final_div_factor``.
        three_phase: use the three-phase schedule of the original paper.

    Returns:
        A ``Schedule`` whose state is ``ScheduleState`` (its ``base_lr`` is
        :math:`\eta_{init}`, whatever base lr ``init`` is given); its ``momentum`` is None
        unless ``cycle_momentum``.
    """
    if isinstance(max_lr, list | tuple):
        raise TypeError(
            "max_lr must be a number: one Schedule drives one param group, so give each "
            "group its own one_cycle_lr(max_lr=...)"
        )
    max_lr = ops.number("max_lr", max_lr)
    for name, value in (
        ("total_steps", total_steps),
        ("epochs", epochs),
        ("steps_per_epoch", steps_per_epoch),
    ):
        _check_count(name, value)
    pct_start = ops.number("pct_start", pct_start)
    div_factor = ops.number("div_factor", div_factor)
    final_div_factor = ops.number("final_div_factor", final_div_factor)

    if total_steps is not None:
        ops.require(
            not (total_steps <= 0 or not isinstance(total_steps, int)),
            f"Expected positive integer total_steps, but got {total_steps}",
        )
        n = total_steps
    elif epochs is not None and steps_per_epoch is not None:
        ops.require(
            isinstance(epochs, int) and epochs > 0,
            f"Expected positive integer epochs, but got {epochs}",
        )
        ops.require(
            isinstance(steps_per_epoch, int) and steps_per_epoch > 0,
            f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}",
        )
        n = epochs * steps_per_epoch
    else:
        raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
    ops.require(
        not (pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float)),
        f"Expected float between 0 and 1 pct_start, but got {pct_start}",
    )
    ops.require(
        anneal_strategy in ["cos", "linear"],
        f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}",
    )
    if not isinstance(cycle_momentum, bool):
        raise TypeError(f"cycle_momentum must be a bool, got {cycle_momentum!r}")

    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    lrs = {"initial_lr": initial_lr, "max_lr": max_lr, "min_lr": min_lr}
    if three_phase:
        names = [
            (float(pct_start * n) - 1, "initial_lr", "max_lr"),
            (float(2 * pct_start * n) - 2, "max_lr", "initial_lr"),
            (n - 1, "initial_lr", "min_lr"),
        ]
    else:
        names = [(float(pct_start * n) - 1, "initial_lr", "max_lr"), (n - 1, "max_lr", "min_lr")]
    phases = [(end, lrs[a], lrs[b]) for end, a, b in names]
    momenta = None
    if cycle_momentum:
        high = ops.number("max_momentum", max_momentum)
        low = ops.number("base_momentum", base_momentum)
        momenta = [(high, low), (low, high), (high, high)][: len(phases)]
    return one_cycle_from_phases(phases, n, anneal_strategy, initial_lr, momenta)


def one_cycle_from_phases(
    phases: Sequence[Phase],
    total_steps: int,
    anneal_strategy: str,
    initial_lr: float,
    momenta: Sequence[MomentumPhase] | None = None,
) -> Schedule:
    """``OneCycleLR`` from its resolved phases, and the momentum's in each phase if it cycles
    the momentum (``schedule_from_torch`` reads these off the torch scheduler and its param
    group, so no value is recomputed)."""
    anneal = _anneal_cos if anneal_strategy == "cos" else _anneal_linear
    last = len(phases) - 1

    def at_phase(value_of: Callable[[int, Scalar], Scalar], step_num: Scalar) -> Scalar:
        """torch's phase search: the first phase whose ``end_step`` is at or after
        ``step_num`` (else the last), and ``pct`` the fraction of it done."""

        def from_phase(i: int, start_step: float) -> Scalar:
            end_step = phases[i][0]

            def here() -> Scalar:
                return value_of(i, (step_num - start_step) / (end_step - start_step))

            if i == last:
                return here()
            return ops.select(step_num <= end_step, here, lambda: from_phase(i + 1, end_step))

        return from_phase(0, 0.0)

    def lr_in(i: int, pct: Scalar) -> Scalar:
        return anneal(phases[i][1], phases[i][2], pct)

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        if not isinstance(epoch, torch.Tensor) and epoch > total_steps:
            raise ValueError(
                f"Tried to step {epoch} times. The specified number of total steps is {total_steps}"
            )
        return at_phase(lr_in, epoch)

    schedule = epoch_schedule("OneCycleLR", get_lr, initial_lr=initial_lr)
    if momenta is None:
        return schedule
    cycle = list(momenta)
    if len(cycle) != len(phases):
        raise ValueError(f"{len(cycle)} momentum phases for {len(phases)} lr phases")

    def momentum_in(i: int, pct: Scalar) -> Scalar:
        return anneal(cycle[i][0], cycle[i][1], pct)

    def momentum(state: ScheduleState) -> Scalar:
        # torch sets the momentum where it computes the lr, at ``last_epoch``; a
        # SequentialLR child that is not running yet was undone to -1 after that, at 0.
        epoch = ops.epoch_value(state.last_epoch)
        epoch = torch.clamp(epoch, min=0) if isinstance(epoch, torch.Tensor) else max(epoch, 0)
        return at_phase(momentum_in, epoch)

    return schedule._replace(momentum=momentum)
