"""The seed dataset: 8x8 sprites of filled circles (label 0) and squares (label 1).

Generated in code from a seed, so demos and tests need no download.
"""

from __future__ import annotations

import torch

__all__ = ["make_sprites"]


def make_sprites(
    n: int, seed: int = 0, *, size: int = 8, noise: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random sprites.

    Args:
        n: number of images.
        seed: generator seed (same seed, same data).
        size: image side in pixels.
        noise: std of the Gaussian pixel noise.

    Returns:
        ``(x, y)``: ``x`` float32 ``(n, size*size)`` in roughly [0, 1]; ``y`` float32 ``(n,)``,
        1.0 for a square, 0.0 for a circle (a ``BCEWithLogitsLoss`` target).
    """
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if size < 6:
        raise ValueError(f"size must be at least 6 pixels, got {size}")
    gen = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (n,), generator=gen)
    # Radius (circle) or half side (square) between 1.5 and size/3.
    extent = 1.5 + torch.rand(n, generator=gen) * (size / 3 - 1.5)
    margin = extent + 0.5
    cx = margin + torch.rand(n, generator=gen) * (size - 1 - 2 * margin)
    cy = margin + torch.rand(n, generator=gen) * (size - 1 - 2 * margin)
    coords = torch.arange(size, dtype=torch.float32)
    dy = coords.view(1, size, 1) - cy.view(n, 1, 1)
    dx = coords.view(1, 1, size) - cx.view(n, 1, 1)
    e = extent.view(n, 1, 1)
    circle = (dx.square() + dy.square()) <= e.square()
    square = (dx.abs() <= e) & (dy.abs() <= e)
    image = torch.where(label.view(n, 1, 1).bool(), square, circle).to(torch.float32)
    image = image + noise * torch.randn(image.shape, generator=gen)
    return image.reshape(n, size * size), label.to(torch.float32)
