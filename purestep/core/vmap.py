"""Many models in one step: ``torch.func.vmap`` over stacked states.

``stack_states([s1, ..., sK])`` stacks every leaf along a new leading axis;
``vmap(train_step)`` returns a step over that stacked state: K models (different seeds,
different learning rates in ``opt_state``, ...) trained in lockstep by one call, and
``purestep.compile`` compiles it as a single graph. ``unstack_state`` splits the result.

Randomness: each model draws from its own key. Dropout and torch's random ops (see
``purestep.core.vmap_rng`` for the list) are drawn once per model with the generator set
from that model's key, so model i's masks are exactly those of its solo step, whatever
sweep it is part of, and its new key is the one its solo step returns. Other random ops
draw from vmap's shared ``randomness="different"`` stream, seeded from model 0's key.

A *compiled* vmapped step is one graph, which cannot switch generators per model: it
draws every random op from vmap's shared stream seeded from model 0's key (reproducible
from the stacked state, different per model, but not model i's solo masks); if it drew,
each model's new key is ``purestep.core.rng.fold_in(its key, 0)`` (distinct keys stay
distinct), and a step that drew nothing leaves the keys unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from purestep._compat import functorch_level
from purestep.core.rng import fold_in, rng_scope
from purestep.core.state import TrainState, check_not_donated
from purestep.core.step import EvalStep, TrainStep, call_compiled
from purestep.core.vmap_rng import MemberRandomness
from purestep.pytree import tree_map

__all__ = ["VmappedStep", "stack_states", "unstack_state", "vmap"]


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """One state whose every leaf has a leading axis of ``len(states)``."""
    if not states:
        raise ValueError("stack_states needs at least one state")
    for i, s in enumerate(states):
        if not isinstance(s, TrainState):
            raise TypeError(f"states[{i}] is a {type(s).__name__}, not a TrainState")
        check_not_donated(s)
    try:
        return tree_map(lambda *leaves: torch.stack(leaves), *states)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"the states differ in structure or shapes: {err}") from err


def unstack_state(state: TrainState) -> list[TrainState]:
    """The K states of a stacked state."""
    k = state.step.shape[0]
    return [tree_map(lambda t, i=i: t[i], state) for i in range(k)]


class VmappedStep:
    """A train or eval step over a stacked state; see ``vmap``."""

    def __init__(self, step: TrainStep | EvalStep, batch_axis: int | None) -> None:
        if not isinstance(step, TrainStep | EvalStep):
            raise TypeError(
                f"vmap takes a step from make_train_step/make_eval_step, got {type(step).__name__}"
            )
        if step.compiled:
            raise ValueError("vmap the eager step, then purestep.compile the vmapped one")
        self.step = step
        self.batch_axis = batch_axis
        self.compiled = False
        self._training = isinstance(step, TrainStep)
        self._eager = torch.func.vmap(step._pure, in_dims=(0, batch_axis), randomness="different")
        self._keyed = torch.func.vmap(self._member, in_dims=(0, batch_axis), randomness="different")
        self._randomness: MemberRandomness | None = None
        self._impl = self._eager
        self._validated: list[Any] = []
        self._last_output: Any = None
        self._verify_eager: Any = None  # see purestep.core.step._Step

    @property
    def _pure(self) -> Any:
        return self._eager

    def _member(self, state: TrainState, batch: Any) -> Any:
        """One member's step, its random draws from its own key (see ``vmap_rng``)."""
        mode = self._randomness
        assert mode is not None
        mode.level = functorch_level(state.step)
        with mode:
            return self.step._pure(state, batch)

    def __call__(self, state: TrainState, batch: Any) -> Any:
        if not isinstance(state, TrainState):
            raise TypeError(
                f"state must be a stacked purestep.TrainState, got {type(state).__name__}"
            )
        if state.step.dim() != 1:
            raise ValueError(
                f"a vmapped step takes a stacked state (state.step of shape (K,)), got shape "
                f"{tuple(state.step.shape)}: use purestep.core.stack_states"
            )
        self.step._mirror.sync()
        # A stacked state this step returned last time fits by construction: skip taking
        # out its first model (one select per leaf: ~0.4 ms per call on W2's 299 leaves)
        # and re-checking it (states are immutable; do not assign into their dicts).
        if state is not self._last_output:
            self.step.check_state(tree_map(lambda t: t[0], state))
        device = state.device
        sample = (
            batch
            if self.batch_axis is None
            else tree_map(lambda t: t.select(self.batch_axis, 0), batch)
        )
        self.step.check_batch(sample, state)
        out: Any
        if self.compiled:
            out, advanced = call_compiled(
                self._impl,
                self._eager,
                self._validated,
                state,
                batch,
                key=state.rng[0],
                device=device,
                verify=self._verify_eager,
            )
            # One graph cannot switch generators per model (see the module docstring):
            # if it drew, each model's key moves on its own way, as a function of itself;
            # a step that drew nothing leaves every key as it was (as a solo step does).
            if torch.equal(advanced, state.rng[0]):
                keys = state.rng
            else:
                keys = torch.stack([fold_in(key_i, 0) for key_i in state.rng])
        else:
            self._randomness = MemberRandomness([key.clone() for key in state.rng], device)
            try:
                with rng_scope(state.rng[0], device):
                    out = self._keyed(state, batch)
                keys = torch.stack(self._randomness.keys)
            finally:
                self._randomness = None
        if not self._training:
            return out
        new_state, metrics = out
        new_state = new_state._replace(rng=keys)
        self._last_output = new_state
        return new_state, metrics

    def _with_impl(self, impl: Any) -> VmappedStep:
        twin = object.__new__(VmappedStep)
        twin.__dict__.update(self.__dict__)
        twin._impl = impl
        twin.compiled = True
        twin._validated = []
        twin._last_output = None
        return twin


def vmap(step: TrainStep | EvalStep, *, batch_axis: int | None = None) -> VmappedStep:
    """The step over K stacked models.

    Args:
        step: an eager step from ``make_train_step``/``make_eval_step``.
        batch_axis: ``None``: every model sees the same batch; an int: the batch has a
            model axis there (each model its own batch).

    Returns:
        ``vstep(stacked_state, batch) -> (stacked_state, stacked_metrics)`` (train) or
        ``stacked_metrics`` (eval); ``purestep.compile(vstep)`` compiles it.
    """
    return VmappedStep(step, batch_axis)
