"""Reading an ``nn.Module`` into explicit tensors, and writing them back.

The pure step never touches the user's module: it calls ``functional_call`` on a
*skeleton*, a copy of the module tree whose parameters and buffers are empty ``meta``
tensors (so it costs no memory) and whose train/eval mode is fixed. Every parameter and
buffer the forward uses comes in through the state.

Everything else the forward reads is the user's: each skeleton module's attributes other
than its parameter, buffer and child dicts and its ``training`` flag *are* the user
module's objects (hook dicts, a ``temperature``, a flag the forward branches on, plain
tensor attributes), and ``ModelMirror.sync``, run by the step before every call,
re-points any attribute the user has since rebound (``model.temperature = 2.0``) or added.
So the step always sees the model as it is now, eagerly and compiled alike (a compiled
step keeps dynamo's guards on these attributes: a change recompiles).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from operator import getitem, is_not
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _torch_module
from torch.utils.hooks import RemovableHandle

__all__ = [
    "ModelMirror",
    "ModelSpec",
    "load_state_into",
    "make_skeleton",
    "module_buffers",
    "module_params",
    "trainable_keys",
]


def module_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of ``named_parameters()`` (tied weights appear once, as torch lists them)."""
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def module_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of ``named_buffers()``, non-persistent ones included."""
    return {k: b.detach().clone() for k, b in model.named_buffers()}


def trainable_keys(model: nn.Module) -> tuple[str, ...]:
    """Parameter names with ``requires_grad=True``; frozen ones stay out of grad and optimizer."""
    return tuple(k for k, p in model.named_parameters() if p.requires_grad)


# What a skeleton module owns; every other attribute is shared with the user's module.
_SKELETON_OWN = frozenset({"_parameters", "_buffers", "_modules", "training"})


def make_skeleton(model: nn.Module, *, training: bool) -> nn.Module:
    """A copy of ``model``'s module tree with meta-device parameters and buffers and a fixed
    train/eval mode; every other module attribute is the user's very object (not a copy),
    except a container holding the model's own parameters or buffers (a list of weights),
    which is copied with the meta stand-ins, since the step could not swap those."""
    memo = _meta_memo(model)
    for m in model.modules():
        for k, v in vars(m).items():
            if k not in _SKELETON_OWN and not _holds(v, memo):
                memo[id(v)] = v  # deepcopy returns memo entries as they are: shared
    skeleton = copy.deepcopy(model, memo)
    skeleton.train(training)
    return skeleton


def _meta_memo(model: nn.Module) -> dict[int, Any]:
    """``deepcopy`` memo: each parameter and buffer of ``model`` -> an empty meta twin."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return memo


def _holds(value: Any, tensors: Mapping[int, Any], depth: int = 4) -> bool:
    """Whether ``value`` is, or a list/tuple/dict/set inside it holds, one of ``tensors``."""
    if id(value) in tensors:
        return True
    if depth and isinstance(value, list | tuple | set | frozenset):
        return any(_holds(v, tensors, depth - 1) for v in value)
    if depth and isinstance(value, dict):
        return any(_holds(v, tensors, depth - 1) for v in value.values())
    return False


# torch's own per-module containers, shared with the skeleton and only ever changed in
# place (register_forward_hook ...): no need to compare them by identity on every call.
_SHARED_CONTAINERS = frozenset(
    {
        "_non_persistent_buffers_set",
        "_backward_pre_hooks",
        "_backward_hooks",
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    }
)
# Hook dicts that decide what a forward/backward runs (the *_with_kwargs/always_called
# ones only flag entries of these).
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
_GLOBAL_HOOK_DICTS = tuple(
    getattr(_torch_module, "_global" + name)
    for name in _HOOK_DICTS
    if hasattr(_torch_module, "_global" + name)
)


class ModelMirror:
    """Keeps a skeleton in step with the user's model, before every call of a step.

    ``sync()``: an attribute the user rebound, added or deleted on any module is re-pointed
    in the skeleton; a changed module tree (a child replaced, added or removed) is a
    ``ValueError``, since the state's parameters were laid out for the old one. Hook dicts
    are shared objects, so the skeleton runs the user's current hooks; ``hooks`` is a
    value that changes whenever a hook was added or removed (module or global), which a
    compiled step keys its graphs on (dynamo does not guard hooks by default).

    Cost per call: C-level loops, one identity comparison per plain attribute and one
    ``len`` per hook dict (2-4 us per call for W1's MLP, 20-45 us for W2's 74 modules, on a
    shared 2-core VM).
    """

    def __init__(self, model: nn.Module, skeleton: nn.Module) -> None:
        self._model_name = type(model).__name__
        self._pairs = list(zip(model.modules(), skeleton.modules(), strict=True))
        self._memo: dict[int, Any] = {
            id(mine): theirs
            for mine, theirs in zip(
                [*model.parameters(), *model.buffers()],
                [*skeleton.parameters(), *skeleton.buffers()],
                strict=True,
            )
        }
        users = [user for user, _ in self._pairs]
        self._module_dicts = tuple(vars(user) for user in users)
        self._child_dicts = tuple(user._modules for user in users)
        self._child_keys = tuple(k for d in self._child_dicts for k in d)
        self._child_owners = tuple(d for d in self._child_dicts for _ in d)
        self._children = tuple(v for d in self._child_dicts for v in d.values())
        self._hook_dicts = (
            *(getattr(user, name) for user in users for name in _HOOK_DICTS),
            *_GLOBAL_HOOK_DICTS,
        )
        self._hooks_quick: tuple[int, int] = (-1, -1)
        self.hooks: tuple[tuple[int, Any], ...] = ()
        self._relink()
        self._check_hooks()

    def sync(self) -> None:
        """Bring the skeleton up to date with the user's model (see the class docstring)."""
        if self._tree_changed():
            raise ValueError(
                f"the submodules of {self._model_name} changed after the step was made (a "
                "child module was replaced, added or removed); make a new step and state "
                "for the new model"
            )
        try:
            stale = sum(map(len, self._module_dicts)) != self._size or any(
                map(is_not, map(getitem, self._dicts, self._keys), self._values)
            )
        except KeyError:  # one attribute deleted and another added
            stale = True
        if stale:
            self._relink()
        self._check_hooks()

    def _tree_changed(self) -> bool:
        try:
            return sum(map(len, self._child_dicts)) != len(self._children) or any(
                map(is_not, map(getitem, self._child_owners, self._child_keys), self._children)
            )
        except KeyError:
            return True

    def _relink(self) -> None:
        dicts: list[dict[str, Any]] = []
        keys: list[str] = []
        values: list[Any] = []
        for user, skel in self._pairs:
            mine, theirs = vars(user), vars(skel)
            shared = {k: v for k, v in mine.items() if k not in _SKELETON_OWN}
            for k in [k for k in theirs if k not in _SKELETON_OWN and k not in shared]:
                del theirs[k]  # deleted on the user's side
            for k, v in shared.items():
                # As make_skeleton: what holds the model's tensors gets a meta copy.
                theirs[k] = copy.deepcopy(v, dict(self._memo)) if _holds(v, self._memo) else v
            for k, v in shared.items():
                if k not in _SHARED_CONTAINERS:
                    dicts.append(mine)
                    keys.append(k)
                    values.append(v)
        self._dicts, self._keys, self._values = tuple(dicts), tuple(keys), tuple(values)
        self._size = sum(map(len, self._module_dicts))

    def _check_hooks(self) -> None:
        # Handle ids only grow, so (count, last id) of each dict changes with any add or
        # remove; the cheap (next id anywhere, total count) pair says when to look.
        quick = (RemovableHandle.next_id, sum(map(len, self._hook_dicts)))
        if quick == self._hooks_quick:
            return
        self._hooks_quick = quick
        full = tuple((len(d), next(reversed(d), None)) for d in self._hook_dicts)
        if full != self.hooks:
            self.hooks = full


@dataclass(frozen=True)
class ModelSpec:
    """Names, shapes and dtypes of a model's parameters and buffers, for checking states."""

    model_name: str
    params: dict[str, tuple[torch.Size, torch.dtype]]
    buffers: dict[str, tuple[torch.Size, torch.dtype]]
    trainable: tuple[str, ...]

    @classmethod
    def of(cls, model: nn.Module) -> ModelSpec:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        return cls(
            model_name=type(model).__name__,
            params={k: (p.shape, p.dtype) for k, p in model.named_parameters()},
            buffers={k: (b.shape, b.dtype) for k, b in model.named_buffers()},
            trainable=trainable_keys(model),
        )

    def check(self, kind: str, tensors: object) -> None:
        """Raise a ``TypeError``/``ValueError`` naming what in ``tensors`` does not fit."""
        expected = self.params if kind == "params" else self.buffers
        if not isinstance(tensors, Mapping):
            raise TypeError(f"state.{kind} must be a dict of tensors, got {type(tensors).__name__}")
        if tensors.keys() != expected.keys():
            missing = [k for k in expected if k not in tensors]
            extra = [k for k in tensors if k not in expected]
            raise ValueError(
                f"state.{kind} does not fit {self.model_name}: missing keys {missing}, "
                f"unexpected keys {extra} (was the state built for another model?)"
            )
        for k, (shape, dtype) in expected.items():
            t = tensors[k]
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"state.{kind}[{k!r}] must be a torch.Tensor, got {type(t).__name__}"
                )
            if t.shape != shape:
                raise ValueError(
                    f"state.{kind}[{k!r}] has shape {tuple(t.shape)} but {self.model_name} "
                    f"expects {tuple(shape)} (was the state built for another model?)"
                )
            if t.dtype != dtype:
                raise ValueError(
                    f"state.{kind}[{k!r}] has dtype {t.dtype} but {self.model_name} expects {dtype}"
                )


def load_state_into(model: nn.Module, state: object) -> nn.Module:
    """Copy ``state.params`` and ``state.buffers`` into ``model`` in place; returns ``model``.

    Checks names and shapes first, so a mismatch changes nothing.
    """
    from purestep.core.state import check_not_donated  # state.py imports this module

    check_not_donated(state)
    spec = ModelSpec.of(model)
    params = getattr(state, "params", None)
    buffers = getattr(state, "buffers", None)
    spec.check("params", params)
    spec.check("buffers", buffers)
    assert isinstance(params, Mapping) and isinstance(buffers, Mapping)
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
    return model
