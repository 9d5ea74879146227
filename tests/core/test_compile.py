"""purestep.compile: fullgraph, zero recompiles while lr changes, per-step tolerance vs eager.

Documented per-step tolerance (one step from the same state, compiled vs eager, CPU float32):
loss within 1e-6, gradients, buffers and parameters within 1e-6 absolute (observed: <= 2.4e-7
for the loss, <= 7.5e-8 for gradients and parameters). Dropout masks are identical (same key
out). Exception, by design of Adam: a parameter whose true gradient is zero (a bias feeding
BatchNorm) gets rounding-noise gradients that Adam normalises to steps of size ~lr, so
there the two differ by O(lr).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import purestep as ps
from purestep._compat import counters
from tests.support import batches, cnn, examples, mlp, tree_equal

TOL = {"atol": 1e-6, "rtol": 1e-6}


@pytest.fixture(scope="module")
def adam_mlp():
    model = mlp(p=0.3)
    opt = ps.optim.adam(lr=1e-2, weight_decay=1e-3)
    step = ps.make_train_step(model, F.cross_entropy, opt, return_grads=True)
    return model, opt, step, ps.compile(step)


def test_fullgraph_and_zero_recompiles_over_300_steps_with_changing_lr(adam_mlp):
    model, opt, _, compiled = adam_mlp
    state = ps.TrainState.create(model, opt, seed=0)
    data = batches((10,), n=8)
    state, _ = compiled(state, data[0])  # warm-up: the one compilation
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in range(300):
            lr = 1e-2 * (0.99**t)
            state = state._replace(opt_state=ps.optim.set_hyperparam(state.opt_state, "lr", lr))
            state, metrics = compiled(state, data[t % 8])
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 0, "a new graph was compiled after warm-up"
    assert int(state.step) == 301 and torch.isfinite(metrics["loss"])
    assert float(ps.optim.get_hyperparam(state.opt_state, "lr")) == pytest.approx(1e-2 * 0.99**299)


def test_the_no_recompile_stance_bites(adam_mlp):
    """What the no-recompile tests rely on: under torch's "fail_on_recompile" stance, a
    call that needs a new graph of a compiled step (another batch size) is an error."""
    model, opt, _, compiled = adam_mlp
    state = ps.TrainState.create(model, opt, seed=0)
    x, y = batches((10,), n=1)[0]
    compiled(state, (x, y))
    with (
        torch.compiler.set_stance("fail_on_recompile"),
        pytest.raises(RuntimeError, match="recompil"),
    ):
        compiled(state, (x[:8], y[:8]))


def test_compiled_step_matches_eager_per_step(adam_mlp):
    model, opt, eager, compiled = adam_mlp
    state = ps.TrainState.create(model, opt, seed=1)
    data = batches((10,), n=8, seed=1)
    for t in range(20):
        e_state, e_m = eager(state, data[t % 8])
        c_state, c_m = compiled(state, data[t % 8])
        torch.testing.assert_close(c_m["loss"], e_m["loss"], **TOL)
        torch.testing.assert_close(c_m["grads"], e_m["grads"], **TOL)
        torch.testing.assert_close(c_state.params, e_state.params, **TOL)
        torch.testing.assert_close(c_state.opt_state, e_state.opt_state, **TOL)
        assert torch.equal(c_state.rng, e_state.rng), "compiled and eager drew different masks"
        assert torch.equal(c_state.step, e_state.step)
        state = e_state  # teacher-forced: each step measured alone


@settings(max_examples=examples(5, 25))
@given(seed=st.integers(0, 2**31 - 1), warm=st.integers(0, 3))
def test_compiled_step_is_pure(adam_mlp, seed, warm):
    model, opt, _, compiled = adam_mlp
    state = ps.TrainState.create(model, opt, seed=seed)
    data = batches((10,), n=4, seed=seed % 100)
    for t in range(warm):
        state, _ = compiled(state, data[t])
    batch = data[-1]
    before = ps.core.pytree.tree_clone((state, batch))
    versions = [t._version for t in ps.core.pytree.tree_leaves((state, batch))]
    a = compiled(state, batch)
    b = compiled(state, batch)
    assert tree_equal(a, b)
    assert tree_equal((state, batch), before)
    assert [t._version for t in ps.core.pytree.tree_leaves((state, batch))] == versions


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["sgd", "adamw"])
def test_compiled_cnn_batchnorm_per_step(rule):
    model = cnn()
    opt = ps.optim.sgd(lr=0.05, momentum=0.9) if rule == "sgd" else ps.optim.adamw(lr=1e-2)
    eager = ps.make_train_step(model, F.cross_entropy, opt, return_grads=True)
    compiled = ps.compile(eager)
    state = ps.TrainState.create(model, opt)
    data = batches((1, 6, 6), n=4)
    for t in range(10):
        e_state, e_m = eager(state, data[t % 4])
        c_state, c_m = compiled(state, data[t % 4])
        torch.testing.assert_close(c_m["grads"], e_m["grads"], **TOL)
        torch.testing.assert_close(c_state.buffers, e_state.buffers, **TOL)
        if rule == "sgd":  # Adam amplifies the conv bias's noise gradient (see module doc)
            torch.testing.assert_close(c_state.params, e_state.params, **TOL)
        state = e_state


def test_compiled_conv_net_keeps_the_state_layout_and_compiles_once():
    """Under compile, 4-d weights enter the model channels-last (inductor's fast CPU conv
    layout) inside the differentiated function: grads, params and optimizer state come back
    in the state's own (NCHW) layout, so the next call hits the same graph."""
    model = cnn()
    opt = ps.optim.sgd(lr=0.05, momentum=0.9)
    compiled = ps.compile(ps.make_train_step(model, F.cross_entropy, opt, return_grads=True))
    state = ps.TrainState.create(model, opt)
    data = batches((1, 6, 6), n=4)
    state, _ = compiled(state, data[0])
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in range(1, 6):
            state, metrics = compiled(state, data[t % 4])
    assert counters["stats"]["unique_graphs"] == 0
    for name, tensor in [*state.params.items(), *metrics["grads"].items()]:
        assert tensor.is_contiguous(), name
    assert all(t.is_contiguous() for t in torch.utils._pytree.tree_leaves(state.opt_state))


def test_compiled_eval_step():
    model = cnn()
    opt = ps.optim.sgd()
    state = ps.TrainState.create(model, opt)
    evaluate = ps.make_eval_step(model, F.cross_entropy, metrics_fn=ps.core.classification_metrics)
    compiled = ps.compile(evaluate)
    batch = batches((1, 6, 6), n=1, batch=32)[0]
    got, expected = compiled(state, batch), evaluate(state, batch)
    torch.testing.assert_close(got, expected, **TOL)
    with pytest.raises(ValueError, match="already compiled"):
        ps.compile(compiled)


def test_weight_decay_survives_inductors_addmm_rewrite():
    """torch 2.13's inductor rewrites add(mm(a, b), y, alpha=c) to addmm(y, a, b), dropping c;
    the rules must not hand it that pattern (weight decay on a Linear weight's gradient,
    no other use of the gradient: return_grads=False, static lr)."""
    model = mlp(p=0.0)
    opt = ps.optim.sgd(lr=0.1, weight_decay=0.5, dynamic=())
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    compiled = ps.compile(eager)
    state = ps.TrainState.create(model, opt)
    batch = batches((10,), n=1)[0]
    e_state, _ = eager(state, batch)
    c_state, _ = compiled(state, batch)
    torch.testing.assert_close(c_state.params, e_state.params, **TOL)


@pytest.mark.parametrize("batch_size", [8, 12])
def test_dropout_mask_is_drawn_before_it_is_read(batch_size):
    """torch 2.13's inductor reorders for peak memory and can run eager's in-place
    ``bernoulli_`` (fallback_random) after the fused kernel that reads the mask: with
    BatchNorm + Dropout + SGD-momentum at batch 8-16 the loss was off by 0.06-0.15 on the
    first step. purestep.compile keeps the scheduler's order."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(32, 3),
    )
    opt = ps.optim.sgd(lr=0.1, momentum=0.9)
    eager = ps.make_train_step(model, torch.nn.CrossEntropyLoss(), opt)
    state = ps.TrainState.create(model, opt, seed=3)
    g = torch.Generator().manual_seed(1)
    batch = (
        torch.randn(batch_size, 6, generator=g),
        torch.randint(0, 3, (batch_size,), generator=g),
    )
    e_state, e_metrics = eager(state, batch)
    c_state, c_metrics = ps.compile(eager)(state, batch)
    torch.testing.assert_close(c_metrics["loss"], e_metrics["loss"], **TOL)
    torch.testing.assert_close(c_state.params, e_state.params, **TOL)


def test_donated_state_gives_the_same_results_in_the_old_memory(adam_mlp):
    model, opt, eager, compiled = adam_mlp
    donated = ps.compile(eager, donate=True)
    data = batches((10,), n=4)
    a = ps.TrainState.create(model, opt, seed=3)
    b = ps.core.pytree.tree_clone(a)
    storage = b.params["0.weight"].data_ptr()
    for t in range(10):
        a, ma = compiled(a, data[t % 4])
        b, mb = donated(b, data[t % 4])
        torch.testing.assert_close(mb["loss"], ma["loss"], rtol=0, atol=0)
    assert tree_equal(a.params, b.params) and tree_equal(a.opt_state, b.opt_state)
    assert b.params["0.weight"].data_ptr() == storage, "donation reuses the old state's memory"
    with pytest.raises(ValueError, match="donate=True is for train steps"):
        ps.compile(ps.make_eval_step(model, F.cross_entropy), donate=True)


def test_cpp_wrapper_option_gives_the_same_bits(adam_mlp):
    """``options={"cpp_wrapper": True}`` (inductor's C++ launcher instead of Python; faster
    per call, slower to compile) runs the same kernels: same results, donation included."""
    model, opt, eager, compiled = adam_mlp
    cpp = ps.compile(eager, donate=True, options={"cpp_wrapper": True})
    data = batches((10,), n=4)
    a = ps.TrainState.create(model, opt, seed=5)
    b = ps.core.pytree.tree_clone(a)
    for t in range(6):
        a, ma = compiled(a, data[t % 4])
        b, mb = cpp(b, data[t % 4])
        assert torch.equal(ma["loss"], mb["loss"])
    assert tree_equal(a.params, b.params) and tree_equal(a.opt_state, b.opt_state)


def test_compiled_step_recompiles_for_a_new_batch_structure():
    """Dynamo's guards are trimmed to tensor metadata; the input structure is keyed by
    purestep.compile itself, so a batch with an extra input gets its own graph."""
    model = mlp(p=0.0)
    opt = ps.optim.sgd(lr=0.1)

    def loss_fn(apply, params, buffers, batch, rng):
        x, y, *weight = batch
        losses = F.cross_entropy(apply(params, buffers, x), y, reduction="none")
        return (losses * weight[0]).mean() if weight else losses.mean()

    eager = ps.make_train_step(model, None, opt, loss_fn=loss_fn)
    compiled = ps.compile(eager)
    state = ps.TrainState.create(model, opt)
    x, y = batches((10,), n=1)[0]
    for batch in [(x, y), (x, y, torch.full((16,), 2.0)), (x, y)]:
        _, got = compiled(state, batch)
        _, want = eager(state, batch)
        torch.testing.assert_close(got["loss"], want["loss"], **TOL)
