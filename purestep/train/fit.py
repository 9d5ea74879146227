"""``ps.fit``: the training loop on the pure step, readable in one sitting.

    for epoch in epochs:
        for batch in the epoch's batches (from where a checkpoint left off):
            state, m = train_step(state, batch)      # pure; m holds 0-d loss + metric stats
            every log_every steps: read the interval's losses once (NaN policy, progress)
            every checkpoint.every_steps steps, or on SIGTERM/SIGINT: save a checkpoint
        epoch end: reduce the epoch's losses and metric statistics; evaluate on val_data;
                   ReduceLROnPlateau on the monitored value; early stopping; best/every-N
                   checkpoint; history files, loggers
    restore the best state (early stopping with restore_best); return (state, history)

Per step the loop only appends the step's output tensors to a list: nothing is read back
from the device until the end of a logging interval. The epoch's figures are reduced from
the stacked per-step values at the epoch's end, and those values travel in checkpoints, so
a run stopped anywhere and resumed gives bitwise the same final state and history as an
uninterrupted one (with ``Batches``, whose order is a function of ``(seed, epoch)``; any
other iterable — a ``DataLoader`` — restarts the interrupted epoch from its first batch).

Extension points: ``callbacks`` (``purestep.train.callbacks``: on_fit_start,
on_step_end, on_epoch_end, on_checkpoint, on_fit_end, and a state saved in every
checkpoint), plus the older ``on_epoch_end(record, state)`` hook and ``should_stop()``
polled after every step (the CLI's SIGTERM/SIGINT flag).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from purestep.core.pytree import tree_clone
from purestep.core.state import TrainState
from purestep.data.batching import Batches
from purestep.optim.hyperparams import lr_tensors
from purestep.optim.scheduled import schedule_step
from purestep.optim.schedules import Schedule
from purestep.train.callbacks import Callbacks, Loop
from purestep.train.checkpoint import Checkpointer, LoopState, load_checkpoint
from purestep.train.loggers import Logger, Progress
from purestep.train.metrics import MetricSet

__all__ = [
    "NAN_POLICIES",
    "EarlyStopping",
    "History",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "monitor_mode",
]

NAN_POLICIES = ("raise", "skip", "stop")
_MAX_IS_BETTER = ("accuracy", "precision", "recall", "f1", "r2", "auc")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (``nan_policy="raise"``)."""


class TrainingInterrupted(Exception):
    """``should_stop()`` asked the loop to stop; a checkpoint was saved (if checkpointing)."""

    def __init__(self, message: str, checkpoint: Any = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


def monitor_mode(key: str) -> str:
    """``"max"`` for accuracy/precision/recall/F1/R² (any ``val_``/``test_`` prefix), else
    ``"min"`` (losses, errors)."""
    base = key.removeprefix("val_").removeprefix("test_")
    return "max" if base.startswith(_MAX_IS_BETTER) else "min"


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row; with ``restore_best`` the returned state is the best epoch's."""

    monitor: str = "val_loss"
    mode: str | None = None
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        if self.mode not in (None, "min", "max"):
            raise ValueError(f"early stopping mode must be 'min' or 'max', got {self.mode!r}")
        if (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, int)
            or self.patience < 0
        ):
            raise ValueError(f"patience must be an int >= 0, got {self.patience!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")


class History:
    """Per-epoch records (``{"epoch", "step", "loss", "val_loss", <metrics>, "lr",
    "seconds", ...}``), with ``history["val_loss"]`` giving one key's values by epoch."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        self.records: list[dict[str, Any]] = [dict(r) for r in records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list[Any]:
        return [r.get(key) for r in self.records]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self.records == other.records

    def __repr__(self) -> str:
        return f"History({len(self.records)} epochs)"

    def without_timing(self) -> list[dict[str, Any]]:
        """The records without ``seconds`` (what a resumed run reproduces exactly)."""
        return [{k: v for k, v in r.items() if k != "seconds"} for r in self.records]


def _to_device(batch: Any, device: torch.device) -> Any:
    # The common case first: a tuple of tensors already there (Batches puts them there).
    if type(batch) is tuple and all(type(b) is torch.Tensor and b.device == device for b in batch):
        return batch
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device)
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _as_python(value: torch.Tensor) -> Any:
    """A 0-d metric as a float, a matrix (confusion) as nested int lists."""
    if value.dim() == 0:
        return value.item()
    return value.tolist()


def _batch_size(batch: Any) -> int:
    targets = batch[-1] if isinstance(batch, tuple | list) else batch
    return int(targets.shape[0]) if isinstance(targets, torch.Tensor) and targets.dim() else 1


def evaluate(
    state: TrainState,
    eval_step: Callable[[TrainState, Any], Mapping[str, torch.Tensor]],
    data: Iterable[Any],
    metrics: MetricSet | None = None,
) -> dict[str, Any]:
    """Loss and metrics of ``state`` over all of ``data`` (one pass, in order).

    The loss is the example-weighted mean of the batch losses (the full-data loss for a
    mean-reduced criterion); metrics come from statistics summed over every batch; other
    per-batch metrics the step returns are averaged over batches.
    """
    device = state.device
    outputs: list[Mapping[str, torch.Tensor]] = []
    sizes: list[int] = []
    for batch in data:
        batch = _to_device(batch, device)
        outputs.append(eval_step(state, batch))
        sizes.append(_batch_size(batch))
    if not outputs:
        raise ValueError("evaluate: the data yielded no batch")
    weights = torch.tensor(sizes, dtype=torch.float64, device=device)
    losses = torch.stack([o["loss"].detach() for o in outputs]).to(torch.float64)
    result: dict[str, Any] = {"loss": float((losses * weights).sum() / weights.sum())}
    stat_keys = set(metrics.stat_keys) if metrics is not None else set()
    if metrics is not None:
        totals = {k: torch.stack([o[k] for o in outputs]).sum(0) for k in stat_keys}
        result |= {k: _as_python(v) for k, v in metrics.compute(totals).items()}
    for key in outputs[0]:
        if key != "loss" and key not in stat_keys:
            values = torch.stack([o[key].detach().to(torch.float64) for o in outputs])
            result[key] = float(values.mean())
    return result


class _Best:
    """The best value of the monitored key so far, and epochs since it improved."""

    def __init__(self, monitor: str, mode: str, min_delta: float, loop: LoopState) -> None:
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.loop = loop

    def update(self, record: Mapping[str, Any]) -> bool:
        value = record.get(self.monitor)
        if value is None:
            available = sorted(k for k, v in record.items() if isinstance(v, int | float))
            raise ValueError(
                f"cannot monitor {self.monitor!r}: this run logs {available} "
                "(val_ keys need val_data)"
            )
        best = self.loop.best_value
        if math.isnan(value):
            improved = False
        elif best is None:
            improved = True
        elif self.mode == "min":
            improved = value < best - self.min_delta
        else:
            improved = value > best + self.min_delta
        if improved:
            self.loop.best_value = float(value)
            self.loop.best_epoch = int(record["epoch"])
            self.loop.bad_epochs = 0
        else:
            self.loop.bad_epochs += 1
        return improved


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, Mapping[str, torch.Tensor]]],
    train_data: Batches | Iterable[Any],
    *,
    epochs: int,
    eval_step: Callable[[TrainState, Any], Mapping[str, torch.Tensor]] | None = None,
    val_data: Iterable[Any] | None = None,
    metrics: MetricSet | None = None,
    plateau: Schedule | Sequence[Schedule] | None = None,
    plateau_monitor: str | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpointer: Checkpointer | None = None,
    checkpoint_every_epochs: int | None = 1,
    checkpoint_every_steps: int | None = None,
    best_monitor: str | None = None,
    best_mode: str | None = None,
    resume: LoopState | None = None,
    nan_policy: str = "raise",
    log_every: int = 50,
    loss_scale: float = 1.0,
    progress: Progress | bool | None = False,
    loggers: Sequence[Logger] = (),
    on_epoch_end: Callable[[dict[str, Any], TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    callbacks: Sequence[Any] = (),
) -> tuple[TrainState, History]:
    """Train ``state`` for ``epochs`` epochs with the pure ``train_step``.

    Args:
        state: the initial state (or the one a checkpoint restored, with ``resume``).
        train_step: ``(state, batch) -> (state, metrics)``, eager or ``ps.compile``d;
            ``metrics["loss"]`` is the batch loss, other entries per-batch metrics or (with
            ``metrics``) metric statistics from ``MetricSet.stats``.
        train_data: a ``Batches`` (exact mid-epoch resume), or any iterable of batches
            such as a ``DataLoader`` (re-iterated each epoch; a resume restarts the epoch).
        epochs: total epochs (a resumed run continues up to this number).
        eval_step, val_data: validation after each epoch (``val_`` keys).
        metrics: the ``MetricSet`` whose ``stats`` the steps return as ``metrics_fn``.
        plateau: ReduceLROnPlateau schedule(s) of a ``scheduled(..., every=None)``
            optimizer, stepped after each epoch on ``plateau_monitor`` (default
            ``val_loss``, or ``loss`` without validation).
        early_stopping: an ``EarlyStopping``; its monitor also picks the best checkpoint.
        checkpointer: where to save (None: no checkpoints); every
            ``checkpoint_every_epochs`` epochs, every ``checkpoint_every_steps`` steps, on
            a new best of ``best_monitor``/``best_mode`` and at the end.
        resume: the loop state of a checkpoint (``load_checkpoint(...).loop``).
        nan_policy: a non-finite training loss ``"raise"``s ``NonFiniteLossError`` naming
            the epoch and step (no checkpoint of the bad state is written), is ``"skip"``ped
            (the optimizer must be wrapped in ``apply_if_finite``; skipped steps are counted
            in ``skipped_steps`` and left out of the epoch loss), or ``"stop"``s training
            with the last state whose losses and parameters were finite, as checked every
            ``log_every`` steps (so it may be up to that many steps back), saved as the
            final checkpoint.
        log_every: steps between reads of the running loss (progress, loggers, NaN check).
        loss_scale: reported losses are the step's loss times this (the step's criterion
            divides by the gradient-accumulation count).
        progress: a ``Progress``, or True/None/False for tqdm bars on/if-a-TTY/off.
        loggers: ``Logger``s fed the running loss per interval and each epoch's record.
        on_epoch_end: hook called with each epoch's record and state.
        should_stop: polled after every step; True saves a checkpoint and raises
            ``TrainingInterrupted``.
        callbacks: objects with any of ``on_fit_start(loop)``, ``on_step_end(loop,
            metrics)``, ``on_epoch_end(loop, record)``, ``on_checkpoint(loop, path)``,
            ``on_fit_end(loop, history)``, ``state_dict()``/``load_state_dict(state)``
            (``purestep.train.callbacks``); their states are saved in every checkpoint and
            restored from ``resume``; ``loop.request_stop(reason)`` ends the run after the
            current step with a checkpoint.

    Returns:
        ``(state, history)``: the final state (the best one with ``restore_best``) and the
        per-epoch ``History``. ``history.records`` equal an uninterrupted run's on resume,
        except ``seconds``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"log_every must be an int >= 1, got {log_every!r}")
    if (eval_step is None) != (val_data is None):
        raise ValueError("give both eval_step and val_data, or neither")
    has_val = val_data is not None
    plateau_monitor = plateau_monitor or ("val_loss" if has_val else "loss")
    monitor = best_monitor or (
        early_stopping.monitor if early_stopping else ("val_loss" if has_val else "loss")
    )
    mode = best_mode or (early_stopping.mode if early_stopping else None) or monitor_mode(monitor)
    for key, what in ((monitor, "monitor"), (plateau_monitor if plateau else "loss", "plateau")):
        if key.startswith("val_") and not has_val:
            raise ValueError(f"the {what} key {key!r} needs val_data")
    bars = progress if isinstance(progress, Progress) else Progress(progress, total_epochs=epochs)

    loop = resume if resume is not None else LoopState()
    best = _Best(monitor, mode, early_stopping.min_delta if early_stopping else 0.0, loop)
    donated = bool(getattr(train_step, "donate", False))
    best_state: TrainState | None = None
    if loop.best_epoch is not None and loop.best_epoch == loop.epoch and loop.batch == 0:
        best_state = state  # resumed right at the best epoch's end
    device = state.device
    deterministic = isinstance(train_data, Batches)
    steps_per_epoch = len(train_data) if hasattr(train_data, "__len__") else None  # type: ignore[arg-type]
    if loop.batch and not deterministic:
        loop.batch, loop.losses, loop.stats, loop.values = 0, None, {}, {}
    # A finished run resumed with more epochs goes on (unless early stopping ended it).
    loop.finished = loop.epoch >= epochs or loop.stop_reason is not None
    last_good = state
    good_at = (loop.epoch, loop.batch, loop.step)  # where last_good stands

    hooks = Callbacks(callbacks)
    view = Loop(state, loop, loop.history)
    hooks.load_state_dicts(loop.callbacks)

    def checkpoint(*, is_best: bool = False) -> Any:
        if checkpointer is None:
            return None
        loop.callbacks = hooks.state_dicts()
        saved = checkpointer.save(state, loop, best=is_best)
        hooks.emit("on_checkpoint", view, saved)
        return saved

    pending: list[Mapping[str, torch.Tensor]] = []
    stat_keys = metrics.stat_keys if metrics is not None else ()

    def flush() -> None:
        """Fold the steps since the last flush into the epoch's values; check them."""
        nonlocal last_good, good_at
        if not pending:
            return
        losses = fold_outputs(
            loop, lambda key: torch.stack([m[key] for m in pending]), stat_keys, list(pending[0])
        )
        pending.clear()
        where = nonfinite_at(loop, losses) if nan_policy != "skip" else None
        if where is not None:
            if nan_policy == "raise":
                raise NonFiniteLossError(
                    f"non-finite training loss ({where[1]}) at {where[0]}; "
                    "no checkpoint of this state was written"
                )
            raise _StopOnNan(where[0])
        if nan_policy == "stop" and all(bool(p.isfinite().all()) for p in state.params.values()):
            last_good = tree_clone(state) if donated else state
            good_at = (loop.epoch, loop.batch, loop.step)
        count = len(losses)
        finite = torch.isfinite(losses)
        shown = losses[finite] if nan_policy == "skip" else losses
        running = float(shown.double().mean()) * loss_scale if shown.numel() else math.nan
        bars.update(count, loss=running)
        for logger in loggers:
            logger.log_scalars(loop.step, {"train/loss_running": running})

    history = History(loop.history)
    hooks.emit("on_fit_start", view)
    try:
        while not loop.finished:
            epoch = loop.epoch
            bars.start_epoch(epoch + 1, steps_per_epoch, initial=loop.batch)
            epoch_start = time.perf_counter() - loop.seconds
            batches: Iterator[Any] = (
                train_data.epoch(epoch, start=loop.batch)
                if isinstance(train_data, Batches)
                else iter(train_data)
            )
            for batch in batches:
                state, out = train_step(state, _to_device(batch, device))
                pending.append(out)
                loop.batch += 1
                loop.step += 1
                if hooks:
                    view.state = state
                    hooks.emit("on_step_end", view, out)
                if loop.batch % log_every == 0:
                    flush()
                if view.stop_reason is not None and not (
                    steps_per_epoch is not None and loop.batch == steps_per_epoch
                ):  # a callback ended the run mid-epoch: a checkpoint here, then done
                    flush()
                    loop.seconds = time.perf_counter() - epoch_start
                    loop.stop_reason, loop.finished = view.stop_reason, True
                    checkpoint()
                    bars.write(f"stopped at step {loop.step}: {view.stop_reason}")
                    break
                end_of_epoch = steps_per_epoch is not None and loop.batch == steps_per_epoch
                due = checkpoint_every_steps and loop.step % checkpoint_every_steps == 0
                stop = should_stop is not None and should_stop()
                if (due and not end_of_epoch) or stop:
                    flush()
                    loop.seconds = time.perf_counter() - epoch_start
                    saved = checkpoint()
                    if stop:
                        raise TrainingInterrupted(
                            f"stopped at epoch {epoch + 1}, step {loop.step}", saved
                        )
            if loop.finished:  # stopped by a callback mid-epoch
                break
            flush()
            if loop.batch == 0:
                raise ValueError(f"the training data yielded no batch in epoch {epoch + 1}")

            record = _epoch_record(loop, metrics, nan_policy, loss_scale)
            if has_val:
                assert eval_step is not None and val_data is not None
                result = evaluate(state, eval_step, val_data, metrics)
                record |= {f"val_{k}": v for k, v in result.items()}
            record |= _lrs(state.opt_state)
            record["seconds"] = time.perf_counter() - epoch_start
            if plateau is not None:
                value = record.get(plateau_monitor)
                if value is None:
                    raise ValueError(f"ReduceLROnPlateau monitors {plateau_monitor!r}, not logged")
                state = state._replace(
                    opt_state=schedule_step(state.opt_state, plateau, float(value))
                )
            improved = best.update(record)
            if improved and (early_stopping is not None and early_stopping.restore_best):
                best_state = tree_clone(state) if donated else state
            loop.history.append(record)
            history = History(loop.history)
            loop.epoch, loop.batch, loop.seconds = epoch + 1, 0, 0.0
            loop.losses, loop.stats, loop.values = None, {}, {}
            # Stop after `patience` epochs in a row without improvement (Keras' and the
            # tutorials' counter); 0 stops at the first one.
            if early_stopping is not None and loop.bad_epochs >= max(1, early_stopping.patience):
                loop.stop_reason = "early_stopping"
            if hooks:
                view.state = state
                hooks.emit("on_epoch_end", view, record)
                if view.stop_reason is not None and loop.stop_reason is None:
                    loop.stop_reason = view.stop_reason
            loop.finished = loop.epoch >= epochs or loop.stop_reason is not None
            every = checkpoint_every_epochs
            saved = None
            if loop.finished or improved or (every and loop.epoch % every == 0):
                saved = checkpoint(is_best=improved)
            bars.end_epoch({k: v for k, v in record.items() if k not in ("epoch", "step")})
            if not bars.enabled:
                bars.write(format_record(record, epochs))
            if saved is not None and improved:
                bars.write(f"saved best ({monitor} {record[monitor]:.6g}) to {saved}")
            for logger in loggers:
                logger.log_scalars(loop.step, _scalars(record))
            if on_epoch_end is not None:
                on_epoch_end(record, state)
            if loop.stop_reason == "early_stopping":
                bars.write(
                    f"early stopping: {monitor} has not improved for {loop.bad_epochs} epochs "
                    f"(best {loop.best_value:.6g} at epoch {loop.best_epoch})"
                )
    except _StopOnNan as stop:
        bars.write(f"non-finite training loss at {stop}: stopping (nan_policy=stop)")
        state = last_good
        loop.stop_reason = "nan"
        loop.finished = True
        # The final checkpoint holds the last finite state, at its own position (the
        # partial epoch's sums, which include the bad steps, are dropped).
        loop.epoch, loop.batch, loop.step = good_at
        loop.losses, loop.stats, loop.values, loop.seconds = None, {}, {}, 0.0
        saved = checkpoint()
        if saved is not None:
            bars.write(f"saved the last finite state (step {loop.step}) to {saved}")
    finally:
        bars.close()

    if early_stopping is not None and early_stopping.restore_best and loop.best_epoch is not None:
        if best_state is None and checkpointer is not None and checkpointer.pointer("best"):
            best_state = load_checkpoint(checkpointer.directory / "best", state).state
        if best_state is not None:
            state = best_state
    view.state = state
    hooks.emit("on_fit_end", view, history)
    return state, history


class _StopOnNan(Exception):
    pass


def fold_outputs(
    loop: LoopState,
    column: Callable[[str], torch.Tensor],
    stat_keys: Sequence[str],
    keys: Sequence[str],
) -> torch.Tensor:
    """Append the latest steps' outputs to the epoch's stacked values in ``loop``.

    ``column(key)`` gives one output key's values for those steps, stacked along a new
    first axis; ``keys`` are the output's keys. Returns the steps' losses (detached).
    """
    losses = column("loss").detach()
    loop.losses = losses if loop.losses is None else torch.cat([loop.losses, losses])
    for k in stat_keys:
        new = column(k)
        loop.stats[k] = new if k not in loop.stats else torch.cat([loop.stats[k], new])
    for k in keys:
        if k in ("loss", "grads") or k in stat_keys:
            continue
        new = column(k).detach()
        loop.values[k] = new if k not in loop.values else torch.cat([loop.values[k], new])
    return losses


def nonfinite_at(loop: LoopState, losses: torch.Tensor) -> tuple[str, float] | None:
    """Where the first non-finite value of ``losses`` (the last ``len(losses)`` steps of
    ``loop``) was, as ``("epoch E, step S (batch B of the epoch)", value)``; None if all
    are finite. One read from the device."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return None
    first = int((~finite).nonzero()[0])
    count = len(losses)
    at_step = loop.step - count + first + 1
    at_batch = loop.batch - count + first + 1
    where = f"epoch {loop.epoch + 1}, step {at_step} (batch {at_batch} of the epoch)"
    return where, losses[first].item()


def _epoch_record(
    loop: LoopState, metrics: MetricSet | None, nan_policy: str, loss_scale: float
) -> dict[str, Any]:
    """The epoch's training figures, reduced from its stacked per-step values."""
    assert loop.losses is not None
    losses = loop.losses.to(torch.float64)
    record: dict[str, Any] = {"epoch": loop.epoch + 1, "step": loop.step}
    if nan_policy == "skip":
        finite = torch.isfinite(losses)
        kept = losses[finite]
        record["loss"] = float(kept.mean()) * loss_scale if kept.numel() else math.nan
        record["skipped_steps"] = int((~finite).sum())
    else:
        record["loss"] = float(losses.mean()) * loss_scale
    if metrics is not None and loop.stats:
        totals = {k: loop.stats[k].sum(0) for k in loop.stats}
        record |= {k: _as_python(v) for k, v in metrics.compute(totals).items()}
    for k, v in loop.values.items():
        if v.dim() == 1:
            record[k] = float(v.to(torch.float64).mean())
    return record


def _lrs(opt_state: Any) -> dict[str, float]:
    lrs = lr_tensors(opt_state)
    out = {}
    for i, lr in enumerate(lrs):
        out["lr" if i == 0 else f"lr_group{i}"] = float(lr)
    return out


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"
    }


def format_record(record: Mapping[str, Any], epochs: int) -> str:
    """One line per epoch, as tutorials print it."""
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key, value in record.items():
        if key in ("epoch", "step", "seconds") or not isinstance(value, int | float):
            continue
        if isinstance(value, bool):
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    parts.append(f"({record.get('seconds', 0.0):.1f} s)")
    return "  ".join(parts)
