"""A run from a config: build everything, train with ``fit`` into a run directory, evaluate.

``purestep train`` and ``purestep evaluate`` are thin wrappers around ``train_run`` and
``evaluate_checkpoint``. The run directory is a contract other tools read::

    OUT/config.yaml                    the resolved config
    OUT/history.json, OUT/history.csv  one record per epoch
    OUT/tb/                            TensorBoard event files
    OUT/plots/*.png                    loss, metrics, lr, confusion matrix
    OUT/checkpoints/step-XXXXXXXX/     state.safetensors + meta.json
    OUT/checkpoints/latest, best       pointer files

Under torchrun (``purestep.train.distributed``) every rank builds the same experiment with
the data-parallel step and its shard of each global batch; rank 0 alone writes the run
directory and prints; every rank loads the checkpoint it resumes from, at any world size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from purestep._io import write_atomic
from purestep._trust import UntrustedCodeError, code_allowed
from purestep.core.compile import compile as compile_step
from purestep.core.compile_cache import (
    load_compile_cache,
    private_inductor_cache,
    save_compile_cache,
)
from purestep.core.state import TrainState
from purestep.core.step import (
    EvalStep,
    LossShapeError,
    TrainStep,
    align_targets,
    is_elementwise,
    make_eval_step,
    make_train_step,
)
from purestep.data.batching import Batches
from purestep.data.datasets import DataSplit, Standardizer
from purestep.optim.hyperparams import lr_tensors
from purestep.train import distributed
from purestep.train.build import (
    BuiltOptimizer,
    add_import_paths,
    build_callbacks,
    build_criterion,
    build_data,
    build_model,
    build_optimizer,
    import_paths,
    infer_task,
    resolve_device,
    scale_loss,
    task_from_targets,
)
from purestep.train.checkpoint import (
    Checkpoint,
    Checkpointer,
    CheckpointError,
    best_checkpoint_of,
    load_checkpoint,
    meta_trust,
    read_meta,
    resolve_checkpoint,
)
from purestep.train.compile_choice import (
    CompileDecision,
    decide_compile,
    remember_compiled,
    step_fingerprint,
    time_eager_step,
    was_compiled_before,
)
from purestep.train.config import Config, ConfigError, config_to_dict, parse_config
from purestep.train.distributed.launch import AgreedStop, DataParallelOptions, QuietProgress
from purestep.train.efficiency import efficiency
from purestep.train.fit import EarlyStopping, History, evaluate, fit, monitor_mode
from purestep.train.init_from import WarmStart
from purestep.train.init_from import initial_state as warm_initial_state
from purestep.train.loggers import (
    MLflowLogger,
    Progress,
    WandbLogger,
    make_loggers,
    write_history,
)
from purestep.train.metrics import MetricSet, make_metrics
from purestep.train.run_lock import writes_run

__all__ = ["Experiment", "RunResult", "build_experiment", "evaluate_checkpoint", "train_run"]

# Config keys that may change between a run and its resume (they do not change the
# trajectory): how long, where, how fast, and what is logged.
_RESUMABLE_CHANGES = {("train", "epochs"), ("train", "compile"), ("train", "device")}
# Where a run started from matters once: a resume continues from its own checkpoint.
_RESUMABLE_CHANGES |= {("train", "init_from"), ("train", "init_from_keys")}
_RESUMABLE_SECTIONS = {"log", "parity"}


@dataclass
class Experiment:
    """What a config builds: model, data, steps and optimizer, ready to train."""

    cfg: Config
    device: torch.device
    model: nn.Module
    task: str | None
    metrics: MetricSet | None
    train: DataSplit
    val: DataSplit | None
    test: DataSplit | None
    train_data: Batches
    val_data: Batches | None
    test_data: Batches | None
    optimizer: BuiltOptimizer
    train_step: TrainStep
    eval_step: EvalStep
    callbacks: list[Any] = dataclasses.field(default_factory=list)

    def initial_state(self) -> TrainState:
        return TrainState.create(self.model, self.optimizer.optimizer, seed=self.cfg.train.seed)

    @property
    def standardizer(self) -> Standardizer | None:
        return self.train.standardizer

    def compiled(self) -> Experiment:
        """This experiment with its train and eval steps compiled (``purestep.compile``)."""
        if self.train_step.compiled:
            return self
        return dataclasses.replace(
            self, train_step=compile_step(self.train_step), eval_step=compile_step(self.eval_step)
        )


def _eval_batches(split: DataSplit | None, cfg: Config, device: torch.device) -> Batches | None:
    if split is None:
        return None
    size = cfg.data.eval_batch_size or cfg.data.batch_size
    return Batches(split.data, size, shuffle=False, drop_last=False, device=device)


def build_experiment(
    cfg: Config,
    *,
    device: str | None = None,
    compile: bool | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
    parallel: DataParallelOptions | None = None,
) -> Experiment:
    """Build the model, data, loss, metrics, optimizer and (compiled) steps of ``cfg``.

    In a multi-process job (``purestep.train.distributed.context()``) the train step is
    data-parallel (``parallel``: its options) and the training batches are this rank's
    shards of the global batches; a bare ``cuda`` device is this rank's GPU."""
    ctx = distributed.context()
    dev = ctx.device(resolve_device(device or cfg.train.device))
    task = infer_task(cfg)
    train = build_data(cfg.data, "train", task)
    if train is None:
        raise ConfigError(f"data.name: {cfg.data.name!r} returned no training split")
    val = build_data(cfg.data, "val", task) if "val" in splits else None
    test = build_data(cfg.data, "test", task) if "test" in splits else None
    example = train.data[0][:1] if isinstance(train.data, tuple) else None
    torch.manual_seed(cfg.train.seed)  # a user's model initialises from the run's seed
    model = build_model(cfg, input_example=example).to(dev)
    criterion = build_criterion(cfg.loss)
    check_loss_shapes(model, criterion, train.data, dev, batch_size=cfg.data.batch_size)
    metrics = None
    if cfg.metrics:
        task = task or task_from_targets(train.data)
        if task is None:
            raise ConfigError(
                f"metrics: the loss {cfg.loss.name!r} does not say what task this is and "
                "the float targets could be labels or values; "
                "set task: binary, multiclass or regression"
            )
        scale = shift = None
        if task == "regression" and train.standardizer is not None:
            scale, shift = train.standardizer.target_std, train.standardizer.target_mean
        try:
            metrics = make_metrics(cfg.metrics, task, target_scale=scale, target_shift=shift)
        except ValueError as err:
            raise ConfigError(f"metrics: {err}") from None
    try:
        train_data = Batches(
            train.data,
            cfg.data.batch_size,
            seed=cfg.data.seed,
            shuffle=cfg.data.shuffle,
            drop_last=cfg.data.drop_last,
            device=dev,
            shard=(ctx.rank, ctx.world_size) if ctx.distributed else None,
        )
    except ValueError as err:
        if not ctx.distributed:
            raise
        raise ConfigError(f"data.batch_size: {err}") from None
    opt = build_optimizer(cfg, model, steps_per_epoch=len(train_data), has_val=val is not None)
    stats = metrics.stats if metrics is not None else None
    train_step = make_train_step(
        model,
        scale_loss(criterion, cfg.train.accumulation_steps),
        opt.optimizer,
        metrics_fn=stats,
        return_grads=bool(cfg.callbacks),  # a callback may read metrics["grads"]
    )
    eval_step = make_eval_step(model, criterion, metrics_fn=stats)
    if ctx.distributed:
        options = parallel or DataParallelOptions()
        train_step = distributed.data_parallel(
            train_step, bucket_cap_mb=options.bucket_cap_mb, check_every=options.check_every
        )
    # train.compile: auto is decided by train_run (it needs the run's length); eager here.
    if (compile if compile is not None else cfg.train.compile) is True:
        train_step, eval_step = compile_step(train_step), compile_step(eval_step)
    return Experiment(
        cfg,
        dev,
        model,
        task,
        metrics,
        train,
        val,
        test,
        train_data,
        _eval_batches(val, cfg, dev),
        _eval_batches(test, cfg, dev),
        opt,
        train_step,
        eval_step,
        build_callbacks(cfg),
    )


def check_loss_shapes(
    model: nn.Module, criterion: Any, data: Any, device: torch.device, *, batch_size: int = 2
) -> None:
    """A loss never broadcasts: the model's outputs on a first batch against its
    targets (``purestep.core.step.align_targets``), so a shape mismatch is a config error
    before anything is written, not a failure in the first step. The model runs in eval
    mode without gradient on copies of its buffers and a forked RNG: nothing changes. Data
    that is not tensors, or inputs the model rejects, are left to the step to report."""
    if not isinstance(data, tuple) or not all(isinstance(t, torch.Tensor) for t in data):
        return
    *inputs, targets = (t[:batch_size].to(device) for t in data)
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    was_training = model.training
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            outputs = torch.func.functional_call(model, (params, buffers), tuple(inputs))
    except Exception:  # the step names a model that rejects its inputs
        return
    finally:
        model.train(was_training)
    try:
        align_targets(outputs, targets, elementwise=is_elementwise(criterion))
    except LossShapeError as err:
        raise ConfigError(f"loss: {err}") from None


def logged_keys(cfg: Config, exp: Experiment, state: TrainState) -> set[str]:
    """The scalar keys an epoch of ``cfg``'s run logs (what a monitor may name)."""
    train = ["loss", *(m for m in cfg.metrics if m != "confusion_matrix")]
    keys = {"step", "seconds", *train}
    if cfg.train.nan_policy == "skip":
        keys.add("skipped_steps")
    if exp.val_data is not None:
        keys |= {f"val_{k}" for k in train}
    n_groups = len(lr_tensors(state.opt_state))
    keys |= {"lr" if i == 0 else f"lr_group{i}" for i in range(n_groups)}
    return keys


def check_monitors(cfg: Config, exp: Experiment, state: TrainState) -> None:
    """Every key the config monitors is one the run logs, checked before anything is
    written: a typo is a config error naming the key, not a failure after an epoch."""
    keys = logged_keys(cfg, exp, state)
    named = []
    if cfg.early_stopping is not None:
        named.append(("early_stopping.monitor", cfg.early_stopping.monitor))
    if cfg.checkpoint.monitor is not None:
        named.append(("checkpoint.monitor", cfg.checkpoint.monitor))
    if exp.optimizer.plateau is not None and exp.optimizer.plateau_monitor is not None:
        named.append(("scheduler.monitor", exp.optimizer.plateau_monitor))
    for path, key in named:
        if key in keys:
            continue
        if key.startswith("val_") and exp.val_data is None and key[4:] in keys:
            raise ConfigError(
                f"{path}: {key!r} needs a validation split, and data.name "
                f"{cfg.data.name!r} gives none; monitor {key[4:]!r} instead"
            )
        close = difflib.get_close_matches(key, sorted(keys), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{path}: this run does not log {key!r}{hint} (it logs: {', '.join(sorted(keys))}; "
            "a metric must be listed under metrics: to be logged)"
        )


def _config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ (ignoring those that may change on resume)."""
    changed = []
    for section in sorted(set(old) | set(new)):
        if section in _RESUMABLE_SECTIONS:
            continue
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if (section, key) not in _RESUMABLE_CHANGES and a.get(key) != b.get(key):
                    changed.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
        elif a != b:
            changed.append(f"{section}: {a!r} -> {b!r}")
    return changed


def _param_summary(model: nn.Module) -> str:
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in params) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )
    extra = "" if trainable == n else f" ({trainable:,} trainable)"
    return f"{n:,} parameters{extra}, {size / 2**20:.2f} MB"


@dataclass
class RunResult:
    """What ``train_run`` produced."""

    state: TrainState
    history: History
    out: Path
    checkpoint: Path | None
    best: Path | None
    test: dict[str, Any] | None
    seconds: float


def _split_meta(split: DataSplit) -> dict[str, Any]:
    return {
        "feature_names": list(split.feature_names) if split.feature_names else None,
        "classes": list(split.classes) if split.classes else None,
        "info": split.info,
    }


@writes_run(when=lambda: distributed.context().is_main)
def train_run(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool | str = False,
    overwrite: bool = False,
    device: str | None = None,
    compile: bool | None = None,
    plots: bool | None = None,
    should_stop: Callable[[], bool] | None = None,
    print_fn: Callable[[str], None] = print,
    parallel: DataParallelOptions | None = None,
    trust_code: bool = False,
) -> RunResult:
    """Train ``cfg`` into the run directory ``out`` (see the module docstring).

    ``resume``: True resumes from ``out``'s latest checkpoint (or starts fresh, with a
    warning on stderr, when there is none); ``"must"`` too, but without a checkpoint it is
    a ``ConfigError``; a path resumes from that checkpoint. Without it, a run
    directory that already holds checkpoints is refused unless ``overwrite``.

    In a multi-process job (torchrun, ``purestep.train.distributed.init_from_env``): every
    rank runs this with the same arguments; ``parallel`` sets the data-parallel options.
    Rank 0 alone writes (config, checkpoints, history, TensorBoard, plots, test metrics)
    and prints; all ranks load the checkpoint to resume from, whatever world size wrote
    it, and start from rank 0's state.

    ``trust_code``: a resume loads ``out/compile_cache.zip`` (native code and pickles)
    even when this user's purestep did not sign it (``purestep._trust``).

    The run holds ``out``'s writer lock throughout (rank 0 does): a run directory another
    process writes is refused at once (``run_lock.RunDirectoryInUse``). A fresh run whose
    config names ``train.init_from`` starts from that checkpoint's parameters and buffers
    (``purestep.train.init_from``); meta.json records where from.
    """
    started = time.perf_counter()
    ctx = distributed.context()
    if not ctx.is_main:
        print_fn = _silent
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    run_cfg = config_to_dict(cfg)
    if cfg.train.init_from is not None:  # config.yaml names it from any working directory
        run_cfg["train"]["init_from"] = os.path.abspath(cfg.train.init_from)
    # Everything that can refuse the run happens before anything is written: the whole
    # config is built, the checkpoint to resume from is loaded and checked.
    exp = build_experiment(cfg, device=device, compile=compile, parallel=parallel)
    # OUT/config.yaml is the config as run: the command line's --compile/--device included,
    # so `purestep train --config OUT/config.yaml` runs it the same way.
    setting = cfg.train.compile if compile is None else compile
    run_cfg["train"]["compile"] = setting  # auto: replaced by what it decides, below
    if device is not None:
        run_cfg["train"]["device"] = device
    existing = Checkpointer(ckpt_dir).latest() if ckpt_dir.exists() else None
    source: Path | None = None
    if resume == "must" and existing is None:
        raise ConfigError(
            f"--resume=must: no checkpoint in {ckpt_dir} to resume from (is --out right?)"
        )
    if isinstance(resume, str) and resume != "must":
        source = resolve_checkpoint(resume, prefer="latest")
    elif resume:
        source = existing
        if source is None and ctx.is_main:
            # Loud, on stderr: a mistyped --out would otherwise silently start over.
            print(
                f"WARNING: --resume: no checkpoint in {ckpt_dir}: starting a fresh run "
                "from step 0 (is --out right? --resume=must refuses instead)",
                file=sys.stderr,
                flush=True,
            )
    elif existing is not None and not overwrite:
        raise ConfigError(
            f"{out} already holds a run's checkpoints: pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    # A fresh run may start from another run's weights (train.init_from); a resume
    # continues from its own checkpoint, which holds where it started from.
    warm: WarmStart | None = None
    if source is None:
        state, warm = warm_initial_state(exp, print_fn)
    else:
        state = exp.initial_state()
    check_monitors(cfg, exp, state)
    loop = None
    best_source: Path | None = None
    finished = False  # resumed from a run that has nothing left to train
    if source is not None:
        try:
            source_meta = read_meta(source)
        except CheckpointError as err:
            raise CheckpointError(f"{err}{_older_checkpoints_hint(source)}") from None
        changes = _config_changes(source_meta.get("config") or {}, run_cfg)
        if changes:
            raise ConfigError(
                f"the config differs from the checkpoint's ({source}): {'; '.join(changes)}; "
                "resume with the same config (only train.epochs, train.compile, train.device "
                "and log may change) or use another --out"
            )
        try:
            restored = load_checkpoint(source, exp.train_step)
        except CheckpointError as err:
            raise CheckpointError(f"{err}{_older_checkpoints_hint(source)}") from None
        state, loop = restored.state.to(exp.device), restored.loop
        # The best state so far, as the run stood at the checkpoint (restore_best and the
        # test metrics read it): another run directory's, or this one's if `best` has
        # since moved on to a stretch this resume replays.
        best_source = best_checkpoint_of(source, loop)
        if loop.stop_reason is not None or loop.epoch >= cfg.train.epochs:
            why = "stopped early" if loop.stop_reason else f"{loop.epoch} epochs done"
            print_fn(f"{source}: the run is finished ({why}); nothing to train")
            finished = True
        else:
            at = f"epoch {loop.epoch + 1}, batch {loop.batch}, step {loop.step}"
            print_fn(f"resuming from {source} ({at})")
            if cfg.train.init_from is not None:
                print_fn("train.init_from is not used: a resume continues from its checkpoint")

    if setting == "auto":
        recorded = (source_meta.get("config") or {}).get("train", {}) if source else {}
        decision = _decide_compile(exp, cfg, state, loop, recorded.get("compile"))
        if not finished:
            print_fn(f"train.compile: auto -> {decision.reason}")
        if decision.compile:
            exp = exp.compiled()
        run_cfg["train"]["compile"] = decision.compile

    if ctx.distributed:
        # Every rank has read the run directory before rank 0 changes it; all start from
        # rank 0's state (DDP syncs the module from rank 0 the same way).
        distributed.barrier("checking the run directory")
        state = distributed.broadcast_state(state)
    if ctx.is_main:
        if overwrite and source is None and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        out.mkdir(parents=True, exist_ok=True)
        if not finished:  # a finished run keeps the config it was trained with
            write_atomic(out / "config.yaml", yaml.safe_dump(run_cfg, sort_keys=False).encode())
    extra_tensors = {}
    if exp.standardizer is not None:
        extra_tensors = {
            f"data/standardizer/{k}": v for k, v in exp.standardizer.to_tensors().items()
        }
    checkpointer = Checkpointer(
        ckpt_dir,
        keep=cfg.checkpoint.keep,
        config=run_cfg,
        extra_tensors=extra_tensors,
        extra_meta={
            "task": exp.task,
            "data": _split_meta(exp.train),
            "import_paths": import_paths(),
        }
        | ({"distributed": _job_meta(ctx)} if ctx.distributed else {})
        | _init_from_meta(warm, restored.meta if source is not None else None),
        writer=ctx.is_main,
    )
    if best_source is not None and not finished:
        checkpointer.set_best(best_source)

    model_line = _param_summary(exp.model)
    mode = "compiled" if exp.train_step.compiled else "eager"
    val_n = len(exp.val) if exp.val is not None else 0
    print_fn(f"device: {exp.device}  ({mode} pure step, torch {torch.__version__})")
    if ctx.distributed:
        assert isinstance(exp.train_step, distributed.DataParallelStep)
        print_fn(
            f"data-parallel: {ctx.world_size} ranks ({ctx.backend}), "
            f"{cfg.data.batch_size // ctx.world_size} examples per rank per batch"
        )
    print_fn(f"model: {cfg.model.name}  {model_line}")
    print_fn(
        f"data: {cfg.data.name}  {len(exp.train)} train / {val_n} val examples, "
        f"{len(exp.train_data)} batches of {cfg.data.batch_size} per epoch"
    )
    print_fn(f"optimizer: {cfg.optimizer.name} {cfg.optimizer.kwargs}  loss: {cfg.loss.name}")

    progress = (
        Progress(cfg.log.progress, total_epochs=cfg.train.epochs)
        if ctx.is_main
        else QuietProgress(cfg.train.epochs)
    )
    purge = loop.step if loop is not None else None
    log_cfg = cfg.log.model_dump()
    # A resumed run continues its W&B / MLflow runs (their ids travel in meta.json).
    tracked = restored.meta.get("trackers", {}) if source is not None else {}
    if log_cfg.get("wandb") is not None and tracked.get("wandb"):
        log_cfg["wandb"]["resume_id"] = tracked["wandb"]
    if log_cfg.get("mlflow") is not None and tracked.get("mlflow"):
        log_cfg["mlflow"]["resume_run_id"] = tracked["mlflow"]
    loggers = (
        make_loggers(log_cfg, out, run_config=run_cfg, purge_step=purge)
        if ctx.is_main and not finished and (cfg.log.tensorboard or cfg.log.wandb or cfg.log.mlflow)
        else []
    )
    checkpointer.extra_meta["trackers"] = {
        name: logger.run_id
        for logger in loggers
        for name, cls in (("wandb", WandbLogger), ("mlflow", MLflowLogger))
        if isinstance(logger, cls)
    }
    if ctx.distributed and should_stop is not None:
        # A signal may reach one rank only: the ranks agree, so all stop at one step.
        options = parallel or DataParallelOptions()
        should_stop = AgreedStop(should_stop, options.stop_every)

    records: list[dict[str, Any]] = list(loop.history) if loop is not None else []
    # A compiled run keeps its compile caches beside its checkpoints, so a resume on a
    # fresh machine (or after the caches were cleaned) skips inductor's code generation.
    cache_file = out / "compile_cache.zip"
    compiled = exp.train_step.compiled
    # The run's caches go into a private inductor cache directory for the rest of the
    # run, never the user's global one (closed after training, below).
    cache_scope = contextlib.ExitStack()
    if compiled and source is not None and cache_file.is_file():
        private = cache_scope.enter_context(private_inductor_cache())
        loaded = load_compile_cache(cache_file, private, trust_code=trust_code)
        print_fn(
            f"compile cache: {loaded.kernels} kernels from {cache_file}"
            if loaded
            else f"compile cache: not used ({loaded.reason})"
        )
    cache_saved = [False]

    def on_epoch_end(record: dict[str, Any], state: TrainState) -> None:
        del state
        records.append(record)
        if cfg.log.csv and ctx.is_main:  # after every epoch: a killed run keeps its history
            write_history(records, out)
        if compiled and ctx.is_main and not cache_saved[0]:  # once both steps have compiled
            cache_saved[0] = True
            save_compile_cache(cache_file)
            # train.compile: auto expects a warm cache next time for this very step.
            remember_compiled(_step_fingerprint(exp, cfg, next(iter(exp.train_data))))

    es = cfg.early_stopping
    early = (
        EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta, es.restore_best)
        if es is not None
        else None
    )
    has_val = exp.val_data is not None
    best_monitor = cfg.checkpoint.monitor or (es.monitor if es else None)
    best_mode = cfg.checkpoint.mode or (es.mode if es else None)
    try:
        state, history = fit(
            state,
            exp.train_step,
            exp.train_data,
            epochs=cfg.train.epochs,
            eval_step=exp.eval_step if has_val else None,
            val_data=exp.val_data,
            metrics=exp.metrics,
            plateau=exp.optimizer.plateau,
            plateau_monitor=exp.optimizer.plateau_monitor,
            early_stopping=early,
            checkpointer=checkpointer,
            checkpoint_every_epochs=cfg.checkpoint.every_epochs,
            checkpoint_every_steps=cfg.checkpoint.every_steps,
            best_monitor=best_monitor,
            best_mode=best_mode,
            resume=loop,
            nan_policy=cfg.train.nan_policy,
            log_every=cfg.train.log_every,
            loss_scale=float(cfg.train.accumulation_steps),
            progress=progress,
            loggers=loggers,
            on_epoch_end=on_epoch_end,
            should_stop=should_stop,
            callbacks=exp.callbacks,
        )
    finally:
        for logger in loggers:
            logger.close()
        cache_scope.close()
    if ctx.distributed:  # rank 0's last checkpoint is complete before anyone goes on
        distributed.barrier("finishing training")
    if cfg.log.csv and ctx.is_main:
        write_history(history.records, out)

    latest, best = checkpointer.pointer("latest"), checkpointer.pointer("best")
    test = None
    tested = latest.name if latest else "the final weights"
    if exp.test_data is not None:
        # The test split measures the best checkpoint's weights (the model a user keeps),
        # as a tutorial reloads its best model before testing.
        weights = state
        if best is not None and best != latest:
            weights = load_checkpoint(best, exp.train_step).state.to(exp.device)
            tested = best.name
        test = evaluate(weights, exp.eval_step, exp.test_data, exp.metrics)
        if ctx.is_main:
            record = {"checkpoint": tested, **test}
            write_atomic(out / "test_metrics.json", (_json(record) + "\n").encode())
    if (plots if plots is not None else cfg.log.plots) and ctx.is_main and history.records:
        from purestep.train.plots import plot_history

        classes = list(exp.train.classes) if exp.train.classes else None
        confusion = _confusion_to_plot(history.records, test, tested, best)
        plot_history(history.records, out / "plots", confusion=confusion, labels=classes)

    seconds = time.perf_counter() - started
    steps = history.records[-1]["step"] if history.records else int(state.step)
    lines = [f"done in {seconds:.1f} s: {len(history)} epochs, {steps} steps"]
    monitor = best_monitor or ("val_loss" if has_val else "loss")
    rec = history.records
    if rec:
        mode_ = best_mode or monitor_mode(monitor)
        values = [(float(r[monitor]), r["epoch"]) for r in rec if r.get(monitor) is not None]
        if values:
            pick = min if mode_ == "min" else max
            value, epoch = _best_of(best) or pick(values, key=lambda v: v[0])
            last = {k: v for k, v in rec[-1].items() if isinstance(v, float)}
            lines.append(
                f"best {monitor} {value:.6g} at epoch {epoch}; last epoch: "
                + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "seconds")
            )
    if test is not None:
        lines.append(
            f"test ({tested}): "
            + ", ".join(f"{k} {v:.4g}" for k, v in test.items() if isinstance(v, float))
        )
    lines.append(
        f"checkpoints: {ckpt_dir} (latest {latest.name if latest else '-'}, "
        f"best {best.name if best else '-'})"
    )
    if plots if plots is not None else cfg.log.plots:
        lines.append(f"plots: {out / 'plots'}")
    lines.append(f"history: {out / 'history.json'}")
    for line in lines:
        print_fn(line)
    return RunResult(state, history, out, latest, best, test, seconds)


def _decide_compile(
    exp: Experiment, cfg: Config, state: TrainState, loop: Any, recorded: Any
) -> CompileDecision:
    """What ``train.compile: auto`` does on this run (``purestep.train.compile_choice``): a
    resume repeats what the run being resumed did (its config records the boolean)."""
    if isinstance(recorded, bool):
        return CompileDecision(
            recorded, f"{'compiled' if recorded else 'eager'}, as the run being resumed"
        )
    if distributed.context().distributed:  # timing a collective step would need every rank
        return CompileDecision(
            True,
            "compiled: a data-parallel job (auto does not time a collective step; set "
            "train.compile: false for a short one)",
        )
    done = loop.step if loop is not None else 0
    steps = max(0, cfg.train.epochs * len(exp.train_data) - done)
    batch = next(iter(exp.train_data))
    eager_s = time_eager_step(exp.train_step, state, batch)
    n_tensors = len(state.params) + len(state.buffers)
    fingerprint = _step_fingerprint(exp, cfg, batch)
    warm = was_compiled_before(fingerprint)
    return decide_compile(steps=steps, eager_step_s=eager_s, n_tensors=n_tensors, warm=warm)


def _step_fingerprint(exp: Experiment, cfg: Config, batch: Any) -> str:
    shapes = (
        [(tuple(t.shape), str(t.dtype)) for t in batch if isinstance(t, torch.Tensor)]
        if isinstance(batch, tuple | list)
        else [repr(type(batch))]
    )
    return step_fingerprint(
        [
            torch.__version__,
            exp.device.type,
            exp.model,
            cfg.optimizer.model_dump(),
            cfg.loss.model_dump(),
            cfg.scheduler.model_dump() if cfg.scheduler else None,
            shapes,
            cfg.train.accumulation_steps,
            cfg.train.clip_grad_norm,
            cfg.metrics,
        ]
    )


def _confusion_to_plot(
    records: list[dict[str, Any]], test: dict[str, Any] | None, tested: str, best: Path | None
) -> tuple[Any, str] | None:
    """The confusion matrix of the weights the run reports (its test metrics' checkpoint,
    else the best checkpoint's epoch on validation) and a title that says which; None
    leaves ``plot_history`` its default (the last epoch's)."""
    if test is not None and test.get("confusion_matrix") is not None:
        return test["confusion_matrix"], f"Confusion matrix (test, {tested})"
    found = _best_of(best)
    if best is None or found is None:
        return None
    epoch = found[1]
    for record in records:
        if record.get("epoch") == epoch:
            for key, split in (
                ("val_confusion_matrix", "validation"),
                ("confusion_matrix", "train"),
            ):
                if record.get(key) is not None:
                    title = (
                        f"Confusion matrix ({split}, best checkpoint {best.name}, epoch {epoch})"
                    )
                    return record[key], title
    return None


def _best_of(best: Path | None) -> tuple[float, int] | None:
    """The best value and epoch as the run judged them (``min_delta`` included), from the
    best checkpoint's meta.json; None without one."""
    if best is None:
        return None
    try:
        record = read_meta(best)["best"]
        return float(record["value"]), int(record["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def _older_checkpoints_hint(bad: Path) -> str:
    """Where to resume from instead of the damaged checkpoint ``bad`` (nothing is chosen
    for the user: an older state means retraining steps, so they decide)."""
    older = [
        d
        for d in sorted(bad.parent.glob("step-*"))
        if d != bad and (d / "meta.json").is_file() and (d / "state.safetensors").is_file()
    ]
    if not older:
        return ""
    return f"; to resume from the newest other complete checkpoint instead: --resume {older[-1]}"


def _silent(line: str) -> None:
    """The ``print_fn`` of ranks other than 0."""
    del line


def _init_from_meta(warm: WarmStart | None, resumed: Mapping[str, Any] | None) -> dict[str, Any]:
    """meta.json's ``init_from`` (where a warm-started run started from), kept on resume."""
    if warm is not None:
        return {"init_from": warm.meta()}
    if resumed is not None and resumed.get("init_from") is not None:
        return {"init_from": resumed["init_from"]}
    return {}


def _job_meta(ctx: distributed.Context) -> dict[str, Any]:
    """What a checkpoint records about the job that wrote it (informational: a resume
    may use any world size)."""
    return {"world_size": ctx.world_size, "backend": ctx.backend}


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=1)


def stored_experiment(
    directory: Path,
    meta: Mapping[str, Any],
    *,
    trust_code: bool,
    device: str | None = None,
    compile: bool = False,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> Experiment:
    """The experiment of the config stored in ``meta`` (the ``meta.json`` of the step
    directory ``directory``). The trust rule (``purestep._trust``): a config this user's
    purestep signed builds as written; a foreign one builds built-in names only, and any
    ``module:function`` it names is an ``UntrustedCodeError`` before anything is imported,
    unless ``trust_code``."""
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{directory / 'meta.json'}: no config stored")
    trusted, why = meta_trust(directory, meta)
    with code_allowed(trusted or trust_code, why):
        if trusted or trust_code:
            add_import_paths(*_import_dirs(meta))
        try:
            cfg = parse_config(raw)
            return build_experiment(cfg, device=device, compile=compile, splits=splits)
        except (ConfigError, UntrustedCodeError) as err:  # name the file the config is in
            raise type(err)(f"{directory / 'meta.json'}: config: {err}") from None


def _import_dirs(meta: Mapping[str, Any]) -> list[str]:
    """The folders a run's ``module:function`` names were imported from (its config's
    folder and working directory, recorded in meta.json), so that a trusted run rebuilds
    from any working directory."""
    dirs = meta.get("import_paths")
    if not isinstance(dirs, list):
        return []
    return [d for d in dirs if isinstance(d, str) and Path(d).is_absolute() and Path(d).is_dir()]


def load_run(
    checkpoint: str | Path,
    *,
    device: str | None = None,
    compile: bool = False,
    trust_code: bool = False,
) -> tuple[Experiment, Checkpoint]:
    """The experiment a checkpoint was trained with (its stored config) and the loaded
    checkpoint. The data is rebuilt from the config (same seed, same splits).

    ``trust_code``: build a foreign run's ``module:function`` names too (see
    ``stored_experiment``; a run this user's purestep wrote needs no flag)."""
    directory = resolve_checkpoint(checkpoint)
    meta = read_meta(directory)
    exp = stored_experiment(directory, meta, trust_code=trust_code, device=device, compile=compile)
    loaded = load_checkpoint(directory, exp.train_step)
    return exp, Checkpoint(
        loaded.state.to(exp.device), loaded.loop, loaded.meta, loaded.extra, loaded.path
    )


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "val",
    device: str | None = None,
    trust_code: bool = False,
) -> dict[str, Any]:
    """Loss and the config's metrics of a checkpoint on one split of its data
    (``trust_code``: as in ``load_run``)."""
    exp, loaded = load_run(checkpoint, device=device, trust_code=trust_code)
    data = {
        "train": _eval_batches(exp.train, exp.cfg, exp.device),
        "val": exp.val_data,
        "test": exp.test_data,
    }.get(split)
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split: expected train, val or test, got {split!r}")
    if data is None:
        raise ConfigError(f"the data {exp.cfg.data.name!r} has no {split!r} split")
    result = evaluate(loaded.state, exp.eval_step, data, exp.metrics)
    result |= efficiency(exp, loaded.state, data)
    return {"checkpoint": str(loaded.path), "split": split, "examples": data.num_examples, **result}


def parity_run(
    cfg: Config,
    *,
    steps: int | None = None,
    mode: str | None = None,
    compile: bool = False,
) -> Any:
    """``ps.parity.compare`` of the config's pure step against the imperative torch loop on
    its training batches (``purestep parity``). Config problems raise ``ConfigError`` before
    the comparison starts; what fails during it (a model rejecting its batch) propagates.

    Under torchrun (``WORLD_SIZE`` > 1) it joins the job (``init_from_env``) and runs
    ``ps.parity.compare_ddp`` instead: the data-parallel pure step against
    ``DistributedDataParallel`` + torch.optim, every rank on its shard of the batches; every
    rank returns the same report."""
    from purestep.parity import compare
    from purestep.train.build import (
        batches_for_parity,
        build_torch_optimizer,
        build_torch_scheduler,
        is_plateau,
    )

    parity = cfg.parity
    batches = batches_for_parity(cfg)
    criterion = build_criterion(cfg.loss)
    # The first input lets a built-in model take in_features from the data, as in training.
    example = batches[0][0][:1] if batches and isinstance(batches[0][0], torch.Tensor) else None
    # A bad model section, or outputs a loss would broadcast, is a config error, now.
    if batches:
        check_loss_shapes(
            build_model(cfg, input_example=example),
            criterion,
            batches[0],
            torch.device("cpu"),
            batch_size=len(batches[0][-1]),
        )
        # Both sides compute the loss on aligned shapes ((N, 1) against (N,)), as training.
        criterion = _aligned(criterion)
    if distributed.launched():  # under torchrun: the data-parallel step against DDP
        distributed.init_from_env(device=resolve_device(cfg.train.device))
        return _parity_ddp(cfg, batches, criterion, steps=steps, mode=mode, compile=compile)
    # ReduceLROnPlateau steps once per epoch of the training batches, on their mean loss
    # (parity checks the schedule's arithmetic; training monitors val_loss).
    per_epoch = cfg.scheduler is not None and (
        cfg.scheduler.every == "epoch" or is_plateau(cfg.scheduler)
    )
    device = None if cfg.train.device == "auto" else cfg.train.device
    return compare(
        model=lambda: build_model(cfg, input_example=example),
        criterion=criterion,
        torch_optimizer_from_model=lambda model: build_torch_optimizer(cfg.optimizer, model),
        batches=batches,
        steps=steps if steps is not None else parity.steps,
        mode=mode if mode is not None else parity.mode,  # None: bitwise, compiled: its tolerance
        rtol=parity.rtol if "rtol" in parity.model_fields_set else None,
        atol=parity.atol if "atol" in parity.model_fields_set else None,
        forcing=parity.forcing,
        scheduler=(lambda opt: build_torch_scheduler(cfg.scheduler, opt))
        if cfg.scheduler
        else None,
        scheduler_every=max(1, len(batches) // cfg.train.accumulation_steps) if per_epoch else 1,
        clip_grad_norm=cfg.train.clip_grad_norm,
        accumulation_steps=cfg.train.accumulation_steps,
        compile=compile,
        seed=cfg.train.seed,
        device=device,
    )


def _aligned(criterion: Any) -> Any:
    """``criterion`` on targets aligned to the outputs (``align_targets``)."""
    elementwise = is_elementwise(criterion)

    def aligned(outputs: Any, targets: Any) -> Any:
        return criterion(outputs, align_targets(outputs, targets, elementwise=elementwise))

    aligned.__wrapped__ = criterion  # type: ignore[attr-defined]
    return aligned


def _parity_ddp(
    cfg: Config,
    batches: list[tuple[torch.Tensor, ...]],
    criterion: Any,
    *,
    steps: int | None,
    mode: str | None,
    compile: bool,
) -> Any:
    """``purestep parity`` under torchrun: ``ps.parity.compare_ddp``, the data-parallel
    pure step against DDP + torch.optim on this job's ranks, each rank on its shard of
    the config's global batches."""
    from purestep.parity.ddp import compare_ddp
    from purestep.train.build import build_torch_optimizer, build_torch_scheduler, is_plateau

    if cfg.train.accumulation_steps > 1:
        raise ConfigError(
            "train.accumulation_steps: purestep parity under torchrun compares plain DDP "
            "steps; check gradient accumulation single-process (without torchrun)"
        )
    if cfg.scheduler is not None and is_plateau(cfg.scheduler):
        raise ConfigError(
            "scheduler: purestep parity under torchrun does not drive ReduceLROnPlateau; "
            "check it single-process (without torchrun)"
        )
    ctx = distributed.context()
    if cfg.data.batch_size % ctx.world_size:
        raise ConfigError(
            f"data.batch_size: {cfg.data.batch_size} is not divisible by the world size "
            f"{ctx.world_size}"
        )
    parity = cfg.parity
    per_epoch = cfg.scheduler is not None and cfg.scheduler.every == "epoch"
    example = batches[0][0][:1] if batches and isinstance(batches[0][0], torch.Tensor) else None
    return compare_ddp(
        model=lambda: build_model(cfg, input_example=example),
        criterion=criterion,
        torch_optimizer_from_model=lambda model: build_torch_optimizer(cfg.optimizer, model),
        batches=batches,
        steps=steps if steps is not None else parity.steps,
        mode=mode if mode is not None else parity.mode,
        rtol=parity.rtol if "rtol" in parity.model_fields_set else None,
        atol=parity.atol if "atol" in parity.model_fields_set else None,
        scheduler=(lambda opt: build_torch_scheduler(cfg.scheduler, opt))
        if cfg.scheduler
        else None,
        scheduler_every=max(1, len(batches)) if per_epoch else 1,
        clip_grad_norm=cfg.train.clip_grad_norm,
        compile=compile,
        seed=cfg.train.seed,
        device=ctx.device(resolve_device(cfg.train.device)),
    )
