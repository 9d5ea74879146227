"""The data-parallel pure step against ``DistributedDataParallel`` + ``torch.optim``.

Run on every rank of a process group (``torchrun``, or processes you spawn). Both sides
start from the same weights, take each rank's shard of the same global batches and the
same random keys; after every step this rank compares its loss, gradients (after the
all-reduce), optimizer state and parameters with DDP's, and the buffers with what DDP's
next forward sees (rank 0's, which DDP broadcasts). The ranks' findings are then gathered,
so every rank returns the same report: the first divergence over all ranks and steps (its
tensor name says which rank saw it), and per step the largest difference on any rank.

Reference side, each step, on each rank (what a DDP tutorial writes)::

    optimizer.zero_grad(); loss = criterion(ddp_model(*inputs), targets); loss.backward()
    optimizer.step()
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from purestep.core.compile import compile as compile_step
from purestep.core.module import ModelSpec
from purestep.core.rng import rng_key, rng_scope
from purestep.core.state import TrainState
from purestep.core.step import make_train_step
from purestep.optim.base import Optimizer, chain
from purestep.optim.convert import from_torch, torch_state_view
from purestep.optim.transforms import clip_by_global_norm
from purestep.parity.compare import (
    CLOSE_ATOL,
    CLOSE_RTOL,
    COMPILED_ATOL,
    COMPILED_RTOL,
    _batches,
    _check_args,
    _Comparator,
    _make_torch_optimizer,
    _to_device,
    _two_models,
    compare_rest_of_step,
)
from purestep.parity.report import CATEGORIES, Divergence, ParityReport

if TYPE_CHECKING:
    from purestep.train.distributed.step import DataParallelStep

__all__ = ["compare_ddp", "shard_batch"]


def shard_batch(batch: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s contiguous slice of every tensor of ``batch`` (``tensor_split``
    along the first dimension), as ``Batches(..., shard=...)`` slices a global batch."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0 or batch.shape[0] < world_size:
            raise ValueError(
                f"a batch tensor of shape {tuple(batch.shape)} cannot be split across "
                f"{world_size} ranks"
            )
        return batch.tensor_split(world_size)[rank]
    if isinstance(batch, tuple | list):
        return type(batch)(shard_batch(b, rank, world_size) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_batch(v, rank, world_size) for k, v in batch.items()}
    return batch


def compare_ddp(
    model: nn.Module | Callable[[], nn.Module],
    criterion: Callable[[Any, Any], torch.Tensor],
    torch_optimizer: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer] | None = None,
    batches: Iterable[Any] | None = None,
    steps: int = 100,
    *,
    torch_optimizer_from_model: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    optimizer: Optimizer | None = None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    scheduler_every: int = 1,
    clip_grad_norm: float | None = None,
    mode: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    rng: str = "shared",
    bucket_cap_mb: float | None = None,
    broadcast_buffers: bool = True,
    compile: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    group: Any = None,
) -> ParityReport:
    """Compare ``purestep.distributed.data_parallel`` with DDP for ``steps`` steps.

    Call it on every rank with the same arguments. ``batches`` are **global** batches;
    each rank takes its shard (``shard_batch``). Arguments as for ``purestep.parity.
    compare`` (no gradient accumulation, no ``ReduceLROnPlateau``), plus:

    Args:
        scheduler, scheduler_every: a torch lr scheduler stepped after every
            ``scheduler_every`` optimizer steps (the functional side schedules its twin).
        clip_grad_norm: ``clip_grad_norm_`` after the backward pass, i.e. on the averaged
            gradients (``clip_by_global_norm`` before the functional rule).
        rng: ``"shared"``: every rank draws from ``rng_key(seed)`` (the DDP job that
            called ``torch.manual_seed(seed)`` on every rank); ``"per_rank"``: rank ``r``
            from ``rng_key(seed + r)`` (a job seeded per rank).
        bucket_cap_mb: DDP's ``bucket_cap_mb`` for both sides (None: DDP's default).
        broadcast_buffers: DDP's ``broadcast_buffers`` for both sides.
        group: the process group (default: the world).

    Returns:
        The same ``ParityReport`` on every rank; ``report.info["world_size"]`` and
        ``report.info["buckets"]`` say what ran. Losses in the table are rank 0's.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from purestep.train.distributed import data_parallel
    from purestep.train.distributed.step import RNG_MODES

    if batches is None:
        raise TypeError("compare_ddp() needs batches: an iterable of global (inputs..., targets)")
    if rng not in RNG_MODES:
        raise ValueError(f"rng must be one of {RNG_MODES}, got {rng!r}")
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "compare_ddp runs on every rank of a process group: launch with torchrun and "
            "call purestep.distributed.init_from_env() (or init_process_group) first"
        )
    mode_given = mode is not None
    mode = mode if mode is not None else ("close" if compile else "bitwise")
    rtol = rtol if rtol is not None else (COMPILED_RTOL if compile else CLOSE_RTOL)
    atol = atol if atol is not None else (COMPILED_ATOL if compile else CLOSE_ATOL)
    _check_args(mode, "free", steps, rtol, atol)
    if group is None:
        group = dist.group.WORLD
    world, rank = dist.get_world_size(group), dist.get_rank(group)

    if (
        isinstance(scheduler_every, bool)
        or not isinstance(scheduler_every, int)
        or scheduler_every < 1
    ):
        raise ValueError(f"scheduler_every must be an int >= 1, got {scheduler_every!r}")
    if clip_grad_norm is not None and not clip_grad_norm >= 0:
        raise ValueError(f"clip_grad_norm must be >= 0, got {clip_grad_norm!r}")
    ref_model, fun_model, dev = _two_models(model, device)
    ddp_kwargs: dict[str, Any] = {"forward_sync_buffers": broadcast_buffers, "process_group": group}
    if bucket_cap_mb is not None:
        ddp_kwargs["bucket_cap_mb"] = bucket_cap_mb
    if dev.type == "cuda":
        ddp_kwargs["device_ids"] = [dev]
    ddp = DistributedDataParallel(ref_model, **ddp_kwargs)  # rank 0's weights everywhere
    torch_opt = _make_torch_optimizer(torch_optimizer, torch_optimizer_from_model, ref_model)
    torch_sched = scheduler(torch_opt) if scheduler is not None else None
    if isinstance(torch_sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError(
            "compare_ddp does not drive ReduceLROnPlateau (it needs a monitored value); "
            "check the plateau schedule single-process with purestep.parity.compare"
        )
    fun_opt = (
        optimizer
        if optimizer is not None
        else from_torch(torch_opt, ref_model, torch_sched, schedule_every=scheduler_every)
    )
    if clip_grad_norm is not None:
        fun_opt = chain(clip_by_global_norm(clip_grad_norm), fun_opt)
    key_seed = seed if rng == "shared" else seed + rank
    state = TrainState.create(ref_model, fun_opt, seed=key_seed)
    initial_view = torch_state_view(state.opt_state)
    step_fn = data_parallel(
        make_train_step(fun_model, criterion, fun_opt, return_grads=True),
        bucket_cap_mb=bucket_cap_mb,
        rng=rng,
        reduce_metrics=False,
        broadcast_buffers=broadcast_buffers,
        group=group,
    )
    if compile:  # the compiled twin is a DataParallelStep too
        step_fn = cast("DataParallelStep", compile_step(step_fn))
    ref_key = rng_key(key_seed, dev)
    names = {id(p): n for n, p in ref_model.named_parameters()}
    src = dist.get_global_rank(group, 0)

    report = ParityReport(mode=mode, forcing="free", rtol=rtol, atol=atol, steps_requested=steps)
    report.info = {
        "model": ModelSpec.of(ref_model).model_name,
        "reference": f"DistributedDataParallel + torch.optim.{type(torch_opt).__name__}",
        "scheduler": type(torch_sched).__name__ if torch_sched is not None else None,
        "scheduler_every": scheduler_every,
        "clip_grad_norm": clip_grad_norm,
        "world_size": world,
        "backend": str(dist.get_backend(group)),
        "rng": rng,
        "bucket_cap_mb": bucket_cap_mb,
        "broadcast_buffers": broadcast_buffers,
        "compiled": compile,
        "device": str(dev),
        "seed": seed,
        "torch": torch.__version__,
    }
    if compile and not mode_given:
        report.notes.append(
            f"compile=True and no mode given: compared in mode='close' (rtol={rtol}, "
            f"atol={atol}), because a compiled step is not bitwise the eager one"
        )
    if broadcast_buffers and any(True for _ in ref_model.buffers()):
        report.notes.append(
            "buffers are compared with rank 0's DDP buffers, which DDP broadcasts to every "
            "rank before the next forward (the data-parallel step broadcasts them at the end "
            "of the step)"
        )
    for t, global_batch in enumerate(_batches(batches, steps)):
        if not isinstance(global_batch, tuple | list) or len(global_batch) < 2:
            raise ValueError(
                f"each batch must be (inputs..., targets), got {type(global_batch).__name__}"
            )
        batch = _to_device(shard_batch(global_batch, rank, world), dev)
        *inputs, targets = batch
        with rng_scope(ref_key, dev) as scope:
            torch_opt.zero_grad(set_to_none=True)
            loss = criterion(ddp(*inputs), targets)
            loss.backward()
            ref_grads = {
                n: p.grad.detach().clone()
                for n, p in ref_model.named_parameters()
                if p.grad is not None
            }
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(ref_model.parameters(), clip_grad_norm)
            torch_opt.step()
        if torch_sched is not None and (t + 1) % scheduler_every == 0:
            torch_sched.step()
        ref_key = scope.key
        state, metrics = step_fn(state, batch)
        if t == 0 and step_fn.layout is not None:
            report.info["buckets"] = step_fn.layout.describe()

        cmp = _Comparator(report, t)
        cmp("loss", "", loss.detach(), metrics["loss"])
        ref_buffers = dict(ref_model.named_buffers())
        if broadcast_buffers and ref_buffers:
            ref_buffers = {n: b.detach().clone() for n, b in ref_buffers.items()}
            for b in ref_buffers.values():
                dist.broadcast(b, src=src, group=group)
        for n, b in ref_buffers.items():
            cmp("buffers", n, b, state.buffers[n])
        compare_rest_of_step(
            cmp,
            report,
            t,
            ref_model=ref_model,
            state=state,
            ref_grads=ref_grads,
            fun_grads=metrics["grads"],
            torch_opt=torch_opt,
            names=names,
            initial_view=initial_view,
            ref_key=ref_key,
            loss_ref=loss,
            loss_fun=metrics["loss"],
        )
    if report.steps < steps:
        report.notes.append(f"batches ran out after {report.steps} of {steps} steps")
    return _merge(report, rank, group)


def _merge(report: ParityReport, rank: int, group: Any) -> ParityReport:
    """Every rank's report gathered into one: the earliest divergence (ties: the lowest
    rank), per step the largest differences and ``equal`` only if equal on all ranks."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, (rank, report), group=group)
    reports = sorted(gathered, key=lambda item: item[0])
    merged = copy.deepcopy(reports[0][1])
    merged.uncompared = []
    divergences: list[tuple[int, int, Divergence]] = []
    for r, rep in reports:
        if rep.first_divergence is not None:
            d = copy.copy(rep.first_divergence)
            d.name = f"{d.name} (rank {r})" if d.name else f"rank {r}"
            divergences.append((d.step, r, d))
        for note in rep.notes:
            if note not in merged.notes:
                merged.notes.append(note)
        for item in rep.uncompared:
            entry = f"rank {r}: {item}"
            if entry not in merged.uncompared:
                merged.uncompared.append(entry)
    merged.first_divergence = (
        min(divergences, key=lambda d: (d[0], d[1]))[2] if divergences else None
    )
    for i, record in enumerate(merged.records):
        for _, rep in reports[1:]:
            if i >= len(rep.records):
                continue
            other = rep.records[i]
            for c in CATEGORIES:
                if c in other.max_abs:
                    record.max_abs[c] = max(record.max_abs.get(c, 0.0), other.max_abs[c])
                if c in other.max_rel:
                    record.max_rel[c] = max(record.max_rel.get(c, 0.0), other.max_rel[c])
            record.equal = record.equal and other.equal
    merged.info["ranks_compared"] = len(reports)
    return merged
