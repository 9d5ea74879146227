"""Every key a run config takes, generated from the pydantic schema (``purestep config
--schema``), so the reference in the README cannot drift from the code.

Three parts: the schema's keys (path, type with bounds, default); the keyword arguments of
each built-in model, dataset and loss (read off their signatures: what a section's other
keys may be); the ``purestep tune`` search-space syntax.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from purestep.train._space import DISTRIBUTIONS
from purestep.train.config import Config

__all__ = ["SPACE_SYNTAX", "config_reference"]

# What each distribution of a tune space takes (checked against DISTRIBUTIONS in tests).
SPACE_SYNTAX = {
    "log_uniform": "[low, high]   a float drawn on a log scale (0 < low < high)",
    "uniform": "[low, high]   a float (low < high)",
    "int": "[low, high]   an integer, bounds included",
    "log_int": "[low, high]   an integer on a log scale (0 < low < high)",
    "choice": "[a, b, ...]   one of the values (numbers, strings, lists, mappings)",
}

# What a section's keys beyond its schema are, for the sections that pass them on.
_OTHER_KEYS = {
    "model": "keyword arguments of the model function (built-ins below)",
    "data": "keyword arguments of the data function, called fn(split=, seed=, ...)",
    "loss": "keyword arguments of the loss (a class: its constructor's)",
    "optimizer": "keyword arguments of the torch.optim class (checked against it)",
    "optimizer.param_groups[]": "settings of the optimizer for the matched parameters",
    "scheduler": "keyword arguments of the torch.optim.lr_scheduler class",
}


def _bounds(metadata: Any) -> str:
    parts = []
    for m in metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(m, attr, None)
            if value is not None and not callable(value):
                parts.append(f" {sign} {value:g}")
        inner = getattr(m, "metadata", None)  # a FieldInfo inside Annotated
        if isinstance(inner, list):
            parts.append(_bounds(inner))
    return "".join(parts)


def _type_name(ann: Any, metadata: Any = ()) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0], [*args[1:], *metadata])
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        none = " or null" if type(None) in args else ""
        return " or ".join(names) + none + _bounds(metadata)
    if origin is Literal:
        return "one of " + " | ".join(str(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "section"
    name = getattr(ann, "__name__", str(ann))
    return {"str": "str", "int": "int", "float": "float", "bool": "bool"}.get(name, name) + (
        _bounds(metadata)
    )


def _section_of(ann: Any) -> tuple[type[BaseModel] | None, bool]:
    """The BaseModel an annotation holds (``X``, ``X | None``, ``list[X]``), and whether
    it is a list of them."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, False
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is list and args:
        inner, _ = _section_of(args[0])
        return inner, True
    if origin in (Union, types.UnionType):
        for a in args:
            inner, many = _section_of(a)
            if inner is not None:
                return inner, many
    return None, False


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""
        return f" = {json.dumps(value)}"
    if field.default is PydanticUndefined:
        return ", required"
    return f" = {json.dumps(field.default)}"


def _keys(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        section, many = _section_of(field.annotation)
        if section is not None:
            optional = type(None) in typing.get_args(field.annotation)
            note = "optional section" if optional else "section"
            if many:
                note = "list of sections" + _default(field).replace("[]", "[] (none)")
                path += "[]"
            yield path, note
            yield from _keys(section, path + ".")
            continue
        yield path, _type_name(field.annotation, field.metadata) + _default(field)
    top = prefix.rstrip(".")
    if top in _OTHER_KEYS:
        yield f"{top}.<other keys>", _OTHER_KEYS[top]


def _signature(fn: Callable[..., Any], skip: tuple[str, ...] = ()) -> str:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return "(...)"
    parts = []
    for p in sig.parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = "" if p.default is p.empty else f"={p.default!r}"
        parts.append(f"{p.name}{default}")
    return "(" + ", ".join(parts) + ")"


def _builtins() -> Iterator[str]:
    from purestep.data.datasets import DATASETS
    from purestep.models import MODELS
    from purestep.train.build import LOSSES

    for section, registry, skip in (
        ("model", MODELS, ("seed",)),
        ("data", DATASETS, ("split", "seed")),
        ("loss", LOSSES, ("size_average", "reduce")),
    ):
        for name in sorted(registry):
            fn = registry[name]
            yield f"{section}: {name}{_signature(fn, skip)}"


def config_reference() -> str:
    """The config reference ``purestep config --schema`` prints (plain text)."""
    rows = list(_keys(Config, ""))
    width = max(len(path) for path, _ in rows) + 2
    lines = ["# Run config keys (YAML; --set KEY.PATH=VALUE overrides any of them)"]
    lines += [f"{path:<{width}}{what}".rstrip() for path, what in rows]
    lines += ["", "# Built-in names and their keyword arguments (a section's other keys)"]
    lines += list(_builtins())
    lines += [
        "",
        "# purestep tune --space FILE: one line per config key path, one distribution each",
        "#   optimizer.lr: {log_uniform: [1e-5, 1e-1]}",
    ]
    lines += [f"{name:<13}{SPACE_SYNTAX[name]}" for name in DISTRIBUTIONS]
    return "\n".join(lines) + "\n"
