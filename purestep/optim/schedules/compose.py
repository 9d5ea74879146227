r"""Composition: ``SequentialLR`` (one schedule after another) and ``ChainedScheduler`` (all
of them every step, each on the lr the previous one left).

How they mirror torch's construction, which matters for the lr at epoch 0:

* ``chained_scheduler([a, b])``: ``init`` is ``a.init`` then ``b.init`` on the lr ``a``
  set (in torch each scheduler is constructed on the same optimizer, in list order, each
  doing its initial step); ``step`` is ``a.step`` then ``b.step`` on the lr ``a`` returned.
* ``sequential_lr([a, b], milestones=[m])``: ``init`` constructs ``a`` and ``b`` like the
  above, then does what ``SequentialLR.__init__`` does: lr back to the group's
  ``initial_lr``, every child's ``last_epoch`` decremented ("undo"), and the initial step of
  the child active at epoch 0 (``a``, unless a milestone is <= 0) again on that lr. Each
  ``step`` runs the child whose range holds the new epoch; at a milestone it runs that
  child's ``reset`` (torch's ``_update_lr(0)``) instead of ``step``.

Children's states live in the composite's state (``SequentialState``/``ChainedState``).
A ``one_cycle_lr`` child overwrites the group's ``initial_lr`` as torch's does, so children
after it (and ``SequentialLR``'s lr reset) take that as the base lr; one that cycles the
momentum makes the composite drive it too (``Schedule.momentum``). At most one
``one_cycle_lr`` per composite (``ValueError``): torch's ``OneCycleLR`` read their
initial/max/min lrs from the param group at every step, so a second one constructed on the
same optimizer silently changes the first one's schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules import _ops as ops
from purestep.optim.schedules._base import ChainedState, Schedule, SequentialState

__all__ = ["chained_scheduler", "sequential_lr"]

_COMPOSITES = ("SequentialLR", "ChainedScheduler")


def _check_children(cls: str, schedulers: Any) -> list[Schedule]:
    if isinstance(schedulers, Schedule) or not isinstance(schedulers, Sequence):
        raise TypeError(f"schedulers must be a list of Schedule, got {type(schedulers).__name__}")
    children = list(schedulers)
    if cls == "SequentialLR":
        ops.require(
            len(children) >= 1,
            f"{cls} expects at least one scheduler, but got no scheduler.",
        )
    else:
        ops.require(
            len(children) >= 1,
            f"{cls} expects at least one scheduler to be chained, but got no scheduler.",
        )
    for i, child in enumerate(children):
        if not isinstance(child, Schedule):
            raise TypeError(f"{cls} at index {i} should be a Schedule, got {type(child).__name__}")
        ops.require(
            ops.kind_of(child) != "ReduceLROnPlateau",
            f"{cls} does not support `ReduceLROnPlateau` scheduler as it "
            "requires additional kwargs to be specified when calling `step`, "
            f"but got one at index {i} in the given schedulers sequence.",
        )
    ops.require(
        sum(ops.one_cycles_of(child) for child in children) <= 1,
        f"{cls}: at most one OneCycleLR per param group (torch's OneCycleLR keep their "
        "initial/max/min lrs in the param group, where the last one constructed overwrites "
        "the others')",
    )
    return children


def _construct(
    children: Sequence[Schedule], base_lr: float, lr: float
) -> tuple[list[Any], list[float], float, float]:
    """Construct the children on one group, in order, as torch's user code does: returns
    their states, their base lrs, the final group lr and the final ``initial_lr``."""
    states, bases = [], []
    for child in children:
        override = ops.initial_lr_of(child)
        if override is not None:
            base_lr = override
        state, lr = child.init(base_lr, lr)
        states.append(state)
        bases.append(base_lr)
    return states, bases, lr, base_lr


def _momentum(children: Sequence[Schedule]) -> Callable[[Any], Scalar] | None:
    """The momentum a composite drives: that of its one momentum-cycling child (there is at
    most one ``one_cycle_lr``), read off that child's state. torch's ``OneCycleLR`` sets the
    group's momentum whenever it computes an lr, and keeps it while another child runs."""
    for i, child in enumerate(children):
        if child.momentum is not None:
            drive = child.momentum
            return lambda state: drive(state.states[i])
    return None


def _last_override(children: Sequence[Schedule]) -> float | None:
    found = None
    for child in children:
        override = ops.initial_lr_of(child)
        if override is not None:
            found = override
    return found


def _undo(state: Any) -> Any:
    """``SequentialLR.recursive_undo`` on one child: ``last_epoch -= 1``."""
    if hasattr(state, "_fields") and "last_epoch" in state._fields:
        return state._replace(last_epoch=state.last_epoch - 1)
    return state


def _advance_if(
    active: Any,
    at_milestone: Any,
    child: Schedule,
    sub: Any,
    lr: Scalar,
    lr_so_far: Scalar,
    metric: Scalar | None,
) -> tuple[Any, Scalar]:
    """One ``SequentialLR.step`` for one child: if it is the ``active`` one, ``reset`` it
    ``at_milestone`` else ``step`` it, from the group's ``lr``; if not, leave it alone."""

    def advance() -> tuple[Any, Scalar]:
        return ops.select(
            at_milestone, lambda: child.reset(sub, lr), lambda: child.step(sub, lr, metric)
        )

    return ops.select(active, advance, lambda: (sub, lr_so_far))


def sequential_lr(schedulers: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    r"""Run ``schedulers[i]`` from epoch ``milestones[i-1]`` on:
    ``torch.optim.lr_scheduler.SequentialLR``.

    At epoch :math:`t` the active child is :math:`i = \#\{m \in \texttt{milestones} : m \le
    t\}`; when :math:`t` is itself a milestone the child is ``reset`` (its epoch 0, torch's
    ``_update_lr(0)``: closed form from its base lr), otherwise stepped. See the module doc
    for what ``init`` does.

    Args:
        schedulers: the children (no ``reduce_on_plateau``, as in torch; no nested
            ``sequential_lr``/``chained_scheduler``: torch re-runs a nested composite's
            ``step()`` in non-initial mode and cannot ``_update_lr(0)`` it, which this
            interface does not model).
        milestones: ``len(schedulers) - 1`` non-decreasing epochs (torch does not check the
            order; an unsorted list makes its ``bisect`` meaningless).

    Returns:
        A ``Schedule`` whose state is ``SequentialState``.
    """
    cls = "SequentialLR"
    children = _check_children(cls, schedulers)
    for i, child in enumerate(children):
        ops.require(
            ops.kind_of(child) not in _COMPOSITES,
            f"sequential_lr does not support a nested {ops.kind_of(child)} "
            f"(at index {i} in the given schedulers sequence)",
        )
    if isinstance(milestones, str | bytes) or not isinstance(milestones, Sequence):
        raise TypeError(f"milestones must be a list of ints, got {type(milestones).__name__}")
    marks = [ops.integer(f"milestones[{i}]", m) for i, m in enumerate(milestones)]
    ops.require(
        len(marks) == len(children) - 1,
        "Sequential Schedulers expects number of schedulers provided to be one more "
        f"than the number of milestone points, but got number of schedulers {len(children)} "
        f"and the number of milestones to be equal to {len(marks)}",
    )
    ops.require(marks == sorted(marks), f"milestones must be non-decreasing, got {marks}")

    def init(base_lr: float, lr: float) -> tuple[SequentialState, float]:
        states, bases, lr, initial_lr = _construct(children, base_lr, lr)
        states = [_undo(s) for s in states]
        first = ops.count_at_most(marks, 0)  # the child whose range holds epoch 0
        states[first], lr = children[first].init(bases[first], initial_lr)
        return SequentialState(last_epoch=ops.i64(0), states=tuple(states)), lr

    def step(
        state: SequentialState, lr: Scalar, metric: Scalar | None = None
    ) -> tuple[SequentialState, Scalar]:
        last_epoch = state.last_epoch + 1
        epoch = ops.epoch_value(last_epoch)
        active = ops.count_at_most(marks, epoch)
        at_milestone = ops.is_in(epoch, marks)
        states = list(state.states)
        new_lr = lr
        for i, child in enumerate(children):
            states[i], new_lr = _advance_if(
                active == i, at_milestone, child, states[i], lr, new_lr, metric
            )
        return SequentialState(last_epoch=last_epoch, states=tuple(states)), new_lr

    def reset(state: SequentialState, lr: Scalar) -> tuple[SequentialState, Scalar]:
        raise NotImplementedError("sequential_lr has no reset (torch's SequentialLR has none)")

    one_cycles = sum(ops.one_cycles_of(child) for child in children)
    return Schedule(
        ops.Init(init, cls, _last_override(children), one_cycles), step, reset, _momentum(children)
    )


def chained_scheduler(schedulers: Sequence[Schedule]) -> Schedule:
    r"""Step every child each step, in order, each on the lr the previous one returned:
    ``torch.optim.lr_scheduler.ChainedScheduler``.

    .. math::

        \eta_t = s_n.\mathrm{step}(\cdots s_1.\mathrm{step}(\eta_{t-1}))

    Meaningful with chainable (recursive) children, as in torch. See the module doc for
    ``init``.

    Args:
        schedulers: the children (no ``reduce_on_plateau``, as in torch).

    Returns:
        A ``Schedule`` whose state is ``ChainedState``.
    """
    cls = "ChainedScheduler"
    children = _check_children(cls, schedulers)

    def init(base_lr: float, lr: float) -> tuple[ChainedState, float]:
        states, _, lr, _ = _construct(children, base_lr, lr)
        return ChainedState(states=tuple(states)), lr

    def step(
        state: ChainedState, lr: Scalar, metric: Scalar | None = None
    ) -> tuple[ChainedState, Scalar]:
        states = []
        for child, sub in zip(children, state.states, strict=True):
            sub, lr = child.step(sub, lr, metric)
            states.append(sub)
        return ChainedState(states=tuple(states)), lr

    def reset(state: ChainedState, lr: Scalar) -> tuple[ChainedState, Scalar]:
        raise NotImplementedError(
            "chained_scheduler has no reset (torch's ChainedScheduler has no get_lr)"
        )

    one_cycles = sum(ops.one_cycles_of(child) for child in children)
    return Schedule(
        ops.Init(init, cls, _last_override(children), one_cycles), step, reset, _momentum(children)
    )
