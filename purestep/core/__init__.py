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
from purestep.core.serialize import (
    load_state,
    read_state_metadata,
    save_state,
    state_from_tensors,
    state_to_tensors,
)
from purestep.core.state import TrainState
from purestep.core.step import (
    EvalStep,
    LossShapeError,
    TrainStep,
    align_targets,
    make_eval_step,
    make_train_step,
)
from purestep.core.verify import CompiledStepMismatch
from purestep.core.vmap import VmappedStep, stack_states, unstack_state, vmap

__all__ = [
    "CompiledStepMismatch",
    "EvalStep",
    "LossShapeError",
    "ModelSpec",
    "TrainState",
    "TrainStep",
    "VmappedStep",
    "accuracy",
    "align_targets",
    "binary_accuracy",
    "binary_classification_metrics",
    "classification_metrics",
    "compile",
    "convert_key",
    "load_state",
    "load_state_into",
    "make_eval_step",
    "make_skeleton",
    "make_train_step",
    "read_state_metadata",
    "retain_freed_cpu_memory",
    "rng_key",
    "rng_scope",
    "save_state",
    "stack_states",
    "state_from_tensors",
    "state_to_tensors",
    "unstack_state",
    "vmap",
]
