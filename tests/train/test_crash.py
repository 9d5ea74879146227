"""Crash safety: ``purestep train`` killed with SIGKILL at random moments (saves included),
resumed each time, ends bitwise where an uninterrupted run ends; SIGTERM saves and exits 143."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = """
model: {name: mlp, hidden: [32], out_features: 1, dropout: 0.2}
data: {name: sprites, n_train: 256, n_val: 64, n_test: 0, batch_size: 16}
loss: bce_with_logits
optimizer: {name: Adam, lr: 3e-3}
scheduler: {name: ReduceLROnPlateau, patience: 0, factor: 0.5}
metrics: [accuracy]
early_stopping: {patience: 10}
train: {epochs: 4, compile: false}
checkpoint: {every_steps: 1, keep: 2}
log: {progress: false, plots: false}
"""
KILLS = int(os.environ.get("PURESTEP_KILLS", "25"))


def _cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "purestep",
        "train",
        "--config",
        str(config),
        "--out",
        str(out),
        *extra,
    ]


def _final(out: Path) -> tuple[str, str, list[dict]]:
    ckpts = out / "checkpoints"
    name = (ckpts / "latest").read_text().strip()
    meta = json.loads((ckpts / name / "meta.json").read_text())
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in meta["history"]]
    return name, meta["sha256"]["state.safetensors"], history


def _wait_for_training(
    proc: subprocess.Popen,
    timeout: float = 60.0,
    until: tuple[str, ...] | str = ("device:", "resuming", "no checkpoint"),
) -> None:
    """Read the child's output until it has started training (its 'device:' line)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.lstrip().startswith(until):
            return
    raise AssertionError("the run did not start")


def test_sigkill_at_random_moments_then_resume_is_bitwise(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cmd(config, ref), check=True, capture_output=True, env=env)
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills = resumes = 0
    while True:
        proc = subprocess.Popen(
            _cmd(config, out, "--resume"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        if kills < KILLS:
            _wait_for_training(proc)
            time.sleep(rng.uniform(0.0, 1.2))  # every step saves: kills land in saves too
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills += 1
                continue
        # The run ended by itself: KILLS kills were made, or a fast machine finished the
        # run before the next kill landed (it would loop forever killing finished runs).
        output = proc.communicate()[0]
        assert proc.returncode == 0, output
        resumes += 1
        break
    assert kills >= 1 and resumes >= 1
    assert _final(out) == _final(ref)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
)
def test_signal_saves_and_exits_with_the_conventional_code(tmp_path, sig, code):
    config = tmp_path / "cfg.yaml"
    # long enough that the signal lands mid-run on any machine (4 epochs take 0.2 s)
    long_run = CONFIG.replace("every_steps: 1,", "every_steps: 1000,")
    long_run = long_run.replace("epochs: 4,", "epochs: 60,").replace(
        "patience: 10", "patience: 100"
    )
    config.write_text(long_run)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cmd(config, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    _wait_for_training(proc, until="epoch 1/")
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, output
    assert "continue with --resume" in output
    latest = (out / "checkpoints" / "latest").read_text().strip()
    meta = json.loads((out / "checkpoints" / latest / "meta.json").read_text())
    assert not meta["finished"]
    done = subprocess.run(_cmd(config, out, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming from {out / 'checkpoints' / latest}" in done.stdout


@pytest.mark.parametrize("fails", ["state", "meta", "pointer"])
def test_disk_full_mid_save_then_resume_is_bitwise(tmp_path, monkeypatch, capsys, fails):
    """ENOSPC at the 20th save (mid epoch 2), while writing the tensors, meta.json or the
    ``latest`` pointer: exit 1 naming it, ``latest`` names a complete checkpoint, and once
    there is space again ``--resume`` ends bitwise where an undisturbed run ends."""
    import errno

    from purestep.cli import main
    from purestep.train import checkpoint

    config = tmp_path / "cfg.yaml"
    config.write_text(CONFIG)
    ref, out = tmp_path / "ref", tmp_path / "out"
    args = ["train", "--config", str(config), "--no-plots"]
    assert main([*args, "--out", str(ref)]) == 0
    saves = [0]
    real_save_file, real_write_atomic = checkpoint.save_file, checkpoint.write_atomic

    def full(path: object) -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def save_file(tensors: dict, path: str, *a: object, **k: object) -> None:
        saves[0] += 1
        real_save_file(tensors, path, *a, **k)
        if fails == "state" and saves[0] >= 20:
            with open(path, "r+b") as f:  # the disk filled up half-way through the file
                f.truncate(os.path.getsize(path) // 2)
            raise full(path)

    def write_atomic(path: Path, data: bytes) -> None:
        is_meta = path.name == "meta.json"
        if saves[0] >= 20 and (fails, is_meta) in (("meta", True), ("pointer", False)):
            raise full(path)
        real_write_atomic(path, data)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    monkeypatch.setattr(checkpoint, "write_atomic", write_atomic)
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err, err
    ckpts = out / "checkpoints"
    latest = ckpts / (ckpts / "latest").read_text().strip()
    meta = json.loads((latest / "meta.json").read_text())
    assert meta["step"] == 19 and not meta["finished"]
    digest = hashlib.sha256((latest / "state.safetensors").read_bytes()).hexdigest()
    assert digest == meta["sha256"]["state.safetensors"]
    monkeypatch.undo()  # space again
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert f"resuming from {latest}" in capsys.readouterr().out
    assert _final(out) == _final(ref)
    assert [p.name for p in ckpts.iterdir() if p.name.startswith(".")] == []
