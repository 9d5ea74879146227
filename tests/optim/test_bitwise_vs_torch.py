"""Bitwise parity of the pure step + purestep.optim with nn.Module + torch.optim(foreach=False).

One table of optimizers and flag combinations, each run on an MLP with dropout and on a CNN
with BatchNorm, comparing loss, parameters, buffers and optimizer state after every step
with ``torch.equal``: torch's defaults for 1,000 steps, and hypothesis's draws from the
valid ranges (see ``tests/optim/matrix.py`` for what ``make test`` runs).
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import purestep as ps
from tests.optim.matrix import check_case, typical
from tests.support import MODELS, batches, examples, neg_cross_entropy, run_bitwise

# Valid ranges, each led by a typical value (the routine draw; see tests/optim/matrix.py).
lr = typical(1e-2, st.floats(1e-4, 5e-2))
beta1 = typical(0.8, st.floats(0.0, 0.99))
beta2 = typical(0.98, st.floats(0.5, 0.9999))
eps = typical(1e-6, st.floats(1e-10, 1e-3))
decay = typical(5e-2, st.floats(1e-5, 0.1))
momentum = typical(0.95, st.floats(0.05, 0.99))
dampening = typical(0.5, st.floats(0.05, 0.9))


def _sgd_cases():
    for mom, damp, nesterov, wd, maximize in itertools.product(
        (False, True), (False, True), (False, True), (False, True), (False, True)
    ):
        if (nesterov and (not mom or damp)) or (damp and not mom):
            continue
        yield (
            f"sgd-mom{int(mom)}-damp{int(damp)}-nest{int(nesterov)}-wd{int(wd)}-max{int(maximize)}",
            "sgd",
            {"momentum": mom, "dampening": damp, "nesterov": nesterov, "weight_decay": wd},
            maximize,
        )


def _adam_cases():
    for name in ("adam", "adamw"):
        for amsgrad, wd, maximize in itertools.product((False, True), repeat=3):
            yield (
                f"{name}-ams{int(amsgrad)}-wd{int(wd)}-max{int(maximize)}",
                name,
                {"amsgrad": amsgrad, "weight_decay": wd},
                maximize,
            )


CASES = list(_sgd_cases()) + list(_adam_cases())


@st.composite
def hyperparams(draw, rule: str, flags: dict) -> dict:
    kw = {"lr": draw(lr)}
    if rule == "sgd":
        kw["momentum"] = draw(momentum) if flags["momentum"] else 0.0
        kw["dampening"] = draw(dampening) if flags["dampening"] else 0.0
        kw["nesterov"] = flags["nesterov"]
        kw["weight_decay"] = draw(decay) if flags["weight_decay"] else 0.0
    else:
        kw["betas"] = (draw(beta1), draw(beta2))
        kw["eps"] = draw(eps)
        kw["amsgrad"] = flags["amsgrad"]
        kw["weight_decay"] = draw(decay) if flags["weight_decay"] else 0.0
    return kw


def defaults(rule: str, flags: dict) -> dict:
    """torch's defaults, with a typical value for each feature the flags turn on."""
    if rule == "sgd":
        return {
            "lr": 1e-3,
            "momentum": 0.9 if flags["momentum"] else 0.0,
            "dampening": 0.1 if flags["dampening"] else 0.0,
            "nesterov": flags["nesterov"],
            "weight_decay": 5e-4 if flags["weight_decay"] else 0.0,
        }
    return {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "amsgrad": flags["amsgrad"],
        "weight_decay": 1e-2 if flags["weight_decay"] else 0.0,
    }


TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
PURE = {"sgd": ps.optim.sgd, "adam": ps.optim.adam, "adamw": ps.optim.adamw}


# `make test` runs every combination on the MLP and a representative few on the CNN;
# `make test-all` runs the whole matrix with more hypothesis examples.
CNN_DEFAULT = {
    "sgd-mom1-damp0-nest1-wd1-max0",
    "sgd-mom1-damp1-nest0-wd0-max1",
    "adam-ams1-wd1-max0",
    "adamw-ams0-wd1-max1",
}
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


def run_case(case, rule, flags, maximize, model_name, *, foreach=False, pure=None, n=(1, 6)):
    """The matrix's check of one case (``pure``: a stand-in for the rule's factory)."""
    build, shape = MODELS[model_name]
    factory = pure or PURE[rule]
    extra = {"foreach": True} if foreach else {}
    check_case(
        build=build,
        data=batches(shape, n=8),
        criterion=neg_cross_entropy if maximize else F.cross_entropy,
        make_torch=lambda p, kw: TORCH[rule](p, **kw, maximize=maximize, foreach=foreach),
        make_pure=lambda kw: factory(**kw, maximize=maximize, **extra),
        strategy=hyperparams(rule, flags),
        defaults=defaults(rule, flags),
        max_examples=examples(*n),
        label=case,
    )


@pytest.mark.parametrize(("case", "rule", "flags", "maximize", "model_name"), MATRIX)
def test_bitwise_1000_steps(case, rule, flags, maximize, model_name):
    run_case(case, rule, flags, maximize, model_name)


def _without_first_moment(**kw):
    """Adam with beta1 ignored (the first moment is the gradient itself): wrong unless
    beta1 = 0, the value of the range's lower end that the routine draw used to be."""
    return ps.optim.adam(**{**kw, "betas": (0.0, kw["betas"][1])})


def _without_nesterov(**kw):
    return ps.optim.sgd(**{**kw, "nesterov": False})


@pytest.mark.parametrize(
    ("case", "broken"),
    [
        ("adam-ams0-wd0-max0", _without_first_moment),
        ("sgd-mom1-damp0-nest1-wd0-max0", _without_nesterov),
    ],
    ids=["adam-beta1-ignored", "sgd-nesterov-ignored"],
)
def test_the_routine_matrix_catches_a_broken_term(case, broken):
    """The check ``make test`` runs for a case fails for a rule with one term broken."""
    (row,) = [c for c in CASES if c[0] == case]
    with pytest.raises(AssertionError, match="first difference at step"):
        run_case(*row, "mlp_dropout", pure=broken)


def test_table_covers_every_flag_combination():
    names = {c[0] for c in CASES}
    assert len([n for n in names if n.startswith("sgd")]) == 16
    assert len([n for n in names if n.startswith("adam-")]) == 8
    assert len([n for n in names if n.startswith("adamw-")]) == 8


def test_a_tiny_lr_change_is_detected():
    """The harness can fail: an lr off by about one float32 ulp diverges within the run."""
    build, shape = MODELS["mlp_dropout"]
    model = build(0)
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    opt = ps.optim.adam(lr=1e-3 * (1 + 2**-22))
    assert run_bitwise(model, F.cross_entropy, torch_opt, opt, batches(shape), 50) is not None


ADAM_CASES = [c for c in CASES if c[1] != "sgd"]


@pytest.mark.parametrize(
    ("case", "rule", "flags", "maximize"), ADAM_CASES, ids=[c[0] for c in ADAM_CASES]
)
def test_foreach_fast_mode_bitwise_1000_steps(case, rule, flags, maximize):
    """``foreach=True`` (multi-tensor ops) against torch's ``foreach=True`` path, to the bit."""
    run_case(case, rule, flags, maximize, "mlp_dropout", foreach=True, n=(1, 4))


@pytest.mark.parametrize(("case", "rule", "flags", "maximize"), ADAM_CASES[:8:3])
def test_foreach_fast_mode_writes_no_input(case, rule, flags, maximize):
    params = {"w": torch.randn(4, 3), "b": torch.randn(3)}
    opt = PURE[rule](
        lr=1e-2,
        weight_decay=0.1 if flags["weight_decay"] else 0.0,
        amsgrad=flags["amsgrad"],
        maximize=maximize,
        foreach=True,
    )
    state = opt.init(params)
    for _ in range(2):  # the second step reads a non-zero state
        grads = {k: torch.randn_like(p) for k, p in params.items()}
        inputs = [*params.values(), *grads.values(), *torch.utils._pytree.tree_leaves(state)]
        before = [(t.clone(), t._version) for t in inputs]
        new_params, new_state = opt.step(grads, state, params)
        for t, (copy, version) in zip(inputs, before, strict=True):
            assert torch.equal(t, copy) and t._version == version
        params, state = new_params, new_state


def test_foreach_must_be_a_bool():
    with pytest.raises(TypeError, match="foreach"):
        ps.optim.adam(foreach="yes")  # type: ignore[arg-type]
