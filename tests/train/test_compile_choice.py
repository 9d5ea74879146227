"""``train.compile: auto`` (issue 20): compile only when it pays for itself on this run."""

from __future__ import annotations

import textwrap

import pytest
import torch
import yaml
from torch import nn

import purestep as ps
from purestep.cli import main
from purestep.train import compile_choice
from purestep.train.compile_choice import decide_compile, expected_compile_seconds


def test_the_cost_model():
    # 500 steps of a 0.2 ms step save ~0.03 s: far from a cold compile's ~21 s.
    small = decide_compile(steps=500, eager_step_s=2e-4, n_tensors=6, warm=False)
    assert not small.compile and small.reason.startswith("eager: 500 steps")
    # 200k steps of 5 ms save ~286 s: compile, cold or warm.
    long = decide_compile(steps=200_000, eager_step_s=5e-3, n_tensors=98, warm=False)
    assert long.compile and "cold" in long.reason
    # A warm cache tips a middling run: ~3.3 s warm against ~21 s cold.
    assert expected_compile_seconds(6, warm=True) < expected_compile_seconds(6, warm=False)
    middling = dict(steps=3000, eager_step_s=2e-2, n_tensors=6)
    assert decide_compile(**middling, warm=True).compile
    assert not decide_compile(**middling, warm=False).compile


def test_timing_the_eager_step_changes_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    opt = ps.optim.adam(lr=1e-2)
    state = ps.TrainState.create(model, opt, seed=0)
    step = ps.make_train_step(model, nn.CrossEntropyLoss(), opt)
    batch = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    before = {k: v.clone() for k, v in state.params.items()}
    seconds = compile_choice.time_eager_step(step, state, batch, budget_s=0.2)
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in state.params.items())


def test_warm_record_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    (tmp_path / "inductor").mkdir()
    fp = compile_choice.step_fingerprint(["model", (8, 4)])
    assert not compile_choice.was_compiled_before(fp)
    compile_choice.remember_compiled(fp)
    assert compile_choice.was_compiled_before(fp)
    assert not compile_choice.was_compiled_before(compile_choice.step_fingerprint(["other"]))
    (tmp_path / "cache" / "purestep" / "compiled-steps.json").write_text("[not json")
    assert not compile_choice.was_compiled_before(fp)  # a damaged record: just colder


CONFIG = """
model: {name: mlp, hidden: [8], out_features: 3}
data: {name: blobs, n_train: 96, n_val: 32, n_classes: 3, batch_size: 16}
loss: cross_entropy
optimizer: {name: SGD, lr: 0.05}
train: {epochs: 2}
log: {progress: false, plots: false, tensorboard: false}
"""


def test_auto_is_the_default_decided_once_printed_and_recorded(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(CONFIG))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train.compile: auto -> eager: 12 steps" in text, text
    assert "(eager pure step" in text
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["compile"] is False
    # A resume repeats what the run did, whatever the timing says now.
    args = ["train", "--config", str(cfg), "--out", str(out), "--resume", "--epochs", "3"]
    assert main(args) == 0
    assert "auto -> eager, as the run being resumed" in capsys.readouterr().out


@pytest.mark.parametrize(("value", "ok"), [("auto", True), ("true", True), ("maybe", False)])
def test_the_setting_validates(value, ok):
    raw = yaml.safe_load(textwrap.dedent(CONFIG))
    raw["train"]["compile"] = yaml.safe_load(value)
    if ok:
        assert ps.train.parse_config(raw).train.compile == yaml.safe_load(value)
    else:
        with pytest.raises(ps.train.ConfigError, match="train.compile"):
            ps.train.parse_config(raw)
