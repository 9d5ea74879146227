"""Deterministic batching and the synthetic seed datasets."""

from purestep.data.batching import epoch_order, iterate_batches, num_batches
from purestep.data.sprites import make_sprites

__all__ = ["epoch_order", "iterate_batches", "make_sprites", "num_batches"]
