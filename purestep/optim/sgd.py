r"""Stochastic gradient descent, bitwise twin of ``torch.optim.SGD(foreach=False)``.

With gradient :math:`g_t`, momentum :math:`\mu`, dampening :math:`\tau`, weight decay
:math:`\lambda` and learning rate :math:`\gamma`:

.. math::

    g_t &\leftarrow -g_t \quad\text{if maximize} \\
    g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{if } \lambda \ne 0 \\
    b_t &= g_t \;(t = 1), \qquad b_t = \mu b_{t-1} + (1-\tau) g_t \;(t > 1) \\
    g_t &\leftarrow g_t + \mu b_t \;\text{(nesterov)} \quad\text{or}\quad g_t \leftarrow b_t \\
    \theta_t &= \theta_{t-1} - \gamma g_t

Same op order as ``torch.optim.sgd._single_tensor_sgd`` (``add(alpha=)`` fused roundings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import as_float, check_grads, params_device, require, torch_check
from purestep.optim.base import Optimizer, Params, Updates, rule_state
from purestep.optim.hyperparams import dynamic_names, hyperparam_tensors, resolve_hyperparams

__all__ = ["SGDState", "sgd"]


@rule_state
class SGDState(NamedTuple):
    """``step``: steps taken (0-d int64; with a dynamic momentum, the steps taken with
    momentum on: torch's buffer starts at the first of them); ``momentum_buffer``: torch's
    state key of that name (empty when momentum is 0 and not dynamic); ``hyperparams``: the
    dynamic hyperparameters."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    momentum_buffer: dict[str, torch.Tensor]


def sgd(
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """SGD with torch.optim.SGD's names, defaults and validation.

    Args:
        lr: learning rate :math:`\\gamma` (default 1e-3, as torch).
        momentum: momentum factor :math:`\\mu`.
        dampening: dampening :math:`\\tau` for momentum.
        weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: ascend instead of descend.
        dynamic: hyperparameters kept as tensors in the state (changeable without
            recompiling), or ``"all"``; whether weight decay is *on* is fixed here. A dynamic
            ``momentum`` (e.g. driven by ``one_cycle_lr``) may go to 0 and back as torch's
            ``param_groups[i]["momentum"]`` may: a step at momentum 0 is plain SGD and leaves
            the buffer as it was.

    Returns:
        An ``Optimizer``; its state is ``SGDState``.
    """
    lr = as_float("lr", lr)
    momentum = as_float("momentum", momentum)
    dampening = as_float("dampening", dampening)
    weight_decay = as_float("weight_decay", weight_decay)
    torch_check("lr", lr)
    torch_check("momentum", momentum)
    torch_check("weight_decay", weight_decay)
    require(
        not nesterov or (momentum > 0 and dampening == 0),
        "Nesterov momentum requires a momentum and zero dampening",
    )
    static = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay}
    dynamic = dynamic_names(dynamic, static)
    switchable = "momentum" in dynamic  # torch tests momentum != 0 at every step
    use_momentum = momentum != 0 or switchable
    # A dynamic weight_decay is tested every step, as torch tests the group's value.
    use_decay = weight_decay != 0 or "weight_decay" in dynamic

    def init(params: Params) -> SGDState:
        device = params_device(params)
        return SGDState(
            step=torch.zeros((), dtype=torch.int64, device=device),
            hyperparams=hyperparam_tensors(static, dynamic, device),
            momentum_buffer=(
                {k: torch.zeros_like(p) for k, p in params.items()} if use_momentum else {}
            ),
        )

    def step(grads: Updates, state: SGDState, params: Params) -> tuple[Params, SGDState]:
        check_grads(grads, params)
        hp = resolve_hyperparams(state.hyperparams, static)
        lr_, mom, damp, wd = hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"]
        first = ops.host_value(state.step) == 0
        on: bool | torch.Tensor = (mom != 0) if switchable else True  # a tensor if mom is
        new_params: Params = {}
        new_bufs: Params = {}
        for k, p in params.items():
            g = -grads[k] if maximize else grads[k]
            if use_decay and ops.maybe_nonzero(wd):
                g = ops.add(g, p, alpha=wd)
            if use_momentum:
                old = state.momentum_buffer[k]
                if on is False:  # momentum 0 at this step: plain SGD, the buffer waits
                    new_bufs[k] = old
                else:
                    if isinstance(first, torch.Tensor):
                        buf = torch.where(first, g, ops.add(old.mul(mom), g, alpha=1 - damp))
                    elif first:
                        buf = g.clone()
                    else:
                        buf = ops.add(old.mul(mom), g, alpha=1 - damp)
                    d = ops.add(g, buf, alpha=mom) if nesterov else buf
                    if isinstance(on, torch.Tensor):
                        buf, d = torch.where(on, buf, old), torch.where(on, d, g)
                    new_bufs[k] = buf
                    g = d
            new_params[k] = ops.add(p, g, alpha=-lr_)
        taken = on.to(state.step.dtype) if isinstance(on, torch.Tensor) else int(on)
        return new_params, SGDState(state.step + taken, state.hyperparams, new_bufs)

    return Optimizer(init, step)
