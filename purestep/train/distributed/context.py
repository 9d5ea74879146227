"""Where this process stands in a ``torch.distributed`` job, and the job set up from
torchrun's environment.

``torchrun --nproc-per-node N -m purestep train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment.
``init_from_env`` turns that into a process group (gloo on the CPU, NCCL on CUDA, one GPU
per local rank), starts the fault watchdog (``faults``) and returns the ``Context``;
without those variables (or with ``WORLD_SIZE=1``) it does nothing and returns the
single-process context, so the same program runs both ways.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from purestep.core.pytree import tree_flatten, tree_unflatten
from purestep.core.state import TrainState
from purestep.train.config import ConfigError
from purestep.train.distributed.faults import guard, start_watchdog, stop_watchdog

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Context",
    "DistributedLaunchError",
    "agree",
    "barrier",
    "broadcast_state",
    "context",
    "init_from_env",
    "launched",
    "refuse_distributed",
    "shutdown",
]

# Seconds a collective waits for a peer before the job fails (the process group timeout;
# it must exceed the longest pause of one rank the others wait for, e.g. rank 0 writing a
# checkpoint); a rank without a heartbeat for DEFAULT_HEARTBEAT_TIMEOUT is dead or frozen.
DEFAULT_TIMEOUT = 60.0
DEFAULT_HEARTBEAT_TIMEOUT = 10.0
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedLaunchError(ConfigError):
    """A command or setting that does not work in a distributed launch, or a broken
    launch environment; the message says what to do instead. A ``ConfigError`` (so a
    ``ValueError``), hence the CLI's exit code 2 (bad input)."""


@dataclass(frozen=True)
class Context:
    """This process's place in the job: ``rank`` of ``world_size`` (0 of 1 when not
    distributed), ``local_rank`` on its machine, the ``backend`` (None when single)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, plots and writes checkpoints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``device`` for this rank: a bare ``cuda`` becomes this rank's GPU."""
        if device.type == "cuda" and device.index is None and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw)
    except ValueError:
        raise DistributedLaunchError(
            f"environment variable {name}={raw!r} is not an integer (set by torchrun)"
        ) from None
    if value < 0:
        raise DistributedLaunchError(f"environment variable {name}={value} must be >= 0")
    return value


def launched() -> bool:
    """Whether this process is one of several of a torchrun-style launch
    (``WORLD_SIZE`` > 1 in the environment)."""
    return "WORLD_SIZE" in os.environ and os.environ.get("WORLD_SIZE", "1").strip() not in (
        "",
        "0",
        "1",
    )


def context() -> Context:
    """The current process's ``Context`` (rank 0 of 1 without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    local = os.environ.get("LOCAL_RANK", "0")
    return Context(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(local) if local.isdigit() else 0,
        backend=str(dist.get_backend()),
    )


def init_from_env(
    *,
    device: str | torch.device | None = None,
    backend: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    heartbeat_timeout: float | None = None,
) -> Context:
    """Join the job torchrun described in the environment; returns this rank's context.

    Args:
        device: where this rank trains: ``"cuda"`` (or a CUDA device) picks NCCL and the
            GPU ``LOCAL_RANK``; anything else gloo. Default: ``"cuda"`` when available.
        backend: override the process-group backend.
        timeout: seconds a collective waits for a peer before failing (default 60).
        heartbeat_timeout: seconds without a heartbeat before a rank counts as dead
            (default ``min(timeout, 10)``).

    Without a distributed environment (no ``WORLD_SIZE``, or 1) nothing is set up and the
    single-process context is returned. Calling it again returns the running job's
    context.
    """
    import torch.distributed as dist

    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if heartbeat_timeout is None:
        heartbeat_timeout = min(float(timeout), DEFAULT_HEARTBEAT_TIMEOUT)
    if not launched():
        return Context()
    if dist.is_initialized():
        return context()
    if not dist.is_available():
        raise DistributedLaunchError("this torch build has no torch.distributed")
    for name in (*_ENV, "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise DistributedLaunchError(
                f"WORLD_SIZE is set but {name} is not: launch with torchrun "
                "(torchrun --nproc-per-node N -m purestep train ...)"
            )
    rank, world, local = (_env_int(n) for n in _ENV)
    if rank >= world:
        raise DistributedLaunchError(f"RANK={rank} is not below WORLD_SIZE={world}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group(backend, timeout=timedelta(seconds=float(timeout)), **kwargs)
    start_watchdog(timeout=float(timeout), heartbeat_timeout=float(heartbeat_timeout))
    barrier("joining the job")  # every rank's first heartbeat is in the store
    return context()


def shutdown() -> None:
    """Stop the watchdog and leave the process group (a no-op when not distributed)."""
    import torch.distributed as dist

    stop_watchdog()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(what: str = "a barrier") -> None:
    """Wait until every rank gets here (under the fault guard; no-op when single)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    with guard(what):
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def agree(flag: bool, what: str = "agreeing to stop") -> bool:
    """True on every rank if ``flag`` is True on any (no-op when single)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    value = torch.tensor([int(flag)], dtype=torch.int64, device=device)
    with guard(what):
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_state(state: TrainState, src: int = 0) -> TrainState:
    """``src``'s state on every rank (what DDP does to the module when it is built): one
    broadcast per dtype, the random key included. No-op when single."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return state
    leaves, spec = tree_flatten(state)
    comm = state.device if dist.get_backend() == "nccl" else torch.device("cpu")
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, leaf in enumerate(leaves):
        by_dtype.setdefault(leaf.dtype, []).append(i)
    out = list(leaves)
    with guard("broadcasting the state from rank 0"):
        for idx in by_dtype.values():
            flat = torch.cat([leaves[i].detach().reshape(-1).to(comm) for i in idx])
            dist.broadcast(flat, src=src)
            for i, piece in zip(idx, flat.split([leaves[i].numel() for i in idx]), strict=True):
                out[i] = piece.view(leaves[i].shape).to(leaves[i].device).clone()
    return tree_unflatten(out, spec)


def refuse_distributed(command: str) -> None:
    """Raise ``DistributedLaunchError`` (a ``ConfigError``: the CLI's exit 2) when
    ``command`` runs under a multi-process launch that it does not support.

    ``purestep sweep`` and ``purestep tune`` train many models in one process (a vmapped
    sweep, Optuna trials); N torchrun copies of them would each run the whole search and
    race on the output directory, so they refuse: the data-parallel launch is for
    ``purestep train`` (and ``purestep parity``)."""
    if launched():
        world = os.environ.get("WORLD_SIZE")
        raise DistributedLaunchError(
            f"purestep {command} does not run under torchrun (WORLD_SIZE={world}): it "
            "trains many models in one process; run it as a single process, or use "
            f"torchrun for `purestep train` (data-parallel) on the configuration {command} "
            "picked"
        )
