"""The matmul floor of a workload's step (its nn.Linear matmuls alone: forward, input and
weight gradients), as ``purestep bench`` times it in every run.

.venv/bin/python benchmarks/w1_matmul_floor.py [W1|W2|W4] [threads]
"""

from __future__ import annotations

import statistics
import sys

import torch

from purestep.bench.timing import time_variant
from purestep.bench.variants import matmul_floor
from purestep.bench.workloads import WORKLOADS


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "W1"
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    device = torch.device("cpu")
    floor = matmul_floor(WORKLOADS[name], device)
    time_variant(floor, device, 200)  # warm-up
    rounds = [time_variant(floor, device, 200) for _ in range(11)]
    print(
        f"{name} matmuls only ({floor.notes[0]}): {statistics.median(rounds):.3f} ms/step, "
        f"{torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
