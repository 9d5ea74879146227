"""The demo job: circles vs squares, trained through the compiled pure step, then a parity
check against the imperative PyTorch loop. ``purestep demo`` / ``make demo`` run it."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

import purestep as ps
from purestep.core.metrics import binary_classification_metrics
from purestep.data import iterate_batches, make_sprites

__all__ = ["main", "sprite_mlp"]


def sprite_mlp(seed: int = 0) -> nn.Module:
    """The demo classifier: 64 -> 64 -> 64 -> 1 logit, with dropout."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 1),
        nn.Flatten(0),  # (N, 1) -> (N,), the shape of BCEWithLogitsLoss targets
    )


def main(
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 3e-3,
    compile: bool = True,
    parity_steps: int = 100,
    print_fn: Callable[[str], None] = print,
) -> dict[str, float]:
    """Train, evaluate, check parity; returns the final metrics (for tests)."""
    torch.manual_seed(0)
    x_train, y_train = make_sprites(2048, seed=0)
    x_val, y_val = make_sprites(512, seed=1)
    model = sprite_mlp()
    criterion = nn.BCEWithLogitsLoss()
    opt = ps.optim.adam(lr=lr)
    state = ps.TrainState.create(model, opt, seed=0)
    train_step = ps.make_train_step(model, criterion, opt, metrics_fn=binary_classification_metrics)
    eval_step = ps.make_eval_step(model, criterion, metrics_fn=binary_classification_metrics)
    if compile:
        train_step, eval_step = ps.compile(train_step), ps.compile(eval_step)
    mode = "compiled" if compile else "eager"
    print_fn(
        f"circles vs squares: {len(x_train)} train / {len(x_val)} val 8x8 sprites, "
        f"MLP 64-64-64-1, BCEWithLogitsLoss + Adam(lr={lr}), {mode} pure step"
    )
    result: dict[str, float] = {}
    for epoch in range(epochs):
        start = time.perf_counter()
        losses = []
        for batch in iterate_batches(
            (x_train, y_train), batch_size, seed=0, epoch=epoch, drop_last=True
        ):
            state, metrics = train_step(state, batch)
            losses.append(metrics["loss"])
        val = eval_step(state, (x_val, y_val))
        result = {
            "train_loss": float(torch.stack(losses).mean()),
            "val_loss": float(val["loss"]),
            "val_accuracy": float(val["accuracy"]),
        }
        note = ", incl. compile" if compile and epoch == 0 else ""
        print_fn(
            f"epoch {epoch + 1}/{epochs}  train loss {result['train_loss']:.4f}  "
            f"val loss {result['val_loss']:.4f}  val acc {result['val_accuracy']:.3f}  "
            f"({time.perf_counter() - start:.1f} s{note})"
        )

    if parity_steps > 0:
        batches = list(iterate_batches((x_train, y_train), batch_size, seed=1, drop_last=True))
        report = ps.parity.compare(
            model=sprite_mlp,
            criterion=criterion,
            torch_optimizer=lambda params: torch.optim.Adam(params, lr=lr, foreach=False),
            batches=batches,
            steps=parity_steps,
            mode="bitwise",
            seed=0,
        )
        print_fn("")
        print_fn(
            f"parity vs the imperative nn.Module + torch.optim.Adam loop ({parity_steps} steps):"
        )
        print_fn(report.to_markdown(limit=6))
        result["parity_ok"] = float(report.ok)
    return result
