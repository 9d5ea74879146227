"""The load accounting of ``purestep bench``: /proc parsing, the per-round arithmetic, the
verdicts, and a busy machine refused before anything is built. No timing is asserted."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from purestep.bench import MachineBusy, load, monitor, run_benchmarks
from purestep.bench.command import main as bench_main
from purestep.bench.load import BusyProcess, CpuSnapshot, LoadSample, other_cores_between


def _fake_proc(root: Path, processes: dict[int, tuple[int, int, str]], cpu: str) -> None:
    """A /proc with ``pid -> (parent, ticks, name)`` and the first line of /proc/stat."""
    (root / "stat").write_text(cpu + "\nintr 0\n")
    for pid, (parent, ticks, name) in processes.items():
        d = root / str(pid)
        d.mkdir()
        # pid (name) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        # utime stime ...
        utime, stime = ticks - ticks // 4, ticks // 4
        fields = ["S", str(parent), "0", "0", "0", "0", "0", "0", "0", "0", "0"]
        fields += [str(utime), str(stime), "0", "0", "20", "0", "1"]
        (d / "stat").write_text(f"{pid} ({name}) " + " ".join(fields) + "\n")
        (d / "cmdline").write_bytes(name.encode() + b"\0--flag\0")


def test_snapshot_splits_this_process_tree_from_the_others(tmp_path, monkeypatch):
    me = os.getpid()
    _fake_proc(
        tmp_path,
        {
            1: (0, 5, "init"),
            me: (1, 100, "python"),
            me + 1: (me, 40, "worker"),  # a child
            me + 2: (me + 1, 8, "grandchild (compile)"),
            me + 3: (1, 300, "pytest (x) y"),  # another user's, name with parentheses
        },
        "cpu  1000 10 200 5000 0 5 5 30 0 0",
    )
    monkeypatch.setattr(load, "_PROC", str(tmp_path))
    snap = load.take_snapshot()
    assert snap.ours == 148
    assert snap.ticks == {1: 5, me + 3: 300}
    assert snap.commands[me + 3] == "pytest (x) y"
    assert (snap.system, snap.steal) == (1220, 30)


def test_other_cores_are_the_machine_less_this_tree():
    before = CpuSnapshot(0.0, system=1000, steal=10, ours=300, ticks={7: 50, 8: 10})
    # 2 s later: the machine did 300 ticks (3 s of CPU), 120 of them ours; pid 7 used 150
    # ticks (0.75 core), pid 8 nothing, pid 9 (new) 10 ticks, and someone short-lived the rest.
    after = CpuSnapshot(
        2.0,
        system=1300,
        steal=30,
        ours=420,
        ticks={7: 200, 8: 10, 9: 10},
        commands={7: "busy", 8: "idle", 9: "new"},
    )
    use = other_cores_between(before, after)
    assert use.other_cores == pytest.approx((300 - 120) / load._TICKS / 2.0, abs=0.01)
    assert use.steal_cores == pytest.approx(20 / load._TICKS / 2.0, abs=0.01)
    assert [b.pid for b in use.busy] == [7]  # pid 9: 0.05 core, under BUSY_SHARE
    assert use.busy[0].cores == pytest.approx(150 / load._TICKS / 2.0, abs=0.01)


def test_coarse_ticks_never_give_a_negative_share():
    before = CpuSnapshot(0.0, system=1000, ours=100)
    after = CpuSnapshot(0.01, system=1001, ours=103)  # ours ticked, the machine's not yet
    assert other_cores_between(before, after).other_cores == 0.0


def test_a_process_outside_this_tree_is_seen():
    # Double fork: the busy loop is re-parented away from this process, as another user's.
    code = "import time\nend = time.time() + 20\nwhile time.time() < end: pass\n"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; "
            "print(subprocess.Popen([sys.executable, '-c', "
            f"{code!r}], stdout=subprocess.DEVNULL).pid)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = launcher.communicate(timeout=30)
    pid = int(out)
    try:
        found: list[BusyProcess] = []
        deadline = time.time() + 15
        while not found and time.time() < deadline:
            sample = load.sample_load(0.5)
            found = [b for b in sample.busy if b.pid == pid]
        assert found, sample
        assert "time.time()" in found[0].command
        assert sample.other_cores >= load.BUSY_SHARE
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def test_a_child_of_this_process_is_not_counted():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.3)
        sample = load.sample_load(0.5)
        assert all(b.pid != child.pid for b in sample.busy)
    finally:
        child.kill()
        child.wait()


def test_sample_load_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        load.sample_load(0)


def _sample(one: float, others: float) -> LoadSample:
    busy = (BusyProcess(42, others, "pytest tests/ -q"),) if others else ()
    return LoadSample((one, one, one), others, 0.0, busy, 0.01)


@pytest.fixture
def cores(monkeypatch):
    monkeypatch.setattr(monitor, "available_cores", lambda: 2)


def test_busy_machine_is_refused_naming_the_load(monkeypatch, cores):
    monkeypatch.setattr(monitor, "sample_load", lambda interval: _sample(4.2, 1.8))
    with pytest.raises(MachineBusy, match=r"1-minute load 4\.20 >= 1\.00") as info:
        monitor.LoadMonitor(2).start()
    message = str(info.value)
    assert "other processes use 1.80 cores" in message
    assert "pytest tests/ -q" in message and "--allow-load" in message


def test_allowed_load_is_timed_and_flagged(monkeypatch, cores):
    monkeypatch.setattr(monitor, "sample_load", lambda interval: _sample(4.2, 1.8))
    mon = monitor.LoadMonitor(2, allow_load=True)
    mon.start()
    mon.finish()
    report = mon.report()
    assert report["allowed"]
    assert len(report["problems"]) == 3  # before: load and processes; after: load
    assert report["problems"][-1] == "1-minute load 4.20 after the run >= 3.00"


def test_quiet_machine_passes_and_rounds_are_judged(monkeypatch, cores):
    monkeypatch.setattr(monitor, "sample_load", lambda interval: _sample(0.3, 0.05))
    mon = monitor.LoadMonitor(2)
    mon.start()
    assert mon.problems() == []
    # A disturbed round: other processes took 0.6 of a core while it ran.
    snapshots = iter(
        [CpuSnapshot(0.0, system=0, ours=0), CpuSnapshot(1.0, system=int(0.6 * load._TICKS))]
    )
    monkeypatch.setattr(monitor, "take_snapshot", lambda: next(snapshots))
    mon.round_begin()
    mon.round_end()
    mon.finish()
    problems = mon.problems()
    assert any("averaged 0.60 cores during the timed rounds" in p for p in problems)
    assert any("0.60 cores in one timed round" in p for p in problems)
    assert mon.report()["rounds_other_cores"] == [0.6]


def test_fewer_threads_leave_spare_cores(monkeypatch, cores):
    # One thread on two cores: one other busy process does not compete.
    monkeypatch.setattr(monitor, "sample_load", lambda interval: _sample(1.5, 1.0))
    mon = monitor.LoadMonitor(1)
    mon.start()
    assert mon.problems() == []


def test_monitor_errors():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        monitor.LoadMonitor(0)
    with pytest.raises(RuntimeError, match="round_end without round_begin"):
        monitor.LoadMonitor(1).round_end()


def test_run_refuses_a_busy_machine_before_building_anything(monkeypatch, capsys):
    monkeypatch.setattr(monitor, "sample_load", lambda interval: _sample(6.0, 2.0))
    monkeypatch.setattr(monitor, "available_cores", lambda: 2)
    built: list[str] = []
    monkeypatch.setattr("purestep.bench.timing.InProcess.prepare", lambda self: built.append("x"))
    with pytest.raises(MachineBusy):
        run_benchmarks("W1", variants=["imperative eager"], steps=1, repeats=1, log=print)
    assert built == []
    assert bench_main(["--workloads", "W1", "--steps", "1", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert "purestep bench: the machine is busy" in err and "--allow-load" in err
