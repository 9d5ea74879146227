"""Bitwise parity of the pure step + purestep.optim with nn.Module + torch.optim(foreach=False).

One table of optimizers and flag combinations; hypothesis draws the hyperparameters from
their valid ranges; every example runs 1,000 steps on an MLP with dropout and on a CNN
with BatchNorm, comparing loss, parameters, buffers and optimizer state after every step
with ``torch.equal``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import purestep as ps
from tests.support import MODELS, batches, examples, neg_cross_entropy, run_bitwise

STEPS = 1000

lr = st.floats(1e-4, 5e-2)
beta1 = st.floats(0.0, 0.99)
beta2 = st.floats(0.5, 0.9999)
eps = st.floats(1e-10, 1e-3)
decay = st.floats(1e-5, 0.1)
momentum = st.floats(0.05, 0.99)
dampening = st.floats(0.05, 0.9)


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


@pytest.mark.parametrize(("case", "rule", "flags", "maximize", "model_name"), MATRIX)
def test_bitwise_1000_steps(case, rule, flags, maximize, model_name):
    build, shape = MODELS[model_name]
    data = batches(shape, n=8)
    criterion = neg_cross_entropy if maximize else F.cross_entropy

    @settings(max_examples=examples(1, 6))
    @given(kw=hyperparams(rule, flags), seed=st.integers(0, 2**31 - 1))
    def check(kw, seed):
        model = build(seed % 1000)
        torch_opt = TORCH[rule](model.parameters(), **kw, maximize=maximize, foreach=False)
        opt = PURE[rule](**kw, maximize=maximize)
        diverged = run_bitwise(model, criterion, torch_opt, opt, data, STEPS, seed=seed)
        assert diverged is None, f"{case} {kw}: first difference at step {diverged}"

    check()


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
    build, shape = MODELS["mlp_dropout"]
    data = batches(shape, n=8)
    criterion = neg_cross_entropy if maximize else F.cross_entropy

    @settings(max_examples=examples(1, 4))
    @given(kw=hyperparams(rule, flags), seed=st.integers(0, 2**31 - 1))
    def check(kw, seed):
        model = build(seed % 1000)
        torch_opt = TORCH[rule](model.parameters(), **kw, maximize=maximize, foreach=True)
        opt = PURE[rule](**kw, maximize=maximize, foreach=True)
        diverged = run_bitwise(model, criterion, torch_opt, opt, data, STEPS, seed=seed)
        assert diverged is None, f"{case} {kw}: first difference at step {diverged}"

    check()


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
