"""Rule states are found by their explicit mark (``rule_state``), through one node walker
(``purestep.pytree.map_nodes``/``find_nodes``), never by the names of their fields."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
import torch

import purestep as ps
from purestep.optim.base import GradientTransformation, is_rule_state, rule_state
from purestep.optim.convert import load_torch_state, torch_state_view
from purestep.optim.hyperparams import lr_tensors
from purestep.pytree import find_nodes, map_nodes

FACTORIES = ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adamax", "nadam", "radam", "adadelta"]


class WarmupState(NamedTuple):
    """A user's own transform state that happens to use the names of a rule state's fields."""

    step: torch.Tensor
    hyperparams: dict[str, torch.Tensor]
    seen: dict[str, torch.Tensor]


def warmup(factor: float) -> GradientTransformation:
    """Scales the updates by ``hyperparams["lr"]`` (its own, not the rule's lr)."""

    def init(params: dict[str, torch.Tensor]) -> WarmupState:
        return WarmupState(
            torch.zeros((), dtype=torch.int64),
            {"lr": torch.tensor(factor, dtype=torch.float64)},
            {k: torch.zeros_like(p) for k, p in params.items()},
        )

    def update(updates: Any, state: WarmupState, params: Any) -> tuple[Any, WarmupState]:
        f = float(state.hyperparams["lr"])
        return {k: u * f for k, u in updates.items()}, state._replace(step=state.step + 1)

    return GradientTransformation(init, update)


PARAMS = {"w": torch.ones(3), "b": torch.ones(2)}


@pytest.mark.parametrize("name", FACTORIES)
def test_every_rule_state_is_marked(name: str) -> None:
    state = getattr(ps.optim, name)().init(PARAMS)
    assert is_rule_state(state)
    assert find_nodes((1, {"s": [state]}), is_rule_state) == [state]


def test_a_look_alike_user_state_is_not_a_rule_state() -> None:
    """A transform state with ``step``/``hyperparams`` fields is the user's: set_hyperparam,
    the lr list schedules drive and the torch state view see only the rule."""
    opt = ps.optim.chain(warmup(0.5), ps.optim.sgd(lr=0.1, momentum=0.9))
    state = opt.init(PARAMS)
    assert [float(t) for t in lr_tensors(state)] == [0.1]
    new = ps.optim.set_hyperparam(state, "lr", 0.2)
    assert float(new[0].hyperparams["lr"]) == 0.5  # the user's value is left alone
    assert float(ps.optim.get_hyperparam(new, "lr")) == 0.2
    assert set(torch_state_view(state)["w"]) == {"step", "momentum_buffer"}
    loaded = load_torch_state(state, {"w": {"seen": torch.full((3,), 7.0)}})
    assert torch.equal(loaded[0].seen["w"], torch.zeros(3))
    # and a schedule drives exactly one lr (one param group)
    sched = ps.optim.scheduled(opt, ps.optim.schedules.exponential_lr(0.5))
    s = sched.init(PARAMS)
    _, s = sched.step({k: torch.ones_like(p) for k, p in PARAMS.items()}, s, PARAMS)
    assert float(ps.optim.get_hyperparam(s, "lr")) == 0.05
    assert float(s.inner[0].hyperparams["lr"]) == 0.5


def test_rule_state_checks_what_it_marks() -> None:
    class NoStep(NamedTuple):
        hyperparams: dict[str, torch.Tensor]

    class Plain:
        step = 0
        hyperparams = None

    with pytest.raises(TypeError, match=r"NoStep lacks \['step'\]"):
        rule_state(NoStep)
    with pytest.raises(TypeError, match="marks NamedTuple classes"):
        rule_state(Plain)
    assert not is_rule_state(WarmupState(torch.zeros(()), {}, {}))


class Node(NamedTuple):
    name: str
    child: Any


def test_map_nodes_outermost_first_in_pytree_order() -> None:
    tree = {"b": Node("outer", Node("inner", 1)), "a": [Node("x", None), 2]}
    is_node = lambda n: isinstance(n, Node)  # noqa: E731
    assert [n.name for n in find_nodes(tree, is_node)] == ["outer", "x"]
    seen: list[str] = []

    def rename(n: Node) -> Node:
        seen.append(n.name)
        return Node(n.name.upper(), map_nodes(rename, n.child, is_node))

    out = map_nodes(rename, tree, is_node)
    assert seen == ["outer", "inner", "x"]
    assert out == {"b": Node("OUTER", Node("INNER", 1)), "a": [Node("X", None), 2]}
    assert list(out) == ["b", "a"]  # dict order kept
    assert tree["b"].name == "outer"  # pure


def test_schedule_step_reaches_a_nested_scheduled_state() -> None:
    inner = ps.optim.scheduled(
        ps.optim.sgd(lr=1.0), ps.optim.schedules.exponential_lr(0.5), every=None
    )
    state = {"opt": [inner.init(PARAMS)]}
    new = ps.optim.schedule_step(state, ps.optim.schedules.exponential_lr(0.5))
    assert float(ps.optim.get_hyperparam(new, "lr")) == 0.5
    with pytest.raises(ValueError, match="no scheduled"):
        ps.optim.schedule_step(ps.optim.sgd().init(PARAMS), ps.optim.schedules.exponential_lr(0.5))
