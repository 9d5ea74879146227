"""Where a step's time goes, kernel by kernel (torch.profiler + inductor's kernel profile).

    .venv/bin/python benchmarks/profile_step.py W1 "functional compiled (donated)"
    .venv/bin/python benchmarks/profile_step.py W2 "imperative eager" --steps 200
    .venv/bin/python benchmarks/profile_step.py W1 "vmap K=8 sweep compiled" --top 30

Each kernel's self time per step is put in a bucket (matmuls, Adam, loss, bias and
activation epilogues, layout copies and clones, other kernels); what is left of the wall
time per step is the host side: Python, the compiled wrapper, the launcher, allocation.
Inductor's CPU kernels appear in the profile only with ``cpp.enable_kernel_profile``
(set here before anything compiles), which adds a little overhead per kernel: the wall
time printed is that of the profiled run; time the step unprofiled with ``purestep bench``.
A private inductor setting is fine in a script; the package never touches it.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict

import torch
import torch._inductor.config as inductor_config

from purestep.bench.timing import Spec, build_workload, prepare_variant, time_variant
from purestep.bench.variants import resolve_variant

# Bucket by the aten op or by the ops inductor named its fused kernel after.
BUCKETS: list[tuple[str, re.Pattern[str]]] = [
    ("matmul", re.compile(r"aten::(mm|addmm|bmm|baddbmm|matmul|linear)$|mkl|gemm|onednn")),
    ("adam", re.compile(r"addcdiv|lerp|sqrt|_foreach")),
    ("loss", re.compile(r"log_softmax|nll_loss|cross_entropy|gather|scatter")),
    ("layernorm/gelu", re.compile(r"native_layer_norm|layer_norm|gelu|var_mean|rsqrt|erf")),
    (
        "bias/relu epilogue",
        re.compile(r"relu|threshold|aten::add_?$|aten::sum$|sum|clamp|le\b|where"),
    ),
    ("copy/clone/layout", re.compile(r"copy|clone|contiguous|aten::t$|transpose|as_strided")),
]
# Host-side wrappers, not kernels: their self time is Python/dispatch work.
WRAPPERS = re.compile(
    r"^(Torch-Compiled Region|CompiledFunction|## Call CompiledFxGraph|"
    r"autograd::|Optimizer\.|ProfilerStep|aten::empty|aten::empty_strided|aten::detach|"
    r"aten::view|aten::_unsafe_view|aten::reshape|aten::expand|aten::resize_|"
    r"aten::set_|aten::result_type|aten::to$|aten::_to_copy|aten::lift_fresh)"
)


def bucket_of(name: str) -> str:
    if WRAPPERS.match(name):
        return "host (wrappers)"
    for bucket, pattern in BUCKETS:
        if pattern.search(name):
            return bucket
    return "other kernels"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("variant")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inductor_config.cpp.enable_kernel_profile = True
    from purestep.core.allocator import retain_freed_cpu_memory

    retain_freed_cpu_memory()
    device = torch.device("cpu")
    spec = Spec(args.workload, args.variant, args.batch)
    variant = resolve_variant(args.variant)(build_workload(spec), device)
    prepare_variant(variant, device)
    unprofiled = min(time_variant(variant, device, args.steps) for _ in range(5))
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            variant.step()
        wall = (time.perf_counter() - start) / args.steps * 1e3
    per_step = variant.steps_per_call * args.steps
    totals: dict[str, float] = defaultdict(float)
    kernels: dict[str, tuple[float, int]] = {}
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1e3 / args.steps
        totals[bucket_of(e.key)] += ms
        kernels[e.key] = (ms, e.count // args.steps)
    kernel_ms = sum(v for k, v in totals.items() if k != "host (wrappers)")
    print(
        f"{args.workload} {args.variant}: {unprofiled:.3f} ms/call unprofiled (best of 5), "
        f"{wall:.3f} ms/call profiled; {variant.steps_per_call} step(s) per call, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'bucket':<22}{'ms/call':>9}{'share':>8}")
    for bucket, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{bucket:<22}{ms:9.3f}{ms / wall:8.1%}")
    host = wall - kernel_ms
    print(f"{'host (all but kernels)':<22}{host:9.3f}{host / wall:8.1%}")
    print(f"\ntop {args.top} by self time (ms per call, calls per call):")
    for name, (ms, count) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"  {ms:8.4f} {count:4d}  [{bucket_of(name)}] {name[:110]}")
    del per_step


if __name__ == "__main__":
    main()
