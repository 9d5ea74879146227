"""Every step variant of the chosen workloads under pytest-benchmark.

Run with ``make bench-pytest`` (or ``pytest benchmarks --benchmark-only``); pick workloads
with ``PURESTEP_BENCH_WORKLOADS=W1,W2``. Compare the groups' means: each group is one
workload, so ratios are side by side in one run. ``purestep bench`` prints the same
numbers as a ratio table with the targets.
"""

from __future__ import annotations

import os

import pytest
import torch

from purestep.bench import VARIANTS, WORKLOADS, Unavailable

WORKLOAD_NAMES = os.environ.get("PURESTEP_BENCH_WORKLOADS", "W1").split(",")
DEVICE = torch.device(os.environ.get("PURESTEP_BENCH_DEVICE", "cpu"))


@pytest.mark.parametrize("workload", WORKLOAD_NAMES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_step(benchmark, workload, variant):
    try:
        run = VARIANTS[variant](WORKLOADS[workload], DEVICE)
        for _ in range(3 if run.compiled else 2):  # compile / warm up outside the timing
            run.step()
    except Unavailable as why:
        pytest.skip(str(why))
    benchmark.group = workload
    benchmark.extra_info["steps_per_call"] = run.steps_per_call

    def step():
        run.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=30, iterations=5, warmup_rounds=1)
