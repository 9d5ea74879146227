"""The efficiency figures tutorials report for a trained model: parameters, size, and
inference latency per batch and throughput.

Latency is the forward pass alone (eval mode, no autograd) on one batch of the given
data, timed over ``repeats`` calls after ``warmup`` untimed ones; the median is reported
(robust to a stray slow call on a busy machine), throughput is batch size / median.
On CUDA each call is synchronised before the clock is read.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch.func import functional_call

from purestep.core.state import TrainState

if TYPE_CHECKING:
    from purestep.train.run import Experiment

__all__ = ["efficiency", "model_size"]


def model_size(state: TrainState) -> dict[str, Any]:
    """Parameter counts and the bytes of parameters + buffers (in MB, 2**20 bytes) of a
    state: what the model weighs on disk and in memory, optimizer state excluded."""
    params = state.params.values()
    total = sum(p.numel() for p in params)
    size = sum(t.numel() * t.element_size() for t in (*params, *state.buffers.values()))
    return {"parameters": total, "size_mb": size / 2**20}


def _first_batch(data: Iterable[Any]) -> tuple[Any, ...]:
    for batch in data:
        if not isinstance(batch, tuple | list) or len(batch) < 2:
            raise ValueError(
                f"efficiency: expected batches (inputs..., targets), got {type(batch).__name__}"
            )
        return tuple(batch)
    raise ValueError("efficiency: the data yielded no batch")


def efficiency(
    exp: Experiment,
    state: TrainState,
    data: Iterable[Any] | None = None,
    *,
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, Any]:
    """Parameters, size and inference speed of ``state`` (the weights of ``exp.model``).

    Args:
        exp: the experiment the state belongs to (its model is the forward's skeleton;
            it is left as it was: the weights are passed to ``functional_call``).
        state: trained (or initial) weights, on ``exp.device``.
        data: batches ``(inputs..., targets)`` to time on (the first one is used);
            default: the experiment's validation batches, else its training batches.
        repeats, warmup: timed and untimed forward calls.

    Returns:
        ``parameters``, ``trainable_parameters``, ``size_mb``, ``batch_size``, ``device``,
        ``latency_ms`` (median per batch), ``throughput`` (examples per second),
        ``repeats``.
    """
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    source = data if data is not None else (exp.val_data or exp.train_data)
    batch = _first_batch(source)
    inputs = tuple(t.to(exp.device) for t in batch[:-1])
    n = len(inputs[0])
    weights = {**state.params, **state.buffers}
    model = exp.model
    was_training = model.training
    sync = exp.device.type == "cuda"
    times: list[float] = []
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                if sync:
                    torch.cuda.synchronize(exp.device)
                start = time.perf_counter()
                functional_call(model, weights, inputs)
                if sync:
                    torch.cuda.synchronize(exp.device)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    latency = statistics.median(times)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        **model_size(state),
        "trainable_parameters": trainable,
        "batch_size": n,
        "device": str(exp.device),
        "latency_ms": latency * 1e3,
        "throughput": n / latency if latency > 0 else float("inf"),
        "repeats": repeats,
    }
