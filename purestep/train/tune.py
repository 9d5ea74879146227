"""``ps.tune``: Optuna trials, ``parallel`` at a time, trained as one sweep.

```python
result = ps.tune("c.yaml", "space.yaml", trials=48, parallel=8, out="runs/tune")
result.best_config                   # a Config; runs/tune/best.yaml is it as a train YAML
                                     # and runs/tune/best/ the best trial's run directory
```

Each round asks the study for ``parallel`` trials, trains them together with the sweep
engine (one vmapped group where the step allows it: choices that change the model or the
optimizer's structure split the group), reports every member's monitored validation value
per epoch (``trial.report``; a member the pruner stops freezes, the others go on) and tells
the study each result. The study lives in SQLite (``out/study.db`` by default), written
as trials finish, so a killed ``tune`` started again resumes where it was: finished trials
are kept and never re-run, and a trial that was running when the process died is marked
failed and its parameters are asked again. Optuna is the optional extra ``purestep[tune]``.

The median pruner waits a warm-up: a trial is not pruned in its first ``pruner_warmup``
epochs (default a quarter of ``train.epochs``, at least 1), so one noisy first epoch does
not end it.

Outputs in ``out``: ``trials.csv`` (one row per trial: number, state, value, parameters,
epochs, status), ``best.yaml`` (the best trial's config, ready for ``purestep train``),
``best/`` (the best trial as a run directory, as ``purestep sweep`` writes it: config,
checkpoints, history, plots, test metrics; ``purestep evaluate --checkpoint out/best``;
rewritten when a round finds a better trial, so a resumed study keeps it),
``plots/history.png`` and ``plots/importances.png`` (Optuna's matplotlib plots).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from purestep._io import write_atomic
from purestep.core.state import TrainState
from purestep.train._grid import member_config
from purestep.train._members import MemberResult, StepCache, monitor_of, run_members
from purestep.train._space import Param, load_space
from purestep.train.config import Config, ConfigError, apply_overrides, config_to_dict
from purestep.train.distributed.context import launched
from purestep.train.loggers import MissingExtraError
from purestep.train.run import build_experiment
from purestep.train.run_lock import writes_run
from purestep.train.sweep import base_config, write_run

__all__ = ["PRUNERS", "TuneResult", "import_optuna", "median_pruner", "tune"]

PRUNERS = ("median", "none")
STUDY_NAME = "purestep"


def import_optuna() -> ModuleType:
    """``optuna``, or a ``MissingExtraError`` saying how to install it."""
    try:
        import optuna
    except ImportError as err:
        raise MissingExtraError(
            "optuna is not installed; `purestep tune` needs the 'tune' extra: "
            "pip install 'purestep[tune]'"
        ) from err
    return optuna


@dataclass
class TuneResult:
    """The study after ``tune``, its best trial and config, and where the outputs are."""

    study: Any
    best_trial: int | None
    best_value: float | None
    best_config: Config | None
    out: Path
    rows: list[dict[str, Any]]
    seconds: float


@contextmanager
def _quiet(optuna: ModuleType) -> Any:
    """Optuna's per-trial INFO lines and experimental-feature warnings off (tune prints
    its own progress), restored afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _check_space(raw: Mapping[str, Any], params: Sequence[Param]) -> Config:
    """Every value the space can take must make a config that builds: the schema first
    (each key at each bound or choice), then one build per key (its first value) so an
    argument the model/data/optimizer rejects is named. Returns the base config at the
    space's first values."""
    first = {p.key: p.corners()[0] for p in params}
    for p in params:
        for value in p.corners():
            try:
                member_config(raw, {**first, p.key: value})
            except ConfigError as err:
                raise ConfigError(f"space: {p.key} = {value!r}: {err}") from None
    cfg = member_config(raw, first)
    try:
        build_experiment(cfg, compile=False)
    except ConfigError:
        for p in params:  # which key? build with only that one set
            try:
                build_experiment(member_config(raw, {p.key: first[p.key]}), compile=False)
            except ConfigError as err:
                raise ConfigError(f"space: {p.key} = {first[p.key]!r}: {err}") from None
        raise
    return cfg


def median_pruner(optuna: ModuleType, warmup: int) -> Any:
    """Optuna's ``MedianPruner`` that never stops a trial in its first ``warmup`` epochs
    (Optuna prunes from step == ``n_warmup_steps`` on; tune's steps are epochs, from 1)."""
    return optuna.pruners.MedianPruner(n_warmup_steps=warmup + 1)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(study: Any, optuna: ModuleType, print_fn: Callable[[str], None] | None) -> None:
    """Trials left RUNNING by a killed tune: failed, and their parameters asked again."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and pid != os.getpid() and _pid_alive(pid):
            raise ConfigError(
                f"the study {study.study_name!r} is being tuned by process {pid} (trial "
                f"{t.number} is running): wait for it, or use another --storage"
            )
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        again = ""
        if t.params:  # (killed between ask and its first suggestion: nothing to keep)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            again = ", its parameters queued again"
        if print_fn is not None:
            print_fn(f"trial {t.number} was interrupted: marked failed{again}")


def _counted(study: Any, optuna: ModuleType) -> int:
    """Trials that count toward ``trials``: complete, pruned, or failed by diverging (a
    trial failed by an interruption is asked again, so it does not count)."""
    state = optuna.trial.TrialState
    n = 0
    for t in study.get_trials(deepcopy=False):
        diverged = t.state == state.FAIL and "error" in t.user_attrs
        if t.state in (state.COMPLETE, state.PRUNED) or diverged:
            n += 1
    return n


def _settings(trial: Any, params: Sequence[Param]) -> dict[str, Any]:
    return {p.key: p.suggest(trial) for p in params}


# One writer per output directory (under torchrun the call refuses, unlocked).
@writes_run(when=lambda: not launched())
def tune(
    config: Config | Mapping[str, Any] | str | os.PathLike[str],
    space: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Param],
    *,
    trials: int,
    parallel: int = 1,
    out: str | os.PathLike[str],
    storage: str | None = None,
    study_name: str = STUDY_NAME,
    pruner: Any = "median",
    pruner_warmup: int | None = None,
    seed: int = 0,
    chunk: int | str = "auto",
    overrides: Sequence[str] = (),
    epochs: int | None = None,
    device: str | None = None,
    compile: bool | None = None,
    plots: bool | None = None,
    print_fn: Callable[[str], None] | None = print,
) -> TuneResult:
    """Run (or resume) an Optuna study of ``trials`` trials over ``space``.

    Args:
        config: the base config (``Config``, mapping or YAML path).
        space: a YAML file, mapping or list of ``Param`` (see ``purestep.train._space``).
        trials: finished trials wanted in the study (a resumed study counts its own).
        parallel: trials asked and trained together per round.
        out: output directory (the study's SQLite file by default).
        storage: an Optuna storage URL (default ``sqlite:///<out>/study.db``).
        study_name: the study in the storage (resume: the same name).
        pruner: ``"median"`` (Optuna's ``MedianPruner``), ``"none"``, or an Optuna pruner.
        pruner_warmup: epochs a trial trains before the median pruner may stop it (default:
            a quarter of ``train.epochs``, at least 1; it may stop a trial from the epoch
            after).
        seed: the sampler's seed (offset by the trials already in the study, so a resumed
            study does not draw its first points again).
        chunk: members per vmapped call (see ``ps.sweep``).
        overrides: ``key=value`` settings of the base config (``--set``).
        epochs, device, compile: set ``train.epochs``/``device``/``compile`` of every trial.
        plots: Optuna's plots (default: ``log.plots``).
        print_fn: progress lines (None: quiet).
    """
    from purestep.train.distributed import refuse_distributed

    refuse_distributed("tune")  # N torchrun copies would race on one study
    optuna = import_optuna()
    started = time.perf_counter()
    for name, value in (("trials", trials), ("parallel", parallel)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name}: expected a positive integer, got {value!r}")
    if isinstance(pruner, str):
        if pruner not in PRUNERS:
            raise ConfigError(f"--pruner: expected one of {', '.join(PRUNERS)}, got {pruner!r}")
    elif not isinstance(pruner, optuna.pruners.BasePruner):
        raise TypeError(f"pruner must be 'median', 'none' or an Optuna pruner, got {pruner!r}")
    if pruner_warmup is not None and (
        isinstance(pruner_warmup, bool) or not isinstance(pruner_warmup, int) or pruner_warmup < 0
    ):
        raise ConfigError(f"--pruner-warmup: expected an integer >= 0, got {pruner_warmup!r}")
    raw = base_config(config)
    fixed = [*overrides] + [
        f"train.{k}={json.dumps(v)}"
        for k, v in (("epochs", epochs), ("device", device), ("compile", compile))
        if v is not None
    ]
    if fixed:
        raw = apply_overrides(raw, fixed)
    params = load_space(space if not isinstance(space, os.PathLike) else Path(space))
    probe_cfg = _check_space(raw, params)
    probe = build_experiment(probe_cfg, compile=False)
    monitor, mode, _ = monitor_of(probe_cfg, probe.val_data is not None)
    del probe
    warmup = pruner_warmup if pruner_warmup is not None else max(1, probe_cfg.train.epochs // 4)
    if pruner == "median":
        chosen = median_pruner(optuna, warmup)
    elif pruner == "none":
        chosen = optuna.pruners.NopPruner()
    else:
        chosen = pruner
    keep_plots = plots if plots is not None else probe_cfg.log.plots
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{target / 'study.db'}"
    direction = "minimize" if mode == "min" else "maximize"
    with _quiet(optuna):
        study = optuna.create_study(
            storage=url,
            study_name=study_name,
            direction=direction,
            load_if_exists=True,
            pruner=chosen,
        )
        if study.direction.name.lower() != direction:
            raise ConfigError(
                f"the study {study_name!r} in {url} {study.direction.name.lower()}s, but "
                f"{monitor} is to {direction}: use another --storage or --study-name"
            )
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
        _recover(study, optuna, print_fn)
        cache = StepCache()
        if print_fn is not None:
            done = _counted(study, optuna)
            print_fn(
                f"tune: {trials} trials ({done} done), {parallel} at a time; {direction} "
                f"{monitor}; study {study_name!r} in {url}"
            )
        while (done := _counted(study, optuna)) < trials:
            finished = _round(
                study, optuna, raw, params, min(parallel, trials - done), chunk, cache, print_fn
            )
            _write_trials(study, optuna, params, target)
            _write_best_run(study, optuna, finished, target / "best", keep_plots)
        rows = _write_trials(study, optuna, params, target)
        best_trial, best_value, best_cfg = _best(study, optuna, raw, params)
        if best_cfg is not None:
            write_atomic(
                target / "best.yaml",
                yaml.safe_dump(config_to_dict(best_cfg), sort_keys=False).encode(),
            )
        if keep_plots:
            _plots(study, optuna, target / "plots", print_fn)
    seconds = time.perf_counter() - started
    if print_fn is not None:
        print_fn(f"tune done in {seconds:.1f} s: {trials} trials; results: {target / 'trials.csv'}")
        if best_trial is not None:
            print_fn(
                f"best: trial {best_trial}, {monitor} {best_value:.6g}; config: "
                f"{target / 'best.yaml'} (purestep train --config {target / 'best.yaml'})"
            )
            if (target / "best" / "config.yaml").is_file():
                print_fn(
                    f"best run: {target / 'best'} (purestep evaluate --checkpoint "
                    f"{target / 'best'})"
                )
    return TuneResult(study, best_trial, best_value, best_cfg, target, rows, seconds)


def _round(
    study: Any,
    optuna: ModuleType,
    raw: Mapping[str, Any],
    params: Sequence[Param],
    n: int,
    chunk: int | str,
    cache: StepCache,
    print_fn: Callable[[str], None] | None,
) -> dict[int, MemberResult]:
    """Ask ``n`` trials, train them together, tell their results; returns each trained
    trial's result by trial number."""
    state = optuna.trial.TrialState
    asked, cfgs = [], []
    for _ in range(n):
        trial = study.ask()
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        settings = _settings(trial, params)
        try:
            cfg = member_config(raw, settings)
        except ConfigError as err:  # a combination the config refuses: this trial fails
            trial.set_user_attr("error", str(err))
            study.tell(trial, state=state.FAIL)
            continue
        asked.append(trial)
        cfgs.append(cfg)
    if not asked:
        return {}
    if print_fn is not None:
        print_fn(f"round: trials {', '.join(str(t.number) for t in asked)}")

    def report(member: MemberResult, record: dict[str, Any], member_state: TrainState) -> bool:
        del member_state
        trial = asked[member.index]
        value = record.get(member.monitor)
        if not isinstance(value, float):
            return False
        trial.report(value, int(record["epoch"]))
        return bool(trial.should_prune())

    results, _ = run_members(cfgs, chunk=chunk, callback=report, cache=cache, print_fn=print_fn)
    for trial, result in zip(asked, results, strict=True):
        _tell(study, optuna, trial, result, print_fn)
    return {trial.number: result for trial, result in zip(asked, results, strict=True)}


def _write_best_run(
    study: Any, optuna: ModuleType, finished: Mapping[int, MemberResult], out: Path, plots: bool
) -> None:
    """``out`` as the run directory of the study's best trial, when this round trained it
    (an earlier round or process wrote it otherwise)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return
    best = finished.get(study.best_trial.number)
    if best is not None and best.last is not None:
        write_run(best, out, plots=plots)


def _tell(
    study: Any,
    optuna: ModuleType,
    trial: Any,
    result: MemberResult,
    print_fn: Callable[[str], None] | None,
) -> None:
    state = optuna.trial.TrialState
    trial.set_user_attr("status", result.status)
    trial.set_user_attr("epochs", len(result.history))
    trial.set_user_attr("best_epoch", result.best_epoch)
    value = result.best_value
    if result.status == "stopped":
        study.tell(trial, state=state.PRUNED)
        outcome = f"pruned after {len(result.history)} epochs"
    elif result.status == "diverged" or value is None or math.isnan(value):
        trial.set_user_attr("error", result.error or "no finite monitored value")
        study.tell(trial, state=state.FAIL)
        outcome = f"failed: {result.error or 'no finite value'}"
    else:
        study.tell(trial, value)
        outcome = f"{result.monitor} {value:.6g} (epoch {result.best_epoch})"
    if print_fn is not None:
        print_fn(f"trial {trial.number}: {outcome}")


def _best(
    study: Any, optuna: ModuleType, raw: Mapping[str, Any], params: Sequence[Param]
) -> tuple[int | None, float | None, Config | None]:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None, None, None
    best = study.best_trial
    by_key = {p.key: p for p in params}
    settings = {k: by_key[k].decode(v) if k in by_key else v for k, v in best.params.items()}
    return best.number, float(best.value), member_config(raw, settings)


def _write_trials(
    study: Any, optuna: ModuleType, params: Sequence[Param], out: Path
) -> list[dict[str, Any]]:
    """``out/trials.csv``: one row per trial, in trial order (rewritten after each round)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "value": t.value}
        for p in params:
            row[p.key] = t.params.get(p.key)
        attrs = t.user_attrs
        row |= {
            "status": attrs.get("status"),
            "epochs": attrs.get("epochs"),
            "best_epoch": attrs.get("best_epoch"),
            "retry_of": attrs.get("retry_of"),
            "seconds": t.duration.total_seconds() if t.duration is not None else None,
            "error": attrs.get("error"),
        }
        rows.append(row)
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["number", "state", "value"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_atomic(out / "trials.csv", buffer.getvalue().encode())
    return rows


def _plots(
    study: Any, optuna: ModuleType, out: Path, print_fn: Callable[[str], None] | None
) -> None:
    """Optuna's optimization history and parameter importances, as PNGs."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    out.mkdir(parents=True, exist_ok=True)
    for name, plot in (
        ("history", vis.plot_optimization_history),
        ("importances", vis.plot_param_importances),
    ):
        try:
            ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            if print_fn is not None:
                print_fn(f"no {name} plot: {err}")
            continue
        fig: Any = ax.figure  # a Figure (the plots draw on a fresh pyplot figure)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        write_atomic(out / f"{name}.png", buffer.getvalue())
