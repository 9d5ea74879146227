"""Datasets by name, split by split: ``fn(split="train"|"val"|"test", seed=..., **kwargs)``.

This is the contract a config's ``data.name`` follows, for the built-in datasets here and
for a user's ``"package.module:function"``: the function returns ``(inputs, targets)``
tensors (``inputs`` may be a tuple of tensors for a model with several inputs), a
``torch.utils.data.Dataset`` of ``(input, target)`` samples, a ``DataSplit``, or ``None``
when it has no such split (no validation or test data).

Built in: ``sprites`` (8x8 circles vs squares), ``blobs`` (Gaussian clusters), ``tokens``
(learnable token sequences) and ``csv`` (a CSV file: feature columns -> a target column,
standardised with training-split statistics).
"""

from __future__ import annotations

import csv as _csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from purestep.data.sprites import make_sprites
from purestep.data.synthetic import make_blobs, make_tokens

__all__ = [
    "DATASETS",
    "SPLITS",
    "DataSplit",
    "Standardizer",
    "as_split",
    "blobs",
    "csv",
    "sprites",
    "tokens",
]

SPLITS = ("train", "val", "test")
# Each split of a generated dataset draws from its own seed.
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Standardizer:
    """``(x - mean) / std`` per feature (and for a real-valued target), with statistics of
    the training split. Saved with checkpoints so a model can be used on raw inputs later
    and its regression metrics and predictions read in the original units."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    target_mean: torch.Tensor | None = None
    target_std: torch.Tensor | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean.to(x.device)) / self.feature_std.to(x.device)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        if self.target_mean is None or self.target_std is None:
            return y
        return (y - self.target_mean.to(y.device)) / self.target_std.to(y.device)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"feature_mean": self.feature_mean, "feature_std": self.feature_std}
        if self.target_mean is not None and self.target_std is not None:
            out |= {"target_mean": self.target_mean, "target_std": self.target_std}
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Standardizer:
        return cls(
            tensors["feature_mean"],
            tensors["feature_std"],
            tensors.get("target_mean"),
            tensors.get("target_std"),
        )

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor | None) -> Standardizer:
        """Statistics of ``x`` (and ``y``); a constant column gets std 1 (left centred)."""

        def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            t64 = t.double()
            mean = t64.mean(0)
            std = t64.std(0, unbiased=False)
            std = torch.where(std > 0, std, torch.ones_like(std))
            return mean.to(t.dtype), std.to(t.dtype)

        fm, fs = stats(x)
        if y is None:
            return cls(fm, fs)
        tm, ts = stats(y)
        return cls(fm, fs, tm, ts)


@dataclass(frozen=True)
class DataSplit:
    """One split: ``tensors`` (``(inputs..., targets)``, equal lengths) or a ``Dataset``,
    plus what a checkpoint must remember to use the model on new data."""

    data: tuple[torch.Tensor, ...] | Dataset[Any]
    standardizer: Standardizer | None = None
    feature_names: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        if isinstance(self.data, tuple):
            return len(self.data[0])
        return len(self.data)  # type: ignore[arg-type]


def _from_numpy(value: Any) -> Any:
    """NumPy arrays become tensors; float64 ones float32, torch's default dtype (what a
    model's weights are), as data from NumPy/scikit-learn usually is float64."""
    if isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
        return t.to(torch.float32) if t.dtype == torch.float64 else t
    return value


def as_split(result: Any, where: str) -> DataSplit | None:
    """Normalise what a data function returned (see the module docstring): tensors or
    NumPy arrays (float64 arrays become float32)."""
    if result is None or isinstance(result, DataSplit):
        return result
    if isinstance(result, Dataset):
        if not hasattr(result, "__len__"):
            raise TypeError(f"{where} returned a Dataset without __len__ (need a map-style one)")
        return DataSplit(result)
    if isinstance(result, tuple | list) and len(result) == 2:
        inputs, targets = result
        parts = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
        tensors = tuple(_from_numpy(t) for t in (*parts, targets))
        targets = tensors[-1]
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                what = "targets" if i == len(tensors) - 1 else f"inputs[{i}]"
                raise TypeError(f"{where} returned {what} of type {type(t).__name__}, not a tensor")
        n = len(targets)
        for i, t in enumerate(tensors[:-1]):
            if t.dim() == 0 or len(t) != n:
                raise ValueError(
                    f"{where} returned inputs[{i}] of shape {tuple(t.shape)} for {n} targets: "
                    "the first dimension must be the number of examples"
                )
        if n == 0:
            raise ValueError(f"{where} returned an empty split")
        return DataSplit(tensors)
    raise TypeError(
        f"{where} must return (inputs, targets) tensors, a torch Dataset, a DataSplit or None, "
        f"got {type(result).__name__}"
    )


def _split_size(split: str, sizes: dict[str, int]) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = sizes[split]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n_{split} must be an int >= 0, got {n!r}")
    return n


def sprites(
    split: str = "train",
    seed: int = 0,
    *,
    n_train: int = 2048,
    n_val: int = 512,
    n_test: int = 512,
    image: bool = False,
    size: int = 8,
    noise: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Circles (0) vs squares (1): ``(n, size*size)`` float pixels, or ``(n, 1, size, size)``
    with ``image=True``; float targets for ``BCEWithLogitsLoss``."""
    n = _split_size(split, {"train": n_train, "val": n_val, "test": n_test})
    if n == 0:
        return None
    x, y = make_sprites(n, seed + _SPLIT_OFFSET[split], size=size, noise=noise)
    if image:
        x = x.reshape(n, 1, size, size)
    return x, y


def blobs(
    split: str = "train",
    seed: int = 0,
    *,
    n_train: int = 1024,
    n_val: int = 256,
    n_test: int = 256,
    n_features: int = 16,
    n_classes: int = 4,
    spread: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Gaussian clusters: ``(n, n_features)`` inputs, int64 class targets."""
    n = _split_size(split, {"train": n_train, "val": n_val, "test": n_test})
    if n == 0:
        return None
    return make_blobs(
        n,
        seed + _SPLIT_OFFSET[split],
        n_features=n_features,
        n_classes=n_classes,
        spread=spread,
    )


def tokens(
    split: str = "train",
    seed: int = 0,
    *,
    n_train: int = 512,
    n_val: int = 128,
    n_test: int = 128,
    vocab: int = 64,
    seq: int = 16,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Token sequences and their next tokens, ``(n, seq)`` each (a language model's data)."""
    n = _split_size(split, {"train": n_train, "val": n_val, "test": n_test})
    if n == 0:
        return None
    return make_tokens(n, seed + _SPLIT_OFFSET[split], vocab=vocab, seq=seq)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the data rows (blank lines skipped) and each row's line in the file
    (counted as an editor does: blank lines and a quoted field's line breaks included)."""
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="") as f:
            reader = _csv.reader(f)
            start = 1
            for row in reader:
                if row and any(c.strip() for c in row):
                    rows.append(row)
                    lines.append(start)
                start = reader.line_num + 1
    except OSError as err:
        raise ValueError(f"data.path: cannot read {str(path)!r}: {err.strerror}") from None
    except _csv.Error as err:
        raise ValueError(f"{path}: line {start}: not valid CSV ({err})") from None
    if len(rows) < 2:
        raise ValueError(f"data.path: {str(path)!r} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    for row, line in zip(rows[1:], lines[1:], strict=True):
        if len(row) != len(header):
            raise ValueError(
                f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
    return header, [[c.strip() for c in row] for row in rows[1:]], lines[1:]


def _column(path: Path, name: str, values: list[str], lines: list[int]) -> torch.Tensor:
    out = []
    for v, line in zip(values, lines, strict=True):
        try:
            out.append(float(v))
        except ValueError:
            raise ValueError(
                f"{path}: column {name!r} line {line}: {v!r} is not a number"
            ) from None
    return torch.tensor(out, dtype=torch.float64)


def csv(
    split: str = "train",
    seed: int = 0,
    *,
    path: str,
    target: str,
    features: Sequence[str] | None = None,
    standardize: bool = True,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    classification: bool | None = None,
) -> DataSplit | None:
    """A CSV file with a header row: ``features`` columns (default: all but ``target``)
    predict ``target``.

    Rows are split into train/val/test by a permutation drawn from ``seed`` (the same rows
    in every call). A non-numeric target column, or ``classification: true`` (what a
    classification loss sets, so a 0/1 column is labels, not a value to standardise),
    makes class ids (sorted label names, kept in the checkpoint); otherwise the target is a
    float regression target. An empty target cell, or a number column with a word in it,
    is an error naming the line. With ``standardize`` (default) features, and a regression target,
    are standardised with the training split's mean and std; the statistics travel with
    the checkpoint and regression metrics are reported in the original units.
    """
    file = Path(path)
    header, rows, lines = _read_csv(file)
    if target not in header:
        raise ValueError(f"data.target: {target!r} is not a column of {file} (columns: {header})")
    names = [h for h in header if h != target] if features is None else list(features)
    for name in names:
        if name not in header:
            raise ValueError(
                f"data.features: {name!r} is not a column of {file} (columns: {header})"
            )
        if name == target:
            raise ValueError(f"data.features: the target {target!r} cannot also be a feature")
    if not names:
        raise ValueError(f"data.features: {file} has no feature column besides {target!r}")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            "data.val_fraction and data.test_fraction must be in [0, 1) with a sum < 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    columns = {h: [row[i] for row in rows] for i, h in enumerate(header)}
    x = torch.stack([_column(file, n, columns[n], lines) for n in names], dim=1).to(torch.float32)
    raw_target = columns[target]
    for i, v in zip(lines, raw_target, strict=True):
        if not v.strip():
            raise ValueError(f"{file}: column {target!r} line {i}: the target is empty")
    numbers = [_is_number(v) for v in raw_target]
    if classification is None and any(numbers) and not all(numbers):
        # A number column with a stray word or typo (12O) must not become class labels.
        i, v = next(
            (line, v) for line, v, ok in zip(lines, raw_target, numbers, strict=True) if not ok
        )
        raise ValueError(
            f"{file}: column {target!r} line {i}: {v!r} is not a number, but other values "
            "are; fix the cell, or set data.classification: true to read the column as "
            "class labels"
        )
    is_class = classification if classification is not None else not all(numbers)
    classes: tuple[str, ...] | None = None
    if is_class:
        labels = sorted(set(raw_target), key=lambda v: (not _is_number(v), _sort_key(v)))
        classes = tuple(labels)
        index = {v: i for i, v in enumerate(labels)}
        y = torch.tensor([index[v] for v in raw_target], dtype=torch.int64)
    else:
        y = _column(file, target, raw_target, lines).to(torch.float32)

    n = len(rows)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    parts = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }
    train_idx = parts["train"]
    if len(train_idx) == 0:
        raise ValueError(f"{file}: no rows left for training ({n} rows)")
    scaler = None
    if standardize:
        scaler = Standardizer.fit(x[train_idx], None if is_class else y[train_idx])
    idx = parts[split]
    if len(idx) == 0:
        return None
    xs, ys = x[idx], y[idx]
    if scaler is not None:
        xs, ys = scaler.features(xs), scaler.targets(ys)
    return DataSplit(
        (xs, ys),
        standardizer=scaler,
        feature_names=tuple(names),
        classes=classes,
        info={"target": target},
    )


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _sort_key(v: str) -> Any:
    return float(v) if _is_number(v) else v


# Built-ins in their own modules (they import DataSplit from here, hence the late import).
from purestep.data.image_folder import image_folder  # noqa: E402
from purestep.data.text import text  # noqa: E402

DATASETS: dict[str, Callable[..., Any]] = {
    "sprites": sprites,
    "blobs": blobs,
    "tokens": tokens,
    "csv": csv,
    "image_folder": image_folder,
    "text": text,
}
