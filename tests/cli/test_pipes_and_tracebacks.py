"""Output into a closed pipe (``purestep ... | head``) ends quietly; ``--traceback`` /
``PURESTEP_TRACEBACK=1`` add the user's frames to a failure's one line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from purestep.cli import main

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
model: {{name: {model}}}
data: {{name: csv, path: {csv}, target: price, batch_size: 8}}
loss: mse
optimizer: {{name: SGD, lr: 0.05}}
train: {{epochs: 2, compile: false}}
log: {{tensorboard: false, plots: false, progress: false}}
"""


def _config(tmp_path: Path, model: str = "linear") -> str:
    path = tmp_path / "cfg.yaml"
    csv = ROOT / "examples" / "house_prices.csv"
    path.write_text(textwrap.dedent(CONFIG.format(model=model, csv=csv)))
    return str(path)


def _into_closed_pipe(*args: str) -> tuple[int, str]:
    """Run ``purestep ARGS`` with a stdout nobody reads (closed before it writes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "purestep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    return proc.wait(timeout=300), err


def test_closed_pipe_evaluate_exits_quietly(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", _config(tmp_path), "--out", str(out)]) == 0
    code, err = _into_closed_pipe("evaluate", "--checkpoint", str(out))
    assert (code, err) == (141, "")


def test_closed_pipe_train_finishes_the_run_quietly(tmp_path):
    out = tmp_path / "run"
    code, err = _into_closed_pipe("train", "--config", _config(tmp_path), "--out", str(out))
    assert (code, err) == (0, "")
    assert (out / "checkpoints" / "latest").is_file()
    assert len((out / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs


class _Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.helper(x)

    def helper(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the user's model gave up")  # line to find


def boom() -> nn.Module:
    return _Boom()


@pytest.mark.parametrize("how", ["flag", "env", "neither"])
def test_traceback_shows_the_users_frames(tmp_path, capsys, monkeypatch, how):
    monkeypatch.delenv("PURESTEP_TRACEBACK", raising=False)
    if how == "env":
        monkeypatch.setenv("PURESTEP_TRACEBACK", "1")
    argv = [
        "train",
        "--config",
        _config(tmp_path, f"{__name__}:boom"),
        "--out",
        str(tmp_path / "o"),
    ]
    code = main(argv + (["--traceback"] if how == "flag" else []))
    err = capsys.readouterr().err
    assert code == 1
    last = err.splitlines()[-1]
    assert last.startswith("purestep train: ") and "the user's model gave up" in last
    if how == "neither":
        assert err.count("\n") == 1
        return
    assert "Traceback (your code's frames, most recent call last):" in err
    assert f'File "{__file__}"' in err and "in helper" in err and "# line to find" in err
    assert "RuntimeError: the user's model gave up" in err
    assert f"{os.sep}purestep{os.sep}core{os.sep}" not in err  # purestep's frames are not
    assert f"{os.sep}torch{os.sep}" not in err  # the user's


def test_check_traceback_shows_the_users_frames(tmp_path, capsys):
    config = _config(tmp_path, f"{__name__}:boom")
    assert main(["check", "--config", config, "--no-parity", "--no-compile"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(["check", "--config", config, "--no-parity", "--no-compile", "--traceback"]) == 1
    err = capsys.readouterr().err
    assert f'File "{__file__}"' in err and "# line to find" in err
