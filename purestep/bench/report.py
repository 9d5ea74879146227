"""The benchmark result as a markdown table (and JSON via ``BenchResult.to_dict``)."""

from __future__ import annotations

from purestep.bench.runner import BenchResult
from purestep.bench.workloads import WORKLOADS

__all__ = ["to_markdown"]


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def to_markdown(result: BenchResult) -> str:
    """One table per workload (ms per training step and the ratio to the imperative eager
    loop, measured side by side in one run), then the targets."""
    info = result.info
    peers = ", ".join(f"{k} {v}" for k, v in info.items() if k in ("jax", "torchopt") and v)
    lines = [
        f"Device: {result.device}; torch {info['torch']}, Python {info['python']}"
        + (f"; peers: {peers}" if peers else ""),
        f"Timing: {info['timing']} ({info['repeats']} rounds x {info['steps_per_repeat']} calls).",
        "Memory: CUDA: each variant's peak allocated; CPU: the process's RSS high-water mark "
        "after building that variant (cumulative, in run order)."
        + (
            " glibc keeps freed memory for reuse (retain_freed_cpu_memory) for all variants."
            if info.get("retain_freed_cpu_memory")
            else ""
        ),
        "",
    ]
    for workload in dict.fromkeys(m.workload for m in result.measurements):
        base = result.get(workload, "imperative eager")
        lines += [
            f"**{workload}: {WORKLOADS[workload].title}**",
            "",
            "| variant | ms/step | steps/s | vs imperative eager | compile s "
            "| new graphs while timed | peak MB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in result.measurements:
            if m.workload != workload:
                continue
            if m.status != "ok" or m.ms_per_step is None:
                lines.append(f"| {m.variant} | {m.status} | | | | | |")
                continue
            speedup = (
                f"{base.ms_per_step / m.ms_per_step:.2f}x"
                if base is not None and base.ms_per_step is not None
                else "—"
            )
            lines.append(
                f"| {m.variant} | {m.ms_per_step:.3f} | {1e3 / m.ms_per_step:,.0f} | {speedup} | "
                f"{_fmt(m.compile_s, '.1f')} | {_fmt(m.recompiles, 'd')} | "
                f"{_fmt(m.peak_mem_mb, ',.0f')} |"
            )
        lines.append("")
    if result.targets:
        lines += [
            "**Targets** (ratio = how many times faster, same run)",
            "",
            "| target | workload | ratio | needed | met |",
            "|---|---|---:|---:|---|",
        ]
        for t in result.targets:
            lines.append(
                f"| {t['target']} | {t['workload']} | {t['ratio']:.2f}x | {t['threshold']:.2f}x | "
                f"{'yes' if t['met'] else '**no**'} |"
            )
    return "\n".join(lines)
