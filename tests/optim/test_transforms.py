"""Gradient transforms: clipping bitwise vs torch.nn.utils, decay, scale, trace."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import purestep as ps
from purestep.optim.transforms import (
    add_decayed_weights,
    clip_by_global_norm,
    clip_by_value,
    global_norm,
    scale,
    trace,
)
from tests.support import MODELS, batches, examples, run_bitwise

STEPS = 300


@settings(max_examples=examples(4, 20))
@given(
    max_norm=st.floats(1e-3, 5.0),
    norm_type=st.sampled_from([1.0, 2.0, 3.5, math.inf]),
    model_name=st.sampled_from(sorted(MODELS)),
    seed=st.integers(0, 1000),
)
def test_clip_by_global_norm_is_clip_grad_norm(max_norm, norm_type, model_name, seed):
    build, shape = MODELS[model_name]
    model = build(seed)
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-2, foreach=False)
    opt = ps.optim.chain(clip_by_global_norm(max_norm, norm_type), ps.optim.adam(lr=1e-2))

    def clip(m):
        torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm, norm_type)

    assert (
        run_bitwise(model, F.cross_entropy, torch_opt, opt, batches(shape), STEPS, seed, clip)
        is None
    )


@settings(max_examples=examples(3, 15))
@given(clip_value=st.floats(1e-4, 0.5), seed=st.integers(0, 1000))
def test_clip_by_value_is_clip_grad_value(clip_value, seed):
    build, shape = MODELS["mlp_dropout"]
    model = build(seed)
    torch_opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=False)
    opt = ps.optim.chain(clip_by_value(clip_value), ps.optim.sgd(lr=0.05, momentum=0.9))

    def clip(m):
        torch.nn.utils.clip_grad_value_(m.parameters(), clip_value)

    assert (
        run_bitwise(model, F.cross_entropy, torch_opt, opt, batches(shape), STEPS, seed, clip)
        is None
    )


def test_clipping_actually_clips():
    g = {"a": torch.full((3,), 4.0), "b": torch.full((4,), -3.0)}  # norm = sqrt(48 + 36)
    clipped, _ = clip_by_global_norm(1.0).update(g, (), g)
    torch.testing.assert_close(global_norm(clipped), torch.tensor(1.0), rtol=1e-5, atol=0)
    small, _ = clip_by_global_norm(100.0).update(g, (), g)
    assert all(torch.equal(small[k], g[k]) for k in g)
    valued, _ = clip_by_value(2.0).update(g, (), g)
    assert valued["a"].max() == 2.0 and valued["b"].min() == -2.0


def test_add_decayed_weights_then_sgd_is_sgd_weight_decay():
    build, shape = MODELS["cnn_batchnorm"]
    model = build(1)
    torch_opt = torch.optim.SGD(model.parameters(), lr=0.03, weight_decay=0.01, foreach=False)
    opt = ps.optim.chain(add_decayed_weights(0.01), ps.optim.sgd(lr=0.03))
    assert run_bitwise(model, F.cross_entropy, torch_opt, opt, batches(shape), 200) is None


def test_scale_and_trace_follow_their_formulas():
    p = {"w": torch.tensor([1.0, -2.0])}
    g = {"w": torch.tensor([0.5, 0.25])}
    opt = ps.optim.as_optimizer(ps.optim.chain(trace(0.9), scale(-0.1)))
    state = opt.init(p)
    p1, state = opt.step(g, state, p)
    torch.testing.assert_close(p1["w"], p["w"] - 0.1 * g["w"])
    p2, state = opt.step(g, state, p1)
    torch.testing.assert_close(p2["w"], p1["w"] - 0.1 * (0.9 * g["w"] + g["w"]))
    nest = trace(0.5, nesterov=True)
    out, s = nest.update(g, nest.init(p), p)
    torch.testing.assert_close(out["w"], g["w"] + 0.5 * g["w"])
    assert torch.equal(s.trace["w"], g["w"])


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (clip_by_global_norm, {"max_norm": -1.0}, "max_norm must be >= 0"),
        (clip_by_global_norm, {"max_norm": 1.0, "norm_type": 0.0}, "norm_type must be > 0"),
        (clip_by_global_norm, {"max_norm": "1"}, "max_norm must be a number"),
        (clip_by_value, {"clip_value": -0.1}, "clip_value must be >= 0"),
        (add_decayed_weights, {"weight_decay": -1.0}, "Invalid weight_decay value"),
        (trace, {"decay": -0.5}, "Invalid momentum value"),
        (scale, {"step_size": None}, "step_size must be a number"),
    ],
)
def test_bad_arguments(factory, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory(**kwargs)
