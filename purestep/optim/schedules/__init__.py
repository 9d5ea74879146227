"""Learning-rate schedules with torch.optim.lr_scheduler's semantics, as pure state machines.

Each factory returns a ``Schedule(init, step, reset)`` driving ONE param group's lr (give
each group its own: per-group ``max_lr``/``min_lr``/lambdas become one schedule per group):

    sched = step_lr(step_size=30, gamma=0.1)
    state, lr = sched.init(base_lr=0.1, lr=0.1)      # construction (torch's initial step)
    state, lr = sched.step(state, lr, None)          # scheduler.step()

In eager CPU code the lrs are bitwise torch's; states are pytrees of 0-d tensors, so
``step`` compiles (``torch.compile(fullgraph=True)``, no recompiles), vmaps and checkpoints.
``schedule_from_torch``/``schedule_state_from_torch`` continue an existing torch scheduler.
"""

from purestep.optim.schedules._base import (
    ChainedState,
    PlateauState,
    Schedule,
    ScheduleState,
    SequentialState,
    WarmRestartsState,
)
from purestep.optim.schedules.compose import chained_scheduler, sequential_lr
from purestep.optim.schedules.constant import constant_lr
from purestep.optim.schedules.convert import (
    cycles_momentum,
    schedule_from_torch,
    schedule_state_from_torch,
)
from purestep.optim.schedules.cosine import cosine_annealing_lr, cosine_annealing_warm_restarts
from purestep.optim.schedules.exponential import exponential_lr
from purestep.optim.schedules.lambdas import lambda_lr, multiplicative_lr
from purestep.optim.schedules.linear import linear_lr
from purestep.optim.schedules.one_cycle import one_cycle_lr
from purestep.optim.schedules.plateau import reduce_on_plateau
from purestep.optim.schedules.polynomial import polynomial_lr
from purestep.optim.schedules.step import multi_step_lr, step_lr

__all__ = [
    "ChainedState",
    "PlateauState",
    "Schedule",
    "ScheduleState",
    "SequentialState",
    "WarmRestartsState",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cycles_momentum",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "polynomial_lr",
    "reduce_on_plateau",
    "schedule_from_torch",
    "schedule_state_from_torch",
    "sequential_lr",
    "step_lr",
]
