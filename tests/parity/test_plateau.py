"""ReduceLROnPlateau in parity: both sides are stepped with bitwise the same metric."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep.optim import schedules
from purestep.optim.scheduled import scheduled
from tests.support import batches, mlp

EPOCH = 8  # batches per epoch: the scheduler steps once per epoch
PLATEAU = schedules.reduce_on_plateau(patience=1, factor=0.5, threshold=0.1)


def adam(params):
    return torch.optim.Adam(params, lr=1e-2, foreach=False)


def plateau(opt):
    # threshold 0.1: an epoch must improve the mean loss by 10% to count, so the lr drops
    # every (patience + 1) epochs once learning slows down.
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5, threshold=0.1)


def reductions(report):
    lrs = [entry["lr"][0] for entry in report.info["scheduler_steps"]]
    return sum(b < a for a, b in zip([1e-2, *lrs], lrs, strict=False))


def test_adam_with_plateau_on_the_epoch_mean_loss_bitwise():
    # Old code: scheduler.step() without the metric raised at the first epoch boundary.
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        adam,
        batches((10,)),
        steps=12 * EPOCH,
        scheduler=plateau,
        scheduler_every=EPOCH,
    )
    assert report.ok, str(report)
    assert report.info["scheduler_metric"] == "mean training loss since the last scheduler step"
    entries = report.info["scheduler_steps"]
    assert [e["step"] for e in entries] == [EPOCH * (i + 1) - 1 for i in range(12)]
    assert all(e["lr"] == e["lr_functional"] for e in entries)
    assert reductions(report) >= 2, entries
    first = [r.loss_ref for r in report.records[:EPOCH]]
    assert entries[0]["metric"] == math.fsum(first) / EPOCH


def test_user_metric_sees_the_reference_model_and_the_losses():
    seen = []

    def worst_loss(model, losses):
        seen.append((model.training, len(losses)))
        return torch.tensor(max(losses))

    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        adam,
        batches((10,)),
        steps=10 * EPOCH,
        scheduler=plateau,
        scheduler_every=EPOCH,
        scheduler_metric=worst_loss,
        forcing="teacher",
    )
    assert report.ok, str(report)
    assert seen == [(True, EPOCH)] * 10
    assert report.info["scheduler_metric"] == "worst_loss"
    assert all(
        e["metric"]
        == max(r.loss_ref for r in report.records[e["step"] + 1 - EPOCH : e["step"] + 1])
        for e in report.info["scheduler_steps"]
    )


def test_a_metric_that_draws_random_numbers_changes_nothing_else():
    def noisy(model, losses):
        model.eval()
        return float(torch.rand(()))  # both the draw and eval() are undone afterwards

    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        adam,
        batches((10,)),
        steps=3 * EPOCH,
        scheduler=plateau,
        scheduler_every=EPOCH,
        scheduler_metric=noisy,
    )
    assert report.ok, str(report)


def test_accumulation_and_an_explicit_functional_plateau():
    k = 2
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        adam,
        batches((10,)),
        steps=10 * EPOCH,
        scheduler=plateau,
        scheduler_every=EPOCH // k,
        accumulation_steps=k,
        optimizer=scheduled(ps.optim.adam(lr=1e-2), PLATEAU, every=None),
        plateau_schedule=PLATEAU,
    )
    assert report.ok, str(report)
    assert reductions(report) >= 1
    # the metric is the mean of the criterion's losses, before the 1/k of accumulation
    first = [k * r.loss_ref for r in report.records[:EPOCH]]
    assert report.info["scheduler_steps"][0]["metric"] == pytest.approx(sum(first) / EPOCH)


def test_a_wrong_functional_plateau_is_caught():
    wrong = schedules.reduce_on_plateau(patience=2, factor=0.5, threshold=0.1)
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        adam,
        batches((10,)),
        steps=12 * EPOCH,
        scheduler=plateau,
        scheduler_every=EPOCH,
        optimizer=scheduled(ps.optim.adam(lr=1e-2), wrong, every=None),
        plateau_schedule=wrong,
    )
    assert not report.ok
    assert report.first_divergence.category == "params"
    lrs = [(e["lr"], e["lr_functional"]) for e in report.info["scheduler_steps"]]
    assert any(a != b for a, b in lrs) and report.first_divergence.step > lrs.index(
        next(p for p in lrs if p[0] != p[1])
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scheduler_metric": lambda m, losses: 0.0}, ValueError, "scheduler_metric is given but"),
        (
            {
                "scheduler": lambda o: torch.optim.lr_scheduler.StepLR(o, 3),
                "scheduler_metric": lambda m, losses: 0.0,
            },
            ValueError,
            "StepLR.step\\(\\) takes no metric",
        ),
        ({"scheduler": plateau, "scheduler_metric": 3}, TypeError, "must be callable"),
        (
            {"scheduler": plateau, "scheduler_metric": lambda m, losses: "low"},
            TypeError,
            "scheduler_metric must return a number or a one-element tensor, got str",
        ),
        (
            {"scheduler": plateau, "scheduler_metric": lambda m, losses: torch.ones(2)},
            TypeError,
            "one-element tensor, got a tensor of shape \\(2,\\)",
        ),
        (
            {
                "scheduler": plateau,
                "optimizer": ps.optim.adam(lr=1e-2),
                "plateau_schedule": PLATEAU,
            },
            ValueError,
            "must be scheduled\\(\\.\\.\\., reduce_on_plateau",
        ),
        (
            {"scheduler": plateau, "optimizer": ps.optim.adam(lr=1e-2)},
            ValueError,
            "give plateau_schedule=",
        ),
        ({"plateau_schedule": PLATEAU}, ValueError, "scheduler is not ReduceLROnPlateau"),
    ],
)
def test_bad_plateau_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        ps.parity.compare(
            mlp,
            F.cross_entropy,
            adam,
            batches((10,)),
            steps=EPOCH,
            scheduler_every=EPOCH,
            **kwargs,
        )
