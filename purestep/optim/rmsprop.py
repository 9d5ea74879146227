r"""RMSprop, bitwise twin of ``torch.optim.RMSprop(foreach=False)``.

With gradient :math:`g_t`, smoothing constant :math:`\alpha`, momentum :math:`\mu`, weight
decay :math:`\lambda`, learning rate :math:`\gamma`:

.. math::

    g_t &\leftarrow -g_t \quad\text{if maximize} \\
    g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{if } \lambda \ne 0 \\
    v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2 \\
    \bar g_t &= \operatorname{lerp}(\bar g_{t-1}, g_t, 1-\alpha), \qquad
        d_t = \sqrt{v_t - \bar g_t^2} + \epsilon \quad\text{(centered)} \\
    d_t &= \sqrt{v_t} + \epsilon \quad\text{(not centered)} \\
    b_t &= \mu b_{t-1} + g_t / d_t, \qquad \theta_t = \theta_{t-1} - \gamma b_t
        \quad\text{if } \mu > 0 \\
    \theta_t &= \theta_{t-1} - \gamma\, g_t / d_t \quad\text{otherwise}

Same op order as ``torch.optim.rmsprop._single_tensor_rmsprop`` (``mul`` + ``addcmul``,
``lerp``, ``addcmul(value=-1)`` for the centered variance, ``addcdiv``, ``add(alpha=-lr)``);
state keys ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from purestep.optim import _scalar_ops as ops
from purestep.optim._validate import as_float, check_grads, params_device, torch_check
from purestep.optim.base import Optimizer, Params, Updates, rule_state
from purestep.optim.hyperparams import dynamic_names, hyperparam_tensors, resolve_hyperparams

__all__ = ["RMSpropState", "rmsprop"]


@rule_state
class RMSpropState(NamedTuple):
    """RMSprop's state; the dict fields carry torch.optim's state key names
    (``momentum_buffer`` empty when momentum is 0 and not dynamic, ``grad_avg`` empty unless
    centered)."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    square_avg: dict[str, torch.Tensor]
    momentum_buffer: dict[str, torch.Tensor]
    grad_avg: dict[str, torch.Tensor]


def rmsprop(
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
    dynamic: Sequence[str] | str = ("lr",),
) -> Optimizer:
    """RMSprop with torch.optim.RMSprop's names, defaults and validation.

    Args:
        lr: learning rate :math:`\\gamma` (default 1e-2, as torch).
        alpha: smoothing constant :math:`\\alpha` of the squared-gradient average.
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
        momentum: momentum factor :math:`\\mu`.
        centered: divide by the (estimated) variance instead of the second moment.
        maximize: ascend instead of descend.
        dynamic: hyperparameters kept as tensors in the state: any of ``lr``, ``alpha``,
            ``eps``, ``weight_decay``, ``momentum``, or ``"all"``. Whether weight decay is
            *on* is fixed here; a dynamic ``momentum`` may go to 0 (a plain step, the buffer
            kept) and back, as torch's ``param_groups[i]["momentum"]`` may.

    Returns:
        An ``Optimizer`` whose state is ``RMSpropState``.
    """
    lr = as_float("lr", lr)
    alpha = as_float("alpha", alpha)
    eps = as_float("eps", eps)
    weight_decay = as_float("weight_decay", weight_decay)
    momentum = as_float("momentum", momentum)
    torch_check("lr", lr)
    torch_check("eps", eps)
    torch_check("momentum", momentum)
    torch_check("weight_decay", weight_decay)
    torch_check("alpha", alpha)
    static = {
        "lr": lr,
        "alpha": alpha,
        "eps": eps,
        "weight_decay": weight_decay,
        "momentum": momentum,
    }
    dynamic = dynamic_names(dynamic, static)
    switchable = "momentum" in dynamic  # torch tests momentum > 0 at every step
    use_momentum = momentum > 0 or switchable
    # A dynamic weight_decay is tested every step, as torch tests the group's value.
    use_decay = weight_decay != 0 or "weight_decay" in dynamic

    def init(params: Params) -> RMSpropState:
        device = params_device(params)
        return RMSpropState(
            step=torch.zeros((), dtype=torch.int64, device=device),
            hyperparams=hyperparam_tensors(static, dynamic, device),
            square_avg={k: torch.zeros_like(p) for k, p in params.items()},
            momentum_buffer=(
                {k: torch.zeros_like(p) for k, p in params.items()} if use_momentum else {}
            ),
            grad_avg={k: torch.zeros_like(p) for k, p in params.items()} if centered else {},
        )

    def step(grads: Updates, state: RMSpropState, params: Params) -> tuple[Params, RMSpropState]:
        check_grads(grads, params)
        hp = resolve_hyperparams(state.hyperparams, static)
        lr_, alpha_, eps_, wd, mom = (
            hp["lr"],
            hp["alpha"],
            hp["eps"],
            hp["weight_decay"],
            hp["momentum"],
        )
        new_params: Params = {}
        square_avgs: Params = {}
        bufs: Params = {}
        grad_avgs: Params = {}
        on: bool | torch.Tensor = (mom > 0) if switchable else True  # a tensor if mom is
        for k, p in params.items():
            g = -grads[k] if maximize else grads[k]
            if use_decay and ops.maybe_nonzero(wd):
                g = ops.add(g, p, alpha=wd)
            square_avg = ops.addcmul(state.square_avg[k].mul(alpha_), g, g, value=1 - alpha_)
            square_avgs[k] = square_avg
            if centered:
                grad_avg = ops.lerp(state.grad_avg[k], g, 1 - alpha_)
                grad_avgs[k] = grad_avg
                avg = torch.addcmul(square_avg, grad_avg, grad_avg, value=-1).sqrt()
            else:
                avg = square_avg.sqrt()
            avg = avg.add(eps_)
            if use_momentum and on is not False:
                old = state.momentum_buffer[k]
                buf = torch.addcdiv(old.mul(mom), g, avg)
                new_p = ops.add(p, buf, alpha=-lr_)
                if isinstance(on, torch.Tensor):  # momentum 0: plain step, the buffer waits
                    buf = torch.where(on, buf, old)
                    new_p = torch.where(on, new_p, ops.addcdiv(p, g, avg, value=-lr_))
                bufs[k] = buf
                new_params[k] = new_p
            else:
                if use_momentum:
                    bufs[k] = state.momentum_buffer[k]
                new_params[k] = ops.addcdiv(p, g, avg, value=-lr_)
        return new_params, RMSpropState(
            state.step + 1, state.hyperparams, square_avgs, bufs, grad_avgs
        )

    return Optimizer(init, step)
