"""How busy the machine is around and during a benchmark, from ``/proc``.

A timing is only worth reporting when nothing else competes for the cores the benchmark
uses: on a 2-core VM, one other busy process makes every variant 1.5-2x slower, by
different amounts, so even the ratios move. This module reads the load average and the
CPU time other processes spend (``/proc/<pid>/stat``, this process and its children
excluded), so the runner can refuse to start on a busy machine, watch every timed round,
and flag a run that was disturbed. Off Linux (no ``/proc``) only the load average is read.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

__all__ = [
    "BusyProcess",
    "CpuSnapshot",
    "CpuUse",
    "LoadSample",
    "MachineBusy",
    "available_cores",
    "other_cores_between",
    "sample_load",
    "take_snapshot",
]

_PROC = "/proc"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# A process counts as busy above this share of one core (over the sampling interval).
BUSY_SHARE = 0.1


class MachineBusy(ValueError):
    """Other work competes for the cores a benchmark would use (see ``sample_load``)."""


def available_cores() -> int:
    """The cores this process may run on (its affinity mask; ``os.cpu_count`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BusyProcess:
    """Another process and the share of one core it used while sampled."""

    pid: int
    cores: float
    command: str


@dataclass
class CpuSnapshot:
    """CPU ticks used so far: the whole machine, this process tree, every other process."""

    when: float
    system: int = 0  # busy ticks of all CPUs (user, nice, system, irq, softirq)
    steal: int = 0  # ticks the hypervisor gave our vCPUs to someone else
    ours: int = 0  # this process and its live descendants
    ticks: dict[int, int] = field(default_factory=dict)  # other pid -> utime + stime
    commands: dict[int, str] = field(default_factory=dict)


def _read_cpu_line() -> tuple[int, int]:
    """(busy, steal) ticks of all CPUs together, from the first line of /proc/stat."""
    try:
        with open(f"{_PROC}/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return 0, 0
    values = [int(v) for v in fields[1:]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq, steal


def _read_stat(pid: str) -> tuple[int, int, int, str] | None:
    """(pid, parent pid, utime + stime ticks, command name) of one process, or None."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:  # exited between listing and reading
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    open_paren, close_paren = raw.find("("), raw.rfind(")")
    if open_paren < 0 or close_paren < 0:
        return None
    rest = raw[close_paren + 2 :].split()
    try:
        return (
            int(pid),
            int(rest[1]),
            int(rest[11]) + int(rest[12]),
            raw[open_paren + 1 : close_paren],
        )
    except (IndexError, ValueError):
        return None


def _command_line(pid: int, fallback: str) -> str:
    try:
        with open(f"{_PROC}/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return fallback
    return (text or fallback)[:120]


def take_snapshot() -> CpuSnapshot:
    """CPU ticks of every other process now (empty where ``/proc`` is missing)."""
    snap = CpuSnapshot(time.perf_counter())
    try:
        pids = [p for p in os.listdir(_PROC) if p.isdigit()]
    except OSError:
        return snap
    snap.system, snap.steal = _read_cpu_line()
    stats = [s for s in map(_read_stat, pids) if s is not None]
    parents = {pid: ppid for pid, ppid, _, _ in stats}
    mine = os.getpid()

    def ours(pid: int) -> bool:
        # This process or a descendant (isolated variants, compile workers); bounded walk.
        for _ in range(64):
            if pid == mine:
                return True
            pid = parents.get(pid, 0)
            if pid <= 1:
                return False
        return False

    for pid, _, ticks, name in stats:
        if ours(pid):
            snap.ours += ticks
        else:
            snap.ticks[pid] = ticks
            snap.commands[pid] = name
    return snap


@dataclass(frozen=True)
class CpuUse:
    """What the machine did between two snapshots, in cores (1.0 = one core all along)."""

    other_cores: float  # every CPU tick not spent by this process tree
    steal_cores: float  # the hypervisor running someone else on our vCPUs
    busy: tuple[BusyProcess, ...]  # the other processes above BUSY_SHARE


def other_cores_between(before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
    """Cores other processes kept busy between two snapshots, in total and per process.

    The total is the machine's busy time less this process tree's, so it includes
    processes too short-lived to appear in either snapshot (a test suite's subprocesses);
    the per-process list names the long-lived ones."""
    seconds = max(after.when - before.when, 1e-6)
    per_process: list[BusyProcess] = []
    listed = 0.0
    for pid, ticks in after.ticks.items():
        used = (ticks - before.ticks.get(pid, 0)) / _TICKS / seconds
        listed += max(used, 0.0)
        if used >= BUSY_SHARE:
            command = _command_line(pid, after.commands[pid])
            per_process.append(BusyProcess(pid, round(used, 2), command))
    per_process.sort(key=lambda b: -b.cores)
    if after.system or before.system:
        other = ((after.system - before.system) - (after.ours - before.ours)) / _TICKS / seconds
    else:  # no /proc/stat: only what the listed processes used
        other = listed
    steal = (after.steal - before.steal) / _TICKS / seconds
    # Tick counters are coarse (1/100 s): never report a negative share.
    return CpuUse(round(max(other, 0.0), 2), round(max(steal, 0.0), 2), tuple(per_process))


@dataclass(frozen=True)
class LoadSample:
    """The machine's load at one moment: load averages and what else was running."""

    loadavg: tuple[float, float, float]
    other_cores: float  # cores other processes used over the sampling interval
    steal_cores: float
    busy: tuple[BusyProcess, ...]
    interval_s: float

    def describe(self) -> str:
        """One line: the 1/5/15-minute load and the busiest other processes."""
        one, five, fifteen = self.loadavg
        text = (
            f"load {one:.2f}/{five:.2f}/{fifteen:.2f} (1/5/15 min), other processes "
            f"{self.other_cores:.2f} cores"
            + (f", hypervisor steal {self.steal_cores:.2f}" if self.steal_cores >= 0.05 else "")
        )
        if self.busy:
            text += ": " + "; ".join(f"{b.command} ({b.cores:.2f})" for b in self.busy[:3])
        return text


def sample_load(interval_s: float = 1.0) -> LoadSample:
    """Sample the load: ``os.getloadavg()`` and other processes' CPU over ``interval_s``."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s}")
    try:
        loadavg = os.getloadavg()
    except OSError:  # pragma: no cover - not available on this platform
        loadavg = (0.0, 0.0, 0.0)
    before = take_snapshot()
    time.sleep(interval_s)
    use = other_cores_between(before, take_snapshot())
    return LoadSample(
        (round(loadavg[0], 2), round(loadavg[1], 2), round(loadavg[2], 2)),
        use.other_cores,
        use.steal_cores,
        use.busy,
        interval_s,
    )
