"""Training metrics as additive sufficient statistics, summed on the device.

The fit loop must not read a value back to the host after every step. So a metric is split
in two pure functions, as a streaming reduction:

    ms = make_metrics(["accuracy", "f1_macro"], "multiclass")
    totals = None
    for outputs, targets in batches:                  # inside the (compiled) step
        s = ms.stats(outputs, targets)                # additive counts / float64 sums
        totals = s if totals is None else sum_stats(totals, s)
    values = ms.compute(totals)                       # once per epoch: {name: 0-d tensor}

``stats`` is pure tensor code (no ``.item()``, no branching on values, fixed output shapes
for fixed input shapes), so it runs under ``torch.compile(fullgraph=True)`` and
``torch.func.vmap`` (one set of statistics per model of a sweep; ``vmap(ms.compute)`` then
gives per-model values). The values agree with scikit-learn's defaults on the whole data:

- classification (``binary`` from logits: ``logit > 0`` vs ``target > 0.5``; ``multiclass``
  by arg-max over the last axis, the first index on ties): the statistics are class counts
  (int64, exact, order-independent). Macro averages run over the classes that occur in the
  targets or the predictions, as scikit-learn's ``labels=None``; a ratio with a zero
  denominator is 0 (scikit-learn's ``zero_division="warn"`` value, without the warning).
  Micro precision, recall and F1 of single-label data all equal the accuracy.
  ``confusion_matrix`` is ``C x C`` int64 over all ``num_classes`` (rows true, columns
  predicted), 2 x 2 for ``binary``.
- regression (outputs ``(N,)``, or ``(N, D)`` averaged uniformly over the D outputs): float64
  sums of ``|e|``, ``e²``, ``y - K`` and ``(y - K)²`` per output, see ``compute``.

With no samples at all every value is NaN (scikit-learn raises); R² with fewer than two
samples is NaN, as scikit-learn returns. ``target_scale``/``target_shift`` undo a target
standardisation (``y * scale + shift`` on outputs and targets) so that metrics are reported
in the original units. Float64 is not available on Apple's MPS device; regression statistics
need a CPU or CUDA device.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch

__all__ = [
    "METRIC_NAMES",
    "TASKS",
    "MetricSet",
    "infer_task",
    "make_metrics",
    "sum_stats",
    "zeros_like_stats",
]

TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")

_AVERAGED = (
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_micro",
    "recall_micro",
    "f1_micro",
)

#: The metric names each task accepts.
METRIC_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "binary": ("accuracy", "precision", "recall", "f1", *_AVERAGED, "confusion_matrix"),
        "multiclass": ("accuracy", *_AVERAGED, "confusion_matrix"),
        "regression": ("mae", "rmse", "r2"),
    }
)

_LOSS_TASKS: Mapping[str, str] = MappingProxyType(
    {
        "cross_entropy": "multiclass",
        "lm_cross_entropy": "multiclass",
        "nll": "multiclass",
        "bce_with_logits": "binary",
        "mse": "regression",
        "l1": "regression",
        "smooth_l1": "regression",
        "huber": "regression",
    }
)

# R²: a total sum of squares at or below this fraction of Σ(y - K)² is rounding noise of the
# float64 sums (the targets' spread is under ~1e-6 of their offset from K): it counts as zero.
_SS_TOT_ZERO = 2.0**-40

_MACRO = ("precision_macro", "recall_macro", "f1_macro")
_CONFUSION = "confusion"
_PER_CLASS = ("true_positive", "true_count", "pred_count")
_ACCURACY = ("correct", "count")


def _did_you_mean(name: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def infer_task(loss_name: str) -> str:
    """The metric task that fits a built-in loss name: ``cross_entropy``,
    ``lm_cross_entropy``, ``nll`` -> ``multiclass`` (arg-max of logits or log-probabilities),
    ``bce_with_logits`` -> ``binary``, ``mse``, ``l1``, ``smooth_l1``, ``huber`` ->
    ``regression``."""
    if not isinstance(loss_name, str):
        raise TypeError(f"loss_name must be a str, got {type(loss_name).__name__}")
    if loss_name not in _LOSS_TASKS:
        raise ValueError(
            f"no metric task for loss {loss_name!r}{_did_you_mean(loss_name, list(_LOSS_TASKS))}; "
            f"known losses: {', '.join(_LOSS_TASKS)}"
        )
    return _LOSS_TASKS[loss_name]


def _task_of(name: str) -> str | None:
    return next((t for t in TASKS if name in METRIC_NAMES[t]), None)


@dataclass(frozen=True, eq=False)
class MetricSet:
    """A validated choice of metrics for one task; build it with ``make_metrics``.

    ``stats(outputs, targets)`` gives a batch's additive statistics (``stat_keys``), and
    ``compute(totals)`` the metric values from their sum over any number of batches.
    """

    names: tuple[str, ...]
    task: str
    num_classes: int | None = None
    target_scale: torch.Tensor | None = None
    target_shift: torch.Tensor | None = None

    # -- which statistics -----------------------------------------------------------------
    @property
    def stat_keys(self) -> tuple[str, ...]:
        """The keys ``stats`` returns (and ``compute`` needs), fixed by names and task."""
        if not self.names:
            return ()
        if self.task == "regression":
            keys = ["count"]
            if "mae" in self.names:
                keys.append("abs_error_sum")
            if "rmse" in self.names or "r2" in self.names:
                keys.append("sq_error_sum")
            if "r2" in self.names:
                keys += ["target_sum", "target_sq_sum"]
            return tuple(keys)
        # Classification: the smallest layout that holds what the names need. The confusion
        # matrix holds everything; per-class counts hold the macro averages; two counts hold
        # accuracy and the micro averages. Binary always keeps its 2 x 2 matrix (4 counts).
        if self.task == "binary" or "confusion_matrix" in self.names:
            return (_CONFUSION,)
        if any(n in _MACRO for n in self.names):
            return _PER_CLASS
        return _ACCURACY

    # -- per batch ------------------------------------------------------------------------
    def stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive statistics of one batch: int64 counts, float64 sums, keys ``stat_keys``.

        Pure: no host synchronisation, no branching on values, output shapes fixed by the
        input shapes; compilable with ``fullgraph=True`` and vmappable. Shapes:
        ``binary`` outputs (logits) and targets of one shape (a trailing size-1 axis on one
        side is allowed); ``multiclass`` outputs ``(..., C)`` with integer class targets
        ``(...)`` (``(N, T, C)`` with ``(N, T)`` for sequence models; targets outside
        ``[0, C)``, such as cross_entropy's ``ignore_index=-100`` padding, count for nothing,
        as in the loss) or class-probability targets ``(..., C)`` (their arg-max is the class);
        ``regression`` outputs ``(N,)`` or ``(N, D)`` (leading axes are flattened into
        samples) and targets of the same shape.
        """
        if not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise TypeError(
                "stats takes (outputs, targets) tensors, got "
                f"({type(outputs).__name__}, {type(targets).__name__})"
            )
        if not outputs.is_floating_point():
            raise TypeError(
                f"{self.task} metrics expect floating-point model outputs, got {outputs.dtype}"
            )
        if not self.names:
            return {}
        outputs, targets = outputs.detach(), targets.detach()
        if self.task == "binary":
            return self._binary_stats(outputs, targets)
        if self.task == "multiclass":
            return self._multiclass_stats(outputs, targets)
        return self._regression_stats(outputs, targets)

    def _binary_stats(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        outputs, targets = _align(outputs, targets, "binary metrics expect logits and targets")
        true = (targets > 0.5).reshape(-1).to(torch.int64)
        pred = (outputs > 0).reshape(-1).to(torch.int64)
        return {_CONFUSION: _confusion(true, pred, None, 2)}

    def _multiclass_stats(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if outputs.dim() == 0:
            raise ValueError("multiclass metrics expect outputs (..., C), got a 0-d tensor")
        c = outputs.shape[-1]
        if self.num_classes is not None and c != self.num_classes:
            raise ValueError(
                f"multiclass metrics were made for num_classes={self.num_classes}, got outputs "
                f"{tuple(outputs.shape)} with {c} classes in the last axis"
            )
        if c < 2:
            raise ValueError(
                f"multiclass metrics need at least 2 classes in the outputs' last axis, got "
                f"outputs {tuple(outputs.shape)}; one logit is task='binary'"
            )
        pred = outputs.argmax(dim=-1).reshape(-1)
        valid: torch.Tensor | None
        if targets.shape == outputs.shape and targets.is_floating_point():
            true, valid = targets.argmax(dim=-1).reshape(-1), None
        elif targets.shape == outputs.shape[:-1]:
            if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
                raise TypeError(
                    f"multiclass class targets must be integers (as cross_entropy's), got "
                    f"{targets.dtype} targets {tuple(targets.shape)}"
                )
            flat = targets.reshape(-1).to(torch.int64)
            # Out-of-range targets (ignore_index padding) are masked, never used as an index.
            valid = (flat >= 0) & (flat < c)
            true = torch.where(valid, flat, 0)
        else:
            raise ValueError(
                "multiclass metrics expect outputs (..., C) with class targets (...) or "
                f"class-probability targets (..., C), got outputs {tuple(outputs.shape)} and "
                f"targets {tuple(targets.shape)}"
            )
        keys = self.stat_keys
        if keys == (_CONFUSION,):
            return {_CONFUSION: _confusion(true, pred, valid, c)}
        ones = torch.ones_like(true) if valid is None else valid.to(torch.int64)
        hit = ones * (pred == true).to(torch.int64)
        if keys == _PER_CLASS:
            return {
                "true_positive": _bincount(true, hit, c),
                "true_count": _bincount(true, ones, c),
                "pred_count": _bincount(pred, ones, c),
            }
        return {"correct": hit.sum(), "count": ones.sum()}

    def _regression_stats(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        outputs, targets = _align(outputs, targets, "regression metrics expect outputs and targets")
        if targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError(f"regression targets must be real numbers, got {targets.dtype}")
        d = 1 if outputs.dim() <= 1 else outputs.shape[-1]
        # Float64 before the affine map and the subtraction: float32 inputs are then exact,
        # and the per-element values are the ones a float64 reference sees.
        pred = outputs.reshape(-1, d).to(torch.float64)
        true = targets.reshape(-1, d).to(torch.float64)
        shift = self.target_shift
        if self.target_scale is not None or shift is not None:
            scale = self.target_scale
            for what, t in (("target_scale", scale), ("target_shift", shift)):
                if t is not None and t.dim() == 1 and t.shape[0] != d:
                    raise ValueError(
                        f"{what} has {t.shape[0]} values but the outputs "
                        f"{tuple(outputs.shape)} have {d} output(s)"
                    )
            if scale is not None:
                scale = scale.to(pred.device)
                pred, true = pred * scale, true * scale
            if shift is not None:
                shift = shift.to(pred.device)
                pred, true = pred + shift, true + shift
        keys = self.stat_keys
        err = pred - true
        out = {"count": torch.full((), true.shape[0], dtype=torch.int64, device=true.device)}
        if "abs_error_sum" in keys:
            out["abs_error_sum"] = err.abs().sum(dim=0)
        if "sq_error_sum" in keys:
            out["sq_error_sum"] = (err * err).sum(dim=0)
        if "target_sum" in keys:
            # Moments about a fixed K (the standardisation shift, else 0), so they add up
            # across batches; see compute for the conditioning.
            dev = true if shift is None else true - shift
            out["target_sum"] = dev.sum(dim=0)
            out["target_sq_sum"] = (dev * dev).sum(dim=0)
        return out

    # -- per epoch ------------------------------------------------------------------------
    def compute(self, totals: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Metric values from statistics summed over batches, in the order of ``names``.

        0-d float64 tensors, except ``confusion_matrix`` (``C x C`` int64); pure tensor
        code, no host synchronisation. Regression, per output then averaged uniformly:
        MAE = Σ|e|/n, RMSE = sqrt(Σe²/n), R² = 1 - Σe²/SS_tot with
        SS_tot = Σ(y-K)² - (Σ(y-K))²/n, where K is ``target_shift`` (else 0).

        Why moments about a fixed K: additive statistics must be summable in any grouping,
        which per-batch centred moments (Chan's combination) are not. The cancellation in
        SS_tot costs a relative error of about eps·(1 + (mean-K)²/var): nothing for
        standardised targets (K = their training mean), about 1e-12 for targets whose mean
        is 100 standard deviations from 0. Per-batch centring would not help an additive
        form: its between-batch term has the same cancellation. Following scikit-learn's
        ``force_finite``: SS_res = 0 gives 1.0; SS_tot = 0 (here: at most 2^-40 of
        Σ(y-K)², i.e. rounding noise) with SS_res > 0 gives 0.0 (scikit-learn's exact test
        returns a meaningless huge negative score for constant targets whose mean is not
        exactly representable).
        """
        missing = [k for k in self.stat_keys if k not in totals]
        if missing:
            raise ValueError(
                f"compute needs the statistics {list(self.stat_keys)} (from stats), missing "
                f"{missing}; got keys {sorted(totals)}"
            )
        if self.task == "regression":
            values = self._regression_values(totals)
        else:
            values = self._classification_values(totals)
        return {name: values[name] for name in self.names}

    def _classification_values(self, totals: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = self.stat_keys
        values: dict[str, torch.Tensor] = {}
        if keys == (_CONFUSION,):
            cm = totals[_CONFUSION]
            tp, true_count, pred_count = cm.diagonal(), cm.sum(dim=1), cm.sum(dim=0)
            correct, count = tp.sum(), cm.sum()
            values["confusion_matrix"] = cm
        elif keys == _PER_CLASS:
            tp, true_count, pred_count = (totals[k] for k in _PER_CLASS)
            correct, count = tp.sum(), true_count.sum()
        else:
            correct, count = totals["correct"], totals["count"]
        nan = torch.full((), float("nan"), dtype=torch.float64, device=count.device)
        any_data = count > 0
        # Single-label data: micro precision = recall = F1 = accuracy (every counted sample
        # has exactly one true and one predicted class).
        accuracy = torch.where(any_data, _ratio(correct, count), nan)
        for name in ("accuracy", "precision_micro", "recall_micro", "f1_micro"):
            values[name] = accuracy
        if keys == _ACCURACY:
            return values
        precision = _ratio(tp, pred_count)
        recall = _ratio(tp, true_count)
        f1 = _ratio(2 * tp, true_count + pred_count)
        if self.task == "binary":  # the positive class, scikit-learn's average="binary"
            values["precision"] = torch.where(any_data, precision[1], nan)
            values["recall"] = torch.where(any_data, recall[1], nan)
            values["f1"] = torch.where(any_data, f1[1], nan)
        # scikit-learn's labels=None: the classes seen in the targets or the predictions.
        present = (true_count + pred_count) > 0
        n_present = present.sum().to(torch.float64)
        for name, per_class in (
            ("precision_macro", precision),
            ("recall_macro", recall),
            ("f1_macro", f1),
        ):
            total = torch.where(present, per_class, 0.0).sum()
            values[name] = torch.where(any_data, total / n_present.clamp_min(1.0), nan)
        return values

    def _regression_values(self, totals: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        count = totals["count"]
        n = count.to(torch.float64).clamp_min(1.0)
        nan = torch.full((), float("nan"), dtype=torch.float64, device=count.device)
        values: dict[str, torch.Tensor] = {}
        if "mae" in self.names:
            mae = (totals["abs_error_sum"] / n).mean()
            values["mae"] = torch.where(count > 0, mae, nan)
        if "rmse" in self.names:
            rmse = (totals["sq_error_sum"] / n).sqrt().mean()
            values["rmse"] = torch.where(count > 0, rmse, nan)
        if "r2" in self.names:
            ss_res = totals["sq_error_sum"]
            s, q = totals["target_sum"], totals["target_sq_sum"]
            ss_tot = q - s * s / n
            zero_tot = ss_tot <= _SS_TOT_ZERO * q
            raw = 1.0 - ss_res / torch.where(zero_tot, 1.0, ss_tot)
            r2 = torch.where(ss_res == 0, 1.0, torch.where(zero_tot, 0.0, raw)).mean()
            values["r2"] = torch.where(count > 1, r2, nan)
        return values


def _align(
    outputs: torch.Tensor, targets: torch.Tensor, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal shapes, allowing a trailing size-1 axis on one side ((N, 1) against (N,))."""
    if outputs.shape == targets.shape:
        return outputs, targets
    if outputs.dim() > 0 and outputs.shape[-1] == 1 and outputs.shape[:-1] == targets.shape:
        return outputs.squeeze(-1), targets
    if targets.dim() > 0 and targets.shape[-1] == 1 and targets.shape[:-1] == outputs.shape:
        return outputs, targets.squeeze(-1)
    raise ValueError(
        f"{what} of the same shape, got outputs {tuple(outputs.shape)} and targets "
        f"{tuple(targets.shape)}"
    )


def _bincount(index: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """Per-bin sums of int64 weights: a fixed-size scatter-add (torch.bincount's output size
    depends on the values, which a compiled graph cannot have)."""
    zeros = torch.zeros(size, dtype=torch.int64, device=index.device)
    return zeros.scatter_add(0, index, weight)


def _confusion(
    true: torch.Tensor, pred: torch.Tensor, valid: torch.Tensor | None, c: int
) -> torch.Tensor:
    weight = torch.ones_like(true) if valid is None else valid.to(torch.int64)
    return _bincount(true * c + pred, weight, c * c).reshape(c, c)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den in float64, 0 where den == 0 (scikit-learn's zero_division default)."""
    den64 = den.to(torch.float64)
    return torch.where(den == 0, 0.0, num.to(torch.float64) / den64.clamp_min(1.0))


def _as_affine(value: float | torch.Tensor | None, what: str) -> torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | torch.Tensor):
        raise TypeError(f"{what} must be a number or a tensor, got {type(value).__name__}")
    t = torch.as_tensor(value).detach()
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what} must be real, got {t.dtype}")
    if t.dim() > 1:
        raise ValueError(
            f"{what} must be a number or a 1-d tensor (one per output), got shape {tuple(t.shape)}"
        )
    t = t.to(device="cpu", dtype=torch.float64).clone()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must be finite, got {t.tolist()}")
    if what == "target_scale" and bool((t == 0).any()):
        raise ValueError(f"target_scale must be non-zero, got {t.tolist()}")
    return t


def make_metrics(
    names: Sequence[str],
    task: str,
    *,
    num_classes: int | None = None,
    target_scale: float | torch.Tensor | None = None,
    target_shift: float | torch.Tensor | None = None,
) -> MetricSet:
    """A validated ``MetricSet`` for ``task`` (``binary``, ``multiclass``, ``regression``).

    ``names`` from ``METRIC_NAMES[task]``. ``num_classes``: for ``multiclass``, fixes C and
    checks it at ``stats`` time (``None``: the outputs' last axis); ``binary`` is always 2.
    ``target_scale``/``target_shift`` (regression only; numbers, or one value per output):
    the targets were standardised for training, so ``y * scale + shift`` is applied to
    outputs and targets before the statistics; the shift also centres the R² sums.
    """
    if not isinstance(task, str) or task not in TASKS:
        hint = _did_you_mean(task, TASKS) if isinstance(task, str) else ""
        raise ValueError(f"unknown metric task {task!r}{hint}; tasks: {', '.join(TASKS)}")
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(
            f"names must be a list of metric names, got {type(names).__name__} {names!r}"
        )
    allowed = METRIC_NAMES[task]
    seen: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"metric names must be strings, got {type(name).__name__} {name!r}")
        if name not in allowed:
            other = _task_of(name)
            if other is not None:
                raise ValueError(
                    f"metric {name!r} does not fit a {task} task (it is a {other} metric); "
                    f"allowed for {task}: {', '.join(allowed)}"
                )
            raise ValueError(
                f"unknown metric {name!r}{_did_you_mean(name, allowed)}; "
                f"allowed for {task}: {', '.join(allowed)}"
            )
        if name in seen:
            raise ValueError(f"metric {name!r} is listed twice")
        seen.append(name)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int)
    ):
        raise TypeError(f"num_classes must be an int or None, got {type(num_classes).__name__}")
    if task == "regression" and num_classes is not None:
        raise ValueError(f"num_classes is for classification, got {num_classes} for regression")
    if task == "binary" and num_classes not in (None, 2):
        raise ValueError(f"a binary task has 2 classes, got num_classes={num_classes}")
    if task == "multiclass" and num_classes is not None and num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if task != "regression" and (target_scale is not None or target_shift is not None):
        raise ValueError(
            f"target_scale/target_shift undo a regression target standardisation; a {task} "
            "task has none"
        )
    return MetricSet(
        names=tuple(seen),
        task=task,
        num_classes=2 if task == "binary" else num_classes,
        target_scale=_as_affine(target_scale, "target_scale"),
        target_shift=_as_affine(target_shift, "target_shift"),
    )


def _check_same_keys(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    if set(a) != set(b):
        raise ValueError(
            f"the statistics differ in keys: only in the first {sorted(set(a) - set(b))}, "
            f"only in the second {sorted(set(b) - set(a))}"
        )


def sum_stats(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Elementwise ``a + b`` of two statistics dicts (pure; same keys, shapes and dtypes)."""
    _check_same_keys(a, b)
    for k in a:
        if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype:
            raise ValueError(
                f"statistic {k!r} differs: {tuple(a[k].shape)} {a[k].dtype} against "
                f"{tuple(b[k].shape)} {b[k].dtype}"
            )
    return {k: a[k] + b[k] for k in a}


def zeros_like_stats(stats: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Zero statistics of the same keys, shapes, dtypes and devices: an accumulator's start."""
    return {k: torch.zeros_like(v) for k, v in stats.items()}
