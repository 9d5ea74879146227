"""A compiled step never uses a stale value of a user's optimizer transform: a transform
whose update reads a mutable attribute (a closure or a bound method) recompiles when that
attribute changes, as plain torch.compile would (issue: chain(my_scale(knob), sgd(...))
kept using knob.scale = 1.0 after it was set to 0.0)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps
from purestep.optim.base import GradientTransformation


class Knob:
    def __init__(self) -> None:
        self.scale = 1.0


def closure_scale(knob: Knob) -> GradientTransformation:
    def init(params):
        return ()

    def update(updates, state, params):
        return {k: u * knob.scale for k, u in updates.items()}, state

    return GradientTransformation(init, update)


class MethodScale:
    def __init__(self) -> None:
        self.scale = 1.0

    def init(self, params):
        return ()

    def update(self, updates, state, params):
        return {k: u * self.scale for k, u in updates.items()}, state


@pytest.mark.parametrize("kind", ["closure", "method"])
def test_a_changed_transform_attribute_reaches_the_compiled_step(kind):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    knob: Knob | MethodScale
    if kind == "closure":
        knob = Knob()
        transform = closure_scale(knob)
    else:
        knob = MethodScale()
        transform = GradientTransformation(knob.init, knob.update)
    opt = ps.optim.chain(transform, ps.optim.sgd(lr=0.1))
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    compiled = ps.compile(eager, backend="aot_eager")
    state = ps.TrainState.create(model, opt)
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    for scale in (1.0, 0.0, 0.5):
        knob.scale = scale
        got, expected = compiled(state, batch)[0], eager(state, batch)[0]
        torch.testing.assert_close(got.params, expected.params, atol=1e-6, rtol=1e-6)
    assert torch.equal(compiled(state, batch)[0].params["weight"], expected.params["weight"])
    knob.scale = 0.0
    assert torch.equal(compiled(state, batch)[0].params["weight"], state.params["weight"])
