"""The YAML run configuration: a pydantic v2 schema, and nothing else.

```yaml
model: {name: mlp, in_features: 64, hidden: [64, 64], out_features: 1, dropout: 0.1}
data: {name: sprites, batch_size: 64, seed: 0, n_train: 2048}    # other keys -> the data fn
loss: bce_with_logits                  # or {name: cross_entropy, label_smoothing: 0.1}
optimizer: {name: Adam, lr: 1e-3, param_groups: [{params: bias, weight_decay: 0.0}]}
scheduler: {name: ReduceLROnPlateau, factor: 0.5, patience: 2, monitor: val_loss}
train: {epochs: 5, seed: 0, compile: true, nan_policy: raise}
metrics: [accuracy, f1_macro]
early_stopping: {monitor: val_loss, patience: 5, restore_best: true}
checkpoint: {every_epochs: 1, every_steps: null, keep: 3}
log: {tensorboard: true, plots: true, progress: null}
parity: {steps: 100, mode: bitwise}
```

``load_config`` reads a file with ``yaml.safe_load`` and validates it: an unknown key, a
missing one, a wrong type or a value out of range is a ``ConfigError`` (a ``ValueError``)
naming the key path, the expected type or allowed values, and for a misspelt key the
closest valid one. Numbers PyYAML leaves as strings (``1e-3``) are numbers. ``model``,
``data``, ``optimizer``, ``scheduler`` and param groups keep their other keys as keyword
arguments for the function or torch class they name (checked when it is built, see
``purestep.train.build``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)

__all__ = [
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EarlyStoppingConfig",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ParityConfig",
    "SchedulerConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """A configuration problem; the message names the key path."""


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads `true` as 1: in a config that is a typo, not a number.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"not a regular expression ({err})") from None
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]
PositiveInt = Annotated[int, BeforeValidator(_no_bool), Field(gt=0)]
NonNegativeInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=0)]
Mode = Literal["min", "max"]


def plain(value: Any) -> Any:
    """Free-form keyword arguments: numeric strings (``1e-3``, ``inf``) become numbers."""
    if isinstance(value, str):
        try:
            if any(c in value for c in ".eE") or value in ("inf", "-inf", "nan"):
                return float(value)
            return int(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def _compile_setting(value: Any) -> Any:
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError("expected true, false or 'auto'")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _OpenSection(BaseModel):
    """A section whose unknown keys are keyword arguments of what it names."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        return {k: v if k in cls.model_fields else plain(v) for k, v in raw.items()}

    @property
    def kwargs(self) -> dict[str, Any]:
        """The section's other keys (numbers parsed)."""
        return dict(self.model_extra or {})


class ModelConfig(_OpenSection):
    """``name``: a built-in model (``purestep.models.MODELS``) or ``"package.module:function"``;
    other keys are its keyword arguments."""

    name: str


class CallbackConfig(_OpenSection):
    """``name``: ``"package.module:Class"`` (or a function) building a callback
    (``purestep.train.callbacks``); other keys are its keyword arguments."""

    name: str


class DataConfig(_OpenSection):
    """``name``: a built-in dataset or ``"package.module:function"``, called as
    ``fn(split="train"|"val"|"test", seed=seed, **other keys)``."""

    name: str = "sprites"
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt | None = None
    seed: Int = 0
    shuffle: StrictBool = True
    drop_last: StrictBool = False


class LossConfig(_OpenSection):
    """``name``: a built-in loss or ``"package.module:function"``; other keys are its
    constructor's keyword arguments (``label_smoothing: 0.1``)."""

    name: str


class _Hyperparameters(_OpenSection):
    """torch.optim's common keyword arguments, typed so that ``lr: fast`` is an error
    naming ``lr``; an optimizer's other arguments pass through as they are. Unset ones
    (None) are left to the optimizer's defaults."""

    lr: Float | None = None
    weight_decay: Float | None = None
    momentum: Float | None = None
    dampening: Float | None = None
    eps: Float | None = None
    alpha: Float | None = None
    rho: Float | None = None
    lr_decay: Float | None = None
    initial_accumulator_value: Float | None = None
    momentum_decay: Float | None = None
    betas: tuple[Float, Float] | None = None
    nesterov: StrictBool | None = None
    amsgrad: StrictBool | None = None
    maximize: StrictBool | None = None
    centered: StrictBool | None = None
    decoupled_weight_decay: StrictBool | None = None
    foreach: StrictBool | None = None

    @property
    def kwargs(self) -> dict[str, Any]:
        """The arguments given in the config (typed ones that are set, then the rest)."""
        typed = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k in _Hyperparameters.model_fields
            if (v := getattr(self, k)) is not None
        }
        return {**typed, **(self.model_extra or {})}


class ParamGroupConfig(_Hyperparameters):
    """``params``: a regex searched in parameter names; other keys override the
    optimizer's settings for those parameters."""

    params: str


class OptimizerConfig(_Hyperparameters):
    """``name``: a torch.optim class name (``Adam``, ``adamw``, ``SGD``); other keys are
    its keyword arguments (``lr``, ``betas``, ``weight_decay`` ...)."""

    name: str
    param_groups: list[ParamGroupConfig] = Field(default_factory=list)


class SchedulerConfig(_OpenSection):
    """``name``: a torch.optim.lr_scheduler class name; other keys are its arguments.
    ``every``: step it per batch or per epoch; ReduceLROnPlateau steps per epoch on
    ``monitor`` (default ``val_loss``, or ``loss`` without validation data)."""

    name: str
    every: Literal["step", "epoch"] = "step"
    monitor: str | None = None


class TrainConfig(_Section):
    epochs: PositiveInt = 5
    seed: Int = 0
    # auto: compile when it pays for itself on this run (purestep.train.compile_choice)
    compile: Annotated[bool | str, BeforeValidator(_compile_setting)] = "auto"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    clip_grad_norm: Annotated[float, BeforeValidator(_no_bool), Field(gt=0)] | None = None
    accumulation_steps: PositiveInt = 1
    nan_policy: Literal["raise", "skip", "stop"] = "raise"
    log_every: PositiveInt = 50
    # A new run from another run's parameters and buffers (purestep.train.init_from).
    init_from: Annotated[str, Field(min_length=1)] | None = None
    init_from_keys: Annotated[str, AfterValidator(_regex)] | None = None


class EarlyStoppingConfig(_Section):
    monitor: str = "val_loss"
    mode: Mode | None = None
    patience: NonNegativeInt = 5
    min_delta: Annotated[float, BeforeValidator(_no_bool), Field(ge=0)] = 0.0
    restore_best: StrictBool = True


class CheckpointConfig(_Section):
    every_epochs: PositiveInt | None = 1
    every_steps: PositiveInt | None = None
    keep: PositiveInt | None = None
    monitor: str | None = None
    mode: Mode | None = None


class WandbConfig(_Section):
    project: str = "purestep"
    mode: Literal["online", "offline", "disabled"] = "offline"
    name: str | None = None


class MlflowConfig(_Section):
    # None: an SQLite store in the run directory (recent MLflow refuses file stores).
    tracking_uri: str | None = None
    experiment: str = "purestep"
    run_name: str | None = None


class LogConfig(_Section):
    tensorboard: StrictBool = True
    csv: StrictBool = True
    plots: StrictBool = True
    progress: StrictBool | None = None
    wandb: WandbConfig | None = None
    mlflow: MlflowConfig | None = None


class ParityConfig(_Section):
    steps: PositiveInt = 100
    mode: Literal["bitwise", "close"] | None = None
    forcing: Literal["free", "teacher"] = "free"
    rtol: Float = 1e-5
    atol: Float = 1e-7


class Config(_Section):
    """A whole run. ``task`` (binary, multiclass, regression) is inferred from the loss
    when not given; metrics must fit it."""

    model: ModelConfig
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    loss: LossConfig
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig | None = None
    task: Literal["binary", "multiclass", "regression"] | None = None
    metrics: list[str] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig = Field(default_factory=lambda: CheckpointConfig())
    log: LogConfig = Field(default_factory=lambda: LogConfig())
    parity: ParityConfig = Field(default_factory=lambda: ParityConfig())
    callbacks: list[CallbackConfig] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _loss_shorthand(cls, raw: Any) -> Any:
        # `loss: mse` is `loss: {name: mse}`.
        if isinstance(raw, Mapping) and isinstance(raw.get("loss"), str):
            return {**raw, "loss": {"name": raw["loss"]}}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        es, ck = self.early_stopping, self.checkpoint
        if es is not None and ck.monitor is not None and ck.monitor != es.monitor:
            raise ValueError(
                f"checkpoint.monitor ({ck.monitor!r}) and early_stopping.monitor "
                f"({es.monitor!r}) differ: the best checkpoint is the one early stopping "
                "restores, so give one monitor (or drop checkpoint.monitor)"
            )
        return self


_FIELDS: dict[type[BaseModel], list[str]] = {}


def _allowed(model: type[BaseModel]) -> list[str]:
    if model not in _FIELDS:
        _FIELDS[model] = list(model.model_fields)
    return _FIELDS[model]


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class that holds the key at ``loc`` (for did-you-mean)."""
    node: type[BaseModel] = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = node.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        for c in candidates:
            inner = getattr(c, "__args__", ())
            for t in (c, *inner):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    node = t
                    break
            else:
                continue
            break
        else:
            return None
    return node


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-before[_no_bool(), int]", "function-before[_no_bool(), float]"):
            continue
        elif "[" in str(part) or str(part) in ("constrained-int", "constrained-float"):
            continue  # pydantic's internal names for union members / validators
        else:
            out += ("." if out else "") + str(part)
    return out or "config"


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    path = _path(loc)
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        section = _section_model(loc)
        allowed = _allowed(section) if section is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{path}: unknown key{hint} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        if loc and isinstance(loc[-1], int):
            return f"{_path(loc[:-1])}: too few values (item [{loc[-1]}] is missing)"
        return f"{path}: required key is missing"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        msg = "expected a mapping (a section of keys)"
    msg = msg.replace("Input should be ", "expected ")
    if not loc:  # a whole-config rule: the message says it all
        return msg
    shown = repr(given)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{path}: {msg} (got {shown})"


def _from_validation(err: ValidationError) -> ConfigError:
    seen: list[str] = []
    for e in err.errors():
        line = _describe(e)
        if line not in seen:
            seen.append(line)
    # A union (e.g. `int | None`) reports one error per member: the first names the problem.
    return ConfigError(
        "; ".join(seen[:3]) + (f" (and {len(seen) - 3} more)" if len(seen) > 3 else "")
    )


def parse_config(raw: Any) -> Config:
    """Validate a loaded YAML document; raises ``ConfigError`` naming the bad key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Config.model_validate(dict(raw))
    except ValidationError as err:
        raise _from_validation(err) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate a YAML config file, with ``key.path=value`` overrides applied."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err.strerror}") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    # Paths in the file are relative to its folder; paths typed in a --set, to the
    # working directory (where the command line was typed).
    raw = resolve_relative_paths(raw, path.parent)
    if overrides:
        raw = resolve_relative_paths(apply_overrides(raw, overrides), Path.cwd())
    return parse_config(raw)


# The keys that name files, by section: the built-in datasets' files and folders, and the
# checkpoint a run starts from. (A user's data function gets its keys as written.)
_PATH_KEYS: dict[str, dict[str | None, tuple[str, ...]]] = {
    "data": {"csv": ("path",), "text": ("path",), "image_folder": ("root",)},
    "train": {None: ("init_from",)},
}


def resolve_relative_paths(raw: Any, base: str | Path) -> Any:
    """``raw`` with each relative path a config names (``_PATH_KEYS``) made absolute from
    ``base``, the config file's folder, so that a config means the same files from any
    working directory, and the run directory it writes (config.yaml, meta.json) rebuilds
    from anywhere."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for section, by_name in _PATH_KEYS.items():
        node = out.get(section)
        if not isinstance(node, dict):
            continue
        keys = by_name.get(node.get("name")) if None not in by_name else by_name[None]
        for key in keys or ():
            value = node.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                node = {**node, key: os.path.normpath(os.path.join(os.path.abspath(base), value))}
        out[section] = node
    return out


def apply_overrides(raw: Any, overrides: list[str]) -> dict[str, Any]:
    """``["optimizer.lr=1e-2", "train.epochs=3"]`` applied to a raw config mapping (values
    read as YAML: ``[16, 16]``, ``true``, ``null``). Returns a new mapping."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    out: dict[str, Any] = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. optimizer.lr=1e-3")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {err}") from None
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and part == "loss":
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item!r}: {where} is not a section")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _deep_copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_deep_copy(v) for v in node]
    return node


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data: reads back with ``parse_config`` to the same
    ``Config`` (what ``OUT/config.yaml`` holds)."""
    raw = cfg.model_dump(mode="json")
    # Unset optimizer arguments are left out (None would read as "given").
    unset = set(_Hyperparameters.model_fields)
    opt = raw["optimizer"]
    raw["optimizer"] = {
        "name": opt.pop("name"),
        **{k: v for k, v in opt.items() if not (k in unset and v is None)},
    }
    raw["optimizer"]["param_groups"] = [
        {k: v for k, v in g.items() if not (k in unset and v is None)} for g in opt["param_groups"]
    ]
    return raw
