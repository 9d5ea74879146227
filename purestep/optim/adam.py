r"""Adam and AdamW, bitwise twins of ``torch.optim.Adam/AdamW(foreach=False)``.

With gradient :math:`g_t`, betas :math:`\beta_1, \beta_2`, learning rate :math:`\gamma`,
weight decay :math:`\lambda`:

.. math::

    g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(Adam, L2)} \qquad
    \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda) \quad\text{(AdamW, decoupled)} \\
    m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1) \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    \hat v_t &= \max(\hat v_{t-1}, v_t) \quad\text{(amsgrad; else } \hat v_t = v_t) \\
    \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
        \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

Same op order as ``torch.optim.adam._single_tensor_adam`` (``lerp``, ``mul``+``addcmul``,
bias corrections as Python floats, ``addcdiv(value=-step_size)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import as_float, check_grads, params_device, require
from purestep.optim.base import Optimizer, Params, Updates
from purestep.optim.hyperparams import dynamic_names, hyperparam_tensors, resolve_hyperparams

__all__ = ["AdamState", "adam", "adamw"]


class AdamState(NamedTuple):
    """Adam's state; the dict fields carry torch.optim's state key names."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    max_exp_avg_sq: dict[str, torch.Tensor]


def adam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """Adam with torch.optim.Adam's names, defaults and validation.

    Args:
        lr: learning rate :math:`\\gamma`.
        betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`; L2 on the gradient, or decoupled (AdamW).
        amsgrad: keep the running maximum of :math:`v_t`.
        maximize: ascend instead of descend.
        decoupled_weight_decay: AdamW-style decay (what ``adamw`` sets).
        dynamic: hyperparameters kept as tensors in the state: any of ``lr``, ``beta1``,
            ``beta2``, ``eps``, ``weight_decay``, or ``"all"``. Whether weight decay is *on*
            is fixed here.

    Returns:
        An ``Optimizer`` whose state is ``AdamState``.
    """
    lr = as_float("lr", lr)
    eps = as_float("eps", eps)
    weight_decay = as_float("weight_decay", weight_decay)
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise TypeError(f"betas must be a pair of floats, got {betas!r}")
    beta1, beta2 = as_float("betas[0]", betas[0]), as_float("betas[1]", betas[1])
    require(lr >= 0.0, f"Invalid learning rate: {lr}")
    require(eps >= 0.0, f"Invalid epsilon value: {eps}")
    require(0.0 <= beta1 < 1.0, f"Invalid beta parameter at index 0: {beta1}")
    require(0.0 <= beta2 < 1.0, f"Invalid beta parameter at index 1: {beta2}")
    require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    static = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay}
    dynamic = dynamic_names(dynamic, static)
    use_decay = weight_decay != 0

    def init(params: Params) -> AdamState:
        device = params_device(params)
        return AdamState(
            step=torch.zeros((), dtype=torch.int64, device=device),
            hyperparams=hyperparam_tensors(static, dynamic, device),
            exp_avg={k: torch.zeros_like(p) for k, p in params.items()},
            exp_avg_sq={k: torch.zeros_like(p) for k, p in params.items()},
            max_exp_avg_sq={k: torch.zeros_like(p) for k, p in params.items()} if amsgrad else {},
        )

    def step(grads: Updates, state: AdamState, params: Params) -> tuple[Params, AdamState]:
        check_grads(grads, params)
        hp = resolve_hyperparams(state.hyperparams, static)
        lr_, b1, b2, eps_, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"]
        t = ops.host_value(state.step) + 1
        bias_correction1 = 1 - ops.pow_(b1, t)
        bias_correction2 = 1 - ops.pow_(b2, t)
        step_size, bias_correction2_sqrt = ops.once(
            lr_ / bias_correction1, ops.sqrt(bias_correction2)
        )

        new_params: Params = {}
        exp_avgs: Params = {}
        exp_avg_sqs: Params = {}
        max_sqs: Params = {}
        # Eager CPU (Python scalars): fewer fresh tensors, updated in place where torch.optim
        # updates in place (same kernels, same bits). Tensor path: plain out-of-place math.
        eager = not isinstance(step_size, torch.Tensor)
        for k, p in params.items():
            g = -grads[k] if maximize else grads[k]
            fresh_p = False
            if use_decay:
                if decoupled_weight_decay:
                    p = p.mul(1 - lr_ * wd)
                    fresh_p = True
                else:
                    g = ops.add(g, p, alpha=wd)
            exp_avg = ops.lerp(state.exp_avg[k], g, 1 - b1)
            if eager:
                exp_avg_sq = state.exp_avg_sq[k].mul(b2).addcmul_(g, g, value=cast(float, 1 - b2))
            else:
                exp_avg_sq = ops.addcmul(state.exp_avg_sq[k].mul(b2), g, g, value=1 - b2)
            if amsgrad:
                second = torch.maximum(state.max_exp_avg_sq[k], exp_avg_sq)
                max_sqs[k] = second
            else:
                second = exp_avg_sq
            denom = (second.sqrt() / bias_correction2_sqrt).add_(eps_)
            if not eager:
                new_params[k] = ops.addcdiv(p, exp_avg, denom, value=-step_size)
            elif fresh_p:
                new_params[k] = p.addcdiv_(exp_avg, denom, value=-cast(float, step_size))
            else:  # the result may overwrite denom element by element (full overlap is safe)
                new_params[k] = torch.addcdiv(
                    p, exp_avg, denom, value=-cast(float, step_size), out=denom
                )
            exp_avgs[k], exp_avg_sqs[k] = exp_avg, exp_avg_sq
        return new_params, AdamState(
            state.step + 1, state.hyperparams, exp_avgs, exp_avg_sqs, max_sqs
        )

    return Optimizer(init, step)


def adamw(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """AdamW: ``adam`` with decoupled weight decay, torch.optim.AdamW's defaults
    (``weight_decay=1e-2``). See ``adam`` for the arguments and the math."""
    return adam(
        lr,
        betas,
        eps,
        weight_decay,
        amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
        dynamic=dynamic,
    )
