"""Scalar-or-tensor helpers, so that every schedule formula is written once.

In eager CPU code the state is read back as Python numbers (``host_value``) and these
helpers are plain Python (``if``, ``math.cos``, ``**``): the arithmetic is then literally
torch.optim.lr_scheduler's, so the learning rates are bitwise equal. When a value is a
tensor (``torch.compile``, ``vmap``, an accelerator) the same call becomes tensor arithmetic:
``select`` evaluates both branches and keeps one with ``torch.where``, so nothing branches
on a tensor's value and a compiled step never recompiles as the epoch advances.

Rounding: ``+ - * /`` round the same in Python floats and float64 tensors. ``math.cos`` and
``**`` match float64 ``torch.cos`` / tensor-tensor ``torch.pow`` compiled by inductor on the
CPU bitwise (checked in the tests); eager ``torch.cos`` on the CPU (SLEEF, 1 ulp) and CUDA's
may differ in the last bit, so on those paths cosine schedules are equal up to rounding.
``torch.pow(tensor, python_float)`` has special cases (``x*x*x`` for 3 ...) that round
differently, hence ``pow_`` below always passes the exponent as a float64 tensor; and
``python_float / tensor`` is ``tensor.reciprocal() * python_float`` in torch (two
roundings), hence ``div``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch

from purestep._compat import pytree
from purestep.optim._scalar_ops import Scalar, host_value

T = TypeVar("T")

__all__ = [
    "Init",
    "as_state",
    "cos",
    "count_at_most",
    "div",
    "epoch_value",
    "f64",
    "i64",
    "initial_lr_of",
    "integer",
    "is_in",
    "kind_of",
    "logical_and",
    "logical_or",
    "lookup",
    "number",
    "one_cycles_of",
    "pow_",
    "read",
    "require",
    "select",
    "where",
]


# ---------------------------------------------------------------------------- reading state


def read(t: torch.Tensor) -> Scalar:
    """A state value: a Python number in eager CPU code, else the tensor itself."""
    return host_value(t)


def epoch_value(t: torch.Tensor) -> Scalar:
    """An integer state value (epoch, counter) ready for arithmetic with Python floats: a
    Python ``int`` in eager CPU code, else the tensor as float64 (an int64 tensor times a
    Python float would silently compute in float32)."""
    v = read(t)
    return v.to(torch.float64) if isinstance(v, torch.Tensor) else v


def as_state(value: Scalar, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-d tensor with ``like``'s dtype and device (new state leaves)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def i64(value: int) -> torch.Tensor:
    """A new 0-d int64 state leaf."""
    return torch.tensor(value, dtype=torch.int64)


def f64(value: float) -> torch.Tensor:
    """A new 0-d float64 state leaf (float64 holds a Python float exactly)."""
    return torch.tensor(float(value), dtype=torch.float64)


# --------------------------------------------------------------------------- control flow


def _dtype(x: Any) -> torch.dtype:
    if isinstance(x, torch.Tensor):
        return x.dtype
    if isinstance(x, bool):
        return torch.bool
    if isinstance(x, int):
        return torch.int64
    return torch.float64


def _where_leaf(cond: torch.Tensor, x: Any, y: Any) -> Any:
    if x is y:
        return x
    dtype = torch.promote_types(_dtype(x), _dtype(y))
    device = next((v.device for v in (x, y) if isinstance(v, torch.Tensor)), cond.device)
    return torch.where(
        cond,
        torch.as_tensor(x, dtype=dtype, device=device),
        torch.as_tensor(y, dtype=dtype, device=device),
    )


def where(cond: torch.Tensor, a: T, b: T) -> T:
    """``torch.where`` leaf by leaf over two pytrees of the same structure (numbers allowed:
    a Python float becomes float64, an int int64)."""
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    if sa != sb:
        raise ValueError(f"select: branches have different structures: {sa} vs {sb}")
    out: T = pytree.tree_unflatten(
        [_where_leaf(cond, x, y) for x, y in zip(la, lb, strict=True)], sa
    )
    return out


def select(cond: Any, if_true: Callable[[], T], if_false: Callable[[], T]) -> T:
    """``if_true() if cond else if_false()`` for a Python bool (only one branch runs, as in
    torch); for a tensor ``cond`` both run and ``torch.where`` picks, leaf by leaf."""
    if isinstance(cond, torch.Tensor):
        return where(cond, if_true(), if_false())
    return if_true() if cond else if_false()


def logical_and(a: Any, b: Any) -> Any:
    """``a and b`` (both evaluated) for bools, ``torch.logical_and`` for tensors."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.logical_and(torch.as_tensor(a), torch.as_tensor(b))
    return bool(a) and bool(b)


def logical_or(a: Any, b: Any) -> Any:
    """``a or b`` (both evaluated) for bools, ``torch.logical_or`` for tensors."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.logical_or(torch.as_tensor(a), torch.as_tensor(b))
    return bool(a) or bool(b)


def is_in(x: Scalar, values: Iterable[int]) -> Any:
    """``x in values``."""
    values = list(values)
    if not isinstance(x, torch.Tensor):
        return x in values
    found = torch.zeros_like(x, dtype=torch.bool)
    for v in values:
        found = torch.logical_or(found, x == v)
    return found


def count_at_most(sorted_values: Sequence[int], x: Scalar) -> Any:
    """How many of ``sorted_values`` are ``<= x``: ``bisect.bisect_right(sorted_values, x)``."""
    if not isinstance(x, torch.Tensor):
        return sum(1 for v in sorted_values if v <= x)
    count = torch.zeros_like(x, dtype=torch.int64)
    for v in sorted_values:
        count = count + (x >= v).to(torch.int64)
    return count


def lookup(key: Scalar, table: Mapping[Any, float], default: float) -> Scalar:
    """``table.get(key, default)``."""
    if not isinstance(key, torch.Tensor):
        return table.get(key, default)
    out = torch.full_like(key, default, dtype=torch.float64)
    for k, v in table.items():
        out = torch.where(key == k, torch.full_like(out, v), out)
    return out


# ----------------------------------------------------------------------------------- math


def cos(x: Scalar) -> Scalar:
    """``math.cos`` for a Python number, ``torch.cos`` for a tensor."""
    if isinstance(x, torch.Tensor):
        return torch.cos(x)
    return math.cos(x)


def div(a: Scalar, b: Scalar) -> Scalar:
    """``a / b``, correctly rounded also for a Python ``a`` over a tensor ``b`` (torch's
    ``Tensor.__rtruediv__`` computes ``b.reciprocal() * a``: two roundings)."""
    if isinstance(b, torch.Tensor) and not isinstance(a, torch.Tensor):
        return torch.div(torch.as_tensor(a, dtype=b.dtype, device=b.device), b)
    return a / b


def pow_(base: Scalar, exponent: Scalar) -> Scalar:
    """``base ** exponent``: Python's for numbers, else float64 tensor-tensor ``torch.pow``
    (which rounds like Python's; a Python exponent would hit torch's special cases)."""
    if not isinstance(base, torch.Tensor) and not isinstance(exponent, torch.Tensor):
        return base**exponent
    device = next(v.device for v in (base, exponent) if isinstance(v, torch.Tensor))
    return torch.pow(
        torch.as_tensor(base, dtype=torch.float64, device=device),
        torch.as_tensor(exponent, dtype=torch.float64, device=device),
    )


# ------------------------------------------------------------------------------ validation


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` (torch's messages, verbatim)."""
    if not condition:
        raise ValueError(message)


def number(name: str, value: Any) -> float | int:
    """``value`` unchanged if it is a real Python number (not a bool), else ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r:.40})")
    return value


def integer(name: str, value: Any) -> int:
    """``value`` unchanged if it is a Python ``int`` (not a bool), else ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r:.40})")
    return value


# ------------------------------------------------------------------ facts for composites


class Init:
    """A ``Schedule.init`` that also tells ``sequential_lr``/``chained_scheduler`` what kind
    of schedule it belongs to and whether constructing it overwrites the group's
    ``initial_lr`` (torch's ``OneCycleLR`` does: later schedulers take it as their base)."""

    __slots__ = ("fn", "initial_lr", "kind", "one_cycles")

    def __init__(
        self,
        fn: Callable[[float, float], tuple[Any, float]],
        kind: str,
        initial_lr: float | None = None,
        one_cycles: int = 0,
    ) -> None:
        self.fn = fn
        self.kind = kind
        self.initial_lr = initial_lr
        self.one_cycles = one_cycles  # OneCycleLR schedules in this (composite) schedule

    def __call__(self, base_lr: float, lr: float) -> tuple[Any, float]:
        return self.fn(base_lr, lr)

    def __repr__(self) -> str:
        return f"<init of {self.kind}>"


def kind_of(schedule: Any) -> str:
    """The torch class a schedule mirrors (``""`` for a user-made ``Schedule``)."""
    return str(getattr(schedule.init, "kind", ""))


def one_cycles_of(schedule: Any) -> int:
    """How many ``one_cycle_lr`` schedules ``schedule`` is or contains."""
    return int(getattr(schedule.init, "one_cycles", 0))


def initial_lr_of(schedule: Any) -> float | None:
    """The ``initial_lr`` that constructing this schedule writes into the group, if any."""
    value = getattr(schedule.init, "initial_lr", None)
    return None if value is None else float(value)
