"""Time every variant of every workload side by side, and report ratios.

One run: check that the machine is quiet (``purestep.bench.monitor``), build and warm up
every variant of a workload (in this process, or each in a worker process with
``isolate``), then time them in interleaved rounds, so slow drifts of the machine hit all
variants alike; the median round counts. The matmul floor (the step's matmuls alone) is
timed in the same rounds, so every variant can be read as a multiple of it.
``scaling`` adds the batch-size and vmapped-K studies (``purestep.bench.scaling``).
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from purestep.bench.command import DEFAULT_THREADS
from purestep.bench.isolate import Isolated
from purestep.bench.monitor import LoadMonitor
from purestep.bench.timing import InProcess, Runner, Spec
from purestep.bench.variants import FLOOR, VARIANTS, K, Unavailable, resolve_variant
from purestep.bench.workloads import get_workloads
from purestep.core.allocator import retain_freed_cpu_memory

__all__ = [
    "DEFAULT_THREADS",
    "TARGETS",
    "BenchResult",
    "Measurement",
    "full_speed_rounds",
    "ratio",
    "run_benchmarks",
]


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
    batch_size: int | None = None  # scaling runs: the batch size
    members: int | None = None  # vmapped or sequential runs: models per call
    notes: list[str] = field(default_factory=list)
    round_ms: list[float] = field(default_factory=list)  # ms per step in each timed round


def ratio(slow: Measurement, fast: Measurement) -> float | None:
    """How many times faster ``fast`` is than ``slow``, per training step.

    Timed in the same rounds: the median of the per-round ratios, so a phase of the
    machine that slows a whole round (a shared VM's neighbours: 2x for seconds at a time)
    cancels out; otherwise the ratio of the medians."""
    if slow.ms_per_step is None or fast.ms_per_step is None:
        return None
    if slow.round_ms and len(slow.round_ms) == len(fast.round_ms):
        return statistics.median(a / b for a, b in zip(slow.round_ms, fast.round_ms, strict=True))
    return slow.ms_per_step / fast.ms_per_step


@dataclass
class BenchResult:
    device: str
    info: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    scaling: list[Measurement] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)

    def get(self, workload: str, variant: str) -> Measurement | None:
        for m in self.measurements:
            if m.workload == workload and m.variant == variant and m.status == "ok":
                return m
        return None

    @property
    def loaded(self) -> bool:
        """Whether the run was disturbed by other work (see ``load["problems"]``)."""
        return bool(self.load.get("problems"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "info": self.info,
            "load": self.load,
            "measurements": [asdict(m) for m in self.measurements],
            "targets": self.targets,
            "scaling": [asdict(m) for m in self.scaling],
        }


# (description, workload, faster variant, slower variant, threshold); ratio = slower / faster
# per call, i.e. how many times faster the first is.
_FC = "functional compiled (donated)"
_SWEEP = f"vmap K={K} sweep compiled"
_SEQUENTIAL = f"{K} sequential compiled (donated)"
_GRAPHS = "functional + CUDA graphs (donated)"
_VS_JAX = "compiled functional vs JAX + optax jit"
_EAGER = "eager functional (default bitwise path) vs eager imperative"
TARGETS: list[tuple[str, str, str, str, float]] = [
    ("compiled functional vs eager imperative", "W1", _FC, "imperative eager", 2.0),
    ("compiled functional vs eager imperative", "W3", _FC, "imperative eager", 1.5),
    ("compiled functional vs compiled imperative", "W1", _FC, "imperative compiled", 1.2),
    ("compiled functional vs compiled imperative", "W2", _FC, "imperative compiled", 1.2),
    ("compiled functional vs compiled imperative", "W3", _FC, "imperative compiled", 1.2),
    (_VS_JAX, "W1", _FC, "JAX + optax jit", 1.25),
    (_VS_JAX, "W2", _FC, "JAX + optax jit", 1.25),
    (_EAGER, "W1", "functional eager", "imperative eager", 0.95),
    (_EAGER, "W2", "functional eager", "imperative eager", 0.95),
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


def _log_nothing(line: str) -> None:
    del line


@dataclass
class Session:
    """What every group of a run shares: device, threads, isolation, the load monitor."""

    device: torch.device
    threads: int
    isolate: bool
    retain_memory: bool
    monitor: LoadMonitor
    steps: int
    repeats: int
    log: Callable[[str], None] = _log_nothing

    def runner(self, spec: Spec) -> Runner:
        if self.isolate:
            return Isolated(
                spec, self.device, threads=self.threads, retain_memory=self.retain_memory
            )
        return InProcess(spec, self.device)


SLOW_ROUND = 1.25  # a round whose floor took this many times the best round's is slow


def full_speed_rounds(floor: Sequence[float]) -> list[int]:
    """The rounds in which the machine ran at full speed, judged by the matmul floor.

    The floor is the same work in every round, so it measures the machine: on a shared VM
    whole rounds run up to 2x slower (a neighbour on the host; invisible from inside, no
    load, no steal), and they slow torch's 2-thread kernels more than JAX's, so they
    would skew ratios too. Rounds whose floor took more than ``SLOW_ROUND`` times the
    best round's are left out, unless that leaves fewer than a third of the rounds (or 3),
    when all count and the report says the speed varied throughout."""
    best = min(floor)
    kept = [i for i, f in enumerate(floor) if f <= SLOW_ROUND * best]
    if len(kept) < max(3, len(floor) // 3):
        return list(range(len(floor)))
    return kept


def time_group(session: Session, specs: Sequence[Spec], label: str) -> list[Measurement]:
    """Build and warm up each spec, then time them all in interleaved rounds.

    A variant that cannot run here (``Unavailable``) or fails is reported with its
    status, never raised: the rest of the group is still timed. With the matmul floor in
    the group, only full-speed rounds count (``full_speed_rounds``)."""
    out: list[Measurement] = []
    ready: list[tuple[Measurement, Runner, int]] = []
    try:
        for spec in specs:
            m = Measurement(label, spec.variant, batch_size=spec.batch)
            out.append(m)
            runner = session.runner(spec)
            try:
                prepared = runner.prepare()
            except Unavailable as why:
                m.status = f"n/a: {why}"
                session.log(f"{label} {spec.variant}: {m.status}")
                runner.close()
                continue
            except Exception as err:  # a failing peer or variant is reported, not fatal
                first = (str(err).splitlines() or [""])[0][:160]
                m.status = f"failed: {type(err).__name__}: {first}"
                session.log(f"{label} {spec.variant}: {m.status}")
                runner.close()
                continue
            m.first_loss = prepared.first_loss
            m.compile_s = prepared.first_s if prepared.compiled else None
            m.peak_mem_mb = prepared.peak_mb
            m.notes = prepared.notes
            if spec.variant.startswith("vmap K=") or " sequential " in spec.variant:
                m.members = prepared.steps_per_call
            compiled_step = spec.variant.startswith(("functional", "vmap"))
            if prepared.compiled and prepared.graphs == 0 and compiled_step:
                m.status = "failed: no graph was compiled"
            ready.append((m, runner, prepared.steps_per_call))
            session.log(f"{label} {spec.variant}: ready ({prepared.first_s:.1f} s first call)")
        samples: dict[int, list[float]] = {id(m): [] for m, _, _ in ready}
        for _, runner, _ in ready:
            runner.reset_graphs()
        for _ in range(session.repeats):
            session.monitor.round_begin()
            for m, runner, _ in ready:
                samples[id(m)].append(runner.time(session.steps))
            session.monitor.round_end()
        floor = next((samples[id(m)] for m, _, _ in ready if m.variant == FLOOR), None)
        kept = full_speed_rounds(floor) if floor else list(range(session.repeats))
        session.monitor.note_speed(label, floor, kept)
        for m, runner, per_call in ready:
            timed = [samples[id(m)][i] for i in kept]
            m.ms_per_call = statistics.median(timed)
            m.ms_per_step = m.ms_per_call / per_call
            m.round_ms = [ms / per_call for ms in timed]
            # Graphs compiled while timed (in one process: by any variant): should be 0.
            m.recompiles = runner.graphs() if m.compile_s is not None else None
            session.log(f"{label} {m.variant}: {m.ms_per_step:.3f} ms/step")
    finally:
        for _, runner, _ in ready:
            runner.close()
    return out


def run_benchmarks(
    workloads: str | None = None,
    device: str = "cpu",
    *,
    quick: bool = False,
    variants: Sequence[str] | None = None,
    steps: int | None = None,
    repeats: int | None = None,
    retain_memory: bool = True,
    threads: int | None = DEFAULT_THREADS,
    allow_load: bool = False,
    isolate: bool = False,
    scaling: bool = False,
    load_interval_s: float = 1.0,
    log: Callable[[str], None] = print,
) -> BenchResult:
    """Run the benchmark; ``quick``: W1 only (unless named), fewer steps.

    Args:
        workloads: comma-separated names (default: all for the device).
        variants: names from ``VARIANTS`` (default: all); ``[]`` times none (with
            ``scaling``: the scaling studies alone).
        steps, repeats: calls per timed round, rounds (the median round counts).
        retain_memory: apply ``purestep.core.retain_freed_cpu_memory`` to the process
            (every worker with ``isolate``) first, for every variant alike.
        threads: ``torch.set_num_threads`` for the run (restored afterwards); None keeps
            the current count. Reported, and the load limits are judged against it.
        allow_load: time even if the machine is busy before the run (the result is then
            flagged, ``BenchResult.loaded``); by default ``MachineBusy`` (a ``ValueError``)
            is raised before anything is built.
        isolate: each variant in a worker process of its own (see
            ``purestep.bench.isolate``), rounds still interleaved.
        scaling: add the batch-size (W1) and vmapped-K (W1, W2 when chosen) studies.
        load_interval_s: how long the load samples before and after the run watch.

    Per workload every variant is built and warmed up (compiled) first; then ``repeats``
    rounds time ``steps`` calls of each variant in turn; the load of other processes is
    recorded per round.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if workloads is None and quick:
        workloads = "W1"
    chosen = get_workloads(workloads, dev)
    names = list(variants) if variants is not None else list(VARIANTS)
    for n in names:
        resolve_variant(n)  # unknown names fail here, before anything runs
    if names and FLOOR not in names:
        names.insert(0, FLOOR)  # every table is read against the floor of the same run
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        monitor = LoadMonitor(
            torch.get_num_threads(), allow_load=allow_load, interval_s=load_interval_s
        )
        monitor.start()
        retained = retain_freed_cpu_memory() if retain_memory and dev.type == "cpu" else False
        steps = steps or (20 if quick else 50)
        repeats = repeats or (5 if quick else 11)
        session = Session(
            dev, torch.get_num_threads(), isolate, retain_memory, monitor, steps, repeats, log
        )
        result = BenchResult(device=_device_line(dev), info=_versions(dev, steps, repeats))
        result.info["retain_freed_cpu_memory"] = retained
        result.info["isolate"] = isolate
        if names:
            for workload in chosen:
                specs = [Spec(workload.name, n) for n in names]
                result.measurements += time_group(session, specs, workload.name)
            result.targets = _targets(result)
        if scaling:
            from purestep.bench.scaling import run_scaling

            result.scaling = run_scaling(session, [w.name for w in chosen])
        monitor.finish()
        result.load = monitor.report()
    finally:
        torch.set_num_threads(previous_threads)
    return result


def _targets(result: BenchResult) -> list[dict[str, Any]]:
    out = []
    for description, workload, fast, slow, threshold in TARGETS:
        a, b = result.get(workload, fast), result.get(workload, slow)
        value = ratio(b, a) if a is not None and b is not None else None
        if value is None:
            continue
        out.append(
            {
                "target": description,
                "workload": workload,
                "ratio": value,
                "threshold": threshold,
                "met": value >= threshold,
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
            "variants interleaved; ms/step: median over rounds of the mean per call (sweeps "
            "divide by K); ratios: median over rounds of the per-round ratio"
        ),
        # Whether "compile s" is a cold compile or served by torch's on-disk caches.
        "compile_caches": "disabled"
        if os.environ.get("TORCHINDUCTOR_FORCE_DISABLE_CACHES") == "1"
        else "enabled (compile s may be a warm-cache figure)",
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
