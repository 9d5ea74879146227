"""``ps.tune`` / ``purestep tune``: trials trained ``--parallel`` at a time, resumed from
SQLite after a SIGKILL without losing or repeating a trial, pruned members frozen, bad
spaces refused naming the key."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from purestep.cli import main
from purestep.train._space import parse_space
from purestep.train.config import ConfigError, load_config

optuna = pytest.importorskip("optuna")

CONFIG = """
model: {name: mlp, hidden: [16], out_features: 1}
data: {name: sprites, n_train: 96, n_val: 64, batch_size: 32}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-2}
metrics: [accuracy]
train: {epochs: 3, compile: false}
log: {progress: false, tensorboard: false, plots: false}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _trials(db: Path) -> list:
    study = optuna.load_study(study_name="purestep", storage=f"sqlite:///{db}")
    return study.get_trials(deepcopy=False)


def test_rounds_split_groups_prune_and_write_outputs(tmp_path, capsys):
    """Three trials per round over lr and two structure-changing choices; a pruner that
    stops trial 1 after its first epoch: that member freezes, the round's others go on."""
    from purestep.train.tune import tune

    cfg = _write(tmp_path, "cfg.yaml", CONFIG)
    space = {
        "optimizer.lr": {"log_uniform": [1e-3, 1e-1]},
        "model.hidden": {"choice": [[8], [16, 16]]},
        "optimizer.name": {"choice": ["SGD", "Adam"]},
    }

    class PruneTrialOne(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == 1 and trial.last_step == 1

    out = tmp_path / "tune"
    result = tune(cfg, space, trials=5, parallel=3, out=out, pruner=PruneTrialOne(), plots=True)
    trials = _trials(out / "study.db")
    assert len(trials) == 5
    state = optuna.trial.TrialState
    pruned = trials[1]
    assert pruned.state == state.PRUNED
    assert pruned.intermediate_values.keys() == {1} and pruned.user_attrs["epochs"] == 1
    for t in trials[:1] + trials[2:]:
        assert t.state == state.COMPLETE and t.user_attrs["epochs"] == 3
        assert sorted(t.intermediate_values) == [1, 2, 3]
        assert t.value == min(t.intermediate_values.values())  # the best val_loss
    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == [t.state.name for t in trials]
    assert {"optimizer.lr", "model.hidden", "optimizer.name", "value"} <= set(rows[0])
    best = min((t for t in trials if t.state == state.COMPLETE), key=lambda t: t.value)
    assert result.best_trial == best.number and result.best_value == best.value
    best_cfg = load_config(out / "best.yaml")  # a ready train config
    assert best_cfg.model.kwargs["hidden"] == json.loads(best.params["model.hidden"])
    assert best_cfg.optimizer.lr == best.params["optimizer.lr"]
    assert best_cfg.optimizer.name == best.params["optimizer.name"]
    assert (out / "plots" / "history.png").stat().st_size > 0
    assert (out / "plots" / "importances.png").stat().st_size > 0
    text = capsys.readouterr().out
    assert "round: trials 0, 1, 2" in text and "trial 1: pruned after 1 epochs" in text


def _counts(db: Path) -> tuple[int, int]:
    """(complete, running) trials, read straight from the SQLite file."""
    try:
        with sqlite3.connect(db, timeout=1) as con:
            rows = con.execute("SELECT state FROM trials").fetchall()
    except sqlite3.Error:
        return 0, 0
    states = [r[0] for r in rows]
    return states.count("COMPLETE"), states.count("RUNNING")


def test_killed_tune_resumes_without_losing_or_repeating_a_trial(tmp_path):
    cfg = _write(tmp_path, "cfg.yaml", CONFIG.replace("epochs: 3", "epochs: 4"))
    space = _write(tmp_path, "space.yaml", "optimizer.lr: {log_uniform: [1e-4, 1e-1]}\n")
    out = tmp_path / "tune"
    argv = [sys.executable, "-m", "purestep", "tune", "--config", str(cfg), "--space"]
    argv += [str(space), "--trials", "10", "--parallel", "2", "--out", str(out), "--no-plots"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "study.db"
    deadline = time.monotonic() + 240
    try:
        # Kill inside a round: some trials finished, others running.
        while time.monotonic() < deadline and proc.poll() is None:
            complete, running = _counts(db)
            if complete >= 2 and running >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    state = optuna.trial.TrialState
    before = _trials(db)
    ended = (state.COMPLETE, state.PRUNED)  # (the default median pruner may prune)
    finished = {t.number: (t.state, t.params, t.value) for t in before if t.state in ended}
    interrupted = [t for t in before if t.state == state.RUNNING]
    assert len(finished) >= 2 and interrupted
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "was interrupted" in again.stdout
    after = _trials(db)
    # Nothing finished was lost or changed ...
    for number, (was, params, value) in finished.items():
        assert (after[number].state, after[number].params, after[number].value) == (
            was,
            params,
            value,
        )
    # ... the interrupted trials failed and their parameters ran again, once each ...
    for t in interrupted:
        assert after[t.number].state == state.FAIL
        retries = [r for r in after if r.user_attrs.get("retry_of") == t.number]
        if t.params:
            assert len(retries) == 1 and retries[0].params == t.params
            assert retries[0].state in ended
        else:  # killed between ask and the first suggestion: nothing to run again
            assert retries == []
    # ... no finished trial was run twice, and the study has exactly the trials asked for.
    done = [t for t in after if t.state in ended]
    assert len(done) == 10
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 10
    with (out / "trials.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(after)


@pytest.mark.parametrize(
    ("space", "named"),
    [
        ("optimizer.lr: {log_uniform: [0, 1e-1]}", "optimizer.lr"),
        ("optimizer.lr: {log_uniform: [-1e-3, 1e-1]}", "optimizer.lr"),
        ("optimizer.lr: {uniform: [-1e-3, 1e-1]}", "optimizer.lr"),
        ("optimizer.lr: {log_uniform: [1e-3]}", "optimizer.lr"),
        ("optimizer.lr: {log_uniform: [1e-3, 1e-2, 1e-1]}", "optimizer.lr"),
        ("optimizer.lr: {log_uniform: [1e-1, 1e-3]}", "optimizer.lr"),
        ("optimizer.lr: {normal: [0, 1]}", "optimizer.lr"),
        ("optimizer.lr: {uniform: [0.1, 1], log_uniform: [1, 2]}", "optimizer.lr"),
        ("model.hidden: {choice: []}", "model.hidden"),
        ("model.hidden: {choice: [[8], [8]]}", "model.hidden"),
        ("model.hidden: {int: [1.5, 8]}", "model.hidden"),
        ("optimizer.lrr: {log_uniform: [1e-3, 1e-1]}", "optimizer.lrr"),
        ("optimzer.lr: {log_uniform: [1e-3, 1e-1]}", "optimzer"),
        ("model.widht: {int: [8, 16]}", "model.widht"),
        ("{}", "space"),
        ("[1, 2]", "space"),
    ],
)
def test_bad_spaces_exit_2_naming_the_key(tmp_path, capsys, space, named):
    cfg = _write(tmp_path, "cfg.yaml", CONFIG)
    path = _write(tmp_path, "space.yaml", space)
    out = tmp_path / "tune"
    code = main(
        ["tune", "--config", str(cfg), "--space", str(path), "--trials", "2", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert named in err
    assert not (out / "study.db").exists()  # refused before the study was made


def test_space_parses_and_draws(tmp_path):
    params = parse_space(
        yaml.safe_load(
            """
            optimizer.lr: {log_uniform: [1e-5, 1e-1]}
            model.hidden: {choice: [[8], [16, 16]]}
            data.batch_size: {int: [16, 64]}
            optimizer.name: {choice: [SGD, Adam]}
            """
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        values = {p.key: p.suggest(trial) for p in params}
        assert 1e-5 <= values["optimizer.lr"] <= 1e-1
        assert values["model.hidden"] in ([8], [16, 16])
        assert isinstance(values["data.batch_size"], int) and 16 <= values["data.batch_size"] <= 64
        assert values["optimizer.name"] in ("SGD", "Adam")
    with pytest.raises(ConfigError, match="space: optimizer.lr: log_uniform bounds must be > 0"):
        parse_space({"optimizer.lr": {"log_uniform": [0.0, 1.0]}})


def test_without_optuna_tune_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    cfg = _write(tmp_path, "cfg.yaml", CONFIG)
    space = _write(tmp_path, "space.yaml", "optimizer.lr: {log_uniform: [1e-4, 1e-1]}\n")
    code = main(["tune", "--config", str(cfg), "--space", str(space), "--trials", "2"])
    assert code == 2
    assert "pip install 'purestep[tune]'" in capsys.readouterr().err


def test_refused_under_a_distributed_launch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = _write(tmp_path, "cfg.yaml", CONFIG)
    space = _write(tmp_path, "space.yaml", "optimizer.lr: {log_uniform: [1e-4, 1e-1]}\n")
    out = tmp_path / "tune"
    argv = ["tune", "--config", str(cfg), "--space", str(space), "--trials", "2"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "purestep tune does not run under torchrun" in capsys.readouterr().err
    assert not out.exists()
