"""RMSprop, Adagrad, Adamax, NAdam, RAdam, Adadelta: torch.optim's validation and defaults.

Every value torch.optim's constructor rejects is rejected with the same ValueError message
(and, with several bad values, the same one first); non-numbers are TypeErrors naming the
argument; the defaults and the positional order are torch's.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

from purestep.optim.adadelta import adadelta
from purestep.optim.adagrad import adagrad
from purestep.optim.adamax import adamax
from purestep.optim.base import Optimizer
from purestep.optim.nadam import nadam
from purestep.optim.radam import radam
from purestep.optim.rmsprop import rmsprop

RULES: dict[str, tuple[Callable[..., Optimizer], type[torch.optim.Optimizer]]] = {
    "rmsprop": (rmsprop, torch.optim.RMSprop),
    "adagrad": (adagrad, torch.optim.Adagrad),
    "adamax": (adamax, torch.optim.Adamax),
    "nadam": (nadam, torch.optim.NAdam),
    "radam": (radam, torch.optim.RAdam),
    "adadelta": (adadelta, torch.optim.Adadelta),
}
# torch arguments with no functional counterpart (params, execution flags).
TORCH_ONLY = {"params", "foreach", "fused", "capturable", "differentiable"}

BAD_LR = [{"lr": -1e-3}, {"lr": torch.ones(2)}]
BAD_BETAS = [
    {"betas": (-0.1, 0.999)},
    {"betas": (1.0, 0.999)},
    {"betas": (0.9, -1e-3)},
    {"betas": (0.9, 1.0)},
    {"betas": (0.9, 1.5)},
]
INVALID: dict[str, list[dict[str, Any]]] = {
    "rmsprop": [
        *BAD_LR,
        {"eps": -1e-8},
        {"momentum": -0.9},
        {"weight_decay": -1e-4},
        {"alpha": -0.5},
        {"alpha": -0.5, "eps": -1.0, "lr": -1.0},
        {"alpha": -0.5, "weight_decay": -1.0},
    ],
    "adagrad": [
        *BAD_LR,
        {"lr_decay": -1e-3},
        {"weight_decay": -1e-4},
        {"initial_accumulator_value": -0.1},
        {"eps": -1e-10},
        {"eps": -1.0, "initial_accumulator_value": -1.0, "lr_decay": -1.0},
    ],
    "adamax": [
        *BAD_LR,
        {"eps": -1e-8},
        *BAD_BETAS,
        {"weight_decay": -1e-2},
        {"weight_decay": -1.0, "betas": (2.0, 2.0), "eps": -1.0},
    ],
    "nadam": [
        *BAD_LR,
        {"eps": -1e-8},
        *BAD_BETAS,
        {"weight_decay": -1e-2},
        {"momentum_decay": -4e-3},
        {"momentum_decay": -1.0, "weight_decay": -1.0},
    ],
    "radam": [
        *BAD_LR,
        {"eps": -1e-8},
        *BAD_BETAS,
        {"weight_decay": -1e-2},
        {"weight_decay": -1.0, "betas": (0.9, 2.0)},
    ],
    "adadelta": [
        *BAD_LR,
        {"rho": -0.1},
        {"rho": 1.5},
        {"eps": -1e-6},
        {"weight_decay": -1e-2},
        {"weight_decay": -1.0, "eps": -1.0, "rho": 2.0},
    ],
}
INVALID_CASES = [(rule, kw) for rule, cases in INVALID.items() for kw in cases]


@pytest.mark.parametrize(
    ("rule", "kwargs"), INVALID_CASES, ids=[f"{r}-{sorted(k)}" for r, k in INVALID_CASES]
)
def test_same_value_error_as_torch(rule: str, kwargs: dict[str, Any]) -> None:
    factory, torch_cls = RULES[rule]
    with pytest.raises(ValueError) as torch_error:
        torch_cls([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(str(torch_error.value))}$"):
        factory(**kwargs)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_boundary_values_accepted_like_torch(rule: str) -> None:
    """Zeros (and rho = 1, beta = 0) are valid for torch, and for us: same first step."""
    factory, torch_cls = RULES[rule]
    params = inspect.signature(factory).parameters
    kwargs: dict[str, Any] = {
        name: 0.0 for name in params if name not in ("betas", "centered", "maximize", "dynamic")
    }
    kwargs.pop("decoupled_weight_decay", None)
    if "betas" in params:
        kwargs["betas"] = (0.0, 0.0)
    if "rho" in params:
        kwargs["rho"] = 1.0
    p = torch.ones(3, requires_grad=True)
    torch_opt = torch_cls([p], **kwargs, foreach=False)
    p.grad = torch.full((3,), 0.5)
    torch_opt.step()
    opt = factory(**kwargs)
    w = {"w": torch.ones(3)}
    new, _ = opt.step({"w": torch.full((3,), 0.5)}, opt.init(w), w)
    # the same step, NaN included (Adadelta with eps = 0 divides 0 by 0, as torch does)
    torch.testing.assert_close(new["w"], p.detach(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_nan_rejected(rule: str) -> None:
    """torch rejects a NaN hyperparameter (its ``0 <= x`` checks fail); so do we, with the
    same message."""
    factory, torch_cls = RULES[rule]
    for name in ("lr", "eps", "weight_decay"):
        with pytest.raises(ValueError) as torch_error:
            torch_cls([torch.zeros(1, requires_grad=True)], **{name: math.nan})
        with pytest.raises(ValueError, match=re.escape(str(torch_error.value))):
            factory(**{name: math.nan})


TYPE_ERRORS = [
    ("rmsprop", {"lr": "1e-2"}, "lr must be a number, got str"),
    ("rmsprop", {"alpha": None}, "alpha must be a number, got NoneType"),
    ("rmsprop", {"momentum": True}, "momentum must be a number, got bool"),
    ("adagrad", {"lr_decay": [0.1]}, "lr_decay must be a number, got list"),
    ("adagrad", {"initial_accumulator_value": "0"}, "initial_accumulator_value must be a number"),
    ("adamax", {"betas": 0.9}, "betas must be a pair"),
    ("adamax", {"betas": (0.9, "0.99")}, r"betas\[1\] must be a number, got str"),
    ("nadam", {"momentum_decay": None}, "momentum_decay must be a number, got NoneType"),
    ("nadam", {"betas": (0.9, 0.99, 0.999)}, "betas must be a pair"),
    ("radam", {"eps": "tiny"}, "eps must be a number, got str"),
    ("radam", {"weight_decay": False}, "weight_decay must be a number, got bool"),
    ("adadelta", {"rho": "0.9"}, "rho must be a number, got str"),
]


@pytest.mark.parametrize(("rule", "kwargs", "match"), TYPE_ERRORS)
def test_type_errors_name_the_argument(rule: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        RULES[rule][0](**kwargs)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_torch_defaults_names_and_positional_order(rule: str) -> None:
    factory, torch_cls = RULES[rule]
    ours = inspect.signature(factory).parameters
    theirs = {
        n: p for n, p in inspect.signature(torch_cls).parameters.items() if n not in TORCH_ONLY
    }
    assert set(ours) - {"dynamic"} == set(theirs)
    for name, param in theirs.items():
        assert ours[name].default == param.default, (rule, name)
        assert type(ours[name].default) in (type(param.default), float), (rule, name)
    assert ours["dynamic"].kind is inspect.Parameter.KEYWORD_ONLY
    assert ours["dynamic"].default == ("lr",)
    # Positional arguments mean what they mean for torch (after its ``params``).
    positional = [n for n, p in ours.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    torch_positional = [
        n
        for n, p in inspect.signature(torch_cls).parameters.items()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and n != "params"
    ]
    assert torch_positional[: len(positional)] == positional


DYNAMIC_NAMES = {
    "rmsprop": ["alpha", "eps", "lr", "momentum", "weight_decay"],
    "adagrad": ["eps", "lr", "lr_decay", "weight_decay"],
    "adamax": ["beta1", "beta2", "eps", "lr", "weight_decay"],
    "nadam": ["beta1", "beta2", "eps", "lr", "momentum_decay", "weight_decay"],
    "radam": ["beta1", "beta2", "eps", "lr", "weight_decay"],
    "adadelta": ["eps", "lr", "rho", "weight_decay"],
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_dynamic_names_validated_at_construction(rule: str) -> None:
    factory = RULES[rule][0]
    state = factory(dynamic="all").init({"w": torch.zeros(2)})
    assert sorted(state.hyperparams) == DYNAMIC_NAMES[rule]
    assert all(t.dtype == torch.float64 and t.dim() == 0 for t in state.hyperparams.values())
    assert list(factory().init({"w": torch.zeros(2)}).hyperparams) == ["lr"]
    with pytest.raises(ValueError, match="unknown hyperparameter 'lrr'"):
        factory(dynamic=("lrr",))
    with pytest.raises(ValueError, match='dynamic must be a sequence of names or "all"'):
        factory(dynamic="lr")


def test_initial_accumulator_value_is_init_only() -> None:
    with pytest.raises(ValueError, match="unknown hyperparameter 'initial_accumulator_value'"):
        adagrad(dynamic=("initial_accumulator_value",))
    state = adagrad(initial_accumulator_value=0.25).init({"w": torch.zeros(2, 3)})
    assert torch.equal(state.sum["w"], torch.full((2, 3), 0.25))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_state_fields_are_torch_state_keys(rule: str) -> None:
    """Field names (beyond step/hyperparams) are exactly the keys torch's state holds once
    it has stepped with every feature on."""
    factory, torch_cls = RULES[rule]
    kw: dict[str, Any] = {"weight_decay": 0.1}
    if rule == "rmsprop":
        kw.update(momentum=0.5, centered=True)
    p = torch.ones(3, requires_grad=True)
    torch_opt = torch_cls([p], **kw)
    p.grad = torch.ones(3)
    torch_opt.step()
    state = factory(**kw).init({"w": torch.zeros(3)})
    assert state._fields[:2] == ("step", "hyperparams")
    assert set(state._fields[2:]) | {"step"} == set(torch_opt.state[p])


def test_grad_keys_must_match_params() -> None:
    for factory, _ in RULES.values():
        opt = factory()
        params = {"w": torch.zeros(2)}
        with pytest.raises(ValueError, match=r"missing \['w'\], extra \['v'\]"):
            opt.step({"v": torch.zeros(2)}, opt.init(params), params)
