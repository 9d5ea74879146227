"""Plots: the PNGs exist and are valid images, the right data goes into each, pyplot is
never touched."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from purestep.train import plots
from purestep.train.plots import plot_confusion_matrix, plot_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def history(epochs: int = 4) -> list[dict]:
    return [
        {
            "epoch": e,
            "step": 40 * e,
            "loss": 1.0 / e,
            "val_loss": 1.2 / e if e % 2 else None,  # validation every other epoch
            "accuracy": 0.5 + 0.1 * e,
            "val_accuracy": 0.45 + 0.1 * e if e % 2 else None,
            "f1_macro": 0.4 + 0.1 * e,
            "lr": 10.0**-e,
            "lr_group1": 10.0 ** (1 - e),
            "seconds": 1.5,
            "confusion_matrix": [[10 * e, 2], [3, 50]],
            **({"val_confusion_matrix": [[40, e], [3, 55]]} if e % 2 else {}),
        }
        for e in range(1, epochs + 1)
    ]


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.shape[2] in (3, 4)


def test_plot_history_writes_every_plot(tmp_path):
    out = tmp_path / "plots"
    paths = plot_history(history(), out)
    names = ["loss.png", "metrics.png", "lr.png", "confusion_matrix.png"]
    assert paths == [out / n for n in names]
    for path in paths:
        assert_png(path)
    assert sorted(os.listdir(out)) == sorted(names)  # no temp files left behind


def test_plot_history_skips_what_is_not_there(tmp_path):
    only_loss = [{"epoch": e, "step": e, "loss": 1.0 / e, "lr": 0.1} for e in (1, 2)]
    assert plot_history(only_loss, tmp_path) == [tmp_path / "loss.png", tmp_path / "lr.png"]
    assert plot_history([], tmp_path / "empty") == []
    assert os.listdir(tmp_path / "empty") == []


def test_metric_panels_pair_train_val_and_test_curves():
    fig = plots._metrics_figure(
        [*history(), {"epoch": 5, "test_accuracy": 0.8}], ["accuracy", "f1_macro"]
    )
    (acc, f1) = fig.axes
    assert acc.get_title() == "accuracy" and f1.get_title() == "f1_macro"
    curves = {line.get_label(): line.get_xydata().tolist() for line in acc.get_lines()}
    assert curves["val"] == [[1.0, pytest.approx(0.55)], [3.0, pytest.approx(0.75)]]
    assert len(curves["train"]) == 4 and curves["test"] == [[5.0, 0.8]]
    assert [line.get_label() for line in f1.get_lines()] == ["train"]


def test_loss_figure_has_train_and_val_with_gaps():
    (ax,) = plots._loss_figure(history()).axes
    curves = {line.get_label(): line.get_xydata()[:, 0].tolist() for line in ax.get_lines()}
    assert curves == {"train": [1.0, 2.0, 3.0, 4.0], "val": [1.0, 3.0]}


@pytest.mark.parametrize(
    ("lrs", "scale"),
    [
        ([1e-1, 1e-2, 1e-3], "log"),  # spans two decades
        ([1e-3, 5e-4, 2e-4], "linear"),  # within one decade
        ([0.0, 1e-3, 1e-5], "linear"),  # warm-up from 0 cannot go on a log axis
    ],
)
def test_lr_axis_is_log_when_it_spans_more_than_a_decade(lrs, scale):
    records = [{"epoch": i + 1, "lr": lr} for i, lr in enumerate(lrs)]
    (ax,) = plots._lr_figure(records, ["lr"]).axes
    assert ax.get_yscale() == scale


def test_confusion_matrix_is_the_last_validation_one_else_train():
    assert plots._last_matrix(history()) == ("val_confusion_matrix", 3, [[40, 3], [3, 55]])
    train_only = [{k: v for k, v in r.items() if k != "val_confusion_matrix"} for r in history()]
    assert plots._last_matrix(train_only) == ("confusion_matrix", 4, [[40, 2], [3, 50]])
    assert plots._last_matrix([{"epoch": 1, "loss": 0.5}]) is None


def test_confusion_matrix_cells_are_annotated(tmp_path):
    matrix = torch.tensor([[40, 2, 0], [3, 55, 1], [0, 0, 7]])
    path = plot_confusion_matrix(matrix, tmp_path / "cm.png", labels=["a", "b", "c"], title="T")
    assert path == tmp_path / "cm.png"
    assert_png(path)
    fig = plots._confusion_figure(matrix, labels=["a", "b", "c"], title="T")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["40", "2", "0", "3", "55", "1", "0", "0", "7"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_title() == "T" and ax.get_ylabel() == "true"
    fractions = plots._confusion_figure(np.array([[0.75, 0.25], [0.1, 0.9]]), labels=None, title="")
    assert [t.get_text() for t in fractions.axes[0].texts] == ["0.75", "0.25", "0.1", "0.9"]


@pytest.mark.parametrize(
    ("matrix", "labels", "message"),
    [
        ([[1, 2, 3], [4, 5, 6]], None, r"must be square .* got shape \(2, 3\)"),
        ([1, 2], None, r"got shape \(2,\)"),
        ([], None, r"got shape \(0,\)"),
        ([[1, 2], [3]], None, "square table of counts"),
        ([[1, -2], [3, 4]], None, "finite and >= 0"),
        ([[1, float("nan")], [3, 4]], None, "finite and >= 0"),
        ([[1, 2], [3, 4]], ["a"], "labels has 1 names for a 2 x 2"),
    ],
)
def test_confusion_matrix_rejects_bad_input(tmp_path, matrix, labels, message):
    with pytest.raises(ValueError, match=message):
        plot_confusion_matrix(matrix, tmp_path / "cm.png", labels=labels)
    assert not (tmp_path / "cm.png").exists()


def test_plot_history_rejects_bad_history(tmp_path):
    with pytest.raises(TypeError, match="history must be a list"):
        plot_history({"epoch": 1}, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"history\[1\] must be a dict"):
        plot_history([{"epoch": 1}, 2], tmp_path)  # type: ignore[list-item]


def test_plotting_never_touches_pyplot_or_the_backend(monkeypatch, tmp_path):
    # pyplot would pick (and maybe start) a GUI backend and take over the user's figure
    # state; only the Agg canvas may be used. With pyplot blocked, importing it fails.
    import matplotlib

    # The raw entry: reading rcParams["backend"] itself would resolve (pick) a backend.
    backend = dict.__getitem__(matplotlib.rcParams, "backend")
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    paths = plot_history(history(2), tmp_path)
    assert len(paths) == 4
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
