"""Time every variant of every workload in one process, side by side, and report ratios."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from purestep._compat import counters
from purestep.bench.variants import VARIANTS, K, Unavailable, Variant
from purestep.bench.workloads import Workload, get_workloads
from purestep.core.allocator import retain_freed_cpu_memory

__all__ = ["TARGETS", "BenchResult", "Measurement", "run_benchmarks"]


@dataclass
class Measurement:
    workload: str
    variant: str
    ms_per_step: float | None = None  # per training step (a K-model call counts K steps)
    ms_per_call: float | None = None
    compile_s: float | None = None
    recompiles: int | None = None
    peak_mem_mb: float | None = (
        None  # CUDA: this variant's peak; CPU: process RSS high-water so far
    )
    first_loss: float | None = None
    status: str = "ok"


@dataclass
class BenchResult:
    device: str
    info: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def get(self, workload: str, variant: str) -> Measurement | None:
        for m in self.measurements:
            if m.workload == workload and m.variant == variant and m.status == "ok":
                return m
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "info": self.info,
            "measurements": [asdict(m) for m in self.measurements],
            "targets": self.targets,
        }


# (description, workload, faster variant, slower variant, threshold); ratio = slower / faster
# per call, i.e. how many times faster the first is.
_FC = "functional compiled (donated)"
_SWEEP = f"vmap K={K} sweep compiled"
_SEQUENTIAL = f"{K} sequential compiled (donated)"
_GRAPHS = "functional + CUDA graphs (donated)"
_VS_JAX = "compiled functional vs JAX + optax jit (time <= 1.1x)"
TARGETS: list[tuple[str, str, str, str, float]] = [
    ("compiled functional vs eager imperative", "W1", _FC, "imperative eager", 2.0),
    (
        "compiled functional (C++ wrapper) vs eager imperative",
        "W1",
        "functional compiled (donated, C++ wrapper)",
        "imperative eager",
        2.0,
    ),
    ("compiled functional vs eager imperative", "W3", _FC, "imperative eager", 1.5),
    ("compiled functional vs compiled imperative", "W1", _FC, "imperative compiled", 1.2),
    ("compiled functional vs compiled imperative", "W2", _FC, "imperative compiled", 1.2),
    ("compiled functional vs compiled imperative", "W3", _FC, "imperative compiled", 1.2),
    # the means: the opt-in multi-tensor fast mode (bitwise vs torch foreach=True)
    (
        "eager functional (foreach) vs eager imperative",
        "W1",
        "functional eager (foreach)",
        "imperative eager",
        0.9,
    ),
    (_VS_JAX, "W1", _FC, "JAX + optax jit", 1 / 1.1),
    (_VS_JAX, "W2", _FC, "JAX + optax jit", 1 / 1.1),
    (f"vmap K={K} compiled sweep vs {K} sequential compiled", "W1", _SWEEP, _SEQUENTIAL, 3.0),
    (f"vmap K={K} compiled sweep vs {K} sequential compiled", "W2", _SWEEP, _SEQUENTIAL, 3.0),
    (
        "fit loop vs the bare loop of the same compiled step (time <= 1.05x)",
        "W1",
        "fit loop (compiled, metrics + logging)",
        "bare loop (same compiled step)",
        1 / 1.05,
    ),
    ("CUDA-graph functional vs eager imperative", "W1", _GRAPHS, "imperative eager", 4.0),
    ("CUDA-graph functional vs eager imperative", "W2", _GRAPHS, "imperative eager", 4.0),
    ("CUDA-graph functional vs eager imperative", "W5", _GRAPHS, "imperative eager", 1.3),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's RSS high-water mark so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare(variant: Variant, device: torch.device, warmup: int) -> tuple[float, float | None]:
    """First call (compile for compiled variants) and warm-up: (first-call s, first loss)."""
    start = time.perf_counter()
    variant.step()
    _sync(device)
    first = time.perf_counter() - start
    first_loss = variant.loss()
    for _ in range(max(warmup - 1, 0)):
        variant.step()
    _sync(device)
    return first, first_loss


def _time(variant: Variant, device: torch.device, steps: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        variant.step()
    _sync(device)
    return (time.perf_counter() - start) / steps * 1e3


def run_benchmarks(
    workloads: str | None = None,
    device: str = "cpu",
    *,
    quick: bool = False,
    variants: Sequence[str] | None = None,
    steps: int | None = None,
    repeats: int | None = None,
    retain_memory: bool = True,
    log: Callable[[str], None] = print,
) -> BenchResult:
    """Run the benchmark; ``quick``: W1 only (unless named), fewer steps.

    Per workload every variant is built and warmed up (compiled) first; then ``repeats``
    rounds time ``steps`` calls of each variant in turn, and the median round counts. The
    interleaving keeps slow drifts of the machine (frequency, neighbours) out of the ratios.
    ``retain_memory`` (default) applies ``purestep.core.retain_freed_cpu_memory`` to the
    whole process first, for every variant alike (see that function for why).
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if workloads is None and quick:
        workloads = "W1"
    chosen: list[Workload] = get_workloads(workloads, dev)
    names = list(variants) if variants is not None else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    retained = retain_freed_cpu_memory() if retain_memory and dev.type == "cpu" else False
    steps = steps or (20 if quick else 50)
    repeats = repeats or (5 if quick else 11)
    result = BenchResult(device=_device_line(dev), info=_versions(dev, steps, repeats))
    result.info["retain_freed_cpu_memory"] = retained
    for workload in chosen:
        ready: list[tuple[Measurement, Variant]] = []
        for name in names:
            m = Measurement(workload.name, name)
            result.measurements.append(m)
            try:
                variant = VARIANTS[name](workload, dev)
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                counters.clear()
                first, m.first_loss = _prepare(variant, dev, 3 if variant.compiled else 2)
                graphs = int(counters["stats"].get("unique_graphs", 0))
            except Unavailable as why:
                m.status = f"n/a: {why}"
                log(f"{workload.name} {name}: {m.status}")
                continue
            except Exception as err:  # a failing peer or variant is reported, not fatal
                m.status = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
                log(f"{workload.name} {name}: {m.status}")
                continue
            m.compile_s = first if variant.compiled else None
            m.peak_mem_mb = _peak_mb(dev)
            if variant.compiled and graphs == 0 and name.startswith(("functional", "vmap")):
                m.status = "failed: no graph was compiled"
            ready.append((m, variant))
            log(f"{workload.name} {name}: ready ({first:.1f} s first call)")
        samples: dict[str, list[float]] = {m.variant: [] for m, _ in ready}
        counters.clear()
        for _ in range(repeats):
            for m, variant in ready:
                samples[m.variant].append(_time(variant, dev, steps))
        graphs_after = int(counters["stats"].get("unique_graphs", 0))
        for m, variant in ready:
            m.ms_per_call = statistics.median(samples[m.variant])
            m.ms_per_step = m.ms_per_call / variant.steps_per_call
            # Graphs compiled during the timed rounds, by any variant: should be 0.
            m.recompiles = graphs_after if variant.compiled else None
            log(f"{workload.name} {m.variant}: {m.ms_per_step:.3f} ms/step")
    result.targets = _targets(result)
    return result


def _targets(result: BenchResult) -> list[dict[str, Any]]:
    out = []
    for description, workload, fast, slow, threshold in TARGETS:
        a, b = result.get(workload, fast), result.get(workload, slow)
        if a is None or b is None or a.ms_per_call is None or b.ms_per_call is None:
            continue
        ratio = b.ms_per_call / a.ms_per_call
        out.append(
            {
                "target": description,
                "workload": workload,
                "ratio": ratio,
                "threshold": threshold,
                "met": ratio >= threshold,
            }
        )
    return out


def _device_line(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _versions(dev: torch.device, steps: int, repeats: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": str(dev),
        "steps_per_repeat": steps,
        "repeats": repeats,
        "timing": (
            "variants interleaved; median over rounds of the mean ms per call; sweeps divide by K"
        ),
    }
    try:
        import jax

        info["jax"] = jax.__version__
    except ImportError:
        info["jax"] = None
    try:
        import torchopt

        info["torchopt"] = torchopt.__version__
    except ImportError:
        info["torchopt"] = None
    return info
