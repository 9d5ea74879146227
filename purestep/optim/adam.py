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

``foreach=True`` runs the same ops as multi-tensor ``torch._foreach_*`` calls (one Python
call per op for all parameters, as ``torch.optim.adam._multi_tensor_adam`` does): less
Python overhead per step in eager mode, and on CPU bitwise equal to both torch paths
(``foreach=False`` and ``foreach=True``; tested). Under ``torch.compile`` or ``vmap``, and
wherever the step scalars are tensors, the per-tensor path is used (inductor fuses it
anyway), so the option never changes a compiled result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import torch

from purestep._compat import (
    foreach_add,
    foreach_add_,
    foreach_addcdiv,
    foreach_addcdiv_,
    foreach_addcmul_,
    foreach_div_,
    foreach_lerp,
    foreach_maximum,
    foreach_mul,
    foreach_neg,
    foreach_sqrt,
)
from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import (
    adam_family_hyperparams,
    check_grads,
    params_device,
)
from purestep.optim.base import Optimizer, Params, Updates, rule_state
from purestep.optim.hyperparams import dynamic_names, hyperparam_tensors, resolve_hyperparams

__all__ = ["AdamState", "adam", "adamw"]


@rule_state
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
    foreach: bool | None = None,
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
        foreach: eager fast mode with multi-tensor ``torch._foreach_*`` ops (``None`` means
            ``False``, the per-tensor path). Same bits on CPU; see the module docstring.
        dynamic: hyperparameters kept as tensors in the state: any of ``lr``, ``beta1``,
            ``beta2``, ``eps``, ``weight_decay``, or ``"all"``. Whether weight decay is *on*
            is fixed here.

    Returns:
        An ``Optimizer`` whose state is ``AdamState``.
    """
    static = adam_family_hyperparams(lr, betas, eps, weight_decay)
    dynamic = dynamic_names(dynamic, static)
    # A dynamic weight_decay is tested every step, as torch tests the group's value.
    use_decay = static["weight_decay"] != 0 or "weight_decay" in dynamic
    if foreach is not None and not isinstance(foreach, bool):
        raise TypeError(f"foreach must be a bool or None, got {foreach!r}")

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

        eager = not isinstance(step_size, torch.Tensor)
        if foreach and eager:
            return _foreach_adam(
                grads,
                state,
                params,
                lr=cast(float, lr_),
                beta1=cast(float, b1),
                beta2=cast(float, b2),
                eps=cast(float, eps_),
                weight_decay=cast(float, wd) if use_decay else 0.0,
                amsgrad=amsgrad,
                maximize=maximize,
                decoupled_weight_decay=decoupled_weight_decay,
                step_size=cast(float, step_size),
                bias_correction2_sqrt=cast(float, bias_correction2_sqrt),
            )

        new_params: Params = {}
        exp_avgs: Params = {}
        exp_avg_sqs: Params = {}
        max_sqs: Params = {}
        # Eager CPU (Python scalars): fewer fresh tensors, updated in place where torch.optim
        # updates in place (same kernels, same bits). Tensor path: plain out-of-place math.
        for k, p in params.items():
            g = -grads[k] if maximize else grads[k]
            fresh_p = False
            if use_decay and ops.maybe_nonzero(wd):
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
            if eager:  # in place on the fresh sqrt: the same kernels, one buffer fewer
                denom = second.sqrt().div_(cast(float, bias_correction2_sqrt)).add_(eps_)
            else:
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


def _foreach_adam(
    grads: Updates,
    state: AdamState,
    params: Params,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    step_size: float,
    bias_correction2_sqrt: float,
) -> tuple[Params, AdamState]:
    """One Adam step as multi-tensor ops: the per-tensor math, one call per op.

    Every list op here is out-of-place first (fresh outputs), then in place on those fresh
    tensors only, so the inputs are never written."""
    keys = list(params)
    ps = [params[k] for k in keys]
    gs = [grads[k] for k in keys]
    if maximize:
        gs = list(foreach_neg(gs))
    fresh_params = False
    if weight_decay != 0:
        if decoupled_weight_decay:
            ps = list(foreach_mul(ps, 1 - lr * weight_decay))
            fresh_params = True
        else:
            gs = list(foreach_add(gs, ps, alpha=weight_decay))
    exp_avgs = foreach_lerp([state.exp_avg[k] for k in keys], gs, 1 - beta1)
    exp_avg_sqs = foreach_mul([state.exp_avg_sq[k] for k in keys], beta2)
    foreach_addcmul_(exp_avg_sqs, gs, gs, value=1 - beta2)
    if amsgrad:
        max_sqs = foreach_maximum([state.max_exp_avg_sq[k] for k in keys], exp_avg_sqs)
        denom = foreach_sqrt(max_sqs)
    else:
        denom = foreach_sqrt(exp_avg_sqs)
    foreach_div_(denom, bias_correction2_sqrt)
    foreach_add_(denom, eps)
    if fresh_params:
        foreach_addcdiv_(ps, exp_avgs, denom, value=-step_size)
        new = ps
    else:
        new = list(foreach_addcdiv(ps, exp_avgs, denom, value=-step_size))
    return dict(zip(keys, new, strict=True)), AdamState(
        state.step + 1,
        state.hyperparams,
        dict(zip(keys, exp_avgs, strict=True)),
        dict(zip(keys, exp_avg_sqs, strict=True)),
        dict(zip(keys, max_sqs, strict=True)) if amsgrad else {},
    )


def adamw(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
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
        foreach=foreach,
        dynamic=dynamic,
    )
