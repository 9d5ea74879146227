"""pytest-benchmark suite: `make bench-pytest` (the timed counterpart of tests/bench)."""
