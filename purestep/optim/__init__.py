"""optax-style optimizers written in torch, bitwise equal to torch.optim.

``import purestep as ps; opt = ps.optim.adam(lr=1e-3)`` then ``opt.init(params)`` and
``opt.step(grads, state, params) -> (params, state)``. See ``base`` for the two shapes
(``GradientTransformation``, ``Optimizer``) and ``chain``.
"""

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
from purestep.optim.hyperparams import get_hyperparam, set_hyperparam
from purestep.optim.sgd import SGDState, sgd

__all__ = [
    "AdamState",
    "EmptyState",
    "GradientTransformation",
    "Optimizer",
    "SGDState",
    "adam",
    "adamw",
    "apply_updates",
    "as_optimizer",
    "chain",
    "get_hyperparam",
    "identity",
    "set_hyperparam",
    "sgd",
]
