"""Where a run's numbers go: trackers, the history files and the progress bars.

```python
loggers = make_loggers({"tensorboard": True, "wandb": {"project": "demo"}}, out,
                       run_config=cfg, purge_step=None)
for lg in loggers:
    lg.log_scalars(step, {"train/loss_running": 0.41, "lr": 1e-3})   # each logging interval
    lg.log_scalars(record["step"], epoch_scalars(record))             # each epoch
write_history(history, out)            # OUT/history.json + OUT/history.csv, atomically
```

A tracker is anything with ``log_scalars(step, scalars)`` and ``close()`` (the ``Logger``
protocol). TensorBoard is always available; Weights & Biases and MLflow are optional
extras, imported only when asked for, and both run with no network (W&B offline, MLflow on
a local SQLite or file store). ``Progress`` draws tqdm bars on a terminal and stays silent
otherwise, so logs written to a file hold messages, not carriage-return noise.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Protocol, runtime_checkable

from tqdm import tqdm

from purestep._io import write_atomic

__all__ = [
    "Logger",
    "MLflowLogger",
    "MissingExtraError",
    "Progress",
    "TensorBoardLogger",
    "WandbLogger",
    "epoch_scalars",
    "make_loggers",
    "read_history",
    "write_atomic",
    "write_history",
]

# Keys of an epoch record that index it rather than measure it.
_INDEX_KEYS = ("epoch", "step")


class MissingExtraError(ValueError):
    """An optional dependency is not installed; the message says what to install."""


@runtime_checkable
class Logger(Protocol):
    """A destination for scalars, keyed by the global step.

    The fit loop calls ``log_scalars`` once per logging interval (running train loss, lr)
    and once per epoch (the epoch record's scalars, see ``epoch_scalars``), then ``close``.
    """

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def _scalar_value(value: Any) -> float | None:
    """``value`` as a float if it is a real number (Python, NumPy or 0-d tensor), else None.

    bool is excluded on purpose: a flag is not a curve.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if getattr(value, "ndim", None) == 0 and not isinstance(value, str | bytes):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def _numeric_scalars(scalars: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``scalars`` that are numbers, as floats; None and non-scalars dropped."""
    if not isinstance(scalars, Mapping):
        raise TypeError(
            f"scalars must be a mapping of name to number, got {type(scalars).__name__}"
        )
    out: dict[str, float] = {}
    for name, value in scalars.items():
        if not isinstance(name, str):
            raise TypeError(f"scalar names must be str, got {name!r} ({type(name).__name__})")
        number = _scalar_value(value)
        if number is not None:
            out[name] = number
    return out


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int, got {type(step).__name__} {step!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The loggable scalars of one epoch record: every numeric value but ``epoch`` and
    ``step`` (the record's step is the x-axis, not a curve), None and non-scalars such as
    confusion matrices left out. Keys keep their names (``loss``, ``val_loss``, ``lr`` ...).
    """
    return {k: v for k, v in _numeric_scalars(record).items() if k not in _INDEX_KEYS}


def _import_extra(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{module} is not installed; it comes with the {extra!r} extra: "
            f"pip install 'purestep[{extra}]'"
        ) from e


class TensorBoardLogger:
    """Scalars into TensorBoard event files in ``log_dir``.

    ``purge_step``: on resume, the step of the checkpoint resumed from. The writer records a
    restart marker there and TensorBoard then hides every event the interrupted run wrote at
    or after that step, so the resumed run's curve is not drawn twice.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, purge_step: int | None = None):
        if purge_step is not None:
            _check_step(purge_step)
        # Imported here: tensorboard + protobuf cost about a second that `import purestep`
        # should not pay.
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer: Any = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Add each numeric entry of ``scalars`` as a scalar named as given at ``step``."""
        _check_step(step)
        if self._writer is None:
            raise ValueError(f"TensorBoardLogger({str(self.log_dir)!r}) is closed")
        for name, value in _numeric_scalars(scalars).items():
            self._writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        """Flush the event file to disk and close it (safe to call twice)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


_WANDB_MODES = ("offline", "online", "disabled")


class WandbLogger:
    """Scalars into a Weights & Biases run (the ``wandb`` extra).

    ``mode="offline"`` (the default) needs no network or account: the run is stored under
    ``dir/wandb/`` and can be uploaded later with ``wandb sync``. ``resume_id`` continues
    the run with that id (``run_id`` of an earlier logger). wandb is kept from capturing the
    console so that it does not interfere with the progress bars.
    """

    def __init__(
        self,
        project: str,
        *,
        mode: str = "offline",
        dir: str | os.PathLike[str],
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        resume_id: str | None = None,
    ):
        if not isinstance(project, str) or not project:
            raise ValueError(f"wandb project must be a non-empty string, got {project!r}")
        if mode not in _WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {_WANDB_MODES}, got {mode!r}")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"wandb config must be a mapping, got {type(config).__name__}")
        wandb = _import_extra("wandb", "wandb")
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run: Any = wandb.init(
            project=project,
            mode=mode,
            dir=str(self.dir),
            name=name,
            config=dict(config) if config is not None else None,
            id=resume_id,
            resume="allow" if resume_id is not None else None,
            settings=wandb.Settings(console="off"),
        )
        self.run_id: str = self._run.id

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Log the numeric entries of ``scalars`` at ``step`` (entries logged at the same
        step are merged into one row, as wandb does)."""
        _check_step(step)
        if self._run is None:
            raise ValueError(f"WandbLogger(run {self.run_id!r}) is closed")
        numbers = _numeric_scalars(scalars)
        if numbers:
            self._run.log(numbers, step=step)

    def close(self) -> None:
        """Finish the run (safe to call twice). wandb's service process completes the run
        file on disk shortly after, at the latest when the process exits."""
        if self._run is not None:
            self._run.finish()
            self._run = None


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"optimizer.lr": "0.001", ...}``: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


class MLflowLogger:
    """Scalars into an MLflow run (the ``mlflow`` extra), on a local store: no server.

    ``tracking_uri``: e.g. ``"sqlite:///run.db"`` or ``"file:./mlruns"`` (recent MLflow
    releases accept the file store only with ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite is the
    store they recommend). The run is created in ``experiment`` (created if missing) with
    ``config`` flattened into params; ``resume_run_id`` continues an earlier run instead
    (its params are kept as they are: MLflow params cannot change). A client bound to
    ``tracking_uri`` is used rather than MLflow's process-wide active run, so two loggers
    never write into each other's run.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str = "purestep",
        run_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        resume_run_id: str | None = None,
    ):
        if not isinstance(tracking_uri, str) or not tracking_uri:
            raise ValueError(
                f"mlflow tracking_uri must be a non-empty string, got {tracking_uri!r}"
            )
        if not isinstance(experiment, str) or not experiment:
            raise ValueError(f"mlflow experiment must be a non-empty string, got {experiment!r}")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"mlflow config must be a mapping, got {type(config).__name__}")
        _import_extra("mlflow", "mlflow")
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        self.tracking_uri = tracking_uri
        self._client: Any = MlflowClient(tracking_uri=tracking_uri)
        if resume_run_id is not None:
            run = self._client.get_run(resume_run_id)  # raises if there is no such run
            self._client.update_run(resume_run_id, status="RUNNING")
        else:
            found = self._client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id
                if found is not None
                else self._client.create_experiment(experiment)
            )
            run = self._client.create_run(experiment_id, run_name=run_name)
            if config:
                params = [Param(k, v) for k, v in _flatten(config).items()]
                self._client.log_batch(run.info.run_id, params=params)
        self.run_id: str = run.info.run_id
        self._open = True

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Log the numeric entries of ``scalars`` as metrics at ``step``, in one batch."""
        _check_step(step)
        if not self._open:
            raise ValueError(f"MLflowLogger(run {self.run_id!r}) is closed")
        now = int(time.time() * 1000)
        metrics = [self._metric(k, v, now, step) for k, v in _numeric_scalars(scalars).items()]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        """Mark the run finished (safe to call twice)."""
        if self._open:
            self._client.set_terminated(self.run_id)
            self._open = False


_LOGGER_KEYS: dict[str, tuple[str, ...]] = {
    "wandb": ("project", "mode", "dir", "name", "resume_id"),
    "mlflow": ("tracking_uri", "experiment", "run_name", "resume_run_id"),
}


def _section(log_cfg: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """``log_cfg[key]`` as a dict of known keys, or None when the tracker is off."""
    section = log_cfg.get(key)
    if section is None or section is False:
        return None
    if not isinstance(section, Mapping):
        raise ValueError(
            f"log.{key}: expected a mapping (e.g. {{project: ..., mode: offline}}) or null, "
            f"got {type(section).__name__} {section!r}"
        )
    allowed = _LOGGER_KEYS[key]
    for name in section:
        if name not in allowed:
            raise ValueError(f"log.{key}.{name}: unknown key; expected one of {list(allowed)}")
    # A key set to null takes its default, as if absent (a dumped pydantic model lists all).
    return {name: value for name, value in section.items() if value is not None}


def make_loggers(
    log_cfg: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    run_config: Mapping[str, Any] | None,
    purge_step: int | None,
) -> list[Logger]:
    """The trackers a run's ``log`` section asks for.

    ``log_cfg``: ``{"tensorboard": bool (default true), "wandb": {project, mode, dir, name,
    resume_id} | None, "mlflow": {tracking_uri, experiment, run_name, resume_run_id} |
    None}``; other keys (``csv``, ``plots``, ``progress``) belong to the fit loop and are
    ignored here. TensorBoard writes into ``out_dir/tb`` (``purge_step``: see
    ``TensorBoardLogger``); W&B defaults to ``dir=out_dir`` and MLflow to a SQLite store
    ``out_dir/mlflow.db``. ``run_config`` becomes the tracker runs' config/params.
    A missing extra raises ``MissingExtraError``; trackers opened before a failure are
    closed again.
    """
    if not isinstance(log_cfg, Mapping):
        raise TypeError(f"log config must be a mapping, got {type(log_cfg).__name__}")
    out = Path(out_dir)
    tensorboard = log_cfg.get("tensorboard", True)
    if not isinstance(tensorboard, bool):
        raise ValueError(f"log.tensorboard: expected true/false, got {tensorboard!r}")
    wandb_cfg = _section(log_cfg, "wandb")
    mlflow_cfg = _section(log_cfg, "mlflow")
    if wandb_cfg is not None and "project" not in wandb_cfg:
        raise ValueError("log.wandb.project: required (the W&B project name)")

    loggers: list[Logger] = []
    try:
        if tensorboard:
            loggers.append(TensorBoardLogger(out / "tb", purge_step=purge_step))
        if wandb_cfg is not None:
            wandb_cfg.setdefault("dir", out)
            loggers.append(WandbLogger(config=run_config, **wandb_cfg))
        if mlflow_cfg is not None:
            mlflow_cfg.setdefault("tracking_uri", f"sqlite:///{(out / 'mlflow.db').resolve()}")
            loggers.append(MLflowLogger(config=run_config, **mlflow_cfg))
    except BaseException:
        for lg in loggers:
            with contextlib.suppress(Exception):
                lg.close()
        raise
    return loggers


# --- history files ---------------------------------------------------------------------


_JSON_SCALARS = (str, int, float, bool, type(None))


def _check_json(value: Any, where: str) -> None:
    """Raise a TypeError naming the first value that JSON cannot hold (or not round-trip)."""
    if isinstance(value, _JSON_SCALARS):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be str, got {key!r} ({type(key).__name__})")
            _check_json(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}, which history.json cannot hold "
        "(use Python numbers, strings, lists and dicts; e.g. call .item() or .tolist())"
    )


def _csv_columns(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Union of the scalar keys (None counts: a missing scalar) in first-seen order,
    ``epoch`` and ``step`` first."""
    seen: dict[str, None] = {}
    for record in history:
        for key, value in record.items():
            if isinstance(value, _JSON_SCALARS):
                seen.setdefault(key, None)
    first = [k for k in _INDEX_KEYS if k in seen]
    return first + [k for k in seen if k not in _INDEX_KEYS]


def _csv_text(history: Sequence[Mapping[str, Any]]) -> str:
    columns = _csv_columns(history)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in history:
        row = []
        for key in columns:
            value = record.get(key)
            # repr(float) round-trips exactly (str(float) is the same since Python 3.2).
            row.append("" if value is None or not isinstance(value, _JSON_SCALARS) else value)
        writer.writerow(row)
    return buffer.getvalue()


def write_history(
    history: list[dict[str, Any]], out_dir: str | os.PathLike[str], *, csv: bool = True
) -> None:
    """Write ``out_dir/history.json`` (the list as is) and ``out_dir/history.csv``.

    JSON floats are written with ``repr`` and so read back bit for bit; NaN and infinities
    are written as ``NaN``/``Infinity`` (what Python's json reads back; strict JSON has no
    such numbers). The CSV has one row per epoch, one column per scalar key (first seen
    first, ``epoch`` and ``step`` leading); confusion matrices and other non-scalars are left
    out, a missing or None value is an empty cell. Each file is replaced atomically (see
    ``write_atomic``) and everything is serialised before either file is touched, so a
    value JSON cannot hold raises a TypeError naming it and leaves both files as they were.
    ``csv=False`` writes the JSON only.
    """
    if not isinstance(history, list):
        raise TypeError(f"history must be a list of dicts, got {type(history).__name__}")
    for i, record in enumerate(history):
        if not isinstance(record, Mapping):
            raise TypeError(f"history[{i}] must be a dict, got {type(record).__name__}")
        _check_json(record, f"history[{i}]")
    json_bytes = (json.dumps(history, indent=1) + "\n").encode()
    csv_bytes = _csv_text(history).encode() if csv else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "history.json", json_bytes)
    if csv_bytes is not None:
        write_atomic(out / "history.csv", csv_bytes)


def read_history(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The history list from ``out_dir/history.json`` (as ``write_history`` wrote it)."""
    path = Path(out_dir) / "history.json"
    text = path.read_text()
    try:
        history = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise ValueError(f"{path}: expected a JSON list of objects (one per epoch)")
    return history


# --- progress bars ---------------------------------------------------------------------


def _is_tty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # a closed or detached stream
        return False


def _format_summary(summary: Mapping[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in _numeric_scalars(summary).items())


class Progress:
    """tqdm bars for a run: one over epochs, and under it one over the current epoch's
    batches with the running loss as postfix.

    ``enabled=None`` turns the bars on exactly when ``file`` (default: ``sys.stderr``) is a
    terminal, so output
    redirected to a file or CI log stays free of bar redraws. Disabled, nothing is printed
    but ``write`` messages. ``update`` is meant for each logging interval (``n`` steps at
    once), not each step; the bars also refresh at most 10 times a second.
    """

    def __init__(
        self, enabled: bool | None = None, *, total_epochs: int, file: IO[str] | None = None
    ):
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, int):
            raise TypeError(f"total_epochs must be an int, got {total_epochs!r}")
        if total_epochs < 0:
            raise ValueError(f"total_epochs must be >= 0, got {total_epochs}")
        if enabled is not None and not isinstance(enabled, bool):
            raise TypeError(f"enabled must be true, false or None, got {enabled!r}")
        # Looked up now, not at import: a redirected or captured sys.stderr is the one used.
        self.file: IO[str] = sys.stderr if file is None else file
        self.enabled = _is_tty(self.file) if enabled is None else enabled
        self.total_epochs = total_epochs
        self._epochs: Any = None
        self._batches: Any = None
        self._epoch: int | None = None

    def start_epoch(self, epoch: int, total_batches: int | None, initial: int = 0) -> None:
        """Open the batch bar of ``epoch`` (1-based); ``total_batches`` None when unknown
        (an iterable without ``len``); ``initial`` batches already done (resumed mid-epoch)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be an int >= 1 (1-based), got {epoch!r}")
        if total_batches is not None and (
            isinstance(total_batches, bool)
            or not isinstance(total_batches, int)
            or total_batches < 0
        ):
            raise ValueError(f"total_batches must be an int >= 0 or None, got {total_batches!r}")
        if isinstance(initial, bool) or not isinstance(initial, int) or initial < 0:
            raise ValueError(f"initial must be an int >= 0, got {initial!r}")
        if total_batches is not None and initial > total_batches:
            raise ValueError(f"initial ({initial}) exceeds total_batches ({total_batches})")
        self._close_batches()
        self._epoch = epoch
        if not self.enabled:
            return
        if self._epochs is None:
            self._epochs = tqdm(
                total=self.total_epochs,
                initial=min(epoch - 1, self.total_epochs),  # a resumed run starts part-way
                desc="epochs",
                unit="epoch",
                file=self.file,
                position=0,
                leave=True,
                dynamic_ncols=True,
            )
        self._batches = tqdm(
            total=total_batches,
            initial=initial,
            desc=f"epoch {epoch}/{self.total_epochs}",
            unit="step",
            file=self.file,
            position=1,
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, n: int = 1, **postfix: float) -> None:
        """Advance the batch bar by ``n`` steps and show ``postfix`` (e.g. ``loss=0.41``)."""
        if self._epoch is None:
            raise ValueError("Progress.update() called before start_epoch()")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if self._batches is None:
            return
        shown = _numeric_scalars(postfix)
        if shown:
            self._batches.set_postfix(shown, refresh=False)  # drawn by the update below
        self._batches.update(n)

    def end_epoch(self, summary: Mapping[str, float]) -> None:
        """Close the batch bar, advance the epoch bar and print one line with ``summary``
        (the epoch's losses and metrics; None values are left out)."""
        if self._epoch is None:
            raise ValueError("Progress.end_epoch() called before start_epoch()")
        epoch = self._epoch
        self._close_batches()
        self._epoch = None
        if self._epochs is None:
            return
        self._epochs.set_postfix(_numeric_scalars(summary), refresh=False)
        self._epochs.update(1)
        self.write(f"epoch {epoch}/{self.total_epochs}  {_format_summary(summary)}".rstrip())

    def write(self, msg: str) -> None:
        """Print ``msg`` on stdout; with bars shown, above them without breaking them."""
        if self.enabled:
            tqdm.write(msg, file=sys.stdout)
        else:
            print(msg, file=sys.stdout, flush=True)

    def close(self) -> None:
        """Close the bars (safe to call twice)."""
        self._close_batches()
        self._epoch = None
        if self._epochs is not None:
            self._epochs.close()
            self._epochs = None

    def _close_batches(self) -> None:
        if self._batches is not None:
            self._batches.close()
            self._batches = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
