"""Conventions a JAX user expects: key splitting, a public pytree API, any-pytree aux,
donation on a vmapped step."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from tests.support import batches, mlp


def test_split_is_deterministic_distinct_and_leaves_the_key():
    key = ps.rng_key(0)
    before = key.clone()
    keys = ps.rng.split(key, 4)
    assert keys.shape == (4, key.numel()) and keys.dtype == torch.uint8
    assert torch.equal(keys, ps.rng.split(key, 4)), "deterministic"
    rows = [bytes(k.numpy()) for k in keys] + [bytes(key.numpy())]
    assert len(set(rows)) == 5, "distinct from each other and from the key"
    assert torch.equal(key, before), "the key is not changed"
    assert ps.rng.split(key).shape[0] == 2, "jax's default num=2"
    # keys are generator states: each draws its own stream
    draws = []
    for k in keys:
        with ps.rng_scope(k) as _:
            draws.append(torch.rand(3))
    assert not torch.equal(draws[0], draws[1])


def test_fold_in_is_a_function_of_key_and_data():
    key = ps.rng_key(1)
    a, b = ps.rng.fold_in(key, 7), ps.rng.fold_in(key, 8)
    assert torch.equal(a, ps.rng.fold_in(key, 7))
    assert torch.equal(a, ps.rng.fold_in(key, torch.tensor(7)))
    assert not torch.equal(a, b) and not torch.equal(a, key)
    assert not torch.equal(ps.rng.fold_in(ps.rng_key(2), 7), a)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ps.rng.split(ps.rng_key(0), 0), ValueError, "num must be an int >= 1"),
        (lambda: ps.rng.split(torch.zeros(3), 2), TypeError, "1-d uint8 generator state"),
        (lambda: ps.rng.fold_in(ps.rng_key(0), 1.5), TypeError, "must be an int"),
    ],
)
def test_rng_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_split_keys_seed_a_sweep_of_distinct_members():
    model = mlp(p=0.5)
    opt = ps.optim.sgd(lr=0.1)
    base = ps.TrainState.create(model, opt, seed=0)
    states = [base._replace(rng=k) for k in ps.rng.split(base.rng, 3)]
    stacked, metrics = ps.vmap(ps.make_train_step(model, F.cross_entropy, opt))(
        ps.stack_states(states), batches((10,), n=1)[0]
    )
    assert len({float(v) for v in metrics["loss"]}) == 3
    member = ps.unstack_state(stacked)[1]  # its rng is a row view of the stacked keys
    step = ps.make_train_step(model, F.cross_entropy, opt)
    assert torch.isfinite(step(member, batches((10,), n=1)[0])[1]["loss"])


def test_pytree_is_public():
    assert {"pytree", "rng", "optax"} <= set(ps.__all__)
    a = {"x": torch.ones(2), "y": (torch.zeros(1), torch.ones(1))}
    b = ps.pytree.tree_map(lambda t: t * 2, a)
    summed = ps.pytree.tree_map(lambda s, t: s + t, a, b)
    assert torch.equal(summed["y"][1], torch.full((1,), 3.0))
    leaves, spec = ps.pytree.tree_flatten(a)
    assert len(leaves) == 3
    assert ps.pytree.tree_bitwise_equal(ps.pytree.tree_unflatten(leaves, spec), a)


class Aux(NamedTuple):
    logits_mean: torch.Tensor
    extra: tuple[torch.Tensor, ...]


def test_an_aux_that_is_not_a_dict_comes_back_as_metrics_aux():
    model = mlp(p=0.0)
    opt = ps.optim.sgd(lr=0.1)

    def loss_fn(apply, params, buffers, batch, rng):
        x, y = batch
        out = apply(params, buffers, x)
        return F.cross_entropy(out, y), Aux(out.mean(), (out.max(),))

    step = ps.make_train_step(model, None, opt, loss_fn=loss_fn)
    _, metrics = step(ps.TrainState.create(model, opt), batches((10,), n=1)[0])
    assert isinstance(metrics["aux"], Aux)
    assert metrics["aux"].logits_mean.dim() == 0 and not metrics["aux"].extra[0].requires_grad

    def bad(apply, params, buffers, batch, rng):
        return F.cross_entropy(apply(params, buffers, batch[0]), batch[1]), [1.0]

    bad_step = ps.make_train_step(model, None, opt, loss_fn=bad)
    with pytest.raises(TypeError, match=r"loss_fn's aux\[0\] must be a torch.Tensor"):
        bad_step(ps.TrainState.create(model, opt), batches((10,), n=1)[0])


def test_donate_on_a_vmapped_train_step_names_the_fix():
    model = mlp()
    opt = ps.optim.sgd()
    vstep = ps.vmap(ps.make_train_step(model, F.cross_entropy, opt))
    with pytest.raises(ValueError, match="not supported for a vmapped train step"):
        ps.compile(vstep, donate=True)
