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
* torch.distributed's functional collectives (``_functional_collectives``: the
  collectives ``torch.compile`` traces into a graph), DDP's bucket assignment
  (``_compute_bucket_assignment_by_size``, ``_DEFAULT_FIRST_BUCKET_BYTES``) and the default
  process group's store, for the data-parallel step (``purestep.train.distributed``);
  imported on first use.
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
    "add_batch_dim",
    "child_schedulers",
    "compute_bucket_assignment_by_size",
    "default_first_bucket_bytes",
    "default_store",
    "disable_functorch",
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
    "functional_collectives",
    "functorch_level",
    "is_batched",
    "is_functorch_wrapped",
    "one_cycle_anneal_strategy",
    "one_cycle_phases",
    "portable_guard_filter",
    "pytree",
    "sequential_milestones",
    "unwrap_batched",
    "unwrap_one_level",
]


# --------------------------------------------------------------------------- functorch


def is_functorch_wrapped(t: torch.Tensor) -> bool:
    """Whether ``t`` is wrapped by a functorch transform (``vmap``, ``grad`` ...)."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def is_batched(t: torch.Tensor) -> bool:
    """Whether ``t`` is a ``vmap`` batched tensor."""
    return bool(torch._C._functorch.is_batchedtensor(t))


# The next four let ``purestep.core.vmap_rng`` draw each vmapped member's random numbers
# from its own key: see the physical (K, ...) tensor behind a batched one, wrap a
# physical tensor as batched, and run plain (unbatched) ops inside a vmapped function.


def functorch_level(t: torch.Tensor) -> int:
    """The functorch level of a wrapped tensor (-1 for a plain one)."""
    return int(torch._C._functorch.maybe_get_level(t))


def unwrap_one_level(t: torch.Tensor) -> torch.Tensor:
    """The tensor a functorch wrapper (a ``grad`` or ``vmap`` level) wraps."""
    return torch._C._functorch.get_unwrapped(t)


def unwrap_batched(t: torch.Tensor, level: int) -> tuple[torch.Tensor, int | None]:
    """A batched tensor of ``level`` as ``(physical tensor, batch dim)``."""
    return torch._C._functorch._unwrap_batched(t, level)


def add_batch_dim(t: torch.Tensor, bdim: int, level: int) -> torch.Tensor:
    """``t``'s dim ``bdim`` as the batch dim of a ``vmap`` at ``level``."""
    return torch._C._functorch._add_batch_dim(t, bdim, level)


def disable_functorch() -> Any:
    """A context in which ops see plain tensors (no vmap/grad dispatch)."""
    return torch._C._DisableFuncTorch()


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


def dynamo_ignored_logging_functions() -> set[Any]:
    """dynamo's mutable set of logging functions it turns into no-ops while tracing
    (``torch._dynamo.config.ignore_logging_functions``)."""
    import torch._dynamo.config

    ignored: set[Any] = torch._dynamo.config.ignore_logging_functions
    return ignored


def temporary_inductor_cache_dir(directory: str) -> Any:
    """A context manager that points inductor's on-disk caches at ``directory`` (and
    clears its in-memory lookups on entry and exit), or None on a torch without one."""
    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:  # pragma: no cover - torch moved it
        return None
    return temporary_cache_dir(directory)


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


# -------------------------------------------------------------------- torch.distributed
# Imported on first use: most programs never touch torch.distributed.


def functional_collectives() -> Any:
    """``torch.distributed._functional_collectives``: collectives that return new tensors
    (``all_reduce``, ``broadcast``, ``wait_tensor``), which ``torch.compile`` traces into
    the graph (``fullgraph=True``) instead of breaking it, as ``dist.all_reduce`` would."""
    import torch.distributed._functional_collectives as funcol

    return funcol


def compute_bucket_assignment_by_size(
    tensors: list[torch.Tensor], limits: list[int], indices: list[int] | None = None
) -> list[list[int]]:
    """DDP's bucket assignment (``dist._compute_bucket_assignment_by_size``, the function
    its reducer calls): ``limits`` are the byte caps (first bucket, then the rest);
    ``tensors`` in gradient-ready order with ``indices`` their parameter indices (DDP's
    rebuilt buckets), or without ``indices`` in parameter order (its initial buckets,
    sorted by their smallest index); returns buckets of parameter indices."""
    import torch.distributed as dist

    buckets, _ = dist._compute_bucket_assignment_by_size(
        tensors, limits, [False] * len(tensors), indices if indices is not None else []
    )
    return [list(b) for b in buckets]


def default_first_bucket_bytes() -> int:
    """DDP's first-bucket cap with the default ``bucket_cap_mb`` (1 MiB in torch 2.13)."""
    import torch.distributed as dist

    return int(dist._DEFAULT_FIRST_BUCKET_BYTES)


def default_store() -> Any:
    """The key-value store of the default process group (``init_process_group``'s)."""
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()
