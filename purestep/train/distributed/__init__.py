"""Data-parallel training on ``torch.distributed``: the pure step, bitwise DDP's arithmetic.

``torchrun --nproc-per-node N -m purestep train --config cfg.yaml`` runs the config's
training data-parallel: each rank takes its shard of every global batch, the gradients are
averaged inside the pure step with torch's functional collectives (bucketed as
``DistributedDataParallel`` buckets them, so the result is bitwise DDP's), and rank 0
alone writes the run directory. In your own script::

    ctx = ps.distributed.init_from_env()              # torchrun's env -> process group
    step = ps.compile(ps.distributed.data_parallel(ps.make_train_step(model, loss, opt)))
    state = ps.distributed.broadcast_state(state)     # rank 0's initial state everywhere
    data = Batches(data, global_batch, shard=(ctx.rank, ctx.world_size))
    for batch in data.epoch(e): state, m = step(state, batch)

See docs/distributed.md for how it works, what it costs and the plan for sharded state.
"""

from purestep.train.distributed.buckets import (
    DEFAULT_BUCKET_CAP_MB,
    BucketLayout,
    bucket_caps,
    grad_ready_order,
)
from purestep.train.distributed.checksum import ReplicaDriftError, check_replicas, fingerprints
from purestep.train.distributed.context import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_TIMEOUT,
    Context,
    DistributedLaunchError,
    agree,
    barrier,
    broadcast_state,
    context,
    init_from_env,
    launched,
    refuse_distributed,
    shutdown,
)
from purestep.train.distributed.faults import (
    RankFailure,
    Watchdog,
    active_watchdog,
    guard,
    note_failure,
    start_watchdog,
    stop_watchdog,
)
from purestep.train.distributed.step import (
    RNG_MODES,
    DataParallelStep,
    data_parallel,
    make_data_parallel_step,
)

__all__ = [
    "DEFAULT_BUCKET_CAP_MB",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "RNG_MODES",
    "BucketLayout",
    "Context",
    "DataParallelStep",
    "DistributedLaunchError",
    "RankFailure",
    "ReplicaDriftError",
    "Watchdog",
    "active_watchdog",
    "agree",
    "barrier",
    "broadcast_state",
    "bucket_caps",
    "check_replicas",
    "context",
    "data_parallel",
    "fingerprints",
    "grad_ready_order",
    "guard",
    "init_from_env",
    "launched",
    "make_data_parallel_step",
    "note_failure",
    "refuse_distributed",
    "shutdown",
    "start_watchdog",
    "stop_watchdog",
]
