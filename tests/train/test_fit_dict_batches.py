"""ps.fit and evaluation with dict batches and the model's own loss (criterion=None)."""

from __future__ import annotations

import torch

import purestep as ps
from tests.core.test_model_loss import TinyLM, _lm_batch


def test_fit_trains_on_dict_batches_with_the_models_own_loss():
    torch.manual_seed(0)
    model = TinyLM()
    opt = ps.optim.adamw(lr=1e-2)
    state = ps.TrainState.create(model, opt)
    step, evaluate = ps.make_train_step(model, None, opt), ps.make_eval_step(model, None)
    val = [_lm_batch(2)]
    before = float(evaluate(state, val[0])["loss"])
    state, _ = ps.fit(
        state, step, [_lm_batch(0), _lm_batch(1)], epochs=3, eval_step=evaluate, val_data=val
    )
    assert int(state.step) == 6
    assert float(evaluate(state, val[0])["loss"]) < before
