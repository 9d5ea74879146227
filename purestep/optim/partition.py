"""Different settings for different parameters: ``multi_transform``, ``masked`` and the
torch-style ``param_groups=`` form.

``multi_transform({"decay": adamw(weight_decay=0.1), "no_decay": adamw(weight_decay=0.0)},
labels)`` gives each parameter (by name) a label and runs each label's transform or rule
on its own parameters, exactly as a torch optimizer runs each param group; ``param_groups``
builds that from a torch-like list of groups.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch

from purestep.optim.base import GradientTransformation, Optimizer, Params, Updates

__all__ = [
    "MaskedState",
    "MultiTransformState",
    "ParamSelector",
    "masked",
    "multi_transform",
    "param_groups",
]

# Which parameters: a list of names, a regex searched in the name, a predicate
# (name, tensor) -> bool, a Mapping name -> bool (optax's mask), or a callable
# params -> Mapping name -> bool (optax's callable mask).
ParamSelector = (
    Sequence[str]
    | str
    | Mapping[str, bool]
    | Callable[[str, torch.Tensor], bool]
    | Callable[[Params], Mapping[str, bool]]
)
Labels = Mapping[str, str] | Callable[[Params], Mapping[str, str]]


class MultiTransformState(NamedTuple):
    """One inner state per label, in the order the labels were given."""

    inner: dict[str, Any]


def _resolve_labels(labels: Labels, params: Params, known: Sequence[str]) -> dict[str, str]:
    mapping = labels(params) if callable(labels) else labels
    out = {}
    for name in params:
        if name not in mapping:
            raise ValueError(f"parameter {name!r} has no label")
        label = mapping[name]
        if label not in known:
            raise ValueError(f"parameter {name!r} has label {label!r}; known labels {list(known)}")
        out[name] = label
    return out


def multi_transform(transforms: Mapping[str, Any], labels: Labels) -> Any:
    """Run ``transforms[label]`` on the parameters labelled ``label``.

    Args:
        transforms: label -> ``Optimizer`` (all of them) or ``GradientTransformation``
            (all of them).
        labels: ``{param_name: label}`` or a function of the params returning it.

    Returns:
        An ``Optimizer`` if the transforms are rules, else a ``GradientTransformation``;
        its state is ``MultiTransformState``.
    """
    if not transforms:
        raise ValueError("multi_transform needs at least one transform")
    kinds = {type(t) for t in transforms.values()}
    if kinds not in ({Optimizer}, {GradientTransformation}):
        raise TypeError(
            "multi_transform takes all Optimizers or all GradientTransformations, got "
            f"{sorted(k.__name__ for k in kinds)}"
        )
    known = list(transforms)
    cache: dict[tuple[str, ...], dict[str, list[str]]] = {}

    def groups(params: Params) -> dict[str, list[str]]:
        key = tuple(params)
        if key not in cache:
            resolved = _resolve_labels(labels, params, known)
            cache[key] = {label: [n for n in params if resolved[n] == label] for label in known}
        return cache[key]

    def init(params: Params) -> MultiTransformState:
        parts = groups(params)
        return MultiTransformState(
            {label: t.init({n: params[n] for n in parts[label]}) for label, t in transforms.items()}
        )

    def run(grads: Updates, state: MultiTransformState, params: Params) -> tuple[Params, Any]:
        parts = groups(params)
        out: Params = {}
        inner = {}
        for label, t in transforms.items():
            sub_params = {n: params[n] for n in parts[label]}
            sub_grads = {n: grads[n] for n in parts[label]}
            fn = t.step if isinstance(t, Optimizer) else t.update
            result, inner[label] = fn(sub_grads, state.inner[label], sub_params)
            out.update(result)
        return {n: out[n] for n in params}, MultiTransformState(inner)

    if kinds == {Optimizer}:
        return Optimizer(init, run)
    return GradientTransformation(init, run)


class MaskedState(NamedTuple):
    """The inner transform's state over the selected parameters."""

    inner: Any


def _positional_arity(fn: Callable[..., Any]) -> set[int]:
    """Which of 1 and 2 positional arguments ``fn`` accepts."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: try both shapes
        return {1, 2}
    fits = set()
    for n in (1, 2):
        try:
            sig.bind(*range(n))
        except TypeError:
            continue
        fits.add(n)
    return fits


def _from_bools(mapping: Mapping[Any, Any], params: Params, what: str) -> list[str]:
    unknown = [n for n in mapping if n not in params]
    missing = [n for n in params if n not in mapping]
    if unknown or missing:
        raise ValueError(
            f"{what} must have one bool per parameter name; unknown names {unknown}, "
            f"missing names {missing}; parameters are {list(params)}"
        )
    for n, flag in mapping.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{what}[{n!r}] must be a bool, got {type(flag).__name__} ({flag!r})")
    return [n for n in params if mapping[n]]


def _select(selector: ParamSelector, params: Params) -> list[str]:
    """The parameter names (in ``params`` order) that ``selector`` selects."""
    if isinstance(selector, str):
        pattern = re.compile(selector)
        return [n for n in params if pattern.search(n)]
    if isinstance(selector, Mapping):
        return _from_bools(selector, params, "a mask Mapping")
    if callable(selector):
        arity = _positional_arity(selector)
        if arity == {1}:  # optax's callable mask: params -> {name: bool}
            result = cast(Any, selector)(params)
            if not isinstance(result, Mapping):
                raise TypeError(
                    "a one-argument mask is called with the params dict and must return a "
                    f"Mapping of bools by name, got {type(result).__name__}"
                )
            return _from_bools(result, params, "the mask function's result")
        if arity == {2}:
            return [n for n, p in params.items() if cast(Any, selector)(n, p)]
        raise TypeError(
            "a mask function must take either (params) -> {name: bool} or (name, tensor) -> "
            f"bool; {getattr(selector, '__name__', selector)!r} accepts "
            f"{'both' if arity else 'neither'}"
        )
    if isinstance(selector, Sequence) and not isinstance(selector, bytes):
        names = list(selector)
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise TypeError(f"a mask list holds parameter names (str), got {bad[:3]!r}")
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"unknown parameter names {unknown}; parameters are {list(params)}")
        return names
    raise TypeError(
        "a mask is a list of names, a regex, a (name, tensor) -> bool predicate, a Mapping "
        "of bools by name, or a function params -> Mapping of bools; got "
        f"{type(selector).__name__}"
    )


def masked(inner: Any, mask: ParamSelector) -> Any:
    """Apply ``inner`` only to the parameters ``mask`` selects.

    ``mask``: a list of names, a regex searched in each name, a predicate ``(name,
    tensor) -> bool``, a Mapping ``{name: bool}`` (optax's mask: one bool per parameter), or
    a function ``params -> {name: bool}`` (optax's callable mask, e.g. ``lambda p: {n:
    t.ndim > 1 for n, t in p.items()}``). Anything else is a ``TypeError``.

    A masked ``GradientTransformation`` passes the other updates through unchanged; a masked
    ``Optimizer`` leaves the other parameters unchanged (as if frozen).
    """
    if not isinstance(inner, Optimizer | GradientTransformation):
        raise TypeError(
            f"masked wraps an Optimizer or GradientTransformation, got {type(inner).__name__}"
        )
    if not isinstance(mask, str | Mapping | Sequence) and not callable(mask):
        _select(mask, {})  # raises the TypeError that lists what a mask may be
    cache: dict[tuple[str, ...], list[str]] = {}

    def chosen(params: Params) -> list[str]:
        key = tuple(params)
        if key not in cache:
            cache[key] = _select(mask, params)
        return cache[key]

    def init(params: Params) -> MaskedState:
        return MaskedState(inner.init({n: params[n] for n in chosen(params)}))

    def run(grads: Updates, state: MaskedState, params: Params) -> tuple[Params, MaskedState]:
        names = chosen(params)
        fn = inner.step if isinstance(inner, Optimizer) else inner.update
        result, new_inner = fn(
            {n: grads[n] for n in names}, state.inner, {n: params[n] for n in names}
        )
        passthrough = params if isinstance(inner, Optimizer) else grads
        return {n: result.get(n, passthrough[n]) for n in params}, MaskedState(new_inner)

    if isinstance(inner, Optimizer):
        return Optimizer(init, run)
    return GradientTransformation(init, run)


def param_groups(
    factory: Callable[..., Any], groups: Sequence[Mapping[str, Any]], **defaults: Any
) -> Any:
    """Torch-style param groups: ``factory(**defaults, **group_overrides)`` per group.

    Args:
        factory: a rule factory such as ``purestep.optim.adamw``.
        groups: ``[{"params": selector, **overrides}, ...]``; ``selector`` is a list of
            names, a regex searched in the name, or a predicate ``(name, tensor) -> bool``.
            Parameters no group selects form a last group with the defaults alone; a
            parameter two groups select is an error, as in torch.
        **defaults: the factory's arguments shared by all groups.

    Returns:
        ``multi_transform`` over groups labelled ``"group0"``, ``"group1"``, ... (and
        ``"rest"``), e.g. ``param_groups(adamw, [{"params": r"bias|norm", "weight_decay":
        0.0}], lr=1e-3, weight_decay=0.05)``.
    """
    if not groups:
        raise ValueError("param_groups needs at least one group")
    rules: dict[str, Any] = {}
    selectors: list[ParamSelector] = []
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping) or "params" not in group:
            raise ValueError(
                f"param group {i} must be a dict with a 'params' selector, got {group!r}"
            )
        overrides = {k: v for k, v in group.items() if k != "params"}
        rules[f"group{i}"] = factory(**{**defaults, **overrides})
        selectors.append(group["params"])
    rules["rest"] = factory(**defaults)

    def labels(params: Params) -> dict[str, str]:
        out: dict[str, str] = {}
        for i, selector in enumerate(selectors):
            for name in _select(selector, params):
                if name in out:
                    raise ValueError(
                        f"some parameters appear in more than one parameter group: {name!r} "
                        f"(groups {out[name][5:]} and {i})"
                    )
                out[name] = f"group{i}"
        for name in params:
            out.setdefault(name, "rest")
        return out

    return multi_transform(rules, labels)
