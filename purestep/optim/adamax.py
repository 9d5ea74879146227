r"""Adamax, bitwise twin of ``torch.optim.Adamax(foreach=False)``.

With gradient :math:`g_t`, betas :math:`\beta_1, \beta_2`, learning rate :math:`\gamma`,
weight decay :math:`\lambda`:

.. math::

    g_t &\leftarrow -g_t \quad\text{if maximize} \\
    g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{if } \lambda \ne 0 \\
    m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1) \\
    u_t &= \max(\beta_2 u_{t-1},\, |g_t| + \epsilon) \\
    \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\, \frac{m_t}{u_t}

Same op order as ``torch.optim.adamax._single_tensor_adamax`` (``lerp``, ``maximum`` of
``mul`` and ``abs`` + ``add``, bias correction as a Python float, ``addcdiv(value=-clr)``);
state keys ``exp_avg`` and ``exp_inf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import (
    adam_family_hyperparams,
    check_grads,
    params_device,
)
from purestep.optim.base import Optimizer, Params, Updates, rule_state
from purestep.optim.hyperparams import dynamic_names, hyperparam_tensors, resolve_hyperparams

__all__ = ["AdamaxState", "adamax"]


@rule_state
class AdamaxState(NamedTuple):
    """Adamax's state; the dict fields carry torch.optim's state key names."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    exp_avg: dict[str, torch.Tensor]
    exp_inf: dict[str, torch.Tensor]


def adamax(
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """Adamax (Adam with the infinity norm) with torch.optim.Adamax's names, defaults and
    validation.

    Args:
        lr: learning rate :math:`\\gamma` (default 2e-3, as torch).
        betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
        eps: :math:`\\epsilon` added to :math:`|g_t|` before the running maximum.
        weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
        maximize: ascend instead of descend.
        dynamic: hyperparameters kept as tensors in the state: any of ``lr``, ``beta1``,
            ``beta2``, ``eps``, ``weight_decay``, or ``"all"``. Whether weight decay is *on*
            is fixed here.

    Returns:
        An ``Optimizer`` whose state is ``AdamaxState``.
    """
    static = adam_family_hyperparams(lr, betas, eps, weight_decay)
    dynamic = dynamic_names(dynamic, static)
    # A dynamic weight_decay is tested every step, as torch tests the group's value.
    use_decay = static["weight_decay"] != 0 or "weight_decay" in dynamic

    def init(params: Params) -> AdamaxState:
        device = params_device(params)
        return AdamaxState(
            step=torch.zeros((), dtype=torch.int64, device=device),
            hyperparams=hyperparam_tensors(static, dynamic, device),
            exp_avg={k: torch.zeros_like(p) for k, p in params.items()},
            exp_inf={k: torch.zeros_like(p) for k, p in params.items()},
        )

    def step(grads: Updates, state: AdamaxState, params: Params) -> tuple[Params, AdamaxState]:
        check_grads(grads, params)
        hp = resolve_hyperparams(state.hyperparams, static)
        lr_, b1, b2, eps_, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"]
        t = ops.host_value(state.step) + 1
        (clr,) = ops.once(lr_ / (1 - ops.pow_(b1, t)))

        new_params: Params = {}
        exp_avgs: Params = {}
        exp_infs: Params = {}
        for k, p in params.items():
            g = -grads[k] if maximize else grads[k]
            if use_decay and ops.maybe_nonzero(wd):
                g = ops.add(g, p, alpha=wd)
            exp_avg = ops.lerp(state.exp_avg[k], g, 1 - b1)
            exp_inf = torch.maximum(state.exp_inf[k].mul(b2), g.abs().add(eps_))
            new_params[k] = ops.addcdiv(p, exp_avg, exp_inf, value=-clr)
            exp_avgs[k], exp_infs[k] = exp_avg, exp_inf
        return new_params, AdamaxState(state.step + 1, state.hyperparams, exp_avgs, exp_infs)

    return Optimizer(init, step)
