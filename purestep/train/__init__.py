"""Training on top of the pure step: ``fit``, checkpoints, metrics, loggers, run configs."""

from purestep._trust import UntrustedCodeError
from purestep.train.callbacks import Callback, Loop
from purestep.train.checkpoint import (
    Checkpoint,
    Checkpointer,
    CheckpointError,
    LoopState,
    load_checkpoint,
    resolve_checkpoint,
)
from purestep.train.config import Config, ConfigError, load_config, parse_config
from purestep.train.fit import (
    EarlyStopping,
    History,
    NonFiniteLossError,
    TrainingInterrupted,
    evaluate,
    fit,
)
from purestep.train.metrics import MetricSet, make_metrics
from purestep.train.predict import Predictor, load_predictor
from purestep.train.run import build_experiment, evaluate_checkpoint, load_run, train_run
from purestep.train.sweep import SweepResult, sweep
from purestep.train.tune import TuneResult, tune

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "Config",
    "ConfigError",
    "EarlyStopping",
    "History",
    "Loop",
    "LoopState",
    "MetricSet",
    "NonFiniteLossError",
    "Predictor",
    "SweepResult",
    "TrainingInterrupted",
    "TuneResult",
    "UntrustedCodeError",
    "build_experiment",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "load_checkpoint",
    "load_config",
    "load_predictor",
    "load_run",
    "make_metrics",
    "parse_config",
    "resolve_checkpoint",
    "sweep",
    "train_run",
    "tune",
]
