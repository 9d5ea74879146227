"""``purestep.compile(step, verify=True)``: the first compiled call per batch signature is
checked against the eager step.

A compiled step already runs the eager step once for every new batch signature (to fail
exactly as eager does, see ``purestep.core.step.call_compiled``). With ``verify`` that
eager result is kept and compared with the compiled one: the loss and every metric
(gradients included), the new parameters, buffers and optimizer state, and the random key.
A value outside the compiled tolerance (an inductor miscompile, a mask drawn otherwise)
raises ``CompiledStepMismatch`` naming the tensor, the index, both values and their ulp
distance, instead of training silently on a wrong step.

One exception, by design of the update rules: where a gradient element is at
rounding-noise level (|g| <= 1e-6, relative to the tensor's largest gradient when that is
above 1: a bias feeding BatchNorm, a weight of an input that is ~0 in the batch), compiled
and eager rounding noise differ, and Adam-style rules normalise that noise into steps of
up to ~lr (W1 with Adam: 2 of 200k first-layer weights, |g| ~2e-8, differ by 3e-6). Those
elements are not compared (gradient, parameter, optimizer state).

What it catches: a value outside the element-wise tolerance (rtol 1e-5, atol 1e-6) in a
tensor that is also more than 1 % off in relative L2 (``TENSOR_RTOL``), or a NaN/inf that
only one side has, or any difference in integer tensors and the random key. Compiled
steps of real conv nets legitimately exceed the element-wise tolerance (reordered long
reductions), hence the tensor-level test; ``purestep.parity.compare_compiled`` measures a
step's own tolerance in detail.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from purestep.pytree import tree_named_leaves

__all__ = ["COMPILED_ATOL", "COMPILED_RTOL", "CompiledStepMismatch", "check_compiled_step"]

# The per-step tolerance of a compiled step against the eager one (CPU float32; the same
# values as purestep.parity.compare's COMPILED_RTOL/COMPILED_ATOL).
COMPILED_RTOL, COMPILED_ATOL = 1e-5, 1e-6
# ... or, for the tensor as a whole, within this relative L2 distance: long reductions
# with cancellation (BatchNorm's backward, a conv weight's gradient over batch x H x W)
# round differently when inductor reorders them, far beyond the element-wise tolerance
# (ResNet-8, batch 128, SGD: a conv weight element off by 2.6e-5 relative; gradients, new
# parameters and momentum up to 1.8e-3 in relative L2, a BatchNorm bias). Different masks
# or a wrong kernel are off by more; finer deviations are compare_compiled's to measure.
TENSOR_RTOL = 1e-2


class CompiledStepMismatch(AssertionError):
    """The compiled step's result differs from the eager step's beyond the tolerance.

    Attributes: ``tensor`` (its path, e.g. ``"state.params['0.weight']"``), ``index``,
    ``eager`` and ``compiled`` (the two values), ``ulp`` (their distance; -1 for NaN)."""

    def __init__(
        self, tensor: str, index: tuple[int, ...], eager: float, compiled: float, ulp: int
    ) -> None:
        self.tensor, self.index, self.eager, self.compiled, self.ulp = (
            tensor,
            index,
            eager,
            compiled,
            ulp,
        )
        where = f"{tensor}[{', '.join(map(str, index))}]" if index else tensor
        super().__init__(
            f"the compiled step differs from the eager step at {where}: eager {eager!r}, "
            f"compiled {compiled!r} ({ulp} ulp; tolerance rtol={COMPILED_RTOL}, "
            f"atol={COMPILED_ATOL}, or {TENSOR_RTOL} of the tensor's largest value). The "
            "compiled graph computes something else than the "
            "eager step (an upstream compiler bug, or an op whose compiled form differs): "
            "train this model eagerly, or try backend='aot_eager'; verify=False skips this "
            "check"
        )


NOISE = 1e-6


def check_compiled_step(eager: Any, compiled: Any, noise: dict[str, torch.Tensor]) -> None:
    """Raise ``CompiledStepMismatch`` at the first leaf of ``compiled`` outside the
    tolerance of ``eager`` (two ``(result, key)`` pairs of the same structure).
    ``noise``: per parameter name, the elements whose state entries are not compared
    (``noise_masks``, module doc)."""
    expected = dict(tree_named_leaves(eager, "out"))
    for name, got in tree_named_leaves(compiled, "out"):
        want = expected.get(name)
        if not isinstance(got, torch.Tensor) or not isinstance(want, torch.Tensor):
            continue
        skip = next(
            (m for k, m in noise.items() if f"['{k}']" in name and m.shape == want.shape), None
        )
        _check_leaf(_readable(name), want, got, skip)


def noise_masks(grads: Any) -> dict[str, torch.Tensor]:
    """Per gradient, the elements at rounding-noise level (see the module doc)."""
    if not isinstance(grads, dict):
        return {}
    masks = {}
    for k, g in grads.items():
        if isinstance(g, torch.Tensor) and g.is_floating_point() and g.numel():
            a = g.detach().abs()
            masks[k] = a <= NOISE * max(1.0, float(a.max()))
    return masks


def _readable(name: str) -> str:
    """``out[0][0].params['w']`` -> ``state.params['w']`` (train steps: (state, metrics))."""
    for raw, nice in (("out[0][0]", "state"), ("out[0][1]", "metrics"), ("out[1]", "rng key")):
        if name.startswith(raw):
            return nice + name[len(raw) :]
    return name[len("out[0]") :] or "output"


def _check_leaf(
    name: str, want: torch.Tensor, got: torch.Tensor, skip: torch.Tensor | None = None
) -> None:
    want, got = want.detach(), got.detach()
    if want.shape != got.shape:
        raise CompiledStepMismatch(name, (), math.nan, math.nan, -1)
    if not want.is_floating_point():
        bad = want != got
    else:
        w, g = want.double(), got.double().to(want.device)
        diff = (w - g).abs()
        special = (torch.isnan(w) != torch.isnan(g)) | (torch.isinf(w) & (w != g))
        bad = diff > COMPILED_ATOL + COMPILED_RTOL * w.abs()
        if skip is not None:
            bad &= ~skip.to(bad.device)
        if bool(bad.any()) and not bool(special.any()):
            # Outside the element-wise tolerance: still a pass if the tensor as a whole is
            # within TENSOR_RTOL (relative L2), as reordered long reductions are.
            kept = torch.isfinite(w) & torch.isfinite(g)
            if skip is not None:
                kept &= ~skip.to(kept.device)
            if float(diff[kept].norm()) <= TENSOR_RTOL * float(w[kept].norm()):
                return
        bad |= special
    if not bool(bad.any()):
        return
    flat = (diff if want.is_floating_point() else bad.double()).masked_fill(~bad, -1.0)
    index = tuple(int(i) for i in torch.unravel_index(flat.argmax(), bad.shape))
    w_val, g_val = want[index], got[index]
    from purestep.parity.report import ulp_distance  # parity imports core: import late

    ulp = ulp_distance(w_val, g_val.to(w_val.device)) if want.is_floating_point() else -1
    raise CompiledStepMismatch(name, index, w_val.item(), g_val.item(), ulp)
