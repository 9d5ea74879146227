"""``torchrun --nproc-per-node 2 -m purestep train`` end to end, on the CPU (gloo).

Rank 0 alone prints and writes one run directory (the single-process layout, no per-rank
files); the trajectory is the single-process one up to float rounding; the checkpoints
resume on 1 process and on 2 ranks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.train.distributed._spawn import purestep, torchrun

CONFIG = """
model: {name: mlp, hidden: [16], out_features: 1}
data: {name: sprites, n_train: 192, n_val: 64, n_test: 64, batch_size: 32}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-2}
metrics: [accuracy, confusion_matrix]
train: {epochs: 2, compile: false}
checkpoint: {every_steps: 4, keep: 3}
log: {progress: false, tensorboard: false}
"""
# 2 ranks vs 1 process, 12 Adam steps: per-epoch losses and metrics agree to rounding
# (measured: losses within 3e-8, accuracies and confusion matrices equal); stated 1e-5.
HISTORY_ATOL = 1e-5


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _meta(out: Path, pointer: str = "latest") -> dict:
    ckpts = out / "checkpoints"
    name = (ckpts / pointer).read_text().strip()
    return json.loads((ckpts / name / "meta.json").read_text())


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A finished 2-rank run."""
    tmp = tmp_path_factory.mktemp("launch")
    (tmp / "cfg.yaml").write_text(CONFIG)
    done = torchrun(2, ["train", "--config", "cfg.yaml", "--out", "out", "--no-plots"], cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp, tmp / "out", done.stdout


def test_rank0_alone_prints_and_writes_one_run_directory(job: tuple[Path, Path, str]) -> None:
    tmp, out, stdout = job
    assert stdout.count("done in ") == 1, stdout
    assert stdout.count("data-parallel: 2 ranks (gloo), 16 examples per rank per batch") == 1
    assert stdout.count("epoch 2/2") == 1
    files = _files(out)
    steps = sorted({f.split("/")[1] for f in files if f.startswith("checkpoints/step-")})
    # Every 4 steps and every epoch (6 batches), the newest 3 kept.
    assert steps == ["step-00000006", "step-00000008", "step-00000012"]
    expected = ["config.yaml", "history.csv", "history.json", "test_metrics.json"]
    expected += ["checkpoints/best", "checkpoints/latest"]
    expected += [f"checkpoints/{s}/{f}" for s in steps for f in ("meta.json", "state.safetensors")]
    assert files == sorted(expected)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    meta = _meta(out)
    assert meta["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert meta["finished"] and meta["step"] == 12
    assert _files(tmp) == sorted(["cfg.yaml", *(f"out/{f}" for f in files)])


def test_trajectory_is_the_single_process_one(job: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, out, _ = job
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    single = purestep(["train", "--config", "cfg.yaml", "--out", "one", "--no-plots"], cwd=tmp_path)
    assert single.returncode == 0, single.stdout + single.stderr
    two = json.loads((out / "history.json").read_text())
    one = json.loads((tmp_path / "one" / "history.json").read_text())
    assert len(two) == len(one) == 2
    for a, b in zip(two, one, strict=True):
        assert a.keys() == b.keys()
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert abs(a[key] - b[key]) <= HISTORY_ATOL, (key, a[key], b[key])
        assert a["confusion_matrix"] == b["confusion_matrix"]


def test_resume_on_one_process_then_on_two_ranks(
    job: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, out, _ = job
    run = tmp_path / "out"
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    run.mkdir()

    shutil.copytree(out / "checkpoints", run / "checkpoints")
    one = purestep(
        ["train", "--config", "cfg.yaml", "--out", "out", "--resume", "--epochs", "3"],
        cwd=tmp_path,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    resumed = "resuming from out/checkpoints/step-00000012 (epoch 3, batch 0, step 12)"
    assert resumed in one.stdout, one.stdout
    assert _meta(run)["step"] == 18
    two = torchrun(
        2,
        ["train", "--config", "cfg.yaml", "--out", "out", "--resume", "--epochs", "4"],
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("resuming from out/checkpoints/step-00000018") == 1, two.stdout
    meta = _meta(run)
    assert meta["step"] == 24 and len(meta["history"]) == 4
    assert meta["distributed"]["world_size"] == 2
    assert [r["epoch"] for r in meta["history"]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_resume_at_two_ranks_is_bitwise_an_uninterrupted_run(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(CONFIG.replace("hidden: [16]", "hidden: [16], dropout: 0.2"))
    whole = torchrun(
        2, ["train", "--config", "cfg.yaml", "--out", "a", "--epochs", "3"], cwd=tmp_path
    )
    assert whole.returncode == 0, whole.stderr
    part = torchrun(
        2, ["train", "--config", "cfg.yaml", "--out", "b", "--epochs", "1"], cwd=tmp_path
    )
    assert part.returncode == 0, part.stderr
    rest = torchrun(
        2,
        ["train", "--config", "cfg.yaml", "--out", "b", "--resume", "--epochs", "3"],
        cwd=tmp_path,
    )
    assert rest.returncode == 0, rest.stderr
    a, b = _meta(tmp_path / "a"), _meta(tmp_path / "b")
    assert a["sha256"] == b["sha256"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]


@pytest.mark.slow
def test_parity_command_under_torchrun(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(CONFIG.replace("hidden: [16]", "hidden: [16], dropout: 0.2"))
    done = torchrun(2, ["parity", "--config", "cfg.yaml", "--steps", "30"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PARITY OK: 30 steps bitwise" in done.stdout, done.stdout + done.stderr


def test_sweep_and_tune_refuse_a_distributed_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    from purestep.train.config import ConfigError
    from purestep.train.distributed import DistributedLaunchError, refuse_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    refuse_distributed("sweep")  # a single process: fine
    monkeypatch.setenv("WORLD_SIZE", "1")
    refuse_distributed("sweep")  # torchrun --nproc-per-node 1: one process, fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    for command in ("sweep", "tune"):
        with pytest.raises(
            DistributedLaunchError, match=f"purestep {command} does not run under torchrun"
        ):
            refuse_distributed(command)
    assert issubclass(DistributedLaunchError, ConfigError)  # the CLI's exit 2
