"""Hyperparameters that live in the optimizer state as 0-d float64 tensors.

A rule keeps its *dynamic* hyperparameters (by default just ``lr``) in a
``hyperparams: dict[str, Tensor]`` field of its state. Changing one is a new state, not a
new function, so a compiled step never recompiles. float64 holds a Python float exactly, so
``set_hyperparam(state, "lr", 1e-3)`` gives bitwise the lr that torch.optim would use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from purestep.optim._scalar_ops import Scalar, host_value
from purestep.optim._validate import check_hyperparam
from purestep.optim.base import is_rule_state
from purestep.pytree import find_nodes, map_nodes

__all__ = [
    "dynamic_names",
    "get_hyperparam",
    "group_hyperparams",
    "hyperparam_tensors",
    "lr_tensors",
    "replace_group_hyperparams",
    "replace_lrs",
    "resolve_hyperparams",
    "set_hyperparam",
]


def dynamic_names(dynamic: Iterable[str] | str, static: Mapping[str, float]) -> tuple[str, ...]:
    """Validate a rule's ``dynamic=`` argument against its hyperparameters (``"all"``: every
    one). Called by the rule factories, so a typo fails at construction."""
    if isinstance(dynamic, str):
        if dynamic != "all":
            raise ValueError(f'dynamic must be a sequence of names or "all", got {dynamic!r}')
        return tuple(static)
    names = tuple(dynamic)
    for name in names:
        if name not in static:
            raise ValueError(f"unknown hyperparameter {name!r}; this rule has {sorted(static)}")
    return names


def hyperparam_tensors(
    values: Mapping[str, float], dynamic: Iterable[str] | str, device: torch.device | None
) -> dict[str, torch.Tensor]:
    """0-d float64 tensors for the names in ``dynamic`` (``"all"``: every one of ``values``)."""
    if isinstance(dynamic, str):
        if dynamic != "all":
            raise ValueError(f'dynamic must be a sequence of names or "all", got {dynamic!r}')
        dynamic = list(values)
    out = {}
    for name in dynamic:
        if name not in values:
            raise ValueError(f"unknown hyperparameter {name!r}; this rule has {sorted(values)}")
        out[name] = torch.tensor(float(values[name]), dtype=torch.float64, device=device)
    return out


def resolve_hyperparams(
    state_values: Mapping[str, torch.Tensor], static: Mapping[str, float]
) -> dict[str, Scalar]:
    """Static values overlaid with the state's dynamic ones (Python numbers in eager CPU)."""
    resolved: dict[str, Scalar] = dict(static)
    for name, t in state_values.items():
        resolved[name] = host_value(t)
    return resolved


def _holders(opt_state: Any) -> list[Any]:
    """The rule states in ``opt_state``, in traversal (= param-group) order."""
    return find_nodes(opt_state, is_rule_state)


def _map_hyperparams(
    opt_state: Any, fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
) -> Any:
    """A new state with each rule state's ``hyperparams`` replaced by ``fn(hyperparams)``."""
    return map_nodes(
        lambda rule: rule._replace(hyperparams=fn(rule.hyperparams)), opt_state, is_rule_state
    )


def get_hyperparam(opt_state: Any, name: str) -> torch.Tensor:
    """The first dynamic hyperparameter ``name`` found in ``opt_state``."""
    for holder in _holders(opt_state):
        if name in holder.hyperparams:
            return holder.hyperparams[name]
    raise KeyError(
        f"no dynamic hyperparameter {name!r} in this optimizer state; dynamic ones: "
        f"{sorted({k for h in _holders(opt_state) for k in h.hyperparams})}"
    )


def group_hyperparams(opt_state: Any) -> list[dict[str, torch.Tensor]]:
    """The dynamic hyperparameters of each rule state that has a dynamic ``lr``: one dict
    per param group, in traversal (= param-group) order."""
    return [h.hyperparams for h in _holders(opt_state) if "lr" in h.hyperparams]


def replace_group_hyperparams(opt_state: Any, groups: list[dict[str, torch.Tensor]]) -> Any:
    """A new state with the ``group_hyperparams`` dicts replaced, in the same order."""
    have = len(group_hyperparams(opt_state))
    if have != len(groups):
        raise ValueError(f"{len(groups)} hyperparameter sets given for {have} param groups")
    pending = list(groups)

    def replace(hp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return pending.pop(0) if "lr" in hp else hp

    return _map_hyperparams(opt_state, replace)


def lr_tensors(opt_state: Any) -> list[torch.Tensor]:
    """Every dynamic ``lr`` in ``opt_state``, in traversal order (= param-group order)."""
    return [hp["lr"] for hp in group_hyperparams(opt_state)]


def replace_lrs(opt_state: Any, lrs: list[torch.Tensor]) -> Any:
    """A new state with the ``lr_tensors`` replaced, in the same order."""
    groups = group_hyperparams(opt_state)
    if len(groups) != len(lrs):
        raise ValueError(f"{len(lrs)} learning rates given for {len(groups)} param groups")
    return replace_group_hyperparams(
        opt_state, [{**hp, "lr": lr} for hp, lr in zip(groups, lrs, strict=True)]
    )


def set_hyperparam(opt_state: Any, name: str, value: float | torch.Tensor) -> Any:
    """A new state with every dynamic hyperparameter ``name`` set to ``value``.

    The value is checked as the rule's constructor checks it (torch.optim's messages:
    ``Invalid learning rate: -0.1``), and must be finite. A tensor value is checked where
    reading it is free (eager, CPU, outside ``vmap``); under ``torch.compile``, ``vmap`` or
    on an accelerator it is taken as it is.

    Raises:
        KeyError: the state holds no dynamic hyperparameter ``name``.
        TypeError: ``value`` is not a number or a one-element tensor.
        ValueError: ``value`` is out of range, NaN or infinite.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"hyperparameter {name!r} must be a scalar, got shape {value.shape}")
        readable = host_value(value.detach().reshape(()))
        if not isinstance(readable, torch.Tensor):
            check_hyperparam(name, float(readable))
    elif not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"hyperparameter {name!r} must be a number, got {type(value).__name__}")
    else:
        check_hyperparam(name, float(value))
    get_hyperparam(opt_state, name)  # raises if absent

    def replace(hp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if name not in hp:
            return hp
        old = hp[name]
        new = (
            value.detach().reshape(()).to(dtype=old.dtype, device=old.device)
            if isinstance(value, torch.Tensor)
            else torch.tensor(float(value), dtype=old.dtype, device=old.device)
        )
        return {**hp, name: new}

    return _map_hyperparams(opt_state, replace)
