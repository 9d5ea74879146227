"""Every hyperparameter torch.optim rejects is rejected with the same ValueError message."""

from __future__ import annotations

import re

import pytest
import torch

import purestep as ps

CASES = [
    ("sgd", {"lr": -0.1}),
    ("sgd", {"momentum": -0.5}),
    ("sgd", {"weight_decay": -1e-4}),
    ("sgd", {"nesterov": True}),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}),
    ("adam", {"lr": -1e-3}),
    ("adam", {"eps": -1e-8}),
    ("adam", {"betas": (1.0, 0.999)}),
    ("adam", {"betas": (-0.1, 0.999)}),
    ("adam", {"betas": (0.9, 1.0)}),
    ("adam", {"weight_decay": -0.1}),
    ("adamw", {"lr": -1e-3}),
    ("adamw", {"betas": (0.9, 1.5)}),
    ("adamw", {"weight_decay": -1e-2}),
    ("adamw", {"eps": -1.0}),
]
TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@pytest.mark.parametrize(("rule", "kwargs"), CASES, ids=[f"{r}-{k}" for r, k in CASES])
def test_same_value_error_as_torch(rule, kwargs):
    with pytest.raises(ValueError) as torch_error:
        TORCH[rule]([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=re.escape(str(torch_error.value))):
        getattr(ps.optim, rule)(**kwargs)


@pytest.mark.parametrize(
    ("rule", "kwargs", "match"),
    [
        ("sgd", {"lr": "1e-3"}, "lr must be a number, got str"),
        ("adam", {"betas": 0.9}, "betas must be a pair"),
        ("adam", {"eps": None}, "eps must be a number, got NoneType"),
        ("adamw", {"lr": True}, "lr must be a number, got bool"),
        ("adam", {"lr": torch.ones(2)}, "Tensor lr must be 1-element"),
    ],
)
def test_type_errors_name_the_argument(rule, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        getattr(ps.optim, rule)(**kwargs)


def test_torch_defaults():
    import inspect

    for rule, cls in TORCH.items():
        ours = inspect.signature(getattr(ps.optim, rule)).parameters
        theirs = inspect.signature(cls).parameters
        for name in (
            "lr",
            "momentum",
            "dampening",
            "weight_decay",
            "nesterov",
            "betas",
            "eps",
            "amsgrad",
            "maximize",
        ):
            if name in theirs:
                assert ours[name].default == theirs[name].default, (rule, name)


def test_set_and_get_hyperparam():
    opt = ps.optim.chain(ps.optim.identity(), ps.optim.adam(lr=1e-3))
    state = opt.init({"w": torch.zeros(3)})
    assert float(ps.optim.get_hyperparam(state, "lr")) == 1e-3
    new = ps.optim.set_hyperparam(state, "lr", 5e-4)
    assert float(ps.optim.get_hyperparam(new, "lr")) == 5e-4
    assert float(ps.optim.get_hyperparam(state, "lr")) == 1e-3, "the old state is unchanged"
    with pytest.raises(KeyError, match="no dynamic hyperparameter 'beta1'"):
        ps.optim.set_hyperparam(state, "beta1", 0.5)
    with pytest.raises(TypeError, match="must be a number"):
        ps.optim.set_hyperparam(state, "lr", "fast")


def test_chain_rejects_misplaced_optimizer():
    with pytest.raises(TypeError, match="chain link 0 must be a GradientTransformation"):
        ps.optim.chain(ps.optim.sgd(), ps.optim.identity())
    with pytest.raises(ValueError, match="at least one"):
        ps.optim.chain()


def test_grad_keys_must_match_params():
    opt = ps.optim.sgd()
    params = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"missing \['w'\], extra \['v'\]"):
        opt.step({"v": torch.zeros(2)}, opt.init(params), params)


NAN, INF = float("nan"), float("inf")
# (rule, hyperparameter, bad value, a torch class and keywords that reject it: the message
# to expect; torch.optim.SGD lets a NaN lr through where Adam says "Invalid learning rate")
BAD_VALUES = [
    ("sgd", "lr", -0.1, "sgd", {"lr": -0.1}),
    ("sgd", "lr", NAN, "adam", {"lr": NAN}),
    ("sgd", "momentum", -0.5, "sgd", {"momentum": -0.5}),
    ("adam", "beta1", 1.0, "adam", {"betas": (1.0, 0.999)}),
    ("adam", "beta2", NAN, "adam", {"betas": (0.9, NAN)}),
    ("adam", "eps", -1e-8, "adam", {"eps": -1e-8}),
    ("adamw", "weight_decay", -0.1, "adamw", {"weight_decay": -0.1}),
    ("rmsprop", "alpha", -0.1, "rmsprop", {"alpha": -0.1}),
    ("adadelta", "rho", 1.5, "adadelta", {"rho": 1.5}),
    ("adagrad", "lr_decay", -1.0, "adagrad", {"lr_decay": -1.0}),
    ("nadam", "momentum_decay", NAN, "nadam", {"momentum_decay": NAN}),
]
TORCH_CLASSES = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta,
    "adagrad": torch.optim.Adagrad,
    "nadam": torch.optim.NAdam,
}


@pytest.mark.parametrize(
    ("rule", "name", "value", "torch_rule", "torch_kwargs"),
    BAD_VALUES,
    ids=[f"{r}-{n}-{v}" for r, n, v, _, _ in BAD_VALUES],
)
@pytest.mark.parametrize("as_tensor", [False, True], ids=["float", "tensor"])
def test_set_hyperparam_rejects_what_the_constructor_rejects(
    rule, name, value, torch_rule, torch_kwargs, as_tensor
):
    """torch's constructor message, for a float or an (eager CPU) tensor."""
    with pytest.raises(ValueError) as torch_error:
        TORCH_CLASSES[torch_rule]([torch.zeros(1, requires_grad=True)], **torch_kwargs)
    state = getattr(ps.optim, rule)(dynamic="all").init({"w": torch.zeros(3)})
    new_value = torch.tensor(value, dtype=torch.float64) if as_tensor else value
    with pytest.raises(ValueError, match=re.escape(str(torch_error.value))):
        ps.optim.set_hyperparam(state, name, new_value)


@pytest.mark.parametrize("value", [INF, -INF])
@pytest.mark.parametrize("name", ["lr", "eps", "weight_decay", "dampening"])
def test_set_hyperparam_rejects_infinity(name, value):
    """torch's constructors let lr=inf through; a step with it turns the parameters into NaN,
    so a changed value must be finite (negative ones get torch's message first)."""
    state = ps.optim.sgd(momentum=0.9, weight_decay=0.1, dynamic="all").init({"w": torch.ones(2)})
    if name == "eps":
        state = ps.optim.adam(dynamic="all").init({"w": torch.ones(2)})
    expected = f"hyperparameter '{name}' must be finite, got {value}"
    if value < 0 and name != "dampening":
        expected = "Invalid"
    with pytest.raises(ValueError, match=re.escape(expected)):
        ps.optim.set_hyperparam(state, name, value)


def test_set_hyperparam_keeps_valid_edge_values():
    state = ps.optim.adam(dynamic="all").init({"w": torch.ones(2)})
    for name, value in [("lr", 0.0), ("beta1", 0.0), ("eps", 0.0), ("weight_decay", 0.0)]:
        state = ps.optim.set_hyperparam(state, name, value)
        assert float(ps.optim.get_hyperparam(state, name)) == value
