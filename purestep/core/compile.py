"""``purestep.compile``: the pure step under ``torch.compile(fullgraph=True)``."""

from __future__ import annotations

import types
from typing import Any, TypeVar

import torch

from purestep.core.step import EvalStep, TrainStep

__all__ = ["compile"]

StepT = TypeVar("StepT", TrainStep, EvalStep)


def compile(
    step: StepT,
    *,
    cudagraphs: bool = False,
    dynamic: bool | None = False,
    backend: str = "inductor",
    options: dict[str, Any] | None = None,
) -> StepT:
    """The same step with its pure function compiled by ``torch.compile(fullgraph=True)``.

    Checks and the RNG bracket stay in Python around the compiled graph, so a graph break
    is an error, never a silent fallback, and changing hyperparameters held in the state
    (lr ...) never recompiles.

    Args:
        step: from ``make_train_step`` or ``make_eval_step``.
        cudagraphs: replay the step as a CUDA graph (inductor's ``triton.cudagraphs``); for
            states on a CUDA device.
        dynamic: passed to ``torch.compile`` (False: specialize on shapes).
        backend: ``torch.compile`` backend.
        options: extra inductor options.

    Returns:
        A step of the same kind whose ``compiled`` attribute is True.

    Random ops use inductor's ``fallback_random`` so that a compiled step draws exactly the
    dropout masks the eager step draws from the same key.
    """
    if not isinstance(step, TrainStep | EvalStep):
        raise TypeError(
            "purestep.compile takes a step from make_train_step/make_eval_step, got "
            f"{type(step).__name__}; use torch.compile for other functions"
        )
    if step.compiled:
        raise ValueError("this step is already compiled")
    inductor_options: dict[str, Any] = {"fallback_random": True}
    if cudagraphs:
        inductor_options["triton.cudagraphs"] = True
    inductor_options.update(options or {})
    # Dynamo caches compiled graphs per code object; every TrainStep shares `_pure`'s code,
    # so give each compiled step its own copy to keep steps from evicting each other
    # (cache_size_limit) or counting as recompiles of one another.
    pure = type(step)._pure
    fresh = types.FunctionType(
        pure.__code__.replace(),
        pure.__globals__,
        pure.__name__,
        pure.__defaults__,
        pure.__closure__,
    )
    bound = types.MethodType(fresh, step)
    kwargs: dict[str, Any] = {"fullgraph": True, "dynamic": dynamic, "backend": backend}
    if backend == "inductor":
        kwargs["options"] = inductor_options
    return step._with_impl(torch.compile(bound, **kwargs))
