r"""User-defined factors: ``LambdaLR`` and ``MultiplicativeLR``.

``lr_lambda`` is called with the epoch: a Python ``int`` in eager CPU code (as in torch), a
0-d **float64** tensor holding that integer under ``torch.compile``/``vmap``/on an
accelerator (float64 so that ``0.95 ** epoch`` or ``epoch / 10`` stay in float64; an int64
tensor would promote them to float32). To compile, write it with operators and torch
functions (``torch.clamp``, ``torch.where``), not ``min``/``if`` on the epoch. Note that
``c / epoch`` (a Python number over the tensor) is ``epoch.reciprocal() * c`` in torch, two
roundings; ``torch.div(torch.tensor(c, dtype=torch.float64), epoch)`` rounds like Python.

A lambda that cannot be traced (Python branching on the epoch, ``float(epoch)``,
``math.cos``, ``min``/``max``: Hugging Face's ``get_*_schedule_with_warmup``) still
compiles: it is found out once, eagerly, by calling it on a value-less (meta) epoch, and is
then run outside the graph, as an opaque op (``purestep::host_lr_factor``) that calls it
eagerly with the real epoch tensor at each step. The lr is a tensor input of the graph
either way, so a changing lr never recompiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from purestep.optim._scalar_ops import Scalar
from purestep.optim.schedules._base import Schedule
from purestep.optim.schedules._epoch import epoch_schedule

__all__ = ["lambda_lr", "multiplicative_lr"]

LrLambda = Callable[[Any], Any]


def _check_callable(lr_lambda: Any) -> LrLambda:
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")
    return _traced_or_host(lr_lambda)


# The lambdas run outside the graph, by index (an op's arguments are tensors and numbers).
_HOST_LAMBDAS: list[LrLambda] = []


@torch.library.custom_op("purestep::host_lr_factor", mutates_args=())
def host_lr_factor(epoch: torch.Tensor, index: int) -> torch.Tensor:
    """``_HOST_LAMBDAS[index](epoch)`` run eagerly, as a 0-d float64 tensor."""
    value = _HOST_LAMBDAS[index](epoch.clone())
    return torch.as_tensor(value, dtype=torch.float64, device=epoch.device).reshape(()).clone()


@host_lr_factor.register_fake
def _host_lr_factor_fake(epoch: torch.Tensor, index: int) -> torch.Tensor:
    return torch.empty((), dtype=torch.float64, device=epoch.device)


def _host_lr_factor_vmap(info: Any, in_dims: Any, epoch: torch.Tensor, index: int) -> Any:
    if in_dims[0] is None:
        return host_lr_factor(epoch, index), None
    members = epoch.movedim(in_dims[0], 0)
    return torch.stack([host_lr_factor(e, index) for e in members]), 0


host_lr_factor.register_vmap(_host_lr_factor_vmap)


def _traced_or_host(fn: LrLambda) -> LrLambda:
    """``fn`` itself if it computes on a value-less (meta) epoch tensor, i.e. torch can
    trace it; else a function that runs it outside the graph on a tensor epoch."""
    try:
        fn(torch.zeros((), dtype=torch.float64, device="meta"))
        return fn
    except Exception:  # any failure on a meta tensor: it needs the epoch's value
        pass
    index = len(_HOST_LAMBDAS)
    _HOST_LAMBDAS.append(fn)

    def host(epoch: Any) -> Any:
        if isinstance(epoch, torch.Tensor):
            return host_lr_factor(epoch.to(torch.float64), index)
        return fn(epoch)  # eager CPU: a Python int, as torch calls it

    return host


def lambda_lr(lr_lambda: LrLambda) -> Schedule:
    r"""The base lr times a function of the epoch: ``torch.optim.lr_scheduler.LambdaLR``.

    .. math::

        \eta_t = \eta_0 \cdot \texttt{lr\_lambda}(t) \quad (t \ge 0, \text{ construction
        included})

    Not chainable (computed from the base lr). One ``Schedule`` per param group: torch's
    list of lambdas becomes one ``lambda_lr`` per group.

    Args:
        lr_lambda: factor as a function of the epoch (see the module doc for its argument).

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    fn = _check_callable(lr_lambda)

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        return base_lr * fn(epoch)

    return epoch_schedule("LambdaLR", get_lr)


def multiplicative_lr(lr_lambda: LrLambda) -> Schedule:
    r"""The current lr times a function of the epoch, every epoch:
    ``torch.optim.lr_scheduler.MultiplicativeLR``.

    .. math::

        \eta_0 = \text{the current lr}, \qquad
        \eta_t = \eta_{t-1} \cdot \texttt{lr\_lambda}(t) \quad (t \ge 1)

    ``reset`` (no closed form in torch) multiplies the current lr by ``lr_lambda(0)``.

    Args:
        lr_lambda: factor as a function of the epoch (see the module doc for its argument).

    Returns:
        A ``Schedule`` whose state is ``ScheduleState``.
    """
    fn = _check_callable(lr_lambda)

    def get_lr(base_lr: Scalar, lr: Scalar, epoch: Scalar, is_initial: bool) -> Scalar:
        return lr if is_initial else lr * fn(epoch)

    return epoch_schedule("MultiplicativeLR", get_lr)
