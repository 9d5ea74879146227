"""The tensor path (state and lr as 0-d tensors) against the eager Python-number path.

* ``torch.compile(fullgraph=True)`` of ``step`` (CPU, inductor): one graph, no recompile
  over 50 steps, and bitwise the eager lrs (inductor's ``cos``/``pow`` are libm's, like
  Python's ``math.cos``/``**``).
* ``torch.func.vmap`` of ``step`` over a batch of base lrs (eager tensor ops): bitwise for
  every schedule without a cosine; cosine schedules within ``rtol=1e-12`` (+ ``1e-12 *
  base_lr`` absolute), because eager ``torch.cos`` on the CPU is SLEEF's (1 ulp) rather than
  libm's. Observed: <= 9e-16 relative over 500 steps.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from torch.utils._pytree import tree_map

import purestep.optim.schedules as S
from purestep._compat import counters
from tests.optim.schedules.harness import same
from tests.optim.schedules.specs import PLATEAU_KWARGS, SPECS
from tests.support import examples

METRICS = [1.0, 0.9, 0.9, 0.95, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.81] * 50
COSINE = {"cosine_annealing_lr", "cosine_annealing_warm_restarts", "one_cycle_lr", "sequential"}


def composite(name: str, group: int = 0) -> S.Schedule:
    if name == "plateau":
        return S.reduce_on_plateau(patience=2, cooldown=1, threshold_mode="abs")
    if name == "sequential":
        return S.sequential_lr(
            [S.linear_lr(0.1, 1.0, 5), S.cosine_annealing_lr(10, 1e-4), S.step_lr(3, 0.5)],
            [5, 20],
        )
    if name == "chained":
        return S.chained_scheduler([S.constant_lr(0.5, 10), S.multi_step_lr([3, 8, 8], 0.5)])
    spec = SPECS[name]
    return spec.make_ours(spec.example_kwargs(group + 1), group)


def metric_for(name: str, t: int, tensor: bool) -> Any:
    if name != "plateau":
        return None
    return torch.tensor(METRICS[t], dtype=torch.float64) if tensor else METRICS[t]


def eager_lrs(schedule: S.Schedule, name: str, base_lr: float, steps: int) -> list[float]:
    state, lr = schedule.init(base_lr, base_lr)
    out = []
    for t in range(steps):
        state, lr = schedule.step(state, lr, metric_for(name, t, False))
        out.append(lr)
    return out


FAST_COMPILE = ["cosine_annealing_lr", "one_cycle_lr", "plateau", "sequential"]
ALL_NAMES = [*sorted(SPECS), "plateau", "sequential", "chained"]


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_COMPILE else pytest.param(n, marks=pytest.mark.slow) for n in ALL_NAMES],
)
def test_compiled_step_is_bitwise_eager_with_no_recompiles(name):
    schedule = composite(name)
    expected = eager_lrs(schedule, name, 0.1, 50)
    torch.compiler.reset()
    step = torch.compile(schedule.step, fullgraph=True)
    state, lr = schedule.init(0.1, 0.1)
    lr = torch.tensor(lr, dtype=torch.float64)
    state, lr = step(state, lr, metric_for(name, 0, True))  # the one compilation
    got = [lr.item()]
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in range(1, 50):
            state, lr = step(state, lr, metric_for(name, t, True))
            got.append(lr.item())
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 0
    assert all(same(a, b) for a, b in zip(expected, got, strict=True)), (expected, got)


def vmapped_lrs(schedule: S.Schedule, name: str, bases: list[float], steps: int):
    inits = [schedule.init(b, b) for b in bases]
    states = tree_map(lambda *xs: torch.stack(xs), *[s for s, _ in inits])
    lrs = torch.tensor([lr for _, lr in inits], dtype=torch.float64)
    step = torch.func.vmap(schedule.step, in_dims=(0, 0, 0 if name == "plateau" else None))
    out = []
    for t in range(steps):
        metric = metric_for(name, t, True)
        if metric is not None:
            metric = metric.expand(len(bases))
        states, lrs = step(states, lrs, metric)
        out.append(lrs.tolist())
    return [[row[i] for row in out] for i in range(len(bases))]


def check_vmap(schedule: S.Schedule, name: str, steps: int) -> None:
    bases = [0.1, 0.37, 1e-3, 2.5]
    got = vmapped_lrs(schedule, name, bases, steps)
    for base, row in zip(bases, got, strict=True):
        expected = eager_lrs(schedule, name, base, steps)
        if name in COSINE:
            for a, b in zip(expected, row, strict=True):
                assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12 * base) or same(a, b)
        else:
            assert all(same(a, b) for a, b in zip(expected, row, strict=True)), (expected, row)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_vmap_over_base_lrs_matches_eager(name):
    check_vmap(composite(name), name, 150)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_vmap_random_arguments(name):
    spec = SPECS[name]

    @settings(max_examples=examples(3, 40))
    @given(kw=spec.kwargs(1))
    def check(kw):
        schedule = spec.make_ours(kw, 0)
        kw_steps = min(300, kw["total_steps"]) if name == "one_cycle_lr" else 300
        try:
            eager_lrs(schedule, name, 0.1, kw_steps)
        except ZeroDivisionError:
            return  # torch raises too (a 0/0 phase); the tensor path gives nan
        check_vmap(schedule, name, kw_steps)

    check()


@settings(max_examples=examples(5, 40))
@given(kw=PLATEAU_KWARGS)
def test_vmap_plateau_random_arguments(kw):
    check_vmap(S.reduce_on_plateau(**kw), "plateau", 200)


def test_lr_lambda_gets_an_int_eagerly_and_a_float64_tensor_otherwise():
    seen = []

    def lr_lambda(epoch):
        seen.append(epoch.dtype if isinstance(epoch, torch.Tensor) else type(epoch))
        return 0.9**epoch

    schedule = S.lambda_lr(lr_lambda)
    state, lr = schedule.init(0.1, 0.1)
    schedule.step(state, lr, None)
    batched = tree_map(lambda x: x.expand(2), state)
    torch.func.vmap(schedule.step, in_dims=(0, 0, None))(
        batched, torch.full((2,), lr, dtype=torch.float64), None
    )
    # First: the construction-time probe on a value-less (meta) epoch (can it be traced?).
    assert seen == [torch.float64, int, int, torch.float64]


def tensor_lrs(schedule: S.Schedule, name: str, base: float, steps: int, device: str):
    """Init eagerly, move the state to ``device``, then step with the lr/metric as tensors
    there."""
    state, lr = schedule.init(base, base)
    state = tree_map(lambda t: t.to(device), state)
    lr = torch.tensor(float(lr), dtype=torch.float64, device=device)
    out = []
    for t in range(steps):
        metric = metric_for(name, t, True)
        state, lr = schedule.step(state, lr, None if metric is None else metric.to(device))
        assert isinstance(lr, torch.Tensor) and lr.device.type == torch.device(device).type
        out.append(lr.item())
    return out


@pytest.mark.parametrize("name", ALL_NAMES)
def test_pure_tensor_path_on_cpu(name, monkeypatch):
    """State values read as tensors even in eager CPU code (as off the CPU): bitwise, but for
    eager ``torch.cos`` (SLEEF) in the cosine schedules."""
    import purestep.optim.schedules._ops as ops_module

    schedule = composite(name)
    expected = eager_lrs(schedule, name, 0.1, 150)
    monkeypatch.setattr(ops_module, "host_value", lambda t: t)
    got = tensor_lrs(schedule, name, 0.1, 150, "cpu")
    for a, b in zip(expected, got, strict=True):
        if name in COSINE:
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-13) or same(a, b)
        else:
            assert same(a, b), (expected, got)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL_NAMES)
def test_cuda_matches_eager_up_to_rounding(name):
    """On CUDA (cos, pow and division by a scalar round differently there): rtol 1e-12."""
    schedule = composite(name)
    expected = eager_lrs(schedule, name, 0.1, 150)
    got = tensor_lrs(schedule, name, 0.1, 150, "cuda")
    for a, b in zip(expected, got, strict=True):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-13) or same(a, b)
