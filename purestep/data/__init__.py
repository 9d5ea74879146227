"""Deterministic batching and the synthetic seed datasets."""

from purestep.data.batching import epoch_order, iterate_batches, num_batches
from purestep.data.sprites import make_sprites
from purestep.data.synthetic import DATASETS, make_blobs, make_dataset, make_tokens

__all__ = [
    "DATASETS",
    "epoch_order",
    "iterate_batches",
    "make_blobs",
    "make_dataset",
    "make_sprites",
    "make_tokens",
    "num_batches",
]
