"""Benchmarks: workloads, the ways of running a step, the timing runner and its report.

``purestep bench`` (or ``run_benchmarks``) measures every variant side by side, with the
matmul floor and the machine's load, and reports ratios; ``benchmarks/`` holds the
pytest-benchmark suite and the profiling scripts.
"""

from typing import TYPE_CHECKING

from purestep._lazy import lazy_exports as _lazy_exports

# Imported on first use: `purestep bench --help` (purestep.bench.command) needs no torch.
_EXPORTS = {
    "MachineBusy": "purestep.bench.load",
    "sample_load": "purestep.bench.load",
    "to_markdown": "purestep.bench.report",
    **{
        name: "purestep.bench.runner"
        for name in ("DEFAULT_THREADS", "TARGETS", "BenchResult", "Measurement", "run_benchmarks")
    },
    **{
        name: "purestep.bench.variants"
        for name in ("FLOOR", "VARIANTS", "Unavailable", "Variant", "resolve_variant")
    },
    **{
        name: "purestep.bench.workloads"
        for name in ("WORKLOADS", "Workload", "get_workloads", "with_batch")
    },
}
__getattr__, __dir__ = _lazy_exports("purestep.bench", globals(), _EXPORTS)

if TYPE_CHECKING:
    from purestep.bench.load import MachineBusy, sample_load
    from purestep.bench.report import to_markdown
    from purestep.bench.runner import (
        DEFAULT_THREADS,
        TARGETS,
        BenchResult,
        Measurement,
        run_benchmarks,
    )
    from purestep.bench.variants import FLOOR, VARIANTS, Unavailable, Variant, resolve_variant
    from purestep.bench.workloads import WORKLOADS, Workload, get_workloads, with_batch

__all__ = [
    "DEFAULT_THREADS",
    "FLOOR",
    "TARGETS",
    "VARIANTS",
    "WORKLOADS",
    "BenchResult",
    "MachineBusy",
    "Measurement",
    "Unavailable",
    "Variant",
    "Workload",
    "get_workloads",
    "resolve_variant",
    "run_benchmarks",
    "sample_load",
    "to_markdown",
    "with_batch",
]
