"""``purestep._compat`` is the one door to torch's private and version-dependent APIs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import purestep as ps
from purestep import _compat

PACKAGE = Path(ps.__file__).parent

# What only _compat may touch: functorch's wrapper checks, the multi-tensor kernels,
# dynamo's internals and guard filters, torch's private pytree modules, and the private
# attributes of lr schedulers.
PRIVATE = re.compile(
    r"torch\._C\._functorch|torch\._foreach_|torch\._dynamo|\b_pytree\b|\b_cxx_pytree\b"
    r"|keep_portable_guards_unsafe|\._schedule_phases|\._anneal_func_type|\._schedulers\b"
    r"|\._milestones\b"
)


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """Lines outside docstrings and comments (a docstring may name the API it wraps)."""
    out, in_doc = [], False
    for i, line in enumerate(path.read_text().splitlines(), 1):
        quotes = line.count('"""')
        if in_doc or quotes:
            if quotes == 1:
                in_doc = not in_doc
            continue
        out.append((i, line.split("#")[0]))
    return out


def test_private_torch_apis_only_through_compat() -> None:
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "_compat.py"]
    assert len(files) > 50
    offenders = [
        f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
        for p in files
        for i, line in _code_lines(p)
        if PRIVATE.search(line)
    ]
    assert offenders == []


def test_guard_filter_is_none_on_a_torch_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _compat.portable_guard_filter() is torch.compiler.keep_portable_guards_unsafe
    monkeypatch.delattr(torch.compiler, "keep_portable_guards_unsafe")
    assert _compat.portable_guard_filter() is None


def test_functorch_checks() -> None:
    seen: list[tuple[bool, bool]] = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.append((_compat.is_functorch_wrapped(x), _compat.is_batched(x)))
        return x

    torch.vmap(probe)(torch.zeros(3, 2))
    assert seen == [(True, True)]
    plain = torch.zeros(2)
    assert not _compat.is_functorch_wrapped(plain) and not _compat.is_batched(plain)


def test_counters_are_dynamos_and_unknown_names_raise() -> None:
    from torch._dynamo.utils import counters

    assert _compat.counters is counters
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _compat.nope  # noqa: B018


def test_scheduler_accessors() -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    cyc = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    assert _compat.one_cycle_anneal_strategy(cyc) == "cos"
    assert [p["end_lr"] for p in _compat.one_cycle_phases(cyc)] == ["max_lr", "min_lr"]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    a = torch.optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=2)
    b = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    seq = torch.optim.lr_scheduler.SequentialLR(opt, [a, b], milestones=[3])
    assert _compat.child_schedulers(seq) == [a, b]
    assert _compat.sequential_milestones(seq) == [3]


def test_from_torch_adamw_is_decoupled_without_the_group_key() -> None:
    """AdamW converts to decoupled decay even where its param group lacks the
    ``decoupled_weight_decay`` key (torch releases before Adam had that option)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    torch_opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    for group in torch_opt.param_groups:
        group.pop("decoupled_weight_decay", None)
    opt = ps.optim.from_torch(torch_opt, model)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    grads = torch.func.grad(
        lambda p: F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)
    )(params)
    got, _ = opt.step(grads, opt.init(params), params)
    reference = ps.optim.adamw(lr=0.1, weight_decay=0.5)
    want, _ = reference.step(grads, reference.init(params), params)
    l2 = ps.optim.adam(lr=0.1, weight_decay=0.5)
    coupled, _ = l2.step(grads, l2.init(params), params)
    assert all(torch.equal(got[k], want[k]) for k in params)
    assert not all(torch.equal(got[k], coupled[k]) for k in params)
