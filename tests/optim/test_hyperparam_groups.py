"""get_hyperparam/set_hyperparam across param groups, static hyperparameters, betas."""

from __future__ import annotations

import pytest
import torch

from purestep import optim

PARAMS = {"w": torch.ones(2, 3), "b": torch.ones(3)}


def _two_groups():
    rule = optim.param_groups(optim.adamw, [{"params": ["b"], "lr": 0.1}], lr=0.01)
    return rule, rule.init(PARAMS)


def test_get_raises_when_groups_differ_and_no_group_is_named():
    _, state = _two_groups()
    with pytest.raises(ValueError, match=r"'lr' differs across the 2 param groups.*group=i"):
        optim.get_hyperparam(state, "lr")
    assert float(optim.get_hyperparam(state, "lr", group=0)) == 0.1
    assert float(optim.get_hyperparam(state, "lr", group=1)) == 0.01
    with pytest.raises(IndexError, match="group=2 but this optimizer state has 2"):
        optim.get_hyperparam(state, "lr", group=2)


def test_set_one_group_leaves_the_other():
    _, state = _two_groups()
    state = optim.set_hyperparam(state, "lr", 0.5, group=1)
    assert float(optim.get_hyperparam(state, "lr", group=0)) == 0.1
    assert float(optim.get_hyperparam(state, "lr", group=1)) == 0.5
    state = optim.set_hyperparam(state, "lr", 0.2)  # all groups
    assert float(optim.get_hyperparam(state, "lr")) == 0.2


def test_setting_a_static_hyperparameter_names_how_to_make_it_dynamic():
    state = optim.adam(lr=1e-3).init(PARAMS)
    with pytest.raises(KeyError, match=r"dynamic=\(\.\.\., .*weight_decay.*inject_hyperparams"):
        optim.set_hyperparam(state, "weight_decay", 0.5)


def test_a_dynamic_weight_decay_built_at_zero_takes_effect_when_set():
    """inject_hyperparams(adamw)(weight_decay=0.0) then weight_decay=0.5 must decay (it was
    accepted and ignored), and stay bitwise the static rule with the same value."""
    grads = {k: torch.full_like(p, 0.1) for k, p in PARAMS.items()}
    rule = optim.inject_hyperparams(optim.adamw)(lr=0.1, weight_decay=0.0)
    state = optim.set_hyperparam(rule.init(PARAMS), "weight_decay", 0.5)
    got, _ = rule.step(grads, state, PARAMS)
    static = optim.adamw(lr=0.1, weight_decay=0.5)
    want, _ = static.step(grads, static.init(PARAMS), PARAMS)
    for k in PARAMS:
        assert torch.equal(got[k], want[k])
    plain = optim.adamw(lr=0.1, weight_decay=0.0)
    zero, _ = rule.step(grads, rule.init(PARAMS), PARAMS)
    undecayed, _ = plain.step(grads, plain.init(PARAMS), PARAMS)
    for k in PARAMS:
        assert torch.equal(zero[k], undecayed[k])
        assert not torch.equal(got[k], undecayed[k])


def test_betas_and_beta1_beta2_are_one_name():
    rule = optim.adam(lr=1e-3, betas=(0.8, 0.9), dynamic=("lr", "betas"))
    state = rule.init(PARAMS)
    b1, b2 = optim.get_hyperparam(state, "betas")
    assert (float(b1), float(b2)) == (0.8, 0.9)
    state = optim.set_hyperparam(state, "betas", (0.7, 0.95))
    assert float(optim.get_hyperparam(state, "beta1")) == 0.7
    assert float(optim.get_hyperparam(state, "beta2")) == 0.95
    state = optim.set_hyperparam(state, "beta1", 0.5)
    assert float(optim.get_hyperparam(state, "betas")[0]) == 0.5
    with pytest.raises(TypeError, match="pair"):
        optim.set_hyperparam(state, "betas", 0.9)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        optim.set_hyperparam(state, "betas", (0.9, 1.5))
