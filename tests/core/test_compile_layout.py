"""A compiled step returns its state in the layout it went in: no recompile on conv nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps
from purestep._compat import counters
from purestep.pytree import tree_leaves


def _conv_net() -> nn.Module:
    # 3 input channels: a channels-last weight is then not also contiguous (with 1 input
    # channel both layouts have the same strides, and the bug hid).
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(16, 3)
    )


def _run(opt, calls: int = 3):
    model = _conv_net()
    compiled = ps.compile(ps.make_train_step(model, F.cross_entropy, opt))
    state = ps.TrainState.create(model, opt)
    batch = (torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4,)))
    state, _ = compiled(state, batch)  # the one compilation
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(calls):
            state, _ = compiled(state, batch)
    assert counters["stats"]["unique_graphs"] == 0
    assert all(t.is_contiguous() for t in tree_leaves((state.params, state.opt_state)))


def test_sgd_momentum_on_a_conv_net_compiles_once():
    _run(ps.optim.sgd(lr=0.1, momentum=0.9))


@pytest.mark.slow
@pytest.mark.parametrize(
    "opt",
    [
        ps.optim.sgd(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
        ps.optim.adamw(lr=1e-2),
    ],
    ids=["sgd_nesterov_wd", "adamw"],
)
def test_rules_with_per_parameter_state_compile_once_on_a_conv_net(opt):
    _run(opt)
