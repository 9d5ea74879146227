"""Per-parameter settings: param_groups, multi_transform, masked — bitwise vs torch groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import purestep as ps
from purestep.optim.partition import masked, multi_transform, param_groups
from purestep.optim.transforms import scale
from tests.support import MODELS, batches, examples, run_bitwise


@settings(max_examples=examples(2, 15))
@given(
    lr=st.floats(1e-4, 1e-2),
    bias_lr=st.floats(1e-4, 1e-2),
    wd=st.floats(1e-4, 0.2),
    model_name=st.sampled_from(sorted(MODELS)),
)
def test_no_decay_on_biases_and_norms_like_torch_groups(lr, bias_lr, wd, model_name):
    build, shape = MODELS[model_name]
    model = build(0)
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or p.dim() == 1]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or p.dim() == 1)]
    torch_opt = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lr": bias_lr}],
        lr=lr,
        weight_decay=wd,
        foreach=False,
    )
    opt = param_groups(
        ps.optim.adamw,
        [
            {
                "params": lambda name, p: name.endswith("bias") or p.dim() == 1,
                "weight_decay": 0.0,
                "lr": bias_lr,
            }
        ],
        lr=lr,
        weight_decay=wd,
    )
    assert run_bitwise(model, F.cross_entropy, torch_opt, opt, batches(shape), 300) is None


def test_multi_transform_runs_different_rules_per_label():
    build, shape = MODELS["mlp_dropout"]
    model = build(2)
    first = list(model[0].parameters())
    last = list(model[3].parameters())
    torch_opt_a = torch.optim.SGD(first, lr=0.1, momentum=0.9, foreach=False)
    torch_opt_b = torch.optim.Adam(last, lr=1e-3, foreach=False)

    class Both(torch.optim.Optimizer):
        """Two torch optimizers stepped together, as a user would write it."""

        def __init__(self):
            self.param_groups = torch_opt_a.param_groups + torch_opt_b.param_groups
            self.state = {**torch_opt_a.state, **torch_opt_b.state}

        def zero_grad(self, set_to_none=True):
            torch_opt_a.zero_grad(set_to_none)
            torch_opt_b.zero_grad(set_to_none)

        def step(self):
            torch_opt_a.step()
            torch_opt_b.step()
            self.state = {**torch_opt_a.state, **torch_opt_b.state}

    opt = multi_transform(
        {"sgd": ps.optim.sgd(lr=0.1, momentum=0.9), "adam": ps.optim.adam(lr=1e-3)},
        lambda params: {n: "sgd" if n.startswith("0.") else "adam" for n in params},
    )
    assert run_bitwise(model, F.cross_entropy, Both(), opt, batches(shape), 300) is None


def test_masked_rule_leaves_unselected_parameters_alone():
    params = {"w": torch.ones(3), "b": torch.ones(2)}
    grads = {"w": torch.ones(3), "b": torch.ones(2)}
    opt = masked(ps.optim.sgd(lr=0.5), ["w"])
    state = opt.init(params)
    new, state = opt.step(grads, state, params)
    assert torch.equal(new["w"], torch.full((3,), 0.5)) and torch.equal(new["b"], params["b"])
    tx = masked(scale(2.0), r"^b$")
    out, _ = tx.update(grads, tx.init(params), params)
    assert torch.equal(out["b"], torch.full((2,), 2.0)) and torch.equal(out["w"], grads["w"])


def test_param_groups_errors():
    params = {"a.weight": torch.zeros(2, 2), "a.bias": torch.zeros(2)}
    overlapping = param_groups(ps.optim.sgd, [{"params": "a"}, {"params": "bias"}], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group: 'a.bias'"):
        overlapping.init(params)
    with pytest.raises(ValueError, match="must be a dict with a 'params' selector"):
        param_groups(ps.optim.sgd, [{"lr": 0.1}])
    with pytest.raises(ValueError, match="unknown parameter names"):
        param_groups(ps.optim.sgd, [{"params": ["nope"]}]).init(params)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        param_groups(ps.optim.sgd, [{"params": "bias", "lr": -1.0}])
    with pytest.raises(TypeError, match="all Optimizers or all GradientTransformations"):
        multi_transform({"a": ps.optim.sgd(), "b": ps.optim.identity()}, {})
    with pytest.raises(ValueError, match="has label 'c'"):
        multi_transform({"a": ps.optim.sgd()}, {"a.weight": "c", "a.bias": "a"}).init(params)
