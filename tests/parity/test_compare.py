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


def test_param_groups_from_a_model_factory():
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        batches=batches((10,)),
        steps=20,
        torch_optimizer_from_model=lambda model: torch.optim.SGD(
            [{"params": model[0].parameters()}, {"params": model[3].parameters()}],
            lr=0.1,
            foreach=False,
        ),
    )
    assert report.ok


def test_the_torch_optimizer_is_chosen_explicitly_not_by_parameter_name():
    # Old code: a factory whose first parameter is named `model` silently got the model.
    def by_model(model):
        return torch.optim.SGD(model[0].parameters(), lr=0.1)

    with pytest.raises(TypeError, match="goes in torch_optimizer_from_model="):
        ps.parity.compare(mlp, F.cross_entropy, by_model, batches((10,)), steps=2)
    with pytest.raises(TypeError, match="exactly one of torch_optimizer .* got both"):
        ps.parity.compare(
            mlp, F.cross_entropy, adam, batches((10,)), steps=2, torch_optimizer_from_model=by_model
        )
    with pytest.raises(TypeError, match="exactly one of torch_optimizer .* got neither"):
        ps.parity.compare(mlp, F.cross_entropy, batches=batches((10,)), steps=2)
    with pytest.raises(TypeError, match="torch_optimizer_from_model must be callable"):
        ps.parity.compare(
            mlp, F.cross_entropy, batches=batches((10,)), torch_optimizer_from_model=3
        )
    with pytest.raises(TypeError, match="torch_optimizer_from_model returned str"):
        ps.parity.compare(
            mlp, F.cross_entropy, batches=batches((10,)), torch_optimizer_from_model=lambda m: "x"
        )
    with pytest.raises(TypeError, match="compare\\(\\) needs batches"):
        ps.parity.compare(mlp, F.cross_entropy, adam, steps=2)


# -- the check never passes vacuously ----------------------------------------------------


def test_report_lists_what_was_compared():
    report = ps.parity.compare(cnn, F.cross_entropy, adam, batches((1, 6, 6)), steps=3)
    assert report.ok, str(report)
    counts = {"loss": 1, "buffers": 3, "grads": 6, "opt_state": 18, "params": 6}
    assert report.compared_counts() == counts
    assert "1.running_mean" in report.compared["buffers"]
    assert "0.weight.exp_avg_sq" in report.compared["opt_state"]
    assert report.summary().endswith(
        "compared loss, 6 grads, 6 params, 3 buffers, "
        "18 optimizer-state tensors (exp_avg, exp_avg_sq, step)"
    )
    assert "| max abs buffers (3) | max abs grads (6) |" in report.to_markdown()
    data = json.loads(report.to_json())
    assert data["compared_counts"] == counts and data["uncompared"] == []
    assert data["compared"]["params"] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "4.weight",
        "4.bias",
    ]


@pytest.mark.parametrize(
    ("torch_amsgrad", "missing"),
    [(True, "only in torch's state"), (False, "only in the functional state")],
    ids=["torch-only", "functional-only"],
)
def test_an_optimizer_state_tensor_on_one_side_only_fails(torch_amsgrad, missing):
    # amsgrad's max_exp_avg_sq on one side only: the first step's update is the same either
    # way, so the old check (which skipped keys the functional state lacks) passed.
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=torch_amsgrad, foreach=False),
        batches((10,)),
        steps=1,
        optimizer=ps.optim.adam(lr=1e-2, amsgrad=not torch_amsgrad),
    )
    assert not report.ok
    d = report.first_divergence
    assert (d.step, d.category, d.name) == (0, "opt_state", "0.weight.max_exp_avg_sq")
    assert f"opt_state['0.weight.max_exp_avg_sq']: not compared, {missing}" in report.summary()
    assert len(report.uncompared) == 4  # one per parameter
    assert "not compared (no counterpart): 3.bias.max_exp_avg_sq" in report.to_markdown()
    assert len(json.loads(report.to_json())["uncompared"]) == 4
    assert report.max_abs("params") == 0.0  # the tensors that were compared agreed


def test_state_of_a_parameter_torch_has_not_stepped_must_stay_initial():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(10, 4)
            self.spare = nn.Parameter(torch.ones(3))  # never used: torch never steps it

        def forward(self, x):
            return self.fc(x)

    report = ps.parity.compare(Unused, F.cross_entropy, adam, batches((10,)), steps=2)
    # torch skips a parameter without a gradient; the functional Adam counts its step
    d = report.first_divergence
    assert (d.step, d.category, d.name) == (0, "opt_state", "spare.step"), str(report)
    assert (d.ref_value, d.fun_value) == (0.0, 1.0)
    # The report says why, and what to do.
    assert report.hint is not None and "1 parameter(s) got no gradient" in report.hint
    assert "(spare)" in report.hint and "requires_grad=False" in report.summary()

    class Frozen(Unused):
        def __init__(self):
            super().__init__()
            self.spare.requires_grad_(False)

    fixed = ps.parity.compare(Frozen, F.cross_entropy, adam, batches((10,)), steps=2)
    assert fixed.ok and not fixed.notes, str(fixed)


def test_documented_keys_without_counterpart_are_noted():
    report = ps.parity.compare(
        mlp,
        F.cross_entropy,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=False),
        batches((10,)),
        steps=3,
    )
    assert report.ok, str(report)
    assert report.compared_counts()["opt_state"] == 4  # momentum_buffer of each parameter
    assert "optimizer-state key 'step' not compared: torch.optim.SGD keeps no step count" in (
        report.to_markdown()
    )
    assert set(ps.parity.NO_COUNTERPART) == {"SGD"}


def test_model_instance_is_deep_copied():
    model = nn.Linear(10, 4)
    before = model.weight.detach().clone()
    report = ps.parity.compare(model, F.cross_entropy, adam, batches((10,)), steps=5)
    assert report.ok and torch.equal(model.weight, before)
