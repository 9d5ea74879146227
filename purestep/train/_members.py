"""Many configs trained at once: the engine under ``ps.sweep`` and ``ps.tune``.

Each member is a whole run config. Members whose configs differ only in values the state
carries (``train.seed``: initial weights and random key; ``optimizer.lr``: a tensor in the
optimizer state; ``data.seed``: which examples and in what order) form a *group*: one
model structure, one step function, one compiled graph. Anything else (optimizer name,
``amsgrad``, model sizes, weight decay, epochs) changes the step or the state's
structure, and starts another group.

A group trains its members in lockstep, epoch by epoch and batch by batch, with the
bookkeeping of ``ps.fit`` per member (the same epoch records, NaN policy, ReduceLROnPlateau,
early stopping, best state), so a member's history and final state are those of
``purestep train`` on its config. How the members' steps run is the group's *plan*:

* ``sequential``: the group's one step, called once per member (eager: bitwise a solo
  run; compiled: the same graph a solo run compiles, reused by every member);
* ``vmap``: chunks of members stacked into one state and stepped by ``ps.vmap`` of the
  step (one call per chunk), compiled as one graph.

Vmapped eager arithmetic is not bitwise the solo step's (a batched reduction — the batch
mean of the loss, a bias gradient — sums in another order; measured on an MLP with SGD
and Adam: the first loss already differs in the last bit), and a vmapped step cannot
draw a solo run's dropout masks (one generator serves the whole chunk). So ``chunk="auto"``
vmaps only a compiled step that draws no random numbers, and only when a short timed
probe finds it faster; otherwise members run sequentially. An explicit ``chunk=N`` vmaps
anyway and the group's report says what that costs (``exact``).

A stopped member (early stopping, a NaN policy, a callback asking it to stop: tune's
pruning) freezes: its result is the state it stopped with, while the others go on.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from purestep.core.compile import compile as compile_step
from purestep.core.state import TrainState
from purestep.core.step import EvalStep, TrainStep
from purestep.core.vmap import VmappedStep, stack_states
from purestep.core.vmap import vmap as vmap_step
from purestep.data.batching import Batches
from purestep.data.datasets import DataSplit
from purestep.optim.scheduled import schedule_step
from purestep.optim.schedules import Schedule
from purestep.pytree import tree_flatten, tree_map
from purestep.train.checkpoint import LoopState
from purestep.train.config import Config, ConfigError, config_to_dict
from purestep.train.fit import (
    NAN_POLICIES,
    _Best,
    _epoch_record,
    _lrs,
    evaluate,
    fold_outputs,
    monitor_mode,
    nonfinite_at,
)
from purestep.train.init_from import initial_state as warm_initial_state
from purestep.train.metrics import MetricSet
from purestep.train.run import Experiment, build_experiment, check_monitors

__all__ = ["Callback", "GroupReport", "MemberResult", "StepCache", "monitor_of", "run_members"]

# Config keys whose values live in the state, so members differing in them share a step.
# (Other optimizer hyperparameters are constants of the rule's step as ``from_torch``
# builds it; a sweep over them makes one group per value.)
_STATE_VALUES = (("train", "seed"), ("optimizer", "lr"))

# on_epoch_end(member, epoch record, member state) -> True to stop the member.
Callback = Callable[["MemberResult", dict[str, Any], TrainState], bool | None]


@dataclass
class MemberResult:
    """One member's run: what ``purestep train`` on ``config`` would have produced.

    ``status``: ``finished`` (all epochs), ``early_stopping``, ``nan`` (``nan_policy:
    stop``), ``stopped`` (a callback stopped it: tune's pruning), or ``diverged``
    (``nan_policy: raise`` would have raised ``error``; ``state`` is then None).
    ``state`` is what ``ps.fit`` returns (the best epoch's with ``restore_best``);
    ``last`` and ``best`` are ``(state, loop)`` at the last epoch's end and at the best
    epoch's end (what a run's ``latest`` and ``best`` checkpoints hold).
    """

    index: int
    config: Config
    group: int
    status: str = "running"
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    monitor: str = "val_loss"
    mode: str = "min"
    best_value: float | None = None
    best_epoch: int | None = None
    state: TrainState | None = None
    last: tuple[TrainState, LoopState] | None = None
    best: tuple[TrainState, LoopState] | None = None


@dataclass
class GroupReport:
    """How one group ran: its members, the plan and why, and its timings."""

    index: int
    members: list[int]
    plan: str  # "sequential" or "vmap"
    chunk: int
    reason: str
    exact: str
    compiled: bool
    random: bool
    seconds: float = 0.0
    steps: int = 0
    probe: dict[str, float] | None = None

    def describe(self) -> str:
        how = "sequential" if self.plan == "sequential" else f"vmap, chunks of {self.chunk}"
        mode = "compiled" if self.compiled else "eager"
        n = len(self.members)
        who = f"{n} member{'s' if n != 1 else ''}"
        return f"{who}, {how} ({mode}): {self.reason}; exact: {self.exact}"


@dataclass
class _Data:
    """One data config's splits and batches (members with equal data configs share it)."""

    train: DataSplit
    train_data: Batches
    val_data: Batches | None
    test_data: Batches | None


class _Member:
    """A member while it trains: its state (sequential plans), loop and pending outputs."""

    def __init__(self, result: MemberResult, state: TrainState, data_key: str) -> None:
        self.result = result
        self.state = state
        self.initial_rng = state.rng
        self.data_key = data_key
        self.loop = LoopState()
        self.pending: list[tuple[Mapping[str, torch.Tensor], int | None]] = []
        self.last_good: TrainState = state
        self.best_state: TrainState | None = None
        self.plateau: tuple[Schedule, ...] | None = None
        self.plateau_monitor: str | None = None

    @property
    def running(self) -> bool:
        return self.result.status == "running"


@dataclass
class _Group:
    index: int
    cfg: Config  # the first member's: everything but the state values is the same
    exp: Experiment  # the first member's: model structure, steps, metrics
    members: list[_Member]
    data: dict[str, _Data]
    auto_compile: bool | None = None  # what train.compile: auto decided for the group

    @property
    def metrics(self) -> MetricSet | None:
        return self.exp.metrics


class StepCache:
    """Steps kept across ``run_members`` calls (tune's batches), so a group whose
    structure was seen before reuses its steps and compiled graphs and its plan."""

    def __init__(self) -> None:
        self.steps: dict[str, tuple[TrainStep, EvalStep]] = {}
        self.compiled: dict[tuple[str, str, int | None], Any] = {}
        self.plans: dict[str, tuple[str, int, str, dict[str, float] | None]] = {}


# -- grouping ----------------------------------------------------------------------------


def _state_signature(state: TrainState) -> str:
    leaves, spec = tree_flatten(state)
    return json.dumps([str(spec), [(list(t.shape), str(t.dtype)) for t in leaves]])


def _group_key(cfg: Config, exp: Experiment, state: TrainState) -> str:
    """Everything that must be equal for members to share one step function."""
    raw = config_to_dict(cfg)
    for section, key in _STATE_VALUES:
        raw[section].pop(key, None)
    # A standardised dataset's statistics scale the metrics inside the step: then the
    # data seed (which draws the data) must be equal too.
    if exp.train.standardizer is None:
        raw["data"].pop("seed", None)
    sizes = [len(exp.train), len(exp.val) if exp.val else None, len(exp.test) if exp.test else None]
    return json.dumps(
        {
            "config": raw,
            "sizes": sizes,
            "state": _state_signature(state),
            "device": str(exp.device),
        },
        sort_keys=True,
        default=str,
    )


def _data_key(cfg: Config) -> str:
    return json.dumps(config_to_dict(cfg)["data"], sort_keys=True, default=str)


def monitor_of(cfg: Config, has_val: bool) -> tuple[str, str, float]:
    """The monitored key, its mode and min_delta, as ``train_run`` + ``fit`` pick them."""
    es = cfg.early_stopping
    monitor = cfg.checkpoint.monitor or (es.monitor if es else None)
    monitor = monitor or ("val_loss" if has_val else "loss")
    mode = cfg.checkpoint.mode or (es.mode if es else None) or monitor_mode(monitor)
    if monitor.startswith("val_") and not has_val:
        raise ConfigError(f"the monitored key {monitor!r} needs validation data")
    return monitor, mode, es.min_delta if es else 0.0


def _build(
    cfgs: Sequence[Config], device: str | None, labels: Sequence[str] | None = None
) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for i, cfg in enumerate(cfgs):
        if cfg.train.nan_policy not in NAN_POLICIES:  # pragma: no cover - the schema checks
            raise ConfigError(f"train.nan_policy: {cfg.train.nan_policy!r}")
        try:
            exp = build_experiment(cfg, device=device, compile=False)
            state, _ = warm_initial_state(exp)  # train.init_from, if the config names one
            check_monitors(cfg, exp, state)
        except ConfigError as err:
            if labels is None:
                raise
            raise ConfigError(f"{err} (member {labels[i]})") from None
        key = _group_key(cfg, exp, state)
        group = groups.get(key)
        if group is None:
            group = _Group(len(groups), cfg, exp, [], {})
            groups[key] = group
        data_key = _data_key(cfg)
        if data_key not in group.data:
            group.data[data_key] = _Data(exp.train, exp.train_data, exp.val_data, exp.test_data)
        monitor, mode, _ = monitor_of(cfg, exp.val_data is not None)
        result = MemberResult(i, cfg, group.index, monitor=monitor, mode=mode)
        member = _Member(result, state, data_key)
        member.plateau = exp.optimizer.plateau
        member.plateau_monitor = exp.optimizer.plateau_monitor
        group.members.append(member)
    return list(groups.values())


def group_key_of(group: _Group) -> str:
    first = group.members[0]
    return _group_key(group.cfg, group.exp, first.state)


# -- executors ---------------------------------------------------------------------------


class _Replay:
    """An "eval step" that returns outputs computed before (one vmapped call served the
    whole chunk), so ``fit.evaluate`` reduces a member's slice exactly as a solo run's."""

    def __init__(self, outputs: list[dict[str, torch.Tensor]]) -> None:
        self._outputs: Iterator[dict[str, torch.Tensor]] = iter(outputs)

    def __call__(self, state: TrainState, batch: Any) -> dict[str, torch.Tensor]:
        del state, batch
        return next(self._outputs)


class _Sequential:
    """Every member through the group's one (compiled) step, one after another."""

    def __init__(self, group: _Group, train_step: Any, eval_step: Any) -> None:
        self.group, self.train_step, self.eval_step = group, train_step, eval_step

    def step(self, members: Sequence[_Member], batches: Mapping[str, Any]) -> None:
        for m in members:
            m.state, out = self.train_step(m.state, batches[m.data_key])
            m.pending.append((out, None))

    def state(self, m: _Member) -> TrainState:
        return m.state

    def snapshot(self, m: _Member) -> TrainState:
        return m.state  # states are immutable: keeping the reference keeps the values

    def set_state(self, m: _Member, state: TrainState) -> None:
        m.state = state

    def evaluate(self, members: Sequence[_Member], split: str) -> dict[int, dict[str, Any]]:
        out = {}
        for m in members:
            data = _split_data(self.group.data[m.data_key], split)
            assert data is not None
            out[m.result.index] = evaluate(m.state, self.eval_step, data, self.group.metrics)
        return out

    def finish(self) -> None:
        pass


def _split_data(data: _Data, split: str) -> Batches | None:
    return data.val_data if split == "val" else data.test_data


class _Chunk:
    def __init__(self, slots: list[_Member | None], keys: list[str], state: TrainState) -> None:
        self.slots, self.keys, self.state = slots, keys, state


class _Vmapped:
    """Chunks of members stacked into one state, each chunk one vmapped call per step."""

    def __init__(
        self,
        group: _Group,
        chunk: int,
        train_step: Any,
        eval_step: Any,
        random: bool,
    ) -> None:
        self.group, self.train_step, self.eval_step = group, train_step, eval_step
        self.random = random
        members = sorted(group.members, key=lambda m: m.data_key)  # homogeneous chunks
        self.chunks: list[_Chunk] = []
        self.where: dict[int, tuple[_Chunk, int]] = {}
        for start in range(0, len(members), chunk):
            part: list[_Member | None] = list(members[start : start + chunk])
            real = [m for m in part if m is not None]
            # Pad the last chunk with copies of a member (results ignored) so every chunk
            # has the same shapes: one graph per group.
            states = [m.state for m in real] + [real[-1].state] * (chunk - len(real))
            keys = [m.data_key for m in real] + [real[-1].data_key] * (chunk - len(real))
            part += [None] * (chunk - len(real))
            c = _Chunk(part, keys, stack_states(states))
            self.chunks.append(c)
            for slot, m in enumerate(part):
                if m is not None:
                    self.where[m.result.index] = (c, slot)

    def _batch(self, chunk: _Chunk, batches: Mapping[str, Any], axis: int | None) -> Any:
        if axis is None:
            return batches[chunk.keys[0]]
        per_slot = [batches[k] for k in chunk.keys]
        return tuple(torch.stack(parts) for parts in zip(*per_slot, strict=True))

    def step(self, members: Sequence[_Member], batches: Mapping[str, Any]) -> None:
        active = {m.result.index for m in members}
        axis = self.train_step.batch_axis
        for c in self.chunks:
            if not any(m is not None and m.result.index in active for m in c.slots):
                continue  # every member of the chunk has stopped: skip its work
            c.state, out = self.train_step(c.state, self._batch(c, batches, axis))
            for slot, m in enumerate(c.slots):
                if m is not None and m.result.index in active:
                    m.pending.append((out, slot))

    def state(self, m: _Member) -> TrainState:
        c, slot = self.where[m.result.index]
        state = tree_map(lambda t: t[slot], c.state)
        # The vmapped step hands every member the chunk's one generator state; a step
        # that draws nothing leaves it unchanged, so the member's own key stands.
        return state if self.random else state._replace(rng=m.initial_rng)

    def snapshot(self, m: _Member) -> TrainState:
        return tree_map(lambda t: t.clone(), self.state(m))  # not a view of the chunk

    def set_state(self, m: _Member, state: TrainState) -> None:
        c, slot = self.where[m.result.index]

        def put(stacked: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            out = stacked.clone()
            out[slot] = value
            return out

        c.state = tree_map(put, c.state, state)

    def evaluate(self, members: Sequence[_Member], split: str) -> dict[int, dict[str, Any]]:
        wanted = {m.result.index for m in members}
        axis = self.eval_step.batch_axis
        results = {}
        for c in self.chunks:
            todo = [(slot, m) for slot, m in enumerate(c.slots) if m and m.result.index in wanted]
            if not todo:
                continue
            by_key: dict[str, Batches] = {}
            for k in dict.fromkeys(c.keys):
                source = _split_data(self.group.data[k], split)
                assert source is not None
                by_key[k] = source
            outputs = []
            for parts in zip(*by_key.values(), strict=True):
                batch_of = dict(zip(by_key, parts, strict=True))
                outputs.append(self.eval_step(c.state, self._batch(c, batch_of, axis)))
            for slot, m in todo:
                mine = [{k: v[slot] for k, v in o.items()} for o in outputs]
                results[m.result.index] = evaluate(
                    self.state(m), _Replay(mine), by_key[m.data_key], self.group.metrics
                )
        return results

    def finish(self) -> None:
        for c in self.chunks:
            for m in c.slots:
                if m is not None:
                    m.state = self.state(m) if m.running else m.state


# -- planning ----------------------------------------------------------------------------


def _compiled(group: _Group) -> bool:
    """Whether the group's steps compile: ``train.compile`` as set, or ``auto`` decided
    once per group (``purestep.train.compile_choice``) over all its members' steps."""
    setting = group.cfg.train.compile
    if isinstance(setting, bool):
        return setting
    if group.auto_compile is None:
        from purestep.train.compile_choice import decide_compile, time_eager_step

        m = group.members[0]
        data = group.data[m.data_key]
        batch = next(iter(data.train_data.epoch(0)))
        steps = group.cfg.train.epochs * len(data.train_data) * len(group.members)
        group.auto_compile = decide_compile(
            steps=steps,
            eager_step_s=time_eager_step(group.exp.train_step, m.state, batch),
            n_tensors=len(m.state.params) + len(m.state.buffers),
            warm=False,
        ).compile
    return group.auto_compile


def _first_batches(group: _Group) -> dict[str, Any]:
    return {k: next(iter(d.train_data.epoch(0))) for k, d in group.data.items()}


def _draws_random(group: _Group, batches: Mapping[str, Any]) -> bool:
    """Does the step consume random numbers (dropout ...)? One eager step tells: any draw
    advances the generator state the step returns as the new key."""
    m = group.members[0]
    new, _ = group.exp.train_step(m.state, batches[m.data_key])
    return not torch.equal(new.rng, m.state.rng)


def _probe(group: _Group, batches: Mapping[str, Any], chunk: int) -> dict[str, float]:
    """Seconds per member-step, eager: the members one after another vs one vmapped call
    over ``chunk`` of them (compiling both to compare would double the compile time)."""
    step = group.exp.train_step
    members = group.members[:chunk]
    keys = {m.data_key for m in members}
    axis = None if len(keys) == 1 else 0
    vstep = vmap_step(step, batch_axis=axis)
    stacked = stack_states([m.state for m in members])
    if axis is None:
        vbatch = batches[members[0].data_key]
    else:
        vbatch = tuple(
            torch.stack(p) for p in zip(*(batches[m.data_key] for m in members), strict=True)
        )

    def sequential() -> None:
        for m in members:
            step(m.state, batches[m.data_key])

    def vmapped() -> None:
        vstep(stacked, vbatch)

    sequential()  # warm-up (allocator, lazy init)
    vmapped()
    best = {"sequential": math.inf, "vmap": math.inf}
    started = time.perf_counter()
    for rounds in range(1, 6):  # interleaved: a load spike hits both sides alike
        for name, fn in (("sequential", sequential), ("vmap", vmapped)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - t) / len(members))
        if rounds >= 2 and time.perf_counter() - started > 1.0:
            break
    return best


def _plan(
    group: _Group, chunk: int | str, cache: StepCache | None
) -> tuple[str, int, str, dict[str, float] | None, bool]:
    """``(plan, chunk, reason, probe, random)`` for a group."""
    k = len(group.members)
    compiled = _compiled(group)
    batches = _first_batches(group)
    random = _draws_random(group, batches)
    if k == 1 or chunk == 1:
        return "sequential", 1, "one member" if k == 1 else "--chunk 1", None, random
    if isinstance(chunk, int):
        n = min(chunk, k)
        return "vmap", n, f"--chunk {chunk}", None, random
    if random:
        reason = (
            "the step draws random numbers (dropout ...): vmapped members cannot draw the "
            "masks a solo run draws, so they run one after another"
        )
        return "sequential", 1, reason, None, random
    if not compiled:
        reason = (
            "eager: vmapped arithmetic is not bitwise the solo step's (batched reductions "
            "round differently), so members run one after another and stay bitwise"
        )
        return "sequential", 1, reason, None, random
    # An earlier round of the same group (tune) decided already: keep its plan and chunk
    # size (a smaller round is padded), so its compiled graph serves again.
    cache_key = group_key_of(group)
    if cache is not None and cache_key in cache.plans:
        plan, n, reason, probe = cache.plans[cache_key]
        return plan, n, reason + " (plan kept from an earlier round)", probe, random
    probe = _probe(group, batches, k)
    ratio = probe["sequential"] / probe["vmap"]
    timing = (
        f"probe (eager, per member-step): sequential {probe['sequential'] * 1e3:.3g} ms, "
        f"vmap of {k} {probe['vmap'] * 1e3:.3g} ms = {ratio:.2f}x"
    )
    plan, n = ("vmap", k) if ratio > 1.0 else ("sequential", 1)
    reason = timing + (" -> vmap" if plan == "vmap" else " -> sequential (vmap is no faster)")
    if cache is not None:
        cache.plans[cache_key] = (plan, n, reason, probe)
    return plan, n, reason, probe, random


def _exact(plan: str, compiled: bool, random: bool) -> str:
    if plan == "sequential":
        return "compiled per-step tolerance" if compiled else "bitwise"
    if random:
        return "no: vmapped members draw other random numbers than solo runs"
    if compiled:
        return "compiled per-step tolerance"
    return "no: eager vmapped arithmetic rounds differently (within float tolerance)"


def _executor(
    group: _Group, plan: str, chunk: int, random: bool, cache: StepCache | None
) -> _Sequential | _Vmapped:
    compiled = _compiled(group)
    gkey = group_key_of(group)
    steps = cache.steps.get(gkey) if cache is not None else None
    if steps is None:
        steps = (group.exp.train_step, group.exp.eval_step)
        if cache is not None:
            cache.steps[gkey] = steps
    train_step, eval_step = steps
    if plan == "sequential":
        if compiled:
            train_step = _cached(cache, (gkey, "train", None), lambda: compile_step(train_step))
            eval_step = _cached(cache, (gkey, "eval", None), lambda: compile_step(eval_step))
        return _Sequential(group, train_step, eval_step)
    keys = sorted(m.data_key for m in group.members)
    mixed = any(len(set(keys[i : i + chunk])) > 1 for i in range(0, len(keys), chunk))
    axis = 0 if mixed else None

    def make(step: Any) -> VmappedStep:
        v = vmap_step(step, batch_axis=axis)
        return compile_step(v) if compiled else v

    vtrain = _cached(cache, (gkey, f"vtrain{axis}", chunk), lambda: make(train_step))
    veval = _cached(cache, (gkey, f"veval{axis}", chunk), lambda: make(eval_step))
    return _Vmapped(group, chunk, vtrain, veval, random)


def _cached(cache: StepCache | None, key: tuple[str, str, int | None], make: Any) -> Any:
    if cache is None:
        return make()
    if key not in cache.compiled:
        cache.compiled[key] = make()
    return cache.compiled[key]


# -- the lockstep loop -------------------------------------------------------------------


class _Diverged(Exception):
    pass


def _flush(m: _Member, ex: _Sequential | _Vmapped, stat_keys: Sequence[str], policy: str) -> None:
    """``fit``'s flush for one member: fold its pending step outputs into the epoch's
    values, then apply the NaN policy (raise -> the member diverged; stop -> last good)."""
    if not m.pending:
        return
    loop = m.loop

    slot = m.pending[0][1]

    def column(key: str) -> torch.Tensor:
        values = torch.stack([o[key] for o, _ in m.pending])
        return values if slot is None else values.select(1, slot).contiguous()

    losses = fold_outputs(loop, column, stat_keys, list(m.pending[0][0]))
    m.pending.clear()
    where = nonfinite_at(loop, losses) if policy != "skip" else None
    if where is not None:
        raise _Diverged(f"non-finite training loss ({where[1]}) at {where[0]}")
    if policy == "stop":
        state = ex.state(m)
        if all(bool(p.isfinite().all()) for p in state.params.values()):
            m.last_good = ex.snapshot(m)


def _loop_snapshot(loop: LoopState) -> LoopState:
    """The loop at an epoch's end (what a checkpoint saved then holds)."""
    return LoopState(
        epoch=loop.epoch,
        batch=loop.batch,
        step=loop.step,
        history=list(loop.history),
        best_value=loop.best_value,
        best_epoch=loop.best_epoch,
        bad_epochs=loop.bad_epochs,
        seconds=0.0,
        finished=loop.finished,
        stop_reason=loop.stop_reason,
    )


def _stop(m: _Member, ex: _Sequential | _Vmapped, status: str, error: str | None = None) -> None:
    """Freeze a member: its result is what it has now."""
    res = m.result
    res.status, res.error = status, error
    if status == "diverged":
        return
    if status == "nan":
        m.state = m.last_good
        m.loop.stop_reason = "nan"
        m.loop.finished = True
    else:
        m.state = ex.snapshot(m)


def _train_group(
    group: _Group,
    ex: _Sequential | _Vmapped,
    callback: Callback | None,
    print_fn: Callable[[str], None] | None,
) -> int:
    """Train every member of ``group`` to its end; returns the steps taken."""
    cfg = group.cfg
    epochs, log_every, policy = cfg.train.epochs, cfg.train.log_every, cfg.train.nan_policy
    loss_scale = float(cfg.train.accumulation_steps)
    metrics = group.metrics
    stat_keys = metrics.stat_keys if metrics is not None else ()
    es = cfg.early_stopping
    has_val = group.exp.val_data is not None
    _, _, min_delta = monitor_of(cfg, has_val)
    best = {}
    for m in group.members:
        m.last_good = m.state
        best[m.result.index] = _Best(m.result.monitor, m.result.mode, min_delta, m.loop)
    steps = 0
    for epoch in range(epochs):
        active = [m for m in group.members if m.running]
        if not active:
            break
        started = time.perf_counter()
        keys = list(dict.fromkeys(m.data_key for m in active))
        epochs_of = [group.data[k].train_data.epoch(epoch) for k in keys]
        for parts in zip(*epochs_of, strict=True):
            ex.step(active, dict(zip(keys, parts, strict=True)))
            steps += 1
            for m in active:
                m.loop.batch += 1
                m.loop.step += 1
                if m.loop.batch % log_every == 0:
                    _guarded_flush(m, ex, stat_keys, policy)
            active = [m for m in active if m.running]
            if not active:
                break
        for m in active:
            _guarded_flush(m, ex, stat_keys, policy)
        active = [m for m in active if m.running]
        val = ex.evaluate(active, "val") if has_val and active else {}
        for m in active:
            record = _epoch_record(m.loop, metrics, policy, loss_scale)
            if has_val:
                record |= {f"val_{k}": v for k, v in val[m.result.index].items()}
            state = ex.state(m)
            record |= _lrs(state.opt_state)
            record["seconds"] = time.perf_counter() - started
            if m.plateau is not None:
                monitor = m.plateau_monitor or ("val_loss" if has_val else "loss")
                value = record.get(monitor)
                if value is None:
                    raise ConfigError(f"ReduceLROnPlateau monitors {monitor!r}, not logged")
                state = state._replace(
                    opt_state=schedule_step(state.opt_state, m.plateau, float(value))
                )
                ex.set_state(m, state)
            try:
                improved = best[m.result.index].update(record)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            loop = m.loop
            loop.history.append(record)
            loop.epoch, loop.batch, loop.seconds = epoch + 1, 0, 0.0
            loop.losses, loop.stats, loop.values = None, {}, {}
            if es is not None and loop.bad_epochs >= max(1, es.patience):
                loop.stop_reason = "early_stopping"
            loop.finished = loop.epoch >= epochs or loop.stop_reason is not None
            snap = ex.snapshot(m)
            m.result.last = (snap, _loop_snapshot(loop))
            if improved:
                m.result.best = m.result.last
                m.best_state = snap
            if loop.stop_reason == "early_stopping":
                _stop(m, ex, "early_stopping")
            elif callback is not None and callback(m.result, record, snap):
                loop.stop_reason = "stopped"
                _stop(m, ex, "stopped")
        if print_fn is not None:
            print_fn(_epoch_line(group, epoch + 1, epochs, time.perf_counter() - started))
    ex.finish()
    for m in group.members:
        if m.running:
            m.result.status = "finished"
    return steps


def _guarded_flush(
    m: _Member, ex: _Sequential | _Vmapped, stat_keys: Sequence[str], policy: str
) -> None:
    try:
        _flush(m, ex, stat_keys, policy)
    except _Diverged as err:
        if policy == "raise":
            _stop(m, ex, "diverged", f"{err}; no checkpoint of this state was written")
        else:
            _stop(m, ex, "nan", str(err))


def _epoch_line(group: _Group, epoch: int, epochs: int, seconds: float) -> str:
    done = [m for m in group.members if m.result.history]
    running = sum(m.running for m in group.members)
    parts = [f"group {group.index + 1} epoch {epoch}/{epochs} ({seconds:.1f} s)"]
    if done:
        m0 = done[0].result
        key = m0.monitor
        values = [
            (float(v), m.result.index)
            for m in done
            if isinstance(v := m.result.history[-1].get(key), int | float)
        ]
        if values:
            pick = min if m0.mode == "min" else max
            value, index = pick(values, key=lambda v: v[0])
            parts.append(f"best {key} {value:.4g} (member {index})")
    parts.append(f"{running}/{len(group.members)} running")
    return "  ".join(parts)


def _finalise(m: _Member) -> None:
    res = m.result
    res.history = list(m.loop.history)
    res.best_value, res.best_epoch = m.loop.best_value, m.loop.best_epoch
    if res.status == "diverged":
        res.state = None
        return
    state = m.state
    es = res.config.early_stopping
    if es is not None and es.restore_best and m.loop.best_epoch is not None:
        assert m.best_state is not None
        state = m.best_state
    res.state = state


def run_members(
    cfgs: Sequence[Config],
    *,
    chunk: int | str = "auto",
    device: str | None = None,
    callback: Callback | None = None,
    cache: StepCache | None = None,
    labels: Sequence[str] | None = None,
    print_fn: Callable[[str], None] | None = None,
) -> tuple[list[MemberResult], list[GroupReport]]:
    """Train every config (see the module docstring); results in the order given.
    ``labels`` name the members in error messages (their settings)."""
    if chunk != "auto" and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ConfigError(f"--chunk: expected 'auto' or a positive integer, got {chunk!r}")
    groups = _build(cfgs, device, labels)
    reports: list[GroupReport] = []
    for group in groups:
        plan, n, reason, probe, random = _plan(group, chunk, cache)
        compiled = _compiled(group)
        report = GroupReport(
            group.index,
            [m.result.index for m in group.members],
            plan,
            n,
            reason,
            _exact(plan, compiled, random),
            compiled,
            random,
            probe=probe,
        )
        if print_fn is not None:
            print_fn(f"group {group.index + 1}/{len(groups)}: {report.describe()}")
        started = time.perf_counter()
        ex = _executor(group, plan, n, random, cache)
        report.steps = _train_group(group, ex, callback, print_fn)
        report.seconds = time.perf_counter() - started
        for m in group.members:
            _finalise(m)
        reports.append(report)
    results = sorted((m.result for g in groups for m in g.members), key=lambda r: r.index)
    return results, reports
