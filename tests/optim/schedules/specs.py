"""Every epoch-driven schedule: its torch class, our factory and valid argument ranges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.optim.lr_scheduler as tls
from hypothesis import strategies as st

import purestep.optim.schedules as S
from purestep.optim.schedules import Schedule


def floats(lo: float, hi: float, **kw: Any) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, **kw)


LRS = floats(1e-6, 10.0)


class Factor:
    """A torch-friendly ``lr_lambda``: plain arithmetic, so it also runs on a tensor epoch
    (under compile/vmap)."""

    def __init__(self, kind: str, a: float) -> None:
        self.kind, self.a = kind, a

    def __call__(self, epoch: Any) -> Any:
        if self.kind == "pow":
            return self.a**epoch
        if self.kind == "inv":
            return 1.0 / (1.0 + self.a * epoch)
        if self.kind == "wave":  # exercises % on the epoch
            return 1.0 + self.a * (epoch % 3 - 1)
        return self.a  # "const"

    def __repr__(self) -> str:
        return f"Factor({self.kind!r}, {self.a!r})"


def lambda_factors() -> st.SearchStrategy[Factor]:
    return st.one_of(
        st.builds(Factor, st.just("pow"), floats(0.9, 1.0)),
        st.builds(Factor, st.just("inv"), floats(0.0, 0.5)),
        st.builds(Factor, st.just("wave"), floats(0.0, 0.5)),
        st.builds(Factor, st.just("const"), floats(0.0, 2.0)),
    )


def multiplicative_factors() -> st.SearchStrategy[Factor]:
    return st.one_of(
        st.builds(Factor, st.just("pow"), floats(0.99, 1.0)),
        st.builds(Factor, st.just("wave"), floats(0.0, 0.05)),
        st.builds(Factor, st.just("const"), floats(0.95, 1.02)),
    )


@dataclass(frozen=True)
class Spec:
    """``kwargs(n_groups)`` draws the constructor arguments; keys in ``per_group`` hold one
    value per group (torch gets the list, our group ``g`` schedule its ``g``-th value)."""

    name: str
    torch_cls: type
    ours: Callable[..., Schedule]
    kwargs: Callable[[int], st.SearchStrategy[dict[str, Any]]]
    example: dict[str, Any]
    per_group: tuple[str, ...] = ()
    extra_torch: dict[str, Any] = field(default_factory=dict)

    def make_torch(self, opt: torch.optim.Optimizer, kw: dict[str, Any]) -> Any:
        return self.torch_cls(opt, **kw, **self.extra_torch)

    def make_ours(self, kw: dict[str, Any], group: int) -> Schedule:
        return self.ours(**{k: v[group] if k in self.per_group else v for k, v in kw.items()})

    def example_kwargs(self, n_groups: int) -> dict[str, Any]:
        return {k: [v] * n_groups if k in self.per_group else v for k, v in self.example.items()}


def _d(**strategies: Any) -> Callable[[int], st.SearchStrategy[dict[str, Any]]]:
    """Per-call kwargs strategy; a value ``("per_group", s)`` draws a list of ``s``."""

    def kwargs(n: int) -> st.SearchStrategy[dict[str, Any]]:
        resolved = {
            k: st.lists(v[1], min_size=n, max_size=n) if isinstance(v, tuple) else v
            for k, v in strategies.items()
        }
        return st.fixed_dictionaries(resolved)

    return kwargs


GAMMA = floats(0.0, 1.2)

SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec(
            "step_lr",
            tls.StepLR,
            S.step_lr,
            _d(step_size=st.integers(1, 80), gamma=GAMMA),
            {"step_size": 7, "gamma": 0.5},
        ),
        Spec(
            "multi_step_lr",
            tls.MultiStepLR,
            S.multi_step_lr,
            _d(milestones=st.lists(st.integers(0, 520), max_size=10), gamma=GAMMA),
            {"milestones": [0, 3, 3, 10, 40], "gamma": 0.7},
        ),
        Spec(
            "exponential_lr",
            tls.ExponentialLR,
            S.exponential_lr,
            _d(gamma=floats(0.9, 1.01)),
            {"gamma": 0.99},
        ),
        Spec(
            "cosine_annealing_lr",
            tls.CosineAnnealingLR,
            S.cosine_annealing_lr,
            _d(
                T_max=st.integers(1, 300) | st.integers(-40, -1),
                eta_min=floats(0.0, 1e-2) | st.just(0),
            ),
            {"T_max": 13, "eta_min": 1e-3},
        ),
        Spec(
            "cosine_annealing_warm_restarts",
            tls.CosineAnnealingWarmRestarts,
            S.cosine_annealing_warm_restarts,
            _d(T_0=st.integers(1, 100), T_mult=st.integers(1, 4), eta_min=floats(0.0, 1e-2)),
            {"T_0": 5, "T_mult": 2, "eta_min": 1e-4},
        ),
        Spec(
            "linear_lr",
            tls.LinearLR,
            S.linear_lr,
            _d(
                start_factor=floats(0.0, 1.0, exclude_min=True),
                end_factor=floats(0.0, 1.0),
                total_iters=st.integers(0, 600),
            ),
            {"start_factor": 0.1, "end_factor": 0.9, "total_iters": 20},
        ),
        Spec(
            "constant_lr",
            tls.ConstantLR,
            S.constant_lr,
            _d(factor=floats(0.0, 1.0, exclude_min=True), total_iters=st.integers(0, 600)),
            {"factor": 0.3, "total_iters": 9},
        ),
        Spec(
            "polynomial_lr",
            tls.PolynomialLR,
            S.polynomial_lr,
            _d(
                total_iters=st.integers(1, 600),
                power=floats(0.0, 5.0) | st.sampled_from([0.5, 2.0, 3.0]),
            ),
            {"total_iters": 30, "power": 3.0},
        ),
        Spec(
            "one_cycle_lr",
            tls.OneCycleLR,
            S.one_cycle_lr,
            _d(
                max_lr=("per_group", floats(1e-4, 10.0)),
                total_steps=st.integers(450, 2000),
                pct_start=floats(0.0, 1.0),
                anneal_strategy=st.sampled_from(["cos", "linear"]),
                div_factor=floats(1.0, 1e3),
                final_div_factor=floats(1.0, 1e5),
                three_phase=st.booleans(),
                cycle_momentum=st.booleans(),  # the lr is the same either way
            ),
            {"max_lr": 0.5, "total_steps": 200, "three_phase": True, "cycle_momentum": False},
            per_group=("max_lr",),
        ),
        Spec(
            "lambda_lr",
            tls.LambdaLR,
            S.lambda_lr,
            _d(lr_lambda=("per_group", lambda_factors())),
            {"lr_lambda": Factor("pow", 0.97)},
            per_group=("lr_lambda",),
        ),
        Spec(
            "multiplicative_lr",
            tls.MultiplicativeLR,
            S.multiplicative_lr,
            _d(lr_lambda=("per_group", multiplicative_factors())),
            {"lr_lambda": Factor("wave", 0.03)},
            per_group=("lr_lambda",),
        ),
    ]
}

PLATEAU_KWARGS = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["min", "max"]),
        "factor": floats(0.0, 1.0, exclude_max=True),
        "patience": st.integers(0, 6),
        "threshold": floats(0.0, 0.2) | st.just(0.0),
        "threshold_mode": st.sampled_from(["rel", "abs"]),
        "cooldown": st.integers(0, 5),
        "eps": floats(0.0, 1e-3) | st.just(1e-8),
    }
)
