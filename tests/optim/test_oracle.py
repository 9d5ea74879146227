"""Every optimizer rule and lr schedule against the float64 NumPy oracle (``oracle.py``).

The bitwise tests check that ``purestep.optim`` does what torch.optim does; these check that
what both do is the math of the papers / the torch docs: the pure rules run in float64
(parameters and gradients as float64 tensors) for ``STEPS`` steps and the schedules for up to
``STEPS`` epochs, and must agree with the textbook formulas to 1e-12 relative (absolute
1e-12 times the trajectory's scale, for entries that pass near 0). hypothesis draws the
hyperparameters from their valid ranges and seeds the random gradients; the rare runs that
float64 itself cannot settle to 1e-12 (chaotic or cancelling ones) are told apart by the
oracle in extended precision and rejected (see "Conditioning" below).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import purestep.optim.schedules as S
from purestep.optim.schedules import Schedule
from tests.optim import oracle
from tests.support import examples

STEPS = 200
RTOL = 1e-12


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def maybe_zero(strategy: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    """0 (the term switched off) or a draw from ``strategy``."""
    return st.one_of(st.just(0.0), strategy)


def assert_close(actual: np.ndarray, expected: np.ndarray, scale: float) -> None:
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(expected)), "the oracle diverged: narrow the strategy"
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale)


# --------------------------------------------------------------------------------------
# Optimizer rules
# --------------------------------------------------------------------------------------


def _factory(module: str, name: str) -> Callable[..., Any]:
    """``purestep.optim.<module>.<name>``. Every rule exists: a missing or broken one is an
    error here (at collection), never a skipped test."""
    found = getattr(importlib.import_module(f"purestep.optim.{module}"), name)
    return cast(Callable[..., Any], found)


# Valid ranges, kept where 200 steps of random gradients stay finite (and see
# "Conditioning" below).
LR = floats(1e-5, 1.0)
DECAY = maybe_zero(floats(1e-5, 0.5))
BETA1 = floats(0.0, 0.999)
BETA2 = floats(0.0, 0.9999)
EPS = maybe_zero(floats(1e-12, 1e-2))
BOOL = st.booleans()
BETAS = st.tuples(BETA1, BETA2)
ALPHA = floats(0.01, 0.999)


@dataclass(frozen=True)
class Rule:
    """One row of the table: the pure factory, the oracle and the hyperparameters."""

    pure: Callable[..., Any]
    oracle: Callable[..., np.ndarray]
    kwargs: st.SearchStrategy[dict[str, Any]]
    fixed: dict[str, Any]
    float64_scalars: bool = False  # init under a float64 default dtype (see NAdam below)


def _rule(
    module: str,
    name: str,
    oracle_fn: Callable[..., np.ndarray],
    fixed: dict[str, Any] | None = None,
    float64_scalars: bool = False,
    **strategies: st.SearchStrategy[Any],
) -> Rule:
    return Rule(
        _factory(module, name),
        oracle_fn,
        st.fixed_dictionaries(strategies),
        fixed or {},
        float64_scalars,
    )


SGD_KW = {
    "lr": LR,
    "weight_decay": DECAY,
    "maximize": BOOL,
}
ADAM_KW = {
    "lr": LR,
    "betas": BETAS,
    "eps": EPS,
    "weight_decay": DECAY,
    "maximize": BOOL,
}
RMSPROP_KW = {
    "lr": LR,
    "eps": EPS,
    "weight_decay": DECAY,
    "maximize": BOOL,
}
NADAM_KW = {**ADAM_KW, "momentum_decay": floats(0.0, 0.1)}

RULES: dict[str, Rule] = {
    "sgd": _rule(
        "sgd",
        "sgd",
        oracle.sgd,
        momentum=maybe_zero(floats(1e-3, 0.99)),
        dampening=floats(0.0, 1.0),
        **SGD_KW,
    ),
    "sgd-nesterov": _rule(
        "sgd",
        "sgd",
        oracle.sgd,
        fixed={"nesterov": True, "dampening": 0.0},
        momentum=floats(1e-3, 0.99),
        **SGD_KW,
    ),
    "adam": _rule("adam", "adam", oracle.adam, **ADAM_KW),
    "adam-amsgrad": _rule("adam", "adam", oracle.adam, fixed={"amsgrad": True}, **ADAM_KW),
    "adamw": _rule("adam", "adamw", oracle.adamw, **ADAM_KW),
    "adamw-amsgrad": _rule("adam", "adamw", oracle.adamw, fixed={"amsgrad": True}, **ADAM_KW),
    "rmsprop": _rule("rmsprop", "rmsprop", oracle.rmsprop, alpha=ALPHA, **RMSPROP_KW),
    "rmsprop-momentum": _rule(
        "rmsprop",
        "rmsprop",
        oracle.rmsprop,
        alpha=ALPHA,
        momentum=floats(1e-3, 0.99),
        **RMSPROP_KW,
    ),
    "rmsprop-centered": _rule(
        "rmsprop",
        "rmsprop",
        oracle.rmsprop,
        fixed={"centered": True},
        alpha=ALPHA,
        momentum=maybe_zero(floats(1e-3, 0.99)),
        **RMSPROP_KW,
    ),
    "adagrad": _rule(
        "adagrad",
        "adagrad",
        oracle.adagrad,
        lr=LR,
        lr_decay=maybe_zero(floats(1e-4, 0.5)),
        weight_decay=DECAY,
        initial_accumulator_value=maybe_zero(floats(1e-3, 10.0)),
        eps=EPS,
        maximize=BOOL,
    ),
    "adamax": _rule("adamax", "adamax", oracle.adamax, **ADAM_KW),
    # torch keeps NAdam's mu_product in the default dtype's scalar dtype (float32 unless
    # the default dtype is float64), so a float64 run builds its state under float64.
    "nadam": _rule("nadam", "nadam", oracle.nadam, float64_scalars=True, **NADAM_KW),
    "nadam-decoupled": _rule(
        "nadam",
        "nadam",
        oracle.nadam,
        fixed={"decoupled_weight_decay": True},
        float64_scalars=True,
        **NADAM_KW,
    ),
    "radam": _rule("radam", "radam", oracle.radam, **ADAM_KW),
    "radam-decoupled": _rule(
        "radam", "radam", oracle.radam, fixed={"decoupled_weight_decay": True}, **ADAM_KW
    ),
    "adadelta": _rule(
        "adadelta",
        "adadelta",
        oracle.adadelta,
        lr=floats(1e-3, 2.0),
        rho=floats(0.0, 0.999),
        eps=floats(1e-8, 1e-3),
        weight_decay=DECAY,
        maximize=BOOL,
    ),
}


def run_pure(
    rule: Rule, kwargs: dict[str, Any], theta0: np.ndarray, grads: Sequence[np.ndarray]
) -> np.ndarray:
    """The pure rule's parameters after each step, in float64."""
    opt = rule.pure(**kwargs)
    p = torch.tensor(theta0, dtype=torch.float64)
    old = torch.get_default_dtype()
    if rule.float64_scalars:
        torch.set_default_dtype(torch.float64)
    try:
        state = opt.init({"w": p})
    finally:
        torch.set_default_dtype(old)
    out = []
    for g in grads:
        params, state = opt.step({"w": torch.tensor(g, dtype=torch.float64)}, state, {"w": p})
        p = params["w"]
        assert p.dtype == torch.float64
        out.append(p.numpy().copy())
    return np.stack(out)


def problem(seed: int, grad_scale: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """A (3, 4) parameter and ``STEPS`` random gradients with a slowly moving mean."""
    rng = np.random.default_rng(seed)
    theta0 = rng.standard_normal((3, 4))
    drift = np.cumsum(rng.standard_normal((STEPS, 3, 4)), axis=0) / math.sqrt(STEPS)
    noise = rng.standard_normal((STEPS, 3, 4))
    return theta0, list(grad_scale * (drift + noise))


# Conditioning. Some valid runs cannot be reproduced to 1e-12 by *any* float64
# implementation: with L2 weight decay the gradient depends on the parameters, and where the
# decay term dominates it a normalizing rule with a short memory (small beta2, alpha) steps
# by about lr * sign(theta), a chaotic map that grows rounding differences exponentially
# (``test_ill_conditioned_runs_are_rejected``); centered RMSprop's v - gbar^2 cancels
# catastrophically where the gradient's mean dwarfs its fluctuation (alpha -> 0, or a
# dominant decay term). So each run is also computed by the oracle in extended precision
# (``np.longdouble``, ~2000 times closer to exact arithmetic), and agreement to 1e-12 is
# asked of every run where the float64 oracle itself is within ``MAX_FLOAT64_ERROR`` of the
# tolerance from that reference; the rest (a few in 100 draws) are rejected. Where
# ``np.longdouble`` is no wider than float64 (e.g. on arm64 macOS or Windows), only that
# reference is missing: the float64 oracle stands in for it, and the runs that amplify a
# one-ulp change of their inputs are still told apart (and rejected) the same way.
MAX_FLOAT64_ERROR = 0.1
ULP_RUNS = 2
EXTENDED = np.longdouble
HAS_EXTENDED = bool(np.finfo(EXTENDED).eps < 1e-3 * np.finfo(np.float64).eps)
# The conditioning check both ways where it can, else float64-only.
EXTENDED_MODES = [
    pytest.param(mode, id="longdouble" if mode else "float64-only")
    for mode in ([True, False] if HAS_EXTENDED else [False])
]


def float64_error(
    rule: Rule,
    kwargs: dict[str, Any],
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    expected: np.ndarray,
    extended: bool = HAS_EXTENDED,
) -> float:
    """How far float64 runs of the oracle land from its extended-precision twin (from the
    float64 run itself if not ``extended``), in units of the tolerance (``RTOL`` times the
    trajectory's scale): the run itself, and two with every input moved by one ulp (up or
    down at random), which round differently as another implementation would, and so expose
    runs that amplify rounding (chaotic ones)."""
    reference = rule.oracle(theta0, grads, dtype=EXTENDED, **kwargs) if extended else expected
    rng = np.random.default_rng(0)

    def ulp(x: np.ndarray) -> np.ndarray:
        return np.nextafter(x, np.where(rng.random(x.shape) < 0.5, -np.inf, np.inf))

    runs = [expected] + [
        rule.oracle(ulp(theta0), [ulp(g) for g in grads], **kwargs) for _ in range(ULP_RUNS)
    ]
    scale = float(np.max(np.abs(reference)))
    return max(float(np.max(np.abs(run - reference))) for run in runs) / (RTOL * scale)


def check_rule(
    name: str, kwargs: dict[str, Any], seed: int, grad_scale: float, extended: bool
) -> bool:
    """The pure rule against the oracle on one drawn problem; False for a run the
    conditioning check rejects (float64 cannot settle it to the tolerance)."""
    rule = RULES[name]
    kwargs = {**kwargs, **rule.fixed}
    theta0, grads = problem(seed, grad_scale)
    expected = rule.oracle(theta0, grads, **kwargs)
    assert np.all(np.isfinite(expected)), "the oracle diverged: narrow the strategy"
    if float64_error(rule, kwargs, theta0, grads, expected, extended) > MAX_FLOAT64_ERROR:
        return False
    actual = run_pure(rule, kwargs, theta0, grads)
    assert_close(actual, expected, scale=float(np.max(np.abs(expected))))
    return True


@pytest.mark.parametrize("name", list(RULES))
@settings(max_examples=examples(12, 200))
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    grad_scale=st.sampled_from([1e-3, 1e-1, 1.0, 10.0]),
)
def test_rule_matches_oracle(name: str, data: st.DataObject, seed: int, grad_scale: float):
    kwargs = data.draw(RULES[name].kwargs, label="hyperparameters")
    assume(check_rule(name, kwargs, seed, grad_scale, HAS_EXTENDED))


# torch's defaults (and a typical momentum / decay where the default is off), per rule.
TYPICAL: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.01, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-4},
    "sgd-nesterov": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "adam-amsgrad": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
    "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
    "adamw-amsgrad": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8},
    "rmsprop-momentum": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.9},
    "rmsprop-centered": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.9},
    "adagrad": {"lr": 1e-2, "lr_decay": 1e-3, "initial_accumulator_value": 0.1, "eps": 1e-10},
    "adamax": {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8},
    "nadam": {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "momentum_decay": 4e-3},
    "nadam-decoupled": {"lr": 2e-3, "weight_decay": 1e-2, "momentum_decay": 4e-3},
    "radam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-3},
    "radam-decoupled": {"lr": 1e-3, "weight_decay": 1e-2},
    "adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
}


@pytest.mark.parametrize("extended", EXTENDED_MODES)
@pytest.mark.parametrize("name", list(RULES))
def test_typical_settings_match_oracle(name: str, extended: bool):
    """torch's defaults, with or without an extended ``np.longdouble``: without one only the
    extended-precision reference is off, the comparison still runs (and must pass)."""
    assert check_rule(name, TYPICAL[name], seed=1, grad_scale=1.0, extended=extended)


def test_typical_table_covers_every_rule():
    assert set(TYPICAL) == set(RULES)


def test_a_missing_rule_is_an_error_not_a_skip(monkeypatch: pytest.MonkeyPatch):
    """The rule table fails loudly (at collection) if a rule disappears or breaks."""
    module = importlib.import_module("purestep.optim.radam")
    monkeypatch.delattr(module, "radam")
    with pytest.raises(AttributeError, match="radam"):
        _factory("radam", "radam")
    with pytest.raises(ModuleNotFoundError):
        _factory("no_such_rule", "no_such_rule")


@pytest.mark.parametrize("extended", EXTENDED_MODES)
@pytest.mark.parametrize(
    ("name", "kwargs", "seed", "grad_scale"),
    [
        # chaotic: Adamax steps by ~lr sign(theta) once 0.02 theta dominates the gradient
        (
            "adamax",
            {"lr": 0.25, "betas": (0.0, 0.5), "eps": 1e-10, "weight_decay": 0.0234375},
            0,
            1e-3,
        ),
        # cancellation: v - gbar^2 at a small alpha (no feedback at all)
        ("rmsprop-centered", {"lr": 0.0625, "alpha": 0.01171875, "eps": 0.0}, 30630, 1.0),
    ],
    ids=["chaotic", "cancellation"],
)
def test_ill_conditioned_runs_are_rejected(
    name: str, kwargs: dict[str, Any], seed: int, grad_scale: float, extended: bool
):
    """Runs (found by hypothesis) where the pure rule and the oracle differ by more than the
    tolerance, and the conditioning check rejects, with the extended-precision reference
    or (where there is none) without: float64 cannot settle them to 1e-12 (the chaotic one:
    the oracle moved by one ulp in theta0 ends up as far from itself as the pure rule is
    from it)."""
    rule = RULES[name]
    kwargs = {**kwargs, **rule.fixed}
    theta0, grads = problem(seed, grad_scale)
    expected = rule.oracle(theta0, grads, **kwargs)
    scale = float(np.max(np.abs(expected)))
    with pytest.raises(AssertionError):
        assert_close(run_pure(rule, kwargs, theta0, grads), expected, scale)
    assert float64_error(rule, kwargs, theta0, grads, expected, extended) > MAX_FLOAT64_ERROR
    assert not check_rule(name, kwargs, seed, grad_scale, extended)
    if name == "adamax":
        one_ulp = rule.oracle(np.nextafter(theta0, np.inf), grads, **kwargs)
        assert np.max(np.abs(one_ulp - expected)) > 1e-3 * scale


def test_oracle_detects_a_wrong_rule():
    """The comparison has teeth: one changed term (SGD's dampening ignored) fails it."""
    theta0, grads = problem(0, 1.0)
    kwargs = {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}
    actual = run_pure(RULES["sgd"], kwargs, theta0, grads)
    wrong = oracle.sgd(theta0, grads, lr=0.1, momentum=0.9, dampening=0.0)
    with pytest.raises(AssertionError):
        assert_close(actual, wrong, scale=float(np.max(np.abs(wrong))))
    assert_close(actual, oracle.sgd(theta0, grads, **kwargs), scale=float(np.max(np.abs(wrong))))


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------

BASE_LR = floats(1e-4, 10.0)


class Factor:
    """An ``lr_lambda`` (a plain class, so hypothesis prints it)."""

    def __init__(self, kind: str, a: float) -> None:
        self.kind, self.a = kind, a

    def __call__(self, epoch: int) -> float:
        if self.kind == "pow":
            return self.a**epoch
        if self.kind == "inv":
            return 1.0 / (1.0 + self.a * epoch)
        return 1.0 + self.a * math.cos(epoch)  # "wave"

    def __repr__(self) -> str:
        return f"Factor({self.kind!r}, {self.a!r})"


LAMBDAS = st.one_of(
    st.builds(Factor, st.just("pow"), floats(0.9, 1.0)),
    st.builds(Factor, st.just("inv"), floats(0.0, 0.5)),
    st.builds(Factor, st.just("wave"), floats(0.0, 0.5)),
)
MULTIPLIERS = st.one_of(
    st.builds(Factor, st.just("pow"), floats(0.99, 1.0)),
    st.builds(Factor, st.just("wave"), floats(0.0, 0.05)),
)


@dataclass(frozen=True)
class Sched:
    """An epoch-driven schedule: the pure factory, the oracle's closed form and its
    arguments; ``multiplicative`` if each lr is the previous one times a factor of the
    epoch alone (what ChainedScheduler composes)."""

    pure: Callable[..., Schedule]
    oracle_at: Callable[..., float]
    kwargs: st.SearchStrategy[dict[str, Any]]
    multiplicative: bool


def _sched(
    pure: Callable[..., Schedule],
    oracle_at: Callable[..., float],
    multiplicative: bool,
    **strategies: st.SearchStrategy[Any],
) -> Sched:
    return Sched(pure, oracle_at, st.fixed_dictionaries(strategies), multiplicative)


ETA_MIN = maybe_zero(floats(1e-8, 1.0))

SCHEDULES: dict[str, Sched] = {
    "step": _sched(
        S.step_lr, oracle.step_lr_at, True, step_size=st.integers(1, 250), gamma=floats(0.1, 2.0)
    ),
    "multi_step": _sched(
        S.multi_step_lr,
        oracle.multi_step_lr_at,
        True,
        milestones=st.lists(st.integers(0, STEPS + 50), max_size=8),
        gamma=floats(0.1, 2.0),
    ),
    "exponential": _sched(
        S.exponential_lr, oracle.exponential_lr_at, True, gamma=floats(0.5, 1.05)
    ),
    "cosine": _sched(
        S.cosine_annealing_lr,
        oracle.cosine_annealing_lr_at,
        False,
        T_max=st.integers(1, 300),
        eta_min=ETA_MIN,
    ),
    "warm_restarts": _sched(
        S.cosine_annealing_warm_restarts,
        oracle.cosine_annealing_warm_restarts_at,
        False,
        T_0=st.integers(1, 250),
        T_mult=st.integers(1, 4),
        eta_min=ETA_MIN,
    ),
    "linear": _sched(
        S.linear_lr,
        oracle.linear_lr_at,
        True,
        start_factor=floats(1e-3, 1.0),
        end_factor=maybe_zero(floats(1e-6, 1.0)),
        total_iters=st.integers(1, 250),
    ),
    "constant": _sched(
        S.constant_lr,
        oracle.constant_lr_at,
        True,
        factor=floats(1e-3, 1.0),
        total_iters=st.integers(1, 250),
    ),
    "polynomial": _sched(
        S.polynomial_lr,
        oracle.polynomial_lr_at,
        True,
        total_iters=st.integers(1, 250),
        power=floats(0.1, 10.0),
    ),
    "lambda": _sched(S.lambda_lr, oracle.lambda_lr_at, False, lr_lambda=LAMBDAS),
    "multiplicative": _sched(
        S.multiplicative_lr, oracle.multiplicative_lr_at, True, lr_lambda=MULTIPLIERS
    ),
}


def run_schedule(sched: Schedule, base_lr: float, steps: int, metrics: Any = None) -> np.ndarray:
    """The lr after ``init`` and after each of ``steps`` steps."""
    state, lr = sched.init(base_lr, base_lr)
    out = [lr]
    for t in range(steps):
        state, lr = sched.step(state, lr, None if metrics is None else float(metrics[t]))
        out.append(lr)
    assert all(isinstance(x, float) for x in out)
    return np.array(out, dtype=np.float64)


def _check(actual: np.ndarray, expected: np.ndarray, base_lr: float) -> None:
    assert_close(actual, expected, scale=max(base_lr, float(np.max(np.abs(expected)))))


@pytest.mark.parametrize("name", list(SCHEDULES))
@settings(max_examples=examples(25, 300))
@given(data=st.data(), base_lr=BASE_LR)
def test_schedule_matches_oracle(name: str, data: st.DataObject, base_lr: float):
    spec = SCHEDULES[name]
    kwargs = data.draw(spec.kwargs, label="arguments")
    actual = run_schedule(spec.pure(**kwargs), base_lr, STEPS)
    expected = oracle.trajectory(spec.oracle_at, base_lr, STEPS, **kwargs)
    _check(actual, expected, base_lr)


@pytest.mark.parametrize("anneal_strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True], ids=["two_phase", "three_phase"])
@settings(max_examples=examples(25, 300))
@given(
    data=st.data(),
    max_lr=BASE_LR,
    total_steps=st.integers(20, STEPS),
    div_factor=floats(1.0, 100.0),
    final_div_factor=floats(1.0, 1e4),
)
def test_one_cycle_matches_oracle(
    anneal_strategy: str,
    three_phase: bool,
    data: st.DataObject,
    max_lr: float,
    total_steps: int,
    div_factor: float,
    final_div_factor: float,
):
    # every phase at least one step long (pct_start * total_steps > 1, and in three phases
    # 2 pct_start total_steps - 2 < total_steps - 1); a shorter one divides by zero in torch
    pct_start = data.draw(floats(0.1, 0.49 if three_phase else 0.9), label="pct_start")
    kwargs = {
        "max_lr": max_lr,
        "total_steps": total_steps,
        "pct_start": pct_start,
        "anneal_strategy": anneal_strategy,
        "div_factor": div_factor,
        "final_div_factor": final_div_factor,
        "three_phase": three_phase,
    }
    sched = S.one_cycle_lr(cycle_momentum=False, **kwargs)
    # OneCycleLR ignores the optimizer's lr (it starts from max_lr / div_factor)
    actual = run_schedule(sched, 1.0, total_steps)
    expected = oracle.trajectory(oracle.one_cycle_lr_at, 1.0, total_steps, **kwargs)
    _check(actual, expected, max_lr)


def _children(
    names: st.SearchStrategy[str], data: st.DataObject, n: int
) -> list[tuple[Schedule, oracle.LrAt]]:
    out = []
    for i in range(n):
        spec = SCHEDULES[data.draw(names, label=f"child {i}")]
        kw = data.draw(spec.kwargs, label=f"child {i} arguments")
        out.append((spec.pure(**kw), lambda b, t, spec=spec, kw=kw: spec.oracle_at(b, t, **kw)))
    return out


# Children with a closed form (MultiplicativeLR restarts from the current lr: none).
CLOSED_FORM = st.sampled_from([n for n in SCHEDULES if n != "multiplicative"])
MULTIPLICATIVE = st.sampled_from([n for n, s in SCHEDULES.items() if s.multiplicative])


@settings(max_examples=examples(40, 400))
@given(data=st.data(), base_lr=BASE_LR, n=st.integers(1, 4))
def test_sequential_matches_oracle(data: st.DataObject, base_lr: float, n: int):
    children = _children(CLOSED_FORM, data, n)
    milestones = sorted(data.draw(st.lists(st.integers(0, STEPS), min_size=n - 1, max_size=n - 1)))
    sched = S.sequential_lr([c[0] for c in children], milestones)
    actual = run_schedule(sched, base_lr, STEPS)
    expected = oracle.trajectory(
        oracle.sequential_lr_at,
        base_lr,
        STEPS,
        children=[c[1] for c in children],
        milestones=milestones,
    )
    _check(actual, expected, base_lr)


@settings(max_examples=examples(40, 400))
@given(data=st.data(), base_lr=BASE_LR, n=st.integers(1, 4))
def test_chained_matches_oracle(data: st.DataObject, base_lr: float, n: int):
    children = _children(MULTIPLICATIVE, data, n)
    sched = S.chained_scheduler([c[0] for c in children])
    actual = run_schedule(sched, base_lr, STEPS)
    expected = oracle.trajectory(
        oracle.chained_scheduler_at, base_lr, STEPS, children=[c[1] for c in children]
    )
    _check(actual, expected, base_lr)


def metric_sequences(seed: int, kind: str, mode: str) -> np.ndarray:
    """Metrics that plateau: exact small multiples of 1/4 (ties included), a noisy
    improving curve, or an improving curve that stalls."""
    rng = np.random.default_rng(seed)
    if kind == "grid":
        m = rng.integers(0, 12, STEPS) / 4.0
    elif kind == "noisy":
        m = np.exp(-np.arange(STEPS) / 50.0) + 0.05 * rng.standard_normal(STEPS)
    else:  # "stall"
        m = np.maximum(np.exp(-np.arange(STEPS) / 20.0), 0.1) + 1e-3 * rng.random(STEPS)
    return m if mode == "min" else -m


@settings(max_examples=examples(60, 600))
@given(
    base_lr=BASE_LR,
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["grid", "noisy", "stall"]),
    mode=st.sampled_from(["min", "max"]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    factor=floats(0.01, 0.99),
    patience=st.integers(0, 6),
    threshold=maybe_zero(floats(1e-6, 0.2)),
    cooldown=st.integers(0, 4),
    min_lr_frac=maybe_zero(floats(1e-6, 0.5)),
    eps_frac=st.sampled_from([0.0, 1e-8, 1e-3, 0.5]),
)
def test_plateau_matches_oracle(
    base_lr: float,
    seed: int,
    kind: str,
    mode: str,
    threshold_mode: str,
    factor: float,
    patience: int,
    threshold: float,
    cooldown: int,
    min_lr_frac: float,
    eps_frac: float,
):
    metrics = metric_sequences(seed, kind, mode)
    kwargs = {
        "mode": mode,
        "factor": factor,
        "patience": patience,
        "threshold": threshold,
        "threshold_mode": threshold_mode,
        "cooldown": cooldown,
        "min_lr": min_lr_frac * base_lr,
        "eps": eps_frac * base_lr,
    }
    actual = run_schedule(S.reduce_on_plateau(**kwargs), base_lr, STEPS, metrics)
    expected = oracle.reduce_lr_on_plateau(base_lr, list(metrics), **kwargs)
    _check(actual, expected, base_lr)


def test_plateau_oracle_reduces():
    """The plateau cases are not vacuous: a stalled metric cuts the lr, with cooldown."""
    lrs = oracle.reduce_lr_on_plateau(1.0, [1.0, 1.0, 1.0, 1.0, 1.0], patience=1, cooldown=1)
    np.testing.assert_array_equal(lrs, [1.0, 1.0, 1.0, 0.1, 0.1, 0.1])
