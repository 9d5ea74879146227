r"""Adadelta, bitwise twin of ``torch.optim.Adadelta(foreach=False)``.

With gradient :math:`g_t`, decay :math:`\rho`, learning rate :math:`\gamma`, weight decay
:math:`\lambda`:

.. math::

    g_t &\leftarrow -g_t \quad\text{if maximize} \\
    g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{if } \lambda \ne 0 \\
    v_t &= \rho v_{t-1} + (1-\rho) g_t^2 \\
    \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
    u_t &= \rho u_{t-1} + (1-\rho) \Delta_t^2 \\
    \theta_t &= \theta_{t-1} - \gamma \Delta_t

Same op order as ``torch.optim.adadelta._single_tensor_adadelta`` (``mul`` + ``addcmul``,
``add`` + ``sqrt``, ``div`` then ``mul``, ``add(alpha=-lr)``); state keys ``square_avg``
(:math:`v`) and ``acc_delta`` (:math:`u`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import as_float, check_grads, params_device, torch_check
from purestep.optim.base import Optimizer, Params, Updates, rule_state
from purestep.optim.hyperparams import dynamic_names, hyperparam_tensors, resolve_hyperparams

__all__ = ["AdadeltaState", "adadelta"]


@rule_state
class AdadeltaState(NamedTuple):
    """Adadelta's state; the dict fields carry torch.optim's state key names."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    square_avg: dict[str, torch.Tensor]
    acc_delta: dict[str, torch.Tensor]


def adadelta(
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """Adadelta with torch.optim.Adadelta's names, defaults and validation.

    Args:
        lr: learning rate :math:`\\gamma` scaling the delta (default 1.0, as torch).
        rho: decay :math:`\\rho` of both running averages, in [0, 1].
        eps: :math:`\\epsilon` inside both square roots.
        weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
        maximize: ascend instead of descend.
        dynamic: hyperparameters kept as tensors in the state: any of ``lr``, ``rho``,
            ``eps``, ``weight_decay``, or ``"all"``. Whether weight decay is *on* is fixed
            here.

    Returns:
        An ``Optimizer`` whose state is ``AdadeltaState``.
    """
    lr = as_float("lr", lr)
    rho = as_float("rho", rho)
    eps = as_float("eps", eps)
    weight_decay = as_float("weight_decay", weight_decay)
    torch_check("lr", lr)
    torch_check("rho", rho)
    torch_check("eps", eps)
    torch_check("weight_decay", weight_decay)
    static = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay}
    dynamic = dynamic_names(dynamic, static)
    # A dynamic weight_decay is tested every step, as torch tests the group's value.
    use_decay = weight_decay != 0 or "weight_decay" in dynamic

    def init(params: Params) -> AdadeltaState:
        device = params_device(params)
        return AdadeltaState(
            step=torch.zeros((), dtype=torch.int64, device=device),
            hyperparams=hyperparam_tensors(static, dynamic, device),
            square_avg={k: torch.zeros_like(p) for k, p in params.items()},
            acc_delta={k: torch.zeros_like(p) for k, p in params.items()},
        )

    def step(grads: Updates, state: AdadeltaState, params: Params) -> tuple[Params, AdadeltaState]:
        check_grads(grads, params)
        hp = resolve_hyperparams(state.hyperparams, static)
        lr_, rho_, eps_, wd = hp["lr"], hp["rho"], hp["eps"], hp["weight_decay"]
        new_params: Params = {}
        square_avgs: Params = {}
        acc_deltas: Params = {}
        for k, p in params.items():
            g = -grads[k] if maximize else grads[k]
            if use_decay and ops.maybe_nonzero(wd):
                g = ops.add(g, p, alpha=wd)
            square_avg = ops.addcmul(state.square_avg[k].mul(rho_), g, g, value=1 - rho_)
            std = square_avg.add(eps_).sqrt()
            delta = state.acc_delta[k].add(eps_).sqrt().div(std).mul(g)
            acc_delta = ops.addcmul(state.acc_delta[k].mul(rho_), delta, delta, value=1 - rho_)
            new_params[k] = ops.add(p, delta, alpha=-lr_)
            square_avgs[k], acc_deltas[k] = square_avg, acc_delta
        return new_params, AdadeltaState(state.step + 1, state.hyperparams, square_avgs, acc_deltas)

    return Optimizer(init, step)
