"""How long a step's first call takes to compile: cold, and in a second process (warm).

    .venv/bin/python benchmarks/compile_latency.py W2 "functional compiled (donated)"
    .venv/bin/python benchmarks/compile_latency.py W1 "JAX + optax jit"

Each measurement is a fresh process (``--child``) that builds the variant and times its
first call. "cold": an empty inductor cache directory and torch's caches off
(``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``); "second process": the same cache directory
after a first process filled it (FX graph and AOTAutograd caches on disk); "artifacts":
a fresh cache directory loaded from ``torch.compiler.save_cache_artifacts`` bytes
(``purestep.core.compile_cache``), as on another machine. The child prints dynamo's
per-phase compile times (``torch._dynamo.utils.compile_times``), so the cold figure
splits into tracing, AOT autograd and inductor (codegen and C++ compiles).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(workload: str, variant: str, load: str | None, save: str | None, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from purestep.bench.timing import Spec, build_workload
    from purestep.bench.variants import resolve_variant
    from purestep.core import compile_cache

    scope = contextlib.ExitStack()  # open until the process ends
    if load:  # into a private inductor cache directory, as a resumed run does
        private = scope.enter_context(compile_cache.private_inductor_cache())
        compile_cache.load_compile_cache(load, private, trust_code=True)
    device = torch.device("cpu")
    built = resolve_variant(variant)(build_workload(Spec(workload, variant)), device)
    start = time.perf_counter()
    built.step()
    first = time.perf_counter() - start
    if save:
        compile_cache.save_compile_cache(save)
    phases: dict[str, float] = {}
    try:
        from torch._dynamo.utils import compile_times

        table = compile_times(repr="csv", aggregate=True)
        if isinstance(table, tuple):
            names, values = table
            phases = {n: float(v) for n, v in zip(names, values, strict=False)}
    except Exception as err:  # a private helper: report, do not fail
        phases = {"unavailable": 0.0, str(err)[:60]: 0.0}
    print(json.dumps({"first_call_s": first, "phases": phases}))


def run_child(args: argparse.Namespace, env: dict[str, str], extra: list[str]) -> dict:
    command = [sys.executable, __file__, args.workload, args.variant, "--child"]
    command += ["--threads", str(args.threads), *extra]
    out = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("variant")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--load", default=None)
    parser.add_argument("--save", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.workload, args.variant, args.load, args.save, args.threads)
        return
    with tempfile.TemporaryDirectory(prefix="purestep-compile-") as tmp:
        cache, fresh = Path(tmp, "cache"), Path(tmp, "fresh")
        artifacts = Path(tmp, "artifacts.bin")
        rows = []
        if not args.skip_cold:
            cold = run_child(
                args,
                {
                    "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp, "cold")),
                    "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1",
                },
                [],
            )
            rows.append(("cold (caches off)", cold))
        first = run_child(args, {"TORCHINDUCTOR_CACHE_DIR": str(cache)}, ["--save", str(artifacts)])
        rows.append(("first process (empty cache dir)", first))
        second = run_child(args, {"TORCHINDUCTOR_CACHE_DIR": str(cache)}, [])
        rows.append(("second process (same cache dir)", second))
        if artifacts.exists():
            loaded = run_child(
                args, {"TORCHINDUCTOR_CACHE_DIR": str(fresh)}, ["--load", str(artifacts)]
            )
            rows.append(("fresh cache dir + saved artifacts", loaded))
        print(f"{args.workload} {args.variant}, {args.threads} threads")
        for label, row in rows:
            phases = ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(row["phases"].items(), key=lambda kv: -kv[1])[:6]
            )
            print(f"  {label:<36} first call {row['first_call_s']:7.2f} s   ({phases})")


if __name__ == "__main__":
    main()
