"""scheduled(): torch's optimizer + lr scheduler pair, per batch, per epoch, on plateau."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep._compat import counters
from purestep.optim import schedules
from purestep.optim.hyperparams import lr_tensors
from purestep.optim.scheduled import schedule_step, scheduled
from tests.support import MODELS, batches, run_bitwise


def test_per_batch_steplr_bitwise():
    build, shape = MODELS["cnn_batchnorm"]
    model = build(0)
    torch_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=False)
    torch_sched = torch.optim.lr_scheduler.StepLR(torch_opt, step_size=7, gamma=0.7)
    opt = scheduled(ps.optim.sgd(lr=0.1, momentum=0.9), schedules.step_lr(step_size=7, gamma=0.7))
    assert (
        run_bitwise(
            model, F.cross_entropy, torch_opt, opt, batches(shape), 300, torch_scheduler=torch_sched
        )
        is None
    )


@pytest.mark.parametrize(
    ("torch_sched", "ours"),
    [
        (
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=1e-4),
            schedules.cosine_annealing_lr(12, 1e-4),
        ),
        (
            lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=6),
            schedules.linear_lr(0.1, total_iters=6),
        ),
    ],
    ids=["cosine", "linear-warmup"],
)
def test_per_epoch_schedules_in_parity(torch_sched, ours):
    report = ps.parity.compare(
        MODELS["mlp_dropout"][0],
        F.cross_entropy,
        lambda p: torch.optim.AdamW(p, lr=1e-2, foreach=False),
        batches((10,)),
        steps=200,
        scheduler=torch_sched,
        scheduler_every=8,
        optimizer=scheduled(ps.optim.adamw(lr=1e-2), ours, every=8),
    )
    assert report.ok, str(report)


def test_off_by_one_schedule_is_caught_where_the_lrs_part():
    report = ps.parity.compare(
        MODELS["mlp_dropout"][0],
        F.cross_entropy,
        lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
        batches((10,)),
        steps=30,
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5),
        optimizer=scheduled(ps.optim.adam(lr=1e-2), schedules.step_lr(step_size=11, gamma=0.5)),
    )
    d = report.first_divergence
    assert (d.step, d.category) == (10, "params"), str(report)


def test_reduce_on_plateau_fed_the_metric_per_epoch():
    build, shape = MODELS["mlp_dropout"]
    reference = build(0)
    model = copy.deepcopy(reference)
    torch_opt = torch.optim.SGD(reference.parameters(), lr=0.1, foreach=False)
    torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        torch_opt, patience=1, factor=0.5, cooldown=1
    )
    plateau = schedules.reduce_on_plateau(patience=1, factor=0.5, cooldown=1)
    opt = scheduled(ps.optim.sgd(lr=0.1), plateau, every=None)
    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(model, F.cross_entropy, opt)
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 0.45, 0.46]
    key = ps.rng_key(0)
    data = batches(shape)
    for epoch, metric in enumerate(metrics):
        for x, y in data:
            with ps.rng_scope(key) as scope:
                torch_opt.zero_grad()
                F.cross_entropy(reference(x), y).backward()
                torch_opt.step()
            key = scope.key
            state, _ = step(state, (x, y))
        torch_sched.step(metric)
        state = state._replace(opt_state=schedule_step(state.opt_state, plateau, metric))
        assert float(lr_tensors(state.opt_state)[0]) == torch_opt.param_groups[0]["lr"], epoch
        assert all(torch.equal(state.params[n], p) for n, p in reference.named_parameters()), epoch
    assert torch_opt.param_groups[0]["lr"] < 0.1, "the test must exercise a reduction"


def test_compiled_scheduled_step_never_recompiles():
    model = MODELS["mlp_dropout"][0](0)
    opt = scheduled(ps.optim.adam(lr=1e-2), schedules.cosine_annealing_lr(T_max=9), every=3)
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    compiled = ps.compile(eager)
    data = batches((10,))
    s_eager = s_comp = ps.TrainState.create(model, opt)
    s_comp, _ = compiled(s_comp, data[0])
    s_eager, _ = eager(s_eager, data[0])
    counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in range(1, 40):
            s_comp, _ = compiled(s_comp, data[t % len(data)])
            s_eager, _ = eager(s_eager, data[t % len(data)])
            torch.testing.assert_close(
                lr_tensors(s_comp.opt_state), lr_tensors(s_eager.opt_state), rtol=1e-12, atol=0
            )
    assert counters["stats"]["unique_graphs"] == 0


def test_scheduled_errors():
    with pytest.raises(ValueError, match="every must be a positive int or None"):
        scheduled(ps.optim.sgd(), schedules.step_lr(3), every=0)
    no_lr = scheduled(ps.optim.as_optimizer(ps.optim.scale(-0.1)), schedules.step_lr(3))
    with pytest.raises(ValueError, match="holds no dynamic 'lr'"):
        no_lr.init({"w": torch.zeros(1)})
    two = ps.optim.param_groups(ps.optim.sgd, [{"params": "b"}], lr=0.1)  # group0 + rest
    with pytest.raises(ValueError, match="one per param group \\(2 groups\\), got 3"):
        scheduled(two, [schedules.step_lr(3)] * 3).init({"a": torch.zeros(1), "b": torch.zeros(1)})
    with pytest.raises(ValueError, match="has no scheduled\\(\\) part"):
        schedule_step(ps.optim.sgd().init({"w": torch.zeros(1)}), schedules.step_lr(3))
