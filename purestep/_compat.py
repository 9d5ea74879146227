"""Every private or version-dependent torch API purestep calls, in one place.

purestep is tested on one torch release (the pin in ``constraints.txt``). What it needs
from torch beyond the public, stable API is reached only through this module, so a torch
upgrade that moves or drops one of these breaks here, with a message naming it, and
nowhere else:

* functorch's tensor-wrapper checks (``torch._C._functorch``): is this tensor inside
  ``vmap``/``grad``, where ``.item()`` is impossible;
* torch's multi-tensor kernels (``torch._foreach_*``), which ``torch.optim``'s
  ``foreach=True`` paths and ``clip_grad_norm_`` use, and whose grouping of the
  arithmetic purestep must follow to match them bitwise;
* pytrees (``torch.utils._pytree``, and its optree-backed twin when optree is installed),
  the containers ``torch.compile`` and ``torch.func`` understand natively;
* dynamo's guard filter ``torch.compiler.keep_portable_guards_unsafe`` (recent releases
  only: ``portable_guard_filter()`` returns None where it is missing, and a compiled step
  then keeps dynamo's full guards: correct, a little slower per call);
* dynamo's event counters (``torch._dynamo.utils.counters``: graphs compiled, graph
  breaks), read by the benchmarks and the no-recompile tests; imported on first use;
* the attributes of torch's lr schedulers that ``schedule_from_torch`` reads (their
  phases, children and milestones have no public accessors).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

try:  # optree-backed and ~3x faster, when optree is installed (e.g. with the bench extra)
    from torch.utils import _cxx_pytree as fast_pytree
except ImportError:  # pragma: no cover - depends on the environment
    fast_pytree = pytree  # type: ignore[misc]

# Also ``counters`` (dynamo's event counters), resolved by ``__getattr__`` below on first use
# (importing torch._dynamo takes seconds), hence not in __all__.
__all__ = [
    "child_schedulers",
    "fast_pytree",
    "foreach_add",
    "foreach_add_",
    "foreach_addcdiv",
    "foreach_addcdiv_",
    "foreach_addcmul_",
    "foreach_div_",
    "foreach_lerp",
    "foreach_maximum",
    "foreach_mul",
    "foreach_neg",
    "foreach_norm",
    "foreach_sqrt",
    "is_batched",
    "is_functorch_wrapped",
    "one_cycle_anneal_strategy",
    "one_cycle_phases",
    "portable_guard_filter",
    "pytree",
    "sequential_milestones",
]


# --------------------------------------------------------------------------- functorch


def is_functorch_wrapped(t: torch.Tensor) -> bool:
    """Whether ``t`` is wrapped by a functorch transform (``vmap``, ``grad`` ...)."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def is_batched(t: torch.Tensor) -> bool:
    """Whether ``t`` is a ``vmap`` batched tensor."""
    return bool(torch._C._functorch.is_batchedtensor(t))


# ------------------------------------------------------------------- multi-tensor kernels

# Bound once at import: a torch without one of them fails here, naming it.
foreach_add = torch._foreach_add
foreach_add_ = torch._foreach_add_
foreach_addcdiv = torch._foreach_addcdiv
foreach_addcdiv_ = torch._foreach_addcdiv_
foreach_addcmul_ = torch._foreach_addcmul_
foreach_div_ = torch._foreach_div_
foreach_lerp = torch._foreach_lerp
foreach_maximum = torch._foreach_maximum
foreach_mul = torch._foreach_mul
foreach_neg = torch._foreach_neg
foreach_norm = torch._foreach_norm
foreach_sqrt = torch._foreach_sqrt


# ------------------------------------------------------------------------------ dynamo


def portable_guard_filter() -> Callable[[Any], list[bool]] | None:
    """dynamo's guard filter that keeps tensor-metadata, shape and global-context guards
    only (``torch.compiler.keep_portable_guards_unsafe``), or None on a torch without it."""
    return getattr(torch.compiler, "keep_portable_guards_unsafe", None)


def __getattr__(name: str) -> Any:
    # ``counters`` imports torch._dynamo (slow) only when someone asks for it.
    if name == "counters":
        from torch._dynamo.utils import counters

        return counters
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -------------------------------------------------------------------------- lr schedulers


def one_cycle_phases(scheduler: Any) -> list[dict[str, Any]]:
    """``OneCycleLR``'s phases: ``end_step`` and the param-group keys of its start/end lr
    and momentum (``start_lr``, ``end_lr``, ``start_momentum``, ``end_momentum``)."""
    return list(scheduler._schedule_phases)


def one_cycle_anneal_strategy(scheduler: Any) -> str:
    """``OneCycleLR``'s ``anneal_strategy`` (``"cos"`` or ``"linear"``)."""
    return str(scheduler._anneal_func_type)


def child_schedulers(scheduler: Any) -> list[Any]:
    """The schedulers inside a ``SequentialLR`` or ``ChainedScheduler``."""
    return list(scheduler._schedulers)


def sequential_milestones(scheduler: Any) -> list[int]:
    """A ``SequentialLR``'s milestones."""
    return list(scheduler._milestones)
