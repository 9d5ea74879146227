"""Callbacks (issue 22): user code at the loop's events, its state in every checkpoint."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

import purestep as ps
from purestep.cli import main
from purestep.data.batching import Batches
from purestep.train import Checkpointer, load_checkpoint
from purestep.train.callbacks import Callback


class Counter:  # duck typing: no base class
    def __init__(self, stop_at: int | None = None) -> None:
        self.steps = self.epochs = self.starts = self.ends = 0
        self.losses: list[float] = []
        self.checkpoints: list[str] = []
        self.stop_at = stop_at

    def on_fit_start(self, loop):
        self.starts += 1

    def on_step_end(self, loop, metrics):
        self.steps += 1
        assert loop.step == self.steps + self.offset()
        self.losses.append(float(metrics["loss"]))
        if self.stop_at is not None and loop.step == self.stop_at:
            loop.request_stop("enough")

    def offset(self) -> int:
        return 0

    def on_epoch_end(self, loop, record):
        self.epochs += 1
        assert record["epoch"] == loop.epoch and loop.history[-1] is record

    def on_checkpoint(self, loop, path):
        self.checkpoints.append(path.name)

    def on_fit_end(self, loop, history):
        self.ends += 1

    def state_dict(self):
        return {"steps": self.steps, "epochs": self.epochs, "losses": self.losses}

    def load_state_dict(self, state):
        self.steps, self.epochs = state["steps"], state["epochs"]
        self.losses = list(state["losses"])


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 3))
    opt = ps.optim.adam(lr=1e-2)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    data = Batches((x, y), 8, seed=1)
    step = ps.make_train_step(model, nn.CrossEntropyLoss(), opt)
    return ps.TrainState.create(model, opt, seed=seed), step, data


def test_events_in_order_with_counts():
    state, step, data = _setup()
    counter = Counter()
    _, history = ps.fit(state, step, data, epochs=3, callbacks=[counter])
    assert (counter.starts, counter.steps, counter.epochs, counter.ends) == (1, 15, 3, 1)
    assert len(history) == 3


def test_request_stop_ends_the_run_with_a_checkpoint(tmp_path):
    state, step, data = _setup()
    counter = Counter(stop_at=7)
    ckpt = Checkpointer(tmp_path / "ckpts")
    final, history = ps.fit(state, step, data, epochs=3, callbacks=[counter], checkpointer=ckpt)
    assert counter.steps == 7 and int(final.step) == 7 and len(history) == 1
    assert counter.checkpoints == ["step-00000005", "step-00000007"]
    loaded = load_checkpoint(tmp_path / "ckpts" / "latest", state)
    assert loaded.loop.stop_reason == "enough" and loaded.loop.finished
    assert loaded.loop.callbacks == [counter.state_dict()]


def test_callback_state_survives_an_interrupted_and_resumed_run(tmp_path):
    """A run killed between checkpoints resumes from the last one: the callbacks' state
    comes back with it, so the replayed steps are counted once (as after a kill -9)."""
    state, step, data = _setup()
    whole = Counter()
    ps.fit(state, step, data, epochs=3, callbacks=[whole])

    ckpt = Checkpointer(tmp_path / "ckpts")
    first = Counter()
    calls = iter(range(100))
    with pytest.raises(ps.train.TrainingInterrupted):
        ps.fit(
            state, step, data, epochs=3, callbacks=[first], checkpointer=ckpt,
            checkpoint_every_steps=4, should_stop=lambda: next(calls) == 9,
        )  # fmt: skip
    # "Killed" after step 10: resume from the checkpoint at step 8, not the one at 10.
    loaded = load_checkpoint(tmp_path / "ckpts" / "step-00000008", state)
    second = Counter()
    ps.fit(
        loaded.state, step, data, epochs=3, resume=loaded.loop, callbacks=[second],
        checkpointer=Checkpointer(tmp_path / "other"),
    )  # fmt: skip
    assert second.state_dict() == whole.state_dict()  # counts and the per-step losses
    assert second.steps == 15 and second.starts == 1


def test_bad_callbacks_are_refused_by_name(tmp_path):
    state, step, data = _setup()
    with pytest.raises(TypeError, match="object has none of the callback methods"):
        ps.fit(state, step, data, epochs=1, callbacks=[object()])

    class Opaque(Callback):
        def state_dict(self):
            return {"tensor": torch.zeros(1)}

    with pytest.raises(TypeError, match="Opaque.state_dict\\(\\) must be JSON-able"):
        ps.fit(
            state, step, data, epochs=1, callbacks=[Opaque()], checkpointer=Checkpointer(tmp_path)
        )
    assert not list(tmp_path.glob("step-*"))  # nothing half-saved


MODULE = """
import json, pathlib
import torch

class GradNorm:
    def __init__(self, every=1, out="norms.json"):
        self.every, self.out, self.norms = every, out, []
    def on_step_end(self, loop, metrics):
        if loop.step % self.every == 0:
            g = metrics["grads"]
            self.norms.append(float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(v) for v in g.values()]))))
    def on_fit_end(self, loop, history):
        pathlib.Path(self.out).write_text(json.dumps(self.norms))
    def state_dict(self):
        return {"norms": self.norms}
    def load_state_dict(self, state):
        self.norms = list(state["norms"])
"""


def test_yaml_callbacks(tmp_path, monkeypatch, capsys):
    (tmp_path / "mycallbacks.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    norms = tmp_path / "norms.json"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        textwrap.dedent(f"""
        model: {{name: mlp, hidden: [8], out_features: 3}}
        data: {{name: blobs, n_train: 48, n_val: 16, n_classes: 3, batch_size: 16}}
        loss: cross_entropy
        optimizer: {{name: SGD, lr: 0.05}}
        train: {{epochs: 2, compile: false}}
        log: {{progress: false, plots: false, tensorboard: false}}
        callbacks: [{{name: "mycallbacks:GradNorm", every: 2, out: "{norms}"}}]
        """)
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    values = json.loads(norms.read_text())
    assert len(values) == 3 and all(v > 0 for v in values)  # steps 2, 4, 6
    meta = json.loads((out / "checkpoints" / "step-00000006" / "meta.json").read_text())
    assert meta["callbacks"] == [{"norms": values}]

    bad = cfg.read_text().replace("every: 2", "evry: 2")
    cfg.write_text(bad)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert "callbacks[0].evry: unknown argument of GradNorm; did you mean 'every'?" in err


def test_sweeps_refuse_callbacks_they_would_not_run():
    from purestep.train.sweep import base_config

    raw = {
        "model": {"name": "mlp", "hidden": [4], "out_features": 2},
        "loss": "cross_entropy",
        "optimizer": {"name": "SGD", "lr": 0.1},
        "callbacks": [{"name": "mymod:Cb"}],
    }
    with pytest.raises(ps.train.ConfigError, match="sweep and tune members do not run"):
        base_config(raw)
