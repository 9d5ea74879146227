"""A model whose forward logs compiles (dynamo refuses Logger methods under fullgraph)."""

from __future__ import annotations

import functools
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps

log = logging.getLogger("tests.chatty_model")


@functools.lru_cache(None)
def warning_once(self: logging.Logger, *args: object) -> None:
    """transformers' logging.Logger.warning_once, as it adds it to the class."""
    self.warning(*args)


class Chatty(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log.warning("forward of a %s", type(self).__name__)
        log.warning_once("this is said once")  # type: ignore[attr-defined]
        logging.info("module-level logging")
        return self.lin(x)


@pytest.fixture
def hf_style_logger(monkeypatch):
    monkeypatch.setattr(logging.Logger, "warning_once", warning_once, raising=False)


def test_a_logging_forward_compiles_and_logs_eagerly(hf_style_logger, caplog):
    import torch._dynamo.config as dynamo_config

    before = set(dynamo_config.ignore_logging_functions)
    torch.manual_seed(0)
    model = Chatty()
    opt = ps.optim.sgd(lr=0.1)
    eager = ps.make_train_step(model, F.cross_entropy, opt)
    compiled = ps.compile(eager, backend="aot_eager")
    state = ps.TrainState.create(model, opt)
    batch = (torch.randn(2, 4), torch.tensor([0, 1]))
    with caplog.at_level(logging.WARNING, logger="tests.chatty_model"):
        got = compiled(state, batch)
        compiled(state, batch)
    # The eager validation step (first call of a batch signature) logged; the graph did not.
    assert [r.getMessage() for r in caplog.records].count("forward of a Chatty") == 1
    torch.testing.assert_close(got[0].params, eager(state, batch)[0].params)
    assert set(dynamo_config.ignore_logging_functions) == before  # scoped to the call
