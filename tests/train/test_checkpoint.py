"""Checkpoints: the format, the crash-safe protocol, and loads that check everything."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import purestep as ps
from purestep.train import Checkpointer, CheckpointError, LoopState, load_checkpoint
from purestep.train.checkpoint import FORMAT_VERSION, resolve_checkpoint


def _step(hidden: int = 8, opt=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, 2))
    opt = opt or ps.optim.adam(lr=1e-2)
    return ps.make_train_step(model, nn.CrossEntropyLoss(), opt), ps.TrainState.create(model, opt)


def _trained(steps: int = 3):
    step, state = _step()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        state, _ = step(
            state, (torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g))
        )
    return step, state


def _loop(step: int, **kw) -> LoopState:
    return LoopState(
        epoch=1,
        batch=2,
        step=step,
        history=[{"epoch": 1, "loss": 0.5}],
        losses=torch.tensor([0.7, 0.6]),
        **kw,
    )


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its hash: to show a failed load changed nothing."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_layout_and_round_trip(tmp_path):
    step, state = _trained()
    ckpt = Checkpointer(
        tmp_path, config={"k": 1}, extra_tensors={"data/standardizer/m": torch.ones(2)}
    )
    path = ckpt.save(state, _loop(3), best=True)
    assert path.name == "step-00000003"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "state.safetensors"]
    assert (tmp_path / "latest").read_text() == "step-00000003\n"
    assert (tmp_path / "best").read_text() == "step-00000003\n"
    keys = set(load_file(path / "state.safetensors"))
    assert {"step", "rng", "data/epoch", "data/batch", "loop/losses"} <= keys
    assert "params/0.weight" in keys and "buffers/1.running_mean" in keys
    assert any(k.startswith("opt_state/") for k in keys)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["config"] == {"k": 1}
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 2, 3)
    assert set(meta["versions"]) >= {"purestep", "torch"}
    assert (
        meta["sha256"]["state.safetensors"]
        == hashlib.sha256((path / "state.safetensors").read_bytes()).hexdigest()
    )
    loaded = load_checkpoint(tmp_path / "latest", step)
    assert ps.core.pytree.tree_bitwise_equal(loaded.state, state)
    assert loaded.loop.history == [{"epoch": 1, "loss": 0.5}]
    assert torch.equal(loaded.loop.losses, torch.tensor([0.7, 0.6]))
    assert torch.equal(loaded.extra["data/standardizer/m"], torch.ones(2))
    # Every way of naming it resolves to the same directory.
    for name in (path, tmp_path / "latest", tmp_path / "best", tmp_path):
        assert resolve_checkpoint(name) == path


def test_keep_prunes_old_but_never_best(tmp_path):
    _, state = _trained()
    ckpt = Checkpointer(tmp_path, keep=2)
    for i in range(1, 6):
        ckpt.save(state, _loop(i), best=i == 2)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step-"))
    assert names == ["step-00000002", "step-00000004", "step-00000005"]
    assert ckpt.pointer("best").name == "step-00000002"


def test_leftover_temp_dirs_are_ignored_and_removed(tmp_path):
    _, state = _trained()
    ckpt = Checkpointer(tmp_path)
    ckpt.save(state, _loop(1))
    junk = tmp_path / ".tmp-step-00000009-abc"
    junk.mkdir()
    (junk / "state.safetensors").write_bytes(b"partial")
    pointer = tmp_path / ".latest.0123abcd.tmp"  # a kill inside a pointer's write_atomic
    pointer.write_text("step-000")
    assert ckpt.latest().name == "step-00000001"
    ckpt.save(state, _loop(2))
    assert not junk.exists() and not pointer.exists()


def test_latest_falls_back_to_the_newest_complete_dir(tmp_path):
    _, state = _trained()
    ckpt = Checkpointer(tmp_path)
    ckpt.save(state, _loop(1))
    ckpt.save(state, _loop(2))
    (tmp_path / "latest").write_text("step-00000007\n")  # names a directory that is gone
    assert ckpt.latest().name == "step-00000002"
    (tmp_path / "latest").unlink()
    assert ckpt.latest().name == "step-00000002"


def test_saving_the_same_step_again_replaces_it(tmp_path):
    step, state = _trained()
    ckpt = Checkpointer(tmp_path)
    ckpt.save(state, _loop(4))
    ckpt.save(state, _loop(4, finished=True))
    assert load_checkpoint(tmp_path, step).loop.finished
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _corrupt(path: Path, how: str) -> None:
    state_file, meta_file = path / "state.safetensors", path / "meta.json"
    if how == "truncated":
        data = state_file.read_bytes()
        state_file.write_bytes(data[: len(data) // 2])
    elif how == "bitflip":
        data = bytearray(state_file.read_bytes())
        data[-3] ^= 0x01
        state_file.write_bytes(bytes(data))
    elif how == "missing_state":
        state_file.unlink()
    elif how == "missing_meta":
        meta_file.unlink()
    elif how == "meta_not_json":
        meta_file.write_text("{not json")
    elif how == "newer_format":
        meta = json.loads(meta_file.read_text())
        meta["format_version"] = FORMAT_VERSION + 1
        meta_file.write_text(json.dumps(meta))
    elif how == "no_format":
        meta = json.loads(meta_file.read_text())
        del meta["format_version"]
        meta_file.write_text(json.dumps(meta))
    elif how == "garbage_resigned":  # not safetensors at all, checksum updated to match
        state_file.write_bytes(b"\x00" * 100)
        meta = json.loads(meta_file.read_text())
        meta["sha256"]["state.safetensors"] = hashlib.sha256(b"\x00" * 100).hexdigest()
        meta_file.write_text(json.dumps(meta))
    elif how == "missing_key_resigned":  # a valid file lacking a tensor, checksum matching
        tensors = load_file(state_file)
        del tensors["params/0.weight"]
        save_file(tensors, state_file)
        meta = json.loads(meta_file.read_text())
        meta["sha256"]["state.safetensors"] = hashlib.sha256(state_file.read_bytes()).hexdigest()
        meta_file.write_text(json.dumps(meta))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("truncated", "checksum mismatch"),
        ("bitflip", "checksum mismatch"),
        ("missing_state", "state.safetensors: missing"),
        ("missing_meta", "meta.json: missing"),
        ("meta_not_json", "not readable JSON"),
        ("newer_format", "newer than this purestep reads"),
        ("no_format", "no format_version"),
        ("garbage_resigned", "not a valid safetensors file"),
        ("missing_key_resigned", r"does not fit this model.*params/0.weight"),
    ],
)
def test_bad_checkpoints_are_refused_and_left_alone(tmp_path, how, match):
    step, state = _trained()
    path = Checkpointer(tmp_path).save(state, _loop(3))
    _corrupt(path, how)
    before = _tree(tmp_path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path, step)
    assert str(path) in str(info.value)
    assert _tree(tmp_path) == before


def test_foreign_checkpoints_are_refused(tmp_path):
    _, state = _trained()
    Checkpointer(tmp_path).save(state, _loop(3))
    before = _tree(tmp_path)
    other_model, _ = _step(hidden=9)
    with pytest.raises(CheckpointError, match="does not fit this model and optimizer"):
        load_checkpoint(tmp_path, other_model)
    other_opt, _ = _step(opt=ps.optim.sgd(lr=0.1, momentum=0.9))
    with pytest.raises(CheckpointError, match="does not fit this model and optimizer"):
        load_checkpoint(tmp_path, other_opt)
    assert _tree(tmp_path) == before


def test_resolve_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "pointer").write_text("hello")
    with pytest.raises(CheckpointError, match="neither a checkpoint directory nor a pointer"):
        resolve_checkpoint(tmp_path / "pointer")
    (tmp_path / "latest").write_text("step-00000001\n")
    with pytest.raises(CheckpointError, match="names step-00000001, which does not exist"):
        resolve_checkpoint(tmp_path / "latest")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        resolve_checkpoint(empty)


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep must be a positive int"):
        Checkpointer(tmp_path, keep=0)


def test_no_pickle_on_any_path(tmp_path, monkeypatch):
    import pickle

    def refuse(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch, "save", refuse)
    step, state = _trained()
    Checkpointer(tmp_path).save(state, _loop(3))
    assert load_checkpoint(tmp_path, step).loop.step == 3
    assert os.path.getsize(tmp_path / "step-00000003" / "state.safetensors") > 0
