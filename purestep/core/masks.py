"""Eager's dropout masks under ``torch.func`` and ``torch.compile``.

Root cause. Eager CPU dropout (``at::dropout`` -> ``_dropout_impl``) draws its noise into
``empty_like(input)``, which keeps the input's strides, and ``bernoulli_`` fills it in
*memory* order. Under a ``torch.func`` transform (``grad_and_value``, hence every compiled
or ``grad_engine="func"`` step, and AOT tracing) functorch replaces ``dropout`` by its own
version (``PyTorchOperatorHacks.cpp``: ``bernoulli(empty({}).expand(sizes))``), whose noise
is contiguous: it fills in *logical* order. For a contiguous input both orders agree; for a
permuted one they do not. ``nn.MultiheadAttention(batch_first=True)`` returns a transposed
tensor, so the ``Dropout`` after it (every ``nn.TransformerEncoderLayer``) drew other masks
in compiled and functorch steps than in eager ones.

Fix. While the step differentiates with ``torch.func`` (``EagerMasks``, a
``TorchFunctionMode`` that ``torch.compile`` traces away: no cost in the graph), dropout
of a non-contiguous input draws its noise in the input's memory order, as eager does: a
contiguous tensor of the input's dims in memory order (outermost first) is filled and
permuted back. Contiguous inputs keep functorch's path (already eager's masks).

Exception: inside a compiled step, 4-d CPU weights enter the model channels-last
(``purestep.core.step._conv_layout``), so a conv net's activations are channels-last there
but NCHW in the eager step; for them the logical (NCHW) order is eager's memory order.
Not covered: a dropout on a *permuted view* of compiled conv activations (e.g. a ViT patch
embedding's ``flatten(2).transpose(1, 2)`` followed by dropout), whose eager layout the
compiled graph cannot see; ``purestep.compile``'s first-call verification reports it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["EagerMasks"]

_DROPOUTS = (F.dropout, torch.dropout)


class EagerMasks(TorchFunctionMode):
    """Dropout draws eager's masks under ``torch.func`` / ``torch.compile`` (module doc).

    ``conv_layout``: the step converted 4-d weights to channels-last (compiled, CPU).
    """

    def __init__(self, conv_layout: bool = False) -> None:
        super().__init__()
        self.conv_layout = conv_layout

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _DROPOUTS:
            return self._dropout(func, args, kwargs)
        return func(*args, **kwargs)

    def _dropout(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        names: tuple[str, ...]
        if func is torch.dropout:
            names = ("input", "p", "train")
            bound = dict(zip(names, args, strict=False)) | kwargs
            x, p, train, inplace = bound["input"], bound["p"], bound["train"], False
        else:
            names = ("input", "p", "training", "inplace")
            bound = {"p": 0.5, "training": True, "inplace": False}
            bound |= dict(zip(names, args, strict=False)) | kwargs
            x, p, train, inplace = bound["input"], bound["p"], bound["training"], bound["inplace"]
        order = self._memory_order(x) if train and isinstance(p, float | int) else None
        if order is None or not 0 < p < 1:
            return func(*args, **kwargs)
        back = [order.index(d) for d in range(x.dim())]
        shape = [x.shape[d] for d in order]
        # Out of place: under vmap (randomness="different") an in-place draw into an
        # unbatched tensor is refused; bernoulli(t, p) is empty_like(t).bernoulli_(p).
        noise = torch.bernoulli(torch.empty(shape, dtype=x.dtype, device=x.device), 1 - p)
        # Eager's arithmetic: noise.div_(1 - p), then input * noise (mul_ in place).
        noise = noise.div(1 - p).permute(back)
        return x.mul_(noise) if inplace else x * noise

    def _memory_order(self, x: Any) -> list[int] | None:
        """x's dims, outermost in memory first, where that is not the logical order."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.is_contiguous():
            return None
        if self.conv_layout and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return None  # channels-last only because the compiled step made it so
        # Stable sort: dims of equal stride (size 1) keep their logical order.
        strides = x.stride()
        order = sorted(range(x.dim()), key=lambda d: -strides[d])
        expected = 1
        for d in reversed(order):
            if x.shape[d] != 1 and strides[d] != expected:
                return None  # not dense: eager's empty_like is contiguous then
            expected *= x.shape[d]
        return order
