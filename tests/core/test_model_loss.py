"""Hugging Face conventions: dict batches as keyword arguments, the model's own loss."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps


class Output(OrderedDict):
    """Like transformers' ModelOutput: a dict whose keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


class TinyLM(nn.Module):
    """A model that computes its own loss when given labels (GPT-2 style keywords; its
    second positional argument is not the labels)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(8, 20)

    def forward(
        self,
        input_ids: torch.Tensor,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Output:
        assert past_key_values is None
        h = self.drop(self.emb(input_ids))
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        out = Output(logits=self.head(h))
        if labels is not None:
            out["loss"] = F.cross_entropy(out["logits"].flatten(0, 1), labels.flatten())
        return out


class ScalarLoss(nn.Module):
    """A model returning its loss as a 0-d tensor, from positional (x, y)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.lin(x), y)


def _lm_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (4, 6), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones(4, 6), "labels": ids}


def _imperative_step(model: nn.Module, batch: dict[str, torch.Tensor], seed: int) -> tuple:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with ps.rng_scope(ps.rng_key(seed)):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
    return loss.detach(), {k: p.detach() for k, p in model.named_parameters()}


def test_dict_batch_is_keyword_arguments_and_the_model_loss_trains_bitwise():
    torch.manual_seed(0)
    model = TinyLM()
    ref = TinyLM()
    ref.load_state_dict(model.state_dict())
    opt = ps.optim.adamw(lr=1e-2)
    state = ps.TrainState.create(model, opt, seed=3)
    step = ps.make_train_step(model, None, opt)
    batch = _lm_batch()
    new_state, metrics = step(state, batch)
    loss, params = _imperative_step(ref, batch, seed=3)
    assert torch.equal(metrics["loss"], loss)
    assert all(torch.equal(new_state.params[k], p) for k, p in params.items())
    evaluate = ps.make_eval_step(model, None)
    assert evaluate(new_state, batch)["loss"].dim() == 0


def test_tuple_batch_and_scalar_output_without_criterion():
    torch.manual_seed(0)
    model = ScalarLoss()
    opt = ps.optim.sgd(lr=0.1)
    state = ps.TrainState.create(model, opt)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    _, metrics = ps.make_train_step(model, None, opt)(state, (x, y))
    assert torch.equal(metrics["loss"], model(x, y))
    # A criterion still takes (inputs..., targets): the model gets only x.
    linear = model.lin
    lin_state = ps.TrainState.create(linear, opt)
    _, m = ps.make_train_step(linear, nn.CrossEntropyLoss(), opt)(lin_state, (x, y))
    assert torch.equal(m["loss"], F.cross_entropy(linear(x), y))


def test_model_loss_errors_are_clear():
    torch.manual_seed(0)
    model = TinyLM()
    opt = ps.optim.sgd(lr=0.1)
    state = ps.TrainState.create(model, opt)
    step = ps.make_train_step(model, None, opt)
    ids = _lm_batch()["input_ids"]
    with pytest.raises(ValueError, match="must compute its own loss.*labels"):
        step(state, {"input_ids": ids})  # no labels: the model returns no loss
    with pytest.raises(ValueError, match="dict batch goes to the model as keyword"):
        ps.make_train_step(model, nn.CrossEntropyLoss(), opt)(state, _lm_batch())
    with pytest.raises(TypeError, match="keys must be str"):
        step(state, {0: ids})
    with pytest.raises(TypeError, match="at most one of criterion"):
        ps.make_train_step(model, nn.CrossEntropyLoss(), opt, loss_fn=lambda *a: 0)
    with pytest.raises(ValueError, match="rejected the batch inputs .*keyword arguments"):
        step(state, {"input_ids": ids, "bogus": ids})


def test_loss_fn_apply_takes_keyword_arguments():
    torch.manual_seed(0)
    model = TinyLM()
    opt = ps.optim.sgd(lr=0.1)
    state = ps.TrainState.create(model, opt, seed=1)

    def loss_fn(apply, params, buffers, batch, rng):
        out = apply(params, buffers, batch["input_ids"], labels=batch["labels"])
        return out.loss, {"logit_mean": out.logits.mean()}

    batch = _lm_batch()
    _, metrics = ps.make_train_step(model, None, opt, loss_fn=loss_fn)(state, batch)
    _, own = ps.make_train_step(model, None, opt)(state, batch)
    assert torch.equal(metrics["loss"], own["loss"])
    assert "logit_mean" in metrics


def test_compiled_model_loss_matches_eager():
    torch.manual_seed(0)
    model = TinyLM()
    opt = ps.optim.adamw(lr=1e-2)
    state = ps.TrainState.create(model, opt, seed=0)
    eager = ps.make_train_step(model, None, opt, return_grads=True)
    compiled = ps.compile(eager, backend="aot_eager")
    batch = _lm_batch()
    (e_state, e_m), (c_state, c_m) = eager(state, batch), compiled(state, batch)
    torch.testing.assert_close(c_m["loss"], e_m["loss"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(c_m["grads"], e_m["grads"], atol=1e-6, rtol=1e-6)
    assert torch.equal(c_state.rng, e_state.rng)


@pytest.mark.slow
def test_vmapped_model_loss_per_member_equals_solo():
    torch.manual_seed(0)
    model = ScalarLoss()
    opt = ps.optim.sgd(lr=0.1)
    states = [ps.TrainState.create(model, opt, seed=s) for s in (0, 1)]
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    step = ps.make_train_step(model, None, opt)
    stacked, _ = ps.vmap(step)(ps.stack_states(states), (x, y))
    for got, state in zip(ps.unstack_state(stacked), states, strict=True):
        torch.testing.assert_close(got.params, step(state, (x, y))[0].params)
