"""Reading an ``nn.Module`` into explicit tensors, and writing them back.

The pure step never touches the user's module: it calls ``functional_call`` on a
*skeleton*, a deep copy whose parameters and buffers are empty ``meta`` tensors (so it
costs no memory) and whose train/eval mode is fixed. Every tensor the forward uses comes
in through the state.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
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


def make_skeleton(model: nn.Module, *, training: bool) -> nn.Module:
    """A copy of ``model`` with meta-device tensors and a fixed train/eval mode."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    skeleton = copy.deepcopy(model, memo)
    skeleton.train(training)
    return skeleton


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
