"""The benchmark harness: the matmul floor, batch and K variants, the isolated worker, the
thread count and the report's tables. No timing is asserted."""

from __future__ import annotations

import io
import json

import pytest
import torch

from purestep.bench import (
    FLOOR,
    WORKLOADS,
    BenchResult,
    Measurement,
    Unavailable,
    resolve_variant,
    run_benchmarks,
    to_markdown,
    with_batch,
)
from purestep.bench.command import main as bench_main
from purestep.bench.command import variant_names
from purestep.bench.variants import matmul_floor, matmul_shapes
from purestep.bench.worker import serve

CPU = torch.device("cpu")


def test_floor_shapes_follow_the_model():
    assert matmul_shapes(WORKLOADS["W1"], CPU) == [
        ((64, 784), (256, 784), False),  # the data needs no gradient
        ((64, 256), (256, 256), True),
        ((64, 256), (10, 256), True),
    ]
    w2 = matmul_shapes(WORKLOADS["W2"], CPU)
    assert len(w2) == 25 and w2[0] == ((32, 128), (128, 128), False)


def _profiled_matmuls(workload_name: str) -> int:
    """How many matmul kernels one imperative step of the workload runs."""
    workload = WORKLOADS[workload_name]
    model = workload.build()
    x, y = workload.batch(CPU)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        workload.criterion(model(x), y).backward()
    names = [e.name for e in prof.events()]
    return sum(n in ("aten::mm", "aten::addmm") for n in names)


@pytest.mark.parametrize("name", ["W1", "W2"])
def test_floor_runs_the_steps_matmuls(name):
    floor = matmul_floor(WORKLOADS[name], CPU)
    assert floor.notes == [f"{_profiled_matmuls(name)} matmuls per step"]
    floor.step()
    assert floor.loss() is None


def test_floor_is_unavailable_for_conv_nets():
    with pytest.raises(Unavailable, match="convolutions"):
        matmul_floor(WORKLOADS["W3"], CPU)


def test_with_batch():
    w = with_batch(WORKLOADS["W1"], 256)
    assert (w.name, w.batch_size, w.title) == ("W1 b256", 256, "MLP 784-256-256-10, batch 256")
    x, y = w.batch(CPU)
    assert x.shape == (256, 784) and y.shape == (256,)
    assert with_batch(WORKLOADS["W1"], 64) is WORKLOADS["W1"]
    assert matmul_shapes(w, CPU)[0][0] == (256, 784)
    with pytest.raises(ValueError, match="W3 has no variable batch size"):
        with_batch(WORKLOADS["W3"], 8)
    with pytest.raises(ValueError, match="batch size must be a positive int, got 0"):
        with_batch(WORKLOADS["W1"], 0)


def test_resolve_variant_by_k():
    sweep = resolve_variant("vmap K=2 sweep eager")(WORKLOADS["W1"], CPU)
    assert (sweep.name, sweep.steps_per_call, sweep.compiled) == ("vmap K=2 sweep eager", 2, False)
    sweep.step()
    sequential = resolve_variant("3 sequential eager")(with_batch(WORKLOADS["W1"], 16), CPU)
    assert sequential.steps_per_call == 3
    with pytest.raises(ValueError, match="unknown variant 'vmap K=x sweep compiled'"):
        resolve_variant("vmap K=x sweep compiled")
    with pytest.raises(ValueError, match="K must be >= 1"):
        resolve_variant("vmap K=0 sweep eager")


def test_worker_protocol():
    requests = [
        {"op": "time", "steps": 1},  # before prepare
        {"op": "prepare", "spec": {"workload": "W1", "variant": FLOOR, "batch": 16}},
        {"op": "time", "steps": 2},
        {"op": "graphs"},
        {"op": "reset_graphs"},
        {"op": "dance"},
        {"op": "prepare", "spec": {"workload": "W3", "variant": FLOOR, "batch": None}},
        {"op": "quit"},
        {"op": "graphs"},  # never read: quit ends the loop
    ]
    answers = io.StringIO()
    serve(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), answers, CPU)
    lines = [json.loads(line) for line in answers.getvalue().splitlines()]
    assert lines[0] == {"error": "RuntimeError: 'time' before prepare"}
    assert lines[1]["prepared"]["steps_per_call"] == 1 and not lines[1]["prepared"]["compiled"]
    assert lines[2]["ms"] > 0
    assert lines[3] == {"graphs": 0}
    assert lines[4] == {"ok": True}
    assert lines[5] == {"error": "ValueError: unknown op 'dance'"}
    assert "convolutions" in lines[6]["unavailable"]
    assert lines[7] == {"ok": True} and len(lines) == 8


def test_isolated_run_times_each_variant_in_its_own_process():
    result = run_benchmarks(
        "W1",
        variants=["imperative eager", "functional eager", "no such thing (yet)"][:2],
        steps=1,
        repeats=2,
        isolate=True,
        allow_load=True,
        load_interval_s=0.05,
        log=lambda line: None,
    )
    assert result.info["isolate"] is True
    ran = {m.variant: m for m in result.measurements}
    assert list(ran) == [FLOOR, "imperative eager", "functional eager"]
    assert all(m.status == "ok" and m.ms_per_step > 0 for m in ran.values())
    assert ran["functional eager"].first_loss == pytest.approx(ran["imperative eager"].first_loss)
    assert len(result.load["rounds_other_cores"]) == 2
    assert "each variant in its own process" in to_markdown(result)


def test_threads_are_set_for_the_run_and_restored():
    before = torch.get_num_threads()
    result = run_benchmarks(
        "W1",
        variants=[FLOOR],
        steps=1,
        repeats=1,
        threads=2 if before == 1 else 1,
        allow_load=True,
        load_interval_s=0.05,
        log=lambda line: None,
    )
    assert result.info["threads"] == result.load["threads"] == (2 if before == 1 else 1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive int, got 0"):
        run_benchmarks("W1", threads=0)
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        run_benchmarks("W1", variants=["nope"])


def test_command_line_errors(capsys):
    assert bench_main(["--variants", "none"]) == 2
    assert "--variants none needs --scaling" in capsys.readouterr().err
    assert bench_main(["--workloads", "W9"]) == 2
    assert "unknown workloads ['W9']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_main(["--threads", "0"])
    assert variant_names("a (b, c),d") == ["a (b, c)", "d"]


def _m(workload: str, variant: str, ms: float, **kw) -> Measurement:
    return Measurement(workload, variant, ms_per_step=ms, ms_per_call=ms, **kw)


def test_report_tables_from_measurements():
    result = BenchResult(device="CPU test, 2 threads", info=_INFO)
    result.measurements = [
        _m("W1", FLOOR, 0.4),
        _m("W1", "imperative eager", 1.6),
        _m("W1", "functional compiled (donated)", 0.8, compile_s=2.0, recompiles=0),
        Measurement("W1", "functional + CUDA graphs (donated)", status="n/a: no GPU"),
    ]
    result.scaling = [
        _m("W1 b16", FLOOR, 0.1, batch_size=16),
        _m("W1 b16", "imperative eager", 0.5, batch_size=16),
        _m("W1 b16", "functional compiled (donated)", 0.2, batch_size=16),
        _m("W1 K", FLOOR, 0.4),
        _m("W1 K", "functional compiled (donated)", 0.8, compile_s=1.0),
        _m("W1 K", "vmap K=8 sweep compiled", 0.2, members=8, compile_s=3.0),
        Measurement("W1 K", "vmap K=16 sweep compiled", status="failed: out of memory"),
    ]
    result.load = {
        "before_text": "load 0.10/0.20/0.30 (1/5/15 min), other processes 0.00 cores",
        "after_text": "load 1.90/0.60/0.40 (1/5/15 min), other processes 0.01 cores",
        "rounds_mean_other_cores": 0.02,
        "rounds_max_other_cores": 0.05,
        "cores": 2,
        "threads": 2,
        "problems": [],
    }
    text = to_markdown(result)
    assert "| functional compiled (donated) | 0.800 | 1,250 | 2.00x | 2.00x | 2.0 | 0 | — |" in text
    assert f"| {FLOOR} | 0.400 | 2,500 | 4.00x | 1.00x |" in text
    assert "| functional + CUDA graphs (donated) | n/a: no GPU |" in text
    assert "Load: before: load 0.10/0.20/0.30" in text and "LOADED" not in text
    assert "| 16 | 0.100 | 0.500 | 0.200 | 2.50x | 5.00x | 2.00x |" in text
    assert "| 8 | 0.200 | 4.00x | 0.50x | 3.0 |" in text
    assert "| 16 | failed: out of memory | | | |" in text
    result.load["problems"] = ["other processes used 1.20 cores in one timed round"]
    assert result.loaded
    assert "**LOADED MACHINE: these timings are not trustworthy** (other processes used" in (
        to_markdown(result)
    )


_INFO = {
    "torch": "2.13.0",
    "python": "3.11",
    "threads": 2,
    "timing": "interleaved",
    "repeats": 1,
    "steps_per_repeat": 1,
}


def test_full_speed_rounds_leave_out_slow_phases():
    from purestep.bench.runner import full_speed_rounds

    # rounds 2-4 ran in a slow phase of the VM: left out
    assert full_speed_rounds([0.55, 0.57, 0.94, 0.98, 1.07, 0.60, 0.55]) == [0, 1, 5, 6]
    # slow almost throughout: every round counts (and the monitor flags the run)
    assert full_speed_rounds([0.5, 1.0, 1.0, 1.1, 1.0, 0.9]) == [0, 1, 2, 3, 4, 5]
    assert full_speed_rounds([0.5]) == [0]


def test_slow_rounds_are_left_out_of_the_figures_and_reported(monkeypatch):
    from purestep.bench import runner
    from purestep.bench.monitor import LoadMonitor

    class Fake:
        """A runner whose time per call follows a script of rounds."""

        def __init__(self, spec, times):
            self.spec, self.times = spec, iter(times)

        def prepare(self):
            from purestep.bench.timing import Prepared

            return Prepared(0.0, None, 0, 1.0, False, 1)

        def time(self, steps):
            return next(self.times)

        def reset_graphs(self):
            pass

        def graphs(self):
            return 0

        def close(self):
            pass

    script = {FLOOR: [0.5, 1.0, 0.5, 0.5], "imperative eager": [1.5, 2.0, 1.5, 1.6]}
    session = runner.Session(
        CPU, 2, False, True, LoadMonitor(2, allow_load=True, interval_s=0.01), 1, 4
    )
    monkeypatch.setattr(session, "runner", lambda spec: Fake(spec, script[spec.variant]))
    # what other processes on this machine do is not this test's subject: no samples
    monkeypatch.setattr(session.monitor, "round_begin", lambda: None)
    monkeypatch.setattr(session.monitor, "round_end", lambda: None)
    floor, eager = runner.time_group(
        session, [runner.Spec("W1", FLOOR), runner.Spec("W1", "imperative eager")], "W1"
    )
    assert eager.round_ms == [1.5, 1.5, 1.6] and eager.ms_per_step == 1.5
    assert runner.ratio(eager, floor) == 3.0
    assert session.monitor.speed == [
        {"group": "W1", "floor_ms": [0.5, 1.0, 0.5, 0.5], "kept": [0, 2, 3], "rounds": 4}
    ]
    assert session.monitor.problems() == []
    result = BenchResult(device="cpu", info=_INFO, measurements=[floor, eager])
    result.load = session.monitor.report()
    assert "W1 3/4 (floor 0.500-1.000 ms)" in to_markdown(result)
