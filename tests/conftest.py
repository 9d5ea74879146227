"""Shared test configuration: hypothesis profiles and deterministic torch settings."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, settings

# purestep signs what it writes with a per-user key ($XDG_CONFIG_HOME/purestep/key): the
# tests (and the commands they start, which inherit this) use a key of their own, never
# the user's.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="purestep-tests-config-")

# `make test` runs the "default" profile; `make test-all` sets HYPOTHESIS_PROFILE=all.
settings.register_profile(
    "default",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "all",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The tests use tiny models, where one thread is fastest, and CI machines may run other
# jobs: with 2+ threads per process, OpenMP's spin-waiting slows everything down many
# times over. Parity checks compare both sides in the same process, so the thread count
# cannot change a verdict.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_global_rng():
    """Each test starts from the same global RNG and leaves it as it found it."""
    state = torch.get_rng_state()
    torch.manual_seed(1234)
    yield
    torch.set_rng_state(state)
