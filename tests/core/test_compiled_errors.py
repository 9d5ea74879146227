"""Compiled steps fail exactly as eager ones do: same verdict, same exception type, same
message, for a table of bad inputs; rejected inputs compile nothing, and a donated state
is consumed only when the graph actually ran."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from tests.support import batches, mlp

X, Y = batches((10,), n=1)[0]

BAD_BATCHES = {
    "float64 inputs": (X.double(), Y),
    "int32 targets": (X, Y.int()),
    "float targets": (X, Y.float()),
    "target out of range": (X, Y + 100),
    "negative target": (X, Y - 5),
    "wrong feature size": (torch.randn(16, 11), Y),
    "1-d inputs": (torch.randn(10), Y),
    "3-d inputs": (torch.randn(2, 16, 10), Y),
    "fewer targets": (X, Y[:15]),
    "not a tuple": X,
    "one element": (X,),
    "a non-tensor leaf": (X, [1, 2]),
    "another device": (X.to("meta"), Y),
}


def outcome(step, state, batch):
    try:
        step(state, batch)
    except Exception as err:  # any failure: the point is to compare them
        return type(err), str(err)
    return None


@pytest.fixture(scope="module")
def steps():
    model = mlp(p=0.0)
    opt = ps.optim.sgd(lr=0.1, momentum=0.9)
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    compiled = ps.compile(eager)
    state = ps.TrainState.create(model, opt)
    compiled(state, (X, Y))  # warm: the good signature has a graph
    return model, opt, eager, compiled, state


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_compiled_fails_like_eager(steps, case):
    _, _, eager, compiled, state = steps
    expected = outcome(eager, state, BAD_BATCHES[case])
    assert expected is not None, "the eager step should reject this batch"
    assert outcome(compiled, state, BAD_BATCHES[case]) == expected


def test_rejected_batches_trace_nothing_and_the_step_still_works(steps):
    _, _, eager, compiled, state = steps
    with torch.compiler.set_stance("fail_on_recompile"):
        for batch in BAD_BATCHES.values():
            outcome(compiled, state, batch)
        got, _ = compiled(state, (X, Y))
    want, _ = eager(state, (X, Y))
    torch.testing.assert_close(got.params, want.params, atol=1e-6, rtol=1e-6)


def test_loss_fn_errors_and_eval_steps_match_too():
    model = mlp(p=0.0)
    opt = ps.optim.sgd(lr=0.1)
    state = ps.TrainState.create(model, opt)

    def per_sample(apply, params, buffers, batch, rng):
        x, y = batch
        return F.cross_entropy(apply(params, buffers, x), y, reduction="none")

    def as_int(apply, params, buffers, batch, rng):
        x, y = batch
        return F.cross_entropy(apply(params, buffers, x), y).long()

    for loss_fn in (per_sample, as_int):
        eager = ps.make_train_step(model, None, opt, loss_fn=loss_fn)
        compiled = ps.compile(eager, backend="aot_eager")
        expected = outcome(eager, state, (X, Y))
        assert expected is not None and expected[0] is ValueError
        assert outcome(compiled, state, (X, Y)) == expected
    evaluate = ps.make_eval_step(model, F.cross_entropy)
    compiled_eval = ps.compile(evaluate, backend="aot_eager")
    compiled_eval(state, (X, Y))
    for case in ("int32 targets", "target out of range", "wrong feature size"):
        expected = outcome(evaluate, state, BAD_BATCHES[case])
        assert expected is not None
        assert outcome(compiled_eval, state, BAD_BATCHES[case]) == expected, case


def test_vmapped_compiled_fails_like_vmapped_eager():
    model = mlp(p=0.0)
    opt = ps.optim.sgd(lr=0.1)
    vstep = ps.vmap(ps.make_train_step(model, F.cross_entropy, opt))
    compiled = ps.compile(vstep, backend="aot_eager")
    stacked = ps.stack_states([ps.TrainState.create(model, opt, seed=s) for s in (0, 1)])
    compiled(stacked, (X, Y))
    for case in ("float64 inputs", "wrong feature size", "fewer targets", "int32 targets"):
        expected = outcome(vstep, stacked, BAD_BATCHES[case])  # vmapped eager takes int32
        assert expected is not None or case == "int32 targets", case
        assert outcome(compiled, stacked, BAD_BATCHES[case]) == expected, case


def test_a_failure_inside_the_graph_names_both(steps):
    """The out-of-range class index fails inside an inductor kernel on a known signature:
    the eager step's message is raised, the kernel's assertion is kept in a note."""
    _, _, _, compiled, state = steps
    with pytest.raises(ValueError, match="Target 102 is out of bounds") as info:
        compiled(state, BAD_BATCHES["target out of range"])
    notes = getattr(info.value, "__notes__", [])
    assert any("compiled step failed on the same input with RuntimeError" in n for n in notes)
