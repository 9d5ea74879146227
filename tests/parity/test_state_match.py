"""purestep.parity.state_match, and the tests' own harness: no optimizer-state tensor is
skipped in silence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep.optim.convert import torch_state_view
from tests.support import batches, mlp, run_bitwise


def stepped(torch_opt, model, opt):
    """One step of each side on the same batch; returns the match after it."""
    state = ps.TrainState.create(model, opt)
    initial = torch_state_view(state.opt_state)
    x, y = batches((10,))[0]
    F.cross_entropy(model(x), y).backward()
    torch_opt.step()
    step = ps.make_train_step(mlp(), F.cross_entropy, opt)
    state, _ = step(state, (x, y))
    names = {id(p): n for n, p in model.named_parameters()}
    return ps.parity.match_optimizer_state(
        torch_opt, names, torch_state_view(state.opt_state), initial
    )


def test_every_key_pairs_for_a_converted_optimizer():
    model = mlp()
    torch_opt = torch.optim.NAdam(model.parameters(), lr=1e-2, foreach=False)
    match = stepped(torch_opt, model, ps.optim.from_torch(torch_opt, model))
    assert not match.unmatched and not match.documented
    keys = {name.rsplit(".", 1)[1] for name, _, _ in match.pairs}
    assert keys == {"step", "mu_product", "exp_avg", "exp_avg_sq"}
    assert len(match.pairs) == 4 * 4


def test_one_sided_keys_are_unmatched_unless_documented():
    model = mlp()
    torch_opt = torch.optim.Adam(model.parameters(), amsgrad=True, foreach=False)
    match = stepped(torch_opt, model, ps.optim.adam())
    assert "0.weight.max_exp_avg_sq: only in torch's state" in match.unmatched
    model = mlp()
    torch_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=False)
    match = stepped(torch_opt, model, ps.optim.sgd(lr=0.1, momentum=0.9))
    assert not match.unmatched
    assert set(match.documented) == {"step"}
    assert {name.rsplit(".", 1)[1] for name, _, _ in match.pairs} == {"momentum_buffer"}


def test_a_composite_of_torch_optimizers_finds_sgd_by_its_group():
    model = mlp()
    sgd = torch.optim.SGD(model[0].parameters(), lr=0.1, momentum=0.9, foreach=False)
    adam = torch.optim.Adam(model[3].parameters(), lr=1e-3, foreach=False)

    class Both(torch.optim.Optimizer):
        def __init__(self):
            self.param_groups = sgd.param_groups + adam.param_groups
            self.state = {}

        def step(self):
            sgd.step()
            adam.step()
            self.state = {**sgd.state, **adam.state}

    opt = ps.optim.multi_transform(
        {"sgd": ps.optim.sgd(lr=0.1, momentum=0.9), "adam": ps.optim.adam(lr=1e-3)},
        lambda params: {n: "sgd" if n.startswith("0.") else "adam" for n in params},
    )
    match = stepped(Both(), model, opt)
    assert not match.unmatched and set(match.documented) == {"step"}
    paired = {name for name, _, _ in match.pairs}
    assert "3.bias.step" in paired and "0.bias.momentum_buffer" in paired
    assert "0.bias.step" not in paired


def test_without_torch_state_the_functional_tensors_pair_with_their_initial_values():
    model = mlp()
    torch_opt = torch.optim.Adam(model.parameters(), foreach=False)
    state = ps.TrainState.create(model, ps.optim.adam())
    view = torch_state_view(state.opt_state)
    names = {id(p): n for n, p in model.named_parameters()}
    moved = {n: {**v, "step": v["step"] + 1} for n, v in view.items()}
    match = ps.parity.match_optimizer_state(torch_opt, names, moved, view)
    assert not match.unmatched and len(match.pairs) == 12
    steps = [(ref, fun) for name, ref, fun in match.pairs if name.endswith(".step")]
    assert all(int(ref) == 0 and int(fun) == 1 for ref, fun in steps)


def test_a_parameter_the_model_does_not_name_is_unmatched():
    model = mlp()
    extra = torch.nn.Parameter(torch.zeros(3))
    torch_opt = torch.optim.Adam([*model.parameters(), extra], foreach=False)
    extra.grad = torch.ones(3)
    torch_opt.step()
    match = ps.parity.match_optimizer_state(torch_opt, {}, {}, {})
    assert any("a parameter the model does not name" in u for u in match.unmatched)


def test_the_harness_does_not_skip_a_missing_key():
    # Old tests/support.run_bitwise skipped torch keys the functional state lacked: amsgrad
    # against plain Adam passed its first step.
    model = mlp()
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True, foreach=False)
    with pytest.raises(AssertionError, match="0.weight.max_exp_avg_sq: only in torch's state"):
        run_bitwise(model, F.cross_entropy, torch_opt, ps.optim.adam(lr=1e-2), batches((10,)), 1)
    model = mlp()
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-2, foreach=False)
    assert (
        run_bitwise(model, F.cross_entropy, torch_opt, ps.optim.adam(lr=1e-2), batches((10,)), 5)
        is None
    )
