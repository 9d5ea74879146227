"""``purestep train`` / ``evaluate`` end to end: the run directory contract and exit codes."""

from __future__ import annotations

import csv
import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from purestep.cli import main

CONFIG = """
model: {name: mlp, hidden: [16], out_features: 1, dropout: 0.1}
data: {name: sprites, n_train: 192, n_val: 64, n_test: 64, batch_size: 32}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-2}
scheduler: {name: ReduceLROnPlateau, factor: 0.5, patience: 0}
metrics: [accuracy, f1, confusion_matrix]
early_stopping: {monitor: val_loss, patience: 5}
train: {epochs: 3, compile: false}
checkpoint: {every_steps: 4, keep: 3}
log: {progress: false}
"""


def _write(tmp_path: Path, text: str = CONFIG, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished run, shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("run")
    out = tmp / "out"
    code = main(["train", "--config", _write(tmp), "--out", str(out)])
    assert code == 0
    return tmp, out


def test_run_directory_contract(run, capsys):
    _, out = run
    assert (out / "config.yaml").is_file()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["optimizer"] == {"name": "Adam", "lr": 0.01, "param_groups": []}
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert {"loss", "val_loss", "accuracy", "val_accuracy", "val_f1", "lr", "seconds"} <= set(
        history[0]
    )
    assert (
        history[-1]["val_confusion_matrix"]
        and sum(map(sum, history[-1]["val_confusion_matrix"])) == 64
    )
    with (out / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_loss"]) for r in rows] == [r["val_loss"] for r in history]
    assert "val_confusion_matrix" not in rows[0]
    # Checkpoints: 8-digit step directories, pointers, at most `keep` (+ best).
    ckpts = out / "checkpoints"
    steps = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step-"))
    assert all(len(s) == len("step-00000018") for s in steps) and "step-00000018" in steps
    assert (ckpts / "latest").read_text().strip() == "step-00000018"
    assert (ckpts / "best").read_text().strip() in steps
    assert len(steps) <= 4
    # TensorBoard scalars and plots.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "val_loss", "val_accuracy", "lr"} <= tags
    assert [round(e.value, 5) for e in acc.Scalars("val_loss")] == [
        round(r["val_loss"], 5) for r in history
    ]
    for name in ("loss.png", "metrics.png", "lr.png", "confusion_matrix.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "test_metrics.json").read_text())["accuracy"] > 0


def test_train_prints_what_tutorials_print(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--config",
                _write(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--epochs",
                "1",
                "--no-plots",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for expected in (
        "device: cpu",
        "parameters",
        "MB",
        "epoch 1/1",
        "val_loss",
        "lr",
        "saved best (val_loss",
        "done in",
        "checkpoints:",
    ):
        assert expected in text, expected
    assert not (tmp_path / "o" / "plots").exists()


def test_resume_finished_and_extend(run, tmp_path, capsys):
    tmp, out = run
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)
    before = json.loads((copy / "history.json").read_text())
    assert main(["train", "--config", _write(tmp), "--out", str(copy), "--resume"]) == 0
    assert json.loads((copy / "history.json").read_text()) == before  # nothing retrained
    assert (
        main(
            [
                "train",
                "--config",
                _write(tmp),
                "--out",
                str(copy),
                "--resume",
                "--epochs",
                "4",
                "--no-plots",
            ]
        )
        == 0
    )
    after = json.loads((copy / "history.json").read_text())
    assert len(after) == 4 and after[:3] == before
    assert "resuming from" in capsys.readouterr().out


def test_resume_without_checkpoint_starts_fresh(tmp_path, capsys):
    out = tmp_path / "fresh"
    assert (
        main(
            [
                "train",
                "--config",
                _write(tmp_path),
                "--out",
                str(out),
                "--resume",
                "--epochs",
                "1",
                "--no-plots",
            ]
        )
        == 0
    )
    assert "WARNING: --resume: no checkpoint in" in capsys.readouterr().err
    assert (out / "checkpoints" / "latest").exists()


def test_existing_run_is_not_overwritten_silently(run, capsys):
    tmp, out = run
    before = _tree(out)
    assert main(["train", "--config", _write(tmp), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _tree(out) == before


def test_evaluate(run, capsys):
    _, out = run
    assert main(["evaluate", "--checkpoint", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val" and result["examples"] == 64
    assert {"loss", "accuracy", "f1", "confusion_matrix"} <= set(result)
    # The efficiency figures tutorials report.
    assert result["parameters"] == 64 * 16 + 16 + 16 + 1 and result["size_mb"] > 0
    assert result["latency_ms"] > 0 and result["throughput"] > 0
    best = (out / "checkpoints" / "best").read_text().strip()
    assert result["checkpoint"].endswith(best)
    assert (
        main(["evaluate", "--checkpoint", str(out / "checkpoints" / "latest"), "--split", "test"])
        == 0
    )
    text = capsys.readouterr().out
    assert "split: test (64 examples)" in text and "confusion_matrix" in text
    # The run's test figures are the best checkpoint's (the weights a user keeps).
    tested = json.loads((out / "test_metrics.json").read_text())
    assert tested["checkpoint"] == best
    assert main(["evaluate", "--checkpoint", str(out), "--split", "test", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["loss"] == tested["loss"] and again["accuracy"] == tested["accuracy"]
    assert again["confusion_matrix"] == tested["confusion_matrix"]


BAD_CONFIGS = [
    ("model: {name: mlp, hidden: 16}", "model.hidden"),
    ("model: {name: mlpp}", "did you mean 'mlp'"),
    ("model: {name: mlp, hiden: [3]}", "model.hiden: unknown argument"),
    ("model: {name: nosuchpkg.mod:f}", "cannot import module"),
    ("data: {name: sprite}", "did you mean 'sprites'"),
    ("data: {name: sprites, batch_size: 0}", "data.batch_size"),
    ("data: {name: sprites, n_trian: 5}", "data.n_trian: unknown argument"),
    ("loss: hinge", "loss.name: unknown loss 'hinge'"),
    ("loss: {name: cross_entropy, smoothing: 0.1}", "loss.smoothing: unknown argument"),
    ("optimizer: {name: Adamm, lr: 1e-3}", "did you mean 'Adam'"),
    ("optimizer: {name: Adam, lr: fast}", "optimizer.lr: expected a valid number"),
    ("optimizer: {name: Adam, lr: -1}", "Invalid learning rate"),
    ("optimizer: {name: Adam, betas: [0.9]}", "optimizer.betas: too few values"),
    ("optimizer: {lr: 1e-3}", "optimizer.name: required key is missing"),
    ("scheduler: {name: StepLRR, step_size: 2}", "scheduler.name: torch has no scheduler"),
    ("scheduler: {name: StepLR}", "scheduler.step_size: required by StepLR"),
    ("metrics: [accuracy, mae]", "metrics:"),
    ("metrics: [acuracy]", "did you mean 'accuracy'"),
    ("train: {epochs: 0}", "train.epochs"),
    ("train: {epochs: 3, nan_policy: ignore}", "train.nan_policy"),
    ("train: {epochs: 3, compile: sometimes}", "train.compile"),
    ("early_stopping: {monitor: val_loss, patience: -2}", "early_stopping.patience"),
    ("checkpoint: {every_steps: 0}", "checkpoint.every_steps"),
    ("log: {wandb: {mode: cloud}}", "log.wandb.mode"),
    ("unknown_section: 1", "unknown_section: unknown key"),
    ("train: {epochs: 3, compile: false, device: tpu}", "train.device"),
    (
        "scheduler: {name: OneCycleLR, max_lr: 0.1, total_steps: 10}",
        "scheduler: OneCycleLR's schedule has 10 steps, but the run steps it 18 times",
    ),
    (
        "early_stopping: {monitor: val_los, patience: 5}",
        "early_stopping.monitor: this run does not log 'val_los'; did you mean 'val_loss'?",
    ),
    (
        "scheduler: {name: ReduceLROnPlateau, monitor: val_acc}",
        "scheduler.monitor: this run does not log 'val_acc'; did you mean 'val_accuracy'?",
    ),
]


def _patched(line: str) -> str:
    key = line.split(":")[0]
    kept = [row for row in CONFIG.strip().splitlines() if not row.startswith(key + ":")]
    return "\n".join([*kept, line]) + "\n"


@pytest.mark.parametrize(("line", "match"), BAD_CONFIGS)
def test_bad_configs_exit_2_and_change_nothing(run, tmp_path, capsys, line, match):
    _, out = run
    before = _tree(out)
    code = main(
        ["train", "--config", _write(tmp_path, _patched(line)), "--out", str(out), "--resume"]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err and err.startswith("purestep train: ") and "Traceback" not in err
    assert _tree(out) == before


@pytest.mark.parametrize(
    ("line", "drop", "match"),
    [
        (
            "checkpoint: {monitor: val_f1_macro}",
            "early_stopping:",
            "checkpoint.monitor: this run does not log 'val_f1_macro'; did you mean 'val_f1'?",
        ),
        (
            "data: {name: sprites, n_train: 64, n_val: 0, n_test: 0, batch_size: 32}",
            None,
            "early_stopping.monitor: 'val_loss' needs a validation split",
        ),
    ],
)
def test_a_monitor_the_run_does_not_log_is_refused_before_anything_is_written(
    tmp_path, capsys, line, drop, match
):
    text = _patched(line)
    if drop is not None:
        text = "\n".join(r for r in text.splitlines() if not r.startswith(drop))
    out = tmp_path / "out"
    code = main(["train", "--config", _write(tmp_path, text), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err and "Traceback" not in err
    assert not out.exists()


def test_config_yaml_is_the_config_as_run(tmp_path):
    """--compile/--device are recorded (so OUT/config.yaml reruns the same way); a finished
    run resumed with fewer --epochs trains nothing and keeps its config."""
    text = CONFIG.replace("train: {epochs: 3, compile: false}", "train: {epochs: 2, compile: true}")
    out = tmp_path / "out"
    args = ["train", "--config", _write(tmp_path, text), "--out", str(out)]
    assert main([*args, "--no-compile", "--device", "cpu"]) == 0
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["train"]["compile"] is False and written["train"]["device"] == "cpu"
    assert written["train"]["epochs"] == 2
    before = _tree(out)
    assert main([*args, "--no-compile", "--resume", "--epochs", "1"]) == 0
    assert _tree(out) == before


def test_resume_into_another_out_keeps_the_best_checkpoint_and_min_delta(tmp_path, capsys):
    """A run resumed from another run's checkpoint into a new --out carries that run's
    best checkpoint over (restore_best and the test metrics read it), and the summary's
    best epoch is the one early stopping judged best (min_delta included), not the raw
    minimum of the history."""
    text = CONFIG.replace(
        "early_stopping: {monitor: val_loss, patience: 5}",
        "early_stopping: {monitor: val_loss, patience: 5, min_delta: 10.0}",
    )
    config = _write(tmp_path, text)
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--config", config, "--out", str(first)]) == 0
    summary = capsys.readouterr().out
    assert "best val_loss" in summary and "at epoch 1;" in summary  # only epoch 1 improved
    best = (first / "checkpoints" / "best").read_text().strip()
    assert best == "step-00000006"
    middle = first / "checkpoints" / "step-00000016"  # epoch 3, batch 4
    assert main(["train", "--config", config, "--out", str(second), "--resume", str(middle)]) == 0
    assert "at epoch 1;" in capsys.readouterr().out
    assert (second / "checkpoints" / "best").read_text().strip() == best
    assert (second / "test_metrics.json").read_text() == (first / "test_metrics.json").read_text()
    untimed = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(d.read_text())]
        for d in (first / "history.json", second / "history.json")
    ]
    assert untimed[0] == untimed[1]


def test_changed_config_on_resume_is_refused(run, tmp_path, capsys):
    _, out = run
    before = _tree(out)
    text = CONFIG.replace("lr: 1e-2", "lr: 2e-2")
    assert main(["train", "--config", _write(tmp_path, text), "--out", str(out), "--resume"]) == 2
    assert "optimizer.lr: 0.01 -> 0.02" in capsys.readouterr().err
    assert _tree(out) == before


@pytest.mark.parametrize("missing", ["meta.json", "state.safetensors"])
def test_resume_refuses_a_damaged_latest_instead_of_falling_back(run, tmp_path, capsys, missing):
    """A step directory appears whole (renamed into place): one that lost a file was
    damaged, and a plain --resume must say so, not quietly retrain from an older one."""
    import shutil

    tmp, out = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    latest = copy / "checkpoints" / (copy / "checkpoints" / "latest").read_text().strip()
    (latest / missing).unlink()
    before = _tree(copy)
    code = main(["train", "--config", _write(tmp), "--out", str(copy), "--resume"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(latest / missing) in err and "--resume " in err
    assert _tree(copy) == before


@pytest.mark.parametrize("how", ["truncated", "newer_format", "missing_meta"])
def test_bad_checkpoint_exit_2_and_change_nothing(run, tmp_path, capsys, how):
    import shutil

    from tests.train.test_checkpoint import _corrupt

    tmp, out = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    latest = copy / "checkpoints" / (copy / "checkpoints" / "latest").read_text().strip()
    _corrupt(latest, how)
    before = _tree(copy)
    code = main(
        [
            "train",
            "--config",
            _write(tmp),
            "--out",
            str(copy),
            "--resume",
            str(latest),
            "--epochs",
            "5",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(latest) in err
    # The message points at the newest other complete checkpoint (the user chooses).
    others = sorted(p.name for p in (copy / "checkpoints").glob("step-*") if p != latest)
    assert f"instead: --resume {copy / 'checkpoints' / others[-1]}" in err
    assert main(["evaluate", "--checkpoint", str(latest)]) == 2
    assert _tree(copy) == before


def test_training_failures_exit_1(tmp_path, capsys):
    (tmp_path / "nan_data.py").write_text(
        textwrap.dedent(
            """
        import torch
        def data(split, seed):
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(64, 4, generator=g)
            if split == "train":
                x[40] = float("nan")  # batch 3 of 4 (no shuffle)
            return x, (x[:, 0] > 0).float()
        """
        )
    )
    text = CONFIG.replace(
        "data: {name: sprites, n_train: 192, n_val: 64, n_test: 64, batch_size: 32}",
        "data: {name: 'nan_data:data', batch_size: 16, shuffle: false}",
    )
    out = tmp_path / "o"
    assert main(["train", "--config", _write(tmp_path, text), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "non-finite training loss" in err and "epoch 1, step 3" in err
    # The model rejects its inputs (8x8 sprites into a 4-feature model): a clear message.
    text = CONFIG.replace("model: {name: mlp,", "model: {name: mlp, in_features: 4,")
    assert main(["train", "--config", _write(tmp_path, text), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "rejected the batch inputs" in err and "Traceback" not in err


def test_argument_errors():
    for argv in (
        ["train", "--config", "x.yaml", "--epochs", "0"],
        ["train", "--config", "x.yaml", "--device", "tpu"],
        ["evaluate"],
        ["evaluate", "--checkpoint", "x", "--split", "dev"],
    ):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2


def test_resumed_run_continues_its_mlflow_run(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    import warnings

    import sqlalchemy
    from mlflow.tracking import MlflowClient

    # MLflow's SQLite store trips a SQLAlchemy deprecation inside MLflow, not in purestep.
    warnings.filterwarnings("ignore", category=sqlalchemy.exc.SADeprecationWarning)

    text = CONFIG.replace("log: {progress: false}", "log: {progress: false, mlflow: {}}")
    out = tmp_path / "o"
    cfg = _write(tmp_path, text)
    assert main(["train", "--config", cfg, "--out", str(out), "--epochs", "1", "--no-plots"]) == 0
    first = json.loads((out / "checkpoints" / "step-00000006" / "meta.json").read_text())
    run_id = first["trackers"]["mlflow"]
    assert (
        main(
            ["train", "--config", cfg, "--out", str(out), "--resume", "--epochs", "2", "--no-plots"]
        )
        == 0
    )
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert json.loads((out / "checkpoints" / latest / "meta.json").read_text())["trackers"] == {
        "mlflow": run_id
    }
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    steps = [m.step for m in client.get_metric_history(run_id, "val_loss")]
    assert steps == [6, 12]


def test_compiled_run_keeps_its_compile_cache_for_a_resume(tmp_path, capsys):
    text = CONFIG.replace("compile: false", "compile: true")
    cfg = _write(tmp_path, text)
    out = tmp_path / "o"
    assert main(["train", "--config", cfg, "--out", str(out), "--epochs", "1", "--no-plots"]) == 0
    cache = out / "compile_cache.zip"
    assert cache.stat().st_size > 0
    import zipfile

    assert "artifacts.bin" in zipfile.ZipFile(cache).namelist()
    capsys.readouterr()
    assert (
        main(
            ["train", "--config", cfg, "--out", str(out), "--resume", "--epochs", "2", "--no-plots"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert f"kernels from {cache}" in text, text
