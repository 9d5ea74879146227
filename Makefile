# Every target creates (or reuses) .venv by itself, from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip
# Tests run warm caches off the repo and in parallel-safe temp dirs.
PYTEST := $(BIN)/python -m pytest

.PHONY: venv demo test test-all lint bench bench-quick bench-pytest clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The constraints file pins torch==2.13.0 (the CPU wheel); never an unpinned torch.
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} installed, expected 2.13.0')"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/purestep demo

# Representative suite (~8 min on 2 cores, one pytest worker per core): everything but
# tests marked slow. Each worker runs torch on one thread (tests/conftest.py).
test: $(STAMP)
	$(PYTEST) -m "not slow" -q -n 2

# Everything, compile-heavy and long parity runs included, with more hypothesis examples.
test-all: $(STAMP)
	HYPOTHESIS_PROFILE=all $(PYTEST) -q -n 2

# Benchmarks need the peers (JAX + optax, torchopt): the `bench` extra.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# The README's tables: W1,W2 at full length, then the slow W3,W4 at 5 rounds x 5 calls.
bench: $(BENCH_STAMP)
	$(BIN)/purestep bench --workloads W1,W2 --scaling --json bench.json
	$(BIN)/purestep bench --workloads W3,W4 --steps 5 --repeats 5 --json bench-w34.json

bench-quick: $(BENCH_STAMP)
	$(BIN)/purestep bench --quick

bench-pytest: $(BENCH_STAMP)
	$(PYTEST) benchmarks --benchmark-only

lint: $(STAMP)
	$(BIN)/ruff check purestep tests benchmarks examples
	$(BIN)/ruff format --check purestep tests benchmarks examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis .benchmarks
