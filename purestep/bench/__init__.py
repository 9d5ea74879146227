"""Benchmarks: workloads, the ways of running a step, the timing runner and its report.

``purestep bench`` (or ``run_benchmarks``) measures every variant side by side in one
process and reports ratios; ``benchmarks/`` holds the pytest-benchmark suite.
"""

from purestep.bench.report import to_markdown
from purestep.bench.runner import TARGETS, BenchResult, Measurement, run_benchmarks
from purestep.bench.variants import VARIANTS, Unavailable, Variant
from purestep.bench.workloads import WORKLOADS, Workload, get_workloads

__all__ = [
    "TARGETS",
    "VARIANTS",
    "WORKLOADS",
    "BenchResult",
    "Measurement",
    "Unavailable",
    "Variant",
    "Workload",
    "get_workloads",
    "run_benchmarks",
    "to_markdown",
]
