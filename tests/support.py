"""Models, data and the imperative reference loop shared by the tests."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import purestep as ps

FULL = os.environ.get("HYPOTHESIS_PROFILE") == "all"


def examples(default: int, full: int) -> int:
    """Hypothesis example count: small in `make test`, larger in `make test-all`."""
    return full if FULL else default


def mlp(
    seed: int = 0, n_in: int = 10, hidden: int = 16, n_out: int = 4, p: float = 0.2
) -> nn.Module:
    """MLP with dropout."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, n_out)
    )


def cnn(seed: int = 0, n_out: int = 4) -> nn.Module:
    """Small CNN with BatchNorm, for 1x6x6 inputs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, n_out),
    )


MODELS: dict[str, tuple[Callable[[int], nn.Module], tuple[int, ...]]] = {
    "mlp_dropout": (mlp, (10,)),
    "cnn_batchnorm": (cnn, (1, 6, 6)),
}


def batches(
    input_shape: tuple[int, ...], n: int = 8, batch: int = 16, classes: int = 4, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, *input_shape, generator=g),
            torch.randint(0, classes, (batch,), generator=g),
        )
        for _ in range(n)
    ]


def neg_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss to *maximize* (bounded above), so maximize=True runs stay finite."""
    return -F.cross_entropy(outputs, targets)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.equal``, except that NaNs in the same places count as equal."""
    if torch.equal(a, b):
        return True
    if a.shape != b.shape or a.dtype != b.dtype or not a.is_floating_point():
        return False
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def tree_equal(a: Any, b: Any) -> bool:
    return ps.core.pytree.tree_bitwise_equal(a, b)


def run_bitwise(
    model: nn.Module,
    criterion: Callable[[Any, Any], torch.Tensor],
    torch_opt: torch.optim.Optimizer,
    opt: ps.optim.Optimizer,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    seed: int = 0,
    before_step: Callable[[nn.Module], bool | None] | None = None,
    torch_scheduler: Any = None,
) -> int | None:
    """Run the imperative loop (over ``model``/``torch_opt``) and the pure step side by side;
    return the first step where any loss, parameter, buffer or optimizer-state tensor differs
    bitwise, or None. An optimizer-state tensor on one side only (and not documented in
    ``ps.parity.NO_COUNTERPART``) raises ``AssertionError``: it would be skipped otherwise.

    ``before_step(model)`` runs between ``backward()`` and ``optimizer.step()`` (e.g. gradient
    clipping); if it returns False the step is skipped. ``torch_scheduler.step()`` runs after
    every optimizer step.
    """
    from purestep.optim.convert import torch_state_view

    spec_model = copy.deepcopy(model)
    state = ps.TrainState.create(model, opt, seed=seed)
    initial_view = torch_state_view(state.opt_state)
    step = ps.make_train_step(spec_model, criterion, opt)
    key = ps.rng_key(seed)
    names = {id(p): n for n, p in model.named_parameters()}
    data = list(data)
    for t in range(steps):
        x, y = data[t % len(data)]
        with ps.rng_scope(key) as scope:
            torch_opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            if before_step is None or before_step(model) is not False:
                torch_opt.step()
            if torch_scheduler is not None:
                torch_scheduler.step()
        key = scope.key
        state, metrics = step(state, (x, y))
        if not same_bits(loss.detach(), metrics["loss"]):
            return t
        for n, p in model.named_parameters():
            if not same_bits(p.detach(), state.params[n]):
                return t
        for n, b in model.named_buffers():
            if not same_bits(b, state.buffers[n]):
                return t
        view = torch_state_view(state.opt_state)
        match = ps.parity.match_optimizer_state(torch_opt, names, view, initial_view)
        if match.unmatched:
            raise AssertionError(
                f"step {t}: optimizer state without counterpart: {match.unmatched}"
            )
        for name, v, fun in match.pairs:
            if not same_bits(v.to(fun.dtype) if name.endswith(".step") else v, fun):
                return t
    return None
