"""A loss never broadcasts: (N, 1) against (N,) is aligned, any other float-target shape
difference is a ValueError naming both shapes, eager and compiled alike."""

from __future__ import annotations

import functools
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps
from purestep.core.step import LossShapeError, align_targets, is_elementwise


def _setup(out_features: int, criterion=None, squeeze: bool = False):
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(3, out_features)]
    if squeeze:
        layers.append(nn.Flatten(0))
    model = nn.Sequential(*layers)
    opt = ps.optim.sgd(lr=0.1)
    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(model, criterion or nn.MSELoss(), opt)
    return model, state, step


def test_column_output_against_flat_targets_is_aligned():
    """[N, 1] outputs, [N] targets: the loss is the elementwise one (torch would broadcast
    to [N, N] with a UserWarning, which pytest turns into an error)."""
    model, state, step = _setup(1)
    x, y = torch.randn(6, 3), torch.randn(6)
    _, metrics = step(state, (x, y))
    expected = F.mse_loss(model(x).squeeze(-1), y)
    assert torch.equal(metrics["loss"], expected.detach())
    eval_metrics = ps.make_eval_step(model, nn.MSELoss())(state, (x, y))
    assert torch.equal(eval_metrics["loss"], expected.detach())


def test_flat_output_against_column_targets_is_aligned():
    model, state, step = _setup(1, criterion=F.l1_loss, squeeze=True)
    x, y = torch.randn(5, 3), torch.randn(5, 1)
    _, metrics = step(state, (x, y))
    assert torch.equal(metrics["loss"], F.l1_loss(model(x), y.squeeze(-1)).detach())


def _mse(o, t):
    return ((o - t) ** 2).mean()


@pytest.mark.parametrize(
    ("criterion", "out_features", "target_shape"),
    [
        (nn.MSELoss(), 2, (6,)),  # elementwise: a second output column is no class axis
        (functools.partial(F.l1_loss, reduction="mean"), 2, (6,)),
        (_mse, 1, (6, 2)),
        (_mse, 3, (6, 1)),  # the silent (N, 3) x (N, 1) broadcast
        (_mse, 1, (3,)),
        (nn.HuberLoss(), 2, (6, 1)),
    ],
)
@pytest.mark.parametrize("compiled", [False, True])
def test_other_shape_differences_are_an_error_naming_both(
    criterion, out_features, target_shape, compiled
):
    """Compiled and eager give the same verdict (the compiled step validates a new batch
    signature eagerly first, so this raises before any graph is traced)."""
    _, state, step = _setup(out_features, criterion=criterion)
    if compiled:
        step = ps.compile(step)
    x, y = torch.randn(6, 3), torch.randn(*target_shape)
    before = ps.core.pytree.tree_clone(state)
    out = (6, out_features)
    shapes = re.escape(f"{out} and the targets {target_shape}")
    match = f"outputs have shape {shapes}"
    with pytest.raises(LossShapeError, match=match):
        step(state, (x, y))
    assert ps.core.pytree.tree_bitwise_equal(state, before)


def test_a_user_loss_may_read_float_targets_across_a_class_axis():
    """(N, C) outputs against (N,) float class ids, for a loss that casts them: not an
    elementwise loss, so not a broadcast."""

    def loss(outputs, targets):
        return F.cross_entropy(outputs, targets.long())

    _, state, step = _setup(4, criterion=loss)
    x, y = torch.randn(6, 3), torch.randint(0, 4, (6,)).float()
    _, metrics = step(state, (x, y))
    assert metrics["loss"].dim() == 0


def test_is_elementwise_looks_through_wrappers():
    from purestep.train.build import scale_loss

    assert is_elementwise(nn.MSELoss()) and is_elementwise(F.smooth_l1_loss)
    assert is_elementwise(functools.partial(F.mse_loss, reduction="sum"))
    assert is_elementwise(scale_loss(nn.BCEWithLogitsLoss(), 4))
    assert not is_elementwise(nn.CrossEntropyLoss()) and not is_elementwise(_mse)


def test_class_index_targets_are_the_criterion_business():
    """cross_entropy's (N, C) logits against (N,) int64 class ids are not a broadcast."""
    _, state, step = _setup(4, criterion=nn.CrossEntropyLoss())
    x, y = torch.randn(6, 3), torch.randint(0, 4, (6,))
    _, metrics = step(state, (x, y))
    assert metrics["loss"].dim() == 0


def test_align_targets_rule():
    o = torch.zeros(4, 1)
    assert align_targets(o, torch.zeros(4)).shape == (4, 1)
    assert align_targets(torch.zeros(4), torch.zeros(4, 1)).shape == (4,)
    assert align_targets(torch.zeros(4, 7, 1), torch.zeros(4, 7)).shape == (4, 7, 1)
    assert align_targets(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)).shape == (4,)
    assert align_targets((o,), torch.zeros(4)).shape == (4,)  # non-tensor outputs: unchecked
    assert align_targets(torch.zeros(4, 3), torch.zeros(4)).shape == (4,)  # a class axis
    assert align_targets(torch.zeros(4, 3, 5), torch.zeros(4, 5)).shape == (4, 5)
    with pytest.raises(ValueError, match=r"\(4, 3\) and the targets \(4,\)"):
        align_targets(torch.zeros(4, 3), torch.zeros(4), elementwise=True)
    with pytest.raises(ValueError, match=r"\(4, 3\) and the targets \(4, 1\)"):
        align_targets(torch.zeros(4, 3), torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"\(4,\) and the targets \(4, 2\)"):
        align_targets(torch.zeros(4), torch.zeros(4, 2))


@pytest.mark.slow
def test_compiled_step_aligns_as_the_eager_step():
    model, state, step = _setup(1)
    compiled = ps.compile(ps.make_train_step(model, nn.MSELoss(), ps.optim.sgd(lr=0.1)))
    x, y = torch.randn(6, 3), torch.randn(6)
    eager_state, eager = step(state, (x, y))
    compiled_state, got = compiled(state, (x, y))
    torch.testing.assert_close(got["loss"], eager["loss"])
    torch.testing.assert_close(compiled_state.params, eager_state.params)
