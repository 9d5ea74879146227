"""``ps.sweep``: a grid of configs trained together, the best kept as a normal run.

```python
result = ps.sweep("c.yaml", {"optimizer.lr": [1e-4, 1e-3, 1e-2], "optimizer.name": ["SGD", "Adam"]},
                  seeds=[0, 1], out="runs/sweep")
result.best_member.config        # the winner's config; runs/sweep/best is its run directory
```

The grid's members (the product of the axes, seeds last) are grouped by what their steps
share and trained at once (see ``purestep.train._members``: sequential or vmapped, and
why). Every member is the run ``purestep train`` makes of its config: bitwise in eager
mode, within the compiled step's per-step tolerance when compiled.

Outputs in ``out``::

    sweep.csv        one row per member: its settings, status, final train/val loss and
                     metrics, best epoch and monitored value, how its group ran
    sweep.json       the same plus every member's history, the groups' plans and timings
    plots/loss.png   one loss curve per member (validation loss when there is validation)
    best/            the best member as a run directory: config.yaml, checkpoints (latest
                     and best, the format ``purestep train`` writes), history.json/csv,
                     plots, test_metrics.json; ``purestep evaluate --checkpoint out/best``

``sweep.csv`` is written last and marks a finished sweep. A sweep keeps no checkpoints of
its members while it trains: one that is killed leaves no ``sweep.csv`` and is run again
from the start by the same command (``purestep tune`` is the resumable search).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from purestep._io import write_atomic
from purestep.train._grid import Axis, grid_settings, member_config
from purestep.train._members import (
    Callback,
    GroupReport,
    MemberResult,
    StepCache,
    run_members,
)
from purestep.train.build import import_paths
from purestep.train.checkpoint import Checkpointer
from purestep.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    parse_config,
    resolve_relative_paths,
)
from purestep.train.distributed.context import launched
from purestep.train.fit import evaluate
from purestep.train.loggers import write_history
from purestep.train.run_lock import writes_run

__all__ = ["GroupReport", "MemberResult", "SweepResult", "base_config", "sweep"]


@dataclass
class SweepResult:
    """What ``sweep`` produced: every member (in grid order), the groups and the best."""

    members: list[MemberResult]
    settings: list[dict[str, Any]]
    groups: list[GroupReport]
    best: int | None
    monitor: str
    mode: str
    out: Path | None
    seconds: float

    @property
    def best_member(self) -> MemberResult | None:
        return None if self.best is None else self.members[self.best]

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per member (what ``sweep.csv`` holds)."""
        return [_row(m, s, self.groups) for m, s in zip(self.members, self.settings, strict=True)]


def base_config(config: Config | Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping a sweep applies its settings to: a ``Config``, a mapping or a YAML
    file (validated, so a bad base config fails before the grid is expanded)."""
    raw = _base_config(config)
    if raw.get("callbacks"):
        raise ConfigError(
            "callbacks: sweep and tune members do not run callbacks; train one member "
            "with purestep train to use them (or remove the callbacks section)"
        )
    return raw


def _base_config(config: Config | Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    if isinstance(config, Config):
        return config_to_dict(config)
    if isinstance(config, Mapping):
        parse_config(config)
        return dict(config)
    if isinstance(config, str | os.PathLike):
        path = Path(config)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read config {str(path)!r}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        raw = resolve_relative_paths(raw, path.parent)  # files relative to the config
        parse_config(raw)
        return dict(raw)
    raise TypeError(f"config must be a Config, a mapping or a path, got {type(config).__name__}")


def _axes(grid: Mapping[str, Sequence[Any]] | Sequence[Axis] | None) -> list[Axis]:
    items = list(grid.items()) if isinstance(grid, Mapping) else list(grid or [])
    axes: list[Axis] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"a grid axis is (key, values), got {item!r}")
        key, values = item
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise ConfigError(f"{key}: expected a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"{key}: the list of values is empty")
        axes.append((key, list(values)))
    return axes


def _fixed(raw: dict[str, Any], **values: Any) -> dict[str, Any]:
    overrides = [f"train.{k}={json.dumps(v)}" for k, v in values.items() if v is not None]
    return apply_overrides(raw, overrides) if overrides else raw


# One writer per output directory (under torchrun the call refuses, unlocked).
@writes_run(when=lambda: not launched())
def sweep(
    config: Config | Mapping[str, Any] | str | os.PathLike[str],
    grid: Mapping[str, Sequence[Any]] | Sequence[Axis] | None = None,
    *,
    seeds: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    chunk: int | str = "auto",
    epochs: int | None = None,
    device: str | None = None,
    compile: bool | None = None,
    plots: bool | None = None,
    overwrite: bool = False,
    callback: Callback | None = None,
    cache: StepCache | None = None,
    print_fn: Callable[[str], None] | None = print,
) -> SweepResult:
    """Train every member of the grid and keep the best as a run directory.

    Args:
        config: the base config (a ``Config``, a raw mapping or a YAML path).
        grid: ``{"optimizer.lr": [1e-4, 1e-3], "model.hidden": [[32], [64]]}`` (or a list
            of ``(key, values)``): the axes, in product order.
        seeds: values of ``train.seed`` (the model's initialisation and random key), the
            last axis. The data's own seed is the axis ``data.seed``.
        out: where to write ``sweep.csv``, ``sweep.json``, ``plots/`` and ``best/`` (None:
            nothing is written).
        chunk: members per vmapped call: ``"auto"`` (see ``purestep.train._members``), 1
            (sequential) or N.
        epochs, device, compile: set ``train.epochs``/``device``/``compile`` of every
            member (so ``best/config.yaml`` says how it ran).
        plots: write the loss plot and the best run's plots (default: ``log.plots``).
        overwrite: replace an earlier sweep's outputs in ``out``.
        callback: ``callback(member, record, state)`` after each member's epoch (a
            ``MemberResult``, its epoch record, its state); True stops that member (it
            freezes; the others go on).
        cache: steps and plans to reuse across calls (``purestep tune``).
        print_fn: progress lines (None: quiet).

    Returns:
        A ``SweepResult``. Raises ``ConfigError`` for a bad grid or config, before
        anything is trained or written, and under a multi-process (torchrun) launch.
    """
    from purestep.train.distributed import refuse_distributed

    refuse_distributed("sweep")  # N torchrun copies would each run the whole grid
    started = time.perf_counter()
    raw = _fixed(base_config(config), epochs=epochs, device=device, compile=compile)
    settings = grid_settings(_axes(grid), list(seeds) if seeds is not None else None)
    cfgs = [member_config(raw, s) for s in settings]
    target = Path(out) if out is not None else None
    if target is not None and not overwrite and (target / "sweep.csv").exists():
        raise ConfigError(
            f"{target} already holds a sweep: pass --overwrite to replace it, or another --out"
        )
    if print_fn is not None:
        print_fn(f"sweep: {len(cfgs)} members")
    labels = [", ".join(f"{k}={v!r}" for k, v in s.items()) or "base" for s in settings]
    members, groups = run_members(
        cfgs, chunk=chunk, callback=callback, cache=cache, labels=labels, print_fn=print_fn
    )
    monitor, mode = members[0].monitor, members[0].mode
    result = SweepResult(members, settings, groups, _pick_best(members), monitor, mode, target, 0.0)
    result.seconds = time.perf_counter() - started
    if target is not None:
        _write(result, raw, plots if plots is not None else cfgs[0].log.plots)
    if print_fn is not None:
        for line in _summary(result):
            print_fn(line)
    return result


def _pick_best(members: Sequence[MemberResult]) -> int | None:
    """The member with the best monitored value; a diverged member (its solo run raises)
    never wins; ties go to the first."""
    best: tuple[float, int] | None = None
    for m in members:
        if m.status == "diverged" or m.best_value is None or math.isnan(m.best_value):
            continue
        value = m.best_value if m.mode == "min" else -m.best_value
        if best is None or value < best[0]:
            best = (value, m.index)
    return None if best is None else best[1]


# -- outputs -----------------------------------------------------------------------------

_SKIP = {"epoch", "step", "seconds"}


def _row(
    m: MemberResult, settings: Mapping[str, Any], groups: Sequence[GroupReport]
) -> dict[str, Any]:
    plan = groups[m.group]
    row: dict[str, Any] = {"member": m.index, "group": m.group}
    row |= {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in settings.items()}
    last = m.history[-1] if m.history else {}
    row |= {
        "status": m.status,
        "epochs": len(m.history),
        "steps": last.get("step", 0),
    }
    for key, value in last.items():
        if key not in _SKIP and isinstance(value, int | float) and not isinstance(value, bool):
            row[key] = value
    row["best_epoch"] = m.best_epoch
    row[f"best_{m.monitor}"] = m.best_value
    row["plan"] = plan.plan if plan.plan == "sequential" else f"vmap/{plan.chunk}"
    row["error"] = m.error or ""
    return row


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    # Trailing bookkeeping columns last, whatever order the members' metrics came in.
    tail = [c for c in columns if c.startswith("best_") or c in ("plan", "error")]
    columns = [c for c in columns if c not in tail] + tail
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def _write(result: SweepResult, raw: Mapping[str, Any], plots: bool) -> None:
    out = result.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "base_config": raw,
        "monitor": result.monitor,
        "mode": result.mode,
        "best": result.best,
        "seconds": result.seconds,
        "groups": [asdict(g) for g in result.groups],
        "members": [
            {
                "index": m.index,
                "settings": s,
                "group": m.group,
                "status": m.status,
                "error": m.error,
                "best_epoch": m.best_epoch,
                "best_value": m.best_value,
                "history": m.history,
            }
            for m, s in zip(result.members, result.settings, strict=True)
        ],
    }
    write_atomic(out / "sweep.json", (json.dumps(report, indent=1) + "\n").encode())
    if plots:
        _plot_losses(result, out / "plots" / "loss.png")
    best = result.best_member
    if best is not None:
        write_run(best, out / "best", plots=plots)
    # Last: sweep.csv marks a finished sweep (a rerun refuses to replace one without
    # --overwrite); a sweep killed before this point is simply run again.
    write_atomic(out / "sweep.csv", _csv(result.rows()).encode())


def write_run(member: MemberResult, out: Path, *, plots: bool) -> None:
    """``out`` as the run directory ``purestep train`` writes for the member's config:
    config.yaml, checkpoints (latest and best), history, plots, test metrics."""
    from purestep.train.run import build_experiment

    cfg = member.config
    run_cfg = config_to_dict(cfg)
    exp = build_experiment(cfg, compile=False)  # data and metrics as a solo run has them
    ckpt_dir = out / "checkpoints"
    if ckpt_dir.exists():
        import shutil

        shutil.rmtree(ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.yaml", yaml.safe_dump(run_cfg, sort_keys=False).encode())
    extra = {}
    if exp.standardizer is not None:
        extra = {f"data/standardizer/{k}": v for k, v in exp.standardizer.to_tensors().items()}
    split = exp.train
    checkpointer = Checkpointer(
        ckpt_dir,
        keep=None,
        config=run_cfg,
        extra_tensors=extra,
        extra_meta={
            "task": exp.task,
            "data": {
                "feature_names": list(split.feature_names) if split.feature_names else None,
                "classes": list(split.classes) if split.classes else None,
                "info": split.info,
            },
            "import_paths": import_paths(),
        },
    )
    assert member.last is not None
    # The test split measures the best checkpoint's weights, as `purestep train` does.
    if member.best is not None and member.best[1].step != member.last[1].step:
        tested_state, tested = member.best[0], checkpointer.save(*member.best, best=True)
        checkpointer.save(*member.last)
    else:
        tested = checkpointer.save(*member.last, best=member.best is not None)
        tested_state = member.state if member.state is not None else member.last[0]
    if cfg.log.csv:
        write_history(member.history, out)
    if plots and member.history:
        from purestep.train.plots import plot_history

        plot_history(member.history, out / "plots")
    if exp.test_data is not None and member.state is not None:
        test = evaluate(tested_state, exp.eval_step, exp.test_data, exp.metrics)
        record = {"checkpoint": tested.name, **test}
        write_atomic(out / "test_metrics.json", (json.dumps(record, indent=1) + "\n").encode())


def _label(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in settings.items()) or "base"


def _plot_losses(result: SweepResult, path: Path) -> None:
    from purestep.train.plots import _epoch_axis, _figure, _save

    key = "val_loss" if any("val_loss" in r for m in result.members for r in m.history) else "loss"
    fig = _figure(8, 5)
    ax = fig.add_subplot(1, 1, 1)
    for m, s in zip(result.members, result.settings, strict=True):
        points = [(r["epoch"], r[key]) for r in m.history if isinstance(r.get(key), float)]
        if points:
            xs, ys = zip(*points, strict=True)
            width = 2.5 if m.index == result.best else 1.0
            ax.plot(xs, ys, marker=".", linewidth=width, label=f"{m.index}: {_label(s)}")
    _epoch_axis(ax)
    ax.set_ylabel(key)
    ax.set_title(f"{key} of {len(result.members)} members (thick: best)")
    if key.endswith("loss") and all(
        v > 0 for m in result.members for r in m.history if isinstance(v := r.get(key), float)
    ):
        ax.set_yscale("log")
    ax.legend(fontsize="x-small", ncol=2 if len(result.members) > 8 else 1)
    _save(fig, path)


def _summary(result: SweepResult) -> list[str]:
    lines = [f"sweep done in {result.seconds:.1f} s: {len(result.members)} members"]
    for g in result.groups:
        lines.append(f"  group {g.index + 1}: {g.describe()} ({g.seconds:.1f} s, {g.steps} steps)")
    ranked = sorted(
        (m for m in result.members if m.best_value is not None and m.status != "diverged"),
        key=lambda m: (m.best_value or 0.0) * (1 if m.mode == "min" else -1),
    )
    for m in ranked[:5]:
        lines.append(
            f"  member {m.index} ({_label(result.settings[m.index])}): best {m.monitor} "
            f"{m.best_value:.6g} at epoch {m.best_epoch} [{m.status}]"
        )
    diverged = [m.index for m in result.members if m.status == "diverged"]
    if diverged:
        lines.append(f"  diverged (non-finite loss): members {diverged}")
    if result.out is not None:
        lines.append(f"results: {result.out / 'sweep.csv'}")
        if result.best is not None:
            lines.append(f"best: member {result.best} -> {result.out / 'best'}")
    return lines
