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


class _Buckets:
    """The layouts, shared by a step and its compiled twin (``purestep.compile`` traces the
    original step's ``_pure``, the twin's ``__call__`` picks the layout): ``active`` is
    the one the next reduction uses."""

    def __init__(self) -> None:
        self.rebuilt: BucketLayout | None = None
        self.first: BucketLayout | None = None
        self.active: BucketLayout | None = None


class DataParallelStep(TrainStep):
    """A ``TrainStep`` whose gradients, buffers and metrics are combined across the ranks
    of a process group; see ``data_parallel``."""

    group: Any
    world_size: int
    rank: int
    src: int  # the global rank of the group's rank 0
    bucket_cap_mb: float | None
    check_every: int | None
    rng_mode: str
    reduce_metrics: bool
    broadcast_buffers: bool
    calls: int
    _buckets: _Buckets

    @property
    def layout(self) -> BucketLayout | None:
        """DDP's rebuilt buckets, used by every step but a run's first (None before the
        first call)."""
        return self._buckets.rebuilt

    @property
    def first_layout(self) -> BucketLayout | None:
        """DDP's first-iteration buckets (one per dtype, registration order)."""
        return self._buckets.first

    # -- the pure part ------------------------------------------------------------------
    def _grad(self, objective: Any, trainable: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        grads, aux = super()._grad(objective, trainable)
        return self._average(grads), aux

    def _average(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """DDP's reduction: per bucket, ``cat(grads) * (1 / world)`` summed over ranks."""
        layout = self._buckets.active
        assert layout is not None, "the bucket layout is set by the first call"
        scale = 1.0 / self.world_size
        # DDP: at::mul_out(bucket_view, grad, 1.0 / div_factor), one rounding per element.
        pending = [
            _start_sum(torch.mul(torch.cat([grads[k].reshape(-1) for k in bucket]), scale), self)
            for bucket in layout.buckets
        ]
        out = dict(grads)
        for bucket, handle in zip(layout.buckets, pending, strict=True):
            sizes = [layout.shapes[k].numel() for k in bucket]
            for k, piece in zip(bucket, _finish(handle).split(sizes), strict=True):
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
        """Rank 0's buffers on every rank: their bytes in one broadcast (a copy is exact
        whatever the dtypes, so one collective serves float statistics and int counters)."""
        keys = list(buffers)
        raw = [buffers[k].contiguous().reshape(-1).view(torch.uint8) for k in keys]
        total = _finish(_start_broadcast(torch.cat(raw), self))
        out = {}
        for k, piece in zip(keys, total.split([r.numel() for r in raw]), strict=True):
            out[k] = piece.view(buffers[k].dtype).view(buffers[k].shape)
        return out

    def _combine_metrics(self, metrics: Metrics) -> Metrics:
        """Loss and loss_fn aux averaged over ranks, metrics_fn outputs summed: one
        all-reduce of everything as float64 (exact for integer counts below 2**53)."""
        keys = [k for k, v in metrics.items() if k != "grads" and isinstance(v, torch.Tensor)]
        if not keys:
            return metrics
        values = [metrics[k].detach() for k in keys]
        flat = torch.cat([v.reshape(-1).to(torch.float64) for v in values])
        total = _finish(_start_sum(flat, self))
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
            self._buckets.active = self.layout
            # DDP's first iteration reduces in one bucket: so does a run's first step
            # (eager; a compiled step keeps one graph). Only a state this step did not
            # just return is read (a device sync on CUDA, once).
            if not self.compiled and state is not self._last_output and int(state.step) == 0:
                self._buckets.active = self.first_layout
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
        dist.broadcast_object_list(shared, src=self.src, group=self.group)
        trainable = {k: state.params[k] for k in self._trainable}
        self._buckets.rebuilt = BucketLayout.build(
            shared[0], trainable, bucket_cap_mb=self.bucket_cap_mb
        )
        self._buckets.first = BucketLayout.initial(trainable)

    def _with_impl(self, impl: Any) -> Any:
        twin = super()._with_impl(impl)
        twin.calls = 0
        return twin


# Collectives on buffers the step has just made (nobody else holds them). Traced by
# torch.compile: the functional collectives, graph ops. Eager: the c10d collective in
# place on that fresh buffer, which is the same operation without the functional
# wrapper's copy and dispatch (2 gloo ranks: 0.5-0.9 vs 1.3-2.9 ms for 24 bytes).
def _start_sum(flat: torch.Tensor, step: DataParallelStep) -> Any:
    if torch.compiler.is_compiling():
        return functional_collectives().all_reduce(flat, "sum", step.group)
    import torch.distributed as dist

    return flat, dist.all_reduce(flat, group=step.group, async_op=True)


def _start_broadcast(flat: torch.Tensor, step: DataParallelStep) -> Any:
    if torch.compiler.is_compiling():
        return functional_collectives().broadcast(flat, step.src, step.group)
    import torch.distributed as dist

    return flat, dist.broadcast(flat, src=step.src, group=step.group, async_op=True)


def _finish(handle: Any) -> torch.Tensor:
    if isinstance(handle, tuple):
        flat, work = handle
        work.wait()
        return flat
    return functional_collectives().wait_tensor(handle)


def _global_rank(group: Any, rank: int) -> int:
    import torch.distributed as dist

    return int(dist.get_global_rank(group, rank))


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
    dp._buckets = _Buckets()
    dp.group, dp.world_size, dp.rank = group, world, rank
    dp.src = _global_rank(group, 0)
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
