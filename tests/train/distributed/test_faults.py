"""A rank that dies, hangs or fails makes the others exit non-zero naming it, within the
timeout, and the last checkpoint stays good (the run resumes).

The jobs are launched by hand (torchrun's environment, no torchrun agent), so what is
tested is purestep's own handling: under torchrun the agent also tears the job down.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.train.distributed._spawn import PYTHON, free_port, launch_env, purestep

CONFIG = """
model: {name: mlp, hidden: [16], out_features: 1}
data: {name: sprites, n_train: 192, n_val: 64, n_test: 0, batch_size: 32}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-2}
train: {epochs: 100000, compile: false}
checkpoint: {every_steps: 6, keep: 2}
log: {progress: false, tensorboard: false, csv: false}
"""
TIMEOUT = 20  # --dist-timeout for these jobs (the default is 60)


def _start(tmp: Path, config: str = "cfg.yaml", *extra: str) -> list[subprocess.Popen[str]]:
    port = free_port()
    argv = ["-m", "purestep", "train", "--config", config, "--out", "out", "--no-plots"]
    argv += ["--dist-timeout", str(TIMEOUT), *extra]
    return [
        subprocess.Popen(
            [PYTHON, *argv],
            cwd=tmp,
            env=launch_env(rank, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]


def _wait_for_checkpoint(tmp: Path, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    while not (tmp / "out" / "checkpoints" / "latest").exists():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            outputs = [p.communicate()[0] for p in procs]
            pytest.fail(f"the job wrote no checkpoint: {outputs}")
        time.sleep(0.1)
    time.sleep(0.5)  # a few more steps


def _reap(proc: subprocess.Popen[str]) -> None:
    """End ``proc`` if it still runs, and close its pipe."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def _survivor(proc: subprocess.Popen[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        output = proc.communicate(timeout=TIMEOUT + 30)[0]
    except subprocess.TimeoutExpired:
        _reap(proc)
        pytest.fail("the survivor hangs")
    return proc.returncode, output, time.monotonic() - started


@pytest.fixture
def job(tmp_path: Path) -> Path:
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    return tmp_path


def test_killed_rank_is_named_by_the_survivor_and_the_checkpoint_resumes(job: Path) -> None:
    procs = _start(job)
    _wait_for_checkpoint(job, procs)
    procs[1].send_signal(signal.SIGKILL)
    code, output, _ = _survivor(procs[0])
    _reap(procs[1])
    assert code == 1, output
    assert "purestep train (rank 0): RankFailure:" in output, output
    assert "rank 1 stopped responding" in output, output
    assert "Traceback" not in output, output
    _resumes_small(job)


def _resumes_small(tmp: Path) -> None:
    """The last checkpoint loads and training continues (one more epoch than it has)."""
    ckpts = tmp / "out" / "checkpoints"
    meta = json.loads((ckpts / (ckpts / "latest").read_text().strip() / "meta.json").read_text())
    epochs = str(meta["epoch"] + 1)
    done = purestep(
        ["train", "--config", "cfg.yaml", "--out", "out", "--resume", "--epochs", epochs],
        cwd=tmp,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from out/checkpoints/step-" in done.stdout
    leftovers = [p.name for p in ckpts.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.slow
def test_frozen_rank_is_named_within_the_heartbeat_timeout(job: Path) -> None:
    procs = _start(job)
    _wait_for_checkpoint(job, procs)
    procs[1].send_signal(signal.SIGSTOP)
    try:
        code, output, seconds = _survivor(procs[0])
    finally:
        procs[1].send_signal(signal.SIGCONT)
        _reap(procs[1])
    assert code == 1, output
    assert "rank 1 stopped responding (no heartbeat for 10 s" in output, output
    assert seconds < TIMEOUT + 10, (seconds, output)
    _resumes_small(job)


@pytest.mark.slow
def test_killed_rank_0_is_named_by_rank_1(job: Path) -> None:
    procs = _start(job)
    _wait_for_checkpoint(job, procs)
    procs[0].send_signal(signal.SIGKILL)
    code, output, _ = _survivor(procs[1])
    _reap(procs[0])
    assert code == 1, output
    # Named from its silent heartbeat, or (it hosts the job's store) from the store.
    assert re.search(r"rank 0 (or the launcher )?stopped responding", output), output
    _resumes_small(job)


@pytest.mark.slow
def test_failing_rank_tells_the_others_why(job: Path) -> None:
    (job / "flaky.py").write_text(
        textwrap.dedent(
            """
            import os
            import torch
            from torch import nn

            class Flaky(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.net = nn.Linear(64, 1)
                    self.calls = 0

                def forward(self, x):
                    self.calls += 1
                    if os.environ["RANK"] == "1" and self.calls > 20:
                        raise RuntimeError("the sensor went dark")
                    return self.net(x.flatten(1)).squeeze(-1)

            def make(**_):
                return Flaky()
            """
        )
    )
    (job / "flaky.yaml").write_text(
        CONFIG.replace(
            "model: {name: mlp, hidden: [16], out_features: 1}", "model: {name: 'flaky:make'}"
        )
    )
    procs = _start(job, "flaky.yaml")
    outputs = [_survivor(p) for p in procs]
    (code0, out0, _), (code1, out1, _) = outputs
    assert code1 == 1 and "the sensor went dark" in out1, out1
    assert code0 == 1, out0
    assert "rank 1 failed" in out0 and "the sensor went dark" in out0, out0
