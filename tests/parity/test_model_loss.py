"""parity.compare / compare_compiled with criterion=None: the model's own loss."""

from __future__ import annotations

import pytest
import torch

import purestep as ps
from tests.core.test_model_loss import TinyLM, _lm_batch


def _adamw(params):
    return torch.optim.AdamW(params, lr=1e-2)


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_compare_trains_on_the_models_own_loss_bitwise(accumulation_steps):
    batches = [_lm_batch(0), _lm_batch(1)]
    report = ps.parity.compare(
        TinyLM, None, _adamw, batches, steps=4, accumulation_steps=accumulation_steps
    )
    assert report.ok, report.summary()
    assert report.steps == 4


def test_compare_without_a_loss_is_a_value_error():
    batch = _lm_batch()
    del batch["labels"]
    with pytest.raises(ValueError, match="must compute its own loss"):
        ps.parity.compare(TinyLM, None, _adamw, [batch], steps=1)
    with pytest.raises(ValueError, match="criterion returned NoneType"):
        ps.parity.compare(
            lambda: torch.nn.Linear(3, 2),
            lambda out, y: None,
            _adamw,
            [(torch.randn(4, 3), torch.randn(4, 2))],
            steps=1,
        )


@pytest.mark.slow
def test_compare_compiled_with_the_models_own_loss():
    report = ps.parity.compare_compiled(
        TinyLM, None, ps.optim.adamw(lr=1e-2), [_lm_batch(0), _lm_batch(1)], steps=2
    )
    assert report.ok, report.summary()
