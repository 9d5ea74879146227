"""vmap over stacked states: K models in one step, each equal to its own run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep._compat import counters
from tests.support import batches, cnn, mlp

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _sweep_states(model, opt, lrs):
    return [
        ps.TrainState.create(model, opt, seed=i)._replace(
            opt_state=ps.optim.set_hyperparam(ps.TrainState.create(model, opt).opt_state, "lr", lr)
        )
        for i, lr in enumerate(lrs)
    ]


@pytest.mark.parametrize("build", [lambda: mlp(p=0.0), lambda: cnn()], ids=["mlp", "cnn_batchnorm"])
def test_each_model_of_a_sweep_equals_its_own_run(build):
    model = build()
    opt = ps.optim.sgd(lr=0.1, momentum=0.9)
    lrs = [0.01, 0.05, 0.1]
    states = _sweep_states(model, opt, lrs)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    vstep = ps.vmap(step)
    shape = (10,) if isinstance(model[0], torch.nn.Linear) else (1, 6, 6)
    data = batches(shape, n=4)
    stacked = ps.stack_states(states)
    for t in range(8):
        stacked, metrics = vstep(stacked, data[t % 4])
        for i in range(len(lrs)):
            states[i], m = step(states[i], data[t % 4])
            torch.testing.assert_close(metrics["loss"][i], m["loss"], **TOL)
    for i, single in enumerate(ps.unstack_state(stacked)):
        torch.testing.assert_close(single.params, states[i].params, **TOL)
        torch.testing.assert_close(single.buffers, states[i].buffers, **TOL)
        assert float(ps.optim.get_hyperparam(single.opt_state, "lr")) == lrs[i]
    assert stacked.step.tolist() == [8, 8, 8]


def test_each_model_its_own_batch():
    model = mlp(p=0.0)
    opt = ps.optim.adam(lr=1e-2)
    states = _sweep_states(model, opt, [1e-2, 1e-2])
    step = ps.make_train_step(model, F.cross_entropy, opt)
    vstep = ps.vmap(step, batch_axis=0)
    a, b = batches((10,), n=2)
    stacked_batch = (torch.stack([a[0], b[0]]), torch.stack([a[1], b[1]]))
    _stacked, metrics = vstep(ps.stack_states(states), stacked_batch)
    for i, batch in enumerate((a, b)):
        _, m = step(states[i], batch)
        torch.testing.assert_close(metrics["loss"][i], m["loss"], **TOL)


def test_vmapped_eval_and_dropout_draws_differ_per_model():
    model = mlp(p=0.5)
    opt = ps.optim.sgd(lr=0.1)
    stacked = ps.stack_states(_sweep_states(model, opt, [0.1, 0.1]))
    vstep = ps.vmap(ps.make_train_step(model, F.cross_entropy, opt))
    batch = batches((10,), n=1)[0]
    new, metrics = vstep(stacked, batch)
    assert metrics["loss"][0] != metrics["loss"][1], (
        "randomness='different': masks differ per model"
    )
    _again, metrics2 = vstep(stacked, batch)
    assert torch.equal(metrics["loss"], metrics2["loss"]), "same stacked state, same draws"
    assert not torch.equal(new.rng[0], new.rng[1]), "each model advances its own key"
    vevaluate = ps.vmap(ps.make_eval_step(model, F.cross_entropy))
    assert vevaluate(new, batch)["loss"].shape == (2,)


@pytest.mark.parametrize("seeds", [(0, 1), (0, 1, 2, 3), (0, 9, 9, 9)])
def test_each_member_draws_from_its_own_key(seeds):
    """Member i of a dropout sweep = its solo step (loss, params, new key), whatever the
    other members' seeds; equal seeds give equal members."""
    model = mlp(p=0.5)
    opt = ps.optim.sgd(lr=0.1)
    states = [ps.TrainState.create(model, opt, seed=s) for s in seeds]
    step = ps.make_train_step(model, F.cross_entropy, opt)
    vstep = ps.vmap(step)
    data = batches((10,), n=3)
    stacked = ps.stack_states(states)
    for t in range(3):
        stacked, metrics = vstep(stacked, data[t])
        for i in range(len(seeds)):
            states[i], m = step(states[i], data[t])
            torch.testing.assert_close(metrics["loss"][i], m["loss"], **TOL)
    for i, single in enumerate(ps.unstack_state(stacked)):
        torch.testing.assert_close(single.params, states[i].params, **TOL)
        assert torch.equal(single.rng, states[i].rng), f"member {i}'s key"
    if len(set(seeds)) < len(seeds):
        assert torch.equal(stacked.params["0.weight"][2], stacked.params["0.weight"][3])
    assert not torch.equal(stacked.params["0.weight"][0], stacked.params["0.weight"][1])


def test_member_keys_cover_random_ops_in_a_loss_fn():
    """torch.rand_like / randn / bernoulli_ inside a vmapped loss draw per member too."""
    model = mlp(p=0.0)
    opt = ps.optim.sgd(lr=0.1)

    def loss_fn(apply, params, buffers, batch, rng):
        x, y = batch
        noisy = x + 0.1 * torch.randn_like(x) + 0.01 * torch.rand(x.shape[-1])
        per_example = F.cross_entropy(apply(params, buffers, noisy), y, reduction="none")
        keep = torch.empty_like(per_example).bernoulli_(0.7)  # batched: depends on params
        return (per_example * keep).mean()

    states = [ps.TrainState.create(model, opt, seed=s) for s in (3, 4)]
    step = ps.make_train_step(model, None, opt, loss_fn=loss_fn)
    batch = batches((10,), n=1)[0]
    stacked, metrics = ps.vmap(step)(ps.stack_states(states), batch)
    for i, state in enumerate(states):
        solo, m = step(state, batch)
        torch.testing.assert_close(metrics["loss"][i], m["loss"], **TOL)
        assert torch.equal(stacked.rng[i], solo.rng)


def test_vmap_errors():
    model = mlp()
    opt = ps.optim.sgd()
    state = ps.TrainState.create(model, opt)
    vstep = ps.vmap(ps.make_train_step(model, F.cross_entropy, opt))
    with pytest.raises(ValueError, match="takes a stacked state"):
        vstep(state, batches((10,), n=1)[0])
    with pytest.raises(ValueError, match="differ in structure or shapes"):
        ps.stack_states([state, ps.TrainState.create(mlp(hidden=8), opt)])
    with pytest.raises(TypeError, match="not a TrainState"):
        ps.stack_states([state, {}])
    with pytest.raises(ValueError, match="vmap the eager step"):
        ps.vmap(ps.compile(ps.make_train_step(model, F.cross_entropy, opt)))


@pytest.mark.slow
def test_compiled_sweep_matches_eager_and_never_recompiles():
    model = mlp(p=0.0)
    opt = ps.optim.adam(lr=1e-2)
    stacked = ps.stack_states(_sweep_states(model, opt, [1e-3, 3e-3, 1e-2, 3e-2]))
    vstep = ps.vmap(ps.make_train_step(model, F.cross_entropy, opt))
    compiled = ps.compile(vstep)
    data = batches((10,), n=4)
    eager_state, comp_state = stacked, stacked
    comp_state, _ = compiled(comp_state, data[0])
    eager_state, _ = vstep(eager_state, data[0])
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in range(1, 30):
            comp_state, cm = compiled(comp_state, data[t % 4])
            eager_state, em = vstep(eager_state, data[t % 4])
            torch.testing.assert_close(cm["loss"], em["loss"], rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 0


@pytest.mark.slow
def test_compiled_sweep_keys_stay_per_member():
    """Compiled: one graph draws from model 0's stream, but keys stay each model's own: a
    draw moves each key its own way (distinct stay distinct), no draw leaves them."""
    opt = ps.optim.sgd(lr=0.1)
    batch = batches((10,), n=1)[0]
    for p, drew in ((0.5, True), (0.0, False)):
        model = mlp(p=p)
        stacked = ps.stack_states([ps.TrainState.create(model, opt, seed=s) for s in (0, 1, 1)])
        compiled = ps.compile(ps.vmap(ps.make_train_step(model, F.cross_entropy, opt)))
        new, _ = compiled(stacked, batch)
        assert torch.equal(new.rng[1], new.rng[2])
        if drew:
            assert not torch.equal(new.rng[0], new.rng[1])
            assert not torch.equal(new.rng[0], stacked.rng[0])
        else:
            assert torch.equal(new.rng, stacked.rng)
