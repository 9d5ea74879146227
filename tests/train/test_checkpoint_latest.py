"""load_checkpoint(run_dir) resumes from ``latest``, not ``best`` (no epochs lost)."""

from __future__ import annotations

import pytest

from purestep.train import Checkpointer, load_checkpoint
from purestep.train.checkpoint import resolve_checkpoint
from tests.train.test_checkpoint import _loop, _trained


def test_a_run_directory_loads_its_latest_checkpoint(tmp_path):
    step, state = _trained()
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(state, _loop(3), best=True)
    ckpt.save(state, _loop(7))  # a later epoch that was not the best
    for where in (tmp_path, tmp_path / "checkpoints"):
        assert load_checkpoint(where, step).loop.step == 7
        assert resolve_checkpoint(where).name == "step-00000003"  # evaluate/predict: best
    assert load_checkpoint(tmp_path / "checkpoints" / "best", step).loop.step == 3
    (tmp_path / "checkpoints" / "latest").unlink()
    assert load_checkpoint(tmp_path, step).loop.step == 3  # no latest: the best
    with pytest.raises(ValueError, match="prefer must be"):
        resolve_checkpoint(tmp_path, prefer="newest")
