"""Scalar-or-tensor arithmetic that is bitwise torch.optim's arithmetic for Python scalars.

Hyperparameters and step counts live in the optimizer state as 0-d tensors so that
changing them never recompiles. In plain eager execution on the CPU they are read back as
Python numbers (``.item()``, as torch.optim's own ``_get_value`` does) and the update uses
torch.optim's exact fused ops (``add(alpha=)``, ``addcdiv(value=)`` ...): bitwise parity.
Under ``torch.compile``, under ``vmap``/``grad`` or on an accelerator (where ``.item()``
would break the graph, fail, or sync the device) they stay tensors and the same formula is
written with tensor arithmetic: equal up to rounding (documented tolerance).
"""

from __future__ import annotations

from typing import Any

import torch

from purestep._compat import is_batched, is_functorch_wrapped

Scalar = float | int | torch.Tensor

__all__ = [
    "Scalar",
    "add",
    "addcdiv",
    "addcmul",
    "float64",
    "host_value",
    "lerp",
    "maybe_nonzero",
    "pow_",
    "sqrt",
]


def host_value(t: torch.Tensor) -> Scalar:
    """``t.item()`` when that is free and exact (eager, CPU, unwrapped), else ``t``."""
    if torch.compiler.is_compiling() or t.device.type != "cpu" or is_functorch_wrapped(t):
        return t
    return t.item()


def maybe_nonzero(x: Scalar) -> bool:
    """``x != 0`` for a Python number (torch.optim's per-step ``if weight_decay != 0``);
    True for a tensor, whose value a compiled or vmapped step cannot branch on (adding a
    zero decay then changes at most the sign of a zero)."""
    return isinstance(x, torch.Tensor) or x != 0


def add(x: torch.Tensor, y: torch.Tensor, alpha: Scalar = 1) -> torch.Tensor:
    """``x + alpha * y`` (one fused rounding for a Python ``alpha``, like ``add_(alpha=)``).

    Never ``add(alpha=)`` under ``torch.compile``: inductor's post-grad pattern rewrites
    ``add(mm(a, b), y, alpha=c)`` into ``addmm(y, a, b)`` and drops ``c`` (torch 2.13),
    which would corrupt weight decay on a gradient straight out of a matmul backward.
    """
    if isinstance(alpha, torch.Tensor):
        return x + alpha.to(x.dtype) * y
    if torch.compiler.is_compiling():
        return x + alpha * y
    return torch.add(x, y, alpha=alpha)


def addcmul(x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, value: Scalar = 1) -> torch.Tensor:
    """``x + value * t1 * t2``."""
    if isinstance(value, torch.Tensor):
        return x + value.to(x.dtype) * t1 * t2
    return torch.addcmul(x, t1, t2, value=value)


def addcdiv(x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, value: Scalar = 1) -> torch.Tensor:
    """``x + value * t1 / t2``."""
    if isinstance(value, torch.Tensor):
        return x + value.to(x.dtype) * (t1 / t2)
    return torch.addcdiv(x, t1, t2, value=value)


def lerp(start: torch.Tensor, end: torch.Tensor, weight: Scalar) -> torch.Tensor:
    """``start + weight * (end - start)``, torch's ``lerp`` kernel."""
    if isinstance(weight, torch.Tensor):
        return torch.lerp(start, end, weight.to(start.dtype))
    return torch.lerp(start, end, weight)


def pow_(base: Scalar, exponent: Scalar) -> Scalar:
    """``base ** exponent`` for Python numbers, or in float64 when either is a 0-d tensor."""
    if isinstance(exponent, torch.Tensor):
        exponent = exponent.to(torch.float64)
        if isinstance(base, torch.Tensor):
            return torch.pow(base.to(torch.float64), exponent)
        return torch.pow(base, exponent)
    if isinstance(base, torch.Tensor):
        return torch.pow(base.to(torch.float64), exponent)
    return base**exponent


def sqrt(x: Scalar) -> Scalar:
    """``x ** 0.5`` as torch.optim writes it for Python floats; ``sqrt`` for tensors."""
    if isinstance(x, torch.Tensor):
        return torch.sqrt(x)
    return x**0.5


def float64(x: Scalar) -> Scalar:
    """A Python number unchanged; a tensor as float64.

    For step counts in tensor arithmetic: an int64 step times a Python float would round
    to the default float32 dtype, where torch.optim computes in Python (double) floats.
    """
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64)
    return x


@torch.library.custom_op("purestep::keep", mutates_args=())
def _keep(x: torch.Tensor) -> torch.Tensor:
    """An opaque copy: inductor must keep its input in a buffer (see ``once``)."""
    return x.clone()


@_keep.register_fake
def _keep_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _keep_vmap(
    info: Any, in_dims: tuple[int | None], x: torch.Tensor
) -> tuple[torch.Tensor, int | None]:
    return _keep(x), in_dims[0]


_keep.register_vmap(_keep_vmap)


def once(*scalars: Scalar) -> tuple[Scalar, ...]:
    """Step-dependent scalars computed once per step, not once per element.

    Inductor inlines a chain of scalar ops into every element's loop of every kernel that
    uses it: on W1 the Adam kernel of a 200k-element weight spent most of its ~1 ms in
    ``std::pow``/``sqrt``/float64 division per element. Under ``torch.compile`` each
    tensor scalar becomes the maximum of itself and itself (an exact copy, signed zeros
    included; a NaN stays a NaN), a reduction to a 0-d tensor, which inductor always
    computes into a buffer of its own (in the small kernel that computes the scalars; an
    extern ``segment_reduce`` did the same at ~15 us per call in validation and dispatch);
    the update kernels just load it. Vmapped (batched) scalars would reduce to a K-vector,
    which inductor unrolls back into its consumers, so they are stacked and passed through
    the opaque custom op
    ``purestep::keep`` instead. Python numbers and eager tensors pass through.
    """
    found = [(i, x) for i, x in enumerate(scalars) if isinstance(x, torch.Tensor)]
    if not found or not torch.compiler.is_compiling():
        return scalars
    out = list(scalars)
    if any(is_batched(x) for _, x in found):
        dtype = found[0][1].dtype
        kept = _keep(torch.stack([x.to(dtype).reshape(()) for _, x in found]))
        for j, (i, _) in enumerate(found):
            out[i] = kept[j]
        return tuple(out)
    for i, x in found:
        scalar = x.reshape(())
        out[i] = torch.stack([scalar, scalar]).amax()
    return tuple(out)
