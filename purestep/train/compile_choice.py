"""``train.compile: auto``: compile the step only when it pays for itself on this run.

Compiling costs seconds to minutes once (tracing, AOT autograd, inductor's code generation
and C++ builds) and then makes each step faster. A small job (a tutorial's tabular task,
a few hundred steps of a small MLP) finishes sooner eager; a long one sooner compiled. The
choice is made once, before training, from what is known then:

* ``steps``: the train-step calls the run will make (epochs x batches, minus what a resume
  has done);
* ``eager_step_s``: the median of a few timed eager steps of this very step on the first
  batch (the step is pure, so timing it changes nothing);
* the expected compile cost, cold or warm: a step compiled before on this machine (same
  model, optimizer, loss, batch shapes, torch) finds its kernels in torch's on-disk caches.

It compiles when ``steps x eager_step_s x (1 - 1/SPEEDUP)`` (the time compiling would
save) exceeds the expected compile cost. The constants are measured on the 2-core
benchmark machine (README, Performance): W1 (6 parameter tensors) 15.7 s cold, 3.1 s warm;
W2 (98 tensors) 47 s cold, 6.6 s warm; ResNet-18 129 s cold; compiled steps 1.3-1.5x
eager. The estimate errs on the side of compile time (a wrong "eager" costs a long job a
few percent; a wrong "compile" costs a short job most of its time).

The decision and its reason are printed and recorded (``OUT/config.yaml`` holds the
boolean that ran), so a ``--resume`` repeats it and stays bitwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CompileDecision",
    "decide_compile",
    "expected_compile_seconds",
    "remember_compiled",
    "step_fingerprint",
    "time_eager_step",
    "was_compiled_before",
]

# Compiled steps run at 1/SPEEDUP of the eager time (W1 measured 1.48x; conservative).
SPEEDUP = 1.4
# Cold compile: base + per parameter tensor (a fit of W1/W2, raised toward ResNet-18).
COLD_BASE_S, COLD_PER_TENSOR_S = 15.0, 1.0
# Warm (the step's kernels in torch's on-disk caches): re-tracing and cache loads.
WARM_BASE_S, WARM_PER_TENSOR_S = 3.0, 0.05


@dataclass(frozen=True)
class CompileDecision:
    """What ``train.compile: auto`` chose, and why (one line, printed and recorded)."""

    compile: bool
    reason: str


def expected_compile_seconds(n_tensors: int, *, warm: bool) -> float:
    """The compile time to expect for a step over ``n_tensors`` parameter tensors."""
    if warm:
        return WARM_BASE_S + WARM_PER_TENSOR_S * n_tensors
    return COLD_BASE_S + COLD_PER_TENSOR_S * n_tensors


def decide_compile(
    *, steps: int, eager_step_s: float, n_tensors: int, warm: bool
) -> CompileDecision:
    """Compile when the time it saves over ``steps`` steps exceeds what it costs."""
    cost = expected_compile_seconds(n_tensors, warm=warm)
    saved = steps * eager_step_s * (1.0 - 1.0 / SPEEDUP)
    facts = (
        f"{steps} steps x {eager_step_s * 1e3:.3g} ms eager: compiling would save ~{saved:.1f} s"
        f" against ~{cost:.0f} s to compile ({'warm cache' if warm else 'cold'})"
    )
    if saved > cost:
        return CompileDecision(True, f"compiled: {facts}")
    return CompileDecision(False, f"eager: {facts}")


def time_eager_step(
    step: Callable[..., Any], state: Any, batch: Any, *, budget_s: float = 2.0
) -> float:
    """The median seconds of a few calls of the eager ``step`` on ``(state, batch)``
    (after one warm-up call; at most ~``budget_s`` in all). The step is pure: the results
    are dropped and nothing changes."""
    import torch

    def once() -> float:
        start = time.perf_counter()
        out = step(state, batch)
        metrics = out[1] if isinstance(out, tuple) and len(out) == 2 else out
        loss = metrics.get("loss") if isinstance(metrics, dict) else None
        if isinstance(loss, torch.Tensor) and loss.is_cuda:  # asynchronous: wait for it
            torch.cuda.synchronize(loss.device)
        return time.perf_counter() - start

    first = once()
    times: list[float] = []
    spent = first
    while len(times) < 5 and spent < budget_s:
        times.append(once())
        spent += times[-1]
    return statistics.median(times) if times else first


# -- what was compiled before on this machine ------------------------------------------------


def _record_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "purestep" / "compiled-steps.json"


def step_fingerprint(parts: Sequence[Any]) -> str:
    """A digest of what decides a step's compiled code (model structure, optimizer and
    loss settings, batch shapes, torch version, device): equal fingerprints find each
    other's kernels in torch's caches."""
    text = json.dumps([str(p) for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_record() -> dict[str, Any]:
    try:
        data = json.loads(_record_path().read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def was_compiled_before(fingerprint: str) -> bool:
    """Whether a step with this fingerprint was compiled on this machine, with torch's
    cache directory of then still there (its kernels are likely still cached)."""
    entry = _read_record().get(fingerprint)
    if not isinstance(entry, dict) or not isinstance(entry.get("cache_dir"), str):
        return False
    return Path(entry["cache_dir"]).is_dir()


def remember_compiled(fingerprint: str) -> None:
    """Note that a step with this fingerprint has compiled here (best effort: a record that
    cannot be written only makes the next estimate colder)."""
    from purestep._io import write_atomic
    from purestep.core.compile_cache import inductor_cache_dir

    record = _read_record()
    record[fingerprint] = {"cache_dir": str(inductor_cache_dir()), "at": time.time()}
    if len(record) > 1000:  # keep the newest
        newest = sorted(record.items(), key=lambda kv: -float(kv[1].get("at", 0)))[:1000]
        record = dict(newest)
    path = _record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record).encode())
    except OSError:
        pass
