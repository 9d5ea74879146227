"""Bad input gets a clear TypeError/ValueError naming the problem, and changes nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps
from tests.support import cnn, mlp, tree_equal


@pytest.fixture
def setup():
    model = mlp()
    opt = ps.optim.adam(lr=1e-3)
    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    batch = (torch.randn(8, 10), torch.randint(0, 4, (8,)))
    return model, opt, state, step, batch


@pytest.mark.parametrize(
    ("bad_batch", "error", "match"),
    [
        (torch.randn(8, 10), ValueError, "tuple \\(inputs..., targets\\)"),
        ((torch.randn(8, 10),), ValueError, "of length 1"),
        (
            (torch.randn(8, 10), [0, 1, 2, 3, 0, 1, 2, 3]),
            TypeError,
            r"batch\[1\]\[0\] must be a torch.Tensor",
        ),
        ((torch.randn(8, 10), "labels"), TypeError, r"batch\[1\] must be a torch.Tensor"),
        (
            (torch.randn(8, 7), torch.randint(0, 4, (8,))),
            ValueError,
            r"Sequential rejected the batch inputs \[\(8, 7\):float32\]",
        ),
        (
            (torch.randn(8, 10, dtype=torch.float64), torch.randint(0, 4, (8,))),
            ValueError,
            "rejected the batch inputs",
        ),
        (
            (torch.randn(8, 10), torch.randint(0, 4, (5,))),
            ValueError,
            r"criterion rejected outputs \[\(8, 4\):float32\] and targets \[\(5,\):int64\]",
        ),
        (
            (torch.randn(8, 10, device="meta"), torch.randint(0, 4, (8,))),
            ValueError,
            "is on meta but the state is on cpu",
        ),
    ],
)
def test_bad_batch(setup, bad_batch, error, match):
    _, _, state, step, _ = setup
    before = ps.core.pytree.tree_clone(state)
    with pytest.raises(error, match=match):
        step(state, bad_batch)
    assert tree_equal(state, before)


def test_state_for_another_model(setup):
    _, _, _state, step, batch = setup
    other = ps.TrainState.create(cnn(), ps.optim.adam())
    with pytest.raises(
        ValueError, match=r"missing keys \['3.weight', '3.bias'\], unexpected keys \['1.weight'"
    ):
        step(other, batch)


def test_state_with_wrong_shape(setup):
    _, opt, _, step, batch = setup
    wider = ps.TrainState.create(mlp(hidden=32), opt)
    with pytest.raises(
        ValueError,
        match=r"state.params\['0.weight'\] has shape \(32, 10\) but Sequential expects \(16, 10\)",
    ):
        step(wider, batch)


def test_state_with_extra_and_missing_keys(setup):
    _, _, state, step, batch = setup
    params = dict(state.params)
    params["extra"] = torch.zeros(1)
    del params["3.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['3.bias'\], unexpected keys \['extra'\]"):
        step(state._replace(params=params), batch)


def test_state_with_wrong_dtype(setup):
    _, _, state, step, batch = setup
    params = {**state.params, "0.bias": state.params["0.bias"].double()}
    with pytest.raises(ValueError, match=r"state.params\['0.bias'\] has dtype torch.float64"):
        step(state._replace(params=params), batch)


def test_non_tensor_leaves(setup):
    _, _, state, step, batch = setup
    with pytest.raises(
        TypeError, match=r"state.params\['0.weight'\] must be a torch.Tensor, got list"
    ):
        step(state._replace(params={**state.params, "0.weight": [[0.0]]}), batch)
    bad_opt = state.opt_state._replace(exp_avg={**state.opt_state.exp_avg, "0.bias": 0.5})
    with pytest.raises(
        TypeError, match=r"state.opt_state.exp_avg\['0.bias'\] must be a torch.Tensor, got float"
    ):
        step(state._replace(opt_state=bad_opt), batch)
    with pytest.raises(TypeError, match=r"state\.step must be a torch\.Tensor"):
        step(state._replace(step=3), batch)
    with pytest.raises(TypeError, match=r"state must be a purestep\.TrainState, got dict"):
        step(state._asdict(), batch)


def test_state_with_another_optimizer(setup):
    model, _, _, step, batch = setup
    sgd_state = ps.TrainState.create(model, ps.optim.sgd(lr=0.1, momentum=0.9))
    with pytest.raises(
        ValueError, match="opt_state does not have the structure this optimizer expects"
    ):
        step(sgd_state, batch)


def test_loss_must_be_scalar():
    model = nn.Linear(3, 2)
    opt = ps.optim.sgd()
    step = ps.make_train_step(model, nn.MSELoss(reduction="none"), opt)
    with pytest.raises(ValueError, match=r"the loss must be a 0-d tensor, got \(4, 2\)"):
        step(ps.TrainState.create(model, opt), (torch.randn(4, 3), torch.randn(4, 2)))


def test_constructor_errors():
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"optimizer must be a purestep\.optim"):
        ps.make_train_step(model, nn.MSELoss(), torch.optim.SGD(model.parameters()))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        ps.make_train_step(lambda x: x, nn.MSELoss(), ps.optim.sgd())
    with pytest.raises(TypeError, match="at most one of criterion"):
        ps.make_train_step(model, nn.MSELoss(), ps.optim.sgd(), loss_fn=lambda *a: 0)
    with pytest.raises(ValueError, match="grad_engine must be one of"):
        ps.make_train_step(model, nn.MSELoss(), ps.optim.sgd(), grad_engine="jax")
    with pytest.raises(TypeError, match="seed must be an int"):
        ps.TrainState.create(model, ps.optim.sgd(), seed="0")
    with pytest.raises(TypeError, match=r"purestep\.compile takes a step"):
        ps.compile(lambda s, b: s)


def test_load_state_into_checks_before_writing():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = ps.TrainState.create(mlp(hidden=32), ps.optim.sgd())
    with pytest.raises(ValueError, match="has shape"):
        ps.load_state_into(model, state)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
