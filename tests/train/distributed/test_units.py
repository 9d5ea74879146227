"""Single-process parts of the data-parallel layer: sharded batches, bucket caps, replica
fingerprints, the watchdog's diagnosis (on an in-memory store), launch checks."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from torch import nn

import purestep as ps
from purestep import distributed
from purestep.data import Batches
from purestep.train.distributed.buckets import BucketLayout, bucket_caps
from purestep.train.distributed.checksum import fingerprints
from purestep.train.distributed.faults import RankFailure, Watchdog
from purestep.train.distributed.launch import AgreedStop, DataParallelOptions, QuietProgress


# -- sharded batches ------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 4])
def test_shards_partition_every_global_batch(world: int) -> None:
    x = torch.arange(36)
    whole = Batches((x,), 8, seed=3)
    shards = [whole.sharded(r, world) for r in range(world)]
    for e in range(2):
        for b, batch in enumerate(whole.epoch(e)):
            parts = [next(iter(s.epoch(e, start=b)))[0] for s in shards]
            assert torch.equal(torch.cat(parts), batch[0])  # contiguous slices, in rank order
            assert len({len(p) for p in parts[:-1]}) <= 1
    assert len(shards[0]) == len(whole) == 5  # the number of global batches


def test_shard_argument_matches_sharded() -> None:
    x = torch.arange(20)
    a = Batches((x,), 4, seed=1, shard=(1, 2))
    b = Batches((x,), 4, seed=1).sharded(1, 2)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a.epoch(3), b.epoch(3), strict=True))


@pytest.mark.parametrize(
    ("shard", "error", "match"),
    [
        ((0, 3), ValueError, "batch_size 8 .* not divisible by the world size 3"),
        ((2, 2), ValueError, "need 0 <= rank < world_size, got rank 2"),
        ((0, 0), ValueError, "need 0 <= rank < world_size"),
        ((0,), TypeError, r"shard must be a \(rank, world_size\) pair of ints"),
        ((0.0, 2), TypeError, r"shard must be a \(rank, world_size\) pair"),
        ((True, 2), TypeError, r"shard must be a \(rank, world_size\) pair"),
    ],
)
def test_bad_shards(shard: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Batches((torch.arange(32),), 8, shard=shard)


def test_short_last_batch_must_reach_every_rank() -> None:
    with pytest.raises(ValueError, match="last batch of each epoch holds 1 examples .* 2 ranks"):
        Batches((torch.arange(17),), 8, shard=(0, 2))
    Batches((torch.arange(17),), 8, shard=(0, 2), drop_last=True)  # dropped: fine
    Batches((torch.arange(18),), 8, shard=(1, 2))  # 2 examples for 2 ranks: fine


# -- buckets ---------------------------------------------------------------------------------
def test_bucket_caps_follow_ddp() -> None:
    assert bucket_caps(None) == [1024 * 1024, 25 * 1024 * 1024]  # DDP's defaults
    assert bucket_caps(4) == [4 * 1024 * 1024] * 2  # given: every bucket, the first too
    with pytest.raises(ValueError, match="bucket_cap_mb must be a number of MiB > 0, got -1"):
        bucket_caps(-1)


def test_layout_cuts_the_ready_order_at_the_caps() -> None:
    params = {
        "a": torch.zeros(300_000),  # 1.14 MiB
        "b": torch.zeros(10),
        "c": torch.zeros(200_000),
        "d": torch.zeros(5, dtype=torch.float64),
    }
    layout = BucketLayout.build(["c", "b", "a", "d"], params)
    # DDP closes a bucket once it reaches its cap (1 MiB for the first): c, b and a (which
    # crosses it) fill the first; float64 d gets a bucket of its own.
    assert layout.buckets == (("c", "b", "a"), ("d",))
    assert layout.nbytes == [(200_000 + 10 + 300_000) * 4, 5 * 8]
    assert layout.describe() == "2 buckets (1.91, 3.81e-05 MiB; 4 tensors)"
    small = BucketLayout.build(["c", "b", "a", "d"], params, bucket_cap_mb=0.5)
    assert small.buckets == (("c",), ("b", "a"), ("d",))
    initial = BucketLayout.initial(params)
    assert sorted(initial.buckets) == sorted([("a", "b", "c"), ("d",)])
    with pytest.raises(ValueError, match="differently from the trainable parameters"):
        BucketLayout.build(["a", "b"], params)


# -- fingerprints ----------------------------------------------------------------------------
def test_fingerprints_see_any_change_and_a_swap() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    state = ps.TrainState.create(model, ps.optim.adam(lr=1e-3))
    names, base = fingerprints(state)
    assert names[0] == "params['0.weight']" and names[-1] == "rng"
    assert "buffers['1.num_batches_tracked']" in names
    assert "opt_state.exp_avg['0.bias']" in names
    w = state.params["0.weight"]
    changed = {
        "ulp": torch.cat(
            [w.view(-1)[:5], torch.nextafter(w.view(-1)[5:6], torch.tensor(9.0)), w.view(-1)[6:]]
        ),
        "swap": w.clone().view(-1)[[1, 0, *range(2, w.numel())]],
        "sign of zero": torch.where(w == w, w, w),
    }
    for why, flat in changed.items():
        other = state._replace(params={**state.params, "0.weight": flat.view(w.shape)})
        _, got = fingerprints(other)
        differs = (got != base).any(dim=1).nonzero().flatten().tolist()
        if why == "sign of zero":
            assert differs == []  # nothing changed
        else:
            assert differs == [0], why
    neg_zero = state._replace(
        buffers={**state.buffers, "1.running_mean": -torch.zeros(3)}  # -0.0 == 0.0, not bits
    )
    assert (fingerprints(neg_zero)[1] != base).any()
    assert "rng" not in fingerprints(state, include_rng=False)[0]


# -- the watchdog ----------------------------------------------------------------------------
class _Store:
    """An in-memory stand-in for a torch.distributed Store."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def clone(self) -> _Store:
        return self

    def set_timeout(self, timeout: Any) -> None:
        del timeout

    def set(self, key: str, value: str) -> None:
        self.data[key] = value.encode()

    def get(self, key: str) -> bytes:
        return self.data[key]

    def check(self, keys: list[str]) -> bool:
        return all(k in self.data for k in keys)

    def multi_get(self, keys: list[str]) -> list[bytes]:
        return [self.data[k] for k in keys]


def _watchdog(store: _Store, rank: int = 0, **kw: Any) -> tuple[Watchdog, list[int]]:
    exits: list[int] = []
    # A heartbeat timeout 40 intervals long: a loaded 2-core box delays a heartbeat
    # thread by far more than one interval (0.4 s gave false alarms there).
    options = {"timeout": 30.0, "heartbeat_timeout": 2.0, "interval": 0.05} | kw
    return Watchdog(store, rank, 3, exit=exits.append, **options), exits


def test_watchdog_names_the_silent_rank_and_ends_a_stuck_process() -> None:
    store = _Store()
    peers = [_watchdog(store, rank=r)[0].start() for r in (1, 2)]
    dog, exits = _watchdog(store)
    dog.start()
    try:
        time.sleep(0.3)
        assert dog.failure is None
        peers[1].stop(goodbye=False)  # rank 2 dies: its heartbeat stops
        with dog.guarded("data-parallel step 7"):  # the main thread waits in a collective
            deadline = time.monotonic() + 60
            while not exits and time.monotonic() < deadline:
                time.sleep(0.05)
        assert exits == [1]
        assert isinstance(dog.failure, RankFailure) and dog.failure.ranks == (2,)
        assert "rank 2 stopped responding (no heartbeat for 2 s" in str(dog.failure)
        assert "waiting in data-parallel step 7" in str(dog.failure)
    finally:
        dog.stop()
        peers[0].stop()


def test_a_rank_that_said_goodbye_is_not_dead() -> None:
    store = _Store()
    peers = [_watchdog(store, rank=r)[0].start() for r in (1, 2)]
    dog, exits = _watchdog(store)
    dog.start()
    try:
        for peer in peers:
            peer.stop()  # finished cleanly
        time.sleep(2.5)  # past the heartbeat timeout
        assert dog.failure is None and exits == []
    finally:
        dog.stop()


def test_guard_turns_a_collective_failure_into_a_named_rank_failure() -> None:
    store = _Store()
    peers = [_watchdog(store, rank=r)[0].start() for r in (1, 2)]
    dog, _ = _watchdog(store, heartbeat_timeout=5.0)
    dog.start()
    try:
        # The user's own errors pass through untouched, however they are worded.
        with pytest.raises(ValueError, match="store this"), dog.guarded("step 2"):
            raise ValueError("store this")
        peers[0].note("ValueError: bad batch")
        told = "step 3 failed because rank 1 failed: ValueError: bad batch"
        with pytest.raises(RankFailure, match=told), dog.guarded("step 3"):
            raise RuntimeError("[gloo/transport/tcp/pair.cc:537] Connection reset by peer")
    finally:
        dog.stop()
        for peer in peers:
            peer.stop()


def test_guard_names_a_rank_that_is_behind() -> None:
    store = _Store()
    peers = [_watchdog(store, rank=r, heartbeat_timeout=5.0)[0].start() for r in (1, 2)]
    dog, _ = _watchdog(store, heartbeat_timeout=5.0)
    peers[0].entered = 5  # rank 1 reached the collective, rank 2 did not
    peers[1].entered = 4
    dog.entered = 4
    dog.start()
    try:
        time.sleep(0.3)
        with (
            pytest.raises(RankFailure, match="rank 2 never reached it") as info,
            dog.guarded("step 5"),
        ):
            raise RuntimeError("Timed out waiting 20000ms for recv operation to complete")
        assert info.value.ranks == (2,)
        assert isinstance(info.value.__cause__, RuntimeError)
        # It stays failed: the next guard raises at once.
        with pytest.raises(RankFailure, match="rank 2 never reached it"), dog.guarded("step 6"):
            pass
    finally:
        dog.stop()
        for peer in peers:
            peer.stop()


def test_watchdog_validates_its_times() -> None:
    with pytest.raises(ValueError, match="heartbeat_timeout must be a number of seconds > 0"):
        Watchdog(_Store(), 0, 2, timeout=1.0, heartbeat_timeout=0)
    with pytest.raises(ValueError, match="at least twice the heartbeat interval"):
        Watchdog(_Store(), 0, 2, timeout=1.0, heartbeat_timeout=0.5, interval=0.5)


# -- launch ----------------------------------------------------------------------------------
def test_single_process_context_and_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched()
    ctx = distributed.init_from_env()
    assert ctx == distributed.context() == distributed.Context()
    assert ctx.is_main and not ctx.distributed and ctx.backend is None
    state = ps.TrainState.create(nn.Linear(2, 2), ps.optim.sgd(lr=0.1))
    assert distributed.broadcast_state(state) is state
    distributed.check_replicas(state)  # nothing to compare with
    distributed.barrier()
    assert distributed.agree(True) and not distributed.agree(False)
    distributed.shutdown()


_ENV = {"WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not: launch with torchrun"),
        (_ENV | {"RANK": "x"}, "RANK='x' is not an integer"),
        (_ENV | {"RANK": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
    ],
)
def test_broken_launch_environments(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], match: str
) -> None:
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(distributed.DistributedLaunchError, match=match):
        distributed.init_from_env()


def test_data_parallel_needs_a_process_group() -> None:
    step = ps.make_train_step(nn.Linear(2, 1), nn.MSELoss(), ps.optim.sgd(lr=0.1))
    with pytest.raises(RuntimeError, match="the data-parallel step needs torch.distributed"):
        distributed.data_parallel(step)
    with pytest.raises(TypeError, match="data_parallel takes a TrainStep, got EvalStep"):
        distributed.data_parallel(ps.make_eval_step(nn.Linear(2, 1), nn.MSELoss()))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bucket_cap_mb": 0}, "bucket_cap_mb must be > 0"),
        ({"check_every": -1}, "check_every must be >= 0"),
        ({"timeout": 0}, "timeout must be > 0 seconds"),
        ({"stop_every": 0}, "stop_every must be an int >= 1"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataParallelOptions(**kwargs)


def test_agreed_stop_asks_every_nth_call() -> None:
    asked: list[int] = []

    def local() -> bool:
        asked.append(1)
        return len(asked) >= 2

    stop = AgreedStop(local, every=3)
    answers = [stop() for _ in range(6)]
    assert answers == [False, False, False, False, False, True] and len(asked) == 2
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        AgreedStop(local, every=0)


def test_quiet_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    progress = QuietProgress(3)
    progress.start_epoch(1, 4)
    progress.update(4, loss=0.5)
    progress.end_epoch({"loss": 0.5})
    progress.write("saved best")
    progress.close()
    assert capsys.readouterr() == ("", "")
