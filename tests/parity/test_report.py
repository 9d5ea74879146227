"""purestep.parity.report: the table shows the rows asked for; what the report lists."""

from __future__ import annotations

import itertools

import pytest

from purestep.parity.report import Divergence, ParityReport, StepRecord


def synthetic(n: int, diverged_at: int | None = None) -> ParityReport:
    report = ParityReport("bitwise", "free", 0.0, 0.0, steps_requested=n)
    report.records = [
        StepRecord(t, 1.0, 1.0, equal=diverged_at is None or t < diverged_at) for t in range(n)
    ]
    if diverged_at is not None:
        report.first_divergence = Divergence(diverged_at, "loss", "", (), 1.0, 1.5, 7)
    return report


def table_steps(text: str) -> list[int]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and "step" not in line]
    return [int(line.split("|")[1].replace("✗", "").strip()) for line in rows]


@pytest.mark.parametrize("diverged_at", [None, 0, 1, 50, 98, 99])
@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 12, 99])
def test_limit_prints_exactly_that_many_rows(limit, diverged_at):
    # Old code: `--rows 4` on 100 steps diverging at step 0 printed 3 rows, 12 printed 11,
    # and a divergence in the middle could print more rows than asked for.
    steps = table_steps(synthetic(100, diverged_at).to_markdown(limit=limit))
    assert len(steps) == limit and steps == sorted(set(steps))
    if diverged_at is not None:
        assert diverged_at in steps
    if limit >= 3:
        assert {0, 99} <= set(steps)


def test_divergence_neighbours_and_even_spread():
    steps = table_steps(synthetic(100, 50).to_markdown(limit=12))
    assert {49, 50, 51, 0, 99} <= set(steps)
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert max(gaps) <= 20  # spread over the run, not bunched at one end
    assert table_steps(synthetic(100).to_markdown(limit=5)) == [0, 25, 50, 74, 99]


def test_all_rows_without_limit_or_when_there_are_fewer():
    assert table_steps(synthetic(7).to_markdown()) == list(range(7))
    assert table_steps(synthetic(7, 3).to_markdown(limit=20)) == list(range(7))
    assert table_steps(synthetic(7, 3).to_markdown(limit=0)) == []


@pytest.mark.parametrize("limit", [-1, 2.5, True, "4"])
def test_bad_limit(limit):
    with pytest.raises(ValueError, match="limit must be None or an int >= 0"):
        synthetic(10).to_markdown(limit=limit)
