"""A torch scheduler stepped 37 times, converted with schedule_from_torch +
schedule_state_from_torch, continues 50 steps bitwise equal to torch's."""

from __future__ import annotations

import pytest
import torch
import torch.optim.lr_scheduler as tls
from hypothesis import given, settings
from hypothesis import strategies as st

import purestep.optim.schedules as S
from tests.optim.schedules.harness import (
    assert_same,
    group_lrs,
    optimizer,
    run_torch,
    step_torch,
)
from tests.optim.schedules.specs import LRS, PLATEAU_KWARGS, SPECS, floats
from tests.support import examples

BEFORE, AFTER = 37, 50


def continue_both(opt, sched, metrics=None):
    """Step torch BEFORE times, convert, then step both AFTER times."""
    metrics = metrics or [None] * (BEFORE + AFTER)
    for t in range(BEFORE):
        step_torch(opt, sched, metrics[t])
    schedules = S.schedule_from_torch(sched)
    states = [S.schedule_state_from_torch(sched, g) for g in range(len(schedules))]
    lrs = group_lrs(opt)
    expected, got = [list(lrs)], [list(lrs)]
    for t in range(BEFORE, BEFORE + AFTER):
        step_torch(opt, sched, metrics[t])
        expected.append(group_lrs(opt))
        for g, schedule in enumerate(schedules):
            states[g], lrs[g] = schedule.step(states[g], lrs[g], metrics[t])
        got.append(list(lrs))
    assert_same((expected, None), (got, None))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_continue_every_schedule(name):
    spec = SPECS[name]

    @settings(max_examples=examples(8, 80))
    @given(lrs=st.lists(LRS, min_size=1, max_size=3), data=st.data())
    def check(lrs, data):
        kw = data.draw(spec.kwargs(len(lrs)))
        if name == "one_cycle_lr":
            kw["total_steps"] = max(kw["total_steps"], BEFORE + AFTER)
        make = lambda opt: spec.make_torch(opt, kw)  # noqa: E731
        if run_torch(lrs, make, BEFORE + AFTER)[1] is not None:
            return  # an argument draw torch itself fails on (a 0/0 OneCycleLR phase)
        opt = optimizer(lrs)
        sched = make(opt)
        continue_both(opt, sched)

    check()


@settings(max_examples=examples(15, 150))
@given(
    lrs=st.lists(LRS, min_size=1, max_size=3),
    kw=PLATEAU_KWARGS,
    metrics=st.lists(
        floats(0.0, 2.0) | st.sampled_from([1.0, 0.5]), min_size=BEFORE + AFTER, max_size=87
    ),
)
def test_continue_reduce_on_plateau(lrs, kw, metrics):
    opt = optimizer(lrs)
    continue_both(opt, tls.ReduceLROnPlateau(opt, **kw, min_lr=[1e-4] * len(lrs)), metrics)


def test_continue_sequential_and_chained():
    opt = optimizer([0.1, 0.5])
    warm = tls.LinearLR(opt, start_factor=0.1, total_iters=10)
    cos = tls.CosineAnnealingWarmRestarts(opt, T_0=6, T_mult=2, eta_min=1e-4)
    seq = tls.SequentialLR(opt, [warm, cos], milestones=[20])
    chained = tls.ChainedScheduler([seq, tls.MultiStepLR(opt, [30, 45, 70], gamma=0.5)])
    continue_both(opt, chained)


def test_unsupported_classes_are_named():
    opt = optimizer([0.1])
    cyclic = tls.CyclicLR(opt, base_lr=0.01, max_lr=0.1, cycle_momentum=False)
    with pytest.raises(ValueError, match="no Schedule for CyclicLR"):
        S.schedule_from_torch(cyclic)
    with pytest.raises(ValueError, match="no Schedule for CyclicLR"):
        S.schedule_state_from_torch(cyclic, 0)

    class MyStepLR(tls.StepLR):
        pass

    with pytest.raises(ValueError, match="no Schedule for MyStepLR"):
        S.schedule_from_torch(MyStepLR(optimizer([0.1]), step_size=3))


def test_one_cycle_cycling_momentum_converts_with_its_momentum():
    """torch's default OneCycleLR (cycle_momentum=True) converts; the schedule drives the
    momentum from the group's own max/base momentum (test_one_cycle_momentum runs it)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    sched = tls.OneCycleLR(opt, max_lr=1.0, total_steps=100, base_momentum=0.8)
    (schedule,) = S.schedule_from_torch(sched)
    assert schedule.momentum is not None
    assert S.cycles_momentum(sched) and not S.cycles_momentum(tls.StepLR(opt, 3))
    state = S.schedule_state_from_torch(sched, 0)
    assert schedule.momentum(state) == opt.param_groups[0]["momentum"]
