"""Every transform and wrapper runs under ``ps.vmap``: each member equals its solo step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep import optim
from tests.support import batches, mlp

TOL = {"rtol": 1e-5, "atol": 1e-6}

OPTIMIZERS = {
    "clip_by_global_norm": lambda: optim.chain(optim.clip_by_global_norm(0.1), optim.sgd(lr=0.1)),
    "clip_by_global_norm_inf": lambda: optim.chain(
        optim.clip_by_global_norm(0.05, norm_type=float("inf")), optim.adam(lr=1e-2)
    ),
    "clip_by_value": lambda: optim.chain(optim.clip_by_value(0.01), optim.sgd(lr=0.1)),
    "add_decayed_weights": lambda: optim.chain(optim.add_decayed_weights(0.1), optim.sgd(lr=0.1)),
    "scale_trace": lambda: optim.chain(optim.trace(0.9), optim.scale(-0.1)),
    "masked": lambda: optim.chain(
        optim.masked(
            optim.add_decayed_weights(0.5),
            {"0.weight": True, "0.bias": False, "3.weight": True, "3.bias": False},
        ),
        optim.adamw(lr=1e-2),
    ),
    "multi_transform": lambda: optim.multi_transform(
        {"a": optim.sgd(lr=0.1, momentum=0.9), "b": optim.adam(lr=1e-2)},
        lambda params: {n: "a" if n.startswith("0.") else "b" for n in params},
    ),
    "apply_if_finite": lambda: optim.apply_if_finite(optim.adam(lr=1e-2)),
    "multi_steps": lambda: optim.multi_steps(optim.adam(lr=1e-2), every_k=2),
    "inject_hyperparams": lambda: optim.inject_hyperparams(optim.adam)(lr=1e-2),
    "adam_foreach": lambda: optim.adam(lr=1e-2, foreach=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_transform_vmaps(name):
    model = mlp(p=0.0)
    opt = OPTIMIZERS[name]()
    states = [ps.TrainState.create(mlp(seed=s, p=0.0), opt, seed=s) for s in (0, 1)]
    step = ps.make_train_step(model, F.cross_entropy, opt)
    vstep = ps.vmap(step)
    stacked = ps.stack_states(states)
    data = batches((10,), n=4)
    for t in range(4):
        stacked, metrics = vstep(stacked, data[t])
        for i in range(2):
            states[i], m = step(states[i], data[t])
            torch.testing.assert_close(metrics["loss"][i], m["loss"], **TOL)
    for i, single in enumerate(ps.unstack_state(stacked)):
        torch.testing.assert_close(single.params, states[i].params, **TOL)
        torch.testing.assert_close(single.opt_state, states[i].opt_state, **TOL)


def test_clip_by_global_norm_eager_path_still_bitwise_clip_grad_norm():
    """The vmap fallback leaves the plain eager path on torch's multi-tensor kernel."""
    torch.manual_seed(0)
    grads = {"a": torch.randn(5, 3), "b": torch.randn(7)}
    clipped, _ = optim.clip_by_global_norm(0.5).update(grads, optim.EmptyState(), grads)
    tensors = [g.clone() for g in grads.values()]
    for t in tensors:
        t.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(tensors, 0.5)
    for got, t in zip(clipped.values(), tensors, strict=True):
        assert torch.equal(got, t.grad)


@pytest.mark.slow
def test_clip_by_global_norm_compiled_and_vmapped():
    """The issue's case: a vmapped sweep with clipping, compiled (it raised
    'Batching rule not implemented for aten::_foreach_norm')."""
    model = mlp(p=0.0)
    opt = OPTIMIZERS["clip_by_global_norm"]()
    stacked = ps.stack_states([ps.TrainState.create(mlp(seed=s, p=0.0), opt) for s in (0, 1)])
    vstep = ps.vmap(ps.make_train_step(model, F.cross_entropy, opt))
    compiled = ps.compile(vstep)
    eager = stacked
    for batch in batches((10,), n=3):
        stacked, cm = compiled(stacked, batch)
        eager, em = vstep(eager, batch)
        torch.testing.assert_close(cm["loss"], em["loss"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stacked.params, eager.params, rtol=1e-4, atol=1e-5)
