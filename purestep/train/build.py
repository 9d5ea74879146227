"""Everything a config names, built: model, data splits, loss, optimizer, metrics.

Names resolve to a built-in (``MODELS``, ``DATASETS``, ``LOSSES``, torch.optim classes) or
to ``"package.module:function"`` (imported from the current directory or the config's).
A section's other keys are the keyword arguments of what it names; a key the function
does not accept is a ``ConfigError`` naming it (with the accepted ones and a did-you-mean).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import TypeAdapter, ValidationError
from torch import nn

from purestep._trust import import_allowed
from purestep.data.datasets import DATASETS, DataSplit, as_split
from purestep.models import MODELS
from purestep.optim import apply_if_finite, chain, clip_by_global_norm, from_torch, multi_steps
from purestep.optim.base import Optimizer
from purestep.optim.schedules import Schedule
from purestep.optim.schedules.convert import schedule_from_torch
from purestep.train.config import (
    Config,
    ConfigError,
    DataConfig,
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
)
from purestep.train.metrics import infer_task as metric_task

__all__ = [
    "CALLBACKS",
    "LOSSES",
    "BuiltOptimizer",
    "add_import_paths",
    "build_callbacks",
    "build_criterion",
    "build_data",
    "build_model",
    "build_optimizer",
    "build_torch_optimizer",
    "build_torch_scheduler",
    "call_with_section",
    "import_paths",
    "infer_task",
    "resolve_device",
    "resolve_name",
]


def _lm_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every position of ``(N, T, C)`` logits and ``(N, T)`` targets."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# Built-in losses by config name (their metric task: ``purestep.train.metrics.infer_task``).
LOSSES: dict[str, Callable[..., Any]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "nll": nn.NLLLoss,
    "lm_cross_entropy": lambda: _lm_cross_entropy,
    "bce_with_logits": nn.BCEWithLogitsLoss,
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "huber": nn.HuberLoss,
}


def add_import_paths(*dirs: str | Path) -> None:
    """Let ``"package.module:function"`` names import from these directories (the current
    directory and the config's). They are searched *after* the installed libraries: a
    ``tqdm.py`` or ``plots.py`` beside a config never shadows a library purestep uses."""
    for d in dirs:
        path = str(Path(d).resolve())
        if path not in _IMPORT_PATHS:
            _IMPORT_PATHS.append(path)
        if path not in sys.path:
            sys.path.append(path)


# The folders add_import_paths made importable in this process, in order: a run records
# them in meta.json so that its module:function names rebuild from any working directory.
_IMPORT_PATHS: list[str] = []


def import_paths() -> list[str]:
    """The folders ``add_import_paths`` added (absolute), in the order they were added."""
    return list(_IMPORT_PATHS)


def resolve_name(name: str, registry: Mapping[str, Any], section: str) -> Any:
    """A built-in by name, or the attribute ``function`` of ``package.module``."""
    if ":" in name:
        import_allowed(name, section)  # a foreign run's config imports nothing
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(
                f"{section}.name: cannot import module {module_name!r} ({err}); it must be "
                "importable from the current directory, the config's directory or sys.path"
            ) from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise ConfigError(
                f"{section}.name: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    builtin = ", ".join(sorted(registry))
    raise ConfigError(
        f"{section}.name: unknown {section} {name!r}{hint} (built in: {builtin}; "
        "or 'package.module:function')"
    )


def call_with_section(
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any],
    section: str,
    *,
    fixed: Mapping[str, Any] | None = None,
) -> Any:
    """``fn(**fixed, **kwargs)``, after checking that ``fn`` accepts every key of ``kwargs``
    (a key it does not is a ``ConfigError`` naming ``section.key``); an error raised by
    ``fn`` for its arguments is a ``ConfigError`` too."""
    fixed = dict(fixed or {})
    label = getattr(fn, "__name__", type(fn).__name__)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    ):
        accepted = [
            n
            for n, p in sig.parameters.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and n not in fixed
        ]
        for key in kwargs:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{section}.{key}: unknown argument of {label}{hint} "
                    f"(it accepts: {', '.join(accepted) or 'nothing'})"
                )
        for key in fixed:
            if key not in sig.parameters:
                raise ConfigError(
                    f"{section}.name: {label} must accept {', '.join(map(repr, fixed))} "
                    f"(called as {label}({', '.join(f'{k}=...' for k in fixed)}, ...))"
                )
    _check_annotations(fn, kwargs, section, label)
    try:
        return fn(**fixed, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{section}: {label}({_show(kwargs)}) failed: {err}") from err
    except Exception as err:  # the user's code failed: not a config error, but say where
        raise UserFunctionError(
            f"{section}: {label}({_show(kwargs)}) raised {type(err).__name__}: {err}"
        ) from err


class UserFunctionError(RuntimeError):
    """A function the config names (model, data, loss) raised something other than a
    ``TypeError``/``ValueError`` while being built: a failure of the user's code (exit 1),
    reported with the config section and the call that failed."""


def _check_annotations(
    fn: Callable[..., Any], kwargs: Mapping[str, Any], section: str, label: str
) -> None:
    """Check each value against ``fn``'s type annotation, if it has one pydantic reads, so
    ``hidden: 64`` for ``hidden: Sequence[int]`` names ``model.hidden`` (the value passed
    on is the config's own, not pydantic's conversion)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: the call itself will tell
        return
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is None:
            continue
        try:
            adapter = TypeAdapter(hint)
        except Exception:  # a type pydantic cannot validate (a torch class ...)
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as err:
            first = err.errors()[0]
            msg = str(first["msg"]).replace("Input should be ", "expected ")
            raise ConfigError(
                f"{section}.{key}: {msg} for {label}'s {key}: {_hint_name(hint)} (got {value!r})"
            ) from None


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _show(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but torch sees no CUDA device")
    return torch.device(device)


def infer_task(cfg: Config) -> str | None:
    """The config's task, or the one its built-in loss implies (None for a user's loss)."""
    if cfg.task is not None:
        return cfg.task
    return metric_task(cfg.loss.name) if cfg.loss.name in LOSSES else None


def task_from_targets(data: tuple[torch.Tensor, ...] | Any) -> str | None:
    """The metric task a user's loss leaves open, read off the training targets: integer
    class indices (what ``cross_entropy`` takes) mean ``multiclass``; float targets could be
    a regression or 0/1 labels, so they decide nothing (None)."""
    if isinstance(data, tuple):
        target = data[-1]
    else:
        try:
            first = data[0]
        except (TypeError, IndexError, KeyError):
            return None
        target = first[-1] if isinstance(first, tuple | list) and len(first) >= 2 else None
    if isinstance(target, int) and not isinstance(target, bool):
        return "multiclass"
    if isinstance(target, torch.Tensor) and target.dtype in (
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint8,
    ):
        return "multiclass"
    return None


def build_model(cfg: Config, *, input_example: torch.Tensor | None = None) -> nn.Module:
    """The model the config names. A built-in model whose ``in_features`` the config leaves
    out takes it from the data (``input_example``: one batch's first input)."""
    factory = resolve_name(cfg.model.name, MODELS, "model")
    kwargs = dict(cfg.model.kwargs)
    if (
        cfg.model.name in MODELS
        and "in_features" not in kwargs
        and "in_features" in inspect.signature(factory).parameters
        and input_example is not None
        and input_example.dim() == 2
        and input_example.is_floating_point()
    ):
        kwargs["in_features"] = int(input_example.shape[1])
    params = inspect.signature(factory).parameters if callable(factory) else {}
    if cfg.model.name in MODELS and "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = cfg.train.seed  # a built-in model initialises from the run's seed
    model = call_with_section(factory, kwargs, "model")
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.name: {cfg.model.name!r} built a {type(model).__name__}, not an nn.Module"
        )
    return model


def build_data(cfg: DataConfig, split: str, task: str | None = None) -> DataSplit | None:
    """One split of the dataset the config names (``None`` if it has no such split).
    Integer targets of a binary task become float (what ``BCEWithLogitsLoss`` takes); those
    of a multiclass task int64 (the class indices ``cross_entropy``/``nll`` take, where
    numpy data often brings int32)."""
    fn = resolve_name(cfg.name, DATASETS, "data")
    kwargs = dict(cfg.kwargs)
    if cfg.name == "csv" and task in ("binary", "multiclass"):
        # A classification loss reads the target as labels, numbers (0/1) included: never
        # standardised, class ids for cross_entropy.
        kwargs.setdefault("classification", True)
    result = call_with_section(fn, kwargs, "data", fixed={"split": split, "seed": cfg.seed})
    try:
        data = as_split(result, f"data {cfg.name!r} (split {split!r})")
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.name: {err}") from None
    if data is None or not isinstance(data.data, tuple):
        return data
    *inputs, targets = data.data
    dtype = None
    if task == "binary" and not targets.is_floating_point():
        dtype = torch.float32
    elif task == "multiclass" and targets.dtype in (
        torch.int8,
        torch.int16,
        torch.int32,
        torch.uint8,
    ):
        dtype = torch.int64
    if dtype is not None:
        data = DataSplit(
            (*inputs, targets.to(dtype)),
            data.standardizer,
            data.feature_names,
            data.classes,
            data.info,
        )
    return data


# Built-in callbacks by config name (none yet: a callback is usually the user's own).
CALLBACKS: dict[str, Callable[..., Any]] = {}


def build_callbacks(cfg: Config) -> list[Any]:
    """The callbacks ``cfg.callbacks`` names, each built with its section's other keys
    (``callbacks[i]`` in errors; a foreign run's are refused by the trust rule)."""
    built = []
    for i, section in enumerate(cfg.callbacks):
        where = f"callbacks[{i}]"
        factory = resolve_name(section.name, CALLBACKS, where)
        built.append(call_with_section(factory, section.kwargs, where))
    return built


def build_criterion(cfg: LossConfig) -> Callable[[Any, Any], torch.Tensor]:
    """The loss the config names: a built-in, a loss class (built with the section's other
    keys) or a function ``(outputs, targets) -> loss`` (other keys bound to it)."""
    if cfg.name in LOSSES:
        return call_with_section(LOSSES[cfg.name], cfg.kwargs, "loss")
    target = resolve_name(cfg.name, LOSSES, "loss")
    if inspect.isclass(target):
        return call_with_section(target, cfg.kwargs, "loss")
    if not callable(target):
        raise ConfigError(f"loss.name: {cfg.name!r} is a {type(target).__name__}, not callable")
    if cfg.kwargs:
        return functools.partial(target, **cfg.kwargs)
    return target


def _torch_class(module: Any, name: str, section: str) -> Any:
    lookup = {n.lower(): n for n in dir(module) if not n.startswith("_")}
    real = lookup.get(name.lower().replace("_", "")) or lookup.get(name.lower())
    if real is None or not inspect.isclass(getattr(module, real)):
        names = sorted(
            n for n in dir(module) if not n.startswith("_") and inspect.isclass(getattr(module, n))
        )
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{section}.name: torch has no {section} {name!r}{hint}")
    return getattr(module, real)


def _check_class_kwargs(
    cls: type, kwargs: Mapping[str, Any], section: str, *, given: tuple[str, ...]
) -> list[str]:
    """A key ``cls`` does not accept is a ``ConfigError`` naming ``section.key`` with a
    did-you-mean (torch's own error is a bare ``TypeError``), and so is a required argument
    the config leaves out. ``given``: the arguments purestep passes itself. Returns the
    accepted keyword names."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    params = [p for n, p in sig.parameters.items() if n not in given]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return []
    accepted = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{section}.{key}: unknown argument of {cls.__name__}{hint} "
                f"(it accepts: {', '.join(accepted) or 'nothing'})"
            )
    for p in params:
        if p.default is inspect.Parameter.empty and p.name in accepted and p.name not in kwargs:
            raise ConfigError(f"{section}.{p.name}: required by {cls.__name__}, but not given")
    return accepted


def build_torch_optimizer(
    cfg: OptimizerConfig, model: nn.Module, *, foreach: bool | None = False
) -> torch.optim.Optimizer:
    """The torch optimizer a config describes, param groups by regex on parameter names
    (parameters no group names form a last group with the top-level settings)."""
    cls = _torch_class(torch.optim, cfg.name, "optimizer")
    kwargs = dict(cfg.kwargs)
    accepted = _check_class_kwargs(cls, kwargs, "optimizer", given=("params",))
    if foreach is not None and "foreach" not in kwargs:
        kwargs["foreach"] = foreach
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    taken: set[str] = set()
    groups: list[dict[str, Any]] = []
    for i, group in enumerate(cfg.param_groups):
        try:
            pattern = re.compile(group.params)
        except re.error as err:
            raise ConfigError(
                f"optimizer.param_groups[{i}].params: {group.params!r} is not a regex: {err}"
            ) from None
        # torch keeps a group's unknown keys without a word: a typo would do nothing.
        for key in group.kwargs:
            if accepted and key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"optimizer.param_groups[{i}].{key}: not a setting of {cls.__name__}{hint} "
                    f"(settings: {', '.join(accepted)})"
                )
        members = [p for n, p in named if pattern.search(n) and n not in taken]
        taken |= {n for n, _ in named if pattern.search(n)}
        if not members:
            raise ConfigError(
                f"optimizer.param_groups[{i}].params: {group.params!r} matches no parameter "
                f"(parameters: {[n for n, _ in named][:8]}...)"
            )
        groups.append({**group.kwargs, "params": members})
    rest = [p for n, p in named if n not in taken]
    if rest or not groups:
        groups.append({"params": rest})
    try:
        return cls(groups, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer: torch.optim.{cls.__name__}({_show(kwargs)}): {err}") from err


def build_torch_scheduler(cfg: SchedulerConfig | None, optimizer: torch.optim.Optimizer) -> Any:
    """The torch lr scheduler a config describes (None when there is none)."""
    if cfg is None:
        return None
    cls = _torch_class(torch.optim.lr_scheduler, cfg.name, "scheduler")
    _check_class_kwargs(cls, cfg.kwargs, "scheduler", given=("optimizer",))
    try:
        return cls(optimizer, **cfg.kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"scheduler: {cls.__name__}({_show(cfg.kwargs)}): {err}") from err


def is_plateau(cfg: SchedulerConfig | None) -> bool:
    return cfg is not None and cfg.name.lower().replace("_", "") == "reducelronplateau"


@dataclass(frozen=True)
class BuiltOptimizer:
    """The functional optimizer of a config, and what the fit loop steps by hand."""

    optimizer: Optimizer
    plateau: tuple[Schedule, ...] | None
    plateau_monitor: str | None


def build_optimizer(
    cfg: Config, model: nn.Module, *, steps_per_epoch: int, has_val: bool
) -> BuiltOptimizer:
    """torch.optim optimizer + scheduler from the config, converted by ``from_torch`` (so
    names, defaults and arithmetic are torch's), then clipping, accumulation and the NaN
    policy around it.

    Order, outermost first: ``multi_steps`` (accumulation) > ``apply_if_finite`` (nan_policy
    skip) > ``clip_by_global_norm`` > the scheduled rule.
    """
    torch_opt = build_torch_optimizer(cfg.optimizer, model)
    torch_sched = build_torch_scheduler(cfg.scheduler, torch_opt)
    plateau = is_plateau(cfg.scheduler)
    k = cfg.train.accumulation_steps
    if torch_sched is None or plateau:
        every = None
    elif cfg.scheduler is not None and cfg.scheduler.every == "epoch":
        every = max(1, steps_per_epoch // k)
    else:
        every = 1
    if isinstance(torch_sched, torch.optim.lr_scheduler.OneCycleLR):
        # torch raises when a OneCycleLR steps past its total, i.e. after hours of
        # training: the run's length is known now, so say it before anything runs.
        epochs = cfg.train.epochs
        planned = epochs * steps_per_epoch // k if every == 1 else epochs
        if torch_sched.total_steps < planned:
            per = f"{steps_per_epoch} batches per epoch" + (f" / {k} accumulated" if k > 1 else "")
            raise ConfigError(
                f"scheduler: OneCycleLR's schedule has {torch_sched.total_steps} steps, but "
                f"the run steps it {planned} times ({epochs} epochs"
                + (f", {per})" if every == 1 else ", once per epoch)")
                + f"; set total_steps >= {planned} (or epochs and steps_per_epoch to match)"
            )
    try:
        opt: Any = from_torch(torch_opt, model, torch_sched, schedule_every=every)
    except ValueError as err:
        raise ConfigError(f"optimizer/scheduler: {err}") from err
    if cfg.train.clip_grad_norm is not None:
        opt = chain(clip_by_global_norm(cfg.train.clip_grad_norm), opt)
    if cfg.train.nan_policy == "skip":
        opt = apply_if_finite(opt)
    if k > 1:
        opt = multi_steps(opt, k)
    schedules = tuple(schedule_from_torch(torch_sched)) if plateau else None
    monitor = None
    if plateau:
        assert cfg.scheduler is not None
        monitor = cfg.scheduler.monitor or ("val_loss" if has_val else "loss")
    return BuiltOptimizer(opt, schedules, monitor)


def scale_loss(criterion: Callable[[Any, Any], torch.Tensor], k: int) -> Any:
    """``loss / k`` for gradient accumulation over ``k`` micro-batches (the textbook loop)."""
    if k == 1:
        return criterion

    def scaled(outputs: Any, targets: Any) -> torch.Tensor:
        return criterion(outputs, targets) / k

    scaled.__wrapped__ = criterion  # type: ignore[attr-defined]  # is_elementwise looks in
    return scaled


def batches_for_parity(cfg: Config) -> list[tuple[torch.Tensor, ...]]:
    """The training split's first epoch as a list of batches (for ``purestep parity``)."""
    from purestep.data.batching import Batches

    data = build_data(cfg.data, "train", infer_task(cfg))
    if data is None:
        raise ConfigError(f"data: {cfg.data.name!r} has no training split")
    return list(
        Batches(
            data.data,
            cfg.data.batch_size,
            seed=cfg.data.seed,
            shuffle=cfg.data.shuffle,
            drop_last=len(data) >= cfg.data.batch_size,
        ).epoch(0)
    )
