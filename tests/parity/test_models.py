"""Parity on real model families, with the training-loop features users combine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from tests.parity.models import DictOutput, ReassignedBuffer, lm_batches, lm_loss, tiny_lm
from tests.support import batches, cnn, mlp


def test_transformer_lm_with_tied_weights_bitwise_300_steps():
    report = ps.parity.compare(
        tiny_lm,
        lm_loss,
        lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.05, foreach=False),
        lm_batches(),
        steps=300,
    )
    assert report.ok, str(report)
    state = ps.TrainState.create(tiny_lm(), ps.optim.adamw())
    assert "tok.weight" in state.params and "head.weight" not in state.params
    assert state.buffers["blocks.0.attn.mask"].dtype == torch.bool


def test_gradient_accumulation_with_batchnorm_bitwise():
    report = ps.parity.compare(
        cnn,
        F.cross_entropy,
        lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
        batches((1, 6, 6), n=12),
        steps=300,
        accumulation_steps=4,
    )
    assert report.ok, str(report)


def test_clipping_scheduler_and_two_groups_with_a_frozen_layer_bitwise():
    def build():
        model = mlp(seed=5)
        model[0].weight.requires_grad_(False)
        return model

    def groups(model):
        return torch.optim.SGD(
            [
                {"params": [model[0].bias], "lr": 0.02, "weight_decay": 0.0},
                {"params": model[3].parameters()},
            ],
            lr=0.05,
            momentum=0.9,
            weight_decay=1e-3,
            foreach=False,
        )

    report = ps.parity.compare(
        build,
        F.cross_entropy,
        batches=batches((10,)),
        steps=300,
        torch_optimizer_from_model=groups,
        clip_grad_norm=0.5,
        scheduler=lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [50, 120, 200], 0.5),
    )
    assert report.ok, str(report)
    assert report.info["clip_grad_norm"] == 0.5


def test_model_returning_a_dict():
    report = ps.parity.compare(
        DictOutput,
        lambda out, y: F.cross_entropy(out["logits"], y),
        lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
        batches((10,)),
        steps=100,
    )
    assert report.ok, str(report)


def test_bfloat16_autocast_close():
    report = ps.parity.compare(
        lambda: mlp(seed=2),
        F.cross_entropy,
        lambda p: torch.optim.AdamW(p, lr=1e-2, foreach=False),
        batches((10,)),
        steps=100,
        autocast=torch.bfloat16,
        mode="close",
        rtol=1e-5,
        atol=1e-6,
    )
    assert report.ok, str(report)
    assert report.info["autocast"] == "torch.bfloat16"


def test_teacher_forcing_with_accumulation_and_clipping():
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True),
        batches((10,)),
        steps=40,
        mode="close",
        forcing="teacher",
        accumulation_steps=2,
        clip_grad_norm=1.0,
    )
    assert report.ok, str(report)


# -- deliberate faults: caught at the right step, with the tensor named -------------------


def test_fault_missing_weight_decay_on_one_group():
    def torch_groups(model):
        return torch.optim.AdamW(
            [
                {"params": [p for n, p in model.named_parameters() if n.endswith("weight")]},
                {
                    "params": [p for n, p in model.named_parameters() if n.endswith("bias")],
                    "weight_decay": 0.0,
                },
            ],
            lr=1e-2,
            weight_decay=0.1,
            foreach=False,
        )

    wrong = ps.optim.param_groups(ps.optim.adamw, [{"params": "bias"}], lr=1e-2, weight_decay=0.0)
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        batches=batches((10,)),
        steps=5,
        torch_optimizer_from_model=torch_groups,
        optimizer=wrong,
    )
    d = report.first_divergence
    assert (d.step, d.category) == (0, "params") and d.name.endswith("weight")
    right = ps.optim.param_groups(
        ps.optim.adamw, [{"params": "bias", "weight_decay": 0.0}], lr=1e-2, weight_decay=0.1
    )
    assert ps.parity.compare(
        mlp,
        F.cross_entropy,
        batches=batches((10,)),
        steps=20,
        torch_optimizer_from_model=torch_groups,
        optimizer=right,
    ).ok


def test_fault_dropout_masks_differ():
    calls = iter([0.2, 0.3])  # the "identical" factory is not: dropout p differs
    report = ps.parity.compare(
        lambda: mlp(p=next(calls)),
        F.cross_entropy,
        lambda p: torch.optim.SGD(p, lr=0.1),
        batches((10,)),
        steps=5,
    )
    d = report.first_divergence
    assert (d.step, d.category) == (0, "loss")


def test_fault_buffer_not_updated():
    report = ps.parity.compare(
        ReassignedBuffer,
        F.cross_entropy,
        lambda p: torch.optim.SGD(p, lr=0.1),
        batches((10,)),
        steps=5,
    )
    d = report.first_divergence
    assert (d.step, d.category, d.name) == (0, "buffers", "ema")
    assert "first divergence at step 0: buffers['ema']" in report.summary()


def test_compiled_against_eager_reports_observed_tolerance():
    report = ps.parity.compare_compiled(
        lambda: mlp(p=0.3), F.cross_entropy, ps.optim.adam(lr=1e-2), batches((10,)), steps=20
    )
    assert report.ok, str(report)
    observed = report.info["observed_tolerance"]
    assert set(observed) == {"loss", "buffers", "grads", "opt_state", "params"}
    assert observed["params"] <= 1e-6
    counts = {"loss": 1, "buffers": 0, "grads": 4, "opt_state": 12, "params": 4}
    assert report.compared_counts() == counts


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"accumulation_steps": 0}, "accumulation_steps must be an int >= 1"),
        ({"clip_grad_norm": -1.0}, "clip_grad_norm must be >= 0"),
        ({"autocast": "bf16"}, "autocast must be a torch.dtype"),
    ],
)
def test_more_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ps.parity.compare(
            mlp, F.cross_entropy, lambda p: torch.optim.SGD(p), batches((10,)), steps=3, **kwargs
        )
