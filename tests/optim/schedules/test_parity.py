"""500 scheduler steps: every schedule's lr sequence is bitwise torch's, 1-3 param groups.

A real ``torch.optim.SGD`` with one group per base lr is driven by the torch scheduler; our
``Schedule`` drives each group (``init`` then ``step``). Where torch raises mid-run
(``OneCycleLR`` stepped past ``total_steps``, a 0/0 phase) ours raises the same exception
at the same step.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim.lr_scheduler import ReduceLROnPlateau

import purestep.optim.schedules as S
from tests.optim.schedules.harness import assert_same, run_ours, run_torch
from tests.optim.schedules.specs import LRS, PLATEAU_KWARGS, SPECS, floats
from tests.support import examples

STEPS = 500


@st.composite
def setups(draw: st.DrawFn, name: str) -> tuple[list[float], dict]:
    lrs = draw(st.lists(LRS, min_size=1, max_size=3))
    return lrs, draw(SPECS[name].kwargs(len(lrs)))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_500_steps_bitwise_equal_to_torch(name):
    spec = SPECS[name]

    @settings(max_examples=examples(20, 200))
    @given(setup=setups(name))
    def check(setup):
        lrs, kw = setup
        expected = run_torch(lrs, lambda opt: spec.make_torch(opt, kw), STEPS)
        got = run_ours(lrs, [spec.make_ours(kw, g) for g in range(len(lrs))], STEPS)
        assert_same(expected, got)

    check()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_tensor_lr_in_eager_code_is_also_bitwise(name):
    """The lr as a 0-d float64 tensor (state read as Python numbers): same bits."""
    spec = SPECS[name]
    lrs = [0.1, 0.03]
    kw = spec.example_kwargs(len(lrs))
    expected = run_torch(lrs, lambda opt: spec.make_torch(opt, kw), 150)
    schedules = [spec.make_ours(kw, g) for g in range(len(lrs))]
    assert_same(expected, run_ours(lrs, schedules, 150, as_tensor=True))


def metric_sequences() -> st.SearchStrategy[list[float]]:
    """Metrics with plateaus: runs of repeated values, small and large moves, infinities,
    NaN (never an improvement, in torch as here)."""
    value = floats(-10.0, 10.0) | st.sampled_from(
        [0.0, 1.0, 1.0001, float("inf"), -float("inf"), float("nan")]
    )
    run = st.tuples(value, st.integers(1, 12))
    return st.lists(run, min_size=1, max_size=120).map(
        lambda runs: [v for v, k in runs for _ in range(k)][:STEPS]
    )


@settings(max_examples=examples(60, 500))
@given(
    lrs=st.lists(LRS, min_size=1, max_size=3),
    kw=PLATEAU_KWARGS,
    min_lr=st.lists(floats(0.0, 1e-3) | st.just(0), min_size=3, max_size=3),
    metrics=metric_sequences(),
)
def test_reduce_on_plateau_bitwise_equal_to_torch(lrs, kw, min_lr, metrics):
    min_lrs = min_lr[: len(lrs)]
    expected = run_torch(
        lrs,
        lambda opt: ReduceLROnPlateau(opt, **kw, min_lr=min_lrs),
        len(metrics),
        metrics,
    )
    ours = [S.reduce_on_plateau(**kw, min_lr=m) for m in min_lrs]
    assert_same(expected, run_ours(lrs, ours, len(metrics), metrics))
    assert_same(expected, run_ours(lrs, ours, len(metrics), metrics, as_tensor=True))


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
def test_reduce_on_plateau_patience_counted_as_torch(mode, threshold_mode):
    """A long plateau: reductions exactly every patience + 1 + cooldown steps, as torch."""
    metrics = [5.0] * 60
    kw = {"mode": mode, "threshold_mode": threshold_mode, "patience": 3, "cooldown": 2}
    expected = run_torch([1.0], lambda o: ReduceLROnPlateau(o, **kw), 60, metrics)
    got = run_ours([1.0], [S.reduce_on_plateau(**kw)], 60, metrics)
    assert_same(expected, got)
    lrs = [row[0] for row in got[0]]
    changes = [t for t in range(1, 61) if lrs[t] != lrs[t - 1]]
    # step 1 sets best; 4 bad epochs (> patience 3) reduce at 5; 2 cooldown steps; repeat,
    # until a reduction would be smaller than eps (1e-8 -> 1e-9).
    assert changes == [5, 11, 17, 23, 29, 35, 41, 47]
