"""Run the textbook imperative loop beside the pure step and compare them step by step.

Reference side, every step (what every PyTorch tutorial writes)::

    optimizer.zero_grad(); loss = criterion(model(*inputs), targets); loss.backward()
    optimizer.step()

Functional side: ``state, metrics = train_step(state, batch)``. Both start from the same
weights and the same random key (the reference loop runs with torch's generator set from
``rng_key(seed)``, exactly as after ``torch.manual_seed(seed)``), see the same batches,
and after every step their loss, buffers, gradients, optimizer state and parameters are
compared, bitwise or within a tolerance.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from purestep.core.compile import compile as compile_step
from purestep.core.module import ModelSpec
from purestep.core.rng import rng_key, rng_scope
from purestep.core.state import TrainState
from purestep.core.step import make_train_step
from purestep.optim.base import Optimizer
from purestep.optim.convert import from_torch, state_for_torch_optimizer, torch_state_view
from purestep.parity.report import Divergence, ParityReport, StepRecord, ulp_distance

__all__ = ["assert_parity", "compare"]

MODES = ("bitwise", "close")
FORCINGS = ("free", "teacher")


def _make_model(model: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    if not callable(model):
        raise TypeError(f"model must be an nn.Module or a factory, got {type(model).__name__}")
    built = model()
    if not isinstance(built, nn.Module):
        raise TypeError(f"the model factory returned {type(built).__name__}, not an nn.Module")
    return built


def _make_torch_optimizer(
    factory: Callable[..., torch.optim.Optimizer], model: nn.Module
) -> torch.optim.Optimizer:
    if not callable(factory):
        raise TypeError(
            "torch_optimizer must be a factory such as lambda params: torch.optim.Adam(params)"
        )
    try:
        first = next(iter(inspect.signature(factory).parameters))
    except (StopIteration, TypeError, ValueError):
        first = ""
    opt = factory(model) if first == "model" else factory(model.parameters())
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(
            f"torch_optimizer returned {type(opt).__name__}, not a torch.optim.Optimizer"
        )
    return opt


def _batches(batches: Iterable[Any], steps: int) -> Iterator[Any]:
    """Cycle through ``batches`` (re-iterating, e.g. a new DataLoader epoch) until ``steps``."""
    produced = 0
    while produced < steps:
        epoch = iter(batches)
        got = False
        for batch in itertools.islice(epoch, steps - produced):
            got = True
            produced += 1
            yield batch
        if not got:
            if produced == 0:
                raise ValueError("batches is empty: there is nothing to compare")
            return


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class _Comparator:
    """Accumulates one step's differences and finds the first divergent element."""

    def __init__(self, mode: str, rtol: float, atol: float, step: int) -> None:
        self.mode, self.rtol, self.atol, self.step = mode, rtol, atol, step
        self.max_abs: dict[str, float] = {}
        self.max_rel: dict[str, float] = {}
        self.divergence: Divergence | None = None

    def __call__(self, category: str, name: str, ref: torch.Tensor, fun: torch.Tensor) -> None:
        ref = ref.detach()
        fun = fun.detach().to(ref.device)
        if ref.shape != fun.shape:
            self._diverge(category, name, (), float("nan"), float("nan"), -1)
            return
        if fun.dtype != ref.dtype:
            fun = fun.to(ref.dtype)
        if not ref.is_floating_point():
            diff = (ref.to(torch.float64) - fun.to(torch.float64)).abs()
            rel = diff
        else:
            diff = (ref - fun).abs()
            rel = diff / ref.abs().clamp_min(torch.finfo(ref.dtype).tiny)
        both_nan = torch.isnan(ref) & torch.isnan(fun)
        diff = torch.where(both_nan, torch.zeros_like(diff), diff)
        rel = torch.where(both_nan, torch.zeros_like(rel), rel)
        if diff.numel():
            self.max_abs[category] = max(self.max_abs.get(category, 0.0), float(diff.max()))
            self.max_rel[category] = max(self.max_rel.get(category, 0.0), float(rel.max()))
        if self.mode == "bitwise":
            bad = ~((ref == fun) | both_nan)
        else:
            bad = ~(torch.isclose(fun, ref, rtol=self.rtol, atol=self.atol, equal_nan=True))
        if bool(bad.any()):
            flat = int(bad.reshape(-1).nonzero()[0])
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), ref.shape))
            r, f = ref.reshape(-1)[flat], fun.reshape(-1)[flat]
            self._diverge(category, name, index, r.item(), f.item(), ulp_distance(r, f))

    def _diverge(
        self, category: str, name: str, index: tuple[int, ...], r: float, f: float, ulp: int
    ) -> None:
        if self.divergence is None:
            self.divergence = Divergence(self.step, category, name, index, r, f, ulp)


def compare(
    model: nn.Module | Callable[[], nn.Module],
    criterion: Callable[[Any, Any], torch.Tensor],
    torch_optimizer: Callable[..., torch.optim.Optimizer],
    batches: Iterable[Any],
    steps: int = 100,
    *,
    mode: str = "bitwise",
    rtol: float = 1e-5,
    atol: float = 1e-7,
    forcing: str = "free",
    optimizer: Optimizer | None = None,
    compile: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ParityReport:
    """Compare the imperative loop and the pure step for ``steps`` steps.

    Args:
        model: a factory returning identical fresh models, or a model (deep-copied).
        criterion: ``(outputs, targets) -> loss``; batches are ``(inputs..., targets)``.
        torch_optimizer: ``lambda params: torch.optim.X(params, ...)``; a factory whose
            first parameter is named ``model`` receives the model (for param groups).
        batches: any iterable of batches (a DataLoader works); re-iterated if shorter.
        steps: number of training steps to compare (> 0).
        mode: ``"bitwise"`` (``==`` on every element) or ``"close"`` (``rtol``/``atol``).
        forcing: ``"free"``: both sides run on their own (errors accumulate);
            ``"teacher"``: after each step the functional side is reset to the reference,
            so each step's own error is measured.
        optimizer: the functional rule to test; default ``from_torch`` of the torch one.
        compile: compile the functional step with ``purestep.compile``.
        seed: the random seed of both sides.
        device: run both sides there (default: where the model is).

    Returns:
        A ``ParityReport``; ``report.ok`` is the verdict.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if forcing not in FORCINGS:
        raise ValueError(f"forcing must be one of {FORCINGS}, got {forcing!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")

    ref_model = _make_model(model)
    fun_model = _make_model(model)
    ref_spec, fun_spec = ModelSpec.of(ref_model), ModelSpec.of(fun_model)
    if ref_spec != fun_spec:
        raise ValueError(
            "the model factory built two models with different parameters or buffers: "
            f"{sorted(set(ref_spec.params) ^ set(fun_spec.params)) or 'shapes/dtypes differ'}"
        )
    if device is not None:
        ref_model.to(device)
    dev = next(iter(ref_model.parameters())).device if ref_spec.params else torch.device("cpu")
    ref_model.train()

    torch_opt = _make_torch_optimizer(torch_optimizer, ref_model)
    fun_opt = optimizer if optimizer is not None else from_torch(torch_opt, ref_model)
    state = TrainState.create(ref_model, fun_opt, seed=seed)
    if torch_opt.state:
        state = state._replace(
            opt_state=state_for_torch_optimizer(state.opt_state, torch_opt, ref_model)
        )
    step_fn = make_train_step(fun_model, criterion, fun_opt, return_grads=True)
    if compile:
        step_fn = compile_step(step_fn)
    ref_key = rng_key(seed, dev)
    names = {id(p): n for n, p in ref_model.named_parameters()}

    report = ParityReport(mode=mode, forcing=forcing, rtol=rtol, atol=atol, steps_requested=steps)
    report.info = {
        "model": ref_spec.model_name,
        "torch_optimizer": type(torch_opt).__name__,
        "compiled": compile,
        "device": str(dev),
        "seed": seed,
        "torch": torch.__version__,
    }
    for t, batch in enumerate(_batches(batches, steps)):
        batch = _to_device(batch, dev)
        if not isinstance(batch, tuple | list) or len(batch) < 2:
            raise ValueError(f"each batch must be (inputs..., targets), got {type(batch).__name__}")
        *inputs, targets = batch
        with rng_scope(ref_key, dev) as scope:
            torch_opt.zero_grad(set_to_none=True)
            loss = criterion(ref_model(*inputs), targets)
            loss.backward()
            torch_opt.step()
        ref_key = scope.key
        state, metrics = step_fn(state, batch)

        cmp = _Comparator(mode, rtol, atol, t)
        cmp("loss", "", loss.detach(), metrics["loss"])
        for n, b in ref_model.named_buffers():
            cmp("buffers", n, b, state.buffers[n])
        for n, p in ref_model.named_parameters():
            if n in metrics["grads"]:
                ref_grad = p.grad if p.grad is not None else torch.zeros_like(p)
                cmp("grads", n, ref_grad, metrics["grads"][n])
        fun_view = torch_state_view(state.opt_state)
        for param, param_state in torch_opt.state.items():
            owner = names.get(id(param))
            if owner is None:
                continue
            for key, value in param_state.items():
                if isinstance(value, torch.Tensor) and key in fun_view.get(owner, {}):
                    cmp("opt_state", f"{owner}.{key}", value, fun_view[owner][key])
        for n, p in ref_model.named_parameters():
            cmp("params", n, p, state.params[n])
        if "rng" not in report.info and not torch.equal(ref_key, state.rng):
            report.notes.append(f"random keys differ after step {t} (different random draws)")
            report.info["rng"] = "diverged"

        report.records.append(
            StepRecord(
                step=t,
                loss_ref=float(loss.detach()),
                loss_fun=float(metrics["loss"]),
                max_abs=cmp.max_abs,
                max_rel=cmp.max_rel,
                equal=cmp.divergence is None,
            )
        )
        if cmp.divergence is not None and report.first_divergence is None:
            report.first_divergence = cmp.divergence
        if forcing == "teacher":
            state = _resync(state, ref_model, torch_opt, ref_key)
    if report.steps < steps:
        report.notes.append(f"batches ran out after {report.steps} of {steps} steps")
    return report


def _resync(
    state: TrainState, ref_model: nn.Module, torch_opt: torch.optim.Optimizer, key: torch.Tensor
) -> TrainState:
    """The functional state reset to the reference's (teacher forcing)."""
    params = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in ref_model.named_buffers()}
    opt_state = state_for_torch_optimizer(state.opt_state, torch_opt, ref_model)
    return state._replace(params=params, buffers=buffers, opt_state=opt_state, rng=key.clone())


def assert_parity(*args: Any, **kwargs: Any) -> ParityReport:
    """``compare(...)`` that raises ``AssertionError`` (carrying the report) on divergence."""
    report = compare(*args, **kwargs)
    if not report.ok:
        error = AssertionError(report.summary() + "\n" + report.to_markdown(limit=12))
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
