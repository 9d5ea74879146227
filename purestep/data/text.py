"""Short texts as bag-of-words vectors, with the vocabulary kept for prediction.

The built-in ``text`` dataset reads a CSV of labelled texts (an intent classifier's
utterances, say). The vocabulary is taken from the training split only and travels in
the split's ``info["vocabulary"]`` (and so in every checkpoint's ``meta.json``), so
``purestep predict --text "see you later"`` featurises new text exactly as training did:
``bag_of_words([text], vocabulary, binary=info["binary"])``.
"""

from __future__ import annotations

import csv as _csv
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from purestep.data.datasets import SPLITS, DataSplit

__all__ = ["bag_of_words", "build_vocabulary", "text", "tokenize"]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(value: str) -> list[str]:
    """Lower-cased words (letters and digits, with an inner apostrophe: ``what's``)."""
    return _WORD.findall(value.lower())


def build_vocabulary(
    texts: Iterable[str], *, min_count: int = 1, max_size: int | None = None
) -> tuple[str, ...]:
    """The words of ``texts`` seen at least ``min_count`` times, most frequent first (ties
    alphabetical, so the same texts always give the same vocabulary)."""
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1
    ):
        raise ValueError(f"max_size must be None or an int >= 1, got {max_size!r}")
    counts = Counter(word for t in texts for word in tokenize(t))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return tuple(words[:max_size])


def bag_of_words(
    texts: Sequence[str], vocabulary: Sequence[str], *, binary: bool = True
) -> torch.Tensor:
    """``(len(texts), len(vocabulary))`` float32: word presence (``binary``) or counts.
    Words outside the vocabulary are ignored."""
    if not vocabulary:
        raise ValueError("the vocabulary is empty")
    index = {w: i for i, w in enumerate(vocabulary)}
    out = torch.zeros(len(texts), len(vocabulary), dtype=torch.float32)
    for row, value in enumerate(texts):
        for word in tokenize(value):
            col = index.get(word)
            if col is not None:
                out[row, col] = 1.0 if binary else out[row, col] + 1.0
    return out


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """The header, the data rows (blank ones skipped) and each row's line in the file."""
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="") as f:
            reader = _csv.DictReader(f)
            for raw in reader:
                row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
                if any(row.values()):
                    rows.append(row)
                    # line_num is the row's last line (DictReader skips blank lines before
                    # it): count back over the line breaks inside its quoted fields.
                    lines.append(reader.line_num - _line_breaks(raw))
            header = [h.strip() for h in reader.fieldnames or []]
    except OSError as err:
        raise ValueError(f"data.path: cannot read {str(path)!r}: {err.strerror}") from None
    if not header or not rows:
        raise ValueError(f"data.path: {str(path)!r} needs a header row and at least one data row")
    return header, rows, lines


def _line_breaks(row: dict[str | None, Any]) -> int:
    """How many line breaks a row's quoted fields hold (the lines it spans, minus one)."""
    return sum(
        v.count("\n") if isinstance(v, str) else sum(x.count("\n") for x in v or [])
        for v in row.values()
    )


def text(
    split: str = "train",
    seed: int = 0,
    *,
    path: str,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str | None = "split",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    binary: bool = True,
    min_count: int = 1,
    max_vocabulary: int | None = None,
) -> DataSplit | None:
    """Labelled texts from a CSV file as bag-of-words vectors and int64 class ids.

    A ``split_column`` in the file (default ``split``; values ``train``, ``val``, ``test``)
    assigns each row to a split, e.g. held-out phrasings to ``test``; without one, rows are
    split by a permutation drawn from ``seed`` with ``val_fraction``/``test_fraction``.
    Classes are the sorted label names; the vocabulary comes from the training rows.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    file = Path(path)
    header, rows, lines = _read_rows(file)
    for key, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in header:
            raise ValueError(f"data.{key}: {column!r} is not a column of {file} ({header})")
    for i, row in zip(lines, rows, strict=True):
        if not row[text_column] or not row[label_column]:
            raise ValueError(f"{file}: line {i} has an empty text or label")
    if split_column is not None and split_column in header:
        parts: dict[str, list[int]] = {s: [] for s in SPLITS}
        for i, row in enumerate(rows):
            name = row[split_column] or "train"
            if name not in parts:
                raise ValueError(
                    f"{file}: line {lines[i]}: {split_column} must be one of {SPLITS}, got {name!r}"
                )
            parts[name].append(i)
    else:
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1) or (
            val_fraction + test_fraction >= 1
        ):
            raise ValueError(
                "data.val_fraction and data.test_fraction must be in [0, 1) with a sum < 1, "
                f"got {val_fraction} and {test_fraction}"
            )
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test, n_val = round(len(rows) * test_fraction), round(len(rows) * val_fraction)
        parts = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }
    if not parts["train"]:
        raise ValueError(f"{file}: no rows for training")
    vocabulary = build_vocabulary(
        (rows[i][text_column] for i in parts["train"]),
        min_count=min_count,
        max_size=max_vocabulary,
    )
    if not vocabulary:
        raise ValueError(f"{file}: the training texts have no words")
    classes = tuple(sorted({row[label_column] for row in rows}))
    chosen = parts[split]
    if not chosen:
        return None
    x = bag_of_words([rows[i][text_column] for i in chosen], vocabulary, binary=binary)
    y = torch.tensor([classes.index(rows[i][label_column]) for i in chosen], dtype=torch.int64)
    info = {"vocabulary": list(vocabulary), "binary": binary, "texts": "bag_of_words"}
    return DataSplit((x, y), classes=classes, info=info)
