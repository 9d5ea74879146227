"""Every argument torch.optim.lr_scheduler rejects is rejected with the same ValueError
message; non-numbers raise TypeError naming the argument; the signatures match torch's."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
import torch.optim.lr_scheduler as tls

import purestep.optim.schedules as S
from tests.optim.schedules.harness import optimizer

OFF = {"cycle_momentum": False}
ONE_CYCLE = S.one_cycle_lr(0.1, 100, cycle_momentum=False)
# (our factory, torch class, kwargs), torch's constructor raising ValueError on each.
CASES = [
    ("linear_lr", "LinearLR", {"start_factor": 0}),
    ("linear_lr", "LinearLR", {"start_factor": 1.5}),
    ("linear_lr", "LinearLR", {"start_factor": -0.5}),
    ("linear_lr", "LinearLR", {"end_factor": -0.1}),
    ("linear_lr", "LinearLR", {"end_factor": 1.01}),
    ("constant_lr", "ConstantLR", {"factor": 1.5}),
    ("constant_lr", "ConstantLR", {"factor": -0.1}),
    ("cosine_annealing_warm_restarts", "CosineAnnealingWarmRestarts", {"T_0": 0}),
    ("cosine_annealing_warm_restarts", "CosineAnnealingWarmRestarts", {"T_0": -3}),
    ("cosine_annealing_warm_restarts", "CosineAnnealingWarmRestarts", {"T_0": 2.5}),
    ("cosine_annealing_warm_restarts", "CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 0}),
    ("cosine_annealing_warm_restarts", "CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 1.5}),
    (
        "cosine_annealing_warm_restarts",
        "CosineAnnealingWarmRestarts",
        {"T_0": 5, "eta_min": "0"},
    ),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "total_steps": 0, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "total_steps": -4, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "total_steps": 10.0, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "epochs": 0, "steps_per_epoch": 5, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "epochs": 2.0, "steps_per_epoch": 5, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "epochs": 2, "steps_per_epoch": 0, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "epochs": 3, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "total_steps": 9, "pct_start": 1.5, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "total_steps": 9, "pct_start": -0.1, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "total_steps": 9, "pct_start": 0, **OFF}),
    ("one_cycle_lr", "OneCycleLR", {"max_lr": 0.1, "total_steps": 9, "pct_start": 1, **OFF}),
    (
        "one_cycle_lr",
        "OneCycleLR",
        {"max_lr": 0.1, "total_steps": 9, "anneal_strategy": "exp", **OFF},
    ),
    ("reduce_on_plateau", "ReduceLROnPlateau", {"factor": 1.0}),
    ("reduce_on_plateau", "ReduceLROnPlateau", {"factor": 2}),
    ("reduce_on_plateau", "ReduceLROnPlateau", {"mode": "maximum"}),
    ("reduce_on_plateau", "ReduceLROnPlateau", {"threshold_mode": "relative"}),
]


@pytest.mark.parametrize(("ours", "cls", "kwargs"), CASES, ids=[f"{c}-{k}" for _, c, k in CASES])
def test_same_value_error_as_torch(ours, cls, kwargs):
    with pytest.raises(ValueError) as torch_error:
        getattr(tls, cls)(optimizer([0.1]), **kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(str(torch_error.value))}$"):
        getattr(S, ours)(**kwargs)


def _composite_errors():
    """(torch constructor, our constructor) pairs for SequentialLR / ChainedScheduler."""
    opt = optimizer([0.1])
    step = tls.StepLR(opt, 3)
    plateau = tls.ReduceLROnPlateau(opt)
    ours_step, ours_plateau = S.step_lr(3), S.reduce_on_plateau()
    return [
        (lambda: tls.SequentialLR(opt, [], []), lambda: S.sequential_lr([], [])),
        (
            lambda: tls.SequentialLR(opt, [step, plateau], [4]),
            lambda: S.sequential_lr([ours_step, ours_plateau], [4]),
        ),
        (
            lambda: tls.SequentialLR(opt, [step, step], [4, 5]),
            lambda: S.sequential_lr([ours_step, ours_step], [4, 5]),
        ),
        (
            lambda: tls.SequentialLR(opt, [step], [4]),
            lambda: S.sequential_lr([ours_step], [4]),
        ),
        (lambda: tls.ChainedScheduler([]), lambda: S.chained_scheduler([])),
        (
            lambda: tls.ChainedScheduler([step, plateau]),
            lambda: S.chained_scheduler([ours_step, ours_plateau]),
        ),
    ]


@pytest.mark.parametrize("index", range(6))
def test_composites_same_value_error_as_torch(index):
    make_torch, make_ours = _composite_errors()[index]
    with pytest.raises(ValueError) as torch_error:
        make_torch()
    with pytest.raises(ValueError, match=f"^{re.escape(str(torch_error.value))}$"):
        make_ours()


def test_one_cycle_stepped_past_total_steps_same_error_as_torch():
    opt = optimizer([0.1])
    sched = tls.OneCycleLR(opt, max_lr=1.0, total_steps=10, cycle_momentum=False)
    schedule = S.one_cycle_lr(max_lr=1.0, total_steps=10, cycle_momentum=False)
    state, lr = schedule.init(0.1, 0.1)
    for _ in range(10):
        opt.step()
        sched.step()
        state, lr = schedule.step(state, lr, None)
    opt.step()
    with pytest.raises(ValueError) as torch_error:
        sched.step()
    with pytest.raises(ValueError, match=f"^{re.escape(str(torch_error.value))}$"):
        schedule.step(state, lr, None)


def test_multiplicative_lr_non_callable_same_type_error_as_torch():
    with pytest.raises(TypeError) as torch_error:
        tls.MultiplicativeLR(optimizer([0.1]), lr_lambda=3)
    with pytest.raises(TypeError, match=f"^{re.escape(str(torch_error.value))}$"):
        S.multiplicative_lr(3)
    with pytest.raises(TypeError, match="lr_lambda should be a function, but got int"):
        S.lambda_lr(3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: S.step_lr("3"), "step_size must be an int, got str"),
        (lambda: S.step_lr(3, gamma=None), "gamma must be a number, got NoneType"),
        (lambda: S.step_lr(2.0), "step_size must be an int, got float"),
        (lambda: S.multi_step_lr(5), "milestones must be an iterable of ints, got int"),
        (lambda: S.multi_step_lr([1.5]), r"milestones\[\] must be an int, got float"),
        (lambda: S.exponential_lr("0.9"), "gamma must be a number, got str"),
        (lambda: S.exponential_lr(True), "gamma must be a number, got bool"),
        (lambda: S.cosine_annealing_lr(T_max=1.5), "T_max must be an int, got float"),
        (lambda: S.cosine_annealing_lr(10, eta_min="0"), "eta_min must be a number, got str"),
        (lambda: S.cosine_annealing_warm_restarts("5"), "T_0 must be an int, got str"),
        (lambda: S.cosine_annealing_warm_restarts(5, "2"), "T_mult must be an int, got str"),
        (lambda: S.linear_lr(total_iters=2.0), "total_iters must be an int, got float"),
        (lambda: S.linear_lr(start_factor="a"), "start_factor must be a number, got str"),
        (lambda: S.constant_lr(factor=None), "factor must be a number, got NoneType"),
        (lambda: S.polynomial_lr(power="2"), "power must be a number, got str"),
        (lambda: S.one_cycle_lr("1"), "max_lr must be a number, got str"),
        (lambda: S.one_cycle_lr([0.1, 0.2], 10), "max_lr must be a number: one Schedule"),
        (lambda: S.one_cycle_lr(0.1, "10"), "total_steps must be an int, got str"),
        (lambda: S.one_cycle_lr(0.1, 10, pct_start="a"), "pct_start must be a number, got str"),
        (lambda: S.reduce_on_plateau(factor="0.5"), "factor must be a number, got str"),
        (lambda: S.reduce_on_plateau(min_lr=[0.1]), "min_lr must be a number: one Schedule"),
        (lambda: S.reduce_on_plateau(patience=None), "patience must be a number, got NoneType"),
        (lambda: S.reduce_on_plateau(cooldown=1.5), "cooldown must be an int, got float"),
        (lambda: S.reduce_on_plateau(mode=1), "mode must be a str, got int"),
        (lambda: S.reduce_on_plateau(eps="1"), "eps must be a number, got str"),
        (lambda: S.sequential_lr(S.step_lr(3), []), "schedulers must be a list of Schedule"),
        (lambda: S.sequential_lr([3], []), "SequentialLR at index 0 should be a Schedule"),
        (lambda: S.sequential_lr([S.step_lr(3)] * 2, [2.5]), r"milestones\[0\] must be an int"),
        (lambda: S.chained_scheduler([S.step_lr(3), "x"]), "ChainedScheduler at index 1"),
    ],
)
def test_type_errors_name_the_argument(call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: S.step_lr(0), "Expected positive integer step_size, but got 0"),
        (lambda: S.cosine_annealing_lr(0), "Expected non-zero integer T_max, but got 0"),
        (
            lambda: S.sequential_lr([S.step_lr(2)] * 3, [5, 2]),
            r"milestones must be non-decreasing, got \[5, 2\]",
        ),
        (
            lambda: S.sequential_lr([S.chained_scheduler([S.step_lr(2)]), S.step_lr(2)], [3]),
            "does not support a nested ChainedScheduler",
        ),
        (
            lambda: S.sequential_lr([S.step_lr(2), S.sequential_lr([S.step_lr(2)], [])], [3]),
            "does not support a nested SequentialLR",
        ),
        (
            lambda: S.chained_scheduler(
                [S.chained_scheduler([ONE_CYCLE]), S.step_lr(3), S.sequential_lr([ONE_CYCLE], [])]
            ),
            "ChainedScheduler: at most one OneCycleLR per param group",
        ),
    ],
)
def test_stricter_than_torch(call, match):
    """Arguments torch accepts but fails on later (or silently misuses): rejected upfront."""
    with pytest.raises(ValueError, match=match):
        call()


def test_plateau_step_needs_the_metric():
    schedule = S.reduce_on_plateau()
    state, lr = schedule.init(0.1, 0.1)
    with pytest.raises(ValueError, match="metric"):
        schedule.step(state, lr, None)


@pytest.mark.parametrize(
    "schedule",
    [
        S.reduce_on_plateau(),
        S.sequential_lr([S.step_lr(2)], []),
        S.chained_scheduler([S.step_lr(2)]),
    ],
    ids=["plateau", "sequential", "chained"],
)
def test_reset_not_supported_where_torch_has_none(schedule):
    state, lr = schedule.init(0.1, 0.1)
    with pytest.raises(NotImplementedError):
        schedule.reset(state, lr)


PAIRS = {
    "step_lr": tls.StepLR,
    "multi_step_lr": tls.MultiStepLR,
    "exponential_lr": tls.ExponentialLR,
    "cosine_annealing_lr": tls.CosineAnnealingLR,
    "cosine_annealing_warm_restarts": tls.CosineAnnealingWarmRestarts,
    "linear_lr": tls.LinearLR,
    "constant_lr": tls.ConstantLR,
    "one_cycle_lr": tls.OneCycleLR,
    "polynomial_lr": tls.PolynomialLR,
    "lambda_lr": tls.LambdaLR,
    "multiplicative_lr": tls.MultiplicativeLR,
    "sequential_lr": tls.SequentialLR,
    "chained_scheduler": tls.ChainedScheduler,
    "reduce_on_plateau": tls.ReduceLROnPlateau,
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_torch_argument_names_and_defaults(name):
    ours = inspect.signature(getattr(S, name)).parameters
    theirs = {
        k: p
        for k, p in inspect.signature(PAIRS[name]).parameters.items()
        if k not in ("optimizer", "last_epoch")
    }
    assert list(ours) == list(theirs)
    for k, p in ours.items():
        assert p.default == theirs[k].default, k


def test_torch_module_has_no_other_scheduler_we_missed():
    public = {n for n in tls.__all__ if n not in ("LRScheduler", "CyclicLR")}
    assert public == {c.__name__ for c in PAIRS.values()}
    assert torch.__version__.startswith("2.")
