"""Hyperparameter checks with torch.optim's exact messages, plus type checks it lacks."""

from __future__ import annotations

from typing import Any

import torch

from purestep.optim.base import Params

__all__ = ["adam_family_hyperparams", "as_float", "params_device", "require"]


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
    require(lr >= 0.0, f"Invalid learning rate: {lr}")
    require(eps >= 0.0, f"Invalid epsilon value: {eps}")
    require(0.0 <= beta1 < 1.0, f"Invalid beta parameter at index 0: {beta1}")
    require(0.0 <= beta2 < 1.0, f"Invalid beta parameter at index 1: {beta2}")
    require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    return {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay}


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
