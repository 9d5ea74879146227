"""optax-style optimizers written in torch, bitwise equal to torch.optim.

``import purestep as ps; opt = ps.optim.adam(lr=1e-3)`` then ``opt.init(params)`` and
``opt.step(grads, state, params) -> (params, state)``. See ``base`` for the two shapes
(``GradientTransformation``, ``Optimizer``) and ``chain``.
"""

from purestep.optim import schedules
from purestep.optim.adam import AdamState, adam, adamw
from purestep.optim.base import (
    EmptyState,
    GradientTransformation,
    Optimizer,
    apply_updates,
    as_optimizer,
    chain,
    identity,
)
from purestep.optim.convert import from_torch, to_torch_state_dict
from purestep.optim.hyperparams import get_hyperparam, set_hyperparam
from purestep.optim.partition import masked, multi_transform, param_groups
from purestep.optim.scheduled import ScheduledState, schedule_step, scheduled
from purestep.optim.schedules import Schedule
from purestep.optim.sgd import SGDState, sgd
from purestep.optim.transforms import (
    add_decayed_weights,
    clip_by_global_norm,
    clip_by_value,
    global_norm,
    scale,
    trace,
)
from purestep.optim.wrappers import apply_if_finite, inject_hyperparams, multi_steps

__all__ = [
    "AdamState",
    "EmptyState",
    "GradientTransformation",
    "Optimizer",
    "SGDState",
    "Schedule",
    "ScheduledState",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_if_finite",
    "apply_updates",
    "as_optimizer",
    "chain",
    "clip_by_global_norm",
    "clip_by_value",
    "from_torch",
    "get_hyperparam",
    "global_norm",
    "identity",
    "inject_hyperparams",
    "masked",
    "multi_steps",
    "multi_transform",
    "param_groups",
    "scale",
    "schedule_step",
    "scheduled",
    "schedules",
    "set_hyperparam",
    "sgd",
    "to_torch_state_dict",
    "trace",
]
