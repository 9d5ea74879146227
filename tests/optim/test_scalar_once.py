"""Compiled update rules compute their step scalars once per step, not per element.

Inductor inlines a chain of scalar ops (``pow(beta, t)``, bias corrections) into every
element's loop of every kernel that reads it, unless the scalars are kept in a buffer
(``purestep.optim._scalar_ops.once``). The generated code shows it: ``std::pow`` appears
only in scalar blocks, never inside a loop over a parameter's elements.
"""

from __future__ import annotations

import torch
from torch._inductor.utils import run_and_get_code

import purestep as ps
from purestep.optim import _scalar_ops as ops


def _pows_in_loops(code: str) -> int:
    """How many ``std::pow`` calls of the generated C++ sit inside a ``for`` loop (computed
    per element) rather than in a scalar block (computed once). Inductor may fuse the
    scalar block into the same kernel as an update loop; what matters is where the call is."""
    count, stack, start, parens = 0, [], 0, 0
    for i, ch in enumerate(code):
        if ch in "()":
            parens += 1 if ch == "(" else -1
        elif ch == "{":
            stack.append("for(" in code[start:i] or "for (" in code[start:i])
            start = i + 1
        elif ch == "}":
            if stack:
                stack.pop()
            start = i + 1
        elif ch == ";" and parens == 0:  # not the ';'s of a for(...) header
            start = i + 1
        elif ch == "s" and code.startswith("std::pow", i) and any(stack):
            count += 1
    return count


def test_adam_bias_corrections_are_computed_once():
    model = torch.nn.Linear(64, 32)
    opt = ps.optim.adam(lr=1e-3)
    step = ps.compile(ps.make_train_step(model, torch.nn.functional.mse_loss, opt))
    state = ps.TrainState.create(model, opt)
    batch = (torch.randn(8, 64), torch.randn(8, 32))
    _, codes = run_and_get_code(step, state, batch)
    code = "\n".join(codes)
    assert "std::pow" in code  # the bias corrections are in the graph...
    assert _pows_in_loops(code) == 0  # ...and never inside a per-element loop


def test_once_is_an_exact_copy_under_compile():
    values = torch.tensor([-0.0, 1e-30, -3.5, float("inf"), float("nan")], dtype=torch.float64)

    @torch.compile(fullgraph=True)
    def kept(v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ops.once(*(v[i] * 1 for i in range(len(v))))  # type: ignore[return-value]

    out = torch.stack(list(kept(values)))
    # bit for bit (signed zero included); a NaN stays a NaN (its payload may change)
    assert torch.equal(out[:-1].view(torch.int64), values[:-1].view(torch.int64))
    assert out[-1].isnan()
