"""The pure step: TrainState, explicit RNG, make_train_step/make_eval_step, compile."""

from purestep.core.allocator import retain_freed_cpu_memory
from purestep.core.compile import compile
from purestep.core.metrics import (
    accuracy,
    binary_accuracy,
    binary_classification_metrics,
    classification_metrics,
)
from purestep.core.module import ModelSpec, load_state_into, make_skeleton
from purestep.core.rng import convert_key, rng_key, rng_scope
from purestep.core.state import TrainState
from purestep.core.step import EvalStep, TrainStep, make_eval_step, make_train_step
from purestep.core.vmap import VmappedStep, stack_states, unstack_state, vmap

__all__ = [
    "EvalStep",
    "ModelSpec",
    "TrainState",
    "TrainStep",
    "VmappedStep",
    "accuracy",
    "binary_accuracy",
    "binary_classification_metrics",
    "classification_metrics",
    "compile",
    "convert_key",
    "load_state_into",
    "make_eval_step",
    "make_skeleton",
    "make_train_step",
    "retain_freed_cpu_memory",
    "rng_key",
    "rng_scope",
    "stack_states",
    "unstack_state",
    "vmap",
]
