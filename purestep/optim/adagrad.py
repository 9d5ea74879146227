r"""Adagrad, bitwise twin of ``torch.optim.Adagrad(foreach=False)`` (dense gradients).

With gradient :math:`g_t`, learning rate :math:`\gamma`, learning-rate decay :math:`\eta`,
weight decay :math:`\lambda` and initial accumulator value :math:`s_0`:

.. math::

    g_t &\leftarrow -g_t \quad\text{if maximize} \\
    g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{if } \lambda \ne 0 \\
    \tilde\gamma_t &= \gamma / (1 + (t-1)\eta) \\
    s_t &= s_{t-1} + g_t^2 \\
    \theta_t &= \theta_{t-1} - \tilde\gamma_t\, g_t / (\sqrt{s_t} + \epsilon)

Same op order as ``torch.optim.adagrad._single_tensor_adagrad`` (``addcmul(value=1)``,
``sqrt`` + ``add``, ``addcdiv(value=-clr)`` with ``clr`` a Python float); state key ``sum``,
filled with ``initial_accumulator_value`` at ``init`` as torch does in its constructor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import as_float, check_grads, params_device, torch_check
from purestep.optim.base import Optimizer, Params, Updates, rule_state
from purestep.optim.hyperparams import dynamic_names, hyperparam_tensors, resolve_hyperparams

__all__ = ["AdagradState", "adagrad"]


@rule_state
class AdagradState(NamedTuple):
    """Adagrad's state; ``sum`` is torch.optim's state key of that name."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    sum: dict[str, torch.Tensor]


def adagrad(
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """Adagrad with torch.optim.Adagrad's names, defaults and validation.

    Args:
        lr: learning rate :math:`\\gamma` (default 1e-2, as torch).
        lr_decay: :math:`\\eta`; step :math:`t` uses :math:`\\gamma / (1 + (t-1)\\eta)`.
        weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
        initial_accumulator_value: starting value :math:`s_0` of the sum of squares
            (used by ``init`` only, so it cannot be dynamic).
        eps: :math:`\\epsilon` added to the denominator.
        maximize: ascend instead of descend.
        dynamic: hyperparameters kept as tensors in the state: any of ``lr``, ``lr_decay``,
            ``weight_decay``, ``eps``, or ``"all"``. Whether weight decay is *on* is fixed
            here.

    Returns:
        An ``Optimizer`` whose state is ``AdagradState``.
    """
    lr = as_float("lr", lr)
    lr_decay = as_float("lr_decay", lr_decay)
    weight_decay = as_float("weight_decay", weight_decay)
    initial_accumulator_value = as_float("initial_accumulator_value", initial_accumulator_value)
    eps = as_float("eps", eps)
    torch_check("lr", lr)
    torch_check("lr_decay", lr_decay)
    torch_check("weight_decay", weight_decay)
    torch_check("initial_accumulator_value", initial_accumulator_value)
    torch_check("eps", eps)
    static = {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay, "eps": eps}
    dynamic = dynamic_names(dynamic, static)
    # A dynamic weight_decay is tested every step, as torch tests the group's value.
    use_decay = weight_decay != 0 or "weight_decay" in dynamic

    def init(params: Params) -> AdagradState:
        device = params_device(params)
        return AdagradState(
            step=torch.zeros((), dtype=torch.int64, device=device),
            hyperparams=hyperparam_tensors(static, dynamic, device),
            sum={k: torch.full_like(p, initial_accumulator_value) for k, p in params.items()},
        )

    def step(grads: Updates, state: AdagradState, params: Params) -> tuple[Params, AdagradState]:
        check_grads(grads, params)
        hp = resolve_hyperparams(state.hyperparams, static)
        lr_, decay, wd, eps_ = hp["lr"], hp["lr_decay"], hp["weight_decay"], hp["eps"]
        t = ops.float64(ops.host_value(state.step) + 1)
        (clr,) = ops.once(lr_ / (1 + (t - 1) * decay))

        new_params: Params = {}
        sums: Params = {}
        for k, p in params.items():
            g = -grads[k] if maximize else grads[k]
            if use_decay and ops.maybe_nonzero(wd):
                g = ops.add(g, p, alpha=wd)
            state_sum = torch.addcmul(state.sum[k], g, g, value=1)
            sums[k] = state_sum
            std = state_sum.sqrt().add(eps_)
            new_params[k] = ops.addcdiv(p, g, std, value=-clr)
        return new_params, AdagradState(state.step + 1, state.hyperparams, sums)

    return Optimizer(init, step)
