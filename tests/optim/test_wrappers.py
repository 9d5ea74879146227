"""Wrappers: apply_if_finite, multi_steps (gradient accumulation), inject_hyperparams."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep.optim.wrappers import apply_if_finite, inject_hyperparams, multi_steps
from tests.support import MODELS, batches, run_bitwise, tree_equal


def _poisoned_batches(shape, every=5):
    data = batches(shape, n=10)
    return [
        (x.clone().fill_(float("inf")) if i % every == 3 else x, y) for i, (x, y) in enumerate(data)
    ]


def test_apply_if_finite_skips_like_gradscaler():
    """A non-finite step leaves params and optimizer state untouched, as GradScaler's skip."""
    build, shape = MODELS["mlp_dropout"]
    model = build(0)
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-2, foreach=False)
    opt = apply_if_finite(ps.optim.adam(lr=1e-2))

    def skip_nonfinite(m):
        if not all(torch.isfinite(p.grad).all() for p in m.parameters()):
            return False
        return None

    data = _poisoned_batches(shape)
    assert run_bitwise(model, F.cross_entropy, torch_opt, opt, data, 100, 0, skip_nonfinite) is None


def test_apply_if_finite_counts_and_gives_up_after_max_errors():
    params = {"w": torch.ones(2)}
    bad = {"w": torch.tensor([1.0, float("nan")])}
    good = {"w": torch.ones(2)}
    opt = apply_if_finite(ps.optim.sgd(lr=0.5), max_consecutive_errors=2)
    state = opt.init(params)
    p, state = opt.step(bad, state, params)
    p, state = opt.step(bad, state, p)
    assert torch.equal(p["w"], params["w"])
    assert int(state.notfinite_count) == 2 and int(state.total_notfinite) == 2
    assert not bool(state.last_finite)
    p, state = opt.step(bad, state, p)  # third in a row: applied anyway
    assert torch.isnan(p["w"][1])
    p, state = opt.step(good, state, {"w": torch.ones(2)})
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 3


def test_wrappers_tensor_path_matches_eager_under_compile():
    """Under torch.compile the decision is a tensor and both branches run; same results."""
    params = {"w": torch.linspace(-1, 1, 5)}
    opt = apply_if_finite(multi_steps(ps.optim.adam(lr=0.1), 2))
    grads = [
        {"w": torch.full((5,), 0.5)},
        {"w": torch.full((5,), float("inf"))},
        {"w": torch.linspace(0, 1, 5)},
        {"w": torch.full((5,), -0.25)},
    ]
    compiled_step = torch.compile(opt.step, fullgraph=True)
    eager_state = compiled_state = opt.init(params)
    pe = pc = params
    for g in grads * 2:
        pe, eager_state = opt.step(g, eager_state, pe)
        pc, compiled_state = compiled_step(g, compiled_state, pc)
        torch.testing.assert_close(pc, pe, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(compiled_state, eager_state, rtol=1e-6, atol=1e-7)
    assert int(eager_state.total_notfinite) == 2


@pytest.mark.parametrize("k", [1, 2, 4])
def test_multi_steps_equals_imperative_accumulation(k):
    build, shape = MODELS["cnn_batchnorm"]
    model = build(0)
    reference = copy.deepcopy(model)
    torch_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, foreach=False)
    opt = multi_steps(ps.optim.adamw(lr=1e-2), k)

    def criterion(out, y):
        return F.cross_entropy(out, y) / k

    state = ps.TrainState.create(model, opt, seed=0)
    step = ps.make_train_step(model, criterion, opt)
    key = ps.rng_key(0)
    data = batches(shape, n=12)
    for t in range(48):
        x, y = data[t % len(data)]
        with ps.rng_scope(key) as scope:
            loss = criterion(reference(x), y)
            loss.backward()  # accumulates into .grad
            if (t + 1) % k == 0:
                torch_opt.step()
                torch_opt.zero_grad()
        key = scope.key
        state, metrics = step(state, (x, y))
        assert torch.equal(metrics["loss"], loss.detach())
        for n, p in reference.named_parameters():
            assert torch.equal(state.params[n], p), (t, n)
        for n, b in reference.named_buffers():
            assert torch.equal(state.buffers[n], b), (t, n)
    assert int(state.opt_state.mini_step) == 48 % k


def test_multi_steps_average_and_errors():
    params = {"w": torch.zeros(1)}
    opt = multi_steps(ps.optim.sgd(lr=1.0), 2, average=True)
    state = opt.init(params)
    p, state = opt.step({"w": torch.tensor([1.0])}, state, params)
    assert torch.equal(p["w"], params["w"])
    p, state = opt.step({"w": torch.tensor([3.0])}, state, p)
    assert torch.equal(p["w"], torch.tensor([-2.0]))
    with pytest.raises(ValueError, match="every_k must be an int >= 1"):
        multi_steps(ps.optim.sgd(), 0)
    with pytest.raises(TypeError, match="wraps an Optimizer or GradientTransformation"):
        multi_steps(torch.optim.SGD, 2)


def test_inject_hyperparams_changes_betas_like_torch_param_group_edits():
    build, shape = MODELS["mlp_dropout"]
    model = build(0)
    reference = copy.deepcopy(model)
    torch_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, betas=(0.9, 0.99), foreach=False)
    opt = inject_hyperparams(ps.optim.adam)(lr=1e-2, betas=(0.9, 0.99))
    state = ps.TrainState.create(model, opt, seed=0)
    assert set(state.opt_state.hyperparams) == {"lr", "beta1", "beta2", "eps", "weight_decay"}
    step = ps.make_train_step(model, F.cross_entropy, opt)
    key = ps.rng_key(0)
    data = batches(shape)
    for t in range(60):
        if t == 30:
            torch_opt.param_groups[0]["betas"] = (0.5, 0.999)
            torch_opt.param_groups[0]["eps"] = 1e-6
            hp = state.opt_state
            for name, value in (("beta1", 0.5), ("beta2", 0.999), ("eps", 1e-6)):
                hp = ps.optim.set_hyperparam(hp, name, value)
            state = state._replace(opt_state=hp)
        x, y = data[t % len(data)]
        with ps.rng_scope(key) as scope:
            torch_opt.zero_grad()
            F.cross_entropy(reference(x), y).backward()
            torch_opt.step()
        key = scope.key
        state, _ = step(state, (x, y))
        assert all(torch.equal(state.params[n], p) for n, p in reference.named_parameters()), t
    with pytest.raises(TypeError, match="do not pass it"):
        inject_hyperparams(ps.optim.adam)(dynamic=("lr",))


def test_inject_hyperparams_is_bitwise_the_static_rule():
    build, shape = MODELS["cnn_batchnorm"]
    model = build(3)
    torch_opt = torch.optim.SGD(
        model.parameters(), lr=0.02, momentum=0.8, nesterov=True, foreach=False
    )
    opt = inject_hyperparams(ps.optim.sgd)(lr=0.02, momentum=0.8, nesterov=True)
    assert run_bitwise(model, F.cross_entropy, torch_opt, opt, batches(shape), 200) is None
    s = opt.init({"w": torch.zeros(1)})
    assert tree_equal(s, opt.init({"w": torch.zeros(1)}))
