"""Pair the tensors of a torch optimizer's state with their functional counterparts.

torch keeps per-parameter state (``optimizer.state[p]``: ``exp_avg``, ``step`` ...) and the
functional state exposes the same keys through ``torch_state_view``. A parity check compares
them in pairs; a tensor found on one side only is never skipped in silence: either it is on
the documented list ``NO_COUNTERPART`` (the report notes it) or it is a failure, because a
check that compares nothing must not pass.

torch creates a parameter's state lazily, at the parameter's first ``step()``: until then
(the first micro-batches of gradient accumulation, a parameter that has had no gradient)
the functional tensors are paired with their initial values, i.e. they must not have moved.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

__all__ = ["NO_COUNTERPART", "StateMatch", "match_optimizer_state"]

# torch.optim class name -> {state key on one side only: why it has no counterpart}.
NO_COUNTERPART: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "SGD": MappingProxyType(
            {"step": "torch.optim.SGD keeps no step count; the functional rule counts its steps"}
        ),
    }
)


@dataclass
class StateMatch:
    """``pairs``: ``(name, torch tensor, functional tensor)`` with ``name`` = ``param.key``;
    ``unmatched``: tensors on one side only and not documented (each a failure);
    ``documented``: ``{key: why}`` for keys on one side only that ``NO_COUNTERPART``
    explains."""

    pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    documented: dict[str, str] = field(default_factory=dict)


def _documented_keys(torch_optimizer: torch.optim.Optimizer) -> dict[int, Mapping[str, str]]:
    """``id(param) -> NO_COUNTERPART`` entry of the torch class that steps it.

    The optimizer's own class when it is (a subclass of) a listed one; for a user's
    composite of several torch optimizers, the class whose every constructor argument the
    parameter's group carries (a group made by ``torch.optim.SGD`` has ``dampening`` ...).
    """
    for cls in type(torch_optimizer).__mro__:
        if cls.__module__.startswith("torch.optim") and cls.__name__ in NO_COUNTERPART:
            entry = NO_COUNTERPART[cls.__name__]
            return {id(p): entry for g in torch_optimizer.param_groups for p in g["params"]}
    out: dict[int, Mapping[str, str]] = {}
    for group in torch_optimizer.param_groups:
        for name, entry in NO_COUNTERPART.items():
            arguments = set(inspect.signature(getattr(torch.optim, name)).parameters)
            if arguments - {"params"} <= group.keys():
                out.update((id(p), entry) for p in group["params"])
    return out


def match_optimizer_state(
    torch_optimizer: torch.optim.Optimizer,
    names: Mapping[int, str],
    functional_view: Mapping[str, Mapping[str, torch.Tensor]],
    initial_view: Mapping[str, Mapping[str, torch.Tensor]],
) -> StateMatch:
    """Pair every tensor of ``torch_optimizer.state`` with the functional one, and every
    functional one with torch's (or its initial value while torch holds no state for it).

    Args:
        torch_optimizer: the reference optimizer.
        names: ``id(parameter) -> name`` of the reference model's parameters.
        functional_view: ``torch_state_view(opt_state)`` of the functional state now.
        initial_view: ``torch_state_view`` of the functional state before the first step.

    Returns:
        A ``StateMatch``; its ``unmatched`` entries say which side holds the tensor.
    """
    documented_for = _documented_keys(torch_optimizer)
    match = StateMatch()
    torch_owners: set[str] = set()
    for index, (param, param_state) in enumerate(torch_optimizer.state.items()):
        owner = names.get(id(param))
        tensors = {k: v for k, v in param_state.items() if isinstance(v, torch.Tensor)}
        if owner is None:
            shape = tuple(getattr(param, "shape", ()))
            match.unmatched += [
                f"state entry {index} (shape {shape}).{key}: a parameter the model does not name"
                for key in tensors
            ]
            continue
        torch_owners.add(owner)
        documented = documented_for.get(id(param), {})
        fun = functional_view.get(owner, {})
        for key, value in tensors.items():
            if key in fun:
                match.pairs.append((f"{owner}.{key}", value, fun[key]))
            elif key in documented:
                match.documented[key] = documented[key]
            else:
                match.unmatched.append(f"{owner}.{key}: only in torch's state")
        for key in sorted(fun.keys() - tensors.keys()):
            if key in documented:
                match.documented[key] = documented[key]
            else:
                match.unmatched.append(f"{owner}.{key}: only in the functional state")
    for owner, fun in functional_view.items():
        if owner in torch_owners:
            continue
        initial = initial_view.get(owner, {})
        for key, value in fun.items():
            if key in initial:
                match.pairs.append((f"{owner}.{key}", initial[key], value))
            else:
                match.unmatched.append(
                    f"{owner}.{key}: only in the functional state (torch holds no state for "
                    f"{owner!r} yet, and the initial functional state has no {key!r})"
                )
    return match
