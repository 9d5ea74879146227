"""purestep.compile(verify=True): a compiled step that computes something else than the
eager step is caught on its first call, naming the tensor (fault injection)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from tests.support import batches, mlp


def faulty_backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
    """Runs dynamo's graph as it is, then scales one float output by 1.05: a stand-in for
    a miscompiled kernel (5 % off)."""

    def run(*args):
        outs = list(gm(*args))
        for i, t in enumerate(outs):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 1:
                outs[i] = t * 1.05
                break
        return tuple(outs)

    return run


def _setup(opt):
    model = mlp(p=0.2)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    return step, ps.TrainState.create(model, opt, seed=0), batches((10,), n=1)[0]


def test_a_wrong_compiled_kernel_raises_compiled_step_mismatch():
    step, state, batch = _setup(ps.optim.sgd(lr=0.1, momentum=0.9))
    with pytest.raises(ps.CompiledStepMismatch, match=r"differs from the eager step at ") as info:
        ps.compile(step, backend=faulty_backend)(state, batch)
    err = info.value
    assert err.tensor.startswith(("state.", "metrics")) and err.index
    assert err.compiled == pytest.approx(err.eager * 1.05, rel=1e-5) and err.ulp > 0
    assert isinstance(err, AssertionError)
    # Opt-out: the same wrong step runs (and is wrong).
    ps.compile(step, backend=faulty_backend, verify=False)(state, batch)


def test_a_correct_compiled_step_passes_verification_with_adam_on_batchnorm():
    """Adam turns a bias-before-BatchNorm's rounding-noise gradient into ~lr steps that
    differ on both sides: verification skips those entries, not the rest."""
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    opt = ps.optim.adamw(lr=1e-2)
    compiled = ps.compile(ps.make_train_step(model, F.cross_entropy, opt), backend="aot_eager")
    state = ps.TrainState.create(model, opt)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g))
    compiled(state, batch)  # verified: no exception


def test_verify_checks_each_new_signature_once():
    step, state, batch = _setup(ps.optim.sgd(lr=0.1))
    calls = []
    compiled = ps.compile(step, backend="aot_eager")
    original = compiled._verify_eager

    def counting(s, b):
        calls.append(b[0].shape[0])
        return original(s, b)

    compiled._verify_eager = counting
    x, y = batch
    for b in [(x, y), (x, y), (x[:8], y[:8]), (x[:8], y[:8])]:
        compiled(state, b)
    assert calls == [16, 8]


def test_reordering_noise_passes_a_wrong_value_does_not():
    from purestep.core.verify import check_compiled_step

    g = torch.Generator().manual_seed(0)
    eager = torch.randn(64, 64, generator=g)
    noisy = eager * (1 + 1e-4 * torch.randn(64, 64, generator=g))  # beyond rtol 1e-5
    check_compiled_step((eager,), (noisy,), {})
    wrong = eager.clone()
    wrong[3, 5] += 10.0
    with pytest.raises(ps.CompiledStepMismatch) as info:
        check_compiled_step((eager,), (wrong,), {})
    assert info.value.index == (3, 5)
