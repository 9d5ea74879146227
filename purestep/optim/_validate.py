"""Hyperparameter checks with torch.optim's exact messages, plus type checks it lacks."""

from __future__ import annotations

from typing import Any

import torch

from purestep.optim.base import Params

__all__ = ["as_float", "params_device", "require"]


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
