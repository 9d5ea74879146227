"""Explicit random keys for the pure step.

A key is the full state of a torch generator (a CPU ``uint8`` tensor: 5056 bytes for the
CPU Mersenne Twister, 16 bytes for CUDA's Philox seed+offset). During a step the device's
default generator is set from ``state.rng``, the step runs (dropout and any ``torch.rand``
draw from it), the advanced generator state becomes the new key, and the caller's global
generator is restored. So randomness is a function of the state alone, and a key made by
``rng_key(seed)`` reproduces exactly the masks of an imperative loop that called
``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["RngScope", "convert_key", "key_device_type", "rng_key", "rng_scope"]

_CUDA_KEY_BYTES = 16


def rng_key(seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """The generator state that ``torch.manual_seed(seed)`` gives on ``device``'s type."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    device_type = torch.device(device).type
    if device_type == "cpu":
        gen = torch.Generator()
    elif device_type == "cuda":
        gen = torch.Generator(device="cuda")
    else:
        raise ValueError(f"explicit RNG keys support cpu and cuda devices, got {device_type!r}")
    gen.manual_seed(seed)
    return gen.get_state()


def key_device_type(key: torch.Tensor) -> str:
    """Which generator a key belongs to, read from its size."""
    return "cuda" if key.numel() == _CUDA_KEY_BYTES else "cpu"


def convert_key(key: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """A key for ``device``'s generator type, derived deterministically from ``key``.

    Same type: returned unchanged. Different type (CPU <-> CUDA generators have different
    state layouts): a new key seeded from a hash of the old one.
    """
    device_type = torch.device(device).type
    if key_device_type(key) == device_type:
        return key
    digest = hashlib.blake2b(key.numpy().tobytes(), digest_size=8).digest()
    return rng_key(int.from_bytes(digest, "little") >> 1, device_type)


class RngScope:
    """Holds the advanced key once the ``rng_scope`` block has exited."""

    key: torch.Tensor

    def __init__(self, key: torch.Tensor) -> None:
        self.key = key


@contextmanager
def rng_scope(key: torch.Tensor, device: str | torch.device = "cpu") -> Iterator[RngScope]:
    """Run a block with the default generator of ``device`` set from ``key``.

    On exit ``scope.key`` is the advanced generator state and the previous global
    generator state is restored, so nothing outside the block sees the draw.
    """
    device = torch.device(device)
    scope = RngScope(key)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        previous = torch.cuda.get_rng_state(index)
        torch.cuda.set_rng_state(key, index)
        try:
            yield scope
        finally:
            scope.key = torch.cuda.get_rng_state(index)
            torch.cuda.set_rng_state(previous, index)
    else:
        previous = torch.get_rng_state()
        torch.set_rng_state(key)
        try:
            yield scope
        finally:
            scope.key = torch.get_rng_state()
            torch.set_rng_state(previous)
