"""Steps never use stale user values: a change to the criterion's attributes, the model's
attributes (a temperature, a flag its forward branches on, a hook) or a global that the
loss reads reaches the eager step and the compiled one (which recompiles), and both then
give what a step made fresh after the change gives.

Most compiled steps here use the ``aot_eager`` backend: the guards deciding whether a change
recompiles are dynamo's and the same for every backend, and it compiles in a fraction of
inductor's time; the criterion and global cases use the default, inductor."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps
from tests.support import batches

TOL = {"atol": 1e-6, "rtol": 1e-6}
SCALE = 1.0  # read by scaled_loss: a global the loss depends on


class Tempered(nn.Module):
    """An MLP whose forward reads a float attribute and branches on a bool one."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4))
        self.temperature = 1.0
        self.use_tanh_head = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x) / self.temperature
        return torch.tanh(out) * 3 if self.use_tanh_head else out


def scaled_loss(apply, params, buffers, batch, rng):
    x, y = batch
    return F.cross_entropy(apply(params, buffers, x), y) * SCALE


def run(step, state, data):
    for batch in data:
        state, metrics = step(state, batch)
    return state, metrics["loss"]


def assert_same_as_fresh(got, fresh, stale):
    """``got`` matches the fresh step's result, and the change made a difference (so the
    check could fail)."""
    (g_state, g_loss), (f_state, f_loss), (_, s_loss) = got, fresh, stale
    torch.testing.assert_close(g_loss, f_loss, **TOL)
    torch.testing.assert_close(g_state.params, f_state.params, **TOL)
    assert (s_loss - f_loss).abs() > 1e-3, "the change should have changed the loss"


def check_change(make_step, change, backend="aot_eager"):
    """Run eager and compiled steps, apply ``change``, run again: both must agree with a
    step made after the change."""
    model, opt, eager = make_step()
    compiled = ps.compile(eager, backend=backend)
    data = batches((10,), n=2)
    state = ps.TrainState.create(model, opt, seed=0)
    stale = run(eager, state, data)
    run(compiled, state, data)  # compiled once with the old value
    change(model, eager)
    _, _, fresh_step = make_step(model)
    fresh = run(fresh_step, state, data)
    assert_same_as_fresh(run(eager, state, data), fresh, stale)
    assert_same_as_fresh(run(compiled, state, data), fresh, stale)


def test_criterion_attribute_change_reaches_eager_and_compiled():
    """Representative case, default backend (inductor)."""
    criterion = nn.CrossEntropyLoss()

    def make(model=None):
        model = model or Tempered()
        opt = ps.optim.sgd(lr=0.1)
        return model, opt, ps.make_train_step(model, criterion, opt)

    def change(model, step):
        criterion.label_smoothing = 0.3

    try:
        check_change(make, change, backend="inductor")
    finally:
        criterion.label_smoothing = 0.0


@pytest.mark.parametrize(
    "attribute, value", [("temperature", 0.25), ("use_tanh_head", True)], ids=["float", "flag"]
)
def test_model_attribute_change_reaches_eager_and_compiled(attribute, value):
    def make(model=None):
        model = model or Tempered()
        opt = ps.optim.sgd(lr=0.1)
        return model, opt, ps.make_train_step(model, F.cross_entropy, opt)

    check_change(make, lambda model, step: setattr(model, attribute, value))


def test_global_read_by_loss_fn_change_reaches_eager_and_compiled(monkeypatch):
    def make(model=None):
        model = model or Tempered()
        opt = ps.optim.sgd(lr=0.1)
        return model, opt, ps.make_train_step(model, None, opt, loss_fn=scaled_loss)

    change = lambda model, step: monkeypatch.setattr(sys.modules[__name__], "SCALE", 3.0)  # noqa: E731
    check_change(make, change, backend="inductor")


def test_changing_back_reuses_the_first_graph_and_eval_steps_follow_too():
    model = Tempered()
    opt = ps.optim.sgd(lr=0.1)
    evaluate = ps.compile(ps.make_eval_step(model, F.cross_entropy), backend="aot_eager")
    state = ps.TrainState.create(model, opt)
    batch = batches((10,), n=1)[0]
    losses = {}
    for t in (1.0, 0.5, 1.0, 0.5):
        model.temperature = t
        losses.setdefault(t, []).append(evaluate(state, batch)["loss"])
        expected = ps.make_eval_step(model, F.cross_entropy)(state, batch)["loss"]
        torch.testing.assert_close(losses[t][-1], expected, **TOL)
    assert not torch.allclose(losses[1.0][0], losses[0.5][0])
    with torch.compiler.set_stance("fail_on_recompile"):  # both values are compiled by now
        model.temperature = 1.0
        evaluate(state, batch)


def test_hooks_added_to_the_model_later_run_in_the_step():
    model = Tempered()
    opt = ps.optim.sgd(lr=0.1)
    eager = ps.make_eval_step(model, F.cross_entropy)
    compiled = ps.compile(eager, backend="aot_eager")
    state = ps.TrainState.create(model, opt)
    batch = batches((10,), n=1)[0]
    before = eager(state, batch)["loss"]
    compiled(state, batch)
    handle = model.body[2].register_forward_hook(lambda module, args, out: out * 0.0)
    try:
        expected = F.cross_entropy(torch.zeros(16, 4), batch[1])
        torch.testing.assert_close(eager(state, batch)["loss"], expected)
        torch.testing.assert_close(compiled(state, batch)["loss"], expected)
    finally:
        handle.remove()
    torch.testing.assert_close(compiled(state, batch)["loss"], before, **TOL)


def test_a_replaced_submodule_is_a_clear_error():
    model = Tempered()
    opt = ps.optim.sgd(lr=0.1)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    state = ps.TrainState.create(model, opt)
    model.body[1] = nn.ReLU()
    with pytest.raises(ValueError, match="submodules of Tempered changed.*make a new step"):
        step(state, batches((10,), n=1)[0])


def test_the_model_is_still_never_modified():
    """Sharing attributes with the skeleton does not let the step write into the model."""
    model = Tempered()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = ps.optim.sgd(lr=0.5)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    state = ps.TrainState.create(model, opt)
    model.temperature = 2.0
    step(state, batches((10,), n=1)[0])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training and all(p.device.type == "cpu" for p in model.parameters())
    assert model.temperature == 2.0


def test_a_container_of_the_models_own_tensors_is_copied_not_shared():
    """A list holding the model's parameters cannot be swapped for the state's tensors by
    functional_call: the skeleton keeps a meta copy of it (as before), never the user's
    real weights, while plain attributes are the user's objects."""
    model = Tempered()
    model.extra = [model.body[0].weight, 3]
    model.table = {"scale": 2.0}
    step = ps.make_train_step(model, F.cross_entropy, ps.optim.sgd(lr=0.1))
    body = step.skeleton.body[0]
    assert step.skeleton.extra[0] is body.weight and body.weight.device.type == "meta"
    assert step.skeleton.table is model.table
    model.extra = [model.body[2].weight]  # rebound: copied again on the next call
    step(ps.TrainState.create(model, ps.optim.sgd(lr=0.1)), batches((10,), n=1)[0])
    assert step.skeleton.extra[0] is step.skeleton.body[2].weight
