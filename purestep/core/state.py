"""``TrainState``: everything a training step reads, as an immutable pytree of tensors."""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import torch
from torch import nn

from purestep.core.module import module_buffers, module_params, trainable_keys
from purestep.core.pytree import check_tensor_leaves, tree_map
from purestep.core.rng import convert_key, rng_key
from purestep.optim.base import GradientTransformation, Optimizer

__all__ = ["TrainState", "check_not_donated", "mark_donated"]


class TrainState(NamedTuple):
    """The whole training state, tensors only.

    Attributes:
        params: every parameter, keyed like ``model.named_parameters()`` (frozen ones too).
        buffers: every buffer, keyed like ``model.named_buffers()`` (BatchNorm stats ...).
        opt_state: the optimizer's state pytree, over the trainable parameters.
        step: steps taken, a 0-d int64 tensor.
        rng: the random key (a generator state, see ``purestep.core.rng``).

    A NamedTuple is a pytree for ``torch.utils._pytree``, ``torch.func`` and
    ``torch.compile`` alike, so the state can be flattened, vmapped and compiled over as
    is. Save it with ``purestep.save_state`` (safetensors, no pickle), not ``torch.save``:
    that pickles the optimizer's state classes, which ``torch.load`` refuses under its
    default ``weights_only=True`` unless each one is allowlisted.
    """

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    opt_state: Any
    step: torch.Tensor
    rng: torch.Tensor

    @classmethod
    def create(
        cls,
        model: nn.Module,
        optimizer: Optimizer | GradientTransformation,
        seed: int = 0,
    ) -> TrainState:
        """Initial state: copies of the model's tensors, ``optimizer.init`` over the
        trainable ones, step 0 and ``rng_key(seed)`` for the model's device."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer | GradientTransformation):
            raise TypeError(
                "optimizer must be a purestep.optim Optimizer or GradientTransformation "
                f"(e.g. ps.optim.adam(lr=1e-3)), got {type(optimizer).__name__}"
            )
        params = module_params(model)
        buffers = module_buffers(model)
        device = next(iter(params.values())).device if params else torch.device("cpu")
        trainable = {k: params[k] for k in trainable_keys(model)}
        opt_state = optimizer.init(trainable)
        check_tensor_leaves(opt_state, "opt_state")
        return cls(
            params=params,
            buffers=buffers,
            opt_state=opt_state,
            step=torch.zeros((), dtype=torch.int64, device=device),
            rng=rng_key(seed, device),
        )

    def replace(self, **changes: Any) -> TrainState:
        """A copy with some fields replaced (``NamedTuple._replace``)."""
        return self._replace(**changes)

    def to(self, device: str | torch.device) -> TrainState:
        """The state on ``device``. The key stays a CPU tensor (torch keeps generator states
        there); if the generator type changes (CPU <-> CUDA) it is re-derived from the old
        key, deterministically."""
        device = torch.device(device)
        moved = tree_map(lambda t: t.to(device), self._replace(rng=torch.empty(0)))
        return moved._replace(rng=convert_key(self.rng, device))

    @property
    def device(self) -> torch.device:
        """The device of the parameters (CPU for a model without any)."""
        for p in self.params.values():
            return p.device
        return self.step.device


# Donation (purestep.compile(step, donate=True)) consumes the state passed in, JAX-style:
# its tensors receive the call's result, or part of it if the call fails inside the graph.
# A consumed state is known by its ``step`` tensor, which a donated call never writes (the
# returned state gets a new one) and which ``_replace`` carries along: id -> weak reference,
# so the registry holds nothing alive and costs nothing while no state was donated.
_DONATED: dict[int, weakref.ref[torch.Tensor]] = {}


def mark_donated(state: TrainState) -> None:
    """Record that ``state`` was handed to a donated call: any later use is an error."""
    key = id(state.step)

    def forget(ref: weakref.ref[torch.Tensor], key: int = key) -> None:
        if _DONATED.get(key) is ref:
            del _DONATED[key]

    _DONATED[key] = weakref.ref(state.step, forget)


def check_not_donated(state: Any) -> None:
    """Raise ``ValueError`` if ``state`` was consumed by a donated call."""
    if not _DONATED:
        return
    step = getattr(state, "step", None)
    ref = _DONATED.get(id(step))
    if ref is not None and ref() is step:
        raise ValueError(
            "this TrainState was donated to a compiled step (purestep.compile(..., "
            "donate=True)): its tensors now hold that call's result, or part of it if the "
            "call failed, so it cannot be used again; use the state the step returned (or "
            "one saved before)"
        )
