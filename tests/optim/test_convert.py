"""from_torch / to_torch_state_dict: a run moves between torch.optim and purestep bitwise."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep.optim.convert import from_torch, to_torch_state_dict
from tests.support import MODELS, batches

# the module, not the function ``purestep.optim.adam`` that the package exports
adam_module = sys.modules["purestep.optim.adam"]

TORCH_FACTORIES = {
    "adamw-2groups": lambda m: torch.optim.AdamW(
        [
            {"params": [p for n, p in m.named_parameters() if "bias" not in n]},
            {
                "params": [p for n, p in m.named_parameters() if "bias" in n],
                "weight_decay": 0.0,
                "lr": 3e-3,
            },
        ],
        lr=1e-2,
        amsgrad=True,
        foreach=False,
    ),
    "sgd-nesterov": lambda m: torch.optim.SGD(
        m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, foreach=False
    ),
    "adam": lambda m: torch.optim.Adam(m.parameters(), lr=5e-3, betas=(0.8, 0.99), foreach=False),
    # from_torch carries foreach=True over: purestep's multi-tensor fast mode
    "adamw-foreach": lambda m: torch.optim.AdamW(m.parameters(), lr=5e-3, foreach=True),
    "rmsprop-centered-momentum": lambda m: torch.optim.RMSprop(
        m.parameters(), lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-3, foreach=False
    ),
    "adagrad": lambda m: torch.optim.Adagrad(
        m.parameters(), lr=1e-2, lr_decay=1e-3, initial_accumulator_value=0.1, foreach=False
    ),
    "adamax": lambda m: torch.optim.Adamax(m.parameters(), lr=2e-3, foreach=False),
    "nadam-decoupled": lambda m: torch.optim.NAdam(
        m.parameters(), lr=2e-3, weight_decay=1e-2, decoupled_weight_decay=True, foreach=False
    ),
    "radam": lambda m: torch.optim.RAdam(m.parameters(), lr=2e-3, weight_decay=1e-3, foreach=False),
    "adadelta": lambda m: torch.optim.Adadelta(m.parameters(), lr=0.5, foreach=False),
}


def _torch_steps(model, torch_opt, data, key, start, count):
    for t in range(start, start + count):
        x, y = data[t % len(data)]
        with ps.rng_scope(key) as scope:
            torch_opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            torch_opt.step()
        key = scope.key
    return key


@pytest.mark.parametrize("name", sorted(TORCH_FACTORIES))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_torch_50_then_functional_50_equals_torch_100(name, model_name):
    build, shape = MODELS[model_name]
    data = batches(shape, n=10)
    reference = build(0)
    ref_opt = TORCH_FACTORIES[name](reference)
    ref_key = _torch_steps(reference, ref_opt, data, ps.rng_key(0), 0, 100)

    model = build(0)
    torch_opt = TORCH_FACTORIES[name](model)
    key = _torch_steps(model, torch_opt, data, ps.rng_key(0), 0, 50)
    opt = from_torch(torch_opt, model)
    state = ps.TrainState.create(model, opt)._replace(rng=key)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    for t in range(50, 100):
        state, _ = step(state, data[t % len(data)])
    for n, p in reference.named_parameters():
        assert torch.equal(state.params[n], p.detach()), n
    for n, b in reference.named_buffers():
        assert torch.equal(state.buffers[n], b), n
    assert torch.equal(state.rng, ref_key)


@pytest.mark.parametrize("name", sorted(TORCH_FACTORIES))
def test_functional_50_then_torch_50_equals_functional_100(name):
    build, shape = MODELS["cnn_batchnorm"]
    data = batches(shape, n=10)
    model = build(0)
    opt = from_torch(TORCH_FACTORIES[name](model), model)  # same groups, never stepped
    step = ps.make_train_step(model, F.cross_entropy, opt)
    state = ps.TrainState.create(model, opt)
    for t in range(100):
        state, _ = step(state, data[t % len(data)])
        if t == 49:
            half = state
    continued = build(0)
    ps.load_state_into(continued, half)
    torch_opt = TORCH_FACTORIES[name](continued)
    torch_opt.load_state_dict(to_torch_state_dict(half.opt_state, torch_opt, continued))
    _torch_steps(continued, torch_opt, data, half.rng, 50, 50)
    for n, p in continued.named_parameters():
        assert torch.equal(state.params[n], p.detach()), n


def test_unsupported_and_mismatched_optimizers():
    model = MODELS["mlp_dropout"][0](0)
    with pytest.raises(ValueError, match="does not support torch.optim.LBFGS"):
        from_torch(torch.optim.LBFGS(model.parameters()), model)
    with pytest.raises(ValueError, match="fused=True"):
        from_torch(torch.optim.AdamW(model.parameters(), fused=True), model)
    with pytest.raises(ValueError, match="trainable parameter '3.bias' is in no param group"):
        from_torch(torch.optim.SGD(list(model.parameters())[:3]), model)
    stranger = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="holds a parameter not in the model"):
        from_torch(torch.optim.SGD([*model.parameters(), stranger]), model)
    frozen_ok = MODELS["mlp_dropout"][0](0)
    frozen_ok[0].weight.requires_grad_(False)
    trainable = [p for p in frozen_ok.parameters() if p.requires_grad]
    opt = from_torch(torch.optim.SGD(trainable, momentum=0.9), frozen_ok)
    state = ps.TrainState.create(frozen_ok, opt)
    assert "0.weight" not in state.opt_state.momentum_buffer
    assert set(state.opt_state.momentum_buffer) == {"0.bias", "3.weight", "3.bias"}


@pytest.mark.parametrize("foreach", [True, False, None])
def test_from_torch_carries_the_foreach_choice(foreach, monkeypatch):
    model = MODELS["mlp_dropout"][0](0)
    opt = from_torch(torch.optim.Adam(model.parameters(), foreach=foreach), model)
    calls = []
    real = adam_module.foreach_lerp
    monkeypatch.setattr(
        adam_module, "foreach_lerp", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    params = {n: p.detach() for n, p in model.named_parameters()}
    opt.step({k: torch.ones_like(p) for k, p in params.items()}, opt.init(params), params)
    assert bool(calls) == bool(foreach)
