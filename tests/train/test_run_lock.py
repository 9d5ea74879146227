"""One writer per run directory: ``purestep.train.run_lock`` and the CLI's use of it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from purestep.cli import main
from purestep.train import run_lock
from purestep.train.checkpoint import Checkpointer, LoopState
from purestep.train.run_lock import LOCK_FILE, RunDirectoryInUse, hold, holder, writer_gone

# run_lock.py alone (it imports nothing of purestep): a holder that starts in a blink.
HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[2])
run_lock = sys.modules["run_lock"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_lock)
with run_lock.hold(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


class Holder:
    """Another process holding the run directory's lock until ``release`` (or a kill)."""

    def __init__(self, out: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(out), run_lock.__file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "held":
            self.kill()
            raise AssertionError("the holder did not take the lock")

    def release(self) -> None:
        self.proc.communicate("\n", timeout=60)
        assert self.proc.returncode == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)


@pytest.fixture
def held(tmp_path):
    out = tmp_path / "out"
    h = Holder(out)
    yield out, h
    if h.proc.poll() is None:
        h.kill()


def test_a_second_writer_is_refused_naming_the_holder(held):
    out, h = held
    info = holder(out)
    assert info is not None and info["pid"] == h.proc.pid
    refused = pytest.raises(RunDirectoryInUse, match=rf"{out} is in use: pid {h.proc.pid} on ")
    with refused, hold(out):
        pass
    with writer_gone(out) as gone:
        assert not gone
    h.release()
    assert not (out / LOCK_FILE).exists()  # released: no trace left
    with hold(out), writer_gone(out) as gone:
        assert gone and (out / LOCK_FILE).exists()


def test_a_killed_holder_leaves_no_stale_lock(held):
    out, h = held
    h.kill()
    assert (out / LOCK_FILE).exists()  # the file stays, the lock died with its holder
    with writer_gone(out) as gone:
        assert gone
    with hold(out):
        assert holder(out)["pid"] == os.getpid()  # type: ignore[index]


def test_holds_nest_and_a_refused_start_leaves_no_directory(tmp_path, held):
    with hold(tmp_path / "a" / "b" / "c"):
        pass
    assert not (tmp_path / "a").exists()
    mine = tmp_path / "mine"
    with hold(mine):
        with hold(mine):  # sweep inside tune: the same process
            assert (mine / LOCK_FILE).exists()
        assert (mine / LOCK_FILE).exists()
    assert not mine.exists()  # created by the hold, left empty: removed
    out, _ = held
    with pytest.raises(RunDirectoryInUse), hold(out):
        pass
    assert out.exists()  # not ours to remove


def _state() -> object:
    from purestep import TrainState
    from purestep.optim import sgd

    return TrainState.create(torch.nn.Linear(2, 1), sgd(lr=0.1))


def test_another_writers_temp_checkpoint_is_left_alone(held):
    out, h = held
    ckpts = out / "checkpoints"
    ckpts.mkdir()
    theirs = ckpts / ".tmp-step-00000014-abcd"
    theirs.mkdir()
    (theirs / "state.safetensors").write_bytes(b"in progress")
    checkpointer = Checkpointer(ckpts)
    checkpointer.save(_state(), LoopState(step=1))  # type: ignore[arg-type]
    assert (theirs / "state.safetensors").read_bytes() == b"in progress"
    h.kill()  # its writer is gone: the next save cleans up
    checkpointer.save(_state(), LoopState(step=2))  # type: ignore[arg-type]
    assert not theirs.exists()


# -- the CLI ------------------------------------------------------------------------------

# A model that pauses once mid-run (in its forward) while $PAUSE_DIR is set: a
# deterministic moment at which the first run holds the directory, with checkpoints.
BLOCKER = """
import os, time
from pathlib import Path
from torch import nn

class Paused(nn.Module):
    def __init__(self, at):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1))
        self.calls, self.at = 0, at

    def forward(self, x):
        self.calls += 1
        gate = os.environ.get("PAUSE_DIR")
        if gate and self.calls == self.at:
            Path(gate, "ready").write_text(str(os.getpid()))
            deadline = time.monotonic() + 300
            while not Path(gate, "go").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return self.net(x).squeeze(-1)

def model(at=7):
    return Paused(at)
"""

CONFIG = """
model: {name: "run_lock_paused:model"}
data: {name: sprites, n_train: 128, n_val: 32, n_test: 0, batch_size: 32}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-2}
train: {epochs: 3, compile: false}
checkpoint: {every_steps: 1, keep: 2}
log: {progress: false, plots: false, tensorboard: false}
"""


def _tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _final(out: Path) -> tuple[str, str, list[dict]]:
    ckpts = out / "checkpoints"
    name = (ckpts / "latest").read_text().strip()
    meta = json.loads((ckpts / name / "meta.json").read_text())
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in meta["history"]]
    return (
        name,
        hashlib.sha256((ckpts / name / "state.safetensors").read_bytes()).hexdigest(),
        history,
    )


def test_concurrent_writers_are_refused_and_the_first_run_is_undisturbed(tmp_path, capsys):
    (tmp_path / "run_lock_paused.py").write_text(BLOCKER)
    config = tmp_path / "cfg.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    ref, out, gate = tmp_path / "ref", tmp_path / "out", tmp_path / "gate"
    gate.mkdir()
    assert main(["train", "--config", str(config), "--out", str(ref)]) == 0
    env = {**os.environ, "PAUSE_DIR": str(gate), "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "purestep", "train", "--config", str(config), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (gate / "ready").exists():
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first run never reached its pause"
            time.sleep(0.05)
        assert (out / "checkpoints" / "latest").is_file()  # mid-run, with checkpoints
        before = _tree(out)
        capsys.readouterr()
        for extra in (["--resume"], ["--overwrite"], []):
            code = main(["train", "--config", str(config), "--out", str(out), *extra])
            err = capsys.readouterr().err
            assert code == 2, err
            assert f"{out} is in use: pid {first.pid} on " in err, err
            assert "purestep train --config" in err and "Traceback" not in err
        code = main(
            ["sweep", "--config", str(config), "--out", str(out), "--set", "train.seed=0,1"]
        )
        err = capsys.readouterr().err
        assert code == 2 and f"pid {first.pid}" in err, err
        assert _tree(out) == before  # the refused writers touched nothing
    finally:
        (gate / "go").write_text("")
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output
    assert _final(out) == _final(ref)
    assert not (out / LOCK_FILE).exists()


def test_readers_work_while_a_run_holds_the_directory(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(textwrap.dedent(CONFIG.replace('"run_lock_paused:model"', "mlp")))
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--out", str(out), "--epochs", "1"]) == 0
    h = Holder(out)
    try:
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", str(out), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["split"] == "val"
    finally:
        h.release()


def test_under_torchrun_rank0_holds_the_lock(tmp_path):
    """A data-parallel job whose OUT another process writes is refused, exit 2 naming the
    holder (rank 0 asks for the lock; the other rank learns of it and stops too)."""
    from tests.train.distributed._spawn import torchrun

    config = tmp_path / "cfg.yaml"
    config.write_text(textwrap.dedent(CONFIG.replace('"run_lock_paused:model"', "mlp")))
    h = Holder(tmp_path / "out")
    try:
        done = torchrun(
            2,
            ["train", "--config", "cfg.yaml", "--out", "out", "--dist-timeout", "20"],
            cwd=tmp_path,
        )
    finally:
        h.release()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output  # rank 0 exits 2, the other 1; torchrun says 1
    assert f"purestep train (rank 0): out is in use: pid {h.proc.pid} on " in output, output
    assert not (tmp_path / "out" / "checkpoints").exists()
