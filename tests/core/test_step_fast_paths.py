"""The eager step's fast paths give what the general ones give (issue 14).

The skeleton swap (``purestep.core.step._Swap``) stands in for ``functional_call``, the
batch check has a fast path for ``(inputs, targets)`` tuples, and ``_detach`` walks
plain containers itself. Each is compared bitwise with the general path, on models with
tied weights, BatchNorm buffers, frozen parameters and dropout.
"""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

import purestep as ps
from purestep.core import step as step_module
from purestep.core.pytree import tree_bitwise_equal


class Tied(nn.Module):
    """Tied weights, a BatchNorm (buffers), a frozen parameter, dropout, a shared child."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 6, bias=False)
        self.norm = nn.BatchNorm1d(6)
        self.frozen = nn.Linear(6, 6)
        self.frozen.weight.requires_grad_(False)
        self.shared = nn.Linear(6, 6)
        self.twice = nn.Sequential(self.shared, nn.ReLU(), self.shared)
        self.head = nn.Linear(6, 6, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.norm(self.embed(x)))
        return self.head(self.twice(self.frozen(h)))


def _run(steps: int, general: bool, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls = [0]
    real = step_module.functional_call

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(step_module, "functional_call", counted)
        if general:  # every call through functional_call, the general path
            patch.setattr(step_module._Swap, "_values", lambda self, p, b: None)
        torch.manual_seed(0)
        model = Tied()
        opt = ps.optim.adam(lr=1e-2)
        step = ps.make_train_step(model, nn.MSELoss(), opt, return_grads=True)
        state = ps.TrainState.create(model, opt, seed=3)
        g = torch.Generator().manual_seed(0)
        out: list[object] = []
        for _ in range(steps):
            batch = (torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g))
            state, metrics = step(state, batch)
            out.append(metrics)
        out.append(state)
    assert calls[0] == (steps if general else 0)  # the fast path really ran
    return out


def test_swap_is_functional_call_bitwise(monkeypatch):
    fast, general = _run(5, False, monkeypatch), _run(5, True, monkeypatch)
    assert tree_bitwise_equal(fast, general)
    state = fast[-1]
    assert "head.weight" not in state.params  # tied: one parameter, as torch lists it
    assert int(state.buffers["norm.num_batches_tracked"]) == 5


def test_swap_covers_every_slot_and_restores_the_stand_ins():
    model = Tied()
    step = ps.make_train_step(model, nn.MSELoss(), ps.optim.sgd(lr=0.1))
    swap = step._swap
    skeleton_tensors = {id(t) for _, _, t in swap.slots}
    # tied and shared slots: embed/head weight twice; the shared child as shared, twice.0, twice.2
    assert len(swap.slots) == len(list(step.skeleton.named_parameters(remove_duplicate=False))) + (
        len(list(step.skeleton.named_buffers(remove_duplicate=False)))
    )
    assert swap.keys.count("embed.weight") == 2 and swap.keys.count("shared.weight") == 3
    state = ps.TrainState.create(model, ps.optim.sgd(lr=0.1))
    with pytest.raises(ValueError, match="rejected the batch inputs"):
        step(state, (torch.randn(8, 5), torch.randn(8, 6)))  # wrong feature size
    after = [t for _, _, t in swap.slots]
    assert {id(t) for t in after} == skeleton_tensors
    assert all(t.device.type == "meta" for t in after)


def test_loss_fn_with_its_own_dicts_goes_through_functional_call():
    model = nn.Sequential(nn.Linear(3, 2))
    opt = ps.optim.sgd(lr=0.1)
    seen: list[str] = []

    def loss_fn(apply, params, buffers, batch, rng):
        x, y = batch
        half = {k: v * 0.5 for k, v in params.items()}
        out = apply(half, buffers, x)  # the state's keys, other tensors: fast path
        extra = apply({**params, "bonus": torch.ones(1)}, buffers, x)  # an extra key
        seen.append("ok")
        return ((out - y) ** 2).mean() + ((extra - y) ** 2).mean()

    step = ps.make_train_step(model, None, opt, loss_fn=loss_fn)
    state = ps.TrainState.create(model, opt)
    batch = (torch.randn(4, 3), torch.randn(4, 2))
    _, metrics = step(state, batch)
    assert seen == ["ok"]
    x, y = batch
    w, b = state.params["0.weight"], state.params["0.bias"]
    expected = (((x @ (w * 0.5).T + b * 0.5) - y) ** 2).mean() + (((x @ w.T + b) - y) ** 2).mean()
    assert torch.allclose(metrics["loss"], expected)
    assert not hasattr(step.skeleton, "bonus")  # functional_call removed what it set


def test_batch_fast_path_keeps_the_checks():
    model = nn.Sequential(nn.Linear(3, 2))
    opt = ps.optim.sgd(lr=0.1)
    step = ps.make_train_step(model, nn.MSELoss(), opt)
    state = ps.TrainState.create(model, opt)
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    with pytest.raises(
        ValueError, match=r"batch tensor \(4, 2\) is on meta but the state is on cpu"
    ):
        step(state, (x, y.to("meta")))
    with pytest.raises(ValueError, match="at least 2 tensors"):
        step(state, (x,))
    with pytest.raises(TypeError, match=r"batch\[1\] must be a torch.Tensor"):
        step(state, (x, 3.0))
    fast = step(state, (x, y))[1]["loss"]
    assert torch.equal(fast, step(state, [x, y])[1]["loss"])  # a list: the general path


def test_detach_walks_containers_like_tree_map():
    Pair = namedtuple("Pair", "a b")
    w = torch.ones(2, requires_grad=True)
    tree = (w * 2, {"k": [w * 3, None, 4.0]}, Pair(w * 4, "s"), ())
    out = step_module._detach(tree)
    assert type(out) is tuple and type(out[1]["k"]) is list and type(out[2]) is Pair
    assert not out[0].requires_grad and not out[1]["k"][0].requires_grad
    assert not out[2].a.requires_grad
    assert out[1]["k"][1:] == [None, 4.0] and out[2].b == "s" and out[3] == ()
    assert torch.equal(out[2].a, torch.full((2,), 4.0))


def test_vmapped_step_checks_a_state_once_it_returned_it(monkeypatch):
    model = nn.Sequential(nn.Linear(3, 2))
    opt = ps.optim.sgd(lr=0.1)
    step = ps.make_train_step(model, nn.MSELoss(), opt)
    vstep = ps.vmap(step)
    checked: list[int] = []
    real = step.check_state
    monkeypatch.setattr(step, "check_state", lambda s: (checked.append(1), real(s)))
    states = [ps.TrainState.create(model, opt, seed=i) for i in range(3)]
    stacked = ps.stack_states(states)
    batch = (torch.randn(4, 3), torch.randn(4, 2))
    out, _ = vstep(stacked, batch)
    out, _ = vstep(out, batch)  # its own output: not re-checked
    assert checked == [1]
    last = out
    # A state it did not return is checked, and a bad one refused before any math.
    bad = out._replace(params={**out.params, "0.weight": torch.zeros(3, 2, 2)})
    with pytest.raises(ValueError, match=r"state.params\['0.weight'\] has shape \(2, 2\)"):
        vstep(bad, batch)
    assert checked == [1, 1]
    # The skip changes no result: a fresh vmapped step (which checks) gives the same bits.
    fresh = ps.vmap(ps.make_train_step(model, nn.MSELoss(), opt))
    assert vstep._last_output is last
    assert tree_bitwise_equal(vstep(last, batch), fresh(last, batch))
