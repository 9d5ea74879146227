"""The YAML run config: validation errors name the key; numbers in strings are numbers."""

from __future__ import annotations

import textwrap

import pytest
import torch
import yaml

from purestep.models import build_model
from purestep.train.config import (
    ConfigError,
    build_batches,
    build_criterion,
    build_torch_optimizer,
    build_torch_scheduler,
    load_config,
    parse_config,
)

BASE = {
    "model": {"name": "mlp", "in_features": 64, "hidden": [16], "out_features": 1},
    "data": {"name": "sprites", "n_train": 256, "n_val": 64, "batch_size": 32},
    "loss": "bce_with_logits",
    "optimizer": {
        "name": "AdamW",
        "lr": "1e-3",
        "weight_decay": 0.1,
        "param_groups": [{"params": "bias", "weight_decay": 0.0}],
    },
}


def test_examples_load():
    for path in ("examples/sprites.yaml", "examples/tiny_lm.yaml"):
        cfg = load_config(path)
        assert cfg.model.name and cfg.parity.steps > 0


def test_yaml_scientific_notation_is_a_number():
    raw = yaml.safe_load("optimizer: {name: Adam, lr: 1e-3}\ntrain: {clip_grad_norm: 5e-1}")
    assert isinstance(raw["optimizer"]["lr"], str)  # PyYAML's reading
    cfg = parse_config({**BASE, **raw})
    assert cfg.optimizer.kwargs["lr"] == 1e-3 and cfg.train.clip_grad_norm == 0.5


def test_defaults_and_building():
    cfg = parse_config(BASE)
    assert cfg.train.epochs == 5 and cfg.parity.mode == "bitwise" and cfg.scheduler is None
    model = build_model(cfg.model.name, **cfg.model.kwargs)
    opt = build_torch_optimizer(cfg.optimizer, model)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.1]
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.defaults["foreach"] is False
    sched = build_torch_scheduler(
        parse_config({**BASE, "scheduler": {"name": "step_lr", "step_size": 3}}).scheduler, opt
    )
    assert type(sched).__name__ == "StepLR"
    batches = build_batches(cfg.data)
    assert len(batches) == 256 // 32 and batches[0][0].shape == (32, 64)
    assert (
        build_criterion("lm_cross_entropy")(
            torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)
        ).dim()
        == 0
    )


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"model": None}, "model.name: required key is missing"),
        ({"model": [1]}, "model: expected a mapping, got list"),
        ({"optimizer": {"lr": 1e-3}}, "optimizer.name: required key is missing"),
        ({"loss": "hinge"}, "loss: expected one of"),
        ({"loss": 3}, "loss: expected a string, got int 3"),
        ({"data": {"batch_size": "many"}}, "data.batch_size: expected int, got string 'many'"),
        ({"data": {"batch_size": 2.5}}, "data.batch_size: expected int, got 2.5"),
        ({"data": {"n_train": 0}}, "data.n_train: must be > 0"),
        (
            {"train": {"epochs": "5", "compile": "yes"}},
            "train.compile: expected true/false, got 'yes'",
        ),
        ({"train": {"epoch": 5}}, r"train: unknown keys \['epoch'\]"),
        ({"parity": {"mode": "exact"}}, "parity.mode: expected 'bitwise' or 'close'"),
        (
            {"scheduler": {"name": "StepLR", "every": "batch"}},
            "scheduler.every: expected 'step' or 'epoch'",
        ),
        (
            {"optimizer": {"name": "Adam", "param_groups": [{"lr": 1.0}]}},
            r"optimizer.param_groups\[0\].params",
        ),
        ({"extra": 1}, r"config: unknown keys \['extra'\]"),
    ],
)
def test_errors_name_the_key(patch, match):
    raw = {**BASE, **patch}
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_build_errors_name_the_problem():
    model = build_model("mlp", in_features=4, hidden=[3], out_features=2)
    with pytest.raises(ConfigError, match="optimizer.name: torch has no optimizer 'Adamm'"):
        build_torch_optimizer(
            parse_config({**BASE, "optimizer": {"name": "Adamm"}}).optimizer, model
        )
    with pytest.raises(ConfigError, match="rejected"):
        build_torch_optimizer(
            parse_config({**BASE, "optimizer": {"name": "SGD", "lr": -1}}).optimizer, model
        )
    with pytest.raises(ConfigError, match="matches no parameter"):
        build_torch_optimizer(
            parse_config(
                {**BASE, "optimizer": {"name": "SGD", "param_groups": [{"params": "nothing"}]}}
            ).optimizer,
            model,
        )
    with pytest.raises(ValueError, match="unknown model 'mlpp'"):
        build_model("mlpp")
    with pytest.raises(ValueError, match="rejected its arguments"):
        build_model("mlp", width=3)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text(textwrap.dedent("- a\n- b\n"))
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(top)
