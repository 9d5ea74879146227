"""The pure step, data-parallel: ``state, metrics = step(state, local_batch)`` on every rank.

Each rank computes gradients on its shard of the global batch; inside the step they are
averaged across ranks with torch's functional collectives, bucketed and scaled exactly as
``DistributedDataParallel`` does it (``buckets``), so the update is bitwise DDP's; then
every rank applies the same optimizer update to the same replicated state. The step stays
a pure function of ``(state, batch)`` and the collectives are graph ops, so
``purestep.compile`` compiles it with ``fullgraph=True``.

Beyond the gradients, per step:

* buffers (BatchNorm running statistics): each rank updates them on its shard; DDP then
  broadcasts rank 0's to all ranks before the next forward. Here the broadcast closes the
  step, so the returned state is replicated and equals what DDP's next forward sees (and
  rank 0's DDP module after the step);
* metrics (``reduce_metrics=True``): the loss (and a ``loss_fn``'s aux metrics) are
  averaged over ranks, ``metrics_fn`` outputs summed (additive statistics such as
  ``MetricSet.stats``), so every rank logs the global figures; one small all-reduce;
* every ``check_every`` calls (and at the first) ``check_replicas`` verifies that the
  ranks still hold the same state and names the first tensor that drifted.

Randomness: every rank draws from its ``state.rng``. With the same key on every rank
(``rng="shared"``, the default) dropout masks match those of a DDP job that called
``torch.manual_seed(seed)`` on every rank; with ``rng="per_rank"`` each rank's state
carries its own key (e.g. ``rng_key(seed + rank)``, as a DDP job seeded per rank), and
the replica check leaves the key out.
"""

from __future__ import annotations

from typing import Any

import torch

from purestep._compat import functional_collectives
from purestep.core.state import TrainState
from purestep.core.step import Metrics, TrainStep, make_train_step
from purestep.train.distributed.buckets import BucketLayout, grad_ready_order
from purestep.train.distributed.checksum import check_replicas
from purestep.train.distributed.faults import guard

__all__ = ["RNG_MODES", "DataParallelStep", "data_parallel", "make_data_parallel_step"]

RNG_MODES = ("shared", "per_rank")
DEFAULT_CHECK_EVERY = 100


class DataParallelStep(TrainStep):
    """A ``TrainStep`` whose gradients, buffers and metrics are combined across the ranks
    of a process group; see ``data_parallel``."""

    layout: BucketLayout | None  # DDP's rebuilt buckets: every step but a run's first
    first_layout: BucketLayout | None  # DDP's first-iteration buckets
    group: Any
    world_size: int
    rank: int
    bucket_cap_mb: float | None
    check_every: int | None
    rng_mode: str
    reduce_metrics: bool
    broadcast_buffers: bool
    calls: int
    _active: BucketLayout | None

    # -- the pure part ------------------------------------------------------------------
    def _grad(self, objective: Any, trainable: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        grads, aux = super()._grad(objective, trainable)
        return self._average(grads), aux

    def _average(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """DDP's reduction: per bucket, ``cat(grads) * (1 / world)`` summed over ranks."""
        layout = self._active
        assert layout is not None, "the bucket layout is set by the first call"
        funcol = functional_collectives()
        scale = 1.0 / self.world_size
        pending = []
        for bucket in layout.buckets:
            parts = [grads[k].reshape(-1) for k in bucket]
            flat = torch.cat(parts) if len(parts) > 1 else parts[0]
            # DDP: at::mul_out(bucket_view, grad, 1.0 / div_factor), one rounding.
            pending.append(funcol.all_reduce(torch.mul(flat, scale), "sum", self.group))
        out = dict(grads)
        for bucket, reduced in zip(layout.buckets, pending, strict=True):
            total = funcol.wait_tensor(reduced)
            sizes = [layout.shapes[k].numel() for k in bucket]
            for k, piece in zip(bucket, total.split(sizes), strict=True):
                out[k] = piece.view(layout.shapes[k])
        return {k: out[k] for k in grads}

    def _pure(self, state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        new_state, metrics = super()._pure(state, batch)
        if self.broadcast_buffers and new_state.buffers:
            new_state = new_state._replace(buffers=self._rank0_buffers(new_state.buffers))
        if self.reduce_metrics:
            metrics = self._combine_metrics(metrics)
        return new_state, metrics

    def _rank0_buffers(self, buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rank 0's buffers on every rank: one broadcast per dtype."""
        funcol = functional_collectives()
        by_dtype: dict[torch.dtype, list[str]] = {}
        for k, b in buffers.items():
            by_dtype.setdefault(b.dtype, []).append(k)
        out = dict(buffers)
        pending = []
        for keys in by_dtype.values():
            parts = [buffers[k].reshape(-1) for k in keys]
            flat = torch.cat(parts) if len(parts) > 1 else parts[0]
            pending.append((keys, funcol.broadcast(flat, 0, self.group)))
        for keys, sent in pending:
            total = funcol.wait_tensor(sent)
            for k, piece in zip(keys, total.split([buffers[k].numel() for k in keys]), strict=True):
                out[k] = piece.view(buffers[k].shape)
        return out

    def _combine_metrics(self, metrics: Metrics) -> Metrics:
        """Loss and loss_fn aux averaged over ranks, metrics_fn outputs summed: one
        all-reduce of everything as float64 (exact for integer counts below 2**53)."""
        keys = [k for k, v in metrics.items() if k != "grads" and isinstance(v, torch.Tensor)]
        if not keys:
            return metrics
        funcol = functional_collectives()
        values = [metrics[k].detach() for k in keys]
        flat = torch.cat([v.reshape(-1).to(torch.float64) for v in values])
        total = funcol.wait_tensor(funcol.all_reduce(flat, "sum", self.group))
        out = dict(metrics)
        summed = set() if self.loss_fn is not None else set(keys) - {"loss"}
        for k, v, piece in zip(keys, values, total.split([v.numel() for v in values]), strict=True):
            if k not in summed and v.is_floating_point():
                piece = piece / self.world_size
            out[k] = piece.view(v.shape).to(v.dtype)
        return out

    # -- calling ------------------------------------------------------------------------
    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        with guard(f"data-parallel step {self.calls + 1}"):
            if self.layout is None:
                self._set_layout(state, batch)
            self._active = self.layout
            # DDP's first iteration reduces in one bucket: so does a run's first step
            # (eager; a compiled step keeps one graph). Only a state this step did not
            # just return is read (a device sync on CUDA, once).
            if not self.compiled and state is not self._last_output and int(state.step) == 0:
                self._active = self.first_layout
            if self.calls == 0 and self.check_every:
                check_replicas(
                    state,
                    when="before the first step",
                    include_rng=self._check_rng,
                    group=self.group,
                )
            out = super().__call__(state, batch)
            self.calls += 1
            if self.check_every and self.calls % self.check_every == 0:
                check_replicas(
                    out[0],
                    when=f"after {self.calls} steps of this step function",
                    include_rng=self._check_rng,
                    group=self.group,
                )
        return out

    @property
    def _check_rng(self) -> bool:
        return self.rng_mode == "shared"

    def _set_layout(self, state: TrainState, batch: Any) -> None:
        """DDP's rebuilt bucket layout, from rank 0's gradient-ready order."""
        import torch.distributed as dist

        self.check_state(state)
        self.check_batch(batch, state)
        order = grad_ready_order(self, state, batch)
        shared = [order]
        dist.broadcast_object_list(
            shared, src=dist.get_global_rank(self.group, 0), group=self.group
        )
        trainable = {k: state.params[k] for k in self._trainable}
        self.layout = BucketLayout.build(shared[0], trainable, bucket_cap_mb=self.bucket_cap_mb)
        self.first_layout = BucketLayout.initial(trainable)

    def _with_impl(self, impl: Any) -> Any:
        twin = super()._with_impl(impl)
        twin.calls = 0
        return twin


def _group_info(group: Any) -> tuple[Any, int, int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "the data-parallel step needs torch.distributed: launch with torchrun and call "
            "purestep.distributed.init_from_env() (purestep train does), or call "
            "torch.distributed.init_process_group() first"
        )
    if group is None:
        group = dist.group.WORLD
    return group, dist.get_world_size(group), dist.get_rank(group)


def data_parallel(
    step: TrainStep,
    *,
    bucket_cap_mb: float | None = None,
    check_every: int | None = DEFAULT_CHECK_EVERY,
    rng: str = "shared",
    reduce_metrics: bool = True,
    broadcast_buffers: bool = True,
    group: Any = None,
) -> DataParallelStep:
    """``step`` (from ``make_train_step``, not yet compiled) made data-parallel over
    ``group`` (default: every rank); ``purestep.compile`` the result if you like.

    Args:
        step: the single-process step; its model, loss, optimizer and options are kept.
        bucket_cap_mb: DDP's ``bucket_cap_mb``: None (25 MiB buckets, the first 1 MiB) or
            a cap in MiB for every bucket.
        check_every: run ``check_replicas`` at the first call and every this many calls
            (None or 0: never).
        rng: ``"shared"`` (every rank's state holds the same key) or ``"per_rank"``.
        reduce_metrics: return global metrics (loss averaged, ``metrics_fn`` outputs
            summed over ranks); False keeps each rank's own (what DDP's loss is).
        broadcast_buffers: end each step with rank 0's buffers on every rank (DDP's
            ``broadcast_buffers=True``).
        group: the process group (default: the world).

    Every rank calls it with its own shard of the global batch (``Batches(...,
    shard=(rank, world_size))``); shards of equal size give the global-batch gradient.
    The first call runs one extra forward and backward to learn the order in which
    gradients become ready (DDP's bucket layout; rank 0's is used everywhere).
    """
    if not isinstance(step, TrainStep):
        raise TypeError(f"data_parallel takes a TrainStep, got {type(step).__name__}")
    if isinstance(step, DataParallelStep):
        raise ValueError("this step is already data-parallel")
    if step.compiled or getattr(step, "donate", False):
        raise ValueError(
            "make the step data-parallel before compiling it: purestep.compile(data_parallel(step))"
        )
    if rng not in RNG_MODES:
        raise ValueError(f"rng must be one of {RNG_MODES}, got {rng!r}")
    if check_every is not None and (
        isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 0
    ):
        raise ValueError(f"check_every must be None or an int >= 0, got {check_every!r}")
    if bucket_cap_mb is not None and (
        isinstance(bucket_cap_mb, bool)
        or not isinstance(bucket_cap_mb, int | float)
        or not bucket_cap_mb > 0
    ):
        raise ValueError(
            f"bucket_cap_mb must be None or a number of MiB > 0, got {bucket_cap_mb!r}"
        )
    group, world, rank = _group_info(group)
    dp: DataParallelStep = object.__new__(DataParallelStep)
    dp.__dict__.update(step.__dict__)
    dp._impl = dp._pure
    dp._validated = []
    dp._last_output = None
    dp.layout = dp.first_layout = dp._active = None
    dp.group, dp.world_size, dp.rank = group, world, rank
    dp.bucket_cap_mb = bucket_cap_mb
    dp.check_every = check_every or None
    dp.rng_mode = rng
    dp.reduce_metrics = reduce_metrics
    dp.broadcast_buffers = broadcast_buffers
    dp.calls = 0
    return dp


def make_data_parallel_step(
    model: torch.nn.Module,
    criterion: Any,
    optimizer: Any,
    *,
    bucket_cap_mb: float | None = None,
    check_every: int | None = DEFAULT_CHECK_EVERY,
    rng: str = "shared",
    reduce_metrics: bool = True,
    broadcast_buffers: bool = True,
    group: Any = None,
    **step_options: Any,
) -> DataParallelStep:
    """``data_parallel(make_train_step(model, criterion, optimizer, **step_options), ...)``."""
    return data_parallel(
        make_train_step(model, criterion, optimizer, **step_options),
        bucket_cap_mb=bucket_cap_mb,
        check_every=check_every,
        rng=rng,
        reduce_metrics=reduce_metrics,
        broadcast_buffers=broadcast_buffers,
        group=group,
    )
