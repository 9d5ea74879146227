"""Data functions of the examples, generated in code (no download).

A config names them as ``examples.tutorial_data:<function>`` (run from the repo root);
the example scripts import them as ``tutorial_data``. Each follows purestep's data
contract: ``fn(split, seed, **kwargs)`` returns a ``DataSplit`` (or None for a split it
does not have).
"""

from __future__ import annotations

from pathlib import Path

import torch

from purestep.data.datasets import SPLITS, DataSplit

# -- pixel sprites: what the sprite generator learns to draw ------------------------------
# 8x8 grayscale ('#' lit) and 16x16 RGB (letters index PALETTE; '.' is the background).
SPRITES_8 = {
    "heart": [
        ".##..##.",
        "########",
        "########",
        "########",
        ".######.",
        "..####..",
        "...##...",
        "........",
    ],
    "invader": [
        "..#..#..",
        "...##...",
        "..####..",
        ".##..##.",
        "########",
        "#.####.#",
        "#.#..#.#",
        "..#..#..",
    ],
}
SPRITES_16 = {
    "mushroom": [
        ".....KKKKKK.....",
        "...KKRRWWRRKK...",
        "..KRRRWWWWRRRK..",
        ".KRRRRWWWWRRRRK.",
        ".KWRRRRWWRRRRWK.",
        "KWWWRRRRRRRRWWWK",
        "KWWWRRRRRRRRWWWK",
        "KWWRRKKKKKKRRWWK",
        "KRRRKSSSSSSKRRRK",
        ".KKKSSKSSKSSKKK.",
        "...KSSKSSKSSK...",
        "...KSSSSSSSSK...",
        "....KSSSSSSK....",
        ".....KKKKKK.....",
        "................",
        "................",
    ],
    "slime": [
        "................",
        "................",
        "................",
        "......KKKK......",
        "....KKGGGGKK....",
        "...KGGGGGGGGK...",
        "..KGGWKGGWKGGK..",
        "..KGGKKGGKKGGK..",
        ".KGGGGGGGGGGGGK.",
        ".KGLGGGGGGGGGGK.",
        ".KGLGKGGGGKGGGK.",
        ".KGGGGKKKKGGGGK.",
        ".KGGGGGGGGGGGGK.",
        "..KKKKKKKKKKKK..",
        "................",
        "................",
    ],
}
PALETTE = {
    ".": (0.55, 0.78, 1.0),
    "K": (0.1, 0.1, 0.12),
    "R": (0.86, 0.16, 0.16),
    "W": (0.98, 0.98, 0.98),
    "S": (0.98, 0.82, 0.63),
    "G": (0.24, 0.75, 0.31),
    "L": (0.6, 0.9, 0.55),
}


def sprite_sheet(size: int = 8, rgb: bool = False) -> tuple[list[str], torch.Tensor]:
    """The sprites' names and images ``(K, C, size, size)`` in [0, 1]."""
    art = {8: SPRITES_8, 16: SPRITES_16}.get(size)
    if art is None:
        raise ValueError(f"data.size: sprites come in 8 (grayscale) or 16 (RGB), got {size}")
    if rgb != (size == 16):
        raise ValueError("data.rgb: the 8x8 sprites are grayscale, the 16x16 ones RGB")
    images = []
    for rows in art.values():
        if rgb:
            pixels = torch.tensor([[PALETTE[c] for c in row] for row in rows])
            images.append(pixels.permute(2, 0, 1))
        else:
            images.append(torch.tensor([[[float(c == "#") for c in row] for row in rows]]))
    return list(art), torch.stack(images)


def pixel_sprites(
    split: str = "train", seed: int = 0, *, size: int = 8, rgb: bool = False, repeat: int = 16
) -> DataSplit | None:
    """Codes -> sprites: sprite k's code is the one-hot vector e_k, its target the sprite's
    pixels flattened. ``repeat`` copies make an epoch ``repeat`` steps of one batch of
    codes. There is nothing to validate on: no val/test split."""
    del seed  # the data is fixed
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "train":
        return None
    names, images = sprite_sheet(size, rgb)
    codes = torch.eye(len(names))
    x = codes.repeat(repeat, 1)
    y = images.flatten(1).repeat(repeat, 1)
    info = {"image_shape": list(images.shape[1:]), "sprites": names}
    return DataSplit((x, y), info=info)


# -- scikit-learn's bundled 8x8 digits ----------------------------------------------------
def digits(
    split: str = "train", seed: int = 0, *, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> DataSplit:
    """scikit-learn's ``load_digits`` (1,797 8x8 images, shipped with scikit-learn, no
    download): pixels scaled to [0, 1] as 64 features, int64 digit labels; rows split by
    a permutation drawn from ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError(
            "the digits example needs scikit-learn: pip install scikit-learn "
            "(or pip install -e '.[dev]')"
        ) from None
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(len(y) * test_fraction), round(len(y) * val_fraction)
    idx = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }[split]
    return DataSplit((x[idx], y[idx]), classes=tuple(str(d) for d in range(10)))


# -- an image folder of shapes, for the image_folder example -------------------------------
SHAPES = ("circle", "square", "triangle")


def write_shapes(root: str | Path, *, per_class: int = 60, size: int = 32, seed: int = 0) -> Path:
    """Write ``root/<shape>/<i>.png``: coloured circles, squares and triangles of random
    size and position on a random light background (Pillow). Existing files are kept."""
    from PIL import Image, ImageDraw

    root = Path(root)
    gen = torch.Generator().manual_seed(seed)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            r = int(torch.randint(size // 6, size // 3, (), generator=gen))
            cx, cy = (int(v) for v in torch.randint(r + 1, size - r - 1, (2,), generator=gen))
            fg = tuple(int(v) for v in torch.randint(0, 160, (3,), generator=gen))
            bg = tuple(int(v) for v in torch.randint(190, 256, (3,), generator=gen))
            path = root / shape / f"{i:04d}.png"
            if path.exists():
                continue
            img = Image.new("RGB", (size, size), bg)
            draw = ImageDraw.Draw(img)
            box = (cx - r, cy - r, cx + r, cy + r)
            if shape == "circle":
                draw.ellipse(box, fill=fg)
            elif shape == "square":
                draw.rectangle(box, fill=fg)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
            img.save(path)
    return root
