"""purestep.optax against optax itself: same init, same batches, 100 steps, params within
1e-5, for every name; and everything it returns trains through make_train_step and vmap."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is imported: CPU, float32

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import purestep as ps
import purestep.optax as psx
from tests.support import batches, mlp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

STEPS = 100
ATOL = 1e-5
SHAPES = {"w1": (8, 4), "b1": (8,), "w2": (3, 8), "b2": (3,)}
MASK = {"w1": True, "b1": False, "w2": True, "b2": False}
LABELS = {"w1": "fast", "b1": "slow", "w2": "fast", "b2": "slow"}

# One entry per name: the same call on either module (optax's names and signatures).
TABLE = {
    "sgd": lambda o: o.sgd(0.05),
    "sgd_momentum_nesterov": lambda o: o.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda o: o.adam(1e-2, b1=0.8, b2=0.99),
    "adam_nesterov_eps_root": lambda o: o.adam(1e-2, eps_root=1e-8, nesterov=True),
    "adamw": lambda o: o.adamw(1e-2, weight_decay=0.1),
    "adamw_mask": lambda o: o.adamw(1e-2, weight_decay=0.1, mask=MASK),
    "rmsprop": lambda o: o.rmsprop(1e-2),
    "rmsprop_centered_momentum": lambda o: o.rmsprop(1e-3, centered=True, momentum=0.5),
    "rmsprop_bias_correction": lambda o: o.rmsprop(1e-3, eps_in_sqrt=False, bias_correction=True),
    "adagrad": lambda o: o.adagrad(0.05),
    "lion": lambda o: o.lion(1e-3, b2=0.95),
    "chain_clip_by_global_norm": lambda o: o.chain(o.clip_by_global_norm(0.5), o.sgd(0.05)),
    "clip": lambda o: o.chain(o.clip(0.02), o.sgd(0.05)),
    "add_decayed_weights_scale": lambda o: o.chain(o.add_decayed_weights(0.1), o.scale(-0.05)),
    "scale_by_adam": lambda o: o.chain(o.scale_by_adam(b1=0.85), o.scale(-1e-2)),
    "scale_by_schedule": lambda o: o.chain(
        o.scale_by_adam(),
        o.scale_by_schedule(o.piecewise_constant_schedule(-1e-2, {30: 0.5, 60: 0.1})),
    ),
    "inject_hyperparams": lambda o: o.inject_hyperparams(o.adam)(
        learning_rate=o.exponential_decay(1e-2, 10, 0.8, staircase=True), b1=0.9
    ),
    "multi_steps": lambda o: o.MultiSteps(o.adam(1e-2), every_k_schedule=3),
    "multi_steps_sum": lambda o: o.MultiSteps(o.sgd(0.02), 4, use_grad_mean=False),
    "apply_if_finite": lambda o: o.apply_if_finite(o.adam(1e-2), 3),
    "masked": lambda o: o.chain(
        o.masked(o.add_decayed_weights(0.5), lambda p: {k: v.ndim > 1 for k, v in p.items()}),
        o.sgd(0.05),
    ),
    "multi_transform": lambda o: o.multi_transform(
        {"fast": o.adam(1e-2), "slow": o.sgd(0.01)}, LABELS
    ),
    "constant_schedule": lambda o: o.sgd(o.constant_schedule(0.05)),
    "linear_schedule": lambda o: o.sgd(o.linear_schedule(0.1, 0.01, 60, transition_begin=10)),
    "cosine_decay_schedule": lambda o: o.adam(o.cosine_decay_schedule(1e-2, 80, alpha=0.1)),
    "warmup_cosine_decay_schedule": lambda o: o.adamw(
        o.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100, end_value=1e-4), weight_decay=0.1
    ),
    "exponential_decay": lambda o: o.sgd(
        o.exponential_decay(0.1, 20, 0.5, transition_begin=5, end_value=0.02)
    ),
    "join_schedules": lambda o: o.sgd(
        o.join_schedules([o.constant_schedule(0.1), o.linear_schedule(0.1, 0.0, 50)], [20])
    ),
    "piecewise_constant_schedule": lambda o: o.sgd(
        o.piecewise_constant_schedule(0.1, {25: 0.5, 50: 0.2})
    ),
}


def _init_and_batches():
    rng = np.random.default_rng(0)
    init = {k: (rng.standard_normal(s) * 0.5).astype(np.float32) for k, s in SHAPES.items()}
    data = [
        (
            rng.standard_normal((16, 4)).astype(np.float32),
            rng.standard_normal((16, 3)).astype(np.float32),
        )
        for _ in range(STEPS)
    ]
    return init, data


def _torch_loss(p, x, y):
    h = torch.tanh(x @ p["w1"].T + p["b1"])
    return ((h @ p["w2"].T + p["b2"] - y) ** 2).mean()


def _jax_loss(p, x, y):
    h = jnp.tanh(x @ p["w1"].T + p["b1"])
    return ((h @ p["w2"].T + p["b2"] - y) ** 2).mean()


_JAX_GRAD = []


def _jax_grad():
    if not _JAX_GRAD:
        _JAX_GRAD.append(jax.jit(jax.grad(_jax_loss)))
    return _JAX_GRAD[0]


def _run_torch(opt, init, data):
    params = {k: torch.from_numpy(v.copy()) for k, v in init.items()}
    grad = torch.func.grad(_torch_loss)
    state = opt.init(params)
    for x, y in data:
        grads = grad(params, torch.from_numpy(x), torch.from_numpy(y))
        updates, state = opt.update(grads, state, params)
        params = psx.apply_updates(params, updates)
    return {k: v.numpy() for k, v in params.items()}


def _run_optax(opt, init, data):
    params = {k: jnp.asarray(v) for k, v in init.items()}

    @jax.jit  # compiles the optimizer alone: the gradient's graph is compiled once
    def apply(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for x, y in data:
        params, state = apply(params, state, _jax_grad()(params, x, y))
    return {k: np.asarray(v) for k, v in params.items()}


@pytest.mark.parametrize("name", list(TABLE))
def test_matches_optax(name):
    init, data = _init_and_batches()
    ours = _run_torch(TABLE[name](psx), init, data)
    theirs = _run_optax(TABLE[name](optax), init, data)
    for k in SHAPES:
        assert not np.allclose(ours[k], init[k]), f"{name}: {k} never moved"
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=ATOL, err_msg=f"{name} {k}")


# An optax training loop as a JAX user writes it; only the header (imports, the model's
# gradient function) differs between the two runs below.
PORTED_LOOP = """
def decay_mask(params):
    return tree_map(lambda p: p.ndim > 1, params)

schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0, peak_value=1e-2, warmup_steps=10, decay_steps=50, end_value=1e-4
)
optimizer = optax.MultiSteps(
    optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(learning_rate=schedule, b1=0.9, b2=0.99, weight_decay=0.05, mask=decay_mask),
    ),
    every_k_schedule=2,
)


@jit
def train_step(params, opt_state, x, y):
    grads = grad_fn(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


opt_state = optimizer.init(params)
updated = []
for x, y in batches:
    params, opt_state = train_step(params, opt_state, x, y)
    updated.append(bool(optimizer.has_updated(opt_state)))
"""


def test_a_ported_optax_loop_runs_unchanged_and_matches_optax():
    init, data = _init_and_batches()
    ours = {
        "optax": psx,
        "tree_map": ps.pytree.tree_map,
        "jit": lambda f: f,  # eager; ps.compile is for whole train steps
        "grad_fn": lambda p, x, y: torch.func.grad(_torch_loss)(
            p, torch.from_numpy(x), torch.from_numpy(y)
        ),
        "params": {k: torch.from_numpy(v.copy()) for k, v in init.items()},
        "batches": data,
    }
    theirs = {
        "optax": optax,
        "tree_map": jax.tree_util.tree_map,
        "jit": jax.jit,
        "grad_fn": jax.grad(_jax_loss),
        "params": {k: jnp.asarray(v) for k, v in init.items()},
        "batches": data,
    }
    exec(PORTED_LOOP, ours)
    exec(PORTED_LOOP, theirs)
    assert ours["updated"] == theirs["updated"] == [i % 2 == 1 for i in range(STEPS)]
    for k in SHAPES:
        np.testing.assert_allclose(
            ours["params"][k].numpy(), np.asarray(theirs["params"][k]), rtol=0, atol=ATOL
        )


@pytest.mark.parametrize("name", list(TABLE))
def test_trains_through_make_train_step_and_vmap(name):
    """What purestep.optax returns is a GradientTransformation: a train step takes it, and
    each member of a vmapped sweep equals its solo run."""
    model = mlp(p=0.0)
    renamed = {"w1": "0.weight", "b1": "0.bias", "w2": "3.weight", "b2": "3.bias"}
    global MASK, LABELS
    saved = MASK, LABELS
    MASK = {renamed[k]: v for k, v in saved[0].items()}
    LABELS = {renamed[k]: v for k, v in saved[1].items()}
    try:
        opt = TABLE[name](psx)
    finally:
        MASK, LABELS = saved
    step = ps.make_train_step(model, F.cross_entropy, opt)
    states = [ps.TrainState.create(mlp(seed=s, p=0.0), opt, seed=s) for s in (0, 1)]
    stacked = ps.stack_states(states)
    vstep = ps.vmap(step)
    for batch in batches((10,), n=3):
        stacked, metrics = vstep(stacked, batch)
        for i in range(2):
            states[i], m = step(states[i], batch)
            torch.testing.assert_close(metrics["loss"][i], m["loss"], rtol=1e-5, atol=1e-6)
    for i, single in enumerate(ps.unstack_state(stacked)):
        torch.testing.assert_close(single.params, states[i].params, rtol=1e-5, atol=1e-6)


def test_set_hyperparam_reaches_inject_hyperparams():
    opt = psx.inject_hyperparams(psx.adam)(learning_rate=1e-2, b1=0.9)
    state = opt.init({"w": torch.ones(3)})
    state = ps.optim.set_hyperparam(state, "learning_rate", 0.5)
    assert float(ps.optim.get_hyperparam(state, "learning_rate")) == 0.5
    updates, _ = opt.update({"w": torch.ones(3)}, state, {"w": torch.ones(3)})
    torch.testing.assert_close(updates["w"], torch.full((3,), -0.5), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_ported_optimizer_compiles():
    model = mlp(p=0.0)
    opt = psx.MultiSteps(
        psx.chain(
            psx.clip_by_global_norm(1.0),
            psx.adamw(psx.warmup_cosine_decay_schedule(0.0, 1e-2, 3, 10), mask=MASK_BY_NDIM),
        ),
        every_k_schedule=2,
    )
    step = ps.make_train_step(model, F.cross_entropy, opt)
    fast = ps.compile(step)
    eager_state = compiled_state = ps.TrainState.create(model, opt)
    for batch in batches((10,), n=6):
        eager_state, em = step(eager_state, batch)
        compiled_state, cm = fast(compiled_state, batch)
        torch.testing.assert_close(cm["loss"], em["loss"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled_state.params, eager_state.params, rtol=1e-4, atol=1e-5)


def MASK_BY_NDIM(params):
    return {k: v.ndim > 1 for k, v in params.items()}


def test_apply_if_finite_skips_like_optax():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(5).astype(np.float32) for _ in range(12)]
    for t in (3, 4, 8, 9, 10):
        grads[t][2] = np.nan
    init = rng.standard_normal(5).astype(np.float32)

    def run(o, wrap, unwrap):
        opt = o.apply_if_finite(o.adam(1e-2), max_consecutive_errors=2)
        params = {"w": wrap(init)}
        state = opt.init(params)
        for g in grads:
            updates, state = opt.update({"w": wrap(g)}, state, params)
            params = o.apply_updates(params, updates)
        counts = (state.notfinite_count, state.total_notfinite, state.last_finite)
        return unwrap(params["w"]), [int(c) for c in counts]

    ours, our_counts = run(psx, lambda a: torch.from_numpy(a.copy()), lambda t: t.numpy())
    theirs, their_counts = run(optax, jnp.asarray, np.asarray)
    assert our_counts == their_counts == [0, 5, 1]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL)
    # the third NaN in a row exceeded max_consecutive_errors=2 and was applied, as in optax
    assert np.isnan(ours[2]) and np.isnan(theirs[2])
