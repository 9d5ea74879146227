"""Watch the machine's load around and during a benchmark run, and judge it.

The runner samples the load before anything is built (``LoadMonitor.start``: a busy
machine is refused unless ``allow_load``), takes a CPU snapshot around every timed round
(what other processes used *while* the variants were timed), and samples again at the
end. ``LoadMonitor.report`` is what the JSON and the markdown header show, with the
reasons a run is flagged as measured on a loaded machine.

Limits, in cores, with ``spare = cores - threads`` (the cores the benchmark leaves free):
before the run, the 1-minute load average must stay under ``spare + 1`` and other
processes under ``spare + 0.5`` cores; during the timed rounds, other processes must
average under ``spare + 0.25`` cores and no round may exceed ``spare + 0.5``; after the
run, the load average (which now counts the benchmark's own threads) must stay under
``cores + 1``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

from purestep.bench.load import (
    CpuSnapshot,
    LoadSample,
    MachineBusy,
    available_cores,
    other_cores_between,
    sample_load,
    take_snapshot,
)

__all__ = ["LoadMonitor"]

LOAD_MARGIN = 1.0  # 1-minute load average above the spare cores, before the run
OTHER_MARGIN = 0.5  # other processes' cores above the spare cores (a sample, a round)
MEAN_MARGIN = 0.25  # other processes' cores above the spare cores, mean over the rounds


class LoadMonitor:
    """The load before, during (per timed round) and after one benchmark run."""

    def __init__(self, threads: int, *, allow_load: bool = False, interval_s: float = 1.0):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.cores = available_cores()
        self.threads = threads
        self.spare = max(self.cores - threads, 0)
        self.allow_load = allow_load
        self.interval_s = interval_s
        self.before: LoadSample | None = None
        self.after: LoadSample | None = None
        self.rounds: list[float] = []  # other processes' cores during each timed round
        self.steal: list[float] = []
        self.busy_during: dict[str, float] = {}  # command -> most cores seen in a round
        self.speed: list[dict[str, Any]] = []  # per group: the floor's rounds, those kept
        self._snapshot: CpuSnapshot | None = None

    def start(self) -> LoadSample:
        """Sample the load; raise ``MachineBusy`` if it is too high (unless allowed)."""
        self.before = sample_load(self.interval_s)
        problems = self.problems_before()
        if problems and not self.allow_load:
            raise MachineBusy(
                "the machine is busy, timings would not be trustworthy: "
                + "; ".join(problems)
                + f" ({self.before.describe()}). Wait for a quiet machine, or pass "
                "--allow-load to time anyway (the report is then flagged)"
            )
        return self.before

    def problems_before(self) -> list[str]:
        """Why the load before the run is too high (empty if it is fine)."""
        if self.before is None:
            return []
        out = []
        one = self.before.loadavg[0]
        if one >= self.spare + LOAD_MARGIN:
            out.append(
                f"1-minute load {one:.2f} >= {self.spare + LOAD_MARGIN:.2f} "
                f"({self.cores} cores, the benchmark uses {self.threads} threads)"
            )
        if self.before.other_cores >= self.spare + OTHER_MARGIN:
            out.append(
                f"other processes use {self.before.other_cores:.2f} cores "
                f">= {self.spare + OTHER_MARGIN:.2f}"
            )
        return out

    def round_begin(self) -> None:
        self._snapshot = take_snapshot()

    def round_end(self) -> None:
        if self._snapshot is None:
            raise RuntimeError("round_end without round_begin")
        use = other_cores_between(self._snapshot, take_snapshot())
        self._snapshot = None
        self.rounds.append(use.other_cores)
        self.steal.append(use.steal_cores)
        for b in use.busy:
            self.busy_during[b.command] = max(self.busy_during.get(b.command, 0.0), b.cores)

    def note_speed(self, label: str, floor: list[float] | None, kept: list[int]) -> None:
        """Record a group's floor per round and the full-speed rounds that were kept."""
        if floor:
            self.speed.append(
                {
                    "group": label,
                    "floor_ms": [round(f, 4) for f in floor],
                    "kept": kept,
                    "rounds": len(floor),
                }
            )

    def finish(self) -> LoadSample:
        self.after = sample_load(self.interval_s)
        return self.after

    def problems(self) -> list[str]:
        """Every reason to distrust the run's timings (empty: measured on a quiet machine)."""
        out = self.problems_before()
        if self.rounds:
            mean, worst = statistics.fmean(self.rounds), max(self.rounds)
            if mean >= self.spare + MEAN_MARGIN:
                out.append(f"other processes averaged {mean:.2f} cores during the timed rounds")
            if worst >= self.spare + OTHER_MARGIN:
                out.append(f"other processes used {worst:.2f} cores in one timed round")
        varied = [
            g["group"]
            for g in self.speed
            if len(g["kept"]) == g["rounds"] and max(g["floor_ms"]) > 1.25 * min(g["floor_ms"])
        ]
        if varied:
            out.append(
                "the machine's speed varied in most rounds of "
                + ", ".join(varied)
                + " (the matmul floor per round)"
            )
        if self.after is not None and self.after.loadavg[0] >= self.cores + LOAD_MARGIN:
            out.append(
                f"1-minute load {self.after.loadavg[0]:.2f} after the run "
                f">= {self.cores + LOAD_MARGIN:.2f}"
            )
        return out

    def report(self) -> dict[str, Any]:
        """JSON-ready: cores, threads, the samples, the rounds and the verdict."""
        busy = sorted(self.busy_during.items(), key=lambda kv: -kv[1])
        return {
            "cores": self.cores,
            "threads": self.threads,
            "before": asdict(self.before) if self.before else None,
            "after": asdict(self.after) if self.after else None,
            "before_text": self.before.describe() if self.before else None,
            "after_text": self.after.describe() if self.after else None,
            "rounds_other_cores": self.rounds,
            "rounds_mean_other_cores": round(statistics.fmean(self.rounds), 3)
            if self.rounds
            else None,
            "rounds_max_other_cores": max(self.rounds) if self.rounds else None,
            "rounds_max_steal_cores": max(self.steal) if self.steal else None,
            "busy_during": [{"command": c, "cores": v} for c, v in busy[:5]],
            "speed": self.speed,
            "problems": self.problems(),
            "allowed": self.allow_load,
        }
