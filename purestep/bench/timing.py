"""Build one variant, warm it up, time it: in this process or in a worker process.

A ``Spec`` names what to run (workload, optional batch size, variant); ``InProcess``
builds it here, ``purestep.bench.isolate.Isolated`` in a subprocess of its own (as a user
runs one step in one program). Both answer the same three calls: ``prepare`` (first call,
compile included, and warm-up), ``time(steps)`` (mean ms per call over ``steps`` calls)
and ``graphs`` (graphs compiled since ``reset_graphs``: 0 after warm-up means no
recompilation while timed).
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from purestep._compat import counters
from purestep.bench.variants import Variant, resolve_variant
from purestep.bench.workloads import WORKLOADS, Workload, with_batch

__all__ = ["InProcess", "Prepared", "Runner", "Spec", "build_workload", "peak_mb"]


@dataclass(frozen=True)
class Spec:
    """What to time: a variant of a workload, optionally at another batch size."""

    workload: str
    variant: str
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    """What building and warming up a variant told us."""

    first_s: float  # the first call, compile included
    first_loss: float | None
    graphs: int  # graphs compiled while preparing
    peak_mb: float
    compiled: bool
    steps_per_call: int
    notes: list[str] = field(default_factory=list)


class Runner(Protocol):
    """A variant ready to be timed (see the module docstring)."""

    spec: Spec

    def prepare(self) -> Prepared: ...

    def time(self, steps: int) -> float: ...

    def reset_graphs(self) -> None: ...

    def graphs(self) -> int: ...

    def close(self) -> None: ...


def build_workload(spec: Spec) -> Workload:
    """The spec's workload, at its batch size."""
    if spec.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {spec.workload!r}; choose from {sorted(WORKLOADS)}")
    workload = WORKLOADS[spec.workload]
    return workload if spec.batch is None else with_batch(workload, spec.batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: torch.device) -> float:
    """CUDA: peak allocated; CPU: this process's RSS high-water mark so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # VmHWM belongs to this program's address space; ru_maxrss (the fallback, KiB on
    # Linux) would carry a worker's parent's peak across fork + exec.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_variant(variant: Variant, device: torch.device) -> tuple[float, float | None]:
    """First call (compile for compiled variants) and warm-up: (first-call s, first loss)."""
    start = time.perf_counter()
    variant.step()
    _sync(device)
    first = time.perf_counter() - start
    first_loss = variant.loss()
    for _ in range(2 if variant.compiled else 1):
        variant.step()
    _sync(device)
    return first, first_loss


def time_variant(variant: Variant, device: torch.device, steps: int) -> float:
    """Mean ms per call over ``steps`` calls."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        variant.step()
    _sync(device)
    return (time.perf_counter() - start) / steps * 1e3


class InProcess:
    """The variant built and timed in this process.

    Graph counts come from dynamo's process-wide counters, so ``graphs`` counts what any
    in-process variant compiled since the last ``reset_graphs``."""

    def __init__(self, spec: Spec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.variant: Variant | None = None

    def prepare(self) -> Prepared:
        variant = resolve_variant(self.spec.variant)(build_workload(self.spec), self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        counters.clear()
        first, first_loss = prepare_variant(variant, self.device)
        self.variant = variant
        return Prepared(
            first_s=first,
            first_loss=first_loss,
            graphs=int(counters["stats"].get("unique_graphs", 0)),
            peak_mb=peak_mb(self.device),
            compiled=variant.compiled,
            steps_per_call=variant.steps_per_call,
            notes=list(variant.notes),
        )

    def time(self, steps: int) -> float:
        if self.variant is None:
            raise RuntimeError("prepare() first")
        return time_variant(self.variant, self.device, steps)

    def reset_graphs(self) -> None:
        counters.clear()

    def graphs(self) -> int:
        return int(counters["stats"].get("unique_graphs", 0))

    def close(self) -> None:
        self.variant = None
