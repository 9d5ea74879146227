"""The benchmark workloads (DESIGN.md 6): a model, a batch and a loss each."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from purestep.models import layernorm_mlp, mlp, resnet8, tiny_lm

__all__ = ["WORKLOADS", "Workload", "get_workloads", "with_batch"]


@dataclass(frozen=True)
class Workload:
    """One benchmark: ``build()`` a model, ``batch(device)`` a fixed input batch."""

    name: str
    title: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    gpu_only: bool = False
    amp: bool = False
    jax_spec: dict | None = None  # how to build the same net in JAX (MLP-type workloads)
    # Classification workloads: the per-example input shape, so the batch size can change
    # (``with_batch``, the scaling runs); None for the others.
    sample_shape: tuple[int, ...] | None = None
    batch_size: int | None = None


def _classification(
    shape: tuple[int, ...], classes: int = 10
) -> Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]:
    def make(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=g)
        y = torch.randint(0, classes, (shape[0],), generator=g)
        return x.to(device), y.to(device)

    return make


def _channels_last(
    make: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]],
) -> Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]:
    def make_cl(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = make(device)
        return x.contiguous(memory_format=torch.channels_last), y

    return make_cl


def _tokens(
    batch: int, seq: int, vocab: int
) -> Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]:
    def make(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        t = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        return t[:, :-1].to(device), t[:, 1:].to(device)

    return make


def _lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


WORKLOADS: dict[str, Workload] = {
    "W1": Workload(
        "W1",
        "MLP 784-256-256-10, batch 64",
        lambda: mlp(784, (256, 256), 10),
        _classification((64, 784)),
        F.cross_entropy,
        jax_spec={"kind": "mlp", "sizes": [784, 256, 256, 10]},
        sample_shape=(784,),
        batch_size=64,
    ),
    "W2": Workload(
        "W2",
        "24 x [Linear128 + LayerNorm + GELU], batch 32",
        lambda: layernorm_mlp(width=128, depth=24, out_features=10),
        _classification((32, 128)),
        F.cross_entropy,
        jax_spec={"kind": "ln_gelu", "width": 128, "depth": 24, "out": 10},
        sample_shape=(128,),
        batch_size=32,
    ),
    "W3": Workload(
        "W3",
        "ResNet-8 32x32, batch 128, channels-last",
        # channels-last for every variant: the fast conv layout on CPU, for the imperative
        # variants too (the pure step converts conv weights inside the graph by itself).
        lambda: resnet8().to(memory_format=torch.channels_last),  # type: ignore[call-overload]
        _channels_last(_classification((128, 3, 32, 32))),
        F.cross_entropy,
    ),
    "W4": Workload(
        "W4",
        "MLP 4 x 1024, batch 1024",
        lambda: mlp(1024, (1024, 1024, 1024, 1024), 10),
        _classification((1024, 1024)),
        F.cross_entropy,
        sample_shape=(1024,),
        batch_size=1024,
    ),
    "W5": Workload(
        "W5",
        "6-layer transformer d512 seq256, batch 32 (GPU, AMP)",
        lambda: tiny_lm(vocab=8192, d_model=512, heads=8, seq=256, layers=6, dropout=0.0),
        _tokens(32, 256, 8192),
        _lm_loss,
        gpu_only=True,
        amp=True,
    ),
}


def get_workloads(names: str | None, device: torch.device) -> list[Workload]:
    """Workloads by comma-separated names (all that run on ``device`` when None)."""
    if names is None:
        chosen = list(WORKLOADS)
    else:
        chosen = [n.strip().upper() for n in names.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in WORKLOADS]
        if unknown:
            raise ValueError(f"unknown workloads {unknown}; choose from {sorted(WORKLOADS)}")
    out = [WORKLOADS[n] for n in chosen]
    if device.type != "cuda":
        skipped = [w.name for w in out if w.gpu_only]
        if names is not None and skipped:
            raise ValueError(f"workloads {skipped} need a CUDA device")
        out = [w for w in out if not w.gpu_only]
    return out


def with_batch(workload: Workload, size: int) -> Workload:
    """``workload`` with another batch size (same model, loss and data recipe); its name
    says the size (``W1 b256``) unless it is the workload's own."""
    if workload.sample_shape is None or workload.batch_size is None:
        raise ValueError(f"workload {workload.name} has no variable batch size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"batch size must be a positive int, got {size!r}")
    if size == workload.batch_size:
        return workload
    base = workload.name.split()[0]
    return dataclasses.replace(
        workload,
        name=f"{base} b{size}",
        title=f"{workload.title.rsplit(', batch', 1)[0]}, batch {size}",
        batch=_classification((size, *workload.sample_shape)),
        batch_size=size,
    )
