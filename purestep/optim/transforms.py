r"""Gradient-space transforms, composable with ``chain``.

Each returns a ``GradientTransformation(init, update)``; ``update(updates, state, params)``
returns new updates and a new state. The clipping transforms follow
``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_`` operation for operation, so
``chain(clip_by_global_norm(1.0), adam(...))`` is bitwise the imperative loop that calls
``clip_grad_norm_(model.parameters(), 1.0)`` between ``backward()`` and ``step()``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from purestep._compat import foreach_mul, foreach_norm, is_functorch_wrapped
from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import as_float, params_device, require
from purestep.optim.base import EmptyState, GradientTransformation, Params, Updates

__all__ = [
    "TraceState",
    "add_decayed_weights",
    "clip_by_global_norm",
    "clip_by_value",
    "global_norm",
    "scale",
    "trace",
]


def _per_tensor(tensors: list[torch.Tensor]) -> bool:
    """Whether to use one op per tensor instead of torch's multi-tensor kernels: under
    ``torch.compile`` (which may trace a vmap) or ``vmap``."""
    return torch.compiler.is_compiling() or any(is_functorch_wrapped(t) for t in tensors)


def global_norm(updates: Updates, norm_type: float = 2.0) -> torch.Tensor:
    r"""The norm of all tensors as one vector, :math:`\|(\|g_1\|_p, \dots, \|g_n\|_p)\|_p`,
    computed as ``clip_grad_norm_`` does (per-tensor ``_foreach_norm``, then the norm of the
    stacked norms). 0-d tensor; ``tensor(0.)`` for no tensors."""
    tensors = list(updates.values())
    if not tensors:
        return torch.tensor(0.0)
    if _per_tensor(tensors):
        # Under vmap (a sweep) the multi-tensor kernel has no batching rule: the same
        # per-tensor norms, one op each (compiled, inductor fuses them either way).
        norms = [torch.linalg.vector_norm(t, norm_type) for t in tensors]
    else:
        norms = list(foreach_norm(tensors, norm_type))
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


def clip_by_global_norm(max_norm: float, norm_type: float = 2.0) -> GradientTransformation:
    r"""Scale all updates by :math:`\min(1, \text{max\_norm} / (\|g\| + 10^{-6}))`.

    Args:
        max_norm: the largest allowed global norm.
        norm_type: the p of the p-norm (``float("inf")`` for the max norm).

    Returns:
        A stateless transform, bitwise ``torch.nn.utils.clip_grad_norm_(params, max_norm,
        norm_type)`` (CPU, float32) applied to the gradients.
    """
    max_norm = as_float("max_norm", max_norm)
    norm_type = as_float("norm_type", norm_type)
    require(max_norm >= 0.0, f"max_norm must be >= 0, got {max_norm}")
    require(norm_type > 0.0, f"norm_type must be > 0, got {norm_type}")

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params) -> tuple[Updates, EmptyState]:
        if not updates:
            return updates, state
        total = global_norm(updates, norm_type)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        if _per_tensor([coef]):
            return {k: u * coef for k, u in updates.items()}, state
        scaled = foreach_mul(list(updates.values()), coef)
        return dict(zip(updates, scaled, strict=True)), state

    return GradientTransformation(init, update)


def clip_by_value(clip_value: float) -> GradientTransformation:
    """Clamp every update element to ``[-clip_value, clip_value]``
    (``torch.nn.utils.clip_grad_value_``)."""
    clip_value = as_float("clip_value", clip_value)
    require(clip_value >= 0.0, f"clip_value must be >= 0, got {clip_value}")

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params) -> tuple[Updates, EmptyState]:
        return {k: u.clamp(min=-clip_value, max=clip_value) for k, u in updates.items()}, state

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    r""":math:`u \leftarrow u + \lambda\theta`, as torch's coupled (L2) weight decay
    ``grad.add(param, alpha=weight_decay)``."""
    weight_decay = as_float("weight_decay", weight_decay)
    require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params) -> tuple[Updates, EmptyState]:
        if weight_decay == 0:
            return updates, state
        return {k: ops.add(u, params[k], alpha=weight_decay) for k, u in updates.items()}, state

    return GradientTransformation(init, update)


def scale(step_size: float) -> GradientTransformation:
    r""":math:`u \leftarrow s\,u` (with ``as_optimizer``, ``scale(-lr)`` is plain SGD)."""
    step_size = as_float("step_size", step_size)

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params) -> tuple[Updates, EmptyState]:
        return {k: u.mul(step_size) for k, u in updates.items()}, state

    return GradientTransformation(init, update)


class TraceState(NamedTuple):
    """The running trace, one tensor per parameter."""

    trace: dict[str, torch.Tensor]


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    r"""Momentum in optax's form: :math:`t \leftarrow \mu t + u`; the update is :math:`t`, or
    :math:`u + \mu t` with ``nesterov``. (For torch's SGD momentum use ``sgd(momentum=)``:
    torch starts the buffer at the first gradient and applies dampening.)"""
    decay = as_float("decay", decay)
    require(decay >= 0.0, f"Invalid momentum value: {decay}")

    def init(params: Params) -> TraceState:
        device = params_device(params)
        return TraceState({k: torch.zeros_like(p, device=device) for k, p in params.items()})

    def update(updates: Updates, state: TraceState, params: Params) -> tuple[Updates, TraceState]:
        new = {k: ops.add(u, state.trace[k], alpha=decay) for k, u in updates.items()}
        out = {k: ops.add(u, new[k], alpha=decay) for k, u in updates.items()} if nesterov else new
        return out, TraceState(new)

    return GradientTransformation(init, update)
