"""Sweep specifications: ``--set key=v1,v2`` axes, ``--seeds``, and member configs.

A sweep is the cartesian product of its axes, in the order given, seeds last::

    --set optimizer.lr=1e-3,1e-2 --seeds 0,1   ->   (1e-3, 0) (1e-3, 1) (1e-2, 0) (1e-2, 1)

Values are read as YAML, like ``purestep train --set`` reads them (``[32, 32]`` is a list,
``true`` a bool, ``1e-3`` a number); commas inside brackets, braces or quotes do not split
(``--set model.hidden=[32,32],[64]`` has two values). A member's config is the base config
with its settings applied by ``apply_overrides``, so a sweep member is exactly the config
``purestep train --set ...`` would run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from purestep.train.config import Config, ConfigError, apply_overrides, parse_config, plain

__all__ = ["Axis", "grid_settings", "member_config", "parse_axis", "parse_seeds", "split_values"]

Axis = tuple[str, list[Any]]
_OPEN = {"[": "]", "{": "}", "(": ")"}


def split_values(text: str, key: str) -> list[str]:
    """``"1e-3,[32,32],'a,b'"`` -> ``["1e-3", "[32,32]", "'a,b'"]``: commas at the top
    level only. Raises ``ConfigError`` naming ``key`` for unbalanced brackets or quotes."""
    items: list[str] = []
    depth: list[str] = []
    quote: str | None = None
    start = 0
    for i, ch in enumerate(text):
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth.append(_OPEN[ch])
        elif ch in "]})":
            if not depth or depth.pop() != ch:
                raise ConfigError(f"--set {key}: unbalanced {ch!r} in {text!r}")
        elif ch == "," and not depth:
            items.append(text[start:i])
            start = i + 1
    if quote is not None or depth:
        raise ConfigError(f"--set {key}: unclosed quote or bracket in {text!r}")
    items.append(text[start:])
    return items


def _value(text: str, key: str) -> Any:
    if not text.strip():
        raise ConfigError(f"--set {key}: empty value in the list (two commas in a row?)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: {text!r} is not valid YAML: {err}") from None
    return plain(value)  # `1e-3` (a string to YAML 1.1) is a number, as in a config file


def parse_axis(item: str) -> Axis:
    """``"optimizer.lr=1e-4,1e-3"`` -> ``("optimizer.lr", [0.0001, 0.001])``."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"--set {item!r}: expected key.path=v1,v2,..., e.g. optimizer.lr=1e-4,1e-3"
        )
    if not text.strip():
        raise ConfigError(f"--set {key}: no values (expected {key}=v1,v2,...)")
    return key, [_value(t, key) for t in split_values(text, key)]


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``--seeds``); ``"0-3"`` is ``0,1,2,3``."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ConfigError(f"--seeds: empty seed in {text!r}")
        lo, dash, hi = part.partition("-")
        bounds = (lo, hi) if dash and lo else (part,)
        try:
            numbers = [int(b) for b in bounds]
        except ValueError:
            raise ConfigError(
                f"--seeds: expected integers like 0,1,2 or 0-3, got {part!r}"
            ) from None
        if len(numbers) == 2 and numbers[1] < numbers[0]:
            raise ConfigError(f"--seeds: empty range {part!r}")
        seeds.extend(range(numbers[0], numbers[-1] + 1))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is repeated in {text!r}")
    return seeds


def grid_settings(axes: Sequence[Axis], seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The members' settings (``{"optimizer.lr": 1e-3, "train.seed": 0}``), product order.

    ``seeds`` is the axis ``train.seed`` (the model's initialisation and the step's random
    key; the data's own seed is ``data.seed``, which may be an axis like any other key).
    """
    keys = [k for k, _ in axes]
    for key, values in axes:
        if not values:
            raise ConfigError(f"--set {key}: no values")
        if keys.count(key) > 1:
            raise ConfigError(f"--set {key}: given more than once (put all values in one list)")
    all_axes = list(axes)
    if seeds is not None:
        if "train.seed" in keys:
            raise ConfigError("--seeds and --set train.seed=... both set train.seed; use one")
        if not seeds:
            raise ConfigError("--seeds: no seeds")
        all_axes.append(("train.seed", list(seeds)))
    if not all_axes:
        return [{}]
    return [
        dict(zip([k for k, _ in all_axes], combo, strict=True))
        for combo in itertools.product(*(values for _, values in all_axes))
    ]


def member_config(raw: Mapping[str, Any], settings: Mapping[str, Any]) -> Config:
    """The base config (raw mapping) with ``settings`` applied, validated."""
    overrides = []
    for key, value in settings.items():
        try:
            text = json.dumps(value)  # JSON is YAML: apply_overrides reads it back as is
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not a plain config value") from None
        overrides.append(f"{key}={text}")
    try:
        return parse_config(apply_overrides(raw, overrides))
    except ConfigError as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        raise ConfigError(f"{err} (member {shown})") from None
