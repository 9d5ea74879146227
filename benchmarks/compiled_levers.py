"""The compiled step's levers, each timed against the default in the same rounds.

    .venv/bin/python benchmarks/compiled_levers.py W1 [lever ...] [--repeats 21] [--steps 50]

Levers (inductor options passed through ``purestep.compile(options=...)``):
``cpp_wrapper`` (the graph's wrapper in C++), ``max_autotune`` (CPU GEMM templates that
can fuse the bias and activation epilogues into the matmul), ``no_donate`` (the step
without donation). Every lever is a variant of "functional compiled (donated)"; the
table prints ms/step, the ratio to the imperative eager loop and the multiple of the
matmul floor, all from the same interleaved rounds (``purestep.bench``'s runner).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from purestep.bench import VARIANTS, run_benchmarks, to_markdown
from purestep.bench.variants import functional

LEVERS: dict[str, dict[str, Any]] = {
    "cpp_wrapper": {"cpp_wrapper": True},
    "max_autotune": {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"},
    "max_autotune+cpp_wrapper": {
        "max_autotune": True,
        "max_autotune_gemm_backends": "CPP,ATEN",
        "cpp_wrapper": True,
    },
}


def lever(options: dict[str, Any], donate: bool = True) -> Any:
    def build(workload: Any, device: torch.device) -> Any:
        variant = functional(workload, device, compiled=True, donate=donate, options=options)
        return variant

    return build


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("levers", nargs="*", default=["cpp_wrapper"])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    names = ["imperative eager", "functional compiled (donated)"]
    for name in args.levers:
        if name == "no_donate":
            names.append("functional compiled")
            continue
        key = f"functional compiled (donated, {name})"
        VARIANTS[key] = lever(LEVERS[name])
        names.append(key)
    result = run_benchmarks(
        args.workload,
        variants=names,
        steps=args.steps,
        repeats=args.repeats,
        allow_load=True,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(to_markdown(result))


if __name__ == "__main__":
    main()
