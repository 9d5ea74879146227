"""Donation never corrupts a state silently: a state handed to a donated compiled step is
consumed (JAX's donated-buffer semantics) whether the call succeeds or fails inside the
graph, and any later use of it is a clear ValueError; a call refused by the checks before
the graph runs consumes nothing."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep.core import state as state_module
from tests.support import batches, mlp, tree_equal

CONSUMED = "was donated to a compiled step"


@pytest.fixture(scope="module")
def donated_mlp():
    model = mlp(p=0.0)
    opt = ps.optim.adam(lr=1e-2)
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    return model, opt, eager, ps.compile(eager, donate=True)


def uses(model, eager, state, batch, tmp_path):
    """Every way to use a state after the fact."""
    return {
        "eager step": lambda: eager(state, batch),
        "eval step": lambda: ps.make_eval_step(model, F.cross_entropy)(state, batch),
        "save_state": lambda: ps.save_state(tmp_path / "s.safetensors", state),
        "state_to_tensors": lambda: ps.core.state_to_tensors(state),
        "load_state_into": lambda: ps.load_state_into(mlp(p=0.0), state),
        "stack_states": lambda: ps.stack_states([state, state]),
        "a _replace'd copy": lambda: eager(state._replace(rng=state.rng.clone()), batch),
    }


def test_a_call_failing_inside_the_graph_consumes_the_state(donated_mlp, tmp_path):
    model, opt, eager, donated = donated_mlp
    x, y = batches((10,), n=1)[0]
    state, _ = donated(ps.TrainState.create(model, opt), (x, y))
    with pytest.raises(ValueError, match=r"Target \d+ is out of bounds") as info:
        donated(state, (x, y + 100))  # class index out of range: fails inside the graph
    assert any("state given to this donated call is consumed" in n for n in info.value.__notes__)
    with pytest.raises(ValueError, match=CONSUMED):
        donated(state, (x, y))
    for name, use in uses(model, eager, state, (x, y), tmp_path).items():
        with pytest.raises(ValueError, match=CONSUMED):
            use()
        assert not (tmp_path / "s.safetensors").exists(), name


def test_a_successful_call_consumes_its_input_and_returns_a_fresh_state(donated_mlp, tmp_path):
    model, opt, eager, donated = donated_mlp
    data = batches((10,), n=3)
    start = ps.TrainState.create(model, opt, seed=1)
    reference = start
    for batch in data:
        reference, _ = eager(reference, batch)
    state = ps.core.pytree.tree_clone(start)
    first = state
    for batch in data:
        state, _ = donated(state, batch)
    torch.testing.assert_close(state.params, reference.params, atol=1e-6, rtol=1e-6)
    assert int(state.step) == 3 and int(first.step) == 0, "the input's step is never written"
    with pytest.raises(ValueError, match=CONSUMED):
        donated(first, data[0])
    ps.save_state(tmp_path / "ok.safetensors", state)  # the returned state is fine


def test_a_call_refused_before_the_graph_consumes_nothing(donated_mlp):
    model, opt, _, donated = donated_mlp
    x, y = batches((10,), n=1)[0]
    state, _ = donated(ps.TrainState.create(model, opt), (x, y))
    before = ps.core.pytree.tree_clone(state)
    with pytest.raises(ValueError, match="batch must be a tuple"):
        donated(state, x)
    with pytest.raises(ValueError, match="on meta"):
        donated(state, (x.to("meta"), y))
    # A new signature the eager step rejects never reaches the graph (was: the graph ran
    # half way and advanced state.step and the optimizer's step count in place).
    with pytest.raises(ValueError, match="must have the same dtype"):
        donated(state, (x.double(), y))
    with pytest.raises(ValueError, match="expected target dtype"):
        donated(state, (x, y.int()))
    assert tree_equal(state, before)
    state, _ = donated(state, (x, y))  # still usable
    assert int(state.step) == 2


def test_the_registry_keeps_nothing_alive(donated_mlp):
    model, opt, _, donated = donated_mlp
    batch = batches((10,), n=1)[0]
    gc.collect()
    known = len(state_module._DONATED)
    state = ps.TrainState.create(model, opt)
    steps = []
    for _ in range(3):
        steps.append(weakref.ref(state.step))
        state, _ = donated(state, batch)
    gc.collect()
    assert all(ref() is None for ref in steps), "a consumed state was kept alive"
    assert len(state_module._DONATED) == known
