"""A regression CSV never trains on a broadcast loss: ``torch.nn:Linear`` with one output
against the csv loader's (N,) target is aligned; any other mismatch exits 2 before
anything is written (train and parity)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from purestep.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CONFIG = """
model: {{name: "torch.nn:Linear", in_features: 1, out_features: {out}}}
data: {{name: csv, path: {csv}, target: price, batch_size: 8, seed: 0}}
loss: mse
optimizer: {{name: SGD, lr: 0.05}}
metrics: [r2]
train: {{epochs: 5, seed: 0, compile: false}}
log: {{tensorboard: false, plots: false, progress: false}}
"""


def _config(tmp_path: Path, out: int) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(out=out, csv=EXAMPLES / "house_prices.csv")))
    return str(path)


def test_one_output_column_trains_on_the_aligned_loss(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", _config(tmp_path, 1), "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    # A broadcast [N, N] loss "converged" to R² ~0.04 on this straight line.
    assert history[-1]["val_r2"] > 0.8


@pytest.mark.parametrize("command", ["train", "parity"])
def test_other_output_shapes_exit_2_naming_both(tmp_path, capsys, command):
    out = tmp_path / "run"
    argv = [command, "--config", _config(tmp_path, 2)]
    assert main(argv + (["--out", str(out)] if command == "train" else [])) == 2
    err = capsys.readouterr().err
    assert "outputs have shape (8, 2) and the targets (8,)" in err
    assert err.count("\n") == 1
    assert not out.exists()
