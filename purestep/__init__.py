"""purestep: the PyTorch training step as a pure function, proven equal to torch.optim.

import purestep as ps
opt = ps.optim.adam(lr=1e-3)
state = ps.TrainState.create(model, opt, seed=0)
train_step = ps.make_train_step(model, nn.CrossEntropyLoss(), opt)
state, metrics = train_step(state, (x, y))
"""

from purestep import core, data, optim, parity
from purestep.core import (
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

__version__ = "0.1.0"

__all__ = [
    "EvalStep",
    "TrainState",
    "TrainStep",
    "__version__",
    "compile",
    "core",
    "data",
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
    "unstack_state",
    "vmap",
]
