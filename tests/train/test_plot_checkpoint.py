"""OUT/plots/confusion_matrix.png shows the checkpoint the reported metrics come from (the
test metrics' checkpoint, else the best one on validation), and its title says which."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from purestep.cli import main
from purestep.train import plots

CONFIG = """
model: {{name: mlp, hidden: [8], out_features: 1}}
data: {{name: sprites, n_train: 96, n_val: 40, n_test: {n_test}, batch_size: 32}}
loss: bce_with_logits
optimizer: {{name: SGD, lr: 2.0}}
metrics: [accuracy, confusion_matrix]
train: {{epochs: 4, compile: false}}
log: {{tensorboard: false, progress: false}}
"""


@pytest.fixture
def drawn(monkeypatch):
    calls: list[tuple[list[list[int]], str]] = []
    real = plots.plot_confusion_matrix

    def spy(matrix, path, *, labels=None, title="Confusion matrix"):
        calls.append((matrix, title))
        return real(matrix, path, labels=labels, title=title)

    monkeypatch.setattr(plots, "plot_confusion_matrix", spy)
    return calls


def _train(tmp_path: Path, n_test: int) -> Path:
    cfg, out = tmp_path / "cfg.yaml", tmp_path / "run"
    cfg.write_text(textwrap.dedent(CONFIG.format(n_test=n_test)))
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    assert (out / "plots" / "confusion_matrix.png").is_file()
    return out


def test_the_plot_is_the_test_metrics_checkpoint(tmp_path, drawn):
    out = _train(tmp_path, n_test=48)
    test = json.loads((out / "test_metrics.json").read_text())
    ((matrix, title),) = drawn
    assert matrix == test["confusion_matrix"] and sum(map(sum, matrix)) == 48
    assert title == f"Confusion matrix (test, {test['checkpoint']})"
    best = (out / "checkpoints" / "best").read_text().strip()
    assert test["checkpoint"] == best


def test_without_a_test_split_the_plot_is_the_best_checkpoint_on_validation(tmp_path, drawn):
    out = _train(tmp_path, n_test=0)
    best = (out / "checkpoints" / "best").read_text().strip()
    meta = json.loads((out / "checkpoints" / best / "meta.json").read_text())
    epoch = meta["best"]["epoch"]
    history = json.loads((out / "history.json").read_text())
    ((matrix, title),) = drawn
    assert matrix == history[epoch - 1]["val_confusion_matrix"]
    assert title == f"Confusion matrix (validation, best checkpoint {best}, epoch {epoch})"
