"""PNG plots of a run's history: loss, metrics, learning rate, confusion matrix.

```python
paths = plot_history(history, out / "plots")   # [loss.png, metrics.png, lr.png, ...]
plot_confusion_matrix([[40, 2], [3, 55]], out / "cm.png", labels=["cat", "dog"])
```

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``),
never through pyplot: plotting needs no display, and the user's pyplot backend and open
figures are left alone. Each PNG is rendered in memory and then written atomically, so an
interrupted run never leaves a truncated image.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from purestep.train.loggers import write_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_confusion_matrix", "plot_history"]

# Keys that are not metric curves: the axes, the wall time, and what loss.png / lr.png show.
_NOT_METRICS = {"epoch", "step", "seconds"}
_SPLITS = ("", "val_", "test_")  # train, validation, test prefixes of a key
_SPLIT_NAMES = {"": "train", "val_": "val", "test_": "test"}


def _figure(width: float, height: float) -> Figure:
    # Imported here so that `import purestep` does not pay for matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    return path


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key`` over the epochs that have a number for it."""
    xs: list[float] = []
    ys: list[float] = []
    for i, record in enumerate(history):
        y = _number(record.get(key))
        if y is not None:
            x = _number(record.get("epoch"))
            xs.append(x if x is not None else float(i + 1))
            ys.append(y)
    return xs, ys


def _scalar_keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys holding a number in at least one epoch, first seen first."""
    seen: dict[str, None] = {}
    for record in history:
        for key, value in record.items():
            if _number(value) is not None:
                seen.setdefault(key, None)
    return list(seen)


def _split(key: str) -> tuple[str, str]:
    """``"val_accuracy"`` -> ``("val_", "accuracy")``; a key without a prefix is train's."""
    for prefix in ("val_", "test_"):
        if key.startswith(prefix):
            return prefix, key[len(prefix) :]
    return "", key


def _is_lr(key: str) -> bool:
    return key == "lr" or key.startswith("lr_")


def _plot_curves(ax: Axes, history: Sequence[Mapping[str, Any]], base: str) -> None:
    """Train, val and test curves of metric ``base`` on ``ax``."""
    for prefix in _SPLITS:
        xs, ys = _series(history, prefix + base)
        if ys:
            ax.plot(xs, ys, marker="o", markersize=3, label=_SPLIT_NAMES[prefix])
    ax.set_title(base)
    _epoch_axis(ax)
    ax.legend()


def _epoch_axis(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5
    ax.grid(True, alpha=0.3)


def _loss_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    _plot_curves(ax, history, "loss")
    ax.set_ylabel("loss")
    return fig


def _metrics_figure(history: Sequence[Mapping[str, Any]], bases: list[str]) -> Figure:
    ncols = min(len(bases), 3)
    nrows = math.ceil(len(bases) / ncols)
    fig = _figure(4.5 * ncols, 3.2 * nrows)
    for i, base in enumerate(bases):
        _plot_curves(fig.add_subplot(nrows, ncols, i + 1), history, base)
    return fig


def _lr_figure(history: Sequence[Mapping[str, Any]], keys: list[str]) -> Figure:
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    values: list[float] = []
    for key in keys:
        xs, ys = _series(history, key)
        ax.plot(xs, ys, marker="o", markersize=3, label=key)
        values += ys
    # A schedule spanning more than a decade (warm-up, decay) is only readable on a log axis.
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
    ax.set_title("learning rate")
    _epoch_axis(ax)
    ax.set_ylabel("lr")
    if len(keys) > 1:
        ax.legend()
    return fig


def _last_matrix(history: Sequence[Mapping[str, Any]]) -> tuple[str, int, Any] | None:
    """(key, epoch, matrix) of the latest validation confusion matrix, else the latest
    train one, else None."""
    for key in ("val_confusion_matrix", "confusion_matrix"):
        for i in range(len(history) - 1, -1, -1):
            matrix = history[i].get(key)
            if matrix is not None:
                epoch = _number(history[i].get("epoch"))
                return key, int(epoch) if epoch is not None else i + 1, matrix
    return None


def plot_history(
    history: list[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    confusion: tuple[Any, str] | None = None,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Plot a run's per-epoch history into ``out_dir`` (created) and return the paths.

    - ``loss.png``: ``loss`` and ``val_loss`` (and ``test_loss``) per epoch;
    - ``metrics.png``: one panel per other scalar metric (``accuracy``, ``f1_macro`` ...),
      train/val/test curves, when there is any;
    - ``lr.png``: ``lr`` (and ``lr_group1`` ...) per epoch, on a log axis when the values
      span more than a decade;
    - ``confusion_matrix.png``: ``confusion`` = ``(matrix, title)`` when given (``train_run``
      passes the one of the checkpoint its test metrics come from), else the last epoch's
      ``val_confusion_matrix`` (else ``confusion_matrix``), when recorded; ``labels`` name
      the classes.

    Epochs without a value (no validation that epoch, None) are skipped on that curve. A
    file whose data is absent is not written; an empty history writes nothing.
    """
    if not isinstance(history, list):
        raise TypeError(f"history must be a list of dicts, got {type(history).__name__}")
    for i, record in enumerate(history):
        if not isinstance(record, Mapping):
            raise TypeError(f"history[{i}] must be a dict, got {type(record).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = _scalar_keys(history)
    written: list[Path] = []
    if any(_split(k)[1] == "loss" for k in keys):
        written.append(_save(_loss_figure(history), out / "loss.png"))
    bases: dict[str, None] = {}
    for key in keys:
        base = _split(key)[1]
        if key not in _NOT_METRICS and base != "loss" and not _is_lr(key):
            bases.setdefault(base, None)
    if bases:
        written.append(_save(_metrics_figure(history, list(bases)), out / "metrics.png"))
    lr_keys = [k for k in keys if _is_lr(k)]
    if lr_keys:
        written.append(_save(_lr_figure(history, lr_keys), out / "lr.png"))
    if confusion is None:
        found = _last_matrix(history)
        if found is not None:
            key, epoch, matrix = found
            split = "validation" if key.startswith("val_") else "train"
            confusion = (matrix, f"Confusion matrix ({split}, epoch {epoch})")
    if confusion is not None:
        matrix, title = confusion
        if labels is not None and len(labels) != len(matrix):
            labels = None  # class names that do not fit the matrix: numbers instead
        written.append(
            plot_confusion_matrix(matrix, out / "confusion_matrix.png", labels=labels, title=title)
        )
    return written


def plot_confusion_matrix(
    matrix: Any,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
    title: str = "Confusion matrix",
) -> Path:
    """Draw ``matrix`` (rows: true class, columns: predicted class, as scikit-learn lays it
    out; a nested list, array or tensor) with each cell's count written in it, and save it
    as a PNG at ``path``. ``labels`` name the classes (default 0, 1, ...)."""
    return _save(_confusion_figure(matrix, labels=labels, title=title), Path(path))


def _confusion_figure(matrix: Any, *, labels: Sequence[str] | None, title: str) -> Figure:
    import numpy as np

    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"confusion matrix must be a square table of counts: {e}") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (n x n, n >= 1), got shape {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("confusion matrix entries must be finite and >= 0")
    n = m.shape[0]
    names = [str(i) for i in range(n)] if labels is None else [str(label) for label in labels]
    if len(names) != n:
        raise ValueError(f"labels has {len(names)} names for a {n} x {n} confusion matrix")

    side = min(3.0 + 0.5 * n, 14.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(n), names, rotation=45 if n > 5 else 0)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    integral = bool((m == np.round(m)).all())
    threshold = m.max() / 2
    for i in range(n):
        for j in range(n):
            text = f"{int(m[i, j])}" if integral else f"{m[i, j]:.2g}"
            color = "white" if m[i, j] > threshold else "black"  # readable on dark cells
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    return fig
