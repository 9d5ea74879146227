"""Your own images: one sub-folder per class, read with Pillow, and PNGs written back.

    root/circle/0001.png  root/circle/0002.png ...  root/square/0001.png ...

The built-in ``image_folder`` dataset resizes every image to ``size`` x ``size`` and splits
each class's files into train/val/test by a permutation drawn from ``seed`` (so every
split has every class in the same proportions, and the same files on every call).
Only the requested split's files are decoded. ``save_image``/``image_grid`` write model
outputs (a generated sprite, a progression of them) as PNG.

Pillow is a dependency of matplotlib, so it is normally installed; without it these
functions say how to install it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from purestep.data.datasets import SPLITS, DataSplit

__all__ = ["IMAGE_EXTENSIONS", "image_folder", "image_grid", "load_image", "save_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ValueError("reading and writing images needs Pillow: pip install pillow") from None
    return Image


def load_image(
    path: str | Path, size: int | None = None, *, grayscale: bool = False
) -> torch.Tensor:
    """One image as float32 ``(C, H, W)`` in [0, 1] (C = 1 with ``grayscale``, else 3),
    resized to ``size`` x ``size`` (bilinear) when given."""
    image_mod = _pil()
    try:
        with image_mod.open(path) as img:
            img = img.convert("L" if grayscale else "RGB")
            if size is not None:
                img = img.resize((size, size), image_mod.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            width, height = img.size
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    channels = 1 if grayscale else 3
    return data.reshape(height, width, channels).permute(2, 0, 1).to(torch.float32) / 255.0


def save_image(image: torch.Tensor, path: str | Path, *, scale: int = 1) -> Path:
    """Write ``(C, H, W)`` or ``(H, W)`` values in [0, 1] (clamped) as a PNG, each pixel
    enlarged to ``scale`` x ``scale`` (nearest) so small sprites stay crisp."""
    image_mod = _pil()
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"expected an image of shape (1|3, H, W) or (H, W), got {tuple(image.shape)}"
        )
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    if scale > 1:
        pixels = pixels.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    raw = pixels.permute(1, 2, 0).contiguous().numpy()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # uint8 (H, W) reads as mode "L", (H, W, 3) as "RGB".
    image_mod.fromarray(raw[..., 0] if pixels.shape[0] == 1 else raw).save(out)
    return out


def image_grid(
    images: Sequence[torch.Tensor] | torch.Tensor,
    columns: int,
    pad: int = 1,
    pad_value: float = 0.5,
) -> torch.Tensor:
    """Tile equal-shaped ``(C, H, W)`` images row by row, ``columns`` per row, with ``pad``
    pixels of ``pad_value`` (grey) between them: one ``(C, H', W')`` image (for
    ``save_image``)."""
    items = list(images)
    if not items:
        raise ValueError("image_grid needs at least one image")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an int >= 1, got {columns!r}")
    shape = tuple(items[0].shape)
    if len(shape) != 3 or any(tuple(t.shape) != shape for t in items):
        raise ValueError(
            f"image_grid needs (C, H, W) images of one shape, got {[tuple(t.shape) for t in items]}"
        )
    c, h, w = shape
    rows = math.ceil(len(items) / columns)
    grid = torch.full((c, rows * (h + pad) + pad, columns * (w + pad) + pad), float(pad_value))
    for i, img in enumerate(items):
        r, k = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top : top + h, left : left + w] = img.detach().float().cpu().clamp(0, 1)
    return grid


def _class_files(root: Path, extensions: Sequence[str]) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise ValueError(f"data.root: {str(root)!r} is not a directory")
    exts = {e.lower() for e in extensions}
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise ValueError(
                f"data.root: class folder {str(folder)!r} holds no image ({sorted(exts)})"
            )
        found[folder.name] = files
    if len(found) < 2:
        raise ValueError(
            f"data.root: {str(root)!r} needs one sub-folder per class (at least 2), "
            f"found {sorted(found) or 'none'}"
        )
    return found


def image_folder(
    split: str = "train",
    seed: int = 0,
    *,
    root: str,
    size: int = 32,
    grayscale: bool = False,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> DataSplit | None:
    """Images under ``root/<class>/`` as float32 ``(n, C, size, size)`` in [0, 1] and int64
    class ids (classes: the sorted folder names).

    Per class, ``round(n * test_fraction)`` files go to test and ``round(n * val_fraction)``
    to val, picked by a permutation drawn from ``seed``; the rest train.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"data.size must be an int >= 1, got {size!r}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1) or val_fraction + test_fraction >= 1:
        raise ValueError(
            "data.val_fraction and data.test_fraction must be in [0, 1) with a sum < 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    files = _class_files(Path(root), extensions)
    classes = tuple(files)
    gen = torch.Generator().manual_seed(seed)
    chosen: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        paths = files[name]
        order = torch.randperm(len(paths), generator=gen).tolist()
        n_test, n_val = round(len(paths) * test_fraction), round(len(paths) * val_fraction)
        if n_test + n_val >= len(paths):
            raise ValueError(
                f"data.root: class {name!r} has {len(paths)} images, too few to keep any for "
                f"training with val_fraction={val_fraction}, test_fraction={test_fraction}"
            )
        picked = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }[split]
        chosen += [(paths[i], label) for i in sorted(picked)]
    if not chosen:
        return None
    x = torch.stack([load_image(p, size, grayscale=grayscale) for p, _ in chosen])
    y = torch.tensor([label for _, label in chosen], dtype=torch.int64)
    info = {"image_shape": list(x.shape[1:]), "root": str(root)}
    return DataSplit((x, y), classes=classes, info=info)
