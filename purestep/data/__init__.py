"""Deterministic batching, datasets by name and split, and the synthetic seed datasets."""

from purestep.data.batching import Batches, epoch_order, iterate_batches, num_batches
from purestep.data.datasets import (
    DATASETS,
    SPLITS,
    DataSplit,
    Standardizer,
    as_split,
)
from purestep.data.sprites import make_sprites
from purestep.data.synthetic import make_blobs, make_tokens

__all__ = [
    "DATASETS",
    "SPLITS",
    "Batches",
    "DataSplit",
    "Standardizer",
    "as_split",
    "epoch_order",
    "iterate_batches",
    "make_blobs",
    "make_sprites",
    "make_tokens",
    "num_batches",
]
