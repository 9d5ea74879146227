r"""RAdam, bitwise twin of ``torch.optim.RAdam(foreach=False)``.

With gradient :math:`g_t`, betas :math:`\beta_1, \beta_2`, learning rate :math:`\gamma`,
weight decay :math:`\lambda`:

.. math::

    g_t &\leftarrow -g_t \quad\text{if maximize} \\
    g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(L2)} \qquad
        \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda) \quad\text{(decoupled)} \\
    m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1), \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    \rho_\infty &= \frac{2}{1-\beta_2} - 1, \qquad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t} \\
    r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}},
        \qquad l_t = \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} \\
    \theta_t &= \theta_{t-1} - \gamma\,\frac{m_t}{1-\beta_1^t}\, l_t\, r_t
        \quad\text{if } \rho_t > 5, \qquad
        \theta_t = \theta_{t-1} - \gamma\,\frac{m_t}{1-\beta_1^t} \quad\text{otherwise}

Same op order as ``torch.optim.radam._single_tensor_radam``: the scalars are Python floats,
the step is ``((m / bc1) * lr * l) * r`` with ``l = bc2**0.5 / (sqrt(v) + eps)`` (a Python
float over a tensor: ``reciprocal`` then ``mul``, as torch's ``__rtruediv__``), applied with
``add(alpha=-1)``. State keys ``exp_avg`` and ``exp_avg_sq``.
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

__all__ = ["RAdamState", "radam"]


@rule_state
class RAdamState(NamedTuple):
    """RAdam's state; the dict fields carry torch.optim's state key names."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]


def radam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """RAdam (rectified Adam) with torch.optim.RAdam's names, defaults and validation.

    Args:
        lr: learning rate :math:`\\gamma`.
        betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`; L2 on the gradient, or decoupled (RAdamW).
        decoupled_weight_decay: AdamW-style decay of the parameters.
        maximize: ascend instead of descend.
        dynamic: hyperparameters kept as tensors in the state: any of ``lr``, ``beta1``,
            ``beta2``, ``eps``, ``weight_decay``, or ``"all"``. Whether weight decay is *on*
            is fixed here.

    Returns:
        An ``Optimizer`` whose state is ``RAdamState``.
    """
    static = adam_family_hyperparams(lr, betas, eps, weight_decay)
    dynamic = dynamic_names(dynamic, static)
    # A dynamic weight_decay is tested every step, as torch tests the group's value.
    use_decay = static["weight_decay"] != 0 or "weight_decay" in dynamic

    def init(params: Params) -> RAdamState:
        device = params_device(params)
        return RAdamState(
            step=torch.zeros((), dtype=torch.int64, device=device),
            hyperparams=hyperparam_tensors(static, dynamic, device),
            exp_avg={k: torch.zeros_like(p) for k, p in params.items()},
            exp_avg_sq={k: torch.zeros_like(p) for k, p in params.items()},
        )

    def step(grads: Updates, state: RAdamState, params: Params) -> tuple[Params, RAdamState]:
        check_grads(grads, params)
        hp = resolve_hyperparams(state.hyperparams, static)
        lr_, b1, b2, eps_, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"]
        t = ops.float64(ops.host_value(state.step) + 1)
        bias_correction1 = 1 - ops.pow_(b1, t)
        beta2_t = ops.pow_(b2, t)
        bias_correction2 = 1 - beta2_t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * beta2_t / bias_correction2
        rectify = rho_t > 5.0
        if isinstance(rectify, torch.Tensor) or rectify:
            # only where torch computes it: rho_inf - 4 or rho_inf - 2 may be 0 otherwise
            rect_sq = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            rect = (
                torch.sqrt(torch.clamp(rect_sq, min=0.0))
                if isinstance(rect_sq, torch.Tensor)
                else ops.sqrt(rect_sq)
            )
        bias_correction2_sqrt = ops.sqrt(bias_correction2)
        if isinstance(rectify, torch.Tensor):
            bias_correction1, bias_correction2_sqrt, rect = ops.once(
                bias_correction1, bias_correction2_sqrt, rect
            )

        new_params: Params = {}
        exp_avgs: Params = {}
        exp_avg_sqs: Params = {}
        for k, p in params.items():
            g = -grads[k] if maximize else grads[k]
            if use_decay and ops.maybe_nonzero(wd):
                if decoupled_weight_decay:
                    p = p.mul(1 - lr_ * wd)
                else:
                    g = ops.add(g, p, alpha=wd)
            exp_avg = ops.lerp(state.exp_avg[k], g, 1 - b1)
            exp_avg_sq = ops.addcmul(state.exp_avg_sq[k].mul(b2), g, g, value=1 - b2)
            exp_avgs[k], exp_avg_sqs[k] = exp_avg, exp_avg_sq
            bias_corrected = exp_avg / bias_correction1
            if isinstance(rectify, torch.Tensor):
                # torch's capturable formulation: both branches, selected per step
                adaptive = bias_correction2_sqrt / exp_avg_sq.sqrt().add(eps_)
                update = torch.where(rectify, adaptive * rect, 1.0)
                new_params[k] = ops.add(p, bias_corrected * lr_ * update, alpha=-1.0)
            elif rectify:
                adaptive = bias_correction2_sqrt / exp_avg_sq.sqrt().add(eps_)
                new_params[k] = torch.add(p, bias_corrected * lr_ * adaptive * rect, alpha=-1.0)
            else:
                new_params[k] = torch.add(p, bias_corrected * lr_, alpha=-1.0)
        return new_params, RAdamState(state.step + 1, state.hyperparams, exp_avgs, exp_avg_sqs)

    return Optimizer(init, step)
