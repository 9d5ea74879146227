"""Hugging Face models from tiny random configs (no download): a dict batch, the model's
own loss; eager bitwise the imperative loop, compiled = eager (verified). Skipped when
transformers is not installed (it is a test dependency only, in the dev extra)."""

from __future__ import annotations

import pytest
import torch

import purestep as ps

transformers = pytest.importorskip("transformers")


def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def _bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16,
    )  # fmt: skip
    return transformers.BertForMaskedLM(config)


def _llama() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, max_position_embeddings=16,
        attention_dropout=0.1,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _batches(n: int = 2) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 100, (4, 8), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return out


def test_gpt2_with_its_own_loss_is_bitwise_the_imperative_loop():
    report = ps.parity.compare(
        _gpt2, None, lambda p: torch.optim.AdamW(p, lr=1e-3), _batches(), steps=3
    )
    assert report.ok, report.summary()


@pytest.mark.slow
@pytest.mark.parametrize("make", [_bert, _llama], ids=["bert", "llama"])
def test_more_hf_models_bitwise_and_func_engine_draws_eagers_masks(make):
    report = ps.parity.compare(
        make, None, lambda p: torch.optim.AdamW(p, lr=1e-3), _batches(), steps=3
    )
    assert report.ok, report.summary()
    model = make()
    opt = ps.optim.adamw(lr=1e-3)
    state = ps.TrainState.create(model, opt, seed=0)
    batch = _batches(1)[0]
    auto = ps.make_train_step(model, None, opt)(state, batch)[1]["loss"]
    func = ps.make_train_step(model, None, opt, grad_engine="func")(state, batch)[1]["loss"]
    torch.testing.assert_close(func, auto, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_gpt2_compiles_and_matches_eager():
    """HF's loss path logs (warning_once) and its dropout follows attention: the compiled
    step compiles, draws eager's masks and passes verify."""
    model = _gpt2()
    opt = ps.optim.adamw(lr=1e-3)
    state = ps.TrainState.create(model, opt, seed=0)
    eager = ps.make_train_step(model, None, opt, return_grads=True)
    compiled = ps.compile(eager)
    for batch in _batches():
        (e_state, e_m), (c_state, c_m) = eager(state, batch), compiled(state, batch)
        torch.testing.assert_close(c_m["loss"], e_m["loss"], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(c_m["grads"], e_m["grads"], atol=1e-6, rtol=1e-5)
        assert torch.equal(c_state.rng, e_state.rng)
        state = e_state
