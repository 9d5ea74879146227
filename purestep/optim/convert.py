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

from purestep.optim.adadelta import adadelta
from purestep.optim.adagrad import adagrad
from purestep.optim.adam import adam
from purestep.optim.adamax import adamax
from purestep.optim.base import Optimizer, is_rule_state
from purestep.optim.nadam import nadam
from purestep.optim.radam import radam
from purestep.optim.rmsprop import rmsprop
from purestep.optim.sgd import sgd
from purestep.pytree import find_nodes, map_nodes

__all__ = [
    "from_torch",
    "load_torch_state",
    "state_for_torch_optimizer",
    "to_torch_state_dict",
    "torch_state_view",
]

# torch.optim class name -> (factory, the group keys it reads)
_RULES: dict[str, tuple[Callable[..., Optimizer], tuple[str, ...]]] = {
    "SGD": (sgd, ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")),
    "Adam": (
        adam,
        (
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "amsgrad",
            "maximize",
            "decoupled_weight_decay",
            "foreach",
        ),
    ),
    # AdamW is Adam with decoupled decay whether or not its group says so (older torch
    # releases keep no "decoupled_weight_decay" key): see _FORCED.
    "AdamW": (adam, ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach")),
    "RMSprop": (
        rmsprop,
        ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    ),
    "Adagrad": (
        adagrad,
        ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"),
    ),
    "Adamax": (adamax, ("lr", "betas", "eps", "weight_decay", "maximize")),
    "NAdam": (
        nadam,
        (
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "momentum_decay",
            "decoupled_weight_decay",
            "maximize",
        ),
    ),
    "RAdam": (radam, ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "maximize")),
    "Adadelta": (adadelta, ("lr", "rho", "eps", "weight_decay", "maximize")),
}


# Settings implied by the class, not read off its param groups.
_FORCED: dict[str, dict[str, Any]] = {"AdamW": {"decoupled_weight_decay": True}}


def _group_kwargs(group: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for key in keys:
        value = group.get(key)
        if value is None and key in ("decoupled_weight_decay", "foreach"):
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


def _group_names(torch_optimizer: torch.optim.Optimizer, model: nn.Module) -> list[list[str]]:
    """Trainable parameter names per param group, checked against the model."""
    kind = type(torch_optimizer).__name__
    names = {id(p): n for n, p in model.named_parameters()}
    seen: set[int] = set()
    out = []
    for i, group in enumerate(torch_optimizer.param_groups):
        members = []
        for p in group["params"]:
            if id(p) not in names:
                raise ValueError(
                    f"param group {i} of the {kind} holds a parameter not in the model"
                )
            if id(p) in seen:
                raise ValueError(f"parameter {names[id(p)]!r} is in more than one param group")
            seen.add(id(p))
            if p.requires_grad:
                members.append(names[id(p)])
        out.append(members)
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            raise ValueError(f"trainable parameter {n!r} is in no param group of the {kind}")
    return out


def _rule_for(
    torch_optimizer: torch.optim.Optimizer, group: Mapping[str, Any], dynamic: tuple[str, ...]
) -> Optimizer:
    name = type(torch_optimizer).__name__
    if name not in _RULES:
        raise ValueError(
            f"from_torch does not support torch.optim.{name}; supported: {sorted(_RULES)}"
        )
    _check_flags(name, group)
    factory, keys = _RULES[name]
    return factory(**_group_kwargs(group, keys), **_FORCED.get(name, {}), dynamic=dynamic)


def _momentum_key(torch_optimizer: torch.optim.Optimizer) -> str:
    """The hyperparameter torch's ``OneCycleLR`` cycles: ``betas[0]`` (our ``beta1``) where
    the optimizer has betas, else ``momentum`` (its own test)."""
    return "beta1" if "betas" in torch_optimizer.defaults else "momentum"


def _group_value(group: Mapping[str, Any], name: str) -> float:
    """A param group's current value of the rule hyperparameter ``name``."""
    if name in ("beta1", "beta2"):
        value = group["betas"][0 if name == "beta1" else 1]
    else:
        value = group[name]
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def from_torch(
    torch_optimizer: torch.optim.Optimizer,
    model: nn.Module,
    scheduler: Any = None,
    *,
    schedule_every: int | None = 1,
) -> Optimizer:
    """The functional twin of a configured torch optimizer (and lr scheduler).

    Param groups become a ``multi_transform`` (one rule per group, labels ``group0``,
    ``group1`` ...), each with that group's hyperparameters; a scheduler becomes
    ``scheduled(..., every=schedule_every)`` with one schedule per group. The returned
    optimizer's ``init`` yields the state torch is in *now* (a snapshot taken here): its
    per-parameter state, step counts, current lrs (and momenta, for a ``OneCycleLR`` that
    cycles them: those are then dynamic hyperparameters) and scheduler position, so
    training can continue functionally where torch stopped, bitwise.

    Args:
        torch_optimizer: e.g. ``torch.optim.AdamW(model.parameters(), ...)``; every trainable
            parameter must be in one of its groups.
        model: the module the optimizer's parameters belong to (for their names).
        scheduler: an optional ``torch.optim.lr_scheduler`` scheduler of ``torch_optimizer``.
        schedule_every: how often the scheduler steps, in optimizer steps (``None``: only
            through ``schedule_step``, e.g. per epoch or ReduceLROnPlateau).

    Raises:
        ValueError: an unsupported optimizer class or flag (``fused=True``,
            ``differentiable=True``), an unsupported scheduler, or parameters that do not
            match the model.
    """
    from purestep.optim.hyperparams import group_hyperparams, replace_group_hyperparams
    from purestep.optim.partition import multi_transform
    from purestep.optim.scheduled import ScheduledState, scheduled
    from purestep.optim.schedules.convert import cycles_momentum

    groups = torch_optimizer.param_groups
    # the hyperparameters the scheduler changes live in the state (dynamic)
    dynamic: tuple[str, ...] = ("lr",)
    if scheduler is not None and cycles_momentum(scheduler):
        dynamic = ("lr", _momentum_key(torch_optimizer))
    rules = [_rule_for(torch_optimizer, g, dynamic) for g in groups]
    members = _group_names(torch_optimizer, model)
    if len(rules) == 1:
        opt = rules[0]
    else:
        labels = {n: f"group{i}" for i, names in enumerate(members) for n in names}
        opt = multi_transform({f"group{i}": r for i, r in enumerate(rules)}, labels)
    schedule_states = None
    if scheduler is not None:
        from purestep.optim.schedules.convert import schedule_from_torch, schedule_state_from_torch

        if getattr(scheduler, "optimizer", None) is not torch_optimizer:
            raise ValueError("the scheduler does not belong to this torch optimizer")
        opt = scheduled(opt, schedule_from_torch(scheduler), every=schedule_every)
        schedule_states = tuple(schedule_state_from_torch(scheduler, i) for i in range(len(groups)))

    snapshot = _torch_state_by_name(torch_optimizer, model)
    current = [{name: _group_value(g, name) for name in dynamic} for g in groups]
    base = opt

    def init(params: dict[str, torch.Tensor]) -> Any:
        state = base.init(params)
        if schedule_states is not None:
            state = ScheduledState(state.inner, schedule_states, state.steps)
        device = _device(params)
        now = [
            {
                **hp,
                **{
                    k: torch.tensor(v, dtype=torch.float64, device=device)
                    for k, v in values.items()
                },
            }
            for hp, values in zip(group_hyperparams(state), current, strict=True)
        ]
        state = replace_group_hyperparams(state, now)
        return load_torch_state(state, snapshot)

    return Optimizer(init, base.step)


def _device(params: Mapping[str, torch.Tensor]) -> torch.device | None:
    return next(iter(params.values())).device if params else None


def _torch_state_by_name(
    torch_optimizer: torch.optim.Optimizer, model: nn.Module
) -> dict[str, dict[str, torch.Tensor]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {
        by_id[id(p)]: {k: v.detach().clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
        for p, s in torch_optimizer.state.items()
        if id(p) in by_id
    }


def to_torch_state_dict(
    opt_state: Any, torch_optimizer: torch.optim.Optimizer, model: nn.Module
) -> dict[str, Any]:
    """A ``state_dict`` for ``torch_optimizer`` (built like the functional one, same groups)
    holding the functional state: ``torch_optimizer.load_state_dict(...)`` then continues
    in plain PyTorch. Group hyperparameters that the functional state keeps dynamic (the
    lr, a cycled momentum / ``betas[0]`` ...) are its current (possibly scheduled) values."""
    from purestep.optim.hyperparams import group_hyperparams

    kind = type(torch_optimizer).__name__
    _group_names(torch_optimizer, model)  # checks the optimizer's parameters are the model's
    view = torch_state_view(opt_state)
    steps = {n: int(t) for n, s in view.items() for k, t in s.items() if k == "step"}
    reference = torch_optimizer.state_dict()
    names = {id(p): n for n, p in model.named_parameters()}
    flat = [p for g in torch_optimizer.param_groups for p in g["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for index, p in enumerate(flat):
        n = names[id(p)]
        if n not in view or (kind == "SGD" and steps.get(n, 1) == 0):
            continue
        entry = {}
        for key, t in view[n].items():
            if key == "step":
                if kind == "SGD":
                    continue
                entry[key] = torch.tensor(float(t), dtype=torch.float32)
            else:
                entry[key] = t.detach().clone()
        state[index] = entry
    dynamic = group_hyperparams(opt_state)
    groups = [dict(g) for g in reference["param_groups"]]
    if len(dynamic) not in (len(groups), len(groups) + 1):
        raise ValueError(
            f"the functional state has {len(dynamic)} learning rates for {len(groups)} torch "
            "param groups: build the torch optimizer with the same groups"
        )
    for group, hp in zip(groups, dynamic, strict=False):
        for name, t in hp.items():
            if name in ("beta1", "beta2"):
                betas = list(group["betas"])
                betas[0 if name == "beta1" else 1] = float(t)
                group["betas"] = tuple(betas)
            elif name in group:
                group[name] = float(t)
    return {"state": state, "param_groups": groups}


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

    return map_nodes(
        lambda rule: rule._replace(**_load_rule(rule, per_param)), opt_state, is_rule_state
    )


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
        elif f == "step" and loaded:
            # torch.optim.SGD keeps no step; a momentum buffer means a step was taken.
            fields[f] = torch.clamp(old, min=1)
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


def _rule_states(opt_state: Any) -> list[Any]:
    return find_nodes(opt_state, is_rule_state)
