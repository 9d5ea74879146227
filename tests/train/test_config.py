"""The YAML run config: pydantic schema errors name the key; numbers in strings are numbers."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from purestep.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
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
    cfg = parse_config({**BASE, "model": {"name": "mlp", "dropout": "1e-1"}})
    assert cfg.model.kwargs["dropout"] == 0.1


def test_defaults_and_sections():
    cfg = parse_config(BASE)
    assert cfg.train.epochs == 5 and cfg.train.compile == "auto" and cfg.scheduler is None
    assert cfg.loss.name == "bce_with_logits" and cfg.metrics == []
    assert cfg.checkpoint.every_epochs == 1 and cfg.early_stopping is None
    assert cfg.optimizer.kwargs == {"lr": 1e-3, "weight_decay": 0.1}
    assert cfg.optimizer.param_groups[0].kwargs == {"weight_decay": 0.0}
    assert cfg.data.kwargs == {"n_train": 256, "n_val": 64}


def test_resolved_config_round_trips():
    cfg = parse_config(
        {
            **BASE,
            "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
            "scheduler": {"name": "StepLR", "step_size": 3, "every": "epoch"},
            "metrics": ["accuracy"],
            "early_stopping": {"patience": 2},
            "log": {"wandb": {"project": "p"}},
        }
    )
    text = yaml.safe_dump(config_to_dict(cfg))
    again = parse_config(yaml.safe_load(text))
    assert again == cfg
    assert "lr: 0.001" in text and "momentum" not in text  # unset arguments are left out
    assert config_to_dict(again) == config_to_dict(cfg)
    assert next(iter(config_to_dict(cfg)["optimizer"])) == "name"


BAD = [
    ({"model": None}, "model: expected a mapping"),
    ({"model": [1]}, "model: expected a mapping"),
    ({"optimizer": {"lr": 1e-3}}, "optimizer.name: required key is missing"),
    ({"optimizer": {"name": "Adam", "lr": "fast"}}, "optimizer.lr: expected a valid number"),
    ({"optimizer": {"name": "Adam", "betas": [0.9]}}, r"optimizer.betas: too few values"),
    ({"optimizer": {"name": "SGD", "nesterov": "yes"}}, "optimizer.nesterov: expected a valid"),
    ({"loss": 3}, "loss: expected a mapping"),
    ({"data": {"batch_size": "many"}}, "data.batch_size: expected a valid integer"),
    ({"data": {"batch_size": 2.5}}, "data.batch_size: expected a valid integer"),
    ({"data": {"batch_size": 0}}, "data.batch_size: expected greater than 0"),
    ({"train": {"epochs": True}}, "train.epochs: expected a number, got a boolean"),
    ({"train": {"epochs": -1}}, "train.epochs: expected greater than 0"),
    ({"train": {"compile": "yes"}}, "train.compile: expected true, false or 'auto'"),
    ({"train": {"epoch": 5}}, "train.epoch: unknown key; did you mean 'epochs'"),
    ({"train": {"nan_policy": "ignore"}}, "train.nan_policy: expected 'raise', 'skip' or 'stop'"),
    ({"train": {"clip_grad_norm": 0}}, "train.clip_grad_norm: expected greater than 0"),
    ({"train": {"device": "tpu"}}, "train.device: expected 'cpu', 'cuda' or 'auto'"),
    ({"parity": {"mode": "exact"}}, "parity.mode: expected 'bitwise' or 'close'"),
    ({"scheduler": {"name": "StepLR", "every": "batch"}}, "scheduler.every: expected 'step'"),
    (
        {"optimizer": {"name": "Adam", "param_groups": [{"lr": 1.0}]}},
        r"optimizer.param_groups\[0\].params: required key is missing",
    ),
    ({"extra": 1}, "extra: unknown key"),
    ({"metrics": "accuracy"}, "metrics: expected a valid list"),
    ({"early_stopping": {"patience": -1}}, "early_stopping.patience: expected greater than"),
    ({"early_stopping": {"mode": "up"}}, "early_stopping.mode: expected 'min' or 'max'"),
    ({"early_stopping": {"pateince": 3}}, "did you mean 'patience'"),
    ({"checkpoint": {"keep": 0}}, "checkpoint.keep: expected greater than 0"),
    ({"checkpoint": {"every_step": 3}}, "did you mean 'every_steps'"),
    ({"log": {"progress": "yes"}}, "log.progress: expected a valid boolean"),
    ({"log": {"wandb": {"mode": "cloud"}}}, "log.wandb.mode: expected 'online', 'offline'"),
    ({"task": "ranking"}, "task: expected 'binary', 'multiclass' or 'regression'"),
    (
        {"early_stopping": {"monitor": "val_accuracy"}, "checkpoint": {"monitor": "val_loss"}},
        "checkpoint.monitor .* and early_stopping.monitor .* differ",
    ),
]


@pytest.mark.parametrize(("patch", "match"), BAD)
def test_errors_name_the_key(patch, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({**BASE, **patch})


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        parse_config(["model"])


def test_overrides():
    raw = apply_overrides(
        BASE,
        ["optimizer.lr=1e-2", "train.epochs=3", "loss.label_smoothing=0.1", "model.hidden=[8, 8]"],
    )
    cfg = parse_config(raw)
    assert cfg.optimizer.kwargs["lr"] == 0.01 and cfg.train.epochs == 3
    assert cfg.loss.kwargs == {"label_smoothing": 0.1} and cfg.model.kwargs["hidden"] == [8, 8]
    assert BASE["optimizer"]["lr"] == "1e-3"  # the input is not modified
    for bad, match in [
        ("optimizer.lr", "expected key.path=value"),
        ("=3", "expected key.path=value"),
        ("optimizer..lr=3", "expected key.path=value"),
        ("model.name.x=3", "model.name is not a section"),
        ("train.epochs=[1", "not valid YAML"),
    ]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(BASE, [bad])


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
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(BASE))
    assert isinstance(load_config(good, ["train.epochs=2"]), Config)
    assert load_config(good, ["train.epochs=2"]).train.epochs == 2
