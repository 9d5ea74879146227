"""Search spaces for ``purestep tune``, read from YAML and checked before any trial.

```yaml
optimizer.lr: {log_uniform: [1e-5, 1e-1]}
optimizer.weight_decay: {uniform: [0.0, 0.1]}
model.hidden: {choice: [[32], [64, 64]]}
data.batch_size: {int: [16, 128]}          # or {log_int: [16, 256]}
```

Each key is a config key path (as ``--set`` takes it); each value names one distribution.
A bad space is a ``ConfigError`` naming the key: an unknown distribution, bounds that are
not two numbers, ``low >= high``, log bounds that are not > 0, an empty or repeated
choice list. Whether the config accepts the key and its values is checked by the caller
(it builds the config at the space's values).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from purestep.train.config import ConfigError, plain

__all__ = ["DISTRIBUTIONS", "Param", "load_space", "parse_space"]

DISTRIBUTIONS = ("log_uniform", "uniform", "int", "log_int", "choice")


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


@dataclass(frozen=True)
class Param:
    """One dimension of the space: ``key`` drawn from ``kind`` over ``[low, high]`` or
    from ``choices``."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def encoded(self) -> bool:
        """Choices Optuna cannot store as they are (lists, mappings) go as JSON text."""
        return self.kind == "choice" and not all(_primitive(c) for c in self.choices)

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial draws (and records under ``key``)."""
        if self.kind == "choice":
            if self.encoded:
                return json.loads(
                    trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices])
                )
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(
                self.key, int(self.low or 0), int(self.high or 0), log=self.kind == "log_int"
            )
        return trial.suggest_float(
            self.key,
            float(self.low or 0.0),
            float(self.high or 0.0),
            log=self.kind == "log_uniform",
        )

    def decode(self, stored: Any) -> Any:
        """A trial's stored parameter value as the config value."""
        return json.loads(stored) if self.encoded else stored

    def corners(self) -> list[Any]:
        """Values that must all make a valid config: the bounds, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def _number(value: Any, key: str, what: str, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"space: {key}: {what} must be a number, got {value!r}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise ConfigError(f"space: {key}: {what} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"space: {key}: {what} must be finite, got {value!r}")
    return int(value) if integer else float(value)


def _param(key: Any, spec: Any) -> Param:
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"space: {key!r}: expected a config key path like optimizer.lr")
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(
            f"space: {key}: expected one distribution, e.g. {{log_uniform: [1e-5, 1e-1]}} "
            f"(one of {', '.join(DISTRIBUTIONS)}), got {spec!r}"
        )
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(
            f"space: {key}: unknown distribution {kind!r} (known: {', '.join(DISTRIBUTIONS)})"
        )
    if not isinstance(args, list):
        raise ConfigError(f"space: {key}: {kind} takes a list, got {args!r}")
    args = plain(args)  # `1e-5` (a string to YAML 1.1) is a number
    if kind == "choice":
        if not args:
            raise ConfigError(f"space: {key}: choice needs at least one value, got []")
        seen = [json.dumps(a, sort_keys=True) for a in args]
        if len(set(seen)) != len(seen):
            raise ConfigError(f"space: {key}: a choice is repeated in {args!r}")
        return Param(key, kind, choices=tuple(args))
    if len(args) != 2:
        raise ConfigError(
            f"space: {key}: {kind} takes [low, high], got {len(args)} value(s): {args!r}"
        )
    integer = kind in ("int", "log_int")
    low = _number(args[0], key, "low", integer)
    high = _number(args[1], key, "high", integer)
    if not low < high:
        raise ConfigError(f"space: {key}: low must be < high, got [{low}, {high}]")
    if kind.startswith("log_") and low <= 0:
        raise ConfigError(f"space: {key}: {kind} bounds must be > 0, got [{low}, {high}]")
    return Param(key, kind, low, high)


def parse_space(raw: Any) -> list[Param]:
    """The parameters of a loaded space document (a mapping key -> distribution)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "space: expected a mapping of config keys to distributions, e.g. "
            f"optimizer.lr: {{log_uniform: [1e-5, 1e-1]}}, got {type(raw).__name__}"
        )
    if not raw:
        raise ConfigError("space: no parameters")
    return [_param(k, v) for k, v in raw.items()]


def load_space(space: str | Path | Mapping[str, Any] | Sequence[Param]) -> list[Param]:
    """A space from a YAML file, a mapping, or a list of ``Param``s."""
    if isinstance(space, str | Path):
        path = Path(space)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read space {str(path)!r}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        return parse_space(raw)
    if isinstance(space, Mapping):
        return parse_space(space)
    params = list(space)
    if not params or not all(isinstance(p, Param) for p in params):
        raise ConfigError("space: expected a YAML file, a mapping or a non-empty list of Param")
    return params
