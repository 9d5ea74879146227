"""What ``ps.fit`` costs on top of a bare loop of the *same* compiled step.

    .venv/bin/python benchmarks/fit_overhead.py W2 --rounds 15

``purestep bench`` times its fit-loop and bare-loop variants with a compiled step each; this
script shares one compiled step between them, so only the loop differs. Rounds interleave
the two; the figure is the median over rounds of bare/fit (1.00: free, < 1: fit is slower).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import torch

import purestep as ps
from purestep.bench.variants import FIT_STEPS, _metric_step
from purestep.bench.workloads import WORKLOADS
from purestep.train.fit import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=["W1", "W2"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ps.core.retain_freed_cpu_memory()
    step, state, epoch, metrics = _metric_step(WORKLOADS[args.workload], torch.device("cpu"))

    def bare(st: ps.TrainState) -> ps.TrainState:
        for batch in epoch:
            st, _ = step(st, batch)
        return st

    def fitted(st: ps.TrainState) -> ps.TrainState:
        with contextlib.redirect_stdout(io.StringIO()):  # fit's epoch line
            return fit(st, step, epoch, epochs=1, metrics=metrics)[0]

    state = fitted(bare(state))  # compile, warm up
    ms: dict[str, list[float]] = {"bare": [], "fit": []}
    for _ in range(args.rounds):
        for name, run in (("bare", bare), ("fit", fitted)):
            start = time.perf_counter()
            state = run(state)
            ms[name].append((time.perf_counter() - start) * 1e3 / FIT_STEPS)
    ratio = statistics.median(b / f for b, f in zip(ms["bare"], ms["fit"], strict=True))
    print(
        f"{args.workload}: bare {statistics.median(ms['bare']):.3f} ms/step, "
        f"fit {statistics.median(ms['fit']):.3f} ms/step, bare/fit {ratio:.3f} "
        f"({args.rounds} rounds of {FIT_STEPS}-step epochs, one compiled step)"
    )


if __name__ == "__main__":
    main()
