"""Handwritten digits: a 10-class MLP with validation, ReduceLROnPlateau, early stopping,
the best checkpoint, and test precision/recall/F1 with the confusion matrix.

    python examples/digits.py [--epochs 60] [--out runs/digits_py]

The data is scikit-learn's bundled `load_digits` (1,797 8x8 images, no download); it
needs scikit-learn: pip install scikit-learn (or pip install -e '.[dev]').
"""

import argparse
from pathlib import Path

from torch import nn
from tutorial_data import digits

import purestep as ps
from purestep.data import Batches
from purestep.models import mlp
from purestep.train import Checkpointer, EarlyStopping, evaluate, fit, make_metrics
from purestep.train.plots import plot_confusion_matrix

parser = argparse.ArgumentParser(description="digits with early stopping")
parser.add_argument("--epochs", type=int, default=60)
parser.add_argument("--out", default="runs/digits_py")
args = parser.parse_args()
out = Path(args.out)

train, val, test = (digits(split, seed=0) for split in ("train", "val", "test"))
model = mlp(in_features=64, hidden=(128, 64), out_features=10, dropout=0.2)
# ReduceLROnPlateau: the lr lives in the optimizer state; fit steps the schedule on the
# validation loss after each epoch.
plateau = ps.optim.schedules.reduce_on_plateau(factor=0.5, patience=3)
opt = ps.optim.scheduled(ps.optim.adam(lr=3e-3), plateau, every=None)
names = ["accuracy", "precision_macro", "recall_macro", "f1_macro", "confusion_matrix"]
metrics = make_metrics(names, "multiclass")
criterion = nn.CrossEntropyLoss()
eval_step = ps.make_eval_step(model, criterion, metrics_fn=metrics.stats)
state, history = fit(
    ps.TrainState.create(model, opt, seed=0),
    ps.make_train_step(model, criterion, opt, metrics_fn=metrics.stats),
    Batches(train.data, 32, seed=0),
    epochs=args.epochs,
    eval_step=eval_step,
    val_data=Batches(val.data, 256, shuffle=False),
    metrics=metrics,
    plateau=plateau,
    early_stopping=EarlyStopping("val_loss", patience=8, restore_best=True),
    checkpointer=Checkpointer(out / "checkpoints", keep=2),  # + `best`, never pruned
    checkpoint_every_epochs=5,
)

result = evaluate(state, eval_step, Batches(test.data, 256, shuffle=False), metrics)
print(", ".join(f"test {k} {result[k]:.4f}" for k in names[:4]))
plot_confusion_matrix(result["confusion_matrix"], out / "confusion_matrix.png", labels=test.classes)
print(f"best checkpoint: {(out / 'checkpoints' / 'best').read_text().strip()}; plots in {out}")
