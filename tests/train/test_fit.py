"""``ps.fit``: exact resume anywhere, early stopping, ReduceLROnPlateau, the NaN policies."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

import purestep as ps
from purestep.data import Batches
from purestep.optim.schedules.convert import schedule_from_torch
from purestep.train import (
    Checkpointer,
    EarlyStopping,
    NonFiniteLossError,
    TrainingInterrupted,
    fit,
    load_checkpoint,
    make_metrics,
)
from tests.support import examples


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


class Setup:
    """One model/optimizer with ReduceLROnPlateau, metrics and a train/val split."""

    def __init__(self, *, compiled: bool, nan_policy: str = "raise") -> None:
        model = _model()
        torch_opt = torch.optim.Adam(model.parameters(), lr=0.05, foreach=False)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, patience=0, factor=0.5)
        opt = ps.optim.from_torch(torch_opt, model, sched, schedule_every=None)
        if nan_policy == "skip":
            opt = ps.optim.apply_if_finite(opt)
        self.plateau = schedule_from_torch(sched)
        self.metrics = make_metrics(["accuracy", "f1_macro", "confusion_matrix"], "multiclass")
        crit = nn.CrossEntropyLoss()
        self.train_step = ps.make_train_step(model, crit, opt, metrics_fn=self.metrics.stats)
        self.eval_step = ps.make_eval_step(model, crit, metrics_fn=self.metrics.stats)
        if compiled:
            self.train_step = ps.compile(self.train_step)
            self.eval_step = ps.compile(self.eval_step)
        self.state = ps.TrainState.create(model, opt, seed=3)
        self.train = Batches(_data(88, 0), 16, seed=1)  # 6 batches, the last short
        self.val = Batches(_data(40, 1), 16, shuffle=False)

    def run(self, tmp, *, epochs=4, state=None, resume=None, **kw):
        kw.setdefault("early_stopping", EarlyStopping(patience=10, restore_best=False))
        return fit(
            self.state if state is None else state,
            self.train_step,
            self.train,
            epochs=epochs,
            eval_step=self.eval_step,
            val_data=self.val,
            metrics=self.metrics,
            plateau=self.plateau,
            checkpointer=Checkpointer(tmp, keep=3),
            resume=resume,
            log_every=4,
            **kw,
        )


def _stop_after(n: int):
    calls = [0]

    def should_stop() -> bool:
        calls[0] += 1
        return calls[0] >= n

    return should_stop


_SETUPS: dict[bool, Setup] = {}


def _setup(compiled: bool) -> Setup:
    if compiled not in _SETUPS:  # one compile per module, shared by every example
        _SETUPS[compiled] = Setup(compiled=compiled)
    return _SETUPS[compiled]


def _resume_matches(tmp_path, compiled: bool, stops: list[int], every_steps: int | None):
    s = _setup(compiled)
    ref_state, ref_hist = s.run(tmp_path / "ref", checkpoint_every_steps=every_steps)
    directory = tmp_path / "run"
    state, loop = s.state, None
    for stop in sorted(set(stops)):  # interrupted at these global steps, resumed each time
        done = loop.step if loop is not None else 0
        with pytest.raises(TrainingInterrupted) as info:
            s.run(
                directory,
                state=state,
                resume=loop,
                checkpoint_every_steps=every_steps,
                should_stop=_stop_after(stop - done),
            )
        assert info.value.checkpoint is not None
        ckpt = load_checkpoint(directory, s.train_step)
        state, loop = ckpt.state, ckpt.loop
    final, hist = s.run(directory, state=state, resume=loop, checkpoint_every_steps=every_steps)
    for (k, a), b in zip(
        ps.core.pytree.tree_flatten_with_path(ref_state)[0],
        ps.core.pytree.tree_leaves(final),
        strict=True,
    ):
        assert torch.equal(a, b), k
    assert hist.without_timing() == ref_hist.without_timing()
    assert len(hist) == 4 and hist.records[-1]["val_confusion_matrix"]


@settings(max_examples=examples(3, 15))
@given(
    stops=st.lists(st.integers(1, 23), min_size=1, max_size=3),
    every_steps=st.sampled_from([None, 5]),
)
@example(stops=[6], every_steps=None)  # exactly at an epoch's end
@example(stops=[1, 1, 1], every_steps=5)  # first step, repeatedly
def test_resume_is_exact_eager(tmp_path_factory, stops, every_steps):
    _resume_matches(tmp_path_factory.mktemp("r"), False, stops, every_steps)


@pytest.mark.slow
@settings(max_examples=examples(2, 8))
@given(stops=st.lists(st.integers(1, 23), min_size=1, max_size=2))
def test_resume_is_exact_compiled(tmp_path_factory, stops):
    _resume_matches(tmp_path_factory.mktemp("c"), True, stops, 5)


def test_resume_is_exact_compiled_once(tmp_path):
    _resume_matches(tmp_path, True, [9], None)


def test_plateau_follows_torch(tmp_path):
    s = _setup(False)
    _, hist = s.run(tmp_path, epochs=5)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    lrs = []
    for value in hist["val_loss"]:
        lrs.append(opt.param_groups[0]["lr"])
        sched.step(value)
    assert hist["lr"] == lrs  # the lr each epoch ran with, bitwise torch's
    assert len(set(lrs)) > 1


def test_early_stopping_and_restore_best(tmp_path):
    s = _setup(False)
    # patience 0 on training loss with a huge min_delta: stops after the 2nd epoch.
    es = EarlyStopping(monitor="loss", patience=0, min_delta=10.0, restore_best=True)
    state, hist = s.run(tmp_path, epochs=6, early_stopping=es)
    assert len(hist) == 2
    best = load_checkpoint(tmp_path / "best", s.train_step)
    assert best.loop.epoch == 1 and int(state.step) == int(best.state.step) == 6
    for a, b in zip(
        ps.core.pytree.tree_leaves(state), ps.core.pytree.tree_leaves(best.state), strict=True
    ):
        assert torch.equal(a, b)
    latest = load_checkpoint(tmp_path / "latest", s.train_step)
    assert latest.loop.stop_reason == "early_stopping" and latest.loop.finished
    # Resuming a stopped run trains nothing more.
    _, hist2 = s.run(tmp_path, epochs=6, early_stopping=es, state=latest.state, resume=latest.loop)
    assert len(hist2) == 2


def test_early_stopping_patience_counts_epochs(tmp_path):
    s = _setup(False)
    es = EarlyStopping(monitor="val_accuracy", patience=2, min_delta=1.0, restore_best=False)
    _, hist = s.run(tmp_path, epochs=10, early_stopping=es)
    assert len(hist) == 3  # the first epoch sets the best, then 2 without improvement


def test_monitor_must_exist(tmp_path):
    s = _setup(False)
    with pytest.raises(ValueError, match="cannot monitor 'val_auc'"):
        s.run(tmp_path, early_stopping=EarlyStopping(monitor="val_auc"))
    with pytest.raises(ValueError, match="needs val_data"):
        fit(s.state, s.train_step, s.train, epochs=1, early_stopping=EarlyStopping())


def _poisoned(at_batch: int) -> Batches:
    x, y = _data(64, 0)
    x = x.clone()
    x[at_batch * 16] = float("nan")
    return Batches((x, y), 16, shuffle=False)


def test_nan_raise_names_the_step_and_keeps_the_last_checkpoint(tmp_path):
    s = _setup(False)
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3 \(batch 3 of the epoch\)"):
        fit(
            s.state,
            s.train_step,
            _poisoned(2),
            epochs=3,
            checkpointer=ckpt,
            log_every=2,
            checkpoint_every_steps=2,
        )
    # A checkpoint at step 2, none from the bad step 3 on.
    assert ckpt.pointer("latest").name == "step-00000002"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step")) == [
        "step-00000002"
    ]


def test_nan_skip(tmp_path):
    s = Setup(compiled=False, nan_policy="skip")
    state, hist = fit(s.state, s.train_step, _poisoned(1), epochs=2, nan_policy="skip")
    assert hist["skipped_steps"] == [1, 1] and all(math.isfinite(v) for v in hist["loss"])
    assert all(bool(p.isfinite().all()) for p in state.params.values())
    assert int(state.opt_state.total_notfinite) == 2


def test_nan_stop(tmp_path):
    s = _setup(False)
    state, hist = fit(s.state, s.train_step, _poisoned(3), epochs=3, nan_policy="stop", log_every=1)
    assert len(hist) == 0 and int(state.step) == 3  # the state before the bad batch
    assert all(bool(p.isfinite().all()) for p in state.params.values())
    # With a checkpointer, training ends with a final checkpoint of that state, marked
    # finished (a --resume trains no further).
    ckpt = Checkpointer(tmp_path)
    again, _ = fit(
        s.state, s.train_step, _poisoned(3), epochs=3, nan_policy="stop", checkpointer=ckpt
    )
    saved = load_checkpoint(tmp_path / "latest", s.train_step)
    assert saved.loop.stop_reason == "nan" and (saved.loop.epoch, saved.loop.step) == (0, 0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(saved.state.params.values(), again.params.values(), strict=True)
    )
    assert int(again.step) == 0  # log_every 50: the last checked state is the first one
    done, hist = fit(saved.state, s.train_step, _poisoned(3), epochs=3, resume=saved.loop)
    assert len(hist) == 0 and int(done.step) == 0


def test_any_iterable_restarts_the_epoch(tmp_path):
    s = _setup(False)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*_data(48, 0)), batch_size=16
    )
    with pytest.raises(TrainingInterrupted):
        fit(
            s.state,
            s.train_step,
            loader,
            epochs=2,
            checkpointer=Checkpointer(tmp_path),
            should_stop=_stop_after(4),
        )
    ckpt = load_checkpoint(tmp_path / "latest", s.train_step)
    assert (ckpt.loop.epoch, ckpt.loop.batch) == (1, 1)
    _, hist = fit(ckpt.state, s.train_step, loader, epochs=2, resume=ckpt.loop)
    assert len(hist) == 2 and hist.records[1]["step"] == 7  # epoch 2 rerun from its start


def test_argument_errors():
    s = _setup(False)
    for kwargs, match in [
        ({"epochs": -1}, "epochs must be an int >= 0"),
        ({"epochs": 1, "nan_policy": "ignore"}, "nan_policy must be one of"),
        ({"epochs": 1, "log_every": 0}, "log_every must be an int >= 1"),
        ({"epochs": 1, "eval_step": s.eval_step}, "give both eval_step and val_data"),
    ]:
        with pytest.raises(ValueError, match=match):
            fit(s.state, s.train_step, s.train, **kwargs)
    with pytest.raises(ValueError, match="patience must be an int >= 0"):
        EarlyStopping(patience=-1)
