"""Sprite generator: a small MLP learns to draw pixel sprites from a code.

    python examples/sprite_generator.py [--size 8|16] [--loss mse|l1] [--epochs 10]

The code e_k (one-hot) maps to sprite k: 8x8 grayscale (a heart, an invader) or 16x16
RGB (a mushroom, a slime). Every --every epochs the generated sprites are saved as a PNG,
and at the end one grid shows the progression (a row per saved epoch, the targets last).
"""

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call
from tutorial_data import pixel_sprites

import purestep as ps
from purestep.data import Batches
from purestep.data.image_folder import image_grid, save_image
from purestep.models import mlp
from purestep.train import fit

parser = argparse.ArgumentParser(description="a pixel-sprite generator")
parser.add_argument("--size", type=int, choices=[8, 16], default=8)
parser.add_argument("--loss", choices=["mse", "l1"], default="mse")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--every", type=int, default=2, help="save a PNG every N epochs")
parser.add_argument("--out", default=None, help="default: runs/sprite_generator_<size>_<loss>")
args = parser.parse_args()
out = Path(args.out or f"runs/sprite_generator_{args.size}_{args.loss}")

split = pixel_sprites("train", size=args.size, rgb=args.size == 16, repeat=8)
codes, targets = split.data
k, shape = len(split.info["sprites"]), split.info["image_shape"]
width = 32 if args.size == 8 else 64
model = mlp(in_features=k, hidden=(width, 2 * width), out_features=targets.shape[1])
opt = ps.optim.adam(lr=3e-3)
criterion = nn.MSELoss() if args.loss == "mse" else nn.L1Loss()
frames: list[torch.Tensor] = []


def draw(state: ps.TrainState) -> torch.Tensor:
    """The sprites the model draws now: (k, C, H, W)."""
    return functional_call(model, state.params, (torch.eye(k),)).detach().reshape(k, *shape)


def on_epoch_end(record: dict, state: ps.TrainState) -> None:
    if record["epoch"] % args.every == 0:
        frames.append(draw(state))
        save_image(image_grid(frames[-1], k), out / f"epoch-{record['epoch']:03d}.png", scale=8)


state, history = fit(
    ps.TrainState.create(model, opt, seed=0),
    ps.make_train_step(model, criterion, opt),
    Batches(split.data, k, seed=0),
    epochs=args.epochs,
    on_epoch_end=on_epoch_end,
)
goal = targets[:k].reshape(k, *shape)
save_image(image_grid([*torch.cat(frames), *goal], k), out / "progression.png", scale=8)
error = float((draw(state).clamp(0, 1) - goal).abs().mean())
print(f"mean absolute pixel error {error:.4f}; PNGs in {out}/")
