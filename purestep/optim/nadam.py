r"""NAdam, bitwise twin of ``torch.optim.NAdam(foreach=False)``.

With gradient :math:`g_t`, betas :math:`\beta_1, \beta_2`, learning rate :math:`\gamma`,
weight decay :math:`\lambda` and momentum decay :math:`\psi`:

.. math::

    g_t &\leftarrow -g_t \quad\text{if maximize} \\
    g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(L2)} \qquad
        \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda) \quad\text{(decoupled)} \\
    \mu_t &= \beta_1\bigl(1 - \tfrac12\, 0.96^{t\psi}\bigr), \qquad
        \mu_{t+1} = \beta_1\bigl(1 - \tfrac12\, 0.96^{(t+1)\psi}\bigr) \\
    \Pi_t &= \Pi_{t-1}\,\mu_t \quad\text{(} \Pi_0 = 1 \text{; torch's } \texttt{mu\_product}) \\
    m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1), \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    d_t &= \sqrt{v_t / (1-\beta_2^t)} + \epsilon \\
    \theta_t &= \theta_{t-1} - \gamma\frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{d_t}
        - \gamma\frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\,\frac{m_t}{d_t}

Same op order as ``torch.optim.nadam._single_tensor_nadam``: :math:`\Pi_t` is a 0-d tensor
of torch's scalar dtype (float32) multiplied by the Python float :math:`\mu_t`, read back as
a Python float for the two ``addcdiv(value=)`` coefficients, which are Python floats.
State keys ``exp_avg``, ``exp_avg_sq`` and the rule-wide ``mu_product`` (torch repeats it
for every parameter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import (
    adam_family_hyperparams,
    as_float,
    check_grads,
    params_device,
    torch_check,
)
from purestep.optim.base import Optimizer, Params, Updates, rule_state
from purestep.optim.hyperparams import dynamic_names, hyperparam_tensors, resolve_hyperparams

__all__ = ["NAdamState", "nadam"]


@rule_state
class NAdamState(NamedTuple):
    """NAdam's state; the dict fields carry torch.optim's state key names, ``mu_product``
    is the rule-wide 0-d product of the momentum schedule (torch's scalar dtype)."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    mu_product: torch.Tensor
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]


def nadam(
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """NAdam (Adam with Nesterov momentum) with torch.optim.NAdam's names, defaults and
    validation.

    Args:
        lr: learning rate :math:`\\gamma` (default 2e-3, as torch).
        betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`; L2 on the gradient, or decoupled (NAdamW).
        momentum_decay: :math:`\\psi` of the momentum schedule :math:`\\mu_t`.
        decoupled_weight_decay: AdamW-style decay of the parameters.
        maximize: ascend instead of descend.
        dynamic: hyperparameters kept as tensors in the state: any of ``lr``, ``beta1``,
            ``beta2``, ``eps``, ``weight_decay``, ``momentum_decay``, or ``"all"``. Whether
            weight decay is *on* is fixed here.

    Returns:
        An ``Optimizer`` whose state is ``NAdamState``.
    """
    static = adam_family_hyperparams(lr, betas, eps, weight_decay)
    static["momentum_decay"] = as_float("momentum_decay", momentum_decay)
    torch_check("momentum_decay", static["momentum_decay"])
    dynamic = dynamic_names(dynamic, static)
    # A dynamic weight_decay is tested every step, as torch tests the group's value.
    use_decay = static["weight_decay"] != 0 or "weight_decay" in dynamic

    def init(params: Params) -> NAdamState:
        device = params_device(params)
        # torch.optim's _get_scalar_dtype(): float64 only under a float64 default dtype
        scalar_dtype = (
            torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        )
        return NAdamState(
            step=torch.zeros((), dtype=torch.int64, device=device),
            hyperparams=hyperparam_tensors(static, dynamic, device),
            mu_product=torch.ones((), dtype=scalar_dtype, device=device),
            exp_avg={k: torch.zeros_like(p) for k, p in params.items()},
            exp_avg_sq={k: torch.zeros_like(p) for k, p in params.items()},
        )

    def step(grads: Updates, state: NAdamState, params: Params) -> tuple[Params, NAdamState]:
        check_grads(grads, params)
        hp = resolve_hyperparams(state.hyperparams, static)
        lr_, b1, b2, eps_, wd, psi = (
            hp["lr"],
            hp["beta1"],
            hp["beta2"],
            hp["eps"],
            hp["weight_decay"],
            hp["momentum_decay"],
        )
        t = ops.float64(ops.host_value(state.step) + 1)
        bias_correction2 = 1 - ops.pow_(b2, t)
        mu = b1 * (1.0 - 0.5 * ops.pow_(0.96, t * psi))
        mu_next = b1 * (1.0 - 0.5 * ops.pow_(0.96, (t + 1) * psi))
        factor = mu.to(state.mu_product.dtype) if isinstance(mu, torch.Tensor) else mu
        mu_product = state.mu_product * factor
        mu_product_value = ops.float64(ops.host_value(mu_product))
        mu_product_next = mu_product_value * mu_next
        grad_coef = -lr_ * (1.0 - mu) / (1.0 - mu_product_value)
        avg_coef = (-lr_ * mu_next) / (1.0 - mu_product_next)
        bias_correction2, grad_coef, avg_coef = ops.once(bias_correction2, grad_coef, avg_coef)

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
            denom = exp_avg_sq.div(bias_correction2).sqrt().add(eps_)
            p = ops.addcdiv(p, g, denom, value=grad_coef)
            new_params[k] = ops.addcdiv(p, exp_avg, denom, value=avg_coef)
            exp_avgs[k], exp_avg_sqs[k] = exp_avg, exp_avg_sq
        return new_params, NAdamState(
            state.step + 1, state.hyperparams, mu_product, exp_avgs, exp_avg_sqs
        )

    return Optimizer(init, step)
