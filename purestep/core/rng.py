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

__all__ = [
    "RngScope",
    "convert_key",
    "fold_in",
    "key_device_type",
    "rng_key",
    "rng_scope",
    "split",
]

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


def _derive(key: torch.Tensor, tag: bytes) -> torch.Tensor:
    """A new key of ``key``'s generator type, seeded from a hash of ``key`` and ``tag``."""
    if not isinstance(key, torch.Tensor) or key.dtype != torch.uint8 or key.dim() != 1:
        shape = tuple(key.shape) if isinstance(key, torch.Tensor) else type(key).__name__
        raise TypeError(
            f"a key is a 1-d uint8 generator state (rng_key(seed), state.rng), got {shape}"
            + (f" {key.dtype}" if isinstance(key, torch.Tensor) else "")
        )
    data = key.detach().cpu().contiguous().numpy().tobytes()
    digest = hashlib.blake2b(data + b"|" + tag, digest_size=8, person=b"purestep.rng").digest()
    return rng_key(int.from_bytes(digest, "little") >> 1, key_device_type(key))


def split(key: torch.Tensor, num: int = 2) -> torch.Tensor:
    """``num`` new keys from ``key``, as ``jax.random.split``: a ``(num, key_bytes)`` tensor
    whose rows are keys (``keys[i]``, or ``unbind()``).

    Deterministic (the same key gives the same keys), the keys differ from each other and
    from ``key``, and ``key`` itself is not changed; as in JAX, use the new keys and stop
    using ``key``. Each new key is a generator state seeded from a hash of ``key`` and the
    row index, so drawing from one says nothing about the others. Host-side: call it
    outside a compiled or vmapped function.
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    return torch.stack([_derive(key, b"split:%d:%d" % (num, i)) for i in range(num)])


def fold_in(key: torch.Tensor, data: int) -> torch.Tensor:
    """A new key from ``key`` and an integer ``data``, as ``jax.random.fold_in``: the same
    ``(key, data)`` always gives the same key; different ``data`` give different keys (e.g.
    a key per step or per worker: ``fold_in(key, step)``). ``key`` is not changed.
    Host-side, like ``split``."""
    if isinstance(data, torch.Tensor) and data.numel() == 1 and not data.is_floating_point():
        data = int(data.item())
    if isinstance(data, bool) or not isinstance(data, int):
        raise TypeError(f"fold_in's data must be an int, got {type(data).__name__}")
    return _derive(key, b"fold_in:%d" % data)


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
    if key.storage_offset() != 0 or not key.is_contiguous():
        # A row of a stacked key (keys[i], unstack_state): torch's set_rng_state reads the
        # storage from its start (torch 2.13 crashes on such a view), so give it its own.
        key = key.clone()
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
