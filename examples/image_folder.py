"""Your own images: a folder per class, read by the built-in `image_folder` dataset, and a
small CNN.

    python examples/image_folder.py [--root runs/shapes] [--epochs 25] [--data-only]

It first writes its own folder of PNGs (coloured circles, squares and triangles on
light backgrounds: root/<shape>/0000.png ...), so it needs no download; point --root at
a folder of your own images instead (sub-folders = classes).
"""

import argparse
from pathlib import Path

from torch import nn
from tutorial_data import write_shapes

import purestep as ps
from purestep.data import Batches
from purestep.data.image_folder import image_folder, image_grid, save_image
from purestep.models import convnet
from purestep.train import EarlyStopping, evaluate, fit, make_metrics

parser = argparse.ArgumentParser(description="a CNN on a folder of images")
parser.add_argument("--root", default="runs/shapes")
parser.add_argument("--epochs", type=int, default=25)
parser.add_argument("--per-class", type=int, default=200, help="images to write per shape")
parser.add_argument("--data-only", action="store_true", help="write the images and stop")
args = parser.parse_args()

if not Path(args.root).exists():
    write_shapes(args.root, per_class=args.per_class, size=32, seed=0)
    print(f"wrote {args.per_class} PNGs per shape under {args.root}/")
if args.data_only:
    raise SystemExit(0)

# Resized to 24x24 RGB; per class 70 % train, 15 % val, 15 % test (seeded).
train, val, test = (
    image_folder(s, seed=0, root=args.root, size=24) for s in ("train", "val", "test")
)
print(f"classes {train.classes}: {len(train)} train / {len(val)} val / {len(test)} test images")
save_image(
    image_grid(train.data[0][:: len(train) // 24][:24], 8), Path(args.root) / "samples.png", scale=4
)

model = convnet(in_channels=3, channels=(8, 16), image_size=24, hidden=32, out_features=3)
opt = ps.optim.adam(lr=1e-3)
metrics = make_metrics(["accuracy", "f1_macro", "confusion_matrix"], "multiclass")
criterion = nn.CrossEntropyLoss()
eval_step = ps.make_eval_step(model, criterion, metrics_fn=metrics.stats)
state, history = fit(
    ps.TrainState.create(model, opt, seed=0),
    ps.make_train_step(model, criterion, opt, metrics_fn=metrics.stats),
    Batches(train.data, 32, seed=0),
    epochs=args.epochs,
    eval_step=eval_step,
    val_data=Batches(val.data, 64, shuffle=False),
    metrics=metrics,
    early_stopping=EarlyStopping("val_loss", patience=5, restore_best=True),
)
result = evaluate(state, eval_step, Batches(test.data, 64, shuffle=False), metrics)
print(f"test accuracy {result['accuracy']:.4f}; confusion matrix {result['confusion_matrix']}")
