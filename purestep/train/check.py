"""``purestep check``: the tutorials' quick setup test of a config, in seconds.

Before a long run, check that each piece works, in order, stopping at the first that
does not:

    data      every split loads (sizes, input and target shapes)
    model     the model, loss and optimizer build (parameter count, size)
    forward   one batch goes through the model and the loss is finite
    eager     one eager pure step runs and its loss is finite
    compiled  the same step compiled gives the eager step's loss, gradients and buffers
              (within the compiled tolerance of ``purestep.parity.compare_compiled``)
    parity    that step equals the imperative torch step (nn.Module + torch.optim),
              bitwise, via ``parity_run(cfg, steps=1)``

A config problem found on the way (a ``ConfigError``) marks the report ``bad_input``
(``purestep check`` exits 2); another failure (a model rejecting its batch, a non-finite
loss, a mismatch) exits 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call

from purestep.core.compile import compile as compile_step
from purestep.core.step import make_train_step
from purestep.parity.compare import COMPILED_ATOL, COMPILED_RTOL
from purestep.train.build import build_criterion, build_data, infer_task, scale_loss
from purestep.train.config import Config, ConfigError
from purestep.train.run import build_experiment, parity_run

__all__ = ["CheckItem", "CheckReport", "check_config"]


@dataclass
class CheckItem:
    """One line of the checklist: ``ok`` is None when the check was skipped."""

    name: str
    ok: bool | None
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "-"}[self.ok]
        took = f"  ({self.seconds:.1f} s)" if self.seconds >= 0.05 else ""
        return f"{mark} {self.name:<9} {self.detail}{took}"


@dataclass
class CheckReport:
    """The checklist. ``ok``: nothing failed; ``bad_input``: a failure was the config's."""

    items: list[CheckItem] = field(default_factory=list)
    bad_input: bool = False
    # The exception behind the failed item (``purestep check --traceback`` shows its frames).
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return all(item.ok is not False for item in self.items)

    def lines(self) -> list[str]:
        return [item.line() for item in self.items]


class _Failed(Exception):
    """A check failed; the item is recorded, the remaining checks are skipped."""


def _shape(t: Any) -> str:
    if isinstance(t, torch.Tensor):
        return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
    return type(t).__name__


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, bool]:
    """Largest absolute difference over matching tensors, and whether all are close."""
    worst, close = 0.0, True
    for key, x in a.items():
        y = b[key]
        if x.is_floating_point():
            d = (x.double() - y.double()).abs()
            worst = max(worst, float(d.max()) if d.numel() else 0.0)
            close &= bool(torch.allclose(x, y, rtol=COMPILED_RTOL, atol=COMPILED_ATOL))
        else:
            close &= bool(torch.equal(x, y))
    return worst, close


def check_config(
    cfg: Config,
    *,
    compile: bool = True,
    parity: bool = True,
    device: str | None = None,
    print_fn: Callable[[str], None] | None = None,
) -> CheckReport:
    """Run the checks of the module docstring on ``cfg``; each item is passed to
    ``print_fn`` as soon as it is known (a compile can take a while)."""
    report = CheckReport()

    @contextmanager
    def item(name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        started = time.perf_counter()
        ok = True
        try:
            yield detail
        except ConfigError as err:
            ok, report.bad_input, report.error = False, True, err
            detail[:] = [str(err)]
        except _Failed as err:
            ok = False
            detail[:] = [str(err)]
        except Exception as err:  # the model rejects its batch, a compile error ...
            ok, report.error = False, err
            detail[:] = [f"{type(err).__name__}: {err}"]
        entry = CheckItem(name, ok, "; ".join(detail), time.perf_counter() - started)
        report.items.append(entry)
        if print_fn is not None:
            print_fn(entry.line())
        if not ok:
            raise _Failed

    def skip(name: str, why: str) -> None:
        entry = CheckItem(name, None, why)
        report.items.append(entry)
        if print_fn is not None:
            print_fn(entry.line())

    try:
        task = infer_task(cfg)
        with item("data") as detail:
            sizes = []
            example: Any = None
            for split in ("train", "val", "test"):
                data = build_data(cfg.data, split, task)
                sizes.append(f"{len(data) if data is not None else 0} {split}")
                if split == "train":
                    if data is None:
                        raise ConfigError(
                            f"data.name: {cfg.data.name!r} returned no training split"
                        )
                    tensors = data.data
                    example = (
                        tuple(t[0] for t in tensors) if isinstance(tensors, tuple) else tensors[0]
                    )
            shapes = ""
            if isinstance(example, tuple | list) and len(example) >= 2:
                shapes = f"; one example: input {_shape(example[0])}, target {_shape(example[-1])}"
            detail.append(" / ".join(sizes) + " examples" + shapes)

        with item("model") as detail:
            exp = build_experiment(cfg, device=device, compile=False)
            state0 = exp.initial_state()
            n = sum(p.numel() for p in state0.params.values())
            size = sum(
                t.numel() * t.element_size()
                for t in (*state0.params.values(), *state0.buffers.values())
            )
            detail.append(
                f"{cfg.model.name}: {n:,} parameters ({size / 2**20:.2f} MB) on {exp.device}; "
                f"loss {cfg.loss.name}, optimizer {cfg.optimizer.name}"
                + (f" + {cfg.scheduler.name}" if cfg.scheduler else "")
            )

        with item("forward") as detail:
            batch = next(iter(exp.train_data.epoch(0)))
            inputs = tuple(batch[:-1])
            model = exp.model
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    out = functional_call(model, {**state0.params, **state0.buffers}, inputs)
            finally:
                model.train(was_training)
            loss = float(exp.eval_step(state0, batch)["loss"])
            if not math.isfinite(loss):
                raise _Failed(f"the loss of the initial model is {loss}")
            detail.append(
                f"a batch of {len(batch[-1])}: input {tuple(inputs[0].shape)} -> output "
                f"{_shape(out)}, loss {loss:.4g}"
            )

        with item("eager") as detail:
            # The run's step, built as build_experiment builds it, returning its gradients
            # so that the compiled step can be compared where the comparison is stable.
            criterion = scale_loss(build_criterion(cfg.loss), cfg.train.accumulation_steps)
            stats = exp.metrics.stats if exp.metrics is not None else None
            step = make_train_step(
                exp.model, criterion, exp.optimizer.optimizer, metrics_fn=stats, return_grads=True
            )
            eager_state, metrics = step(state0, batch)
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                raise _Failed(f"one step gives a non-finite loss ({loss})")
            moved, _ = _max_diff(eager_state.params, state0.params)
            detail.append(f"one step: loss {loss:.4g}, largest parameter change {moved:.3g}")

        # Eager first: the quick, exact checks answer before the compile (seconds to
        # minutes) starts.
        if parity:
            with item("parity") as detail:
                result = parity_run(cfg, steps=1)
                if not result.ok:
                    raise _Failed(result.summary())
                what = "bitwise" if result.mode == "bitwise" else "within tolerance"
                detail.append(
                    f"one step {what} equal to the imperative torch step "
                    f"(nn.Module + torch.optim): {result.compared_text()}"
                )
        else:
            skip("parity", "skipped (parity=False)")

        if compile:
            with item("compiled") as detail:
                compiled_state, compiled_metrics = compile_step(step)(exp.initial_state(), batch)
                # Loss, gradients and buffers (BatchNorm statistics) are compared: the
                # same math, reordered by inductor. The new parameters are reported but
                # not judged: an update normalised by the gradient's size (Adam's first
                # step is lr * sign(g)) turns a gradient at rounding level (a bias before
                # BatchNorm) into a full step either way.
                grads, buffers = metrics["grads"], eager_state.buffers
                ours = {
                    "loss": compiled_metrics["loss"],
                    **{f"grad:{k}": v for k, v in compiled_metrics["grads"].items()},
                    **{f"buffer:{k}": v for k, v in compiled_state.buffers.items()},
                }
                theirs = {
                    "loss": metrics["loss"],
                    **{f"grad:{k}": v for k, v in grads.items()},
                    **{f"buffer:{k}": v for k, v in buffers.items()},
                }
                diff, close = _max_diff(ours, theirs)
                tol = f"rtol {COMPILED_RTOL:g}, atol {COMPILED_ATOL:g}"
                if not close:
                    raise _Failed(
                        f"the compiled step's loss/gradients/buffers differ from the eager "
                        f"step's beyond {tol} (max abs difference {diff:.3g})"
                    )
                params, _ = _max_diff(compiled_state.params, eager_state.params)
                detail.append(
                    f"loss, {len(grads)} gradients, {len(buffers)} buffers as eager "
                    f"within {tol} (max abs difference {diff:.3g}); new parameters differ "
                    f"by at most {params:.3g}"
                )
        else:
            skip("compiled", "skipped (compile=False)")
    except _Failed:
        pass
    return report
