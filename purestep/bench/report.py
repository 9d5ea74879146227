"""The benchmark result as markdown tables (and JSON via ``BenchResult.to_dict``)."""

from __future__ import annotations

from typing import Any

from purestep.bench.runner import BenchResult, Measurement, ratio
from purestep.bench.scaling import EAGER, SINGLE
from purestep.bench.variants import FLOOR
from purestep.bench.workloads import WORKLOADS

__all__ = ["to_markdown"]


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _load_lines(load: dict[str, Any]) -> list[str]:
    if not load:
        return []
    lines = [
        f"Load: before: {load.get('before_text')}; after: {load.get('after_text')}.",
    ]
    if load.get("rounds_mean_other_cores") is not None:
        lines.append(
            f"Other processes during the timed rounds: mean {load['rounds_mean_other_cores']:.2f}"
            f", max {load['rounds_max_other_cores']:.2f} cores "
            f"({load['cores']} cores, the benchmark uses {load['threads']} threads)."
        )
    speed = load.get("speed") or []
    if speed:
        lines.append(
            "Machine speed (the matmul floor, timed in every round): rounds at full speed "
            "(floor within 1.25x of the group's best), which alone count: "
            + "; ".join(
                f"{g['group']} {len(g['kept'])}/{g['rounds']} "
                f"(floor {min(g['floor_ms']):.3f}-{max(g['floor_ms']):.3f} ms)"
                for g in speed
            )
            + "."
        )
    if load.get("problems"):
        lines.append(
            "**LOADED MACHINE: these timings are not trustworthy** ("
            + "; ".join(load["problems"])
            + ")."
        )
    return lines


def _header(result: BenchResult) -> list[str]:
    info = result.info
    peers = ", ".join(f"{k} {v}" for k, v in info.items() if k in ("jax", "torchopt") and v)
    isolation = (
        "each variant in its own process" if info.get("isolate") else "all variants in one process"
    )
    return [
        f"Device: {result.device}; torch {info['torch']}, Python {info['python']}"
        + (f"; peers: {peers}" if peers else ""),
        f"Timing: {info['timing']} ({info['repeats']} rounds x {info['steps_per_repeat']} calls);"
        f" {isolation}; torch threads: {info['threads']}; compile caches: "
        f"{info.get('compile_caches', 'enabled')}.",
        "Memory: CUDA: each variant's peak allocated; CPU: the RSS high-water mark of the "
        + (
            "variant's process."
            if info.get("isolate")
            else "process after building that variant (cumulative, in run order)."
        )
        + (
            " glibc keeps freed memory for reuse (retain_freed_cpu_memory) for all variants."
            if info.get("retain_freed_cpu_memory")
            else ""
        ),
        *_load_lines(result.load),
        "",
    ]


def _ratio(num: Measurement | None, den: Measurement | None) -> str:
    """``num``'s time per step over ``den``'s (per-round median when timed together)."""
    value = ratio(num, den) if num is not None and den is not None else None
    return "—" if value is None else f"{value:.2f}x"


def _variant_table(result: BenchResult, workload: str) -> list[str]:
    base = result.get(workload, "imperative eager")
    floor = result.get(workload, FLOOR)
    lines = [
        f"**{workload}: {WORKLOADS[workload].title}**",
        "",
        "| variant | ms/step | steps/s | vs imperative eager | x floor | compile s "
        "| new graphs while timed | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result.measurements:
        if m.workload != workload:
            continue
        if m.status != "ok" or m.ms_per_step is None:
            lines.append(f"| {m.variant} | {m.status} | | | | | | |")
            continue
        lines.append(
            f"| {m.variant} | {m.ms_per_step:.3f} | {1e3 / m.ms_per_step:,.0f} | "
            f"{_ratio(base, m)} | {_ratio(m, floor)} | {_fmt(m.compile_s, '.1f')} | "
            f"{_fmt(m.recompiles, 'd')} | {_fmt(m.peak_mem_mb, ',.0f')} |"
        )
    return [*lines, ""]


def _scaling_tables(scaling: list[Measurement]) -> list[str]:
    def find(label: str, variant: str) -> Measurement | None:
        for m in scaling:
            if m.workload == label and m.variant == variant and m.status == "ok":
                return m
        return None

    def ms(m: Measurement | None) -> str:
        return _fmt(m.ms_per_step if m is not None else None, ".3f")

    lines: list[str] = []
    labels = list(dict.fromkeys(m.workload for m in scaling))
    batch_labels = [label for label in labels if " b" in label]
    if batch_labels:
        lines += [
            "**Scaling with the batch size (W1's model, ms per step)**",
            "",
            f"| batch | matmul floor | {EAGER} | {SINGLE} | compiled vs eager "
            "| eager x floor | compiled x floor |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label in batch_labels:
            floor, eager, single = (find(label, v) for v in (FLOOR, EAGER, SINGLE))
            batch = label.split(" b")[-1]
            lines.append(
                f"| {batch} | {ms(floor)} | {ms(eager)} | {ms(single)} | "
                f"{_ratio(eager, single)} | {_ratio(eager, floor)} | {_ratio(single, floor)} |"
            )
        lines.append("")
    for label in [label for label in labels if label.endswith(" K")]:
        workload = label.split()[0]
        floor, single = find(label, FLOOR), find(label, SINGLE)
        lines += [
            f"**Vmapped sweep: per member-step cost vs K ({workload}, same batch for all)**",
            "",
            "| K | ms per member-step | vs one compiled model | x floor | compile s |",
            "|---:|---:|---:|---:|---:|",
            f"| one model ({SINGLE}) | {ms(single)} | 1.00x | {_ratio(single, floor)} | "
            f"{_fmt(single.compile_s if single else None, '.1f')} |",
        ]
        for m in scaling:
            if m.workload != label or not m.variant.startswith("vmap K="):
                continue
            k = m.variant.split()[1].removeprefix("K=")
            if m.status != "ok":
                lines.append(f"| {k} | {m.status} | | | |")
                continue
            lines.append(
                f"| {k} | {ms(m)} | {_ratio(single, m)} | {_ratio(m, floor)} | "
                f"{_fmt(m.compile_s, '.1f')} |"
            )
        lines.append("")
    return lines


def to_markdown(result: BenchResult) -> str:
    """One table per workload (ms per training step, the ratio to the imperative eager
    loop and the multiple of the matmul floor, measured side by side in one run: the
    ratios are medians of per-round ratios, see ``purestep.bench.runner.ratio``), the
    targets, and the scaling studies when run; headed by the device, the threads and the
    machine's load before, during and after the run."""
    lines = _header(result)
    for workload in dict.fromkeys(m.workload for m in result.measurements):
        lines += _variant_table(result, workload)
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
        lines.append("")
    lines += _scaling_tables(result.scaling)
    return "\n".join(lines).rstrip() + "\n"
