"""purestep: the PyTorch training step as a pure function, proven equal to torch.optim.

import purestep as ps
opt = ps.optim.adam(lr=1e-3)
state = ps.TrainState.create(model, opt, seed=0)
train_step = ps.make_train_step(model, nn.CrossEntropyLoss(), opt)
state, metrics = train_step(state, (x, y))
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from purestep import core, data, distributed, optim, parity, train
from purestep.core import (
    CompiledStepMismatch,
    EvalStep,
    TrainState,
    TrainStep,
    compile,
    load_state,
    load_state_into,
    make_eval_step,
    make_train_step,
    rng_key,
    rng_scope,
    save_state,
    stack_states,
    unstack_state,
    vmap,
)
from purestep.train import fit, sweep, tune

try:  # the one version source is pyproject.toml, read from the installed metadata
    __version__ = _version("purestep")
except _PackageNotFoundError:  # pragma: no cover - imported from a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "CompiledStepMismatch",
    "EvalStep",
    "TrainState",
    "TrainStep",
    "__version__",
    "compile",
    "core",
    "data",
    "distributed",
    "fit",
    "load_state",
    "load_state_into",
    "make_eval_step",
    "make_train_step",
    "optim",
    "parity",
    "rng_key",
    "rng_scope",
    "save_state",
    "stack_states",
    "sweep",
    "train",
    "tune",
    "unstack_state",
    "vmap",
]
