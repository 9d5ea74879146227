"""Masks as optax users write them: a Mapping of bools, a callable params -> Mapping."""

from __future__ import annotations

import pytest
import torch

from purestep import optim

PARAMS = {"w": torch.ones(2, 3), "b": torch.ones(3), "v": torch.ones(3, 3)}
GRADS = {k: torch.zeros_like(p) for k, p in PARAMS.items()}


def _decayed(mask):
    t = optim.masked(optim.add_decayed_weights(1.0), mask)
    out, _ = t.update(GRADS, t.init(PARAMS), PARAMS)
    return sorted(k for k, u in out.items() if bool(u.abs().sum() > 0))


@pytest.mark.parametrize(
    "mask",
    [
        {"w": True, "b": False, "v": True},  # optax's Mapping of bools
        lambda params: {n: p.ndim > 1 for n, p in params.items()},  # optax's callable mask
        lambda name, p: p.ndim > 1,  # purestep's predicate
        ["w", "v"],
        r"^[wv]$",
    ],
    ids=["mapping", "params_callable", "predicate", "names", "regex"],
)
def test_every_mask_form_selects_the_same_parameters(mask):
    assert _decayed(mask) == ["v", "w"]


def test_a_mapping_mask_with_false_values_does_not_select_them():
    assert _decayed({"w": False, "b": False, "v": False}) == []


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (3, TypeError, "a mask is a list of names"),
        ({"w": 1, "b": 0, "v": 1}, TypeError, r"\['w'\] must be a bool"),
        ({"w": True}, ValueError, r"missing names \['b', 'v'\]"),
        ({"w": True, "b": True, "v": True, "x": True}, ValueError, r"unknown names \['x'\]"),
        (lambda params: [True], TypeError, "must return a Mapping"),
        (lambda *a: True, TypeError, "accepts both"),
        ([1, 2], TypeError, "parameter names"),
    ],
)
def test_bad_masks_are_refused(mask, error, match):
    with pytest.raises(error, match=match):
        _decayed(mask)


def test_masked_optimizer_leaves_unmasked_params_frozen():
    rule = optim.masked(optim.sgd(lr=0.5), lambda p: {n: n != "b" for n in p})
    grads = {k: torch.ones_like(p) for k, p in PARAMS.items()}
    new, _ = rule.step(grads, rule.init(PARAMS), PARAMS)
    assert torch.equal(new["b"], PARAMS["b"])
    assert torch.equal(new["w"], PARAMS["w"] - 0.5)
