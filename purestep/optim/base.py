"""The two shapes of an optimizer piece, and how they compose.

* ``GradientTransformation(init, update)``: gradient space in, gradient space out
  (clipping, weight decay, scaling ...). ``update(updates, state, params) -> (updates, state)``.
* ``Optimizer(init, step)``: the complete rule, gradients in, **new parameters** out.
  ``step(grads, state, params) -> (params, state)``. Owning the parameter write is what lets
  a rule follow torch.optim's exact operation order (``addcdiv`` with ``value=-step_size``
  is one rounding; ``p + u`` after computing ``u`` is two) and so match it bitwise.

``chain(t1, t2, ..., rule)`` runs the transforms in order, then the rule. All of it is pure:
states are immutable pytrees of tensors, nothing is updated in place.

Parameters, gradients and updates are flat ``dict[str, Tensor]`` keyed like
``model.named_parameters()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

import torch

Params = dict[str, torch.Tensor]
Updates = dict[str, torch.Tensor]
OptState = Any

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "OptState",
    "Optimizer",
    "Params",
    "Updates",
    "apply_updates",
    "as_optimizer",
    "chain",
    "identity",
    "is_rule_state",
    "rule_state",
]

_RULE_STATE_MARK = "__purestep_rule_state__"
S = TypeVar("S", bound=type)


class GradientTransformation(NamedTuple):
    """A pure gradient-space transform: ``init(params) -> state`` and
    ``update(updates, state, params) -> (updates, state)``."""

    init: Callable[[Params], OptState]
    update: Callable[[Updates, OptState, Params], tuple[Updates, OptState]]


class Optimizer(NamedTuple):
    """A complete update rule: ``init(params) -> state`` and
    ``step(grads, state, params) -> (new_params, new_state)``."""

    init: Callable[[Params], OptState]
    step: Callable[[Updates, OptState, Params], tuple[Params, OptState]]


def rule_state(cls: S) -> S:
    """Class decorator: mark a NamedTuple as an update rule's own state.

    A rule state has a ``step`` (0-d tensor, steps taken: torch's ``step``), a
    ``hyperparams`` dict (the dynamic hyperparameters) and per-parameter ``dict[name,
    Tensor]`` fields named like torch.optim's state keys (``exp_avg`` ...). Hyperparameter
    access (``set_hyperparam``, schedules) and torch conversion (``from_torch``,
    ``torch_state_view``) find rule states by this mark, never by their field names, so a
    user's own state that happens to have a ``hyperparams`` field is left alone.
    """
    fields = getattr(cls, "_fields", None)
    if not isinstance(cls, type) or not issubclass(cls, tuple) or fields is None:
        raise TypeError(f"rule_state marks NamedTuple classes, got {cls!r}")
    missing = [f for f in ("step", "hyperparams") if f not in fields]
    if missing:
        raise TypeError(
            f"a rule state needs the fields 'step' and 'hyperparams'; "
            f"{cls.__name__} lacks {missing}"
        )
    setattr(cls, _RULE_STATE_MARK, True)
    return cls


def is_rule_state(node: Any) -> bool:
    """Whether ``node`` is a state marked with ``rule_state``."""
    return getattr(type(node), _RULE_STATE_MARK, False) is True


class EmptyState(NamedTuple):
    """State of a stateless transform."""


def identity() -> GradientTransformation:
    """The transform that changes nothing."""
    return GradientTransformation(
        lambda params: EmptyState(), lambda updates, state, params: (updates, state)
    )


def apply_updates(params: Params, updates: Updates) -> Params:
    r"""``p + u`` for every key: :math:`\theta \leftarrow \theta + u`."""
    missing = params.keys() - updates.keys()
    if missing:
        raise ValueError(f"updates lack keys {sorted(missing)}")
    return {k: torch.add(p, updates[k]) for k, p in params.items()}


def as_optimizer(transform: GradientTransformation) -> Optimizer:
    """Turn an optax-style transform (whose output is the additive update) into a rule."""

    def step(grads: Updates, state: OptState, params: Params) -> tuple[Params, OptState]:
        updates, state = transform.update(grads, state, params)
        return apply_updates(params, updates), state

    return Optimizer(transform.init, step)


def chain(*links: GradientTransformation | Optimizer) -> Any:
    """Compose transforms left to right; if the last link is an ``Optimizer`` the result is
    an ``Optimizer``, else a ``GradientTransformation``. State is a tuple, one per link."""
    if not links:
        raise ValueError("chain() needs at least one transform")
    *head, last = links
    transforms = cast(list[GradientTransformation], head)
    for i, link in enumerate(transforms):
        if not isinstance(link, GradientTransformation):
            raise TypeError(
                f"chain link {i} must be a GradientTransformation (only the last link may be "
                f"an Optimizer), got {type(link).__name__}"
            )
    if not isinstance(last, GradientTransformation | Optimizer):
        raise TypeError(
            f"chain link {len(links) - 1} must be a GradientTransformation or Optimizer, "
            f"got {type(last).__name__}"
        )

    def init(params: Params) -> tuple[Any, ...]:
        return tuple(link.init(params) for link in links)

    def run_transforms(
        updates: Updates, state: tuple[Any, ...], params: Params
    ) -> tuple[Updates, list[Any]]:
        if not isinstance(state, tuple) or len(state) != len(links):
            raise ValueError(
                f"chain state must be a tuple of {len(links)} link states, got {state!r:.80}"
            )
        new_states = []
        for link, link_state in zip(transforms, state, strict=False):
            updates, link_state = link.update(updates, link_state, params)
            new_states.append(link_state)
        return updates, new_states

    if isinstance(last, Optimizer):
        rule = last

        def step(grads: Updates, state: tuple[Any, ...], params: Params) -> tuple[Params, Any]:
            grads, new_states = run_transforms(grads, state, params)
            new_params, last_state = rule.step(grads, state[-1], params)
            return new_params, (*new_states, last_state)

        return Optimizer(init, step)

    final = cast(GradientTransformation, last)

    def update(updates: Updates, state: tuple[Any, ...], params: Params) -> tuple[Updates, Any]:
        updates, new_states = run_transforms(updates, state, params)
        updates, last_state = final.update(updates, state[-1], params)
        return updates, (*new_states, last_state)

    return GradientTransformation(init, update)
