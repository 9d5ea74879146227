"""Run the textbook imperative loop beside the pure step and compare them step by step.

Reference side, every step (what every PyTorch tutorial writes)::

    optimizer.zero_grad(); loss = criterion(model(*inputs), targets); loss.backward()
    clip_grad_norm_(...)         # if clip_grad_norm
    optimizer.step(); scheduler.step()

(with ``accumulation_steps=k``: the loss is divided by k, ``backward()`` runs every
micro-batch and the rest every k-th.)

Functional side: ``state, metrics = train_step(state, batch)``. Both start from the same
weights and the same random key (the reference loop runs with torch's generator set from
``rng_key(seed)``, exactly as after ``torch.manual_seed(seed)``), see the same batches,
and after every step their loss, buffers, gradients, optimizer state and parameters are
compared, bitwise or within a tolerance.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from purestep.core.compile import compile as compile_step
from purestep.core.module import ModelSpec
from purestep.core.rng import rng_key, rng_scope
from purestep.core.state import TrainState
from purestep.core.step import call_with_batch, make_train_step, model_loss
from purestep.optim.base import Optimizer, chain
from purestep.optim.convert import from_torch, state_for_torch_optimizer, torch_state_view
from purestep.optim.hyperparams import group_hyperparams, lr_tensors, replace_group_hyperparams
from purestep.optim.scheduled import schedule_step
from purestep.optim.schedules import Schedule
from purestep.optim.schedules.convert import schedule_from_torch
from purestep.optim.transforms import clip_by_global_norm
from purestep.optim.wrappers import MultiStepsState, multi_steps
from purestep.parity.report import Divergence, ParityReport, StepRecord, ulp_distance
from purestep.parity.state_match import match_optimizer_state
from purestep.pytree import map_nodes

__all__ = ["assert_parity", "compare", "compare_compiled"]

MODES = ("bitwise", "close")
FORCINGS = ("free", "teacher")
# mode="close" on the eager step.
CLOSE_RTOL, CLOSE_ATOL = 1e-5, 1e-7
# The per-step tolerance of a compiled step against the eager one (what compare_compiled
# checks): inductor fuses and reorders float operations, so a compiled step is not bitwise.
COMPILED_RTOL, COMPILED_ATOL = 1e-5, 1e-6


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
    from_params: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer] | None,
    from_model: Callable[[nn.Module], torch.optim.Optimizer] | None,
    model: nn.Module,
) -> torch.optim.Optimizer:
    """The reference optimizer, from exactly one of the two factories."""
    if (from_params is None) == (from_model is None):
        raise TypeError(
            "give exactly one of torch_optimizer (lambda params: torch.optim.Adam(params)) and "
            "torch_optimizer_from_model (lambda model: ..., e.g. param groups by name), got "
            + ("both" if from_params is not None else "neither")
        )
    name = "torch_optimizer" if from_params is not None else "torch_optimizer_from_model"
    factory = from_params if from_params is not None else from_model
    if not callable(factory):
        raise TypeError(f"{name} must be callable, got {type(factory).__name__}")
    if from_params is not None:
        try:
            opt = from_params(model.parameters())
        except (AttributeError, TypeError) as err:
            # The usual cause: a factory written for the model (param groups by name).
            raise TypeError(
                f"torch_optimizer(model.parameters()) raised {type(err).__name__}: {err}. "
                "torch_optimizer receives the parameters; a factory that needs the model "
                "goes in torch_optimizer_from_model="
            ) from err
    else:
        assert from_model is not None
        opt = from_model(model)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"{name} returned {type(opt).__name__}, not a torch.optim.Optimizer")
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
    """Accumulates one step's differences and finds the first divergent element; records
    in ``report`` what it compared and what had no counterpart."""

    def __init__(self, report: ParityReport, step: int) -> None:
        self.report, self.step = report, step
        self.mode, self.rtol, self.atol = report.mode, report.rtol, report.atol
        self.max_abs: dict[str, float] = {}
        self.max_rel: dict[str, float] = {}
        self.divergence: Divergence | None = None

    def __call__(self, category: str, name: str, ref: torch.Tensor, fun: torch.Tensor) -> None:
        names = self.report.compared.setdefault(category, [])
        if (name or category) not in names:
            names.append(name or category)
        ref = ref.detach()
        fun = fun.detach().to(ref.device)
        if ref.shape != fun.shape:
            self._diverge(
                category,
                name,
                (),
                float("nan"),
                float("nan"),
                -1,
                f"shape {tuple(ref.shape)} (reference) vs {tuple(fun.shape)} (functional)",
            )
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

    def missing(self, category: str, description: str) -> None:
        """A tensor on one side only: it cannot be compared, so the check fails."""
        if description not in self.report.uncompared:
            self.report.uncompared.append(description)
        name, _, why = description.partition(": ")
        self._diverge(category, name, (), float("nan"), float("nan"), -1, f"not compared, {why}")

    def _diverge(
        self,
        category: str,
        name: str,
        index: tuple[int, ...],
        r: float,
        f: float,
        ulp: int,
        reason: str = "",
    ) -> None:
        if self.divergence is None:
            self.divergence = Divergence(self.step, category, name, index, r, f, ulp, reason)


def compare(
    model: nn.Module | Callable[[], nn.Module],
    criterion: Callable[[Any, Any], torch.Tensor] | None,
    torch_optimizer: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer] | None = None,
    batches: Iterable[Any] | None = None,
    steps: int = 100,
    *,
    torch_optimizer_from_model: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    mode: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    forcing: str = "free",
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    scheduler_every: int = 1,
    scheduler_metric: Callable[[nn.Module, list[float]], float | torch.Tensor] | None = None,
    plateau_schedule: Schedule | Sequence[Schedule] | None = None,
    clip_grad_norm: float | None = None,
    accumulation_steps: int = 1,
    autocast: torch.dtype | None = None,
    optimizer: Optimizer | None = None,
    compile: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ParityReport:
    """Compare the imperative loop and the pure step for ``steps`` steps.

    Args:
        model: a factory returning identical fresh models, or a model (deep-copied).
        criterion: ``(outputs, targets) -> loss``; batches are ``(inputs..., targets)``. For
            models returning dicts or tuples, the criterion picks the output. ``None``: the
            model computes its own loss (``out.loss``, ``out["loss"]`` or a 0-d tensor) from
            the batch, a dict passed as keyword arguments (``model(**batch)``), a tuple
            positionally, on both sides.
        torch_optimizer: ``lambda params: torch.optim.X(params, ...)``, called with
            ``model.parameters()``.
        batches: any iterable of batches (a DataLoader works); re-iterated if shorter.
            Required (its default only lets ``torch_optimizer`` be left out).
        steps: number of training steps (micro-batches) to compare (> 0).
        torch_optimizer_from_model: ``lambda model: torch.optim.X(...)``, called with the
            reference model, for param groups chosen by name. Give exactly one of
            ``torch_optimizer`` and ``torch_optimizer_from_model``.
        mode: ``"bitwise"`` (``==`` on every element) or ``"close"`` (``rtol``/``atol``).
            Default: ``"bitwise"``, or with ``compile=True`` ``"close"`` within the per-step
            compiled tolerance (a compiled step is not bitwise the eager one; the report
            says so). An explicit ``"bitwise"`` with ``compile=True`` that fails gets a hint
            naming that tolerance.
        rtol, atol: the ``"close"`` tolerance; default ``CLOSE_RTOL``/``CLOSE_ATOL``
            (1e-5/1e-7), with ``compile=True`` ``COMPILED_RTOL``/``COMPILED_ATOL`` (1e-5/1e-6).
        forcing: ``"free"``: both sides run on their own (errors accumulate);
            ``"teacher"``: after each step the functional side is reset to the reference,
            so each step's own error is measured.
        scheduler: ``lambda opt: torch.optim.lr_scheduler.X(opt, ...)``, stepped after every
            ``scheduler_every`` optimizer steps on the reference side (1: per batch; the
            number of batches in an epoch: per epoch); the functional side schedules its twin.
            ``ReduceLROnPlateau`` is stepped with the monitored value (below), and the
            functional side with ``schedule_step(opt_state, plateau, metric)``, the same value.
        scheduler_metric: what ``ReduceLROnPlateau`` monitors. Default: the mean training
            loss since the last scheduler step (``math.fsum`` of the criterion's losses over
            the ``scheduler_every`` optimizer steps, before any 1/k of accumulation, divided
            by their number), i.e. the epoch's mean loss when the scheduler steps per epoch.
            Or ``fn(model, losses) -> number``: called with the reference model after its
            optimizer step and those losses (e.g. a validation loss), under ``no_grad``; its
            random draws and train/eval switches are undone afterwards. The value is
            computed once, on the reference side, and both sides receive it as a float, so
            the check is about the schedule, not the metric.
            ``report.info["scheduler_steps"]`` lists each plateau step: the metric and
            both sides' lrs after it.
        plateau_schedule: with ``optimizer=`` and a ``ReduceLROnPlateau`` scheduler, the
            ``reduce_on_plateau`` schedule(s) given to ``scheduled(..., every=None)`` in that
            optimizer (its state holds only tensors; compare steps it with the metric).
            Without ``optimizer=`` it is ``schedule_from_torch(scheduler)``.
        clip_grad_norm: clip the global gradient norm to this value before each step.
        accumulation_steps: micro-batches per optimizer step (gradient accumulation).
        autocast: run forward and loss under ``torch.autocast`` with this dtype on both
            sides (e.g. ``torch.bfloat16``; use ``mode="close"``).
        optimizer: the functional rule to test; default ``from_torch`` of the torch one
            (clipping and accumulation are added around it either way).
        compile: compile the functional step with ``purestep.compile``.
        seed: the random seed of both sides.
        device: run both sides there (default: where the model is).

    Every tensor of the torch optimizer's state is compared with its functional
    counterpart (``torch_state_view``); one found on one side only fails the check (in
    every mode), unless ``state_match.NO_COUNTERPART`` documents it (a note in the report).
    ``report.compared`` lists the tensors compared per category.

    Returns:
        A ``ParityReport``; ``report.ok`` is the verdict.
    """
    if batches is None:
        raise TypeError("compare() needs batches: an iterable of (inputs..., targets)")
    mode_given = mode is not None
    if mode is None:
        mode = "close" if compile else "bitwise"
    if rtol is None:
        rtol = COMPILED_RTOL if compile else CLOSE_RTOL
    if atol is None:
        atol = COMPILED_ATOL if compile else CLOSE_ATOL
    _check_args(mode, forcing, steps, rtol, atol)
    if (
        isinstance(accumulation_steps, bool)
        or not isinstance(accumulation_steps, int)
        or accumulation_steps < 1
    ):
        raise ValueError(f"accumulation_steps must be an int >= 1, got {accumulation_steps!r}")
    if (
        isinstance(scheduler_every, bool)
        or not isinstance(scheduler_every, int)
        or scheduler_every < 1
    ):
        raise ValueError(f"scheduler_every must be an int >= 1, got {scheduler_every!r}")
    if scheduler_metric is not None and not callable(scheduler_metric):
        raise TypeError(
            "scheduler_metric must be callable as fn(model, losses) -> number, got "
            f"{type(scheduler_metric).__name__}"
        )
    if clip_grad_norm is not None and not clip_grad_norm >= 0:
        raise ValueError(f"clip_grad_norm must be >= 0, got {clip_grad_norm!r}")
    k = accumulation_steps

    ref_model, fun_model, dev = _two_models(model, device)
    torch_opt = _make_torch_optimizer(torch_optimizer, torch_optimizer_from_model, ref_model)
    torch_sched = scheduler(torch_opt) if scheduler is not None else None
    plateau = isinstance(torch_sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if scheduler_metric is not None and not plateau:
        if torch_sched is None:
            raise ValueError("scheduler_metric is given but there is no scheduler to feed it to")
        raise ValueError(
            f"scheduler_metric feeds ReduceLROnPlateau; {type(torch_sched).__name__}.step() "
            "takes no metric"
        )
    if optimizer is not None:
        fun_opt = optimizer
    else:
        # A plateau schedule steps only when compare feeds it the metric.
        every = None if plateau else scheduler_every
        fun_opt = from_torch(torch_opt, ref_model, torch_sched, schedule_every=every)
    if plateau_schedule is not None and not plateau:
        raise ValueError("plateau_schedule is given but the scheduler is not ReduceLROnPlateau")
    if plateau and plateau_schedule is None:
        if optimizer is not None:
            raise ValueError(
                "with optimizer= and a ReduceLROnPlateau scheduler, give plateau_schedule=: "
                "the reduce_on_plateau(...) in your scheduled(..., every=None)"
            )
        plateau_schedule = schedule_from_torch(torch_sched)
    if clip_grad_norm is not None:
        fun_opt = chain(clip_by_global_norm(clip_grad_norm), fun_opt)
    if k > 1:
        fun_opt = multi_steps(fun_opt, k)

    if criterion is not None and not callable(criterion):
        raise TypeError(
            f"criterion must be callable (outputs, targets) -> loss or None (the model's own "
            f"loss), got {type(criterion).__name__}"
        )

    def scaled(outputs: Any, targets: Any) -> torch.Tensor:
        assert criterion is not None
        loss = criterion(outputs, targets)
        return loss / k if k > 1 else loss

    def own_loss(apply: Any, params: Any, buffers: Any, batch: Any, rng: Any) -> torch.Tensor:
        loss = model_loss(call_with_batch(partial(apply, params, buffers), batch))
        return loss / k

    state = TrainState.create(ref_model, fun_opt, seed=seed)
    initial_view = torch_state_view(state.opt_state)
    if criterion is None and k > 1:
        step_fn = make_train_step(
            fun_model, None, fun_opt, loss_fn=own_loss, return_grads=True, autocast=autocast
        )
    else:
        fun_criterion = scaled if criterion is not None else None
        step_fn = make_train_step(
            fun_model, fun_criterion, fun_opt, return_grads=True, autocast=autocast
        )
    if compile:
        step_fn = compile_step(step_fn)
    ref_key = rng_key(seed, dev)
    names = {id(p): n for n, p in ref_model.named_parameters()}

    report = ParityReport(mode=mode, forcing=forcing, rtol=rtol, atol=atol, steps_requested=steps)
    report.info = {
        "model": ModelSpec.of(ref_model).model_name,
        "torch_optimizer": type(torch_opt).__name__,
        "scheduler": type(torch_sched).__name__ if torch_sched is not None else None,
        "scheduler_every": scheduler_every,
        "clip_grad_norm": clip_grad_norm,
        "accumulation_steps": k,
        "autocast": str(autocast) if autocast is not None else None,
        "compiled": compile,
        "device": str(dev),
        "seed": seed,
        "torch": torch.__version__,
    }
    if compile and not mode_given:
        report.notes.append(
            f"compile=True and no mode given: compared in mode='close' (rtol={rtol}, "
            f"atol={atol}; the per-step compiled tolerance unless set), because a compiled "
            "step is not bitwise the eager one (inductor fuses and reorders float "
            "operations); with forcing='free' the differences compound over the steps, "
            "forcing='teacher' checks each step's own error"
        )
    if plateau:
        report.info["scheduler_metric"] = (
            getattr(scheduler_metric, "__name__", type(scheduler_metric).__name__)
            if scheduler_metric is not None
            else "mean training loss since the last scheduler step"
        )
        report.info["scheduler_steps"] = []
    fun_acc: dict[str, torch.Tensor] = {}
    optimizer_steps = 0
    losses: list[float] = []  # the criterion's, since the last scheduler step
    no_grad: set[str] = set()  # trainable parameters the torch loss never reached
    for t, batch in enumerate(_batches(batches, steps)):
        batch = _to_device(batch, dev)
        if criterion is not None and (not isinstance(batch, tuple | list) or len(batch) < 2):
            raise ValueError(f"each batch must be (inputs..., targets), got {type(batch).__name__}")
        first, last = t % k == 0, (t + 1) % k == 0
        with rng_scope(ref_key, dev) as scope:
            if first:
                torch_opt.zero_grad(set_to_none=True)
            context = (
                torch.autocast(dev.type, dtype=autocast)
                if autocast is not None
                else contextlib.nullcontext()
            )
            with context:
                raw = _reference_loss(ref_model, criterion, batch)
                loss = raw / k if k > 1 else raw  # as `scaled` computes it
            loss.backward()
            losses.append(float(raw.detach()))
            grads_before_step = {
                n: p.grad.detach().clone()
                for n, p in ref_model.named_parameters()
                if p.grad is not None
            }
            no_grad.update(
                n for n, p in ref_model.named_parameters() if p.requires_grad and p.grad is None
            )
            if last:
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(ref_model.parameters(), clip_grad_norm)
                torch_opt.step()
                optimizer_steps += 1
        scheduler_due = last and torch_sched is not None and optimizer_steps % scheduler_every == 0
        if scheduler_due and not plateau:
            assert torch_sched is not None
            torch_sched.step()
        ref_key = scope.key
        state, metrics = step_fn(state, batch)
        if scheduler_due and plateau:
            assert torch_sched is not None and plateau_schedule is not None
            value = _monitored(scheduler_metric, ref_model, losses, dev)
            torch_sched.step(value)
            state = state._replace(
                opt_state=_plateau_step(state.opt_state, plateau_schedule, value)
            )
            report.info["scheduler_steps"].append(
                {
                    "step": t,
                    "metric": value,
                    "lr": [float(g["lr"]) for g in torch_opt.param_groups],
                    "lr_functional": [float(lr) for lr in lr_tensors(state.opt_state)],
                }
            )
        if scheduler_due:
            losses = []
        fun_acc = (
            dict(metrics["grads"])
            if first
            else {n: fun_acc[n] + g for n, g in metrics["grads"].items()}
        )

        cmp = _Comparator(report, t)
        cmp("loss", "", loss.detach(), metrics["loss"])
        for n, b in ref_model.named_buffers():
            cmp("buffers", n, b, state.buffers[n])
        compare_rest_of_step(
            cmp,
            report,
            t,
            ref_model=ref_model,
            state=state,
            ref_grads=grads_before_step,
            fun_grads=fun_acc,
            torch_opt=torch_opt,
            names=names,
            initial_view=initial_view,
            ref_key=ref_key,
            loss_ref=loss,
            loss_fun=metrics["loss"],
        )
        if forcing == "teacher":
            state = _resync(state, ref_model, torch_opt, torch_sched, ref_key, last)
            fun_acc = {n: grads_before_step.get(n, torch.zeros_like(g)) for n, g in fun_acc.items()}
    if report.steps < steps:
        report.notes.append(f"batches ran out after {report.steps} of {steps} steps")
    d = report.first_divergence
    if no_grad:
        names_ = sorted(no_grad)
        shown = ", ".join(names_[:4]) + (f" and {len(names_) - 4} more" if len(names_) > 4 else "")
        note = (
            f"{len(names_)} parameter(s) got no gradient in the torch loop ({shown}): the loss "
            "does not use them, so torch.optim skips them (no update, no weight decay, no "
            "state) while the functional step treats a missing gradient as zero; freeze them "
            "(requires_grad=False) or leave them out of the model"
        )
        report.notes.append(note)
        if d is not None and any(d.name.startswith(f"{n}.") or d.name == n for n in names_):
            report.hint = note
    if compile and mode == "bitwise" and d is not None and not d.reason and not report.hint:
        report.hint = (
            f"the functional step is compiled, and a compiled step is not bitwise the eager "
            f"one (inductor fuses and reorders float operations; this difference is {d.ulp} "
            f"ulp): compare within the per-step compiled tolerance, mode='close', "
            f"rtol={COMPILED_RTOL}, atol={COMPILED_ATOL} (the default with compile=True "
            "when no mode is given)"
        )
    return report


def _reference_loss(model: nn.Module, criterion: Any, batch: Any) -> torch.Tensor:
    """The imperative loop's loss: ``criterion(model(*inputs), targets)``, or without a
    criterion the model's own loss on the batch (a dict as keyword arguments)."""
    if criterion is None:
        return model_loss(call_with_batch(model, batch))
    *inputs, targets = batch
    loss = criterion(model(*inputs), targets)
    if not isinstance(loss, torch.Tensor):
        raise ValueError(
            f"the criterion returned {type(loss).__name__}, not a loss tensor (a 0-d tensor)"
        )
    return loss


def _monitored(
    metric: Callable[[nn.Module, list[float]], float | torch.Tensor] | None,
    model: nn.Module,
    losses: Sequence[float],
    device: torch.device,
) -> float:
    """The value ReduceLROnPlateau monitors: the mean loss, or the user's ``metric``."""
    if metric is None:
        return math.fsum(losses) / len(losses)
    training = model.training
    # The user's function may draw random numbers or switch to eval(): neither may leak
    # into the reference loop.
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        value = metric(model, list(losses))
    model.train(training)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(
                "scheduler_metric must return a number or a one-element tensor, got a tensor "
                f"of shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            "scheduler_metric must return a number or a one-element tensor, got "
            f"{type(value).__name__}"
        )
    return float(value)


def _plateau_step(opt_state: Any, schedule: Any, value: float) -> Any:
    try:
        return schedule_step(opt_state, schedule, value)
    except ValueError as err:
        if "no scheduled() part" not in str(err):
            raise
        raise ValueError(
            "the scheduler is ReduceLROnPlateau, so the functional optimizer must be "
            "scheduled(..., reduce_on_plateau(...), every=None), which compare steps with "
            "the metric (as from_torch builds it when optimizer= is not given)"
        ) from err


def compare_rest_of_step(
    cmp: _Comparator,
    report: ParityReport,
    t: int,
    *,
    ref_model: nn.Module,
    state: TrainState,
    ref_grads: Mapping[str, torch.Tensor],
    fun_grads: Mapping[str, torch.Tensor],
    torch_opt: torch.optim.Optimizer,
    names: Mapping[int, str],
    initial_view: Any,
    ref_key: torch.Tensor,
    loss_ref: torch.Tensor,
    loss_fun: torch.Tensor,
) -> None:
    """Step ``t``'s comparisons after the loss and buffers (shared with ``compare_ddp``):
    gradients, every optimizer-state tensor paired both ways, parameters, the random keys,
    then the step's record and the first divergence."""
    for n, g in fun_grads.items():
        cmp("grads", n, ref_grads.get(n, torch.zeros_like(g)), g)
    for n in sorted(ref_grads.keys() - fun_grads.keys()):
        cmp.missing("grads", f"{n}: a gradient the functional step does not return")
    match = match_optimizer_state(torch_opt, names, torch_state_view(state.opt_state), initial_view)
    for name, ref_value, fun_value in match.pairs:
        cmp("opt_state", name, ref_value, fun_value)
    for description in match.unmatched:
        cmp.missing("opt_state", description)
    for key, why in match.documented.items():
        note = f"optimizer-state key {key!r} not compared: {why}"
        if note not in report.notes:
            report.notes.append(note)
    for n, p in ref_model.named_parameters():
        cmp("params", n, p, state.params[n])
    if "rng_keys" not in report.info and not torch.equal(ref_key, state.rng):
        report.notes.append(f"random keys differ after step {t} (different random draws)")
        report.info["rng_keys"] = "diverged"
    report.records.append(
        StepRecord(
            step=t,
            loss_ref=float(loss_ref.detach()),
            loss_fun=float(loss_fun),
            max_abs=cmp.max_abs,
            max_rel=cmp.max_rel,
            equal=cmp.divergence is None,
        )
    )
    if cmp.divergence is not None and report.first_divergence is None:
        report.first_divergence = cmp.divergence


def _check_args(mode: str, forcing: str, steps: Any, rtol: float, atol: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if forcing not in FORCINGS:
        raise ValueError(f"forcing must be one of {FORCINGS}, got {forcing!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")


def _two_models(
    model: nn.Module | Callable[[], nn.Module], device: str | torch.device | None
) -> tuple[nn.Module, nn.Module, torch.device]:
    """Reference model, structure model, device; the factory must build identical models."""
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
    return ref_model, fun_model, dev


def _resync(
    state: TrainState,
    ref_model: nn.Module,
    torch_opt: torch.optim.Optimizer,
    torch_sched: Any,
    key: torch.Tensor,
    cycle_done: bool,
) -> TrainState:
    """The functional state reset to the reference's (teacher forcing): weights, buffers,
    per-parameter optimizer state, group lrs, scheduler position, accumulated gradients."""
    from purestep.optim.scheduled import ScheduledState

    params = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in ref_model.named_buffers()}
    opt_state = state_for_torch_optimizer(state.opt_state, torch_opt, ref_model)
    grads = {
        n: p.grad.detach().clone() for n, p in ref_model.named_parameters() if p.grad is not None
    }

    def synced(node: Any) -> bool:
        return isinstance(node, MultiStepsState) or (
            isinstance(node, ScheduledState) and torch_sched is not None
        )

    def visit(node: Any) -> Any:
        inner = map_nodes(visit, node.inner, synced)
        if isinstance(node, MultiStepsState):
            acc = {
                n: torch.zeros_like(a) if cycle_done else grads.get(n, torch.zeros_like(a))
                for n, a in node.acc_grads.items()
            }
            return MultiStepsState(node.mini_step, acc, inner)
        from purestep.optim.schedules.convert import schedule_state_from_torch

        states = tuple(
            schedule_state_from_torch(torch_sched, i) for i in range(len(node.schedules))
        )
        return ScheduledState(inner, states, node.steps)

    opt_state = map_nodes(visit, opt_state, synced)
    current = group_hyperparams(opt_state)
    if len(current) == len(torch_opt.param_groups):  # else its own group layout (optimizer=)
        # Every dynamic hyperparameter a scheduler may move (lr; OneCycleLR's momentum or
        # beta1) takes torch's group value.
        opt_state = replace_group_hyperparams(
            opt_state,
            [
                {k: _torch_group_value(g, k, t) for k, t in hp.items()}
                for hp, g in zip(current, torch_opt.param_groups, strict=True)
            ],
        )
    return state._replace(params=params, buffers=buffers, opt_state=opt_state, rng=key.clone())


def _torch_group_value(group: dict[str, Any], name: str, like: torch.Tensor) -> torch.Tensor:
    """torch's value of the dynamic hyperparameter ``name`` in ``group`` (``beta1``/``beta2``
    are ``betas[0]``/``betas[1]``), as a tensor like ``like``; ``like`` itself if torch's
    group has no such key."""
    if name in ("beta1", "beta2") and "betas" in group:
        value = group["betas"][0 if name == "beta1" else 1]
    elif name in group and isinstance(group[name], int | float | torch.Tensor):
        value = group[name]
    else:
        return like
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def compare_compiled(
    model: nn.Module | Callable[[], nn.Module],
    criterion: Callable[[Any, Any], torch.Tensor] | None,
    optimizer: Optimizer,
    batches: Iterable[Any],
    steps: int = 50,
    *,
    rtol: float = COMPILED_RTOL,
    atol: float = COMPILED_ATOL,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ParityReport:
    """The compiled pure step against the eager one, teacher-forced: each step both start
    from the eager state, so the report's per-step maxima are the compiled step's own
    tolerance ("reference" = eager, "functional" = compiled). ``report.info
    ["observed_tolerance"]`` holds the largest absolute difference per category.
    ``criterion=None``: the model's own loss, as in ``make_train_step``."""
    _check_args("close", "teacher", steps, rtol, atol)
    ref_model, _, dev = _two_models(model, device)
    eager = make_train_step(ref_model, criterion, optimizer, return_grads=True)
    compiled = compile_step(make_train_step(ref_model, criterion, optimizer, return_grads=True))
    state = TrainState.create(ref_model, optimizer, seed=seed)
    report = ParityReport(
        mode="close", forcing="teacher", rtol=rtol, atol=atol, steps_requested=steps
    )
    report.info = {
        "model": ModelSpec.of(ref_model).model_name,
        "compiled": True,
        "device": str(dev),
    }
    for t, batch in enumerate(_batches(batches, steps)):
        batch = _to_device(batch, dev)
        e_state, e_m = eager(state, batch)
        c_state, c_m = compiled(state, batch)
        cmp = _Comparator(report, t)
        cmp("loss", "", e_m["loss"], c_m["loss"])
        for n, b in e_state.buffers.items():
            cmp("buffers", n, b, c_state.buffers[n])
        for n, g in e_m["grads"].items():
            cmp("grads", n, g, c_m["grads"][n])
        e_view, c_view = torch_state_view(e_state.opt_state), torch_state_view(c_state.opt_state)
        for n in sorted(e_view.keys() | c_view.keys()):
            e_entries, c_entries = e_view.get(n, {}), c_view.get(n, {})
            for key in sorted(e_entries.keys() | c_entries.keys()):
                if key in e_entries and key in c_entries:
                    cmp("opt_state", f"{n}.{key}", e_entries[key], c_entries[key])
                else:
                    side = "eager" if key in e_entries else "compiled"
                    cmp.missing("opt_state", f"{n}.{key}: only in the {side} state")
        for n, p in e_state.params.items():
            cmp("params", n, p, c_state.params[n])
        if not torch.equal(e_state.rng, c_state.rng):
            cmp._diverge("rng", "", (), float("nan"), float("nan"), -1, "random keys differ")
        report.records.append(
            StepRecord(
                t,
                float(e_m["loss"]),
                float(c_m["loss"]),
                cmp.max_abs,
                cmp.max_rel,
                cmp.divergence is None,
            )
        )
        if cmp.divergence is not None and report.first_divergence is None:
            report.first_divergence = cmp.divergence
        state = e_state
    report.info["observed_tolerance"] = {
        c: report.max_abs(c) for c in ("loss", "buffers", "grads", "opt_state", "params")
    }
    return report


def assert_parity(*args: Any, **kwargs: Any) -> ParityReport:
    """``compare(...)`` that raises ``AssertionError`` (carrying the report) on divergence."""
    report = compare(*args, **kwargs)
    if not report.ok:
        error = AssertionError(report.summary() + "\n" + report.to_markdown(limit=12))
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
