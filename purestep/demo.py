"""The demo job (``purestep demo`` / ``make demo``): circles vs squares trained with
``purestep train`` through the compiled pure step, evaluated on its test split, then a
bitwise parity check against the imperative PyTorch loop. The config is
``examples/sprites.yaml`` (embedded here so an installed package can run it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

__all__ = ["DEMO_CONFIG", "main"]

DEMO_CONFIG = """
model: {name: mlp, in_features: 64, hidden: [64, 64], out_features: 1, dropout: 0.1}
data: {name: sprites, n_train: 2048, n_val: 512, n_test: 512, batch_size: 64, seed: 0}
loss: bce_with_logits
optimizer: {name: Adam, lr: 3e-3}
scheduler: {name: ReduceLROnPlateau, factor: 0.5, patience: 2}
metrics: [accuracy, precision, recall, f1, confusion_matrix]
early_stopping: {monitor: val_loss, patience: 5, restore_best: true}
train: {epochs: 5, seed: 0, compile: true}
checkpoint: {every_epochs: 1, keep: 3}
parity: {steps: 100}
"""


def main(
    epochs: int = 5,
    compile: bool = True,
    parity_steps: int = 100,
    out: str | Path = "runs/demo",
    print_fn: Callable[[str], None] = print,
) -> dict[str, float]:
    """Train, evaluate, check parity; returns the headline figures (for tests)."""
    from purestep.train.config import parse_config
    from purestep.train.run import evaluate_checkpoint, parity_run, train_run

    raw = yaml.safe_load(DEMO_CONFIG)
    raw["train"] |= {"epochs": epochs, "compile": compile}
    cfg = parse_config(raw)
    print_fn(f"$ purestep train --config examples/sprites.yaml --out {out}")
    run = train_run(cfg, out, overwrite=True, print_fn=print_fn)
    last = run.history.records[-1]
    result = {"val_loss": float(last["val_loss"]), "val_accuracy": float(last["val_accuracy"])}
    print_fn("")
    print_fn(f"$ purestep evaluate --checkpoint {out} --split test")
    test = evaluate_checkpoint(out, split="test")
    print_fn(
        f"test ({test['examples']} sprites): loss {test['loss']:.4f}, accuracy "
        f"{test['accuracy']:.3f}, f1 {test['f1']:.3f}; confusion {test['confusion_matrix']}"
    )
    result["test_accuracy"] = float(test["accuracy"])
    if parity_steps > 0:
        print_fn("")
        print_fn(f"$ purestep parity --config examples/sprites.yaml --steps {parity_steps}")
        report = parity_run(cfg, steps=parity_steps)
        print_fn(report.to_markdown(limit=6))
        result["parity_ok"] = float(report.ok)
    else:
        print_fn("parity check skipped (--parity-steps 0)")
    return result
