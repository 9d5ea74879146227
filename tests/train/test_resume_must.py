"""``--resume`` with no run to resume says so on stderr; ``--resume=must`` refuses (exit 2)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from purestep.cli import main

CONFIG = """
model: {name: mlp, hidden: [4], out_features: 1}
data: {name: sprites, n_train: 32, n_val: 16, n_test: 0, batch_size: 16}
loss: bce_with_logits
optimizer: {name: SGD, lr: 0.1}
train: {epochs: 1, compile: false}
log: {tensorboard: false, plots: false, progress: false}
"""


def _config(tmp_path: Path) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    return str(path)


def test_resume_without_a_run_warns_on_stderr(tmp_path, capsys):
    out = tmp_path / "typo"
    assert main(["train", "--config", _config(tmp_path), "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: --resume: no checkpoint in {out / 'checkpoints'}: starting a fresh" in err
    assert "--resume=must refuses instead" in err


def test_resume_must_refuses_without_a_run(tmp_path, capsys):
    out = tmp_path / "typo"
    code = main(["train", "--config", _config(tmp_path), "--out", str(out), "--resume=must"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == (
        f"purestep train: --resume=must: no checkpoint in {out / 'checkpoints'} to resume "
        "from (is --out right?)\n"
    )
    assert not out.exists()


def test_resume_must_resumes_a_run(tmp_path, capsys):
    cfg, out = _config(tmp_path), str(tmp_path / "run")
    assert main(["train", "--config", cfg, "--out", out]) == 0
    capsys.readouterr()
    assert main(["train", "--config", cfg, "--out", out, "--resume", "must", "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    assert "resuming from" in captured.out and "WARNING" not in captured.err
