"""SequentialLR and ChainedScheduler: random children, 500 steps, bitwise torch's lrs.

The children are constructed on the torch optimizer in list order (each doing its initial
step, as user code does), then wrapped; ours mirror that in ``init``.
"""

from __future__ import annotations

import pytest
import torch.optim.lr_scheduler as tls
from hypothesis import given, settings
from hypothesis import strategies as st

import purestep.optim.schedules as S
from purestep.core.pytree import tree_bitwise_equal
from tests.optim.schedules.harness import assert_same, optimizer, run_ours, run_torch
from tests.optim.schedules.specs import LRS, SPECS
from tests.support import examples

STEPS = 500


@st.composite
def children(draw: st.DrawFn, n_groups: int, max_size: int = 4) -> list:
    names = draw(
        st.lists(st.sampled_from(sorted(SPECS)), min_size=1, max_size=max_size).filter(
            lambda names: names.count("one_cycle_lr") <= 1  # see test_validation
        )
    )
    return [(name, draw(SPECS[name].kwargs(n_groups))) for name in names]


def torch_children(opt, kids):
    return [SPECS[name].make_torch(opt, kw) for name, kw in kids]


def our_children(kids, group):
    return [SPECS[name].make_ours(kw, group) for name, kw in kids]


@st.composite
def sequential_setups(draw: st.DrawFn):
    lrs = draw(st.lists(LRS, min_size=1, max_size=3))
    kids = draw(children(len(lrs)))
    milestones = sorted(
        draw(st.lists(st.integers(-2, 520), min_size=len(kids) - 1, max_size=len(kids) - 1))
    )
    return lrs, kids, milestones


@settings(max_examples=examples(40, 300))
@given(setup=sequential_setups())
def test_sequential_lr_bitwise_equal_to_torch(setup):
    lrs, kids, milestones = setup
    expected = run_torch(
        lrs, lambda opt: tls.SequentialLR(opt, torch_children(opt, kids), milestones), STEPS
    )
    ours = [S.sequential_lr(our_children(kids, g), milestones) for g in range(len(lrs))]
    assert_same(expected, run_ours(lrs, ours, STEPS))


@settings(max_examples=examples(40, 300))
@given(data=st.data(), lrs=st.lists(LRS, min_size=1, max_size=3))
def test_chained_scheduler_bitwise_equal_to_torch(data, lrs):
    kids = data.draw(children(len(lrs)))
    expected = run_torch(lrs, lambda opt: tls.ChainedScheduler(torch_children(opt, kids)), STEPS)
    ours = [S.chained_scheduler(our_children(kids, g)) for g in range(len(lrs))]
    assert_same(expected, run_ours(lrs, ours, STEPS))


def test_nested_sequential_in_chained_and_one_cycle_overriding_the_base_lr():
    """ChainedScheduler([ConstantLR, SequentialLR([LinearLR, OneCycleLR]), ExponentialLR]):
    the SequentialLR resets the lr ConstantLR set; OneCycleLR (constructed inside it)
    rewrites the group's initial_lr, which LinearLR's re-run and ExponentialLR see."""
    lrs = [0.3, 0.02]

    def make_torch(opt):
        const = tls.ConstantLR(opt, factor=0.5, total_iters=7)
        lin = tls.LinearLR(opt, start_factor=0.25, total_iters=10)
        cyc = tls.OneCycleLR(opt, max_lr=[1.0, 0.1], total_steps=400, cycle_momentum=False)
        seq = tls.SequentialLR(opt, [lin, cyc], milestones=[30])
        return tls.ChainedScheduler([const, seq, tls.ExponentialLR(opt, gamma=0.999)])

    def ours(g):
        seq = S.sequential_lr(
            [
                S.linear_lr(start_factor=0.25, total_iters=10),
                S.one_cycle_lr(max_lr=[1.0, 0.1][g], total_steps=400, cycle_momentum=False),
            ],
            milestones=[30],
        )
        return S.chained_scheduler(
            [S.constant_lr(factor=0.5, total_iters=7), seq, S.exponential_lr(gamma=0.999)]
        )

    expected = run_torch(lrs, make_torch, 300)
    assert_same(expected, run_ours(lrs, [ours(g) for g in range(2)], 300))


@pytest.mark.parametrize("composite", ["sequential", "chained"])
def test_init_state_equals_the_converted_torch_state(composite):
    """Right after construction our state is the torch scheduler's, read by
    schedule_state_from_torch (last_epochs after SequentialLR's undo/redo included)."""
    names = ["cosine_annealing_warm_restarts", "step_lr", "one_cycle_lr", "lambda_lr"]
    opt = optimizer([0.1, 0.2])
    kws = {n: SPECS[n].example_kwargs(2) for n in names}
    kids = [SPECS[n].make_torch(opt, kws[n]) for n in names]
    if composite == "sequential":
        sched = tls.SequentialLR(opt, kids, milestones=[5, 9, 20])
    else:
        sched = tls.ChainedScheduler(kids)
    for g, lr in enumerate([0.1, 0.2]):
        ours = [SPECS[n].make_ours(kws[n], g) for n in names]
        schedule = (
            S.sequential_lr(ours, [5, 9, 20])
            if composite == "sequential"
            else S.chained_scheduler(ours)
        )
        state, new_lr = schedule.init(lr, lr)
        assert tree_bitwise_equal(state, S.schedule_state_from_torch(sched, g))
        assert new_lr == opt.param_groups[g]["lr"]


@pytest.mark.parametrize("milestones", [[0, 12], [-1, 0], [-3, 5], [0, 0]])
def test_sequential_lr_milestones_at_or_before_epoch_zero(milestones):
    """torch's SequentialLR re-runs the initial step of the child active at epoch 0, which is
    not the first one when a milestone is <= 0."""
    lrs = [0.2, 0.01]

    def make_torch(opt):
        kids = [
            tls.ConstantLR(opt, factor=0.5, total_iters=4),
            tls.LinearLR(opt, start_factor=0.3, total_iters=6),
            tls.MultiplicativeLR(opt, lr_lambda=lambda e: 0.97),
        ]
        return tls.SequentialLR(opt, kids, milestones)

    ours = S.sequential_lr(
        [
            S.constant_lr(factor=0.5, total_iters=4),
            S.linear_lr(start_factor=0.3, total_iters=6),
            S.multiplicative_lr(lambda e: 0.97),
        ],
        milestones,
    )
    assert_same(run_torch(lrs, make_torch, 40), run_ours(lrs, [ours, ours], 40))
