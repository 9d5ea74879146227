"""The pure train/eval steps: purity, randomness, buffers, frozen params, general loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import purestep as ps
from tests.support import cnn, examples, mlp, tree_equal


def versions(tree):
    return [t._version for t in ps.core.pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


def snapshot(tree):
    return ps.core.pytree.tree_clone(tree)


@settings(max_examples=examples(15, 60))
@given(
    n_in=st.integers(1, 12),
    hidden=st.integers(1, 24),
    n_out=st.integers(2, 6),
    batch=st.integers(2, 17),
    seed=st.integers(0, 2**31 - 1),
    p=st.sampled_from([0.0, 0.3, 0.9]),
    rule=st.sampled_from(["sgd", "adam", "adamw"]),
)
def test_step_is_pure(n_in, hidden, n_out, batch, seed, p, rule):
    """Same state and batch give bitwise the same outputs; no input tensor changes."""
    model = nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Linear(hidden, n_out),
    )
    opt = {
        "sgd": ps.optim.sgd(lr=0.1, momentum=0.9),
        "adam": ps.optim.adam(),
        "adamw": ps.optim.adamw(),
    }[rule]
    state = ps.TrainState.create(model, opt, seed=seed)
    step = ps.make_train_step(model, nn.CrossEntropyLoss(), opt)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(batch, n_in, generator=g), torch.randint(0, n_out, (batch,), generator=g)
    state, _ = step(state, (x, y))  # a non-trivial optimizer state
    before, before_versions = snapshot((state, x, y)), versions((state, x, y))
    global_rng = torch.get_rng_state()

    a = step(state, (x, y))
    b = step(state, (x, y))

    assert tree_equal(a, b)
    assert tree_equal((state, x, y), before)
    assert versions((state, x, y)) == before_versions
    assert torch.equal(torch.get_rng_state(), global_rng), "the caller's global RNG moved"


def test_model_is_not_touched():
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    opt = ps.optim.sgd(lr=0.5)
    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    state, _ = step(state, (torch.randn(4, 10), torch.tensor([0, 1, 2, 3])))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not torch.equal(state.params["0.weight"], before["0.weight"])
    ps.load_state_into(model, state)
    assert torch.equal(model[0].weight, state.params["0.weight"])


def test_dropout_masks_come_from_the_state_key():
    model = mlp(p=0.5)
    opt = ps.optim.sgd(lr=0.1)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    batch = (torch.randn(8, 10), torch.randint(0, 4, (8,)))
    s1 = ps.TrainState.create(model, opt, seed=1)
    s2 = ps.TrainState.create(model, opt, seed=2)
    out1, m1 = step(s1, batch)
    _out2, m2 = step(s2, batch)
    assert not torch.equal(m1["loss"], m2["loss"]), "different keys should draw different masks"
    assert not torch.equal(out1.rng, s1.rng), "the key must advance"
    # Global RNG state has no influence.
    torch.manual_seed(99)
    again, m1b = step(s1, batch)
    assert torch.equal(m1["loss"], m1b["loss"]) and tree_equal(out1, again)


def test_key_reproduces_manual_seed_masks():
    torch.manual_seed(7)
    expected = F.dropout(torch.ones(1000), 0.5)
    with ps.rng_scope(ps.rng_key(7)):
        got = F.dropout(torch.ones(1000), 0.5)
    assert torch.equal(expected, got)


def test_batchnorm_buffers_update_in_train_and_are_used_in_eval():
    model = cnn()
    opt = ps.optim.sgd(lr=0.01)
    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    evaluate = ps.make_eval_step(model, F.cross_entropy)
    batch = (torch.randn(16, 1, 6, 6) * 3 + 1, torch.randint(0, 4, (16,)))
    new, _ = step(state, batch)
    assert int(new.buffers["1.num_batches_tracked"]) == 1
    assert not torch.equal(new.buffers["1.running_mean"], state.buffers["1.running_mean"])
    # eval uses running statistics: identical to the module in eval mode
    reference = copy.deepcopy(model)
    ps.load_state_into(reference, new)
    reference.eval()
    with torch.no_grad():
        expected = F.cross_entropy(reference(batch[0]), batch[1])
    assert torch.equal(evaluate(new, batch)["loss"], expected)


def test_frozen_parameters_stay_out_of_grad_and_optimizer():
    model = mlp()
    model[0].weight.requires_grad_(False)
    opt = ps.optim.adam(lr=0.1)
    state = ps.TrainState.create(model, opt)
    assert "0.weight" in state.params
    assert "0.weight" not in state.opt_state.exp_avg
    step = ps.make_train_step(model, F.cross_entropy, opt, return_grads=True)
    new, metrics = step(state, (torch.randn(8, 10), torch.randint(0, 4, (8,))))
    assert "0.weight" not in metrics["grads"]
    assert torch.equal(new.params["0.weight"], state.params["0.weight"])
    assert not torch.equal(new.params["0.bias"], state.params["0.bias"])


def test_general_loss_fn_with_aux_and_buffers():
    model = cnn()
    opt = ps.optim.sgd(lr=0.1)

    def loss_fn(apply, params, buffers, batch, rng):
        x, y = batch
        logits = apply(params, buffers, x)
        loss = F.cross_entropy(logits, y) + 0.01 * params["4.weight"].square().sum()
        return loss, {"accuracy": (logits.argmax(-1) == y).float().mean()}

    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(model, None, opt, loss_fn=loss_fn)
    batch = (torch.randn(8, 1, 6, 6), torch.randint(0, 4, (8,)))
    new, metrics = step(state, batch)
    assert set(metrics) == {"loss", "accuracy"} and metrics["loss"].dim() == 0
    assert int(new.buffers["1.num_batches_tracked"]) == 1
    # Same as the criterion form plus the penalty, by hand.
    plain = ps.make_train_step(model, F.cross_entropy, opt, return_grads=True)
    _, m_plain = plain(state, batch)
    assert torch.allclose(
        metrics["loss"], m_plain["loss"] + 0.01 * state.params["4.weight"].square().sum()
    )


def test_metrics_fn_and_grad_engines_agree():
    model = mlp(p=0.0)
    opt = ps.optim.sgd(lr=0.1)
    state = ps.TrainState.create(model, opt)
    batch = (torch.randn(8, 10), torch.randint(0, 4, (8,)))
    results = {}
    for engine in ("auto", "func", "autograd"):
        step = ps.make_train_step(
            model,
            F.cross_entropy,
            opt,
            metrics_fn=ps.core.classification_metrics,
            return_grads=True,
            grad_engine=engine,
        )
        results[engine] = step(state, batch)
    assert "accuracy" in results["auto"][1]
    assert tree_equal(results["auto"], results["autograd"])
    for k, g in results["auto"][1]["grads"].items():
        torch.testing.assert_close(g, results["func"][1]["grads"][k])


def test_tied_weights_are_one_parameter_updated_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 5)
            self.out = nn.Linear(5, 7, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, idx):
            return self.out(self.emb(idx))

    torch.manual_seed(0)
    model = Tied()
    reference = copy.deepcopy(model)
    torch_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, foreach=False)
    opt = ps.optim.sgd(lr=0.1, momentum=0.9)
    state = ps.TrainState.create(model, opt)
    assert list(state.params) == ["emb.weight"]
    step = ps.make_train_step(model, F.cross_entropy, opt)
    for _ in range(20):
        idx = torch.randint(0, 7, (6,))
        torch_opt.zero_grad()
        F.cross_entropy(reference(idx), idx).backward()
        torch_opt.step()
        state, _ = step(state, (idx, idx))
    assert torch.equal(reference.emb.weight, state.params["emb.weight"])


def test_trainstate_create_and_to():
    model = cnn()
    opt = ps.optim.adam(lr=1e-3)
    state = ps.TrainState.create(model, opt, seed=3)
    assert state.step.dtype == torch.int64 and state.step.dim() == 0
    assert list(state.params) == [k for k, _ in model.named_parameters()]
    assert list(state.buffers) == [k for k, _ in model.named_buffers()]
    assert torch.equal(state.rng, ps.rng_key(3))
    moved = state.to("cpu")
    assert tree_equal(moved, state)
    leaves, spec = ps.core.pytree.tree_flatten(state)
    assert all(isinstance(x, torch.Tensor) for x in leaves)
    assert tree_equal(ps.core.pytree.tree_unflatten(leaves, spec), state)


def test_convert_key_between_generator_types_is_deterministic():
    cpu_key = ps.rng_key(5)
    a = ps.core.convert_key(cpu_key, "cpu")
    assert a is cpu_key
    fake_cuda_key = torch.arange(16, dtype=torch.uint8)
    b1 = ps.core.convert_key(fake_cuda_key, "cpu")
    b2 = ps.core.convert_key(fake_cuda_key, "cpu")
    assert torch.equal(b1, b2) and b1.numel() == cpu_key.numel()


def test_eval_step_leaves_state_alone_and_has_no_grad():
    model = cnn()
    opt = ps.optim.sgd(lr=0.1)
    state = ps.TrainState.create(model, opt)
    evaluate = ps.make_eval_step(model, F.cross_entropy, metrics_fn=ps.core.classification_metrics)
    batch = (torch.randn(8, 1, 6, 6), torch.randint(0, 4, (8,)))
    before = snapshot(state)
    m = evaluate(state, batch)
    assert set(m) == {"loss", "accuracy"} and not m["loss"].requires_grad
    assert tree_equal(state, before)


@pytest.mark.parametrize("criterion", [nn.MSELoss(), nn.L1Loss(), nn.SmoothL1Loss()])
def test_any_criterion_callable(criterion):
    model = nn.Linear(3, 2)
    opt = ps.optim.sgd(lr=0.1)
    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(model, criterion, opt)
    new, m = step(state, (torch.randn(5, 3), torch.randn(5, 2)))
    assert m["loss"].dim() == 0 and int(new.step) == 1
