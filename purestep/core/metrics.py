"""Metrics as pure functions of ``(outputs, targets)``, for ``metrics_fn=``."""

from __future__ import annotations

import torch

__all__ = ["accuracy", "binary_accuracy", "binary_classification_metrics", "classification_metrics"]


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max class equals the integer target (0-d float tensor)."""
    if logits.dim() != targets.dim() + 1:
        raise ValueError(
            f"accuracy expects logits (N, C) and class targets (N,), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    return (logits.argmax(dim=-1) == targets).to(torch.float32).mean()


def binary_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0
) -> torch.Tensor:
    """Fraction of ``(logits > threshold) == (targets > 0.5)`` (logits, as BCEWithLogitsLoss)."""
    if logits.shape != targets.shape:
        raise ValueError(
            "binary_accuracy expects equal shapes, got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    return ((logits > threshold) == (targets > 0.5)).to(torch.float32).mean()


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"accuracy": ...}`` for multi-class logits; a ready ``metrics_fn``."""
    return {"accuracy": accuracy(logits, targets)}


def binary_classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``{"accuracy": ...}`` for binary logits; a ready ``metrics_fn``."""
    return {"accuracy": binary_accuracy(logits, targets)}
