"""purestep.parity.compare: verdicts, first-divergence reports and errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps
from tests.support import batches, cnn, mlp


def adam(params):
    return torch.optim.Adam(params, lr=1e-2, foreach=False)


@pytest.mark.parametrize(
    ("build", "shape"), [(mlp, (10,)), (cnn, (1, 6, 6))], ids=["mlp_dropout", "cnn_bn"]
)
def test_bitwise_ok_over_300_steps(build, shape):
    report = ps.parity.compare(build, F.cross_entropy, adam, batches(shape), steps=300)
    assert report.ok, str(report)
    assert report.steps == 300 and report.first_divergence is None
    assert report.max_abs("params") == 0.0
    text = str(report)
    assert "PARITY OK: 300 steps bitwise" in text and "| step |" in text


def test_sgd_momentum_and_frozen_layer():
    def build():
        model = mlp(seed=3)
        model[0].weight.requires_grad_(False)
        return model

    report = ps.parity.compare(
        build,
        F.cross_entropy,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, foreach=False),
        batches((10,)),
        steps=100,
    )
    assert report.ok, str(report)


def test_wrong_lr_is_caught_at_step_0_with_the_tensor_named():
    report = ps.parity.compare(
        mlp, F.cross_entropy, adam, batches((10,)), steps=20, optimizer=ps.optim.adam(lr=1.001e-2)
    )
    assert not report.ok
    d = report.first_divergence
    assert d.step == 0 and d.category == "params" and d.name == "0.weight"
    assert d.ref_value != d.fun_value and d.ulp > 0
    assert "first divergence at step 0: params['0.weight']" in report.summary()


def test_missing_weight_decay_is_caught():
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False),
        batches((10,)),
        steps=5,
        optimizer=ps.optim.adamw(lr=1e-2, weight_decay=0.0),
    )
    assert report.first_divergence.step == 0
    assert report.first_divergence.category in {"params", "opt_state"}


def test_close_mode_and_teacher_forcing_with_foreach():
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True),
        batches((10,)),
        steps=50,
        mode="close",
        rtol=1e-5,
        atol=1e-6,
        forcing="teacher",
    )
    assert report.ok, str(report)


def test_compiled_functional_side_is_close():
    report = ps.parity.compare(
        lambda: mlp(p=0.3),
        F.cross_entropy,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=False),
        batches((10,)),
        steps=30,
        mode="close",
        atol=1e-5,
        forcing="teacher",
        compile=True,
    )
    assert report.ok, str(report)
    assert report.info["compiled"] is True


def test_report_serialisation_and_plot(tmp_path):
    report = ps.parity.compare(
        mlp, F.cross_entropy, adam, batches((10,)), steps=10, optimizer=ps.optim.adam(lr=0.02)
    )
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["steps"] == 10
    assert data["first_divergence"]["step"] == 0
    assert len(data["records"]) == 10
    md = report.to_markdown()
    assert md.count("\n| ") == 11  # header + 10 rows
    path = report.plot(str(tmp_path / "parity.png"))
    assert (tmp_path / "parity.png").stat().st_size > 1000 and path.endswith("parity.png")


def test_assert_parity_raises_with_the_report():
    ps.parity.assert_parity(mlp, F.cross_entropy, adam, batches((10,)), steps=5)
    with pytest.raises(AssertionError, match="first divergence at step 0") as err:
        ps.parity.assert_parity(
            mlp, F.cross_entropy, adam, batches((10,)), steps=5, optimizer=ps.optim.adam(lr=0.5)
        )
    assert err.value.report.first_divergence.step == 0


def test_short_iterables_are_cycled_and_one_shot_iterators_noted():
    data = batches((10,), n=3)
    assert ps.parity.compare(mlp, F.cross_entropy, adam, data, steps=7).steps == 7
    report = ps.parity.compare(mlp, F.cross_entropy, adam, iter(data), steps=7)
    assert report.steps == 3 and "ran out after 3 of 7" in report.to_markdown()


def test_dataloader_batches():
    x, y = torch.randn(64, 10), torch.randint(0, 4, (64,))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True
    )
    report = ps.parity.compare(mlp, F.cross_entropy, adam, loader, steps=12)
    assert report.ok, str(report)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps must be a positive int, got 0"),
        ({"steps": -3}, ValueError, "steps must be a positive int"),
        ({"mode": "exact"}, ValueError, "mode must be one of"),
        ({"forcing": "teacher-ish"}, ValueError, "forcing must be one of"),
        ({"batches": []}, ValueError, "batches is empty"),
        ({"model": 3}, TypeError, "model must be an nn.Module or a factory"),
        ({"torch_optimizer": lambda p: None}, TypeError, "not a torch.optim.Optimizer"),
        (
            {"torch_optimizer": lambda p: torch.optim.Rprop(p)},
            ValueError,
            "does not support torch.optim.Rprop",
        ),
        ({"torch_optimizer": lambda p: torch.optim.Adam(p, fused=True)}, ValueError, "fused=True"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = {
        "model": mlp,
        "criterion": F.cross_entropy,
        "torch_optimizer": adam,
        "batches": batches((10,)),
        "steps": 5,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ps.parity.compare(**args)


def test_factory_building_different_models_is_rejected():
    sizes = iter([16, 32])
    with pytest.raises(ValueError, match="different parameters or buffers"):
        ps.parity.compare(
            lambda: mlp(hidden=next(sizes)), F.cross_entropy, adam, batches((10,)), steps=2
        )


def test_ulp_distance():
    one = torch.tensor(1.0)
    assert ps.parity.ulp_distance(one, torch.nextafter(one, torch.tensor(2.0))) == 1
    assert ps.parity.ulp_distance(torch.tensor(-0.0), torch.tensor(0.0)) == 0
    tiny = torch.nextafter(torch.tensor(0.0), torch.tensor(1.0))
    assert ps.parity.ulp_distance(-tiny, tiny) == 2
    assert ps.parity.ulp_distance(one, one.double()) == -1


def test_param_groups_with_equal_settings_and_model_factory_argument():
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        lambda model: torch.optim.SGD(
            [{"params": model[0].parameters()}, {"params": model[3].parameters()}],
            lr=0.1,
            foreach=False,
        ),
        batches((10,)),
        steps=20,
    )
    assert report.ok


def test_model_instance_is_deep_copied():
    model = nn.Linear(10, 4)
    before = model.weight.detach().clone()
    report = ps.parity.compare(model, F.cross_entropy, adam, batches((10,)), steps=5)
    assert report.ok and torch.equal(model.weight, before)
