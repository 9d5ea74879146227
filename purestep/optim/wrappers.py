"""Wrappers around a whole rule: skip non-finite steps, accumulate gradients, and make
hyperparameters state tensors.

All three decide per step with a tensor condition: in eager CPU code the condition is read
back (one ``.item()``) and only the chosen branch runs, so results are bitwise those of the
unwrapped rule; under ``torch.compile`` both branches run and ``torch.where`` picks, so the
graph never changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import params_device
from purestep.optim.base import GradientTransformation, Optimizer, Params, Updates, as_optimizer
from purestep.pytree import tree_map

__all__ = [
    "ApplyIfFiniteState",
    "MultiStepsState",
    "apply_if_finite",
    "inject_hyperparams",
    "multi_steps",
]


def _as_rule(inner: Any, who: str) -> Optimizer:
    if isinstance(inner, GradientTransformation):
        return as_optimizer(inner)
    if not isinstance(inner, Optimizer):
        raise TypeError(
            f"{who} wraps an Optimizer or GradientTransformation, got {type(inner).__name__}"
        )
    return inner


def _pick(cond: torch.Tensor, if_true: Any, if_false: Any) -> Any:
    return tree_map(lambda a, b: torch.where(cond, a, b), if_true, if_false)


class ApplyIfFiniteState(NamedTuple):
    """``notfinite_count``: consecutive skipped steps; ``total_notfinite``: all skips;
    ``last_finite``: whether the last step's gradients were finite."""

    inner: Any
    notfinite_count: torch.Tensor
    total_notfinite: torch.Tensor
    last_finite: torch.Tensor


def apply_if_finite(inner: Any, max_consecutive_errors: int | None = None) -> Optimizer:
    """Skip a step whose gradients hold a NaN or inf: parameters and the inner state stay
    as they were and the skip is counted (``torch.cuda.amp.GradScaler``'s inf-skip).

    Args:
        inner: the rule (or transform) to protect.
        max_consecutive_errors: after this many consecutive skips, apply the step anyway
            (None: never).

    Returns:
        An ``Optimizer`` whose state is ``ApplyIfFiniteState``.
    """
    rule = _as_rule(inner, "apply_if_finite")
    if max_consecutive_errors is not None and max_consecutive_errors < 0:
        raise ValueError(f"max_consecutive_errors must be >= 0, got {max_consecutive_errors}")

    def init(params: Params) -> ApplyIfFiniteState:
        device = params_device(params)
        zero = torch.zeros((), dtype=torch.int64, device=device)
        return ApplyIfFiniteState(
            rule.init(params), zero, zero.clone(), torch.ones((), dtype=torch.bool, device=device)
        )

    def step(
        grads: Updates, state: ApplyIfFiniteState, params: Params
    ) -> tuple[Params, ApplyIfFiniteState]:
        finite = (
            torch.stack([torch.isfinite(g).all() for g in grads.values()]).all()
            if grads
            else torch.ones((), dtype=torch.bool)
        )
        if max_consecutive_errors is not None:
            apply = finite | (state.notfinite_count >= max_consecutive_errors)
        else:
            apply = finite
        notfinite = torch.where(
            finite, torch.zeros_like(state.notfinite_count), state.notfinite_count + 1
        )
        counters = (notfinite, state.total_notfinite + (~finite).to(torch.int64), finite)
        decided = ops.host_value(apply)
        if isinstance(decided, bool):
            if decided:
                new_params, new_inner = rule.step(grads, state.inner, params)
            else:
                new_params, new_inner = params, state.inner
        else:
            stepped = rule.step(grads, state.inner, params)
            new_params, new_inner = _pick(apply, stepped, (params, state.inner))
        return new_params, ApplyIfFiniteState(new_inner, *counters)

    return Optimizer(init, step)


class MultiStepsState(NamedTuple):
    """``mini_step``: micro-batches accumulated so far (0 .. every_k-1); ``acc_grads``: their
    gradient sum; ``inner``: the wrapped rule's state."""

    mini_step: torch.Tensor
    acc_grads: dict[str, torch.Tensor]
    inner: Any


def multi_steps(inner: Any, every_k: int, *, average: bool = False) -> Optimizer:
    """Gradient accumulation: sum the gradients of ``every_k`` micro-batches, then apply
    ``inner`` once; between, parameters and the inner state do not change.

    The sum is accumulated in order, ``((g1 + g2) + g3) ...``, exactly as ``.grad``
    accumulates over ``every_k`` ``backward()`` calls, so with the same loss scaling (e.g.
    a criterion returning ``loss / every_k``) this is bitwise the imperative
    accumulate-then-step loop.

    Args:
        inner: the rule (or transform) applied every ``every_k`` micro-steps.
        every_k: micro-batches per optimizer step (>= 1).
        average: divide the sum by ``every_k`` before the step (optax's ``MultiSteps``).

    Returns:
        An ``Optimizer`` whose state is ``MultiStepsState``.
    """
    rule = _as_rule(inner, "multi_steps")
    if isinstance(every_k, bool) or not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"every_k must be an int >= 1, got {every_k!r}")

    def init(params: Params) -> MultiStepsState:
        device = params_device(params)
        return MultiStepsState(
            torch.zeros((), dtype=torch.int64, device=device),
            {k: torch.zeros_like(p) for k, p in params.items()},
            rule.init(params),
        )

    def step(
        grads: Updates, state: MultiStepsState, params: Params
    ) -> tuple[Params, MultiStepsState]:
        mini = ops.host_value(state.mini_step)
        first = mini == 0
        last = mini == every_k - 1
        if isinstance(first, bool):
            acc = dict(grads) if first else {k: a + grads[k] for k, a in state.acc_grads.items()}
        else:
            acc = {
                k: torch.where(first, grads[k], a + grads[k]) for k, a in state.acc_grads.items()
            }
        to_apply = {k: a / every_k for k, a in acc.items()} if average else acc
        next_mini = (state.mini_step + 1) % every_k
        if isinstance(last, bool):
            if last:
                new_params, new_inner = rule.step(to_apply, state.inner, params)
                acc = {k: torch.zeros_like(a) for k, a in acc.items()}
            else:
                new_params, new_inner = params, state.inner
        else:
            stepped = rule.step(to_apply, state.inner, params)
            new_params, new_inner = _pick(last, stepped, (params, state.inner))
            acc = {k: torch.where(last, torch.zeros_like(a), a) for k, a in acc.items()}
        return new_params, MultiStepsState(next_mini, acc, new_inner)

    return Optimizer(init, step)


def inject_hyperparams(
    factory: Callable[..., Any], dynamic: Sequence[str] | str = "all"
) -> Callable[..., Any]:
    """``factory`` with its hyperparameters held as tensors in the state.

    ``inject_hyperparams(adam)(lr=1e-3, betas=(0.9, 0.99))`` is ``adam(..., dynamic="all")``:
    every numeric hyperparameter can then be changed between steps with ``set_hyperparam``
    without recompiling, and the eager result stays bitwise equal to the static one.
    """
    if not callable(factory):
        raise TypeError(f"inject_hyperparams wraps a rule factory, got {type(factory).__name__}")

    def build(*args: Any, **kwargs: Any) -> Any:
        if "dynamic" in kwargs:
            raise TypeError("inject_hyperparams sets dynamic=; do not pass it")
        return factory(*args, dynamic=dynamic, **kwargs)

    build.__name__ = f"inject_hyperparams({getattr(factory, '__name__', 'factory')})"
    build.__doc__ = factory.__doc__
    return build
