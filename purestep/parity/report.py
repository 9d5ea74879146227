"""The parity report: per-step differences and the first divergence."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["CATEGORIES", "Divergence", "ParityReport", "StepRecord", "ulp_distance"]

# Compared in causal order: a divergence is reported in the first category it shows up in.
CATEGORIES = ("loss", "buffers", "grads", "opt_state", "params")


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Units in the last place between two floating scalars of the same dtype (a NaN or a
    dtype mismatch gives -1)."""
    if a.dtype != b.dtype or not a.is_floating_point():
        return -1
    if torch.isnan(a).item() or torch.isnan(b).item():
        return -1
    int_dtype = {torch.float64: torch.int64, torch.float32: torch.int32}.get(a.dtype, torch.int16)
    bits = {torch.float64: 64, torch.float32: 32}.get(a.dtype, 16)

    def ordered(x: torch.Tensor) -> int:
        i = int(x.reshape(1).view(int_dtype).item())
        # Map the sign-magnitude float bit pattern onto a monotone integer line.
        return i if i >= 0 else -(i & ((1 << (bits - 1)) - 1))

    return abs(ordered(a) - ordered(b))


@dataclass
class StepRecord:
    """One step: both losses, and per category the max abs and max rel difference."""

    step: int
    loss_ref: float
    loss_fun: float
    max_abs: dict[str, float] = field(default_factory=dict)
    max_rel: dict[str, float] = field(default_factory=dict)
    equal: bool = True


@dataclass
class Divergence:
    """The first tensor element that differed beyond the mode's tolerance."""

    step: int
    category: str
    name: str
    index: tuple[int, ...]
    ref_value: float
    fun_value: float
    ulp: int
    reason: str = ""  # set when there was no value to compare (shape, a missing counterpart)

    def __str__(self) -> str:
        where = f"{self.category}[{self.name!r}]" if self.name else self.category
        if self.reason:
            return f"first divergence at step {self.step}: {where}: {self.reason}"
        idx = f" at index {self.index}" if self.index else ""
        return (
            f"first divergence at step {self.step}: {where}{idx}: reference {self.ref_value!r} "
            f"vs functional {self.fun_value!r} ({self.ulp} ulp)"
        )


@dataclass
class ParityReport:
    """What ``purestep.parity.compare`` found. ``ok`` is True when no step diverged.

    ``compared`` lists, per category, the tensors that were compared (a check that compares
    nothing is visible, not silently green); ``uncompared`` the tensors found on one side
    only, each of which fails the check; ``hint`` a likely explanation of a failure.
    """

    mode: str
    forcing: str
    rtol: float
    atol: float
    steps_requested: int
    records: list[StepRecord] = field(default_factory=list)
    first_divergence: Divergence | None = None
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    compared: dict[str, list[str]] = field(default_factory=dict)
    uncompared: list[str] = field(default_factory=list)
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_divergence is None and len(self.records) > 0

    @property
    def steps(self) -> int:
        return len(self.records)

    def max_abs(self, category: str) -> float:
        """Largest absolute difference in ``category`` over all steps."""
        return max((r.max_abs.get(category, 0.0) for r in self.records), default=0.0)

    def compared_counts(self) -> dict[str, int]:
        """Number of distinct tensors compared per category (0 where none was)."""
        return {c: len(self.compared.get(c, [])) for c in CATEGORIES}

    def compared_text(self) -> str:
        """What was compared, e.g. ``loss, 4 grads, 4 params, 0 buffers, 12 optimizer-state
        tensors (exp_avg, exp_avg_sq, step)``."""
        counts = self.compared_counts()
        keys = sorted({n.rsplit(".", 1)[-1] for n in self.compared.get("opt_state", [])})
        parts = ["loss" if counts["loss"] else "no loss"]
        parts += [f"{counts[c]} {c}" for c in ("grads", "params", "buffers")]
        state = f"{counts['opt_state']} optimizer-state tensors"
        parts.append(state + (f" ({', '.join(keys)})" if keys else ""))
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["steps"] = self.steps
        out["compared_counts"] = self.compared_counts()
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """The whole report as JSON (non-finite numbers as strings)."""
        return json.dumps(_finite(self.to_dict()), indent=indent)

    def _rows(self, limit: int | None) -> list[StepRecord]:
        """``limit`` rows (all when there are fewer): the first divergence and its
        neighbours, the first and last step, and the rest spread evenly."""
        n = len(self.records)
        if limit is None or n <= limit:
            return self.records
        must = [0, n - 1]
        if self.first_divergence is not None:
            d = self.first_divergence.step
            must = [d, 0, n - 1, d - 1, d + 1]
        chosen = list(dict.fromkeys(i for i in must if 0 <= i < n))[:limit]
        # An even grid of `limit` distinct steps over [0, n - 1]; the grid points farthest
        # from the steps already chosen fill the remaining rows.
        grid = [int(j * (n - 1) / (limit - 1) + 0.5) for j in range(limit)] if limit > 1 else []
        spare = [g for g in grid if g not in chosen]
        spare.sort(key=lambda g: -min(abs(g - c) for c in chosen) if chosen else 0)
        picked = sorted(chosen + spare[: limit - len(chosen)])
        return [self.records[i] for i in picked]

    def _table(self, limit: int | None) -> list[str]:
        counts = self.compared_counts()
        head = (
            "| step | loss (reference) | loss (functional) | "
            + " | ".join(f"max abs {c} ({counts[c]})" for c in CATEGORIES[1:])
            + " |"
        )
        lines = [head, "|" + "---|" * (3 + len(CATEGORIES) - 1)]
        for r in self._rows(limit):
            cells = [f"{r.max_abs.get(c, 0.0):.3g}" for c in CATEGORIES[1:]]
            mark = "" if r.equal else " ✗"
            lines.append(
                f"| {r.step}{mark} | {r.loss_ref:.8g} | {r.loss_fun:.8g} | "
                + " | ".join(cells)
                + " |"
            )
        return lines

    def summary(self) -> str:
        """One line: the verdict, what was compared, and a hint on a failure."""
        tol = "bitwise" if self.mode == "bitwise" else f"close (rtol={self.rtol}, atol={self.atol})"
        if not self.records:
            return "PARITY NOT RUN: no steps were compared"
        compared = f"compared {self.compared_text()}"
        if self.ok:
            return f"PARITY OK: {self.steps} steps {tol}, forcing={self.forcing}; {compared}"
        line = f"PARITY FAILED ({tol}, forcing={self.forcing}): {self.first_divergence}; {compared}"
        return line + (f". Hint: {self.hint}" if self.hint else "")

    def to_markdown(self, limit: int | None = None) -> str:
        """Verdict, notes, tensors without a counterpart and the per-step table (all steps
        unless ``limit``; the header counts the tensors compared per category)."""
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")
        parts = [f"**{self.summary()}**", ""]
        parts += [f"- {n}" for n in self.notes]
        parts += [f"- not compared (no counterpart): {u}" for u in self.uncompared]
        if self.notes or self.uncompared:
            parts.append("")
        parts += self._table(limit)
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.to_markdown(limit=12)

    def plot(self, path: str) -> str:
        """Save a log-scale plot of the max abs difference per step and category."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        steps = [r.step for r in self.records]
        for c in CATEGORIES:
            ys = [max(r.max_abs.get(c, 0.0), 1e-45) for r in self.records]
            ax.plot(steps, ys, label=c)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("max |reference - functional|")
        ax.set_title(self.summary()[:80])
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
