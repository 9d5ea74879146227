"""``purestep tune`` keeps its best trial as a run directory (``best/``, as ``sweep``
does), and its median pruner waits a warm-up before it stops a trial."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from purestep.cli import main

optuna = pytest.importorskip("optuna")

CONFIG = """
model: {name: mlp, hidden: [8], out_features: 1}
data: {name: sprites, n_train: 64, n_val: 32, n_test: 32, batch_size: 32}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-2}
metrics: [accuracy]
train: {epochs: 3, compile: false}
log: {progress: false, tensorboard: false, plots: false}
"""


def test_best_trial_is_a_run_directory(tmp_path, capsys):
    cfg, space = tmp_path / "cfg.yaml", tmp_path / "space.yaml"
    cfg.write_text(textwrap.dedent(CONFIG))
    space.write_text("optimizer.lr: {log_uniform: [1e-3, 1e-1]}\n")
    out = tmp_path / "tune"
    argv = ["tune", "--config", str(cfg), "--space", str(space), "--trials", "3"]
    assert main([*argv, "--parallel", "3", "--out", str(out)]) == 0
    assert f"best run: {out / 'best'}" in capsys.readouterr().out
    best = out / "best"
    assert yaml.safe_load((best / "config.yaml").read_text()) == yaml.safe_load(
        (out / "best.yaml").read_text()
    )
    history = json.loads((best / "history.json").read_text())
    study = optuna.load_study(study_name="purestep", storage=f"sqlite:///{out / 'study.db'}")
    assert min(r["val_loss"] for r in history) == study.best_value
    assert (best / "test_metrics.json").is_file()
    assert main(["evaluate", "--checkpoint", str(best), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val" and result["loss"] == pytest.approx(study.best_value, rel=1e-5)


def _study_with_finished_trials(pruner):
    study = optuna.create_study(pruner=pruner)
    for _ in range(6):
        trial = study.ask()
        for epoch in (1, 2, 3, 4):
            trial.report(0.1, epoch)
        study.tell(trial, 0.1)
    return study


@pytest.mark.parametrize("warmup", [1, 2])
def test_median_pruner_waits_the_warmup(warmup):
    from purestep.train.tune import median_pruner

    study = _study_with_finished_trials(median_pruner(optuna, warmup))
    trial = study.ask()
    verdicts = []
    for epoch in (1, 2, 3):
        trial.report(9.0, epoch)  # far worse than every finished trial
        verdicts.append(trial.should_prune())
    assert verdicts == [epoch > warmup for epoch in (1, 2, 3)]


def test_default_warmup_is_a_quarter_of_the_epochs(tmp_path):
    from purestep.train.tune import tune

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(CONFIG).replace("epochs: 3", "epochs: 8"))
    space = {"optimizer.lr": {"log_uniform": [1e-3, 1e-1]}}
    result = tune(cfg, space, trials=1, out=tmp_path / "t", print_fn=None)
    # 8 // 4 = 2 epochs of warm-up: Optuna's first pruning step is epoch 3.
    assert result.study.pruner._n_warmup_steps == 3
