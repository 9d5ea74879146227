"""Benchmark smoke test (CI): every variant runs on W1 and they agree numerically.

No time is asserted here; the timings and targets live in `purestep bench` and
benchmarks/ (pytest-benchmark).
"""

from __future__ import annotations

import json

import pytest

from purestep.bench import FLOOR, VARIANTS, run_benchmarks, to_markdown
from purestep.cli import main


@pytest.fixture(scope="module")
def smoke():
    # allow_load: CI machines run other jobs; nothing here depends on the timings.
    return run_benchmarks(
        "W1",
        "cpu",
        steps=1,
        repeats=1,
        allow_load=True,
        load_interval_s=0.05,
        log=lambda line: None,
    )


def test_every_variant_runs_or_says_why(smoke):
    statuses = {m.variant: m.status for m in smoke.measurements}
    assert set(statuses) == set(VARIANTS)
    failed = {k: v for k, v in statuses.items() if v.startswith("failed")}
    assert not failed, failed
    assert statuses["functional + CUDA graphs (donated)"].startswith("n/a")  # CPU run
    ran = [m for m in smoke.measurements if m.status == "ok"]
    assert len(ran) >= 12
    assert smoke.measurements[0].variant == FLOOR  # every table has its floor


def test_variants_agree_on_the_first_loss(smoke):
    losses = {
        m.variant: m.first_loss
        for m in smoke.measurements
        if m.status == "ok" and m.first_loss is not None
    }
    assert "bare loop (same compiled step)" in losses
    reference = losses["imperative eager"]
    for name, loss in losses.items():
        assert loss == pytest.approx(reference, rel=1e-4), name


def test_report_has_ratios_and_compile_counts(smoke):
    text = to_markdown(smoke)
    assert "| imperative eager |" in text and "1.00x" in text
    assert "| x floor |" in text and "torch threads: 2" in text and "Load: before: load" in text
    compiled = smoke.get("W1", "functional compiled (donated)")
    assert compiled.compile_s > 0 and compiled.recompiles == 0
    assert any(t["workload"] == "W1" for t in smoke.targets)
    data = json.loads(json.dumps(smoke.to_dict()))
    assert data["load"]["threads"] == 2 and len(data["load"]["rounds_other_cores"]) == 1


def test_cli_bench_errors(capsys):
    assert main(["bench", "--workloads", "W9"]) == 2
    assert "unknown workloads ['W9']" in capsys.readouterr().err
    assert main(["bench", "--workloads", "W5"]) == 2  # GPU only
