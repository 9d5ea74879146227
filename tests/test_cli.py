"""The `purestep` command and the demo job."""

from __future__ import annotations

import subprocess
import sys

import pytest

from purestep.cli import main
from purestep.demo import main as demo


def test_demo_learns_and_reports_parity(tmp_path, capsys):
    lines: list[str] = []
    result = demo(
        epochs=3, compile=False, parity_steps=30, out=tmp_path / "demo", print_fn=lines.append
    )
    assert result["val_accuracy"] > 0.75 and result["test_accuracy"] > 0.75, result
    assert result["parity_ok"] == 1.0
    text = "\n".join(lines)
    assert "epoch 3/3" in capsys.readouterr().out and "PARITY OK: 30 steps bitwise" in text
    assert (tmp_path / "demo" / "checkpoints" / "best").exists()


def test_demo_config_is_the_example():
    import yaml

    from purestep.demo import DEMO_CONFIG
    from purestep.train.config import load_config, parse_config

    assert load_config("examples/sprites.yaml") == parse_config(yaml.safe_load(DEMO_CONFIG))


def test_cli_demo_exit_code(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--epochs", "1", "--no-compile", "--parity-steps", "5"]) == 0
    assert "PARITY OK" in capsys.readouterr().out
    assert (tmp_path / "runs" / "demo" / "history.json").exists()


def test_cli_usage_errors():
    with pytest.raises(SystemExit) as err:
        main(["frobnicate"])
    assert err.value.code == 2


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "purestep.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout


def _write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


SMALL = """
model: {name: mlp, in_features: 16, hidden: [12], out_features: 4, dropout: 0.2}
data: {name: blobs, n_train: 128, batch_size: 16, n_features: 16, n_classes: 4}
loss: cross_entropy
optimizer: {name: SGD, lr: 0.05, momentum: 0.9, param_groups: [{params: bias, lr: 1e-2}]}
scheduler: {name: StepLR, step_size: 5, gamma: 0.5, every: epoch}
train: {clip_grad_norm: 1.0, accumulation_steps: 2}
parity: {steps: 40}
"""


def test_cli_parity_ok_writes_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["parity", "--config", _write(tmp_path, SMALL), "--json", str(out)]) == 0
    assert "PARITY OK: 40 steps bitwise" in capsys.readouterr().out
    import json

    data = json.loads(out.read_text())
    assert (
        data["ok"]
        and data["info"]["scheduler"] == "StepLR"
        and data["info"]["scheduler_every"] == 4
    )


def test_cli_parity_divergence_exit_1(tmp_path, capsys):
    # fused Adam is refused (2); a close-mode run that diverges is 1: use a learning rate so
    # large that both sides overflow differently? Simpler: a model whose buffer update the
    # functional step cannot see.
    cfg = SMALL.replace(
        "name: mlp, in_features: 16, hidden: [12], out_features: 4, dropout: 0.2",
        "name: tests.parity.models:ReassignedBuffer16",
    )
    assert main(["parity", "--config", _write(tmp_path, cfg), "--steps", "3"]) == 1
    assert "first divergence at step 0: buffers['ema']" in capsys.readouterr().out


def test_cli_parity_bad_config_exit_2(tmp_path, capsys):
    bad = _write(tmp_path, SMALL.replace("loss: cross_entropy", "loss: hinge"))
    assert main(["parity", "--config", bad]) == 2
    assert "loss.name: unknown loss 'hinge'" in capsys.readouterr().err
    assert main(["parity", "--config", str(tmp_path / "nope.yaml")]) == 2
    bad = _write(tmp_path, SMALL.replace("lr: 0.05", "lr: fast"))
    assert main(["parity", "--config", bad]) == 2
    assert "optimizer.lr: expected a valid number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["parity", "--config", _write(tmp_path, SMALL), "--steps", "0"])
    assert err.value.code == 2


def test_cli_parity_model_rejecting_its_batch_exit_1(tmp_path, capsys):
    # A config that validates, but whose model cannot take the data: a failure (1), not a
    # bad config (2), with the model's message and no traceback.
    cfg = SMALL.replace("in_features: 16", "in_features: 15")
    assert main(["parity", "--config", _write(tmp_path, cfg), "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "shapes cannot be multiplied (16x16 and 15x12)" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--epochs", "-1"],
        ["demo", "--parity-steps", "-1"],
        ["bench", "--steps", "0"],
        ["bench", "--repeats", "0"],
        ["parity", "--config", "x.yaml", "--rows", "0"],
    ],
)
def test_cli_arguments_are_validated(argv):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2


def test_bench_variant_names_may_hold_commas():
    from purestep.bench.command import variant_names as _names

    assert _names("functional compiled (donated, C++ wrapper),imperative eager") == [
        "functional compiled (donated, C++ wrapper)",
        "imperative eager",
    ]


def test_python_dash_m_purestep():
    out = subprocess.run(
        [sys.executable, "-m", "purestep", "--help"], capture_output=True, text=True, check=True
    )
    assert "train" in out.stdout and "evaluate" in out.stdout


def test_cli_parity_infers_in_features_as_training_does(tmp_path, capsys):
    # The model section leaves in_features to the data (16 blob features): parity builds
    # the same model training would, not the built-in default width.
    cfg = SMALL.replace("in_features: 16, ", "")
    assert "in_features" not in cfg
    assert main(["parity", "--config", _write(tmp_path, cfg), "--steps", "3"]) == 0
    assert "PARITY OK: 3 steps bitwise" in capsys.readouterr().out
