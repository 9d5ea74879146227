"""What the bitwise matrices (``test_bitwise_vs_torch``, ``test_rules_bitwise``) share.

Every case (a rule and a combination of its flags) runs, in ``make test``:

* torch's defaults for the rule, with a typical value for each feature the case turns on
  (momentum 0.9, weight decay 1e-2 ...), for the full ``STEPS``: an explicit ``@example``,
  so the first moments, Nesterov terms, NAdam's momentum decay and RAdam's rectification
  are always exercised;
* hypothesis's draw(s) from the valid ranges, for ``DRAW_STEPS``. The strategies put a
  typical value (other than the default) first, so the one routine draw (derandomized,
  hence hypothesis's simplest) is a second realistic setting, not the range's lower end
  (beta1 = 0 would make a first moment invisible).

``make test-all`` draws more examples and runs each of them for the full ``STEPS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

import purestep as ps
from tests.support import FULL, run_bitwise

STEPS = 1000
# The routine draws run shorter than the explicit defaults example (the budget of `make
# test`); a wrong term shows within a few steps (see test_a_tiny_lr_change_is_detected).
DRAW_STEPS = STEPS if FULL else 150


def typical(value: float, strategy: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    """``value`` as the simplest draw (the one ``make test`` runs), else ``strategy``."""
    return st.just(value) | strategy


def check_case(
    *,
    build: Callable[[int], nn.Module],
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    criterion: Callable[[Any, Any], torch.Tensor],
    make_torch: Callable[[Any, dict[str, Any]], torch.optim.Optimizer],
    make_pure: Callable[[dict[str, Any]], ps.optim.Optimizer],
    strategy: st.SearchStrategy[dict[str, Any]],
    defaults: dict[str, Any],
    max_examples: int,
    label: str,
) -> None:
    """The matrix's check of one case: the imperative loop and the pure step stay bitwise
    equal (loss, parameters, buffers, optimizer state) after every step, for the defaults
    example and hypothesis's draws; raises ``AssertionError`` naming the first difference.
    A run whose parameters leave the finite range proves nothing, so it fails too."""
    data = list(data)

    @settings(max_examples=max_examples)
    @given(kw=strategy, seed=st.integers(0, 2**31 - 1), steps=st.just(DRAW_STEPS))
    @example(kw=defaults, seed=0, steps=STEPS)
    def check(kw: dict[str, Any], seed: int, steps: int) -> None:
        model = build(seed % 1000)
        torch_opt = make_torch(model.parameters(), kw)
        diverged = run_bitwise(model, criterion, torch_opt, make_pure(kw), data, steps, seed=seed)
        assert diverged is None, f"{label} {kw}: first difference at step {diverged} of {steps}"
        assert all(torch.isfinite(p).all() for p in model.parameters()), (
            f"{label} {kw}: the run diverged to inf/nan (narrow the strategy)"
        )

    check()
