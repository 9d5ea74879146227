"""Circles vs squares: a small CNN on 24x24 sprites with BCEWithLogitsLoss.

    python examples/circles_squares.py [--epochs 20]

The run of examples/circles_squares.yaml (without its ReduceLROnPlateau) written out with
the library API: generated data, the pure train step, early stopping on the validation
loss with the best epoch restored, then test accuracy and the confusion matrix.
"""

import argparse
from pathlib import Path

from torch import nn

import purestep as ps
from purestep.data import Batches
from purestep.data.datasets import sprites
from purestep.models import convnet
from purestep.train import EarlyStopping, evaluate, fit, make_metrics
from purestep.train.plots import plot_confusion_matrix

parser = argparse.ArgumentParser(description="circles vs squares with a small CNN")
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--n-train", type=int, default=8192)
parser.add_argument("--out", default="runs/circles_squares_py")
args = parser.parse_args()

# Noisy 24x24 images (1 channel) of filled circles (0) and squares (1), from seeds.
sizes = {"n_train": args.n_train, "n_val": 1024, "n_test": 2048}
train, val, test = (
    sprites(s, seed=0, image=True, size=24, **sizes) for s in ("train", "val", "test")
)

model = convnet(
    in_channels=1, channels=(8, 16), image_size=24, hidden=32, dropout=0.3, out_features=1
)
opt = ps.optim.adam(lr=3e-3)
metrics = make_metrics(["accuracy", "precision", "recall", "f1", "confusion_matrix"], "binary")
criterion = nn.BCEWithLogitsLoss()
eval_step = ps.make_eval_step(model, criterion, metrics_fn=metrics.stats)
state, history = fit(
    ps.TrainState.create(model, opt, seed=0),
    ps.make_train_step(model, criterion, opt, metrics_fn=metrics.stats),
    Batches(train, 64, seed=0),
    epochs=args.epochs,
    eval_step=eval_step,
    val_data=Batches(val, 256, shuffle=False),
    metrics=metrics,
    early_stopping=EarlyStopping("val_loss", patience=6, restore_best=True),
)

result = evaluate(state, eval_step, Batches(test, 256, shuffle=False), metrics)
print(f"test: accuracy {result['accuracy']:.4f}, f1 {result['f1']:.4f}")
print(f"confusion matrix (rows: true circle/square): {result['confusion_matrix']}")
png = Path(args.out) / "confusion_matrix.png"
plot_confusion_matrix(result["confusion_matrix"], png, labels=["circle", "square"])
print(f"wrote {png}")
