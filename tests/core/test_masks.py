"""Compiled and torch.func steps draw eager's dropout masks (purestep.core.masks).

Eager CPU dropout fills its noise in the input's memory order; functorch's dropout (used
by every compiled or grad_engine="func" step) filled it in logical order, so a Dropout
after nn.MultiheadAttention(batch_first=True) (a transposed output) drew other masks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps

TOL = {"atol": 1e-6, "rtol": 1e-6}


class AttnDrop(nn.Module):
    """The issue's repro: Dropout on MultiheadAttention's (transposed) output."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, x, x, need_weights=False)
        return self.head(self.drop(a).mean(1))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x).mean(1))


class PermutedDrop(nn.Module):
    """torch.dropout and F.dropout(inplace=True) on permuted inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.dropout(self.lin(x).transpose(0, 1), 0.2, self.training)
        h = F.dropout(h.permute(2, 0, 1) * 1.0, 0.1, self.training, inplace=True)
        return self.head(h.mean(1).t())


class ConvDrop(nn.Module):
    """Dropout on conv activations: channels-last inside a compiled step, NCHW eagerly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.dropout(self.conv(x), 0.3, self.training).mean((2, 3)))


def _setup(build, shape):
    torch.manual_seed(0)
    model = build()
    batch = (torch.randn(8, *shape), torch.randint(0, 10, (8,)))
    opt = ps.optim.sgd(lr=0.01)
    return model, batch, opt, ps.TrainState.create(model, opt, seed=0)


def _assert_same_step(got, expected):
    (g_state, g_metrics), (e_state, e_metrics) = got, expected
    torch.testing.assert_close(g_metrics["loss"], e_metrics["loss"], **TOL)
    torch.testing.assert_close(g_metrics["grads"], e_metrics["grads"], **TOL)
    torch.testing.assert_close(g_state.params, e_state.params, **TOL)
    assert torch.equal(g_state.rng, e_state.rng)


@pytest.mark.parametrize(
    ("build", "shape"),
    [(AttnDrop, (5, 16)), (Encoder, (5, 16)), (PermutedDrop, (5, 16))],
    ids=["mha_dropout", "transformer_encoder_layer", "permuted"],
)
def test_func_engine_draws_eagers_masks(build, shape):
    model, batch, opt, state = _setup(build, shape)
    eager = ps.make_train_step(model, nn.CrossEntropyLoss(), opt, return_grads=True)
    func = ps.make_train_step(
        model, nn.CrossEntropyLoss(), opt, return_grads=True, grad_engine="func"
    )
    # The masks matter: with them dropped, the loss moves well beyond the tolerance.
    plain = ps.make_eval_step(model, nn.CrossEntropyLoss())(state, batch)["loss"]
    expected = eager(state, batch)
    assert abs(float(expected[1]["loss"]) - float(plain)) > 1e-4
    _assert_same_step(func(state, batch), expected)


def test_compiled_step_draws_eagers_masks_after_attention():
    model, batch, opt, state = _setup(AttnDrop, (5, 16))
    eager = ps.make_train_step(model, nn.CrossEntropyLoss(), opt, return_grads=True)
    compiled = ps.compile(eager, backend="aot_eager")
    _assert_same_step(compiled(state, batch), eager(state, batch))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("build", "shape"),
    [(AttnDrop, (5, 16)), (Encoder, (5, 16)), (PermutedDrop, (5, 16)), (ConvDrop, (2, 4, 4))],
    ids=["mha_dropout", "transformer_encoder_layer", "permuted", "conv"],
)
def test_inductor_step_draws_eagers_masks(build, shape):
    model, batch, opt, state = _setup(build, shape)
    eager = ps.make_train_step(model, nn.CrossEntropyLoss(), opt, return_grads=True)
    compiled = ps.compile(eager)
    for _ in range(2):  # teacher-forced, two steps
        expected = eager(state, batch)
        _assert_same_step(compiled(state, batch), expected)
        state = expected[0]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_vmapped_attention_dropout_compiled_equals_eager():
    """Under vmap each member draws its own masks (randomness="different"); compiled and
    eager vmapped steps draw the same ones."""
    model, batch, opt, state = _setup(AttnDrop, (5, 16))
    stacked = ps.stack_states([state, ps.TrainState.create(model, opt, seed=1)])
    vstep = ps.vmap(ps.make_train_step(model, nn.CrossEntropyLoss(), opt))
    e_state, e_metrics = vstep(stacked, batch)
    c_state, c_metrics = ps.compile(vstep, backend="aot_eager")(stacked, batch)
    torch.testing.assert_close(c_metrics["loss"], e_metrics["loss"], **TOL)
    torch.testing.assert_close(c_state.params, e_state.params, **TOL)
    assert not torch.equal(e_metrics["loss"][0], e_metrics["loss"][1])
