"""Hyperparameter checks with torch.optim's exact messages, plus type checks it lacks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from purestep.optim.base import Params

__all__ = [
    "adam_family_hyperparams",
    "as_float",
    "check_hyperparam",
    "params_device",
    "require",
    "torch_check",
]


def as_float(name: str, value: Any) -> float:
    """A real number (or a 1-element tensor, as torch.optim accepts for lr) as a float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r:.40})")
    # NaN passes here on purpose: the rule's own checks reject it with torch's message.
    return float(value)


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)


# torch.optim's check of each hyperparameter, by the name the rules give it, with torch's
# message. NaN fails every one of them (every comparison with NaN is False), as in torch.
_TORCH_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda v: v >= 0.0, "Invalid learning rate: {}"),
    "eps": (lambda v: v >= 0.0, "Invalid epsilon value: {}"),
    "beta1": (lambda v: 0.0 <= v < 1.0, "Invalid beta parameter at index 0: {}"),
    "beta2": (lambda v: 0.0 <= v < 1.0, "Invalid beta parameter at index 1: {}"),
    "weight_decay": (lambda v: v >= 0.0, "Invalid weight_decay value: {}"),
    "momentum": (lambda v: v >= 0.0, "Invalid momentum value: {}"),
    "alpha": (lambda v: v >= 0.0, "Invalid alpha value: {}"),
    "rho": (lambda v: 0.0 <= v <= 1.0, "Invalid rho value: {}"),
    "lr_decay": (lambda v: v >= 0.0, "Invalid lr_decay value: {}"),
    "momentum_decay": (lambda v: v >= 0.0, "Invalid momentum_decay value: {}"),
    "initial_accumulator_value": (
        lambda v: v >= 0.0,
        "Invalid initial_accumulator_value value: {}",
    ),
}


def torch_check(name: str, value: float) -> None:
    """``ValueError`` with torch.optim's message where torch rejects ``value`` for the
    hyperparameter ``name`` (names without a torch check pass)."""
    check = _TORCH_CHECKS.get(name)
    if check is not None:
        valid, message = check
        require(valid(value), message.format(value))


def check_hyperparam(name: str, value: float) -> None:
    """A new value for a hyperparameter of a built rule (``set_hyperparam``): torch's check
    as at construction, and finite (an infinite one turns the parameters into NaN)."""
    torch_check(name, value)
    require(math.isfinite(value), f"hyperparameter {name!r} must be finite, got {value}")


def adam_family_hyperparams(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> dict[str, float]:
    """``lr``, ``betas``, ``eps`` and ``weight_decay`` checked as torch's Adam-family
    optimizers check them (same messages), as ``{"lr", "beta1", "beta2", "eps",
    "weight_decay"}`` floats."""
    lr = as_float("lr", lr)
    eps = as_float("eps", eps)
    weight_decay = as_float("weight_decay", weight_decay)
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise TypeError(f"betas must be a pair of floats, got {betas!r}")
    beta1, beta2 = as_float("betas[0]", betas[0]), as_float("betas[1]", betas[1])
    values = {"lr": lr, "eps": eps, "beta1": beta1, "beta2": beta2, "weight_decay": weight_decay}
    for name, value in values.items():
        torch_check(name, value)
    return {k: values[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay")}


def params_device(params: Params) -> torch.device | None:
    """The device of the first parameter (None for an empty dict)."""
    for p in params.values():
        return p.device
    return None


def check_grads(grads: Params, params: Params) -> None:
    """Gradients must cover exactly the parameters the rule was given."""
    if grads.keys() != params.keys():
        missing = sorted(params.keys() - grads.keys())
        extra = sorted(grads.keys() - params.keys())
        raise ValueError(
            f"gradient keys differ from parameter keys: missing {missing}, extra {extra}"
        )
