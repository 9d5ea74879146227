"""Compiled update rules compute their step scalars once per step, not per element.

Inductor inlines a chain of scalar ops (``pow(beta, t)``, bias corrections) into every
element's loop of every kernel that reads it, unless the scalars are kept in a buffer
(``purestep.optim._scalar_ops.once``). The generated code shows it: ``std::pow`` appears
in the small scalar kernel only, not in a parameter-sized update kernel.
"""

from __future__ import annotations

import re

import torch
from torch._inductor.utils import run_and_get_code

import purestep as ps
from purestep.optim import _scalar_ops as ops


def _kernels_with_pow(code: str) -> list[str]:
    """The C++ kernels (split at each ``async_compile.cpp_pybinding``) that call pow."""
    kernels = re.split(r"async_compile\.cpp_pybinding", code)[1:]
    return [k for k in kernels if "std::pow" in k]


def test_adam_bias_corrections_are_computed_once():
    model = torch.nn.Linear(64, 32)
    opt = ps.optim.adam(lr=1e-3)
    step = ps.compile(ps.make_train_step(model, torch.nn.functional.mse_loss, opt))
    state = ps.TrainState.create(model, opt)
    batch = (torch.randn(8, 64), torch.randn(8, 32))
    _, codes = run_and_get_code(step, state, batch)
    code = "\n".join(codes)
    with_pow = _kernels_with_pow(code)
    assert len(with_pow) == 1, f"{len(with_pow)} kernels compute pow"
    assert "2048L" not in with_pow[0]  # not the 64 x 32 weight's update kernel


def test_once_is_an_exact_copy_under_compile():
    values = torch.tensor([-0.0, 1e-30, -3.5, float("inf"), float("nan")], dtype=torch.float64)

    @torch.compile(fullgraph=True)
    def kept(v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ops.once(*(v[i] * 1 for i in range(len(v))))  # type: ignore[return-value]

    out = torch.stack(list(kept(values)))
    # bit for bit (signed zero included); a NaN stays a NaN (its payload may change)
    assert torch.equal(out[:-1].view(torch.int64), values[:-1].view(torch.int64))
    assert out[-1].isnan()
