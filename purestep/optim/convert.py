"""Conversion between torch.optim optimizers and purestep rules.

``from_torch(torch_optimizer, model)`` builds the functional twin of a configured torch
optimizer (hyperparameters, and its state if it has stepped). ``torch_state_view`` and
``load_torch_state`` map a functional state to/from torch's per-parameter state dicts
(``{"step", "exp_avg", ...}``) by name: rule states name their per-parameter fields like
torch's state keys, and their ``step`` (steps taken) is torch's ``step``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import nn

from purestep.optim.adam import adam
from purestep.optim.base import Optimizer
from purestep.optim.sgd import sgd

__all__ = ["from_torch", "load_torch_state", "state_for_torch_optimizer", "torch_state_view"]

# torch.optim class name -> (factory, the group keys it reads)
_RULES: dict[str, tuple[Callable[..., Optimizer], tuple[str, ...]]] = {
    "SGD": (sgd, ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")),
    "Adam": (
        adam,
        ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"),
    ),
    "AdamW": (
        adam,
        ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"),
    ),
}


def _group_kwargs(group: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for key in keys:
        value = group.get(key)
        if value is None and key == "decoupled_weight_decay":
            continue
        if isinstance(value, torch.Tensor):
            value = value.item()
        if key == "betas":
            value = tuple(
                v.item() if isinstance(v, torch.Tensor) else v for v in cast(tuple, value)
            )
        out[key] = value
    return out


def _check_flags(name: str, group: Mapping[str, Any]) -> None:
    if group.get("fused"):
        raise ValueError(
            f"torch.optim.{name}(fused=True) has no functional twin: its fused kernel rounds "
            "differently; use foreach=False (bitwise) or foreach=True (close)"
        )
    if group.get("differentiable"):
        raise ValueError(f"torch.optim.{name}(differentiable=True) is not supported")


def from_torch(torch_optimizer: torch.optim.Optimizer, model: nn.Module) -> Optimizer:
    """The functional rule equal to ``torch_optimizer`` over ``model``'s trainable parameters.

    Every param group must hold the same hyperparameters (one rule); parameters not in any
    group must be frozen. Raises ``ValueError`` for an unsupported class or flag.
    """
    name = type(torch_optimizer).__name__
    if name not in _RULES:
        raise ValueError(
            f"from_torch does not support torch.optim.{name}; supported: {sorted(_RULES)}"
        )
    factory, keys = _RULES[name]
    groups = torch_optimizer.param_groups
    for group in groups:
        _check_flags(name, group)
    kwargs = [_group_kwargs(g, keys) for g in groups]
    if any(k != kwargs[0] for k in kwargs[1:]):
        raise ValueError(
            f"from_torch: the param groups of this {name} have different hyperparameters "
            f"{kwargs}; give the functional optimizer explicitly"
        )
    names = {id(p): n for n, p in model.named_parameters()}
    in_groups = {id(p) for g in groups for p in g["params"]}
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in in_groups:
            raise ValueError(f"trainable parameter {n!r} is in no param group of the {name}")
    for g in groups:
        for p in g["params"]:
            if id(p) not in names:
                raise ValueError(f"the {name} holds a parameter that is not in the model")
    return factory(**kwargs[0])


def _param_fields(holder: Any) -> list[str]:
    """Per-parameter fields: ``dict[name, Tensor]`` (torch state keys such as ``exp_avg``)."""
    return [
        f for f in holder._fields if f != "hyperparams" and isinstance(getattr(holder, f), dict)
    ]


def _scalar_fields(holder: Any) -> list[str]:
    """Rule-wide 0-d tensor fields (``step``, NAdam's ``mu_product``): every parameter's
    torch state holds the same value under that key."""
    return [
        f
        for f in holder._fields
        if isinstance(getattr(holder, f), torch.Tensor) and getattr(holder, f).dim() == 0
    ]


def _owned_names(holder: Any) -> list[str]:
    names: dict[str, None] = {}
    for f in _param_fields(holder):
        names.update(dict.fromkeys(getattr(holder, f)))
    return list(names)


def torch_state_view(opt_state: Any) -> dict[str, dict[str, torch.Tensor]]:
    """``{param_name: {torch_state_key: tensor}}`` read off a functional state.

    Per-parameter fields map one to one; rule-wide scalars (``step`` ...) are repeated for
    every parameter of the rule, as torch stores them.
    """
    view: dict[str, dict[str, torch.Tensor]] = {}
    for holder in _rule_states(opt_state):
        for f in _param_fields(holder):
            for k, t in getattr(holder, f).items():
                view.setdefault(k, {})[f] = t
        for k in _owned_names(holder):
            for f in _scalar_fields(holder):
                view[k][f] = getattr(holder, f)
    return view


def load_torch_state(opt_state: Any, per_param: Mapping[str, Mapping[str, torch.Tensor]]) -> Any:
    """A copy of ``opt_state`` with the tensors of ``per_param`` (as ``torch_state_view``
    names them) written in. Keys absent from ``per_param`` keep their values."""

    def rebuild(node: Any) -> Any:
        if hasattr(node, "_fields"):
            fields = {f: rebuild(getattr(node, f)) for f in node._fields}
            if _is_rule_state(node):
                fields.update(_load_rule(node, per_param))
            return type(node)(**fields)
        if isinstance(node, tuple):
            return tuple(rebuild(c) for c in node)
        if isinstance(node, list):
            return [rebuild(c) for c in node]
        if isinstance(node, dict):
            return {k: rebuild(v) for k, v in node.items()}
        return node

    return rebuild(opt_state)


def _load_rule(holder: Any, per_param: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    loaded = False
    for f in _param_fields(holder):
        current = getattr(holder, f)
        fields[f] = {}
        for k, t in current.items():
            if k in per_param and f in per_param[k]:
                fields[f][k] = _like(per_param[k][f], t)
                loaded = True
            else:
                fields[f][k] = t
    for f in _scalar_fields(holder):
        values = {
            float(per_param[k][f])
            for k in _owned_names(holder)
            if k in per_param and f in per_param[k]
        }
        if len(values) > 1:
            raise ValueError(f"parameters of one rule have different {f!r} values {sorted(values)}")
        old = getattr(holder, f)
        if values:
            fields[f] = torch.tensor(values.pop(), dtype=torch.float64).to(old.dtype).to(old.device)
        elif f == "step" and loaded and int(old) == 0:
            # torch.optim.SGD keeps no step; a momentum buffer means a step was taken.
            fields[f] = torch.ones_like(old)
    return fields


def state_for_torch_optimizer(
    opt_state: Any, torch_optimizer: torch.optim.Optimizer, model: nn.Module
) -> Any:
    """``opt_state`` with the current state of ``torch_optimizer`` loaded into it."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    per_param = {
        by_id[id(p)]: {k: v for k, v in s.items() if isinstance(v, torch.Tensor)}
        for p, s in torch_optimizer.state.items()
        if id(p) in by_id
    }
    return load_torch_state(opt_state, per_param)


def _like(src: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if src.shape != like.shape:
        raise ValueError(
            f"torch state tensor of shape {tuple(src.shape)} where {tuple(like.shape)} expected"
        )
    return src.detach().to(dtype=like.dtype, device=like.device, copy=True)


def _is_rule_state(node: Any) -> bool:
    return hasattr(node, "_fields") and "step" in node._fields and "hyperparams" in node._fields


def _rule_states(node: Any) -> list[Any]:
    found = []
    if hasattr(node, "_fields"):
        if _is_rule_state(node):
            found.append(node)
        for f in node._fields:
            found.extend(_rule_states(getattr(node, f)))
    elif isinstance(node, tuple | list):
        for c in node:
            found.extend(_rule_states(c))
    elif isinstance(node, dict):
        for c in node.values():
            found.extend(_rule_states(c))
    return found
