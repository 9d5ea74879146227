"""purestep: the PyTorch training step as a pure function, proven equal to torch.optim.

import purestep as ps
opt = ps.optim.adam(lr=1e-3)
state = ps.TrainState.create(model, opt, seed=0)
train_step = ps.make_train_step(model, nn.CrossEntropyLoss(), opt)
state, metrics = train_step(state, (x, y))
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from purestep._lazy import lazy_exports as _lazy_exports

# Every public name and where it lives; each is imported on first use (``import purestep``
# alone imports no torch: ``purestep --help`` starts in a fraction of ``import torch``).
_EXPORTS = {
    **{
        name: "purestep.core"
        for name in (
            "CompiledStepMismatch",
            "EvalStep",
            "TrainState",
            "TrainStep",
            "compile",
            "load_state",
            "load_state_into",
            "make_eval_step",
            "make_train_step",
            "rng_key",
            "rng_scope",
            "save_state",
            "stack_states",
            "unstack_state",
            "vmap",
        )
    },
    "rng": "purestep.core",  # the module purestep.core.rng: split, fold_in
    **{name: "purestep.train" for name in ("fit", "sweep", "tune")},
    **{
        name: f"purestep.{name}"
        for name in ("core", "data", "distributed", "optax", "optim", "parity", "pytree", "train")
    },
}
__getattr__, __dir__ = _lazy_exports("purestep", globals(), _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see
    from purestep import core, data, distributed, optax, optim, parity, pytree, train
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
        rng,
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
    "optax",
    "optim",
    "parity",
    "pytree",
    "rng",
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
