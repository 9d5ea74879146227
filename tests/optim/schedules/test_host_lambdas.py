"""LambdaLR lambdas that cannot be traced (Hugging Face's warm-up schedules) compile."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

import purestep as ps
from purestep._compat import counters


def linear_with_warmup(opt, num_warmup_steps, num_training_steps):
    """transformers.get_linear_schedule_with_warmup, as written there."""

    def lr_lambda(current_step: int):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        return max(
            0.0,
            float(num_training_steps - current_step)
            / float(max(1, num_training_steps - num_warmup_steps)),
        )

    return LambdaLR(opt, lr_lambda)


def cosine_with_warmup(opt, num_warmup_steps, num_training_steps, num_cycles=0.5):
    """transformers.get_cosine_schedule_with_warmup, as written there."""

    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        progress = float(current_step - num_warmup_steps) / float(
            max(1, num_training_steps - num_warmup_steps)
        )
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

    return LambdaLR(opt, lr_lambda)


def _torch_lrs(make, steps):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    topt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = make(topt, 3, 10)
    return model, topt, sched


def _check(make, compiled: bool):
    model, topt, sched = _torch_lrs(make, 9)
    opt = ps.optim.from_torch(topt, model, sched)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    step = ps.compile(step) if compiled else ps.vmap(step)
    state = ps.TrainState.create(model, opt)
    if not compiled:
        state = ps.stack_states([state, state])
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    expected, got = [], []
    state, _ = step(state, batch)  # the compilation
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(9):
            state, _ = step(state, batch)
            got.append(ps.optim.get_hyperparam(state.opt_state, "lr").reshape(-1)[0].item())
    for _ in range(10):
        topt.step()
        sched.step()
        expected.append(topt.param_groups[0]["lr"])
    assert got == expected[1:]  # bitwise torch's lr sequence, warm-up and decay
    assert counters["stats"]["unique_graphs"] == 0


def test_hf_linear_warmup_compiles_with_torchs_lrs():
    _check(linear_with_warmup, compiled=True)


@pytest.mark.slow
def test_hf_cosine_warmup_compiles_with_torchs_lrs():
    _check(cosine_with_warmup, compiled=True)


def test_branching_lambda_under_vmap():
    _check(linear_with_warmup, compiled=False)


def test_traceable_lambdas_stay_in_the_graph():
    fn = lambda epoch: 0.95**epoch  # noqa: E731
    assert ps.optim.schedules.lambda_lr(fn) is not None
    from purestep.optim.schedules.lambdas import _traced_or_host

    assert _traced_or_host(fn) is fn
    branching = lambda epoch: 1.0 if epoch < 3 else 0.5  # noqa: E731
    assert _traced_or_host(branching) is not branching
    assert _traced_or_host(branching)(torch.tensor(4.0, dtype=torch.float64)) == 0.5
