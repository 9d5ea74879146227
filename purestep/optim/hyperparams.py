"""Hyperparameters that live in the optimizer state as 0-d float64 tensors.

A rule keeps its *dynamic* hyperparameters (by default just ``lr``) in a
``hyperparams: dict[str, Tensor]`` field of its state; the others are fixed when the rule is
built (``dynamic=`` or ``inject_hyperparams`` chooses). Each rule state is one param group
(``multi_transform``/``param_groups`` build several), numbered in traversal order:
``group=i`` names one.

Betas: constructors take torch's ``betas=(b1, b2)``; the state holds them as ``beta1`` and
``beta2``. ``dynamic=``, ``get_hyperparam`` and ``set_hyperparam`` accept both spellings:
``"betas"`` (a pair) or ``"beta1"``/``"beta2"`` (one each). Changing one is a new state, not a
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
    if "betas" in names and "beta1" in static:  # torch's constructor name for the pair
        names = (*(n for n in names if n != "betas"), "beta1", "beta2")
        names = tuple(dict.fromkeys(names))
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


def _static_error(opt_state: Any, name: str) -> KeyError:
    dynamic = sorted({k for h in _holders(opt_state) for k in h.hyperparams})
    return KeyError(
        f"no dynamic hyperparameter {name!r} in this optimizer state (dynamic ones: "
        f"{dynamic}); a hyperparameter the rule fixed when it was built cannot be changed: "
        f"build the rule with dynamic=(..., {name!r}) or dynamic='all' (what "
        "inject_hyperparams(rule)(...) does) to hold it in the state"
    )


def _group_holders(opt_state: Any, name: str, group: int | None) -> list[Any]:
    """The rule states (param groups) that ``name`` addresses: all, or group ``group``."""
    holders = _holders(opt_state)
    if group is None:
        return holders
    if isinstance(group, bool) or not isinstance(group, int):
        raise TypeError(f"group must be an int, got {type(group).__name__}")
    if not 0 <= group < len(holders):
        raise IndexError(
            f"group={group} but this optimizer state has {len(holders)} param group(s) "
            f"(0 .. {len(holders) - 1})"
        )
    return [holders[group]]


def get_hyperparam(opt_state: Any, name: str, group: int | None = None) -> Any:
    """The dynamic hyperparameter ``name`` (a 0-d tensor; ``"betas"``: a pair of them).

    Args:
        opt_state: an optimizer state (``state.opt_state``).
        name: e.g. ``"lr"``, ``"weight_decay"``, ``"beta1"`` or ``"betas"``.
        group: the param group (rule state, in traversal order) to read. ``None``: the
            value all groups share.

    Raises:
        KeyError: ``name`` is not dynamic here (the message says how to make it so).
        ValueError: ``group`` is None and the groups hold different values.
        IndexError: there is no group ``group``.
    """
    if name == "betas":
        return (
            get_hyperparam(opt_state, "beta1", group),
            get_hyperparam(opt_state, "beta2", group),
        )
    holders = _group_holders(opt_state, name, group)
    values = [h.hyperparams[name] for h in holders if name in h.hyperparams]
    if not values:
        raise _static_error(opt_state, name)
    if group is None and len(values) > 1:
        first = values[0]
        if not all(v.shape == first.shape and bool(torch.equal(v, first)) for v in values):
            shown = [float(v) if v.numel() == 1 else tuple(v.shape) for v in values]
            raise ValueError(
                f"{name!r} differs across the {len(values)} param groups ({shown}): pass "
                f"group=i to choose one (0 .. {len(values) - 1})"
            )
    return values[0]


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


def set_hyperparam(opt_state: Any, name: str, value: Any, group: int | None = None) -> Any:
    """A new state with the dynamic hyperparameter ``name`` set to ``value``: in every param
    group, or in group ``group`` only.

    The value is checked as the rule's constructor checks it (torch.optim's messages:
    ``Invalid learning rate: -0.1``), and must be finite. A tensor value is checked where
    reading it is free (eager, CPU, outside ``vmap``); under ``torch.compile``, ``vmap`` or
    on an accelerator it is taken as it is. ``name="betas"`` takes a pair and sets
    ``beta1`` and ``beta2``.

    Raises:
        KeyError: ``name`` is not dynamic in the addressed group(s): the rule fixed it when
            it was built (the message names ``dynamic=`` / ``inject_hyperparams``).
        TypeError: ``value`` is not a number or a one-element tensor.
        ValueError: ``value`` is out of range, NaN or infinite.
        IndexError: there is no group ``group``.
    """
    if name == "betas":
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise TypeError(f"'betas' must be a pair (beta1, beta2), got {value!r}")
        opt_state = set_hyperparam(opt_state, "beta1", value[0], group)
        return set_hyperparam(opt_state, "beta2", value[1], group)
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
    targets = _group_holders(opt_state, name, group)
    if not any(name in h.hyperparams for h in targets):
        raise _static_error(opt_state, name)
    chosen = {id(h) for h in targets}

    def replace(rule: Any) -> Any:
        hp = rule.hyperparams
        if id(rule) not in chosen or name not in hp:
            return rule
        old = hp[name]
        new = (
            value.detach().reshape(()).to(dtype=old.dtype, device=old.device)
            if isinstance(value, torch.Tensor)
            else torch.tensor(float(value), dtype=old.dtype, device=old.device)
        )
        return rule._replace(hyperparams={**hp, name: new})

    return map_nodes(replace, opt_state, is_rule_state)
