"""RMSprop, Adagrad, Adamax, NAdam, RAdam and Adadelta: bitwise parity with torch.optim.

* Every flag combination of the six rules runs 1,000 steps through the pure step and
  through ``nn.Module`` + ``torch.optim.X(foreach=False)``, comparing loss, parameters,
  buffers and optimizer state after every step with ``torch.equal``: torch's defaults, and
  hypothesis's draws from the valid ranges (``tests/optim/matrix.py`` says what `make test`
  runs). `make test` runs every combination on the MLP with dropout and a few on the CNN
  with BatchNorm; `make test-all` runs the whole matrix with more examples.
* Against torch's ``foreach=True`` path (whose multi-tensor kernels group the arithmetic
  differently) the rules agree within a tolerance; see ``FOREACH_TOL``.
* Each rule compiles fullgraph once and never recompiles while ``lr`` changes every step,
  and its compiled (tensor-scalar) step stays within ``COMPILE_TOL`` of the eager one.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import purestep as ps
from purestep._compat import counters
from purestep.optim.adadelta import adadelta
from purestep.optim.adagrad import adagrad
from purestep.optim.adamax import adamax
from purestep.optim.nadam import nadam
from purestep.optim.radam import radam
from purestep.optim.rmsprop import rmsprop
from tests.optim.matrix import check_case, typical
from tests.support import MODELS, batches, examples, mlp, neg_cross_entropy, run_bitwise

TORCH: dict[str, type[torch.optim.Optimizer]] = {
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adadelta": torch.optim.Adadelta,
}
PURE: dict[str, Callable[..., ps.optim.Optimizer]] = {
    "rmsprop": rmsprop,
    "adagrad": adagrad,
    "adamax": adamax,
    "nadam": nadam,
    "radam": radam,
    "adadelta": adadelta,
}

# Valid ranges, kept where training stays finite (a diverged run is NaN on both sides),
# each led by a typical value (the routine draw; see tests/optim/matrix.py).
decay = typical(5e-2, st.floats(1e-5, 0.1))
beta1 = typical(0.8, st.floats(0.0, 0.99))
beta2 = typical(0.98, st.floats(0.5, 0.9999))  # RAdam: rho_inf > 5 (rectified) needs > 5/7
eps = typical(1e-6, st.floats(1e-10, 1e-3))
LR = {
    "rmsprop": typical(1e-3, st.floats(1e-4, 5e-3)),
    "adagrad": typical(3e-2, st.floats(1e-4, 5e-2)),
    "adamax": typical(1e-2, st.floats(1e-4, 5e-2)),
    "nadam": typical(1e-2, st.floats(1e-4, 5e-2)),
    "radam": typical(3e-3, st.floats(1e-4, 5e-2)),
    "adadelta": typical(0.5, st.floats(1e-2, 1.0)),
}


def _flags(name: str, **flags: bool) -> tuple[str, dict[str, bool]]:
    return name + "".join(f"-{k}{int(v)}" for k, v in flags.items()), flags


def _cases() -> Iterator[tuple[str, str, dict[str, bool]]]:
    on_off = (False, True)
    for centered, mom, wd, mx in itertools.product(on_off, repeat=4):
        yield "rmsprop", *_flags("rmsprop", centered=centered, mom=mom, wd=wd, max=mx)
    for lrd, wd, mx, iav in itertools.product(on_off, repeat=4):
        yield "adagrad", *_flags("adagrad", lrd=lrd, wd=wd, max=mx, iav=iav)
    for wd, mx in itertools.product(on_off, repeat=2):
        yield "adamax", *_flags("adamax", wd=wd, max=mx)
    for rule in ("nadam", "radam"):
        for wd, dec, mx in itertools.product(on_off, repeat=3):
            yield rule, *_flags(rule, wd=wd, dec=dec, max=mx)
    for wd, mx in itertools.product(on_off, repeat=2):
        yield "adadelta", *_flags("adadelta", wd=wd, max=mx)


CASES = [(case, rule, flags) for rule, case, flags in _cases()]


@st.composite
def hyperparams(draw: Any, rule: str, flags: dict[str, bool]) -> dict[str, Any]:
    """torch keyword arguments for ``rule`` (``maximize`` excluded): a drawn value for each
    hyperparameter whose flag is on, torch's off value (0 / False) for each that is off."""
    kw: dict[str, Any] = {"lr": draw(LR[rule])}
    if "wd" in flags:
        kw["weight_decay"] = draw(decay) if flags["wd"] else 0.0
    if rule == "rmsprop":
        alpha = st.floats(0.5, 0.999) if flags["centered"] else st.floats(0.0, 0.999)
        kw["alpha"] = draw(typical(0.9, alpha))
        kw["eps"] = draw(typical(1e-6, st.floats(1e-8, 1e-3)))
        kw["momentum"] = draw(typical(0.5, st.floats(0.05, 0.9))) if flags["mom"] else 0.0
        kw["centered"] = flags["centered"]
    elif rule == "adagrad":
        kw["lr_decay"] = draw(typical(1e-2, st.floats(1e-5, 0.1))) if flags["lrd"] else 0.0
        iav = typical(0.5, st.floats(1e-3, 1.0))
        kw["initial_accumulator_value"] = draw(iav) if flags["iav"] else 0.0
        kw["eps"] = draw(eps)
    elif rule == "adadelta":
        kw["rho"] = draw(typical(0.95, st.floats(0.0, 0.999)))
        kw["eps"] = draw(typical(1e-5, st.floats(1e-8, 1e-4)))
    else:
        kw["betas"] = (draw(beta1), draw(beta2))
        kw["eps"] = draw(eps)
        if rule in ("nadam", "radam"):
            kw["decoupled_weight_decay"] = flags["dec"]
        if rule == "nadam":
            kw["momentum_decay"] = draw(typical(1e-2, st.floats(0.0, 0.1)))
    return kw


# torch's default lr per rule (RMSprop: 1e-3, within the range where 1,000 steps of this
# problem stay finite; torch's 1e-2 is at its edge).
DEFAULT_LR = {
    "rmsprop": 1e-3,
    "adagrad": 1e-2,
    "adamax": 2e-3,
    "nadam": 2e-3,
    "radam": 1e-3,
    "adadelta": 1.0,
}


def defaults(rule: str, flags: dict[str, bool]) -> dict[str, Any]:
    """torch's defaults for ``rule`` (``maximize`` excluded), with a typical value for each
    feature the flags turn on."""
    kw: dict[str, Any] = {"lr": DEFAULT_LR[rule]}
    if "wd" in flags:
        kw["weight_decay"] = 1e-2 if flags["wd"] else 0.0
    if rule == "rmsprop":
        kw.update(alpha=0.99, eps=1e-8, momentum=0.9 if flags["mom"] else 0.0)
        kw["centered"] = flags["centered"]
    elif rule == "adagrad":
        kw["lr_decay"] = 1e-3 if flags["lrd"] else 0.0
        kw["initial_accumulator_value"] = 0.1 if flags["iav"] else 0.0
        kw["eps"] = 1e-10
    elif rule == "adadelta":
        kw.update(rho=0.9, eps=1e-6)
    else:
        kw.update(betas=(0.9, 0.999), eps=1e-8)
        if rule in ("nadam", "radam"):
            kw["decoupled_weight_decay"] = flags["dec"]
        if rule == "nadam":
            kw["momentum_decay"] = 4e-3
    return kw


# `make test`: every combination on the MLP, these few on the CNN (slow: the rest).
CNN_DEFAULT = {"rmsprop-centered1-mom1-wd1-max1", "nadam-wd1-dec0-max0"}
MATRIX = [
    pytest.param(
        *case,
        model,
        id=f"{case[0]}-{model}",
        marks=[] if model == "mlp_dropout" or case[0] in CNN_DEFAULT else [pytest.mark.slow],
    )
    for case in CASES
    for model in sorted(MODELS)
]


def run_case(
    case: str,
    rule: str,
    flags: dict[str, bool],
    model_name: str,
    pure: Callable[..., ps.optim.Optimizer] | None = None,
) -> None:
    """The matrix's check of one case (``pure``: a stand-in for the rule's factory)."""
    build, shape = MODELS[model_name]
    maximize = flags["max"]
    factory = pure or PURE[rule]
    check_case(
        build=build,
        data=batches(shape, n=8),
        criterion=neg_cross_entropy if maximize else F.cross_entropy,
        make_torch=lambda p, kw: TORCH[rule](p, **kw, maximize=maximize, foreach=False),
        make_pure=lambda kw: factory(**kw, maximize=maximize),
        strategy=hyperparams(rule, flags),
        defaults=defaults(rule, flags),
        max_examples=examples(1, 6),
        label=case,
    )


@pytest.mark.parametrize(("case", "rule", "flags", "model_name"), MATRIX)
def test_bitwise_1000_steps(case: str, rule: str, flags: dict[str, bool], model_name: str) -> None:
    run_case(case, rule, flags, model_name)


def _beta1_ignored(rule: str) -> Callable[..., ps.optim.Optimizer]:
    def build(**kw: Any) -> ps.optim.Optimizer:
        return PURE[rule](**{**kw, "betas": (0.0, kw["betas"][1])})

    return build


def _no_momentum_decay(**kw: Any) -> ps.optim.Optimizer:
    return nadam(**{**kw, "momentum_decay": 0.0})


@pytest.mark.parametrize(
    ("case", "broken"),
    [
        ("nadam-wd0-dec0-max0", _beta1_ignored("nadam")),
        ("radam-wd0-dec0-max0", _beta1_ignored("radam")),
        ("adamax-wd0-max0", _beta1_ignored("adamax")),
        ("nadam-wd1-dec1-max0", _no_momentum_decay),
    ],
    ids=["nadam-beta1-ignored", "radam-beta1-ignored", "adamax-beta1-ignored", "nadam-no-decay"],
)
def test_the_routine_matrix_catches_a_broken_term(
    case: str, broken: Callable[..., ps.optim.Optimizer]
) -> None:
    """The check ``make test`` runs for a case fails for a rule with one term broken (each
    one invisible at the lower ends of the ranges: beta1 = 0, momentum_decay = 0)."""
    (row,) = [c for c in CASES if c[0] == case]
    with pytest.raises(AssertionError, match="first difference at step"):
        run_case(*row, "mlp_dropout", pure=broken)


def test_table_covers_every_flag_combination() -> None:
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names))
    counts = {rule: sum(c[1] == rule for c in CASES) for rule in TORCH}
    assert counts == {
        "rmsprop": 16,
        "adagrad": 16,
        "adamax": 4,
        "nadam": 8,
        "radam": 8,
        "adadelta": 4,
    }
    assert set(names) >= CNN_DEFAULT


@pytest.mark.parametrize("beta2", [0.6, 0.999])
def test_radam_both_branches(beta2: float) -> None:
    """beta2 = 0.6: rho_inf = 4 + 1e-15, never rectified (and the rectification term, which
    torch never evaluates there, would divide by ~0); beta2 = 0.999: unrectified for the first
    steps, rectified after. Both ends of the drawn beta2 range."""
    build, shape = MODELS["mlp_dropout"]
    model = build(1)
    kw = {"lr": 1e-2, "betas": (0.9, beta2), "weight_decay": 1e-3}
    torch_opt = torch.optim.RAdam(model.parameters(), **kw, foreach=False)
    assert run_bitwise(model, F.cross_entropy, torch_opt, radam(**kw), batches(shape), 100) is None


# All features on, for the foreach and compile checks.
FULL: dict[str, dict[str, Any]] = {
    "rmsprop": {"lr": 1e-3, "alpha": 0.9, "weight_decay": 1e-3, "momentum": 0.5, "centered": True},
    "adagrad": {
        "lr": 5e-2,
        "lr_decay": 1e-3,
        "weight_decay": 1e-3,
        "initial_accumulator_value": 0.1,
    },
    "adamax": {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 1e-3},
    "nadam": {"lr": 1e-2, "weight_decay": 1e-2, "momentum_decay": 1e-2},
    "radam": {"lr": 1e-2, "weight_decay": 1e-2, "decoupled_weight_decay": True},
    "adadelta": {"lr": 1.0, "rho": 0.95, "weight_decay": 1e-3},
}

# Measured (torch 2.13 CPU, MLP, FULL settings, 200 steps): the largest parameter
# difference from foreach=True is 5.7e-7 absolute / 7.7e-5 relative for NAdam (rtol 1e-5
# then needs atol 1.6e-7) and 8.9e-8 for RAdam; RMSprop, Adagrad, Adamax and Adadelta come
# out bit-identical to foreach=True as well.
FOREACH_STEPS = 200
FOREACH_TOL = {"rtol": 1e-5, "atol": 1e-6}


def _torch_params_after(rule: str, kw: dict[str, Any], steps: int) -> dict[str, torch.Tensor]:
    model = mlp(p=0.0)
    data = batches((10,), n=8)
    torch_opt = TORCH[rule](model.parameters(), **kw, foreach=True)
    for t in range(steps):
        x, y = data[t % len(data)]
        torch_opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        torch_opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _pure_params_after(rule: str, opt: ps.optim.Optimizer, steps: int) -> dict[str, torch.Tensor]:
    model = mlp(p=0.0)
    data = batches((10,), n=8)
    state = ps.TrainState.create(model, opt, seed=0)
    step = ps.make_train_step(copy.deepcopy(model), F.cross_entropy, opt)
    for t in range(steps):
        state, _ = step(state, data[t % len(data)])
    return state.params


@pytest.mark.parametrize("rule", sorted(FULL))
def test_close_to_torch_foreach_path(rule: str) -> None:
    """Against ``foreach=True`` (torch's multi-tensor kernels): within ``FOREACH_TOL`` after
    200 steps (the 1,000-step tests pin ``foreach=False`` to the bit)."""
    kw = FULL[rule]
    ours = _pure_params_after(rule, PURE[rule](**kw), FOREACH_STEPS)
    theirs = _torch_params_after(rule, kw, FOREACH_STEPS)
    torch.testing.assert_close(ours, theirs, **FOREACH_TOL)


def test_dynamic_all_stays_bitwise() -> None:
    """Every hyperparameter a tensor in the state (read back as Python floats in eager CPU):
    still bitwise, for the rule with the most hyperparameters."""
    build, shape = MODELS["mlp_dropout"]
    kw = {"lr": 3e-3, "betas": (0.85, 0.995), "eps": 1e-7, "weight_decay": 1e-2}
    kw["momentum_decay"] = 6e-3
    model = build(3)
    torch_opt = torch.optim.NAdam(model.parameters(), **kw, foreach=False)
    opt = nadam(**kw, dynamic="all")
    state = opt.init({"w": torch.zeros(1)})
    assert sorted(state.hyperparams) == sorted(
        ["lr", "beta1", "beta2", "eps", "weight_decay", "momentum_decay"]
    )
    assert run_bitwise(model, F.cross_entropy, torch_opt, opt, batches(shape), 200) is None


@pytest.mark.parametrize("rule", sorted(FULL))
def test_a_tiny_lr_change_is_detected(rule: str) -> None:
    """The harness can fail: an lr off by about one float32 ulp diverges within 50 steps."""
    build, shape = MODELS["mlp_dropout"]
    model = build(0)
    kw = FULL[rule]
    torch_opt = TORCH[rule](model.parameters(), **kw, foreach=False)
    opt = PURE[rule](**{**kw, "lr": kw["lr"] * (1 + 2**-22)})
    assert run_bitwise(model, F.cross_entropy, torch_opt, opt, batches(shape), 50) is not None


def test_mu_product_dtype_matters() -> None:
    """NAdam's ``mu_product`` must be torch's float32 scalar: carried in float64 instead, the
    parameters (not just the state's dtype) drift from torch's."""
    build, shape = MODELS["mlp_dropout"]
    model = build(0)
    torch_opt = torch.optim.NAdam(model.parameters(), lr=1e-2, foreach=False)
    opt = nadam(lr=1e-2)
    wide = ps.optim.Optimizer(
        lambda p: opt.init(p)._replace(mu_product=torch.ones((), dtype=torch.float64)), opt.step
    )
    state = ps.TrainState.create(model, wide)
    step = ps.make_train_step(copy.deepcopy(model), F.cross_entropy, wide)
    data = batches(shape)
    diverged = False
    for t in range(50):
        x, y = data[t % len(data)]
        with ps.rng_scope(state.rng):
            torch_opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            torch_opt.step()
        state, _ = step(state, (x, y))
        diverged |= any(not torch.equal(p, state.params[n]) for n, p in model.named_parameters())
    assert diverged


COMPILE_TOL = {"atol": 1e-6, "rtol": 1e-6}
COMPILE_DEFAULT = {"nadam", "radam"}


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(r, marks=[] if r in COMPILE_DEFAULT else [pytest.mark.slow])
        for r in sorted(FULL)
    ],
)
def test_compiles_fullgraph_with_zero_recompiles_as_lr_changes(rule: str) -> None:
    kw = FULL[rule]
    model = mlp(p=0.3)
    opt = PURE[rule](**kw)
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    compiled = ps.compile(eager)
    state = ps.TrainState.create(model, opt, seed=0)
    data = batches((10,), n=8)
    state, _ = compiled(state, data[0])  # warm-up: the one compilation
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in range(50):
            lr = kw["lr"] * (0.97**t)
            state = state._replace(opt_state=ps.optim.set_hyperparam(state.opt_state, "lr", lr))
            new_state, metrics = compiled(state, data[t % 8])
            expected, _ = eager(state, data[t % 8])
            torch.testing.assert_close(new_state.params, expected.params, **COMPILE_TOL)
            torch.testing.assert_close(new_state.opt_state, expected.opt_state, **COMPILE_TOL)
            state = new_state
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 0, "a new graph was compiled after warm-up"
    assert int(state.step) == 51 and torch.isfinite(metrics["loss"])


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(FULL))
def test_compiled_with_every_hyperparameter_dynamic(rule: str) -> None:
    """``dynamic="all"`` under compile: every hyperparameter is a 0-d tensor in the graph
    (the tensor-scalar formulas of ``_scalar_ops``), within ``COMPILE_TOL`` of eager per step."""
    model = mlp(p=0.3)
    opt = PURE[rule](**FULL[rule], dynamic="all")
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    compiled = ps.compile(eager)
    state = ps.TrainState.create(model, opt, seed=0)
    data = batches((10,), n=8)
    for t in range(12):
        new_state, _ = compiled(state, data[t % 8])
        expected, _ = eager(state, data[t % 8])
        torch.testing.assert_close(new_state.params, expected.params, **COMPILE_TOL)
        torch.testing.assert_close(new_state.opt_state, expected.opt_state, **COMPILE_TOL)
        state = new_state
