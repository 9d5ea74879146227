"""Warm starts: ``purestep train --init-from`` / ``train.init_from`` / ``--init-from-keys``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from purestep.cli import main
from purestep.train.checkpoint import CheckpointError
from purestep.train.init_from import load_warm_start, resolve_init_from

CONFIG = """
model: {name: mlp, hidden: [16], out_features: 1}
data: {name: sprites, n_train: 128, n_val: 32, n_test: 0, batch_size: 32}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-2}
train: {epochs: 2, compile: false}
log: {progress: false, plots: false, tensorboard: false}
"""


def _write(folder: Path, text: str = CONFIG, name: str = "cfg.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished run to start from, and the config it ran."""
    tmp = tmp_path_factory.mktemp("source")
    config = _write(tmp)
    out = tmp / "src"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    return config, out


def _latest(out: Path) -> Path:
    ckpts = out / "checkpoints"
    return ckpts / (ckpts / "latest").read_text().strip()


def _tensors(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(_latest(out) / "state.safetensors"))


def _meta(out: Path) -> dict:
    return json.loads((_latest(out) / "meta.json").read_text())


# SGD at lr 0 leaves the parameters where they start: the run's final parameters are its
# initial ones, bitwise.
FROZEN = ["--set", "optimizer.name=SGD", "--set", "optimizer.lr=0.0", "--epochs", "1"]


def test_init_from_starts_from_the_sources_parameters(source, tmp_path, capsys):
    config, src = source
    out = tmp_path / "out"
    capsys.readouterr()
    args = ["train", "--config", str(config), "--out", str(out), "--init-from", str(src)]
    assert main([*args, *FROZEN]) == 0
    printed = capsys.readouterr().out
    assert f"init from {_latest(src)}: 4 tensors loaded" in printed
    new, old = _tensors(out), _tensors(src)
    params = [k for k in old if k.startswith(("params/", "buffers/"))]
    assert params and all(torch.equal(new[k], old[k]) for k in params)
    meta, source_meta = _meta(out), _meta(src)
    # A new run: its own steps, history and random key, another optimizer.
    assert meta["step"] == 4 and [r["epoch"] for r in meta["history"]] == [1]
    assert any("exp_avg" in k for k in old) and not any("exp_avg" in k for k in new)
    assert meta["init_from"]["path"] == str(_latest(src).resolve())
    digest = hashlib.sha256((_latest(src) / "state.safetensors").read_bytes()).hexdigest()
    assert meta["init_from"]["sha256"] == {"state.safetensors": digest}
    assert meta["init_from"]["sha256"] == source_meta["sha256"]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["init_from"] == str(
        src.resolve()
    )


def test_init_from_keys_loads_a_subset_and_lists_the_rest(source, tmp_path, capsys):
    config, src = source
    fresh, part = tmp_path / "fresh", tmp_path / "part"
    assert main(["train", "--config", str(config), "--out", str(fresh), *FROZEN]) == 0
    capsys.readouterr()
    args = ["--init-from", str(src), "--init-from-keys", r"^0\."]
    assert main(["train", "--config", str(config), "--out", str(part), *args, *FROZEN]) == 0
    printed = capsys.readouterr().out
    assert "2 tensors loaded (--init-from-keys '^0\\\\.'); at their initial values: " in printed
    assert "2.weight, 2.bias" in printed
    got, old, init = _tensors(part), _tensors(src), _tensors(fresh)
    for name in ("0.weight", "0.bias"):
        assert torch.equal(got[f"params/{name}"], old[f"params/{name}"])
    for name in ("2.weight", "2.bias"):
        key = f"params/{name}"
        assert torch.equal(got[key], init[key]) and not torch.equal(got[key], old[key])
    assert _meta(part)["init_from"]["kept_initial"] == ["2.weight", "2.bias"]


def test_mismatched_shapes_exit_2_naming_the_tensor_and_both_shapes(source, tmp_path, capsys):
    config, src = source
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(
        [
            "train",
            *("--config", str(config), "--out", str(out), "--init-from", str(src)),
            *("--set", "model.hidden=[8]"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "'params/0.weight' has shape (16, 64) in " in err and "but (8, 64) in this model" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before anything was written
    # A new head on the source's first layer: a subset that leaves the head out fits.
    code = main(
        [
            "train",
            *("--config", str(config), "--out", str(out), "--init-from", str(src)),
            *("--set", "model.hidden=[16, 8]"),
            *("--init-from-keys", r"^0\.", "--epochs", "1"),
        ]
    )
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--init-from-keys", "^nothing"], "matches none of the model's parameters"),
        (["--init-from-keys", "(["], "train.init_from_keys: not a regular expression"),
        (["--set", "model.hidden=[16, 16]"], "'params/2.weight' has shape (1, 16) in "),
    ],
)
def test_bad_init_from_exit_2(source, tmp_path, capsys, extra, match):
    config, src = source
    out = tmp_path / "out"
    capsys.readouterr()
    args = ["train", "--config", str(config), "--out", str(out), "--init-from", str(src)]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err, err
    assert not out.exists()


def test_missing_source_and_keys_without_source_exit_2(tmp_path, capsys):
    config = _write(tmp_path)
    out = tmp_path / "out"
    args = ["train", "--config", str(config), "--out", str(out)]
    assert main([*args, "--init-from", str(tmp_path / "nowhere")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main([*args, "--init-from-keys", "x"]) == 2
    assert "train.init_from_keys: needs train.init_from" in capsys.readouterr().err
    assert main([*args, "--set", "train.init_from=''"]) == 2
    assert "train.init_from: String should have at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_yaml_init_from_is_relative_to_the_config_and_a_resume_keeps_the_record(
    source, tmp_path, monkeypatch
):
    _, src = source
    shutil.copytree(src, tmp_path / "runs" / "base")
    text = CONFIG.replace("compile: false}", "compile: false, init_from: ../runs/base}")
    config = _write(tmp_path / "configs", text)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not the config's folder
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--out", str(out), "--epochs", "1"]) == 0
    first = _meta(out)["init_from"]
    assert first["path"] == str(_latest(tmp_path / "runs" / "base").resolve())
    # A resume continues from its own checkpoint, with or without --init-from, and keeps
    # where the run started from.
    plain = _write(tmp_path / "configs", CONFIG, "plain.yaml")
    assert main(["train", "--config", str(plain), "--out", str(out), "--resume"]) == 0
    meta = _meta(out)
    assert meta["step"] == 8 and meta["init_from"] == first


def test_only_tensors_are_read_from_the_source(source, tmp_path):
    """The source's config is never built nor imported: a run whose meta.json names code
    that does not exist here (or would run anything) is still a source of weights."""
    _, src = source
    foreign = tmp_path / "foreign"
    shutil.copytree(src, foreign)
    for meta_path in (foreign / "checkpoints").glob("step-*/meta.json"):
        meta = json.loads(meta_path.read_text())
        meta["config"]["model"] = {"name": "evil_module_that_is_not_there:model"}
        meta_path.write_text(json.dumps(meta))
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    warm = load_warm_start(model, foreign)
    assert warm.path == _latest(foreign).resolve() and warm.kept == []
    old = _tensors(foreign)
    assert torch.equal(model[0].weight, old["params/0.weight"])
    # A damaged tensors file is refused, naming it; the model is left as it was.
    state = _latest(foreign) / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-8])
    before = model[2].weight.clone()
    with torch.no_grad():
        model[2].weight.zero_()
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_warm_start(model, foreign)
    assert torch.equal(model[2].weight, torch.zeros_like(before))


def test_a_run_directory_means_its_best(source, tmp_path):
    """As ``evaluate`` and ``predict`` read it: the model the run keeps; a pointer or a
    step directory names another."""
    _, src = source
    run = tmp_path / "run"
    shutil.copytree(src, run)
    ckpts = run / "checkpoints"
    (ckpts / "best").write_text("step-00000004\n")
    assert resolve_init_from(run) == ckpts / "step-00000004"
    assert resolve_init_from(ckpts / "latest") == ckpts / "step-00000008"
    assert resolve_init_from(ckpts / "step-00000008") == ckpts / "step-00000008"
    (ckpts / "best").unlink()
    assert resolve_init_from(run) == ckpts / "step-00000008"
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        resolve_init_from(tmp_path)


def test_sweep_members_start_from_init_from(source):
    """``ps.sweep`` (and ``tune``) build members as ``train`` builds a run: from the source."""
    from purestep.train.sweep import sweep

    config, src = source
    raw = yaml.safe_load(config.read_text())
    raw["train"] |= {"epochs": 1, "init_from": str(src)}
    raw["optimizer"] = {"name": "SGD", "lr": 0.0}
    result = sweep(raw, {"optimizer.momentum": [0.0, 0.9]}, chunk=1, print_fn=None)
    old = _tensors(src)
    for member in result.members:
        assert member.state is not None
        for name, value in member.state.params.items():
            assert torch.equal(value, old[f"params/{name}"])


@pytest.mark.parametrize("damage", ["fifo", "huge", "not_an_object"])
def test_a_damaged_source_meta_is_refused_as_every_checkpoint_read_refuses_it(
    source, tmp_path, damage
):
    """The source's meta.json gets the checks of every checkpoint read: a FIFO would block
    a plain read forever, a huge file would be read whole."""
    _, src = source
    foreign = tmp_path / "foreign"
    shutil.copytree(src, foreign)
    meta_path = _latest(foreign) / "meta.json"
    meta_path.unlink()
    if damage == "fifo":
        os.mkfifo(meta_path)
        match = "not a regular file"
    elif damage == "huge":
        meta_path.write_bytes(b" " * (65 << 20))
        match = "larger than"
    else:
        meta_path.write_text("[1, 2]")
        match = "expected a JSON object"
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(CheckpointError, match=match):
        load_warm_start(model, foreign)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
