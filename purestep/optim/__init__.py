"""optax-style optimizers written in torch, bitwise equal to torch.optim.

``import purestep as ps; opt = ps.optim.adam(lr=1e-3)`` then ``opt.init(params)`` and
``opt.step(grads, state, params) -> (params, state)``. See ``base`` for the two shapes
(``GradientTransformation``, ``Optimizer``) and ``chain``.
"""

from purestep.optim import schedules
from purestep.optim.adadelta import AdadeltaState, adadelta
from purestep.optim.adagrad import AdagradState, adagrad
from purestep.optim.adam import AdamState, adam, adamw
from purestep.optim.adamax import AdamaxState, adamax
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
from purestep.optim.nadam import NAdamState, nadam
from purestep.optim.partition import masked, multi_transform, param_groups
from purestep.optim.radam import RAdamState, radam
from purestep.optim.rmsprop import RMSpropState, rmsprop
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
    "AdadeltaState",
    "AdagradState",
    "AdamState",
    "AdamaxState",
    "EmptyState",
    "GradientTransformation",
    "NAdamState",
    "Optimizer",
    "RAdamState",
    "RMSpropState",
    "SGDState",
    "Schedule",
    "ScheduledState",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
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
    "nadam",
    "param_groups",
    "radam",
    "rmsprop",
    "scale",
    "schedule_step",
    "scheduled",
    "schedules",
    "set_hyperparam",
    "sgd",
    "to_torch_state_dict",
    "trace",
]
