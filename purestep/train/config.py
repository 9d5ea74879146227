"""The YAML run configuration, shared by ``purestep train`` and ``purestep parity``.

```yaml
model: {name: mlp, in_features: 64, hidden: [64, 64], out_features: 1, dropout: 0.1}
data: {name: sprites, n_train: 2048, n_val: 512, batch_size: 64, seed: 0}
loss: bce_with_logits
optimizer: {name: Adam, lr: 1e-3, param_groups: [{params: bias, weight_decay: 0.0}]}
scheduler: {name: StepLR, step_size: 100, gamma: 0.5, every: step}   # optional
train: {epochs: 5, seed: 0, compile: true, clip_grad_norm: null, accumulation_steps: 1}
parity: {steps: 100, mode: bitwise, forcing: free, rtol: 1e-5, atol: 1e-7}
```

``load_config`` reads it with ``yaml.safe_load`` and validates every key: an unknown key,
a missing one or a wrong type is a ``ConfigError`` (a ``ValueError``) naming the key path
and the expected type. Numbers PyYAML leaves as strings (``1e-3``) are read as numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

__all__ = [
    "LOSSES",
    "Config",
    "ConfigError",
    "DataConfig",
    "OptimizerConfig",
    "ParityConfig",
    "SchedulerConfig",
    "TrainConfig",
    "build_batches",
    "build_criterion",
    "build_torch_optimizer",
    "build_torch_scheduler",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """A configuration problem; the message names the key path."""


def _number(path: str, value: Any, kind: type) -> Any:
    if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            value = float(value) if kind is float else int(value)
        except ValueError:
            raise ConfigError(f"{path}: expected {kind.__name__}, got string {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise ConfigError(f"{path}: expected int, got {value!r}")
        return int(value)
    return float(value)


def _coerce(path: str, value: Any, kind: Any) -> Any:
    """Check/convert ``value`` against a simple type spec (int, float, bool, str, None-able)."""
    if isinstance(kind, tuple):  # (type, None) = optional
        if value is None:
            return None
        kind = kind[0]
    if kind in (int, float):
        return _number(path, value, kind)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def _plain(path: str, value: Any) -> Any:
    """Free-form keyword arguments: numeric strings become numbers, lists stay lists."""
    if isinstance(value, str):
        try:
            return (
                float(value)
                if any(c in value for c in ".eE") or value in ("inf", "-inf")
                else int(value)
            )
        except ValueError:
            return value
    if isinstance(value, list):
        return [_plain(f"{path}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {k: _plain(f"{path}.{k}", v) for k, v in value.items()}
    return value


def _section(
    path: str, raw: Any, spec: Mapping[str, tuple[Any, Any]], *, extra: bool = False
) -> dict[str, Any]:
    """Validate a mapping against ``{key: (type, default)}``; ``...`` default = required.
    With ``extra``, unknown keys are kept as free-form kwargs."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, (kind, default) in spec.items():
        if key in raw:
            out[key] = _coerce(f"{path}.{key}", raw[key], kind)
        elif default is ...:
            raise ConfigError(f"{path}.{key}: required key is missing")
        else:
            out[key] = default
    unknown = [k for k in raw if k not in spec]
    if unknown and not extra:
        raise ConfigError(f"{path}: unknown keys {unknown}; expected {sorted(spec)}")
    out["kwargs"] = {k: _plain(f"{path}.{k}", raw[k]) for k in unknown}
    return out


@dataclass(frozen=True)
class ModelConfig:
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    name: str = "sprites"
    n_train: int = 2048
    n_val: int = 512
    batch_size: int = 64
    seed: int = 0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str
    param_groups: list[dict[str, Any]] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerConfig:
    name: str
    every: str = "step"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    seed: int = 0
    compile: bool = True
    clip_grad_norm: float | None = None
    accumulation_steps: int = 1
    device: str = "cpu"


@dataclass(frozen=True)
class ParityConfig:
    steps: int = 100
    mode: str = "bitwise"
    forcing: str = "free"
    rtol: float = 1e-5
    atol: float = 1e-7


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    data: DataConfig
    loss: str
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig | None
    train: TrainConfig
    parity: ParityConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


LOSSES = ("cross_entropy", "bce_with_logits", "mse", "l1", "smooth_l1", "lm_cross_entropy")
_TOP = ("model", "data", "loss", "optimizer", "scheduler", "train", "parity")


def parse_config(raw: Any) -> Config:
    """Validate a loaded YAML document; raises ``ConfigError`` naming the bad key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in _TOP]
    if unknown:
        raise ConfigError(f"config: unknown keys {unknown}; expected {list(_TOP)}")
    for key in ("model", "optimizer", "loss"):
        if key not in raw:
            raise ConfigError(f"{key}: required section is missing")

    model = _section("model", raw["model"], {"name": (str, ...)}, extra=True)
    data = _section(
        "data",
        raw.get("data"),
        {
            "name": (str, "sprites"),
            "n_train": (int, 2048),
            "n_val": (int, 512),
            "batch_size": (int, 64),
            "seed": (int, 0),
        },
        extra=True,
    )
    for key in ("n_train", "batch_size"):
        if data[key] <= 0:
            raise ConfigError(f"data.{key}: must be > 0, got {data[key]}")
    loss = _coerce("loss", raw["loss"], str)
    if loss not in LOSSES:
        raise ConfigError(f"loss: expected one of {list(LOSSES)}, got {loss!r}")
    opt = _section(
        "optimizer", raw["optimizer"], {"name": (str, ...), "param_groups": (list, [])}, extra=True
    )
    groups = opt["param_groups"]
    if not isinstance(groups, list):
        raise ConfigError(f"optimizer.param_groups: expected a list, got {type(groups).__name__}")
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), str):
            raise ConfigError(
                f"optimizer.param_groups[{i}].params: expected a regex string naming parameters"
            )
    groups = [
        {
            k: (v if k == "params" else _plain(f"optimizer.param_groups[{i}].{k}", v))
            for k, v in g.items()
        }
        for i, g in enumerate(groups)
    ]
    scheduler = None
    if raw.get("scheduler") is not None:
        s = _section(
            "scheduler", raw["scheduler"], {"name": (str, ...), "every": (str, "step")}, extra=True
        )
        if s["every"] not in ("step", "epoch"):
            raise ConfigError(f"scheduler.every: expected 'step' or 'epoch', got {s['every']!r}")
        scheduler = SchedulerConfig(s["name"], s["every"], s["kwargs"])
    train = _section(
        "train",
        raw.get("train"),
        {
            "epochs": (int, 5),
            "seed": (int, 0),
            "compile": (bool, True),
            "clip_grad_norm": ((float, None), None),
            "accumulation_steps": (int, 1),
            "device": (str, "cpu"),
        },
    )
    if train["epochs"] <= 0:
        raise ConfigError(f"train.epochs: must be > 0, got {train['epochs']}")
    if train["accumulation_steps"] < 1:
        raise ConfigError(
            f"train.accumulation_steps: must be >= 1, got {train['accumulation_steps']}"
        )
    parity = _section(
        "parity",
        raw.get("parity"),
        {
            "steps": (int, 100),
            "mode": (str, "bitwise"),
            "forcing": (str, "free"),
            "rtol": (float, 1e-5),
            "atol": (float, 1e-7),
        },
    )
    if parity["mode"] not in ("bitwise", "close"):
        raise ConfigError(f"parity.mode: expected 'bitwise' or 'close', got {parity['mode']!r}")
    if parity["forcing"] not in ("free", "teacher"):
        raise ConfigError(
            f"parity.forcing: expected 'free' or 'teacher', got {parity['forcing']!r}"
        )
    if parity["steps"] <= 0:
        raise ConfigError(f"parity.steps: must be > 0, got {parity['steps']}")
    train.pop("kwargs")
    parity.pop("kwargs")
    return Config(
        model=ModelConfig(model["name"], model["kwargs"]),
        data=DataConfig(**data),
        loss=loss,
        optimizer=OptimizerConfig(opt["name"], groups, opt["kwargs"]),
        scheduler=scheduler,
        train=TrainConfig(**train),
        parity=ParityConfig(**parity),
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err.strerror}") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return parse_config(raw)


# -- building what a config names --------------------------------------------------------


def build_criterion(name: str) -> Any:
    """The loss function named in the config."""
    import torch.nn.functional as F

    if name == "lm_cross_entropy":

        def lm_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

        return lm_cross_entropy
    table = {
        "cross_entropy": nn.CrossEntropyLoss(),
        "bce_with_logits": nn.BCEWithLogitsLoss(),
        "mse": nn.MSELoss(),
        "l1": nn.L1Loss(),
        "smooth_l1": nn.SmoothL1Loss(),
    }
    if name not in table:
        raise ConfigError(f"loss: expected one of {list(LOSSES)}, got {name!r}")
    return table[name]


def _torch_class(module: Any, name: str, what: str) -> Any:
    lookup = {n.lower(): n for n in dir(module) if not n.startswith("_")}
    real = lookup.get(name.lower().replace("_", "")) or lookup.get(name.lower())
    if real is None:
        raise ConfigError(f"{what}.name: torch has no {what} {name!r}")
    return getattr(module, real)


def build_torch_optimizer(
    cfg: OptimizerConfig, model: nn.Module, *, foreach: bool | None = False
) -> torch.optim.Optimizer:
    """The torch optimizer a config describes, param groups by regex on parameter names
    (parameters no group names form a last group with the top-level settings)."""
    import re

    cls = _torch_class(torch.optim, cfg.name, "optimizer")
    kwargs = dict(cfg.kwargs)
    if foreach is not None and "foreach" not in kwargs:
        kwargs["foreach"] = foreach
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    taken: set[str] = set()
    groups: list[dict[str, Any]] = []
    for i, group in enumerate(cfg.param_groups):
        pattern = re.compile(group["params"])
        members = [p for n, p in named if pattern.search(n) and n not in taken]
        taken |= {n for n, _ in named if pattern.search(n)}
        if not members:
            raise ConfigError(
                f"optimizer.param_groups[{i}].params: {group['params']!r} matches no parameter"
            )
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": members})
    rest = [p for n, p in named if n not in taken]
    if rest or not groups:
        groups.append({"params": rest})
    try:
        return cls(groups, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"optimizer: torch.optim.{cls.__name__} rejected {kwargs}: {err}"
        ) from err


def build_torch_scheduler(cfg: SchedulerConfig | None, optimizer: torch.optim.Optimizer) -> Any:
    """The torch lr scheduler a config describes (None when there is none)."""
    if cfg is None:
        return None
    cls = _torch_class(torch.optim.lr_scheduler, cfg.name, "scheduler")
    try:
        return cls(optimizer, **cfg.kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"scheduler: {cls.__name__} rejected {cfg.kwargs}: {err}") from err


def build_batches(
    cfg: DataConfig, *, split: str = "train", epoch: int = 0
) -> list[tuple[torch.Tensor, ...]]:
    """The batches of one epoch of the dataset a config names."""
    from purestep.data import iterate_batches, make_dataset

    x, y = make_dataset(
        cfg.name,
        cfg.n_train if split == "train" else cfg.n_val,
        seed=cfg.seed if split == "train" else cfg.seed + 1,
        **cfg.kwargs,
    )
    return list(
        iterate_batches(
            (x, y),
            cfg.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            shuffle=split == "train",
            drop_last=split == "train",
        )
    )
