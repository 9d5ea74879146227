"""Training metrics: additive statistics summed over random batches agree with scikit-learn
on the whole data; they compile (fullgraph) and vmap; bad names and shapes are errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    precision_recall_fscore_support,
    r2_score,
    root_mean_squared_error,
)

from purestep.train.metrics import (
    METRIC_NAMES,
    TASKS,
    MetricSet,
    infer_task,
    make_metrics,
    sum_stats,
    zeros_like_stats,
)

EPS = float(np.finfo(np.float64).eps)


def accumulate(
    ms: MetricSet, outputs: torch.Tensor, targets: torch.Tensor, cuts: list[int]
) -> dict[str, torch.Tensor]:
    """Stats of the batches between sorted cut points (empty batches included), summed."""
    bounds = [0, *sorted(cuts), outputs.shape[0]]
    parts = [ms.stats(outputs[a:b], targets[a:b]) for a, b in itertools.pairwise(bounds)]
    totals = zeros_like_stats(parts[0])
    for part in parts:
        totals = sum_stats(totals, part)
    return totals


def cut_points(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, n), max_size=5)


def sk_prf(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> tuple[float, float, float]:
    # zero_division=0.0 is the value of the default "warn", without the warning.
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0.0)
    return p, r, f


def check_close(value: torch.Tensor, expected: float, rel: float = 1e-12) -> None:
    assert value.dim() == 0 and value.dtype == torch.float64
    assert math.isclose(value.item(), expected, rel_tol=rel, abs_tol=rel), (value, expected)


# -- classification vs scikit-learn ---------------------------------------------------------


@given(data=st.data())
def test_binary_matches_sklearn(data):
    n = data.draw(st.integers(1, 40), label="n")
    # Logit 0 and target 0.5 sit exactly on the thresholds (both are negatives).
    logits = data.draw(
        st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.5, 3.0]), min_size=n, max_size=n)
    )
    probs = data.draw(st.lists(st.sampled_from([0.0, 1.0, 0.3, 0.5, 0.7]), min_size=n, max_size=n))
    layout = data.draw(st.sampled_from(["flat", "column", "column_outputs"]), label="layout")
    out, tgt = torch.tensor(logits), torch.tensor(probs)
    if layout == "column":
        out, tgt = out[:, None], tgt[:, None]
    elif layout == "column_outputs":  # (N, 1) logits against (N,) targets
        out = out[:, None]
    ms = make_metrics(METRIC_NAMES["binary"], "binary")
    values = ms.compute(accumulate(ms, out, tgt, data.draw(cut_points(n))))

    y_true = (np.array(probs) > 0.5).astype(int)
    y_pred = (np.array(logits) > 0).astype(int)
    check_close(values["accuracy"], accuracy_score(y_true, y_pred))
    for average, suffix in (("binary", ""), ("macro", "_macro"), ("micro", "_micro")):
        p, r, f = sk_prf(y_true, y_pred, average)
        check_close(values["precision" + suffix], p)
        check_close(values["recall" + suffix], r)
        check_close(values["f1" + suffix], f)
    cm = values["confusion_matrix"]
    assert cm.dtype == torch.int64
    np.testing.assert_array_equal(cm.numpy(), confusion_matrix(y_true, y_pred, labels=[0, 1]))


MC_LAYOUTS = {
    "confusion": list(METRIC_NAMES["multiclass"]),
    "per_class": ["f1_macro", "accuracy", "precision_macro", "recall_macro", "recall_micro"],
    "counts": ["accuracy", "precision_micro", "f1_micro"],
}


@given(data=st.data())
def test_multiclass_matches_sklearn(data):
    c = data.draw(st.integers(2, 6), label="classes")
    n = data.draw(st.integers(1, 30), label="n")
    seq = data.draw(st.sampled_from([None, 1, 3]), label="sequence length")
    # A random subset of classes occurs in the targets (others are absent everywhere, or
    # only predicted); small integer logits make arg-max ties common.
    seen = data.draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=c, unique=True))
    shape = (n,) if seq is None else (n, seq)
    m = math.prod(shape)
    logits = data.draw(st.lists(st.integers(-1, 1), min_size=m * c, max_size=m * c))
    ignore = data.draw(st.booleans(), label="with ignore_index padding")
    labels = data.draw(
        st.lists(st.sampled_from([*seen, -100] if ignore else seen), min_size=m, max_size=m)
    )
    names = MC_LAYOUTS[data.draw(st.sampled_from(sorted(MC_LAYOUTS)), label="layout")]
    ms = make_metrics(names, "multiclass", num_classes=data.draw(st.sampled_from([None, c])))
    out = torch.tensor(logits, dtype=torch.float32).reshape(*shape, c)
    tgt = torch.tensor(labels).reshape(shape)
    values = ms.compute(accumulate(ms, out, tgt, data.draw(cut_points(n))))
    assert list(values) == names

    flat_true = np.array(labels)
    flat_pred = np.array(logits).reshape(m, c).argmax(axis=1)  # numpy: first index on ties
    keep = flat_true != -100
    y_true, y_pred = flat_true[keep], flat_pred[keep]
    if not keep.any():  # nothing to score: NaN (scikit-learn raises)
        for name, v in values.items():
            if name != "confusion_matrix":
                assert torch.isnan(v), name
        return
    expected = {"accuracy": accuracy_score(y_true, y_pred)}
    for average in ("macro", "micro"):
        p, r, f = sk_prf(y_true, y_pred, average)
        expected |= {f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f}
    for name, v in values.items():
        if name == "confusion_matrix":
            assert v.dtype == torch.int64 and v.shape == (c, c)
            cm = confusion_matrix(y_true, y_pred, labels=list(range(c)))
            np.testing.assert_array_equal(v.numpy(), cm)
        else:
            check_close(v, expected[name])


def test_multiclass_probability_targets_use_their_argmax():
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(50, 4, generator=gen)
    tgt = torch.softmax(torch.randn(50, 4, generator=gen), dim=-1)
    ms = make_metrics(["accuracy", "f1_macro", "confusion_matrix"], "multiclass")
    values = ms.compute(ms.stats(out, tgt))
    y_true, y_pred = tgt.argmax(-1).numpy(), out.argmax(-1).numpy()
    check_close(values["accuracy"], accuracy_score(y_true, y_pred))
    check_close(values["f1_macro"], sk_prf(y_true, y_pred, "macro")[2])
    cm = confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3])
    np.testing.assert_array_equal(values["confusion_matrix"].numpy(), cm)


def test_binary_single_class_data():
    # Only negatives, all predicted negative: positive-class scores are 0 (zero division),
    # macro runs over the one class seen, the matrix stays 2 x 2.
    ms = make_metrics(["precision", "f1", "f1_macro", "accuracy", "confusion_matrix"], "binary")
    v = ms.compute(ms.stats(torch.full((5,), -1.0), torch.zeros(5)))
    assert [v[k].item() for k in ("precision", "f1", "f1_macro", "accuracy")] == [0, 0, 1, 1]
    assert v["confusion_matrix"].tolist() == [[5, 0], [0, 0]]


def test_no_samples_give_nan():
    for task, names, out, tgt in (
        ("binary", METRIC_NAMES["binary"], torch.zeros(0), torch.zeros(0)),
        ("multiclass", ["accuracy", "f1_macro"], torch.zeros(3, 4), torch.full((3,), -100)),
        ("regression", METRIC_NAMES["regression"], torch.zeros(0, 2), torch.zeros(0, 2)),
    ):
        ms = make_metrics(names, task)
        for name, v in ms.compute(ms.stats(out, tgt)).items():
            if name == "confusion_matrix":
                assert not v.any()
            else:
                assert torch.isnan(v), (task, name)


# -- regression vs scikit-learn ---------------------------------------------------------------


def r2_bound(y: np.ndarray, yhat: np.ndarray, k: np.ndarray | float) -> float:
    """The documented error of R² from moments about K: per output about
    eps·(1 + (mean - K)²/var)·SS_res/SS_tot (with a safety factor), averaged."""
    y2, yhat2 = y.reshape(len(y), -1), yhat.reshape(len(y), -1)
    k2 = np.broadcast_to(np.asarray(k, dtype=np.float64), (y2.shape[1],))
    bounds = []
    for d in range(y2.shape[1]):
        var = y2[:, d].var()
        if var == 0:
            bounds.append(0.0)
            continue
        ratio = ((y2[:, d] - yhat2[:, d]) ** 2).sum() / (var * len(y))
        offset = (y2[:, d].mean() - k2[d]) ** 2 / var
        bounds.append(64 * EPS * (1 + offset) * ratio)
    return float(np.mean(bounds)) + 1e-12


@given(data=st.data())
def test_regression_matches_sklearn(data):
    n = data.draw(st.integers(1, 40), label="n")
    layout = data.draw(st.sampled_from(["flat", "column", "multi", "column_outputs"]))
    d = data.draw(st.integers(2, 3)) if layout == "multi" else 1
    # Values on a 1/8 grid around a drawn offset: any spread, including none at all.
    grid = st.integers(-64, 64).map(lambda i: i / 8)
    offset = data.draw(st.integers(-50, 50))
    y = np.array(data.draw(st.lists(grid, min_size=n * d, max_size=n * d))) + offset
    noise = data.draw(st.sampled_from(["exact", "noisy"]))
    yhat = (
        y
        if noise == "exact"
        else np.array(data.draw(st.lists(grid, min_size=n * d, max_size=n * d))) + offset
    )
    scale = data.draw(st.sampled_from([None, 0.5, 2.0, -3.0, 1e3]))
    shift = data.draw(st.sampled_from([None, 7.25, -1e3]))
    if layout == "multi" and data.draw(st.booleans(), label="per-output scale"):
        scale = torch.tensor([2.0, -0.5, 4.0][:d]) if scale is not None else None
        shift = torch.tensor([1.0, -1e3, 3.5][:d]) if shift is not None else None
    y, yhat = y.reshape(n, d), yhat.reshape(n, d)
    out, tgt = torch.tensor(yhat), torch.tensor(y)
    if layout == "flat":
        out, tgt = out[:, 0], tgt[:, 0]
    elif layout == "column_outputs":
        tgt = tgt[:, 0]
    ms = make_metrics(
        METRIC_NAMES["regression"], "regression", target_scale=scale, target_shift=shift
    )
    values = ms.compute(accumulate(ms, out, tgt, data.draw(cut_points(n))))

    # The reference sees the data in original units, mapped with the same float64 ops.
    s = 1.0 if scale is None else np.asarray(scale, dtype=np.float64)
    k = 0.0 if shift is None else np.asarray(shift, dtype=np.float64)
    y_o, yhat_o = y * s + k, yhat * s + k
    check_close(values["mae"], mean_absolute_error(y_o, yhat_o))
    check_close(values["rmse"], root_mean_squared_error(y_o, yhat_o))
    if n < 2:
        assert torch.isnan(values["r2"])  # scikit-learn: NaN, with a warning
        return
    expected = r2_score(y_o, yhat_o)
    assert abs(values["r2"].item() - expected) <= r2_bound(y_o, yhat_o, k) * max(1, abs(expected))


@given(
    y=st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=2, max_size=40),
    shift=st.floats(-1e3, 1e3),
    data=st.data(),
)
def test_regression_float_data_within_documented_bound(y, shift, data):
    yt = np.array(y)
    yhat = yt + np.array(data.draw(st.lists(st.floats(-10, 10), min_size=len(y), max_size=len(y))))
    ms = make_metrics(["r2", "rmse"], "regression", target_shift=shift)
    # target_shift moves outputs and targets alike; feed values that land on y, yhat.
    values = ms.compute(
        accumulate(
            ms, torch.tensor(yhat - shift), torch.tensor(yt - shift), data.draw(cut_points(len(y)))
        )
    )
    y_o, yhat_o = (yt - shift) + shift, (yhat - shift) + shift
    expected = r2_score(y_o, yhat_o)
    if y_o.var() <= 2.0**-40 * ((y_o - shift) ** 2).mean() * 2:
        return  # within rounding of constant: covered by test_r2_constant_targets
    assert abs(values["r2"].item() - expected) <= r2_bound(y_o, yhat_o, shift) * max(
        1, abs(expected)
    )
    check_close(values["rmse"], root_mean_squared_error(y_o, yhat_o))


def test_r2_large_offset_is_exact_with_the_standardisation_shift():
    # Targets 1e6 ± 1, standardised for training: in original units the shift centres the
    # sums, and R² agrees with scikit-learn to 1e-12 despite mean/std = 1e6. Without a shift
    # (moments about 0) the cancellation costs about eps·1e12.
    gen = torch.Generator().manual_seed(0)
    y_std = torch.randn(1000, dtype=torch.float64, generator=gen)
    pred_std = y_std + 0.3 * torch.randn(1000, dtype=torch.float64, generator=gen)
    ms = make_metrics(["r2", "mae"], "regression", target_scale=1.0, target_shift=1e6)
    values = ms.compute(accumulate(ms, pred_std, y_std, [100, 500, 501]))
    y_o, pred_o = (y_std * 1.0 + 1e6).numpy(), (pred_std * 1.0 + 1e6).numpy()
    check_close(values["r2"], r2_score(y_o, pred_o))
    check_close(values["mae"], mean_absolute_error(y_o, pred_o))

    plain = make_metrics(["r2"], "regression")
    r2 = plain.compute(accumulate(plain, torch.tensor(pred_o), torch.tensor(y_o), [100, 500]))
    assert abs(r2["r2"].item() - r2_score(y_o, pred_o)) <= r2_bound(y_o, pred_o, 0.0)


def test_r2_constant_targets():
    ms = make_metrics(["r2"], "regression")
    y = torch.full((6,), 2.5, dtype=torch.float64)
    # scikit-learn's force_finite: perfect -> 1.0, otherwise 0.0 (no -inf).
    assert ms.compute(ms.stats(y, y))["r2"].item() == r2_score(y, y) == 1.0
    assert ms.compute(ms.stats(y + 1, y))["r2"].item() == r2_score(y, y + 1) == 0.0
    # 0.1 is not a binary fraction, so constant 0.1s leave rounding noise in SS_tot: ours
    # (1.4e-17 for seven of them, from sums about 0) is below the documented 2^-40·Σy²
    # threshold and counts as zero variance. (scikit-learn's exact test gives 0.0 for five
    # and a meaningless -5.2e33 for seven, with scikit-learn 1.9 and this numpy.)
    for n in (5, 7):
        y = torch.full((n,), 0.1, dtype=torch.float64)
        assert ms.compute(ms.stats(y + 1, y))["r2"].item() == 0.0


def test_multi_output_averages_uniformly():
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(30, 3, dtype=torch.float64, generator=gen) * torch.tensor([1.0, 10.0, 100.0])
    pred = y + torch.randn(30, 3, dtype=torch.float64, generator=gen)
    ms = make_metrics(["mae", "rmse", "r2"], "regression")
    v = ms.compute(ms.stats(pred, y))
    check_close(v["r2"], r2_score(y.numpy(), pred.numpy(), multioutput="uniform_average"))
    check_close(v["rmse"], root_mean_squared_error(y.numpy(), pred.numpy()))


# -- compile and vmap ------------------------------------------------------------------------

COMPILE_CASES = {
    "binary": (make_metrics(METRIC_NAMES["binary"], "binary"), (20, 1), (20, 1)),
    "multiclass": (make_metrics(MC_LAYOUTS["confusion"], "multiclass"), (4, 5, 3), (4, 5)),
    "regression": (
        make_metrics(METRIC_NAMES["regression"], "regression", target_shift=3.0),
        (20, 2),
        (20, 2),
    ),
}
SLOW_COMPILE_CASES = {
    "per_class": (
        make_metrics(MC_LAYOUTS["per_class"], "multiclass", num_classes=3),
        (30, 3),
        (30,),
    ),
    "counts": (make_metrics(MC_LAYOUTS["counts"], "multiclass"), (2, 15, 3), (2, 15)),
    "regression_flat": (
        make_metrics(["r2"], "regression", target_scale=2.0, target_shift=-1.0),
        (25,),
        (25,),
    ),
}


def example_batch(ms: MetricSet, out_shape: tuple[int, ...], tgt_shape: tuple[int, ...], seed: int):
    gen = torch.Generator().manual_seed(seed)
    out = torch.randint(-1, 2, out_shape, generator=gen).to(torch.float32)  # ties
    if ms.task == "multiclass":
        tgt = torch.randint(-1, out_shape[-1], tgt_shape, generator=gen)  # -1: ignored
    elif ms.task == "binary":
        tgt = torch.rand(tgt_shape, generator=gen)
    else:
        out = torch.randn(out_shape, generator=gen)
        tgt = torch.randn(tgt_shape, generator=gen)
    return out, tgt


def assert_stats_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if a[k].dtype == torch.int64:
            assert torch.equal(a[k], b[k]), k
        else:  # a float64 reduction's order is the compiler's choice: ulps
            torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=0.0)


def test_stats_compile_fullgraph_equals_eager():
    # One graph for the three tasks (one compilation keeps the default run short).
    sets = [ms for ms, _, _ in COMPILE_CASES.values()]
    batches = [example_batch(ms, o, t, i) for i, (ms, o, t) in enumerate(COMPILE_CASES.values())]

    def all_stats(batches):
        return [ms.stats(out, tgt) for ms, (out, tgt) in zip(sets, batches, strict=True)]

    compiled = torch.compile(all_stats, fullgraph=True)(batches)
    for got, expected in zip(compiled, all_stats(batches), strict=True):
        assert_stats_equal(got, expected, rtol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SLOW_COMPILE_CASES))
def test_stats_compile_fullgraph_equals_eager_other_layouts(case):
    ms, o, t = SLOW_COMPILE_CASES[case]
    out, tgt = example_batch(ms, o, t, 7)
    torch._dynamo.reset()
    assert_stats_equal(torch.compile(ms.stats, fullgraph=True)(out, tgt), ms.stats(out, tgt), 1e-14)


@pytest.mark.parametrize("case", sorted(COMPILE_CASES) + sorted(SLOW_COMPILE_CASES))
def test_stats_and_compute_vmap_over_models(case):
    ms, o, t = {**COMPILE_CASES, **SLOW_COMPILE_CASES}[case]
    k = 3
    batches = [example_batch(ms, o, t, seed) for seed in range(k)]
    outs = torch.stack([b[0] for b in batches])  # a model axis on the outputs only
    tgt = batches[0][1]
    stacked = torch.func.vmap(ms.stats, in_dims=(0, None))(outs, tgt)
    singles = [ms.stats(outs[i], tgt) for i in range(k)]
    for i, single in enumerate(singles):
        assert_stats_equal({key: v[i] for key, v in stacked.items()}, single, rtol=1e-15)
    values = torch.func.vmap(ms.compute)(stacked)
    for i, single in enumerate(singles):
        expected = ms.compute(single)
        for name, v in values.items():
            torch.testing.assert_close(v[i], expected[name], rtol=1e-15, atol=0.0, equal_nan=True)


# -- validation ------------------------------------------------------------------------------


def test_infer_task():
    expected = {
        "cross_entropy": "multiclass",
        "lm_cross_entropy": "multiclass",
        "nll": "multiclass",
        "bce_with_logits": "binary",
        "mse": "regression",
        "l1": "regression",
        "smooth_l1": "regression",
        "huber": "regression",
    }
    assert {loss: infer_task(loss) for loss in expected} == expected
    with pytest.raises(
        ValueError, match=r"'smoothl1' \(did you mean 'smooth_l1'\?\); known losses"
    ):
        infer_task("smoothl1")


def test_metric_names_are_per_task():
    assert set(METRIC_NAMES) == set(TASKS)
    assert "accuracy" in METRIC_NAMES["multiclass"] and "f1" not in METRIC_NAMES["multiclass"]
    ms = make_metrics(["f1", "accuracy"], "binary")
    assert ms.names == ("f1", "accuracy") and ms.num_classes == 2
    assert make_metrics([], "regression").stats(torch.zeros(3), torch.zeros(3)) == {}


@pytest.mark.parametrize(
    ("names", "task", "kwargs", "error", "match"),
    [
        (
            ["acuracy"],
            "multiclass",
            {},
            ValueError,
            r"unknown metric 'acuracy' \(did you mean 'accuracy'\?\); "
            r"allowed for multiclass: accuracy, precision_macro",
        ),
        (
            ["f1_weighted"],
            "binary",
            {},
            ValueError,
            r"unknown metric 'f1_weighted'.*allowed for binary: accuracy",
        ),
        (
            ["mae"],
            "multiclass",
            {},
            ValueError,
            r"'mae' does not fit a multiclass task \(it is a regression metric\); "
            r"allowed for multiclass",
        ),
        (
            ["accuracy"],
            "regression",
            {},
            ValueError,
            r"'accuracy' does not fit a regression task.*allowed for regression: mae, rmse, r2",
        ),
        (
            ["precision"],
            "multiclass",
            {},
            ValueError,
            r"'precision' does not fit a multiclass task \(it is a binary metric\)",
        ),
        (["rmse", "rmse"], "regression", {}, ValueError, r"'rmse' is listed twice"),
        ("accuracy", "binary", {}, TypeError, r"names must be a list of metric names, got str"),
        ([3], "binary", {}, TypeError, r"metric names must be strings, got int"),
        (
            ["accuracy"],
            "multi_class",
            {},
            ValueError,
            r"unknown metric task 'multi_class' \(did you mean 'multiclass'\?\)",
        ),
        (
            ["accuracy"],
            "binary",
            {"num_classes": 3},
            ValueError,
            r"binary task has 2 classes, got num_classes=3",
        ),
        (
            ["accuracy"],
            "multiclass",
            {"num_classes": 1},
            ValueError,
            r"num_classes must be at least 2, got 1",
        ),
        (
            ["accuracy"],
            "multiclass",
            {"num_classes": 2.0},
            TypeError,
            r"num_classes must be an int",
        ),
        (
            ["mae"],
            "regression",
            {"num_classes": 3},
            ValueError,
            r"num_classes is for classification",
        ),
        (
            ["accuracy"],
            "binary",
            {"target_scale": 2.0},
            ValueError,
            r"target_scale/target_shift .* a binary task has none",
        ),
        (
            ["mae"],
            "regression",
            {"target_scale": 0.0},
            ValueError,
            r"target_scale must be non-zero",
        ),
        (
            ["mae"],
            "regression",
            {"target_shift": float("nan")},
            ValueError,
            r"target_shift must be finite",
        ),
        (
            ["mae"],
            "regression",
            {"target_scale": torch.ones(2, 2)},
            ValueError,
            r"target_scale must be a number or a 1-d tensor .* \(2, 2\)",
        ),
        (
            ["mae"],
            "regression",
            {"target_shift": "1.0"},
            TypeError,
            r"target_shift must be a number or a tensor, got str",
        ),
    ],
)
def test_make_metrics_errors(names, task, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_metrics(names, task, **kwargs)


@pytest.mark.parametrize(
    ("task", "names", "kwargs", "out", "tgt", "error", "match"),
    [
        (
            "binary",
            ["accuracy"],
            {},
            (8, 2),
            (8,),
            ValueError,
            r"logits and targets of the same shape, got outputs \(8, 2\) and targets \(8,\)",
        ),
        (
            "multiclass",
            ["accuracy"],
            {},
            (8, 3),
            (8, 3, 1),
            ValueError,
            r"got outputs \(8, 3\) and targets \(8, 3, 1\)",
        ),
        (
            "multiclass",
            ["accuracy"],
            {"num_classes": 4},
            (8, 3),
            (8,),
            ValueError,
            r"num_classes=4, got outputs \(8, 3\) with 3 classes",
        ),
        (
            "multiclass",
            ["accuracy"],
            {},
            (8, 1),
            (8,),
            ValueError,
            r"at least 2 classes .* outputs \(8, 1\); one logit is task='binary'",
        ),
        (
            "multiclass",
            ["accuracy"],
            {},
            (),
            (),
            ValueError,
            r"outputs \(..., C\), got a 0-d tensor",
        ),
        (
            "regression",
            ["mae"],
            {},
            (8, 2),
            (8,),
            ValueError,
            r"outputs and targets of the same shape, got outputs \(8, 2\) and targets \(8,\)",
        ),
        (
            "regression",
            ["mae"],
            {"target_scale": torch.ones(3)},
            (8, 2),
            (8, 2),
            ValueError,
            r"target_scale has 3 values but the outputs \(8, 2\) have 2 output",
        ),
    ],
)
def test_stats_shape_errors(task, names, kwargs, out, tgt, error, match):
    ms = make_metrics(names, task, **kwargs)
    with pytest.raises(error, match=match):
        ms.stats(torch.zeros(out), torch.zeros(tgt, dtype=torch.int64))


def test_stats_dtype_errors():
    mc = make_metrics(["accuracy"], "multiclass")
    with pytest.raises(
        TypeError, match=r"class targets must be integers .* got torch.float32 targets \(4,\)"
    ):
        mc.stats(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(TypeError, match=r"floating-point model outputs, got torch.int64"):
        mc.stats(torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(
        TypeError, match=r"takes \(outputs, targets\) tensors, got \(list, Tensor\)"
    ):
        mc.stats([0.0], torch.zeros(1))


def test_compute_and_sum_stats_errors():
    ms = make_metrics(["accuracy", "f1_macro"], "multiclass")
    s = ms.stats(torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0]))
    with pytest.raises(ValueError, match=r"missing \['pred_count'\]"):
        ms.compute({k: v for k, v in s.items() if k != "pred_count"})
    with pytest.raises(ValueError, match=r"differ in keys: only in the first \['pred_count'\]"):
        sum_stats(s, {k: v for k, v in s.items() if k != "pred_count"})
    other = ms.stats(torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(
        ValueError, match=r"statistic 'true_positive' differs: \(3,\) torch.int64 against \(4,\)"
    ):
        sum_stats(s, other)
    # The helpers are pure: inputs untouched, fresh outputs.
    before = {k: v.clone() for k, v in s.items()}
    doubled = sum_stats(s, s)
    assert all(torch.equal(s[k], before[k]) and torch.equal(doubled[k], 2 * s[k]) for k in s)
    assert all(not z.any() and z.dtype == s[k].dtype for k, z in zeros_like_stats(s).items())
